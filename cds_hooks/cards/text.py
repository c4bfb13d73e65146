"""Card sentences from rule templates and facts: evidence in words with its date, values a
clinician reads ("Haemoglobin 7.2 g/dL on 3 March 2026"), and the codes and resource ids
kept apart for the collapsed Evidence section.

Templates (rule.yaml ``summary``/``detail``/``finding``) use ``{name}`` for values from the
evidence and the order, ``{param:name}`` for a rule parameter's configured value, and
``[...]`` for an optional part, left out when a value inside it is unknown. A sentence whose
value is unknown outside such a part is left out: an unknown value is never printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from functools import lru_cache
from typing import Any

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
LAB_NAMES = {"hb": "Haemoglobin", "a1c": "HbA1c", "anc": "Neutrophil count", "hr": "Resting heart rate"}
LAB_UNITS = {"hb": "g/dL", "a1c": "%", "anc": "×10⁹/L", "hr": "/min"}
SYSTEM_NAMES = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.whocc.no/atc": "ATC",
    "http://www.ama-assn.org/go/cpt": "CPT",
}
_SEMANTIC_TAG = re.compile(
    r"\s*\((disorder|finding|situation|procedure|regime/therapy|observable entity"
    r"|physical object|qualifier value|substance|product|medicinal product)\)\s*$",
    re.IGNORECASE,
)
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?::[A-Za-z_][A-Za-z0-9_]*)?)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:])")


class _Missing(KeyError):
    pass


def long_date(iso: str | None) -> str | None:
    """ "2021-06-01" -> "1 June 2021" (None when the date cannot be read)."""
    if not iso:
        return None
    try:
        day = date.fromisoformat(str(iso)[:10])
    except ValueError:
        return None
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def number(value: Any) -> str:
    """A number as a clinician writes it: 7.20 -> "7.2", 3.0 -> "3", -140.0 -> "−140"."""
    kind = type(value)
    if kind is not float and kind is not int and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return str(value)
    text = f"{value:.1f}".rstrip("0").rstrip(".") if -1000 < value < 1000 else f"{value:.0f}"
    return text.replace("-", "−") if text.startswith("-") else text


def clean_label(label: Any) -> str:
    """A coded display without its SNOMED semantic tag."""
    return _SEMANTIC_TAG.sub("", str(label or "")).strip()


def _capital(text: str | None) -> str | None:
    return text[:1].upper() + text[1:] if text else text


_CODE_LIKE = re.compile(r"[A-Z]?\d[0-9A-Z.\-]*|[A-Z]\d\d[0-9A-Z.\-]*")


def display_name(fact: Mapping[str, Any]) -> str | None:
    """The fact's name in words, or None when the record gave only a code."""
    label = clean_label(fact.get("label"))
    if not label or label == fact.get("code") or _CODE_LIKE.fullmatch(label):
        return None
    return label


def in_sentence(name: str) -> str:
    """A headline inside a sentence: "Heart disease" -> "heart disease"; "HbA1c" and
    eponyms ("Raynaud's phenomenon") stay."""
    first = name.split(" ", 1)[0]
    if len(first) > 1 and (any(c.isupper() or c.isdigit() for c in first[1:]) or first.endswith(("'s", "’s"))):
        return name
    return name[:1].lower() + name[1:]


def _days(value: float) -> str:
    days = round(value)
    if days <= 0:
        return "on the day of the session"
    return f"{days} day{'s' if days != 1 else ''} before the session"


def evidence_sentence(fact: Mapping[str, Any]) -> str | None:
    """One fact as a clinician reads it, with its date; None for facts that speak through
    the rule's own wording (the order, the patient, the record)."""
    return _capital(_sentence(fact))


