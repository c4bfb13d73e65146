"""In-process latency of one hook call, step by step, for both evaluators.

Prints p50/p99 (ms) of parse (prefetch -> FHIR models), facts, engine, cards, audit
(SQLite write) and the whole call, for a typical request (~50 resources) and a large one
(a whole Synthea patient). Run: .venv/bin/python benchmarks/pipeline.py [--runs 300]

``--sizes`` measures the same steps on the bodies ``benchmarks/http.py`` builds (~20, ~320,
~1,000 and 5,000 resources); ``--baseline DIR`` also runs that measurement against another
checkout (e.g. ``/work/main``) in a child process, so before and after come from one run on
the same machine load and print side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# This folder holds http.py, which would shadow the standard library's ``http`` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
# CRYO_BENCH_TREE: the checkout whose code is measured (the --baseline child sets it).
ROOT = Path(os.environ.get("CRYO_BENCH_TREE") or HERE.parent).resolve()
sys.path.insert(0, str(ROOT))

from cds_hooks.audit.store import AuditStore
from cds_hooks.config import Config
from cds_hooks.devtools.cases import bundle_request, case_request
from cds_hooks.hooks import parse_hook_request
from cds_hooks.pipeline_factory import build_pipeline, load_parts
from cds_hooks.service import SERVICES, Pipeline

LARGE_CANDIDATES = [
    ROOT.parent / "shared/external/fhir-data/synthea-smart-r4/Parker_Casper_6d0c6969-6843-47e1-9921-d9bf11b1df31.json",
    ROOT / "fhir_fixtures/external/Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json",
]
SN, LN, RX = "http://snomed.info/sct", "http://loinc.org", "http://www.nlm.nih.gov/research/umls/rxnorm"


def _loinc(code: str) -> dict[str, Any]:
    return {"coding": [{"system": LN, "code": code}]}


def _measured(code: str, value: float, unit: str) -> dict[str, Any]:
    """A LOINC code and its value: an Observation's or a component's."""
    return {"code": _loinc(code), "valueQuantity": {"value": value, "code": unit}}


def _observation(day: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "effectiveDateTime": day, **fields}


def typical_request() -> dict:
    """About 50 resources: conditions, medications, a year of vitals and labs."""
    resources: list[dict] = []
    for code in ("38341003", "44054006", "195967001", "266261006", "40930008"):
        resources.append(
            {
                "resourceType": "Condition",
                "code": {"coding": [{"system": SN, "code": code}]},
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "onsetDateTime": "2019-01-01",
            }
        )
    for code in ("855332", "314076", "197806", "310431", "198145"):
        resources.append(
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": RX, "code": code}]},
            }
        )
    for month in range(1, 13):
        day = f"2026-{month:02d}-05"
        blood_pressure = [_measured("8480-6", 150, "mm[Hg]"), _measured("8462-4", 92, "mm[Hg]")]
        resources.append(_observation(day, {"code": _loinc("55284-4"), "component": blood_pressure}))
        resources.append(_observation(day, _measured("8867-4", 80, "/min")))
        resources.append(_observation(day, _measured("718-7", 12.5, "g/dL")))
    resources.append(
        {"resourceType": "Device", "status": "active", "type": {"coding": [{"system": SN, "code": "14106009"}]}}
    )
    resources.append({"resourceType": "AllergyIntolerance", "code": {"text": "Penicillin"}})
    resources.append(
        {
            "resourceType": "Procedure",
            "status": "completed",
            "performedDateTime": "2026-10-01",
            "code": {"coding": [{"system": SN, "code": "29303009"}]},
        }
    )
    return case_request({"order": "wbc", "resources": resources})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure(pipeline: Pipeline, store: AuditStore, body: dict, runs: int) -> dict[str, list[float]]:
    service = SERVICES["cryotherapy-order-select"]
    steps: dict[str, list[float]] = {k: [] for k in ("parse", "facts", "engine", "cards", "audit", "whole call")}
    for _ in range(runs):
        started = time.perf_counter()
        outcome = pipeline.run(service, parse_hook_request(body, "order-select"))
        t_audit = time.perf_counter()
        store.record_decision(outcome.decision, outcome.evaluated_rules)
        ended = time.perf_counter()
        for step in ("parse", "facts", "engine", "cards"):
            steps[step].append(outcome.timings_ms.get(step, 0.0))
        steps["audit"].append((ended - t_audit) * 1000)
        steps["whole call"].append((ended - started) * 1000)
    return steps


SIZE_STEPS = ("parse", "facts", "engine", "cards", "whole call")


def http_bodies() -> list[tuple[str, dict[str, Any], int]]:
    """The bodies of benchmarks/http.py (its builder, loaded from this script's folder)."""
    spec = importlib.util.spec_from_file_location("bench_http", HERE / "http.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    named, series = module.build_bodies([5000])
    bodies = [(label, json.loads(body), count) for label, body, count in named if label != "fixture 03"]
    bodies += [(f"growth {count}", json.loads(body), count) for count, body in series]
    return bodies


def measure_sizes(runs: int) -> dict[str, dict[str, Any]]:
    """p50 per step (ms) for every http.py body, with the plain evaluator's cards as a check."""
    config = Config(rules_dir=ROOT / "rules")
    pipeline = build_pipeline(config, parts=load_parts(config))
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(f"sqlite:///{tmp}/bench.db", b"benchmark-key-0123456789")
        store.migrate()
        for label, body, count in http_bodies():
            n = max(5, runs // (10 if count >= 1000 else 2))
            measure(pipeline, store, body, 2)
            steps = measure(pipeline, store, body, n)
            out[label] = {"resources": count, "runs": n, **{s: statistics.median(steps[s]) for s in SIZE_STEPS}}
        store.dispose()
    return out


def print_sizes(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    trees = list(results)
    print(f"\nper-step p50 ms on the benchmarks/http.py bodies ({', '.join(trees)})")
    print(f"{'body':<22}{'res':>6} {'step':<11}" + "".join(f"{t[-19:]:>20}" for t in trees))
    first = results[trees[0]]
    for label, row in first.items():
        for step in SIZE_STEPS:
            cells = "".join(f"{results[t].get(label, {}).get(step, float('nan')):20.2f}" for t in trees)
            print(f"{label:<22}{row['resources']:>6} {step:<11}{cells}")


def run_sizes(runs: int, baseline: str | None) -> int:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    if baseline:
        env = {**os.environ, "CRYO_BENCH_TREE": str(Path(baseline).resolve())}
        child = subprocess.run(
            [sys.executable, __file__, "--sizes", "--json", "--runs", str(runs)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[f"before {baseline}"] = json.loads(child.stdout.strip().splitlines()[-1])
    results[f"this tree {ROOT.name}"] = measure_sizes(runs)
    print_sizes(results)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--sizes", action="store_true", help="per-step figures on the http.py bodies")
    parser.add_argument("--baseline", help="with --sizes: also measure this checkout (before)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sizes and args.json:
        print(json.dumps(measure_sizes(args.runs)))
        return 0
    if args.sizes:
        return run_sizes(args.runs, args.baseline)
    config = Config(rules_dir=ROOT / "rules")
    large_path = next(p for p in LARGE_CANDIDATES if p.exists())
    large = bundle_request(json.loads(large_path.read_text()), "wbc")
    requests = {"typical": typical_request(), f"large ({large_path.stem.split('_')[0]})": large}
    for name, body in requests.items():
        count = sum(
            len(v.get("entry", [])) if isinstance(v, dict) and v.get("resourceType") == "Bundle" else 1
            for v in body["prefetch"].values()
        )
        print(f"\n{name} request: {count} resources, {len(json.dumps(body)) / 1024:.0f} KiB")
        print(f"{'evaluator':9} {'step':11} {'p50 ms':>9} {'p99 ms':>9}")
        for evaluator_name in ("durable", "plain"):
            pipeline = build_pipeline(config, parts=load_parts(config, evaluator=evaluator_name))
            with tempfile.TemporaryDirectory() as tmp:
                store = AuditStore(f"sqlite:///{tmp}/bench.db", b"benchmark-key-0123456789")
                store.migrate()
                runs = args.runs if name == "typical" else max(20, args.runs // 10)
                measure(pipeline, store, body, 5)  # warm-up
                steps = measure(pipeline, store, body, runs)
                store.dispose()
            for step, values in steps.items():
                print(f"{evaluator_name:9} {step:11} {statistics.median(values):9.3f} {percentile(values, 99):9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
