"""The sandbox: build a CDS Hooks request from a fixture, a rule case, a patient Bundle or an
upload, apply the order edits from the form, and run it through the hook pipeline.

The run uses the service's own parts (rulebook, terminology, evaluator) in a ``Pipeline``
whose clock is the chosen evaluation date, with the prefetch as the only record source (the
sandbox never fetches from a FHIR server named in an upload). Nothing is written to the
decision log.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import yaml

from ..devtools.cases import (
    DEFAULT_NOW,
    EXT,
    ORDER_PRESETS,
    SNOMED,
    build_order,
    bundle_request,
    case_request,
    load_case,
)
from ..errors import CdsError
from ..facts import build_facts
from ..hooks import parse_hook_request
from ..orders import find_cryo_orders
from ..record import build_record, parse_draft_orders
from ..service import SERVICES, Outcome, Pipeline
from .explain import VariantCheck, closest_miss, merge_hits

FIXTURE_DATE = date.fromisoformat(DEFAULT_NOW[:10])  # fixtures and cases are written for it
HOOK_SERVICES = {service.hook: service for service in SERVICES.values()}
EXTRA_SITES = {"38266002": "Entire body", "181553006": "Knee", "33712006": "Skin of hand"}


class SandboxError(ValueError):
    """The form or upload cannot become a request; the message says why."""


@dataclass
class OrderEdits:
    preset: str = ""
    body_site: str = ""
    temperature_c: float | None = None
    duration: float | None = None
    duration_unit: str = "min"
    sessions_per_week: int | None = None
    course: int | None = None


@dataclass
class OrderWhy:
    ref: str
    modality: str
    fired: list[dict[str, Any]]
    misses: list[tuple[str, str, VariantCheck]]  # (rule id, title, closest variant)


@dataclass
class SandboxRun:
    request: dict[str, Any]
    outcome: Outcome | None
    when: datetime
    error: str = ""
    problems: list[str] = field(default_factory=list)
    orders: list[OrderWhy] = field(default_factory=list)


def fixture_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("*.json")) if root.is_dir() else []


def patient_files(folder: Path | None) -> list[str]:
    return sorted(p.name for p in folder.glob("*.json")) if folder and folder.is_dir() else []


def body_sites(rules_dir: Path) -> list[tuple[str, str]]:
    """(SNOMED code, label) choices: the catalogue's CL-REGION codes and the presets' sites."""
    sites = dict(EXTRA_SITES)
    path = rules_dir / "valuesets" / "regions.yaml"
    if path.exists():
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for vs in raw.get("valuesets") or []:
            region = str(vs.get("title", vs.get("id", ""))).replace("Region ", "")
            for code, spec in (vs.get("snomed") or {}).items():
                sites.setdefault(str(code), f"{spec.get('display', code)} ({region})")
    return sorted(sites.items(), key=lambda item: item[1].lower())


def _read_json(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise SandboxError(f"The {what} is not valid JSON: {exc}") from None


def _safe_child(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if path.parent != folder.resolve() or not path.is_file():
        raise SandboxError(f"There is no file {name!r} to load")
    return path


def base_request(
    source: str, hook: str, *, fixtures: Path, rules_dir: Path, patients: Path | None, upload: bytes | None, preset: str
) -> tuple[dict[str, Any], date | None]:
    """The request a source names, and the date its data is written for (if fixed)."""
    kind, _, name = source.partition(":")
    order = preset or "wbc"
    if kind == "fixture":
        return _read_json(_safe_child(fixtures, name).read_bytes(), "fixture"), FIXTURE_DATE
    if kind == "case":
        rule_id, _, case_name = name.partition("/")
        case_path = _safe_child(rules_dir / rule_id / "cases", case_name)
        case = load_case(case_path)
        when = str(case.get("now", DEFAULT_NOW))[:10]
        return case_request(case, hook), date.fromisoformat(when)
    if kind == "patient":
        if patients is None:
            raise SandboxError("No patient folder is configured (CDS_HOOKS_CONSOLE_PATIENTS)")
        bundle = _read_json(_safe_child(patients, name).read_bytes(), "patient Bundle")
        return _from_bundle(bundle, order, hook), None
    if kind == "upload":
        if not upload:
            raise SandboxError("Choose a file to upload: a CDS Hooks request or a FHIR Bundle")
        body = _read_json(upload, "uploaded file")
        if isinstance(body, dict) and body.get("resourceType") == "Bundle":
            return _from_bundle(body, order, hook), None
        if isinstance(body, dict) and "hook" in body:
            return body, None
        raise SandboxError("The uploaded file is neither a CDS Hooks request (with 'hook') nor a FHIR Bundle")
    raise SandboxError("Pick a fixture, a rule case, a patient or an upload")


def _from_bundle(bundle: Any, order: str, hook: str) -> dict[str, Any]:
    if not isinstance(bundle, dict):
        raise SandboxError("A FHIR Bundle must be a JSON object")
    try:
        return bundle_request(bundle, order, hook)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SandboxError(f"The Bundle cannot be used: {exc}") from None


def _target(context: dict[str, Any]) -> dict[str, Any] | None:
    """The draft order the edits apply to: the first selected one, else the first ServiceRequest."""
    drafts = context.get("draftOrders")
    entries = drafts.get("entry") if isinstance(drafts, dict) else None
    resources: list[dict[str, Any]] = (
        [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
        if isinstance(entries, list)
        else []
    )
    selections = context.get("selections")
    chosen = selections if isinstance(selections, list) else []
    for res in resources:
        if f"{res.get('resourceType')}/{res.get('id')}" in chosen:
            return res
    return next((r for r in resources if r.get("resourceType") == "ServiceRequest"), None)


def apply_edits(request: dict[str, Any], hook: str, edits: OrderEdits, *, replace_order: bool) -> dict[str, Any]:
    """A copy of the request for ``hook`` with the order edits applied to its target order.
    A request of the wrong shape is returned as it is, for the hook parser to explain."""
    body = copy.deepcopy(request)
    body["hook"] = hook
    context = body.get("context")
    if not isinstance(context, dict):
        return body
    target = _target(context)
    if target is not None and edits.preset and replace_order:
        fresh = build_order(edits.preset, str(target.get("id") or "cryo-1"))
        if "subject" in target:
            fresh["subject"] = target["subject"]
        target.clear()
        target.update(fresh)
    if target is not None:
        _edit_order(target, edits)
    if hook == "order-select":
        if not context.get("selections") and target is not None:
            context["selections"] = [f"ServiceRequest/{target.get('id')}"]
    else:
        context.pop("selections", None)
    return body


def _edit_order(order: dict[str, Any], edits: OrderEdits) -> None:
    if edits.body_site:
        order["bodySite"] = [{"coding": [{"system": SNOMED, "code": edits.body_site}]}]
    if edits.temperature_c is not None:
        current = order.get("extension")
        ext = [
            e
            for e in (current if isinstance(current, list) else [])
            if not (isinstance(e, dict) and e.get("url") == EXT + "cryo-target-temperature")
        ]
        ext.append(
            {
                "url": EXT + "cryo-target-temperature",
                "valueQuantity": {
                    "value": edits.temperature_c,
                    "unit": "°C",
                    "system": "http://unitsofmeasure.org",
                    "code": "Cel",
                },
            }
        )
        order["extension"] = ext
    repeat: dict[str, Any] = {}
    if edits.duration is not None:
        repeat.update(duration=edits.duration, durationUnit="s" if edits.duration_unit == "s" else "min")
    if edits.sessions_per_week is not None:
        repeat.update(frequency=edits.sessions_per_week, period=1, periodUnit="wk")
    if edits.course is not None:
        repeat["count"] = edits.course
    if repeat:
        timing = order.get("occurrenceTiming")
        if not isinstance(timing, dict) or not isinstance(timing.get("repeat", {}), dict):
            timing = order["occurrenceTiming"] = {}
        timing.setdefault("repeat", {}).update(repeat)


def evaluation_instant(day: date) -> datetime:
    return datetime.combine(day, time(12, 0), tzinfo=UTC)


def run(pipeline: Pipeline, body: dict[str, Any], when: datetime) -> SandboxRun:
    """Run the request as the hook endpoint does (same pipeline parts, clock = ``when``)."""
    result = SandboxRun(request=body, outcome=None, when=when)
    service = HOOK_SERVICES.get(str(body.get("hook")))
    if service is None:
        result.error = f"The hook must be one of {sorted(HOOK_SERVICES)}"
        return result
    try:
        hook_request = parse_hook_request(body, service.hook)
    except CdsError as exc:
        result.error, result.problems = exc.message, list(getattr(exc, "problems", None) or [])
        return result
    # The service's own pipeline (same rules, evaluator, card layout), with its clock pinned.
    sandbox = copy.copy(pipeline)
    sandbox.clock = lambda: when
    sandbox.feedback_memory = None  # what the log says was answered must not change a sandbox run
    result.outcome = sandbox.run(service, hook_request, None)
    if result.outcome.status == 200:
        result.orders = _why(sandbox, hook_request, result.outcome, when)
    return result


def _why(pipeline: Pipeline, hook_request: Any, outcome: Outcome, when: datetime) -> list[OrderWhy]:
    """Per order: the findings with their facts and evidence, and the silent rules' closest misses."""
    drafts, _unreadable = parse_draft_orders(hook_request.draft_orders)
    orders = find_cryo_orders(
        drafts,
        pipeline.terminology,
        hook_request.selections,
        systemic=pipeline.systemic,
        destruction_codes_imply_cryo=pipeline.destruction_codes_imply_cryo,
    )
    if not orders:
        return []
    record = build_record(hook_request.prefetch, None)
    rulebook = pipeline.rulebook
    explained = []
    for order in orders:
        facts = build_facts(order, record, drafts, pipeline.terminology, when, rulebook.parameters)
        fired = merge_hits(
            {
                "rule_id": f.rule_id,
                "order_ref": f.order_ref,
                "rule_version": f.rule_version,
                "severity": f.severity,
                "card_uuid": f.card_uuid,
                "evidence": list(f.evidence),
                "facts": f.facts,
                "title": rulebook.by_id[f.rule_id].title if f.rule_id in rulebook.by_id else f.rule_id,
            }
            for f in outcome.decision.fired
            if f.order_ref == order.ref
        )
        fired_ids = {f["rule_id"] for f in fired}
        misses = []
        for rule in rulebook.rules:
            if rule.id in fired_ids:
                continue
            near = closest_miss(rule, order.modality, facts, rulebook.parameters)
            if near is not None:
                misses.append((rule.id, rule.title, near))
        misses.sort(key=lambda m: m[2].score, reverse=True)
        explained.append(OrderWhy(order.ref, order.modality, fired, misses))
    return explained


