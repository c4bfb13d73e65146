"""``cryo-cds policy check FILE``: validate a site policy and say what it changes.

Why: a policy changes what clinicians are told; whoever edits it should see, before the
service loads it, each change against the bundled rules in one line, and a refused policy
(unknown rule or parameter, a never-list rule turned off or demoted) as one line, exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import from_env
from ..policy import check_policy, describe_changes, load_policy
from .common import Parser, warn


def run(args: argparse.Namespace) -> int:
    config = from_env()
    policy = load_policy(args.file)
    check_policy(policy, config.rules_dir, config.rule_params)
    changes = describe_changes(policy, config.rules_dir, config.rule_params)
    for line in changes:
        print(line)
    if not changes:
        print("no changes: the bundled rules apply as they are")
    warn(f"{args.file}: valid; policy revision {policy.revision}; {len(changes)} change(s)")
    return 0


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    policy = sub.add_parser("policy", help="site policy: validate a file and list what it changes")
    commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="validate FILE and print each change against the bundled rules")
    check.add_argument("file", type=Path, metavar="FILE", help="policy YAML (as CDS_HOOKS_POLICY would load it)")
    check.set_defaults(func=run)


__all__ = ["register", "run"]
