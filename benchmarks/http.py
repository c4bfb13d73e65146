"""Outside view of the service's speed: ours against a ``json.loads`` ceiling (issue 15).

Starts two gunicorn servers side by side under the same settings (default 2 sync workers,
``--preload``): the service (JWT off, SQLite decision log in a temp dir) and a tiny Flask app
that does nothing but ``json.loads`` the body and answer ``{"cards": []}``. Each request body
fills the prefetch keys of our discovery document with resources of the templates' types:

* fixture 03 (7 resources), a ~20-resource body, the Synthea patient Parker Casper
  (319 resources of the prefetch types), a ~1,000-resource body;
* a growth series 100 -> 5,000 resources, built by replicating the Condition, Observation,
  Procedure and MedicationRequest resources of the six Synthea bundles in
  ``fhir_fixtures/external`` with fresh ids.

Requests alternate between the two servers one at a time (c=1); the script prints p50/p95 and
ours/ceiling ratios, the growth slope (ms per 100 resources, least squares), ``wrk`` req/s at
c=8 and c=32 for the four named bodies (the two servers in turns, a few rounds each, medians;
skipped with a message when ``wrk`` is not installed), RSS (and PSS, which counts the pages
master and workers share once) of master + workers right after the run and 3 s later, and
also right after the growth series and 3 s later (an idle worker hands back what its large
calls kept), and the start-up time to the first answer (with the package's bytecode written
first, as an install has it). The machine is shared, so compare only figures of one run, and
repeat a run before believing a difference.

    python benchmarks/http.py                       # full run (~4 min)
    python benchmarks/http.py --quick               # fewer repeats, smaller series (~1 min)
    python benchmarks/http.py --worker-args "-w 2 -k gthread --threads 4"
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's ``http`` package; when run as a script its
# folder comes first on sys.path and would shadow ``http.client``. Drop it before importing.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import compileall
import copy
import http.client
import json
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.load import GLIBC_TUNABLES, gunicorn_process

FIXTURE_03 = ROOT / "fhir_fixtures" / "requests" / "03-no-findings-whole-body-order-select.json"
SYNTHEA_DIR = ROOT / "fhir_fixtures" / "external"
SYNTHEA_PATIENT = SYNTHEA_DIR / "Parker_Casper_6d0c6969-6843-47e1-9921-d9bf11b1df31.json"
SERVICE_PATH = "/cds-services/cryotherapy-order-select"
PATIENT_HASH_KEY = "benchmark-http-patient-hash-key-0123456789"
DEFAULT_WORKER_ARGS = "-w 2 -k sync"
IDLE_WAIT_S = 3.0  # longer than the service's default CDS_HOOKS_MEMORY_RELEASE_IDLE_S (2 s)
SERVICE_APP = "cds_hooks.app:create_app()"
CEILING_SOURCE = '''\
"""The json.loads ceiling: parse the body, answer no cards."""
import json

from flask import Flask, Response, request

app = Flask(__name__)


@app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
@app.route("/<path:path>", methods=["GET", "POST"])
def answer(path: str) -> Response:
    json.loads(request.get_data(cache=False) or b"{}")
    return Response('{"cards":[]}', mimetype="application/json")
'''
# Resource type -> the prefetch key our discovery document fetches it with.
PREFETCH_KEY = {
    "Patient": "patient",
    "Condition": "conditions",
    "MedicationRequest": "medicationRequests",
    "MedicationStatement": "medicationStatements",
    "MedicationAdministration": "medicationAdministrations",
    "Observation": "observations",
    "Device": "devices",
    "DeviceUseStatement": "deviceUseStatements",
    "AllergyIntolerance": "allergies",
    "Procedure": "procedures",
    "ServiceRequest": "serviceRequests",
    "Appointment": "appointments",
}
PATIENT_FIELD = {"AllergyIntolerance": "patient", "Appointment": None}


# -- request bodies ------------------------------------------------------------------------


def _fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE_03.read_text(encoding="utf-8"))
    return data


def count_resources(body: dict[str, Any]) -> int:
    total = 0
    for value in body.get("prefetch", {}).values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            total += len(value.get("entry", []))
        elif isinstance(value, dict):
            total += 1
    return total


def body_with(resources: list[dict[str, Any]], patient: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Fixture 03's order with a prefetch of every discovery key: the patient and searchsets."""
    body = _fixture()
    body["context"]["patientId"] = patient["id"]
    prefetch: dict[str, Any] = {"patient": patient}
    by_key: dict[str, list[dict[str, Any]]] = {key: [] for key in keys if key != "patient"}
    for resource in resources:
        by_key.setdefault(PREFETCH_KEY[resource["resourceType"]], []).append(resource)
    for key, entries in by_key.items():
        prefetch[key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(entries),
            "entry": [{"resource": r, "fullUrl": f"urn:uuid:{r['id']}"} for r in entries],
        }
    body["prefetch"] = prefetch
    return body


