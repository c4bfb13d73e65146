"""What a serving process holds, and what a forked worker pays for what it inherits (issue 15).

Under ``gunicorn --preload`` the master loads the app and forks the workers, and each of the
three processes counts in its RSS every page the app filled at start-up. This script loads the
app the way the master does, stage by stage, in a clean interpreter, and prints what each stage
added: anonymous memory (what the process allocated itself: objects, code, the allocators'
heaps) and file-backed pages (shared libraries, mapped files). A stage's figure is what it added
after the stages before it, so a module that two stages import is counted in the first.

Then, as gunicorn does, it forks workers from the loaded app and times their first calls
(through Flask's test client, so without gunicorn's own costs). On Python 3.11 a call changes
the reference counts of objects spread over most of the pages a worker inherited, and the
kernel copies each page at its first write: ``private`` is the memory a worker has written to
(``Private_Dirty`` in ``/proc/<pid>/smaps_rollup``); a forked worker's first call pays for
those copies, and so does the first call of every worker gunicorn starts to replace another.

The ``json.loads`` ceiling of benchmarks/http.py holds the first two stages only.

    python benchmarks/memory.py              # ~15 s
    python benchmarks/memory.py --workers 5  # more forked workers
"""

from __future__ import annotations

import os
import sys

# Like benchmarks/http.py: drop this folder from sys.path so ``http`` is the standard library's.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import gc
import importlib
import importlib.util
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# (label, what it loads): imported in this order by the measuring interpreter.
IMPORT_STAGES = (
    ("Flask (werkzeug, jinja2, click; werkzeug loads http.server and ssl)", "flask"),
    ("the service's modules (prometheus_client, PyYAML, sqlite3, durable-rules)", "cds_hooks.app"),
)
STEADY_CALLS = 20
SERVICE_PATH = "/cds-services/cryotherapy-order-select"


def status_mb(pid: str = "self") -> tuple[float, float]:
    """(anonymous, file-backed) resident memory of a process, in MB."""
    found = {"RssAnon": 0, "RssFile": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in found:
            found[name] = int(value.split()[0])
    return found["RssAnon"] / 1024, found["RssFile"] / 1024


def private_dirty_mb() -> float:
    """Memory this process has written to since it was forked (its own copies), in MB."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stage_line(label: str, before: tuple[float, float], after: tuple[float, float]) -> str:
    return f"{label:<76}{after[0] - before[0]:>7.1f}{after[1] - before[1]:>7.1f}{after[0] + after[1]:>8.1f}"


def measure(bodies: dict[str, bytes], workers: int) -> None:
    """The measuring interpreter: import stages, create_app, then forked workers."""
    print(f"{'stage (MB)':<76}{'anon':>7}{'file':>7}{'RSS':>8}")
    start = status_mb()
    print(f"{'Python (the interpreter and this script)':<76}{start[0]:>7.1f}{start[1]:>7.1f}{sum(start):>8.1f}")
    before = start
    for label, module in IMPORT_STAGES:
        began = time.perf_counter()
        importlib.import_module(module)
        after = status_mb()
        print(stage_line(label, before, after) + f"   {time.perf_counter() - began:.2f} s")
        before = after
    from cds_hooks.app import create_app

    began = time.perf_counter()
    app = create_app()
    after = status_mb()
    print(
        stage_line("create_app(): rules, value sets, the engine, the decision log", before, after)
        + f"   {time.perf_counter() - began:.2f} s"
    )
    print(f"{'a loaded master (gunicorn --preload)':<76}{after[0]:>7.1f}{after[1]:>7.1f}{sum(after):>8.1f}")
    # On a SQLite file the serving path runs on the driver (cds_hooks/audit/sqlite_direct.py).
    print(f"SQLAlchemy loaded by the master: {'yes' if 'sqlalchemy' in sys.modules else 'no'}")
    print()
    client = app.test_client()
    gc.collect()
    print(f"forked workers, {STEADY_CALLS} calls each after the first two (ms; private: MB written since the fork)")
    print(
        f"{'worker':<8}{'body':<22}{'1st':>7}{'2nd':>7}{'p50':>7}{'private at fork':>17}{'after 1st':>11}{'at end':>8}"
    )
    for number in range(1, workers + 1):
        for name, body in bodies.items():
            pid = os.fork()
            if pid == 0:  # the worker
                try:
                    print(_worker_line(number, name, lambda b=body: _call(client, b)), flush=True)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)


def _call(client: Any, body: bytes) -> None:
    response = client.post(SERVICE_PATH, data=body, content_type="application/json")
    status = response.status_code
    response.close()
    if status != 200:
        raise RuntimeError(f"the service answered {status}")


def _worker_line(number: int, name: str, call: Callable[[], None]) -> str:
    at_fork = private_dirty_mb()
    times = []
    for _ in range(2):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
        if len(times) == 1:
            after_first = private_dirty_mb()
    steady = []
    for _ in range(STEADY_CALLS):
        began = time.perf_counter()
        call()
        steady.append((time.perf_counter() - began) * 1000)
    return (
        f"{number:<8}{name:<22}{times[0]:>7.1f}{times[1]:>7.1f}{statistics.median(steady):>7.1f}"
        f"{at_fork:>17.1f}{after_first:>11.1f}{private_dirty_mb():>8.1f}"
    )


def _bodies() -> dict[str, bytes]:
    """Two request bodies of benchmarks/http.py, named with their resource counts: fixture 03
    and the small Synthea mix."""
    spec = importlib.util.spec_from_file_location("benchmarks_http", ROOT / "benchmarks" / "http.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks_http"] = bench
    spec.loader.exec_module(bench)
    named, _series = bench.build_bodies([])
    return {f"{label.split(' (')[0]} ({count})": body for label, body, count in named[:2]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=3, help="workers to fork, one after another (default 3)")
    parser.add_argument("--measure", metavar="DIR", help=argparse.SUPPRESS)  # the measuring interpreter
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.measure:
        paths = sorted(Path(args.measure).glob("*.json"))
        bodies = {path.stem.split("-", 1)[1].replace("-", " "): path.read_bytes() for path in paths}
        measure(bodies, args.workers)
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="cryo-memory-bench-"))
    try:
        for index, (label, body) in enumerate(_bodies().items()):
            (workdir / f"{index}-{label.replace(' ', '-')}.json").write_bytes(body)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "CDS_HOOKS_AUTH": "off",
            "CDS_HOOKS_PATIENT_HASH_KEY": "benchmark-memory-patient-hash-key-0123456789",
            "CDS_HOOKS_DATA_DIR": str(workdir / "data"),
        }
        print(
            f"== benchmarks/memory.py: one clean interpreter ({sys.executable}), {time.strftime('%Y-%m-%d %H:%M:%S')}",
            flush=True,
        )
        # A clean interpreter, so that nothing this script imported is counted in a stage.
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--measure",
            str(workdir),
            "--workers",
            str(args.workers),
        ]
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
