"""``cryo-cds check``: run CDS Hooks request files through exactly the service's pipeline.

Why: rule authors need to see what a request gets without starting a server, and must see
what the running service would answer: same pipeline constructor, same settings, and the
record fetched from ``fhirServer`` when the prefetch leaves parts out.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from ..config import Config, from_env
from ..deadline import CallDeadline
from ..errors import CdsError
from ..fhir_client import FhirFetcher
from ..hooks import HookRequest, parse_hook_request
from ..pipeline_factory import build_pipeline, fixed_clock, load_parts
from ..service import SERVICES, Outcome, Pipeline
from .common import USAGE_ERROR, CliError, Parser, iso_datetime, progress, read_json_object, warn

SELECT, SIGN = "cryotherapy-order-select", "cryotherapy-order-sign"


def record_source(
    config: Config, pipeline: Pipeline, hook_request: HookRequest, deadline: CallDeadline
) -> FhirFetcher | None:
    """The FHIR server fetcher the service would use for this request (same allow-list,
    address rules, budget cut to the call ``deadline``, size cap and page limit), or None
    when it names none."""
    from ..fhir_source import fetcher_for
    from ..fhir_targets import parse_allow_list
    from ..prefetch import prefetch_templates

    return fetcher_for(
        config,
        prefetch_templates(pipeline.terminology),
        hook_request,
        parse_allow_list(config.fhir_server_allow),
        authenticated=False,
        deadline=deadline,
    )


def run_file(config: Config, pipeline: Pipeline, path: Path, service_id: str | None) -> Outcome:
    """The service's outcome for one request file, under the service's per-call deadline (so a
    slow FHIR server cuts the check short here as it would there); CliError for a file that is
    not a valid request."""
    deadline = CallDeadline(config.call_deadline_s)  # the whole call, reading the file included
    body = read_json_object(path)
    service = SERVICES[service_id or (SIGN if body.get("hook") == "order-sign" else SELECT)]
    try:
        hook_request = parse_hook_request(body, service.hook)
    except CdsError as exc:
        problems = "; ".join(exc.problems)
        raise CliError(
            f"{path}: not a valid {service.hook} request: {exc.message}" + (f" ({problems})" if problems else "")
        ) from None
    return pipeline.run(service, hook_request, record_source(config, pipeline, hook_request, deadline), deadline)


def card_view(path: Path, cards: list[dict[str, Any]]) -> str:
    """A readable view of the cards: severity, rule, summary, then the detail's first lines."""
    lines = [f"{path}: {len(cards)} card{'s' if len(cards) != 1 else ''}"]
    for card in cards:
        topic = card.get("source", {}).get("topic", {}).get("code", "")
        lines.append(f"  {card['indicator'].upper():8}  {topic:18}  {card['summary']}")
        detail = " ".join(str(card.get("detail", "")).replace("*", "").split())
        if detail:
            lines += textwrap.wrap(
                detail, width=96, initial_indent=" " * 32, subsequent_indent=" " * 32, max_lines=3, placeholder=" …"
            )
        for suggestion in card.get("suggestions", ()):
            lines.append(f"{'':32}suggestion: {suggestion.get('label', '')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = from_env()
    pipeline = build_pipeline(
        config, parts=load_parts(config, evaluator=args.evaluator), clock=fixed_clock(args.now) if args.now else None
    )
    status = 0
    paths = [Path(p) for p in args.files]
    # The card view is its own progress on a terminal; a bar is drawn when the output goes elsewhere.
    for path in paths if sys.stdout.isatty() else progress(paths, "checking"):
        try:
            outcome = run_file(config, pipeline, path, args.service)
        except CliError as exc:
            warn(f"cryo-cds: {exc}")
            if args.json:
                print(json.dumps({"file": str(path), "error": str(exc)}, ensure_ascii=False), flush=True)
            status = USAGE_ERROR
            continue
        if args.json:
            print(
                json.dumps({"file": str(path), "status": outcome.status, "response": outcome.body}, ensure_ascii=False),
                flush=True,
            )
        elif outcome.status == 200:
            print(card_view(path, outcome.body["cards"]), flush=True)
        if outcome.status != 200:
            warn(
                f"cryo-cds: {path}: the service would answer {outcome.status}: "
                f"{outcome.body.get('detail') or outcome.body.get('error')}"
            )
            status = status or 1
    sys.stdout.flush()
    return status


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    check = sub.add_parser("check", help="run CDS Hooks request files through the service's pipeline, print the cards")
    check.add_argument("files", nargs="+", metavar="FILE", help="CDS Hooks request JSON files")
    check.add_argument("--service", choices=[SELECT, SIGN], help="default: from each request's hook")
    check.add_argument("--now", type=iso_datetime, help="evaluate as of this ISO date-time (default: now)")
    check.add_argument("--evaluator", choices=["durable", "plain"], help="default: CDS_HOOKS_EVALUATOR")
    check.add_argument("--json", action="store_true", help="JSON Lines: one {file, status, response} object per file")
    check.set_defaults(func=run)


__all__ = ["card_view", "record_source", "register", "run", "run_file"]
