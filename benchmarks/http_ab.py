"""Two source trees of the service side by side under gunicorn: wrk req/s and worker CPU per request.

For judging one change against its baseline, where `benchmarks/http.py` judges the service
against the ``json.loads`` ceiling. Each tree (a checkout or a ``git worktree``, e.g. of
the commit before the change) is served by its own gunicorn (2 sync workers, ``--preload``,
the README's ``GLIBC_TUNABLES``, a fresh SQLite log); wrk runs at one concurrency on one body
of `benchmarks/http.py`, the two servers taking turns round by round, each round starting
with the other server. Worker CPU is read from /proc around each run. ``CEIL`` in place of a
tree serves the ceiling app instead. The machine is shared: compare only figures of one run
and look at the spread of the rounds.

    git worktree add /tmp/base HEAD~1
    python benchmarks/http_ab.py /tmp/base .                 # small body, c=8, 6 rounds of 4 s
    python benchmarks/http_ab.py . CEIL --body fixture --rounds 4
    python benchmarks/http_ab.py /tmp/base . --startup 8     # start-up to the first answer only
    python benchmarks/http_ab.py /tmp/base . --hook order-sign  # the same body as an order-sign call
    python benchmarks/http_ab.py /tmp/base . --slow-fsync-ms 5  # both served as on a disk whose fsync is slow
    python benchmarks/http_ab.py . CEIL --cpu-hogs 2            # both beside two busy processes

``--cpu-hogs N`` runs N busy processes beside the servers for the whole measurement: a machine
whose cores something else wants too, where the scheduler's fair share, not the request's cost
alone, sets the throughput (the "slow phases" of a shared machine looked like this).

``--slow-fsync-ms`` compiles a small ``LD_PRELOAD`` shim (needs a C compiler) that makes every
``fsync``/``fdatasync`` of both servers wait that long first: a virtual disk under load,
where an fsync can take milliseconds.
"""

from __future__ import annotations

import os
import sys

# Like benchmarks/http.py: drop this folder from sys.path so ``http`` is the standard library's.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_spec = importlib.util.spec_from_file_location("benchmarks_http", ROOT / "benchmarks" / "http.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["benchmarks_http"] = bench
_spec.loader.exec_module(bench)

BODIES = {"fixture": 0, "small": 1, "synthea": 2, "large": 3}
SIGN_PATH = "/cds-services/cryotherapy-order-sign"


def as_order_sign(body: bytes) -> bytes:
    """An order-select body as the order-sign call of the same orders (no selections): the
    hook whose no-nagging look-up reads the decision log during the call."""
    request = json.loads(body)
    request["hook"] = "order-sign"
    request["context"].pop("selections", None)
    return json.dumps(request, separators=(",", ":")).encode()


def worker_cpu_s(server: bench.Server) -> float:
    """User + system CPU seconds of the server's workers (not the master)."""
    total = 0
    for pid in server.pids()[1:]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a worker replaced meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


SLOW_FSYNC_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>
static void wait_first(void) {
    const char *us = getenv("CRYO_SLOW_FSYNC_US");
    if (us) usleep((useconds_t)atoi(us));
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    wait_first();
    return real(fd);
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    wait_first();
    return real(fd);
}
"""


def slow_fsync_env(workdir: Path, ms: float) -> dict[str, str]:
    """The environment that slows every fsync of a server by ``ms`` (the shim built in ``workdir``)."""
    source, shim = workdir / "slow_fsync.c", workdir / "slow_fsync.so"
    source.write_text(SLOW_FSYNC_SOURCE, encoding="utf-8")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(source), "-ldl"], check=True)
    return {"LD_PRELOAD": str(shim), "CRYO_SLOW_FSYNC_US": str(int(ms * 1000))}


def served(tree: str, workdir: Path, extra_env: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The gunicorn app and environment that serve ``tree`` (or the ceiling) from ``workdir``."""
    env = {**os.environ, "GLIBC_TUNABLES": bench.GLIBC_TUNABLES, **(extra_env or {})}
    if tree == "CEIL":
        (workdir / "ceiling_app.py").write_text(bench.CEILING_SOURCE, encoding="utf-8")
        return "ceiling_app:app", env | {"PYTHONPATH": str(workdir)}
    return bench.SERVICE_APP, env | {
        "PYTHONPATH": tree,
        "CDS_HOOKS_AUTH": "off",
        "CDS_HOOKS_PATIENT_HASH_KEY": bench.PATIENT_HASH_KEY,
        "CDS_HOOKS_DATA_DIR": str(workdir / "data"),
        "CDS_HOOKS_DATABASE_URL": f"sqlite:///{workdir / 'decisions.db'}",
    }


