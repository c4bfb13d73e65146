"""``cryo-cds replay --rules DIR [--policy FILE] [--since …] [--until …] [--json]``: what-if.

Why: before a rules folder or a site policy goes live, show what it would have changed on
the orders already in the decision log (cds_hooks.whatif): per rule, orders gaining and
losing findings and severity changes, with example decision ids.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import whatif
from ..config import from_env
from ..policy import NO_POLICY, apply_section, check_policy, load_policy
from ..state import open_audit_store
from .common import CliError, Parser, iso_datetime, print_json, progress


def run(args: argparse.Namespace) -> int:
    config = from_env()
    if not (args.rules / "parameters.yaml").is_file() and not any(args.rules.glob("*/rule.yaml")):
        raise CliError(f"{args.rules}: not a rules folder (no parameters.yaml, no <RULE-ID>/rule.yaml)")
    if args.since and args.until and args.since >= args.until:
        raise CliError("--since must be before --until")
    policy = NO_POLICY
    if args.policy is not None:
        policy = load_policy(args.policy)
        check_policy(policy, args.rules, config.rule_params)
    rulebook = apply_section(args.rules, policy.site, config.rule_params)
    store = open_audit_store(config)  # logs the data dir, the log and the key it uses
    try:
        report = whatif.replay(
            store,
            rulebook,
            policy_revision=policy.revision,
            since=args.since,
            until=args.until,
            progress=lambda batches: progress(batches, "replaying"),
        )
    finally:
        store.dispose()
    if args.json:
        print_json(report.as_json())
    else:
        for line in report.lines():
            print(line)
    return 0


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    cmd = sub.add_parser("replay", help="what-if: re-evaluate logged decisions with another rules folder/policy")
    cmd.add_argument("--rules", type=Path, required=True, metavar="DIR", help="the rules folder to try")
    cmd.add_argument("--policy", type=Path, metavar="FILE", help="a site policy to try (its site section)")
    cmd.add_argument("--since", type=iso_datetime, help="decisions from this date-time (UTC unless given)")
    cmd.add_argument("--until", type=iso_datetime, help="decisions before this date-time")
    cmd.add_argument("--json", action="store_true", help="machine-readable output, every affected order listed")
    cmd.set_defaults(func=run)


__all__ = ["register", "run"]