def synthea_pool() -> list[dict[str, Any]]:
    """The realistic resources of the six Synthea bundles that a prefetch template would fetch."""
    pool: list[dict[str, Any]] = []
    for path in sorted(SYNTHEA_DIR.glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") in PREFETCH_KEY and resource["resourceType"] != "Patient":
                pool.append(resource)
    return pool


def replicated(pool: list[dict[str, Any]], n: int, patient_id: str) -> list[dict[str, Any]]:
    """``n`` resources cycled from ``pool`` with fresh ids, all about one patient."""
    out = []
    ns = uuid.UUID("6f1d0c7e-0000-4000-8000-000000000015")
    for i in range(n):
        resource = copy.deepcopy(pool[i % len(pool)])
        resource["id"] = str(uuid.uuid5(ns, f"{n}-{i}"))  # fresh, and the same in every run
        field_name = PATIENT_FIELD.get(resource["resourceType"], "subject")
        if field_name:
            resource[field_name] = {"reference": f"Patient/{patient_id}"}
        resource.pop("encounter", None)  # would point at an Encounter not in the prefetch
        out.append(resource)
    return out


def build_bodies(growth: list[int]) -> tuple[list[tuple[str, bytes, int]], list[tuple[int, bytes]]]:
    fixture = _fixture()
    keys = list(fixture["prefetch"])
    patient = fixture["prefetch"]["patient"]
    pool = synthea_pool()
    named: list[tuple[str, bytes, int]] = [("fixture 03", FIXTURE_03.read_bytes(), count_resources(fixture))]
    small = body_with(replicated(pool, 19, patient["id"]), patient, keys)
    named.append(("small (Synthea mix)", _encode(small), count_resources(small)))
    bundle = json.loads(SYNTHEA_PATIENT.read_text(encoding="utf-8"))
    resources = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] in PREFETCH_KEY]
    synthea_patient = next(r for r in resources if r["resourceType"] == "Patient")
    synthea = body_with([r for r in resources if r is not synthea_patient], synthea_patient, keys)
    named.append(("Synthea patient", _encode(synthea), count_resources(synthea)))
    large = body_with(replicated(pool, 1000, patient["id"]), patient, keys)
    named.append(("large (Synthea mix)", _encode(large), count_resources(large)))
    series = []
    for n in growth:
        body = body_with(replicated(pool, n - 1, patient["id"]), patient, keys)
        series.append((count_resources(body), _encode(body)))
    return named, series


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


# -- servers -------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    startup_s: float = float("nan")
    times: dict[str, list[float]] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """Master and workers (the master's children)."""
        children: set[int] = set()
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            children.update(int(p) for p in (task / "children").read_text().split())
        return [self.process.pid, *sorted(children)]

    def pss_mb(self) -> float:
        """Proportional set size: pages shared by master and workers (``--preload``) counted
        once in total rather than once per process, as RSS counts them."""
        total_kb = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        return total_kb / 1024

    def rss_mb(self) -> float:
        total_kb = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        return total_kb / 1024


def post(port: int, body: bytes, path: str = SERVICE_PATH) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def gunicorn(name: str, app: str, worker_args: str, workdir: Path, env: dict[str, str]) -> Iterator[Server]:
    """The load harness's gunicorn start-up (tests/support/load.py), timed to the first 200."""
    started = time.perf_counter()
    with gunicorn_process(
        app,
        shlex.split(worker_args),
        workdir,
        env,
        log_name=f"{name}.log",
        args_extra=("--timeout", "120", "--log-level", "warning"),
    ) as (process, port, log_path):
        server = Server(name, process, port, log_path)
        probe = FIXTURE_03.read_bytes()
        deadline = started + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                status, _ = post(port, probe)
                if status == 200:
                    server.startup_s = time.perf_counter() - started
                    break
            except OSError:
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{name} did not answer in time:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.01)
        yield server


# -- measuring -----------------------------------------------------------------------------