def parse_edits(form: Mapping[str, str]) -> OrderEdits:
    """Order edits from the form; a malformed number is a SandboxError naming the field."""

    def number(name: str, kind: type, low: float, high: float) -> Any:
        raw = (form.get(name) or "").strip()
        if not raw:
            return None
        try:
            value = kind(raw)
        except ValueError:
            raise SandboxError(f"{name.replace('_', ' ')} must be a number, got {raw!r}") from None
        if not low <= value <= high:
            raise SandboxError(f"{name.replace('_', ' ')} must be between {low:g} and {high:g}")
        return value

    preset = form.get("preset") or ""
    if preset and preset not in ORDER_PRESETS:
        raise SandboxError(f"Unknown order preset {preset!r}")
    site = (form.get("body_site") or "").strip()
    if site and not site.isdigit():
        raise SandboxError("The body site must be a SNOMED CT code (digits)")
    return OrderEdits(
        preset=preset,
        body_site=site,
        temperature_c=number("temperature_c", float, -200, 40),
        duration=number("duration", float, 0.1, 600),
        duration_unit="s" if form.get("duration_unit") == "s" else "min",
        sessions_per_week=number("sessions_per_week", int, 1, 21),
        course=number("course", int, 1, 100),
    )


def parse_day(raw: str | None, default: date) -> date:
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SandboxError(f"The evaluation date must be YYYY-MM-DD, got {raw!r}") from None
