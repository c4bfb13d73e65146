"""The ``cryo-cds`` command: run the service, check a request file (the rule author's
sandbox), serve FHIR fixtures, and query the decision log."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .config import ConfigError, from_env


def _serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import run_simple

    from .app import create_app

    config = from_env()
    if args.no_auth:
        config = config.with_overrides(auth_required=False)
    config = config.with_overrides(host=args.host or config.host, port=args.port or config.port)
    if args.public_base_url is not None:
        config = config.with_overrides(public_base_url=args.public_base_url.rstrip("/"))
    elif config.public_base_url == "http://127.0.0.1:8080":
        config = config.with_overrides(public_base_url=f"http://{config.host}:{config.port}")
    app = create_app(config)
    print(f"cryo-cds listening on http://{config.host}:{config.port}/cds-services", file=sys.stderr)
    run_simple(config.host, config.port, app, threaded=True)
    return 0


def load_request(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _check(args: argparse.Namespace) -> int:
    from .engine import make_evaluator
    from .errors import CdsError
    from .hooks import parse_hook_request
    from .rulebook import load_rulebook
    from .service import SERVICES, Pipeline
    from .terminology import Terminology

    config = from_env()
    terminology = Terminology.load(config.rules_dir / "valuesets")
    rulebook = load_rulebook(config.rules_dir, config.rule_params)
    evaluator = make_evaluator(rulebook.engine_rules(), args.evaluator or config.evaluator)
    now = datetime.fromisoformat(args.now).astimezone(UTC) if args.now else None
    pipeline = Pipeline(rulebook, terminology, evaluator, card_grouping=config.card_grouping,
                        public_base_url=config.public_base_url)
    if now is not None:
        fixed = now
        pipeline.clock = lambda: fixed
    status = 0
    for path in args.files:
        body = load_request(Path(path))
        service_id = args.service or (
            "cryotherapy-order-sign" if body.get("hook") == "order-sign" else "cryotherapy-order-select")
        try:
            outcome = pipeline.run(SERVICES[service_id], parse_hook_request(body, SERVICES[service_id].hook))
        except CdsError as exc:
            print(f"{path}: {exc.status} {exc.message}", file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps(outcome.body, indent=2, ensure_ascii=False))
        else:
            cards = outcome.body["cards"]
            print(f"{path}: {len(cards)} card(s)")
            for card in cards:
                print(f"  [{card['indicator']:8}] {card['source']['topic']['code']:18} {card['summary']}")
    return status


def _fhir_server(args: argparse.Namespace) -> int:
    from .fhir_server import serve

    serve([Path(p) for p in args.paths], host=args.host, port=args.port)
    return 0


def _open_store() -> Any:
    from .audit.store import AuditStore
    from .config import patient_hash_key

    config = from_env()
    store = AuditStore(config.database_url, patient_hash_key(config))
    store.migrate()
    return store


def _period(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    since = datetime.fromisoformat(args.since).astimezone(UTC) if getattr(args, "since", None) else None
    until = datetime.fromisoformat(args.until).astimezone(UTC) if getattr(args, "until", None) else None
    if getattr(args, "days", None):
        since = datetime.now(UTC) - timedelta(days=args.days)
    return since, until


def _print(data: Any, as_json: bool, columns: Sequence[str] | None = None) -> None:
    if as_json or columns is None or not isinstance(data, list):
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    widths = {c: max(len(c), *(len(_cell(row.get(c))) for row in data)) if data else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in data:
        print("  ".join(_cell(row.get(c)).ljust(widths[c]) for c in columns))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return "; ".join(f"{v.get('display') or v.get('code')} ({v.get('count')})" if isinstance(v, dict) else str(v)
                         for v in value)
    return str(value)


def _audit(args: argparse.Namespace) -> int:
    from .audit import analytics

    store = _open_store()
    try:
        if args.audit_command == "summary":
            since, until = _period(args)
            _print(analytics.rule_summary(store, since, until), args.json,
                   ["rule_id", "rule_version", "evaluations", "fires", "fire_rate", "cards", "accepted",
                    "overridden", "override_rate", "comments", "top_override_reasons"])
        elif args.audit_command == "decision":
            found = analytics.explain_decision(store, args.decision_id)
            if found is None:
                print(f"no decision {args.decision_id}", file=sys.stderr)
                return 1
            _print(found, True)
        elif args.audit_command == "card":
            found = analytics.explain_card(store, args.card_uuid)
            if found is None:
                print(f"no card {args.card_uuid}", file=sys.stderr)
                return 1
            _print(found, True)
        elif args.audit_command == "silent":
            from .rulebook import load_rulebook

            rule_ids = [r.id for r in load_rulebook(from_env().rules_dir).rules]
            since, until = _period(args)
            _print(analytics.silent_rules(store, rule_ids, since, until), True)
        elif args.audit_command == "purge":
            print(f"deleted {store.purge_older_than(args.older_than_days)} decisions")
    finally:
        store.dispose()
    return 0


def _rules_coverage(args: argparse.Namespace) -> int:
    from .coverage import COLUMNS, coverage_rows
    from .rulebook import load_rulebook
    from .terminology import Terminology

    config = from_env()
    paths = [Path(p) for p in args.paths] or default_coverage_paths()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"no such path: {', '.join(missing)}", file=sys.stderr)
        return 1
    now = datetime.fromisoformat(args.now).astimezone(UTC) if args.now else None
    rows = coverage_rows(load_rulebook(config.rules_dir, config.rule_params),
                         Terminology.load(config.rules_dir / "valuesets"), paths, now=now)
    _print(rows, args.json, COLUMNS)
    if not args.json and rows:
        print(f"{rows[0]['real_data_patients']} patient(s), {rows[0]['real_data_total_requests']} request(s) "
              f"from {', '.join(map(str, paths))}", file=sys.stderr)
    return 0


def default_coverage_paths() -> list[Path]:
    """fhir_fixtures/external and, if present, ../shared/external/fhir-data (from the repo root)."""
    root = Path(__file__).resolve().parent.parent
    shared = root.parent / "shared" / "external" / "fhir-data"
    return [root / "fhir_fixtures" / "external"] + ([shared] if shared.is_dir() else [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryo-cds", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the CDS Hooks service (development server)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--public-base-url", help="the URL clients use (JWT audience); default http://HOST:PORT")
    serve.add_argument("--no-auth", action="store_true", help="accept calls without a JWT (development only)")
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check", help="run CDS Hooks request files through the rules and print the cards")
    check.add_argument("files", nargs="+")
    check.add_argument("--service", choices=["cryotherapy-order-select", "cryotherapy-order-sign"])
    check.add_argument("--now", help="evaluate as of this ISO date-time (default: the current time)")
    check.add_argument("--evaluator", choices=["durable", "plain"])
    check.add_argument("--json", action="store_true", help="print the full CDS Hooks response")
    check.set_defaults(func=_check)

    fhir = sub.add_parser("fhir-server", help="serve FHIR bundles or fixtures as a read-only FHIR R4 server")
    fhir.add_argument("paths", nargs="+")
    fhir.add_argument("--host", default="127.0.0.1")
    fhir.add_argument("--port", type=int, default=8090)
    fhir.set_defaults(func=_fhir_server)

    audit = sub.add_parser("audit", help="query the decision log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    summary = audit_sub.add_parser("summary", help="per-rule fires, overrides and reasons over a period")
    for p in (summary, audit_sub.add_parser("silent", help="rules never evaluated or never fired")):
        p.add_argument("--since")
        p.add_argument("--until")
        p.add_argument("--days", type=int, help="the last N days")
    summary.add_argument("--json", action="store_true")
    decision = audit_sub.add_parser("decision", help="explain one decision")
    decision.add_argument("decision_id")
    card = audit_sub.add_parser("card", help="explain one card by its uuid")
    card.add_argument("card_uuid")
    purge = audit_sub.add_parser("purge", help="delete decisions older than N days")
    purge.add_argument("--older-than-days", type=int, required=True)
    audit.set_defaults(func=_audit, json=True)

    rules = sub.add_parser("rules", help="information about the rule set")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    coverage = rules_sub.add_parser("coverage", help="per rule: its cases and whether real patient data fires it")
    coverage.add_argument("paths", nargs="*", metavar="PATH",
                          help="patient Bundles or folders (default: fhir_fixtures/external and ../shared/external/fhir-data)")
    coverage.add_argument("--now", help="evaluate every patient as of this ISO date-time (default: each record's last encounter)")
    coverage.add_argument("--json", action="store_true")
    coverage.set_defaults(func=_rules_coverage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
