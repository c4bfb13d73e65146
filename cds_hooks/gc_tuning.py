"""The cyclic garbage collector, set for a process that serves hook calls.

A hook call builds hundreds of thousands of containers (the parsed JSON of the patient's
record and what is read from it) and frees nearly all of them by reference counting when it
ends. With CPython's default thresholds (700, 10, 10) the cyclic collector runs hundreds of
times during one large call and promotes the call's live objects into the older generations,
whose collections then scan them all again: on a 5,000-resource record that was about half
of the call (benchmarks/http.py's growth series). Larger thresholds let a call finish between
collections; full collections still run, every few million allocations, so cyclic garbage
is not kept for long.

Even at those thresholds a large call still paid for a dozen collections that found nothing
(every object they scan is alive until the call ends): a tenth of a 1,000- or 5,000-resource
call. So `CollectorPause` holds the collector off while requests are in flight and lets it
run again once each answer is sent and its objects are freed. A call leaves six to fourteen
objects of cyclic garbage behind (its WSGI request and closure cells); they wait for the next
collection, which the thresholds start between calls (twice in 1,500 small calls, so some
10,000 such objects wait at most). With threads, a pause never outlasts ``MAX_PAUSE_S`` while
calls keep overlapping.

``freeze_startup_objects`` is for a pre-forking server: what exists once the app is loaded
(modules, rules, value sets) lives as long as the process, so it is moved out of every future
collection, which also keeps its memory pages shared with the forked workers.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

THRESHOLDS = (10_000, 20, 20)
MAX_PAUSE_S = 1.0


def tune_for_serving() -> None:
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_objects() -> None:
    """Frozen as they are, without a collection first: at that point one found three objects
    of garbage and took 25-40 ms of start-up (it traverses the value sets' large tables)."""
    gc.freeze()


class CollectorPause:
    """Counts the requests in flight; the collector is off while there is one, unless it was
    off already (then it is left alone) or calls have overlapped for ``max_pause_s``."""

    def __init__(self, max_pause_s: float = MAX_PAUSE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._paused_at: float | None = None  # set while this pause holds the collector off
        self._max_pause_s = max_pause_s
        self._clock = clock

    def begin(self) -> None:
        with self._lock:
            now = self._clock()
            if self._paused_at is not None and now - self._paused_at > self._max_pause_s:
                gc.enable()  # calls have overlapped for too long: let the collector run until they stop
                self._paused_at = None
            self._in_flight += 1
            if self._in_flight == 1 and gc.isenabled():
                gc.disable()
                self._paused_at = now

    def end(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if self._in_flight == 0 and self._paused_at is not None:
                self._paused_at = None
                gc.enable()

    def wrap(self, app: WSGIApplication) -> WSGIApplication:
        """``app`` with the collector paused from the request's start until its response is
        closed (after the response's own close callbacks, which free the parsed request)."""

        def paused(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            self.begin()
            try:
                answer = app(environ, start_response)
            except BaseException:
                self.end()
                raise
            return _PausedAnswer(answer, self.end)

        return paused


class _PausedAnswer:
    """The response body; ends its request's pause once, when closed (PEP 3333 servers
    close every body) or else when dropped (a test client may never close it). It holds no
    reference to itself, so dropping it frees it at once."""

    def __init__(self, answer: Iterable[bytes], end: Callable[[], None]) -> None:
        self._answer = answer
        self._chunks: Iterator[bytes] = iter(answer)
        self._end: Callable[[], None] | None = end

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        try:
            close = getattr(self._answer, "close", None)
            if close is not None:
                close()  # the response's own callbacks first: they free the parsed request
        finally:
            self._end_once()

    def _end_once(self) -> None:
        end, self._end = self._end, None
        if end is not None:
            end()

    def __del__(self) -> None:
        # Not contextlib.suppress: at interpreter exit the modules may be half torn down
        # already, and then there is no collector left to resume.
        try:  # noqa: SIM105
            self._end_once()
        except Exception:
            pass


# One per process: the collector is process-wide, and so is the count of requests in flight.
COLLECTOR_PAUSE = CollectorPause()
