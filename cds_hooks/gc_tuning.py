"""The cyclic garbage collector, set for a process that serves hook calls.

A hook call builds hundreds of thousands of containers (the parsed JSON of the patient's
record and what is read from it) and frees nearly all of them by reference counting when it
ends. With CPython's default thresholds (700, 10, 10) the cyclic collector runs hundreds of
times during one large call and promotes the call's live objects into the older generations,
whose collections then scan them all again: on a 5,000-resource record that was about half
of the call (benchmarks/http.py's growth series). Larger thresholds let a call finish between
collections; full collections still run, every few million allocations, so cyclic garbage
is not kept for long.

``freeze_startup_objects`` is for a pre-forking server: what exists once the app is loaded
(modules, rules, value sets) lives as long as the process, so it is moved out of every future
collection, which also keeps its memory pages shared with the forked workers.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 20, 20)


def tune_for_serving() -> None:
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()
