"""``GET /rules`` and ``GET /rules/<id>``: a plain HTML page per rule, open without a login,
that a card's ``source.url`` points to. It says what the rule checks, why, its sources with
links, its version and the parameters it uses with the values this service runs with."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, render_template

from .cards.text import number, render
from .rulebook import MODALITIES, Rule, Rulebook

bp = Blueprint("rules", __name__, template_folder="templates")
_RULE_ID = re.compile(r"[A-Z][A-Z0-9-]{1,40}")
_PARAM = re.compile(r"param:\s*([a-z_][a-z0-9_]*)")
MODALITY_LABELS = {
    "local-destructive": "Liquid-nitrogen (destructive) cryotherapy",
    "local-cold": "Local cold therapy, cryomassage, cryopeeling",
    "systemic": "Whole-body cryotherapy",
}


def _rulebook() -> Rulebook:
    rulebook: Rulebook = current_app.extensions["cryo_cds"].pipeline.rulebook
    return rulebook


def rule_parameters(rule: Rule, rulebook: Rulebook) -> list[tuple[str, str]]:
    """(name, current value) of every parameter the rule file names."""
    text = Path(rule.path).read_text(encoding="utf-8")
    names = dict.fromkeys(_PARAM.findall(text))
    return [(name, number(rulebook.parameters[name])) for name in names if name in rulebook.parameters]


def _page(rule: Rule, rulebook: Rulebook) -> dict[str, Any]:
    params = rulebook.parameters
    severities = {m: s for v in rule.variants for m, s in v.severity.items()}
    levels: dict[str, set[str]] = {}
    for v in rule.variants:
        for modality, level in v.severity.items():
            levels.setdefault(modality, set()).add(level)
    order = ("critical", "warning", "info")
    return {
        "rule": rule,
        "summary": render(rule.summary, {}, params),
        "why": render(rule.detail, {}, params),
        "severity": [
            (MODALITY_LABELS[m], ", ".join(lv for lv in order if lv in levels[m]))
            for m in MODALITIES
            if m in severities
        ],
        "variants": list(dict.fromkeys(render(v.summary, {}, params) for v in rule.variants)),
        "parameters": rule_parameters(rule, rulebook),
        "notes": " ".join(rule.notes.split()) if rule.notes else "",
    }


@bp.get("/rules")
@bp.get("/rules/")
def index() -> str:
    return render_template("rules.html", rules=_rulebook().rules)


@bp.get("/rules/<rule_id>")
def rule_page(rule_id: str) -> Response | str:
    rulebook = _rulebook()
    rule = rulebook.by_id.get(rule_id) if _RULE_ID.fullmatch(rule_id) else None
    if rule is None:
        body = render_template("rule_missing.html", rule_id=rule_id if _RULE_ID.fullmatch(rule_id) else "")
        return Response(body, status=404, mimetype="text/html")
    return render_template("rule.html", **_page(rule, rulebook))
