"""``cryo-cds audit``: questions over the decision log (summary, decisions, one decision or
card, silent rules, purge). Every subcommand first names the data directory and the log it
reads, so nobody mistakes an empty new log for the service's."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from ..config import from_env
from ..state import open_audit_store
from .common import (
    Parser,
    add_json_option,
    iso_datetime,
    non_negative_int,
    positive_int,
    print_json,
    print_rows,
    warn,
)

SUMMARY_HEADERS = {
    "rule_id": "rule",
    "rule_version": "version",
    "evaluations": "evals",
    "fire_rate": "fire rate",
    "override_rate": "override rate",
    "top_override_reasons": "top override reasons",
}
DECISION_COLUMNS = ("created_at", "decision_id", "service_id", "status", "latency_ms", "cards", "rules_fired")
DECISION_HEADERS = {
    "created_at": "when (UTC)",
    "decision_id": "decision",
    "service_id": "service",
    "latency_ms": "ms",
    "rules_fired": "rules fired",
}


REVISION_COLUMNS = ("rules_revision", "policy_revision", "decisions", "cards", "findings_left_out", "first", "last")


def _period(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    since: datetime | None = getattr(args, "since", None)
    until: datetime | None = getattr(args, "until", None)
    if getattr(args, "days", None) is not None:
        since = datetime.now(UTC) - timedelta(days=args.days)
    return since, until


def _explained(found: dict[str, Any] | None, what: str) -> int:
    """One decision or card as JSON; status 1 when the log has no such thing."""
    if found is None:
        warn(f"cryo-cds: no {what} in this log")
        return 1
    print_json(found)
    return 0


def run(args: argparse.Namespace) -> int:
    from ..audit import analytics

    config = from_env()
    store = open_audit_store(config)  # logs the data dir, the log and the key it uses
    try:
        command = args.audit_command
        if command == "summary":
            rows = analytics.rule_summary(store, *_period(args), policy_revision=args.policy_revision)
            print_rows(rows, as_json=args.json, columns=analytics.RULE_SUMMARY_COLUMNS, headers=SUMMARY_HEADERS)
        elif command == "decisions":
            rows = analytics.list_decisions(
                store, *_period(args), service_id=args.service, rule_id=args.rule, limit=args.limit
            )
            if not args.json:
                for row in rows:
                    row["created_at"] = str(row["created_at"])[:19].replace("T", " ")
            print_rows(rows, as_json=args.json, columns=DECISION_COLUMNS, headers=DECISION_HEADERS)
            if not args.json:
                warn(f"{len(rows)} decision(s), newest first")
        elif command == "revisions":
            rows = analytics.revision_summary(store, *_period(args))
            headers = {"findings_left_out": "left out (repeats)"}
            print_rows(rows, as_json=args.json, columns=REVISION_COLUMNS, headers=headers)
        elif command == "decision":
            return _explained(analytics.explain_decision(store, args.decision_id), f"decision {args.decision_id}")
        elif command == "card":
            return _explained(analytics.explain_card(store, args.card_uuid), f"card {args.card_uuid}")
        elif command == "silent":
            from ..rulebook import load_rulebook

            rule_ids = [r.id for r in load_rulebook(config.rules_dir, config.rule_params).rules]
            print_json(analytics.silent_rules(store, rule_ids, *_period(args)))
        elif command == "purge":
            print(f"deleted {store.purge_older_than(args.older_than_days)} decisions")
    finally:
        store.dispose()
    return 0


def _question(
    questions: argparse._SubParsersAction[Parser], name: str, help: str, *, period: bool = False, json: bool = False
) -> Parser:
    """One ``audit`` question; ``period`` adds --since/--until/--days, ``json`` adds --json."""
    parser = questions.add_parser(name, help=help)
    if period:
        parser.add_argument("--since", type=iso_datetime, help="from this ISO date-time (inclusive)")
        parser.add_argument("--until", type=iso_datetime, help="up to this ISO date-time (exclusive)")
        parser.add_argument("--days", type=positive_int, help="the last N days (instead of --since)")
    if json:
        add_json_option(parser)
    return parser


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    audit = sub.add_parser("audit", help="query the decision log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="QUESTION")
    summary = _question(
        audit_sub, "summary", "per-rule fires, overrides and reasons over a period", period=True, json=True
    )
    summary.add_argument("--policy-revision", help="only decisions made under this site-policy revision")
    decisions = _question(audit_sub, "decisions", "list decisions, newest first, with filters", period=True, json=True)
    decisions.add_argument("--service", help="only this service id (e.g. cryotherapy-order-sign)")
    decisions.add_argument("--rule", help="only decisions where this rule fired (e.g. CI-PREG)")
    decisions.add_argument("--limit", type=positive_int, default=50, help="at most N rows (default 50)")
    _question(audit_sub, "revisions", "decisions and cards per rules and site-policy revision", period=True, json=True)
    _question(audit_sub, "silent", "rules never evaluated or never fired over a period (JSON)", period=True)
    _question(audit_sub, "decision", "explain one decision (JSON)").add_argument("decision_id")
    _question(audit_sub, "card", "explain one card by its uuid (JSON)").add_argument("card_uuid")
    purge = _question(audit_sub, "purge", "delete decisions older than N days")
    purge.add_argument("--older-than-days", type=non_negative_int, required=True, metavar="N")
    audit.set_defaults(func=run)


__all__ = ["register", "run"]