def _sentence(fact: Mapping[str, Any]) -> str | None:
    kind = fact.get("kind")
    name = display_name(fact)
    label = name or {
        "medication": "Medication",
        "device": "Device",
        "allergy": "Allergy",
        "pregnancy": "Pregnancy evidence",
    }.get(str(kind), "")
    when = long_date(fact.get("date"))
    if kind == "condition":
        if name is None:
            return f"Diagnosed {when}" if when else "On the problem list"
        return f"{label}, diagnosed {when}" if when else f"{label}, on the problem list"
    if kind == "medication":
        if fact.get("current"):
            return f"{label}, currently prescribed"
        days = fact.get("days_before_treatment")
        text = (
            f"{label}, last taken {_days(days)}"
            if isinstance(days, (int, float))
            else (f"{label}, last taken {when}" if when else f"{label}, recently stopped")
        )
        return text + (" (stop date not recorded)" if fact.get("stop_date_recorded") is False else "")
    if kind == "device":
        return f"{label} on record" if name else "Implanted device on record"
    if kind == "allergy":
        return f"{label} recorded as an allergy"
    if kind == "lab":
        test = str(fact.get("test"))
        if test == "ice":
            result = "positive" if fact.get("positive") else "negative"
            return f"Ice test {result}" + (f" on {when}" if when else "")
        value = fact.get("value")
        name = LAB_NAMES.get(test, label)
        shown = (
            f"{name} {number(value)} {LAB_UNITS.get(test, '')}".rstrip() if isinstance(value, (int, float)) else name
        )
        return shown + (f" on {when}" if when else "")
    if kind == "bp":
        sbp, dbp = fact.get("sbp"), fact.get("dbp")
        if sbp is None or dbp is None:
            return None
        return f"Blood pressure {number(sbp)}/{number(dbp)} mmHg" + (f" on {when}" if when else "")
    if kind == "pregnancy":
        return f"{label}" + (f", {when}" if when else "")
    if kind == "procedure":
        return f"{name or 'Procedure'}" + (f" on {when}" if when else "")
    if kind == "planned":
        return f"{name or 'Procedure'} planned" + (f" for {when}" if when else "")
    if kind == "prior_course":
        return "Previous course" + (f" ordered {when}" if when else "")
    return None


def evidence_codes(fact: Mapping[str, Any]) -> str | None:
    """The Evidence-section line for one fact: kind, code, system and resource reference."""
    if fact.get("kind") in ("order", "patient", "record"):
        return None
    parts = []
    if fact.get("code"):
        system = str(fact.get("system") or "")
        parts.append(f"{SYSTEM_NAMES.get(system, system.rsplit('/', 1)[-1])} {fact['code']}".strip())
    if fact.get("value_text") and fact.get("kind") in ("lab", "bp"):
        parts.append(str(fact["value_text"]))
    if fact.get("date"):
        parts.append(str(fact["date"]))
    if fact.get("ref"):
        parts.append(str(fact["ref"]))
    if not parts:
        return None
    return f"{_capital(clean_label(fact.get('label'))) or fact.get('kind')}: " + ", ".join(parts)


OrderContext = tuple[dict[str, str], dict[str, str]]


def template_fields(templates: Iterable[str]) -> frozenset[str]:
    """The value names (``{name}``, not ``{param:name}``) the templates use."""
    return frozenset(name for t in templates for name in _FIELD.findall(t or "") if not name.startswith("param:"))


def order_context(
    order: Mapping[str, Any], patient: Mapping[str, Any], used: frozenset[str] | None = None
) -> OrderContext:
    """The template values an order and its patient give every finding on that order: its
    numbers (a finding's own evidence wins over them) and the values that always hold (site,
    temperature, freeze time, age). With ``used`` (`template_fields` of every template that
    may be rendered), only the numbers a template names are written out."""
    numbers = {
        key: number(value)
        for key, value in order.items()
        if (used is None or key in used)
        and (
            type(value) is float
            or type(value) is int
            or (isinstance(value, (int, float)) and not isinstance(value, bool))
        )
    }
    fixed: dict[str, str] = {}
    if order.get("site"):
        fixed["site"] = str(order["site"])
    if isinstance(order.get("temp_c"), (int, float)):
        fixed["T"] = number(order["temp_c"])
    if isinstance(order.get("freeze_s"), (int, float)):
        fixed["t"] = number(order["freeze_s"])
        fixed["d"] = number(order["freeze_s"] / 60)
    if isinstance(patient.get("age"), (int, float)):
        fixed["age"] = number(patient["age"])
    return numbers, fixed


