"""Cards per order over the SMART Synthea patients, and cards whose text breaks the
clinician-language rules (catalogue tags, raw ids, code lists, template gaps).

Each patient gets a whole-body order and a local (liquid-nitrogen) order, one request each.
Prints the distribution of cards per order beside the targets (whole-body median <= 3,
max 4; local median <= 2; 0 bad cards) and lists the bad cards' problems.
Run: .venv/bin/python benchmarks/cards.py [--data DIR] [--evaluator plain|durable]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not this folder: its http.py would shadow the standard library's

from cds_hooks.cardcheck import card_problems
from cds_hooks.config import Config
from cds_hooks.devtools.cases import bundle_request
from cds_hooks.hooks import parse_hook_request
from cds_hooks.pipeline_factory import build_pipeline, load_parts
from cds_hooks.service import SERVICES

DEFAULT_DATA = ROOT.parent / "shared/external/fhir-data/synthea-smart-r4"
ORDERS = {"whole-body": "wbc", "local": "ln2"}
TARGETS = {"whole-body": (3, 4), "local": (2, None)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--evaluator", choices=("plain", "durable"), default="plain")
    args = parser.parse_args()
    paths = sorted(args.data.glob("*.json"))
    if not paths:
        print(f"no patient bundles in {args.data}", file=sys.stderr)
        return 2
    config = Config(rules_dir=ROOT / "rules")
    pipeline = build_pipeline(config, parts=load_parts(config, evaluator=args.evaluator))
    service = SERVICES["cryotherapy-order-select"]
    counts: dict[str, list[int]] = {name: [] for name in ORDERS}
    bad: Counter[str] = Counter()
    bad_cards = 0
    examples: list[str] = []
    for path in paths:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for name, preset in ORDERS.items():
            body = bundle_request(bundle, preset)
            cards = pipeline.run(service, parse_hook_request(body, "order-select")).body["cards"]
            counts[name].append(len(cards))
            for card in cards:
                problems = card_problems(card)
                if problems:
                    bad_cards += 1
                    bad.update(problems)
                    if len(examples) < 5:
                        examples.append(f"  {card['summary'][:90]!r}: {', '.join(problems)}")
    print(f"{len(paths)} patients, {args.evaluator} evaluator")
    print(f"{'order':12} {'median':>6} {'max':>4} {'mean':>5}  target  distribution (cards: orders)")
    for name, values in counts.items():
        median_target, max_target = TARGETS[name]
        target = f"<={median_target}" + (f", max {max_target}" if max_target else "")
        dist = ", ".join(f"{k}: {v}" for k, v in sorted(Counter(values).items()))
        print(
            f"{name:12} {statistics.median(values):6g} {max(values):4d} {statistics.mean(values):5.1f}"
            f"  {target:7} {dist}"
        )
    total = sum(len(v) for v in counts.values()) and sum(sum(v) for v in counts.values())
    print(f"cards breaking the language rules: {bad_cards} of {total} (target 0)")
    for problem, n in bad.most_common():
        print(f"  {n:4d}  {problem}")
    if examples:
        print("examples:")
        print("\n".join(examples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