def compare_startup(trees: list[str], times: int) -> int:
    """Seconds from launching gunicorn to the first 200, each tree ``times`` times in turns
    (a fresh data directory and log each time, as on a first start)."""
    print(f"== start-up to the first answer, {times} starts per server in turns; gunicorn -w 2 -k sync --preload")
    seconds: list[list[float]] = [[], []]
    for round_ in range(times):
        for index in (0, 1) if round_ % 2 == 0 else (1, 0):
            workdir = Path(tempfile.mkdtemp(prefix="cryo-http-ab-"))
            try:
                app, env = served(trees[index], workdir)
                with bench.gunicorn(f"s{index}", app, "-w 2 -k sync", workdir, env) as server:
                    seconds[index].append(server.startup_s)
            finally:
                shutil.rmtree(workdir, True)
    for index, tree in enumerate(trees):
        print(
            f"{tree:<40} start-up {statistics.median(seconds[index]):.3f} s  "
            f"(starts {' '.join(f'{s:.2f}' for s in seconds[index])})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs=2, help="two source trees (or CEIL for the json.loads ceiling)")
    parser.add_argument("--body", choices=sorted(BODIES), default="small")
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("--hook", choices=("order-select", "order-sign"), default="order-select")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--startup", type=int, metavar="N", help="only start each server N times, in turns")
    parser.add_argument(
        "--slow-fsync-ms", type=float, default=0, metavar="MS", help="make every fsync of both servers wait MS first"
    )
    parser.add_argument("--cpu-hogs", type=int, default=0, metavar="N", help="run N busy processes beside the servers")
    args = parser.parse_args(argv)
    if args.slow_fsync_ms and shutil.which("cc") is None:
        print("--slow-fsync-ms needs a C compiler (cc) to build its shim", file=sys.stderr)
        return 2
    if args.startup is None and shutil.which("wrk") is None:
        print("wrk is not installed (Debian package 'wrk')", file=sys.stderr)
        return 2
    trees = [tree if tree == "CEIL" else str(Path(tree).resolve()) for tree in args.trees]
    for tree in trees:
        if tree == "CEIL":
            continue
        if not (Path(tree) / "cds_hooks").is_dir():
            print(f"{tree} is not a source tree of the service (no cds_hooks/)", file=sys.stderr)
            return 2
        bench.compile_bytecode(Path(tree))  # as an install has it, for both trees alike
    if args.startup is not None:
        return compare_startup(trees, args.startup)
    named, _series = bench.build_bodies([])
    label, body, count = named[BODIES[args.body]]
    path = bench.SERVICE_PATH
    if args.hook == "order-sign":
        body, path, label = as_order_sign(body), SIGN_PATH, f"{label} as order-sign"
    slowed = f"; every fsync slowed by {args.slow_fsync_ms:g} ms" if args.slow_fsync_ms else ""
    slowed += f"; {args.cpu_hogs} busy processes beside them" if args.cpu_hogs else ""
    print(
        f"== {label} ({count} resources), wrk -t2 -c{args.connections}, {args.rounds} x {args.seconds} s per server "
        f"in turns; gunicorn -w 2 -k sync --preload{slowed}",
        flush=True,
    )
    with ExitStack() as stack:
        servers: list[tuple[str, bench.Server, Path]] = []
        for index, tree in enumerate(trees):
            workdir = Path(tempfile.mkdtemp(prefix="cryo-http-ab-"))
            stack.callback(shutil.rmtree, workdir, True)
            slow = slow_fsync_env(workdir, args.slow_fsync_ms) if args.slow_fsync_ms else None
            app, env = served(tree, workdir, slow)
            server = stack.enter_context(bench.gunicorn(f"s{index}", app, "-w 2 -k sync", workdir, env))
            body_path = workdir / "body.json"
            body_path.write_bytes(body)
            bench.run_wrk(server.port, body_path, args.connections, 2, workdir, path)  # warm up
            servers.append((tree, server, body_path))
        for _ in range(args.cpu_hogs):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            stack.callback(hog.wait)
            stack.callback(hog.kill)
        rates: list[list[float]] = [[], []]
        cpu_ms: list[list[float]] = [[], []]
        for round_ in range(args.rounds):
            for index in (0, 1) if round_ % 2 == 0 else (1, 0):
                _tree, server, body_path = servers[index]
                before = worker_cpu_s(server)
                rate, problems = bench.run_wrk(
                    server.port, body_path, args.connections, args.seconds, body_path.parent, path
                )
                if problems:
                    print(f"  {trees[index]}: {problems}")
                rates[index].append(rate)
                cpu_ms[index].append(1000 * (worker_cpu_s(server) - before) / (rate * args.seconds))
        for index, tree in enumerate(trees):
            print(
                f"{tree:<40} req/s {statistics.median(rates[index]):7.0f}  "
                f"(rounds {' '.join(f'{r:.0f}' for r in rates[index])})  "
                f"worker CPU {statistics.median(cpu_ms[index]):.2f} ms/request"
            )
        ratios = [b / a for a, b in zip(rates[0], rates[1], strict=True)]
        print(
            f"second/first: {statistics.median(rates[1]) / statistics.median(rates[0]):.3f} "
            f"(rounds {' '.join(f'{r:.3f}' for r in ratios)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