def context(
    facts: Iterable[Mapping[str, Any]],
    order: Mapping[str, Any],
    patient: Mapping[str, Any],
    values: Mapping[str, list[Any]],
    order_part: OrderContext | None = None,
) -> dict[str, str]:
    """Known values by placeholder name; an unknown value is simply absent. ``order_part``
    is `order_context` of the same order and patient, when the caller has it already."""
    ctx: dict[str, str] = {}
    names: dict[str, list[str]] = {}
    for fact in facts:
        kind = str(fact.get("kind"))
        label = display_name(fact)
        if label:
            names.setdefault(kind, []).append(label)
        if fact.get("date") and "date" not in ctx:
            shown = long_date(fact.get("date"))
            if shown:
                ctx["date"] = shown
        if kind == "lab" and isinstance(fact.get("value"), (int, float)):
            ctx.setdefault(str(fact["test"]), number(fact["value"]))
        if kind == "bp":
            for key in ("sbp", "dbp"):
                if isinstance(fact.get(key), (int, float)):
                    ctx.setdefault(key, number(fact[key]))
        for key in ("days_before_treatment", "days_apart", "hours_apart"):
            if isinstance(fact.get(key), (int, float)) and fact.get("kind") != "order":
                ctx.setdefault(key, number(round(fact[key]) if key != "hours_apart" else round(fact[key], 1)))
    for kind, key in (
        ("condition", "condition"),
        ("medication", "drug"),
        ("device", "device"),
        ("allergy", "allergy"),
        ("procedure", "procedure"),
        ("planned", "procedure"),
    ):
        if kind in names:
            unique = list(dict.fromkeys(names[kind]))
            joined = ", ".join(unique[:2]) + (f" and {len(unique) - 2} more" if len(unique) > 2 else "")
            ctx[key] = joined if key not in ctx else ctx[key] + ", " + joined
    numbers, fixed = order_part if order_part is not None else order_context(order, patient)
    ctx = {**numbers, **ctx, **fixed}  # the finding's own values win over the order's numbers
    for key, found in values.items():
        ctx[key] = _joined(dict.fromkeys(str(v) for v in found))
    return ctx


def _joined(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render(template: str, ctx: Mapping[str, str], parameters: Mapping[str, Any], *, optional: bool = True) -> str:
    """Fill a template; optional ``[...]`` parts and whole sentences with an unknown value go.

    ``optional=False`` leaves out every optional part (a headline beside evidence that
    already gives those values)."""
    sentences = _compiled(template, optional)
    if sentences is None:
        return _render_optional_parts(template, ctx, parameters)
    kept = [text for text in (_fill(pieces, ctx, parameters) for pieces in sentences) if text is not None]
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(kept)).strip()


Sentence = tuple[str, ...]  # literal, field name, literal, ..., literal


@lru_cache(maxsize=1024)
def _compiled(template: str, optional: bool) -> tuple[Sentence, ...] | None:
    """The template's sentences, split once, when they do not depend on the values: it has
    no optional part, or its optional parts are left out. None when optional parts are
    filled in first (their values may end a sentence), so `render` must go the long way."""
    text = _normalised(template)
    if optional and _OPTIONAL.search(text):
        return None
    text = _OPTIONAL.sub("", text)
    return tuple(tuple(_FIELD.split(sentence)) for sentence in _SENTENCE.split(text))


def _fill(pieces: Sentence, ctx: Mapping[str, str], parameters: Mapping[str, Any]) -> str | None:
    """A compiled sentence with its values, or None when one of them is unknown."""
    out = [pieces[0]]
    for index in range(1, len(pieces), 2):
        name = pieces[index]
        if name.startswith("param:"):
            value = parameters.get(name[6:])
            if value is None:
                return None
            out.append(number(value))
        elif name in ctx:
            out.append(ctx[name])
        else:
            return None
        out.append(pieces[index + 1])
    return "".join(out)


def _render_optional_parts(template: str, ctx: Mapping[str, str], parameters: Mapping[str, Any]) -> str:
    """`render` of a template whose optional parts are filled in, then split into sentences."""

    def fill(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("param:"):
                value = parameters.get(name[6:])
                if value is None:
                    raise _Missing(name)
                return number(value)
            if name not in ctx:
                raise _Missing(name)
            return ctx[name]

        return _FIELD.sub(one, text)

    def optional_part(match: re.Match[str]) -> str:
        try:
            return fill(match.group(1))
        except _Missing:
            return ""

    text = _OPTIONAL.sub(optional_part, _normalised(template))
    kept = []
    for sentence in _SENTENCE.split(text):
        try:
            kept.append(fill(sentence))
        except _Missing:
            continue
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(kept)).strip()


@lru_cache(maxsize=1024)
def _normalised(template: str) -> str:
    """A template with its runs of white space made single spaces (templates are the
    rulebook's: a few hundred, each rendered at every call that shows it)."""
    return " ".join(template.split())
