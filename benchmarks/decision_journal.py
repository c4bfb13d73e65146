"""SQLite's decision write: straight into the four tables against the journal (the shipped way).

Two processes (as two gunicorn sync workers) write the typical decision of
``benchmarks/decision_write.py`` to one SQLite log, first ``--prefill`` decisions each so the
indexes have a realistic size, then ``--writes`` each that are timed. "direct" writes each
decision into its tables (as `record_decision` does); "journal" is a hook call's write
(`record_or_spool`): one journal row, and a filing every ``journal.FILE_EVERY`` rows, timed
with the writes. Prints CPU and wall ms per write, in turns, twice. The machine is shared:
compare figures of one run only.

    python -P benchmarks/decision_journal.py [--prefill 10000] [--writes 1500]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not this folder: its http.py would shadow the standard library's
sys.path.append(str(ROOT / "benchmarks"))

from decision_write import (  # type: ignore[import-not-found]
    KEY,
    WARM_UP_WRITES,
    fresh,
    timed_writes,
    two_writers_on_a_fresh_log,
    typical_decision,
)

from cds_hooks.audit import journal
from cds_hooks.audit.store import AuditStore

WAYS = ("direct", "journal")


def writer(url: str, way: str, count: int, results: multiprocessing.Queue[tuple[float, float]]) -> None:
    """One writing process: ``count`` decisions, then (CPU ms, wall ms) per write."""
    rec, evaluated = typical_decision()
    store = AuditStore(url, KEY)
    # record_decision writes straight into the tables; record_or_spool is a hook call's write.
    write_one = store.record_or_spool if way == "journal" else store.record_decision
    results.put(timed_writes(lambda: write_one(fresh(rec), evaluated), count))
    store.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefill", type=int, default=10_000, help="decisions each writer stores first")
    parser.add_argument("--writes", type=int, default=1_500, help="timed decisions per writer")
    args = parser.parse_args()
    print(
        f"two SQLite writers, {2 * args.prefill} decisions stored first, {args.writes} timed writes each "
        f"(journal filed every {journal.FILE_EVERY} rows)"
    )
    print(f"{'write':<10} {'CPU ms/write':>14} {'wall ms/write':>14}")
    for _round in range(2):
        for way in WAYS:

            def all_held(url: str, way: str = way) -> None:
                store = AuditStore(url, KEY)
                held = store.count_decisions()  # files what is left in the journal
                store.dispose()
                expected = 2 * (args.prefill + args.writes + 2 * WARM_UP_WRITES)
                assert held == expected, f"{way}: {held} decisions held, {expected} written"

            cpu, wall = two_writers_on_a_fresh_log(writer, way, args.prefill, args.writes, all_held)
            print(f"{way:<10} {cpu:>14.3f} {wall:>14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
