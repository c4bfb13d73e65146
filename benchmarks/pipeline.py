"""In-process latency of one hook call, step by step, for both evaluators.

Prints p50/p99 (ms) of parse (prefetch -> FHIR models), facts, engine, cards, audit
(SQLite write) and the whole call, for a typical request (~50 resources) and a large one
(a whole Synthea patient). Run: .venv/bin/python benchmarks/pipeline.py [--runs 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
        resources.append(
            {
                "resourceType": "Observation",
                "status": "final",
                "effectiveDateTime": day,
                "code": {"coding": [{"system": LN, "code": "55284-4"}]},
                "component": [
                    {
                        "code": {"coding": [{"system": LN, "code": "8480-6"}]},
                        "valueQuantity": {"value": 150, "code": "mm[Hg]"},
                    },
                    {
                        "code": {"coding": [{"system": LN, "code": "8462-4"}]},
                        "valueQuantity": {"value": 92, "code": "mm[Hg]"},
                    },
                ],
            }
        )
        resources.append(
            {
                "resourceType": "Observation",
                "status": "final",
                "effectiveDateTime": day,
                "code": {"coding": [{"system": LN, "code": "8867-4"}]},
                "valueQuantity": {"value": 80, "code": "/min"},
            }
        )
        resources.append(
            {
                "resourceType": "Observation",
                "status": "final",
                "effectiveDateTime": day,
                "code": {"coding": [{"system": LN, "code": "718-7"}]},
                "valueQuantity": {"value": 12.5, "code": "g/dL"},
            }
        )
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
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