def alternate(servers: list[Server], label: str, body: bytes, repeats: int, warmup: int = 2) -> None:
    """One request at a time, servers taking turns, so both see the same machine load."""
    for server in servers:
        for _ in range(warmup):
            status, text = post(server.port, body)
            if status != 200:
                raise RuntimeError(f"{server.name} answered {status} to {label}: {text[:300]!r}")
    for _ in range(repeats):
        for server in servers:
            start = time.perf_counter()
            status, _ = post(server.port, body)
            elapsed = (time.perf_counter() - start) * 1000
            if status != 200:
                raise RuntimeError(f"{server.name} answered {status} to {label}")
            server.times.setdefault(label, []).append(elapsed)


def rss_reading(ours: Server, ceiling: Server, *, processes: bool = False, pss: bool = False) -> str:
    """One memory reading of both servers, as every RSS line prints it."""
    count = f" ({len(ours.pids())} processes)" if processes else ""
    text = f"ours {ours.rss_mb():.0f} MB{count}, ceiling {ceiling.rss_mb():.0f} MB"
    if pss:
        text += f" (PSS: ours {ours.pss_mb():.0f} MB, ceiling {ceiling.pss_mb():.0f} MB)"
    return text


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def slope_per_100(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of p50 against resource count, in ms per 100 resources."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return 100 * sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)


WRK_LUA = """\
local f = io.open("{path}", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
"""


def run_wrk(
    port: int, body_path: Path, connections: int, seconds: int, workdir: Path, path: str = SERVICE_PATH
) -> tuple[float, str]:
    script = workdir / f"post-{body_path.stem}.lua"
    script.write_text(WRK_LUA.format(path=body_path), encoding="utf-8")
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec:"))
    bad = [line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
    return rate, "; ".join(bad)


def compile_bytecode(tree: Path) -> None:
    """Write the package's bytecode first, as installing it does: a checkout run with
    PYTHONDONTWRITEBYTECODE set (or from a read-only tree) would otherwise compile every
    module again at each start, and start-up would measure the compiler, not the service."""
    compileall.compile_dir(str(tree / "cds_hooks"), quiet=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a shorter growth series")
    parser.add_argument(
        "--worker-args",
        default=DEFAULT_WORKER_ARGS,
        help=f"gunicorn worker options for both servers (default: {DEFAULT_WORKER_ARGS!r})",
    )
    parser.add_argument("--app", default=SERVICE_APP, help=f"our gunicorn app (default: {SERVICE_APP!r})")
    parser.add_argument("--wrk-seconds", type=int, default=None, help="duration of each wrk run")
    parser.add_argument(
        "--wrk-rounds", type=int, default=None, help="wrk runs per server, body and concurrency, taken in turns"
    )
    args = parser.parse_args(argv)
    repeats = 10 if args.quick else 40
    growth = [100, 500, 1000, 2000] if args.quick else [100, 250, 500, 1000, 2000, 3500, 5000]
    wrk_seconds = args.wrk_seconds or (3 if args.quick else 4)
    wrk_rounds = args.wrk_rounds or (1 if args.quick else 3)

    named, series = build_bodies(growth)
    compile_bytecode(ROOT)
    workdir = Path(tempfile.mkdtemp(prefix="cryo-http-bench-"))
    try:
        (workdir / "ceiling_app.py").write_text(CEILING_SOURCE, encoding="utf-8")
        base_env = {
            **os.environ,
            "GLIBC_TUNABLES": GLIBC_TUNABLES,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        ours_env = {
            **base_env,
            "CDS_HOOKS_AUTH": "off",
            "CDS_HOOKS_PATIENT_HASH_KEY": PATIENT_HASH_KEY,
            "CDS_HOOKS_DATA_DIR": str(workdir / "data"),  # its own spool, not the user's
            "CDS_HOOKS_DATABASE_URL": f"sqlite:///{workdir / 'decisions.db'}",
        }
        ceiling_env = {**base_env, "PYTHONPATH": os.pathsep.join([str(workdir), base_env["PYTHONPATH"]])}
        print(
            f"== benchmarks/http.py: gunicorn {args.worker_args} --preload, ours = {args.app}, "
            f"ceiling = Flask + json.loads; {os.cpu_count()} CPUs; bytecode compiled first; "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}",
            flush=True,
        )
        with (
            gunicorn("ours", args.app, args.worker_args, workdir, ours_env) as ours,
            gunicorn("ceiling", "ceiling_app:app", args.worker_args, workdir, ceiling_env) as ceiling,
        ):
            servers = [ours, ceiling]
            print(f"start-up to first answer: ours {ours.startup_s:.2f} s, ceiling {ceiling.startup_s:.2f} s")
            print(
                f"RSS master + workers after start: {rss_reading(ours, ceiling, pss=True)}",
                flush=True,
            )

            print(f"\nc=1, requests alternating, {repeats} each (ms)")
            print(
                f"{'body':<22}{'res':>6}{'KB':>7}{'ours p50':>10}{'p95':>8}{'ceil p50':>10}{'p95':>8}{'ratio p50':>11}"
            )
            for label, body, count in named:
                alternate(servers, label, body, repeats)
                o, c = ours.times[label], ceiling.times[label]
                print(
                    f"{label:<22}{count:>6}{len(body) / 1024:>7.0f}{p(o, 0.5):>10.1f}{p(o, 0.95):>8.1f}"
                    f"{p(c, 0.5):>10.1f}{p(c, 0.95):>8.1f}{p(o, 0.5) / p(c, 0.5):>10.1f}x",
                    flush=True,
                )

            print("\ngrowth series, c=1 alternating (ms)")
            print(f"{'resources':>10}{'ours p50':>10}{'ceil p50':>10}{'ratio':>8}")
            growth_points: dict[str, list[tuple[int, float]]] = {"ours": [], "ceiling": []}
            for count, body in series:
                label = f"growth {count}"
                alternate(servers, label, body, max(3, repeats // (4 if count >= 1000 else 2)), warmup=1)
                for server in servers:
                    growth_points[server.name].append((count, p(server.times[label], 0.5)))
                o, c = p(ours.times[label], 0.5), p(ceiling.times[label], 0.5)
                print(f"{count:>10}{o:>10.1f}{c:>10.1f}{o / c:>7.1f}x", flush=True)
            slopes = {name: slope_per_100(points) for name, points in growth_points.items()}
            print(f"growth slope: ours {slopes['ours']:.2f} ms per 100 resources, ceiling {slopes['ceiling']:.2f}")
            # A worker keeps a large call's memory until a smaller call or 2 s without requests.
            held = rss_reading(ours, ceiling)
            time.sleep(IDLE_WAIT_S)
            print(
                f"RSS master + workers right after the series: {held}; {IDLE_WAIT_S:.0f} s later: "
                f"{rss_reading(ours, ceiling)}"
            )

            if shutil.which("wrk") is None:
                print("\nwrk: not installed (Debian package 'wrk'); throughput skipped")
            else:
                print(
                    f"\nwrk -t2, {wrk_rounds} x {wrk_seconds} s per server, the servers taking turns "
                    "(req/s: medians; ours/ceil: ratio of the medians, and the range of the rounds' ratios)"
                )
                print(f"{'body':<22}{'c':>4}{'ours':>9}{'ceiling':>10}{'ours/ceil':>11}   rounds")
                wrk_bodies = [named[0], named[1]] if args.quick else named
                for label, body, _count in wrk_bodies:
                    path = workdir / f"body-{label.split()[0]}.json"
                    path.write_bytes(body)
                    for connections in (8, 32):
                        rates: dict[str, list[float]] = {"ours": [], "ceiling": []}
                        problems: list[str] = []
                        for round_ in range(wrk_rounds):
                            # Each round starts with the other server, so neither always runs first.
                            for server in (ours, ceiling) if round_ % 2 == 0 else (ceiling, ours):
                                rate, bad = run_wrk(server.port, path, connections, wrk_seconds, workdir)
                                rates[server.name].append(rate)
                                if bad:
                                    problems.append(f"[{server.name}: {bad}]")
                        o_rate, c_rate = statistics.median(rates["ours"]), statistics.median(rates["ceiling"])
                        ratios = [100 * o / c for o, c in zip(rates["ours"], rates["ceiling"], strict=True)]
                        print(
                            f"{label:<22}{connections:>4}{o_rate:>9.0f}{c_rate:>10.0f}"
                            f"{100 * o_rate / c_rate:>10.0f}%   {min(ratios):.0f}-{max(ratios):.0f}% "
                            + "  ".join(problems),
                            flush=True,
                        )

            # Read at once (the last calls' memory may still be kept), then after the idle wait.
            print(
                f"\nRSS master + workers right after the run: {rss_reading(ours, ceiling, processes=True, pss=True)}",
                flush=True,
            )
            time.sleep(IDLE_WAIT_S)
            print(
                f"RSS master + workers {IDLE_WAIT_S:.0f} s after the run: {rss_reading(ours, ceiling, processes=True)}"
            )
            replaced = ours.log_path.read_text(encoding="utf-8", errors="replace").count(" grew by ")
            print(f"our workers replaced after growing past CDS_HOOKS_WORKER_MAX_GROWTH_MB: {replaced}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
