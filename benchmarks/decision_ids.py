"""Decision ids and the SQLite write: random UUIDv4 against the shipped time-ordered UUIDv7.

Two processes (as two gunicorn sync workers) write the typical decision of
``benchmarks/decision_write.py`` to one SQLite log, first ``--prefill`` decisions each to give
the indexes a realistic size, then ``--writes`` each that are timed. Random ids put each
write on a random leaf of every index over an id (decision, card, and the hits' and orders'
references); time-ordered ids put it on the last leaf, which the previous write touched.
Prints CPU and wall ms per write for each kind, in turns, twice. The machine is shared:
compare figures of one run only.

    python -P benchmarks/decision_ids.py [--prefill 10000] [--writes 1500]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not this folder: its http.py would shadow the standard library's
sys.path.append(str(ROOT / "benchmarks"))

from decision_write import (  # type: ignore[import-not-found]
    KEY,
    fresh,
    timed_writes,
    two_writers_on_a_fresh_log,
    typical_decision,
)

from cds_hooks.audit.store import AuditStore
from cds_hooks.ids import time_ordered_uuid

KINDS: dict[str, Callable[[], str]] = {
    "UUIDv4 (random)": lambda: str(uuid.uuid4()),
    "UUIDv7 (shipped)": time_ordered_uuid,
}


def writer(url: str, kind: str, count: int, results: multiprocessing.Queue[tuple[float, float]]) -> None:
    """One writing process: ``count`` decisions, then (CPU ms, wall ms) per write."""
    rec, evaluated = typical_decision()
    new_id = KINDS[kind]
    store = AuditStore(url, KEY)
    results.put(timed_writes(lambda: store.record_decision(fresh(rec, new_id), evaluated), count))
    store.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefill", type=int, default=10_000, help="decisions each writer stores first")
    parser.add_argument("--writes", type=int, default=1_500, help="timed decisions per writer")
    args = parser.parse_args()
    print(f"two SQLite writers, {2 * args.prefill} decisions stored first, {args.writes} timed writes each")
    print(f"{'ids':<18} {'CPU ms/write':>14} {'wall ms/write':>14}")
    for _round in range(2):
        for kind in KINDS:
            cpu, wall = two_writers_on_a_fresh_log(writer, kind, args.prefill, args.writes)
            print(f"{kind:<18} {cpu:>14.3f} {wall:>14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
