"""What-if replay speed and the cost of recording facts with every decision.

1. Fills a SQLite decision log with 10,000 replayable decisions cheaply: the load harness's
   cryotherapy cases (tests/support/load.py) run through the service's pipeline in-process
   once per patient, and each outcome is written many times under fresh decision ids and
   card uuids.
   Then times ``cds_hooks.whatif.replay`` over the whole log, with the same rules and with
   a rules folder in which TD-FREEZE's threshold moved (30 s -> 60 s): decisions per second.
2. Runs the typical request of benchmarks/pipeline.py with facts recording on and off
   (alternating, same process) and prints the per-call cost side by side: pipeline run, the
   decision write, and the stored facts' size.

Run: .venv/bin/python benchmarks/replay.py [--decisions 10000] [--runs 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/http.py would shadow the standard library's http package for this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from cds_hooks.audit.records import DecisionRecord
from cds_hooks.audit.store import AuditStore
from cds_hooks.config import Config
from cds_hooks.factrecord import facts_to_record
from cds_hooks.hooks import parse_hook_request
from cds_hooks.pipeline_factory import build_pipeline, load_parts
from cds_hooks.policy import NO_POLICY, apply_section
from cds_hooks.service import SERVICES, Pipeline
from cds_hooks.whatif import replay
from tests.support.load import CASES, request_templates

SERVICE = SERVICES["cryotherapy-order-select"]


def typical_request() -> dict:
    """The typical request of benchmarks/pipeline.py (loaded by path: benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "benchmarks" / "pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.typical_request())


KEY = b"benchmark-key-0123456789"


def copy_of(decision: DecisionRecord) -> DecisionRecord:
    """The same decision under a new id, with new card uuids (they are primary keys)."""
    uuids = {card.uuid: str(uuid.uuid4()) for card in decision.cards}
    return replace(
        decision,
        decision_id=str(uuid.uuid4()),
        cards=tuple(replace(card, uuid=uuids[card.uuid]) for card in decision.cards),
        fired=tuple(replace(hit, card_uuid=uuids.get(hit.card_uuid or "")) for hit in decision.fired),
    )


def fill(store: AuditStore, pipeline: Pipeline, total: int) -> float:
    templates = request_templates()
    outcomes = []
    for (name, _patient), raw in sorted(templates.items()):
        body = json.loads(raw.replace("00000000-hook-inst-ance-slot00000000", str(uuid.uuid4())))
        outcomes.append(pipeline.run(SERVICE, parse_hook_request(body, "order-select")))
        assert name in {c.name for c in CASES}
    outcomes = [o for o in outcomes if o.decision.facts]  # only replayable decisions (cryotherapy orders)
    started = time.perf_counter()
    for i in range(total):
        outcome = outcomes[i % len(outcomes)]
        store.record_decision(copy_of(outcome.decision), outcome.evaluated_rules)
    return time.perf_counter() - started


def changed_rules(tmp: Path) -> Path:
    folder = tmp / "rules-next"
    shutil.copytree(ROOT / "rules", folder)
    path = folder / "TD-FREEZE" / "rule.yaml"
    path.write_text(path.read_text().replace("freeze_s: {gt: 30}", "freeze_s: {gt: 60}"))
    return folder


def recording_cost(config: Config, runs: int) -> None:
    parts = load_parts(config)
    body = typical_request()
    on = build_pipeline(config, parts=parts)
    off = build_pipeline(config, parts=parts)
    off.record_facts = False
    times: dict[str, dict[str, list[float]]] = {n: {"run": [], "write": [], "bytes": []} for n in ("off", "on")}
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(f"sqlite:///{tmp}/cost.db", KEY)
        store.migrate()
        for i in range(runs + 10):
            for name, pipeline in (("off", off), ("on", on)) if i % 2 else (("on", on), ("off", off)):
                t0 = time.perf_counter()
                outcome = pipeline.run(SERVICE, parse_hook_request(body, "order-select"))
                t1 = time.perf_counter()
                store.record_decision(outcome.decision, outcome.evaluated_rules)
                t2 = time.perf_counter()
                if i >= 10:  # warm-up
                    times[name]["run"].append((t1 - t0) * 1000)
                    times[name]["write"].append((t2 - t1) * 1000)
                    times[name]["bytes"].append(
                        len(json.dumps(outcome.decision.facts)) if outcome.decision.facts else 0
                    )
        store.dispose()
    # facts_to_record on the pipeline's own facts (refs, labels and all), timed in place.
    import cds_hooks.service as service_module

    spent: list[float] = []

    def timed(*call_args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return facts_to_record(*call_args)
        finally:
            spent.append((time.perf_counter() - t0) * 1e6)

    service_module.facts_to_record = timed  # type: ignore[assignment]
    try:
        for _ in range(max(20, runs)):
            outcome = on.run(SERVICE, parse_hook_request(body, "order-select"))
    finally:
        service_module.facts_to_record = facts_to_record
    recorded = outcome.decision.facts or {}
    n_facts = sum(len(o["facts"]) for o in recorded.get("orders", []))
    serialise_us = statistics.median(spent)
    print(f"\nrecording facts, typical request ({n_facts} facts), {runs} calls each, p50 ms (p90):")
    print(f"{'':22} {'facts off':>16} {'facts on':>16} {'difference':>11}")
    for step in ("run", "write"):
        off_p50, on_p50 = statistics.median(times["off"][step]), statistics.median(times["on"][step])
        off_p90 = statistics.quantiles(times["off"][step], n=10)[-1]
        on_p90 = statistics.quantiles(times["on"][step], n=10)[-1]
        print(
            f"{'pipeline run' if step == 'run' else 'decision write (SQLite)':22} "
            f"{off_p50:8.3f} ({off_p90:6.3f}) {on_p50:8.3f} ({on_p90:6.3f}) {on_p50 - off_p50:+10.3f}"
        )
    print(f"{'facts JSON per decision':22} {0:>16} {statistics.median(times['on']['bytes']):>14.0f} B")
    print(f"facts_to_record inside the pipeline: p50 {serialise_us:.1f} us per call ({len(spent)} calls)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    config = Config(rules_dir=ROOT / "rules")
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(f"sqlite:///{tmp}/replay.db", KEY)
        store.migrate()
        pipeline = build_pipeline(config)
        fill_s = fill(store, pipeline, args.decisions)
        print(f"log: {store.count_decisions()} decisions (written in {fill_s:.1f} s, SQLite file)")
        for label, folder in (("same rules", ROOT / "rules"), ("TD-FREEZE 30 s -> 60 s", changed_rules(Path(tmp)))):
            rulebook = apply_section(folder, NO_POLICY.site)
            started = time.perf_counter()
            report = replay(store, rulebook)
            elapsed = time.perf_counter() - started
            changed = {
                rule: len(c.gained) + len(c.lost) + sum(map(len, c.regraded.values()))
                for rule, c in report.changes.items()
            }
            print(
                f"replay, {label:24}: {report.decisions} decisions, {report.orders} orders in {elapsed:.2f} s "
                f"= {report.decisions / elapsed:,.0f} decisions/s; orders changed: {changed or 'none'}"
            )
        store.dispose()
    recording_cost(config, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
