"""Cost of replay protection per call: one ``seen_jti`` upsert (cds_hooks.replay), on a SQLite
file and on PostgreSQL, from 1 thread and from 8 threads at once (as under gunicorn gthread).

Prints p50/p99 (ms) per check and checks/s. The PostgreSQL run uses a throwaway database and
is skipped, with the reason, when 127.0.0.1:5432 does not answer.
Run: .venv/bin/python benchmarks/replay_store.py [--checks 4000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not this folder: its http.py would shadow the standard library's

from cds_hooks.audit.store import AuditStore
from cds_hooks.replay import DatabaseJtiCache
from tests.support.load import postgres_reachable, throwaway_database

KEY = b"benchmark-only-patient-key-32byt"


def _measure(cache: DatabaseJtiCache, checks: int, threads: int) -> tuple[list[float], float]:
    now = time.time()

    def one(_i: int) -> float:
        start = time.perf_counter()
        assert cache.add_if_absent(f"https://ehr.example.org\x00{uuid.uuid4()}", now + 300, time.time())
        return (time.perf_counter() - start) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        latencies = list(pool.map(one, range(checks)))
    return latencies, checks / (time.perf_counter() - started)


def _row(label: str, latencies: list[float], rate: float) -> str:
    q = statistics.quantiles(latencies, n=100)
    return f"| {label} | {q[49]:.2f} | {q[98]:.2f} | {rate:,.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=4000)
    args = parser.parse_args()
    print("| database, threads | p50 ms | p99 ms | checks/s |")
    print("|---|---|---|---|")
    for kind in ("sqlite", "postgresql"):
        if kind == "postgresql" and (why := postgres_reachable()):
            print(f"| postgresql | skipped: {why} | | |")
            continue
        with tempfile.TemporaryDirectory() as tmp, throwaway_database(kind, Path(tmp)) as url:
            store = AuditStore(url, KEY, pool_size=8)
            store.migrate()
            cache = DatabaseJtiCache(store.engine)
            _measure(cache, 200, 1)  # warm the pool
            for threads in (1, 8):
                print(_row(f"{kind}, {threads}", *_measure(cache, args.checks, threads)))
            store.dispose()


if __name__ == "__main__":
    main()
