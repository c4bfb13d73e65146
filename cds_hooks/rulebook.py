"""Load and check ``rules/*/rule.yaml``; compile each rule variant to the engine's JSON.

The compiled JSON is the single definition both evaluators run (durable-rules, and the
plain evaluator used as its oracle), so a rule means the same thing to both. Loading
fails fast with the file name on anything a rule author could get wrong: unknown keys,
misspelt fact fields, wrong value types, values outside a field's closed vocabulary
(``site_match: smae``), ordering tests on non-numbers, unknown parameters, bad severities.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import yamlfile
from .factschema import (
    BOOL,
    EXAM_TESTS,
    FACT_SCHEMA,
    LAB_TESTS,
    NUM,
    PREGNANCY_POLARITIES,
    SITE_MATCHES,
    STR,
    field_type,
)
from .overrides import SHARED as SHARED_OVERRIDE_REASONS

SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
MODALITIES = ("local-destructive", "local-cold", "systemic")
SENTINEL_KIND = "$eval"
OPS = {"eq": None, "lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte", "in": "$or"}
_RULE_KEYS = {
    "id",
    "version",
    "title",
    "group",
    "sources",
    "severity",
    "summary",
    "detail",
    "variants",
    "suggestions",
    "override_reasons",
    "notes",
    "finding",
    "links",
    "variant_text",
    "closes_critical",
    "order_codes",
}
_VARIANT_TEXT_KEYS = {"finding", "summary", "detail"}
_LINK_KEYS = {"title", "url"}
_VARIANT_KEYS = {"name", "when", "unless", "severity", "summary", "values"}
SUGGESTION_KINDS = ("remove-order", "order-missing-tests", "record-order-parameters")
_CLOSES_CRITICAL_KEYS = {"modality", "lead"}
_ORDER_CODE_KEYS = {"system", "code", "display"}
_GROUP_KEYS = {"id", "finding"}
# ``{param:name}`` in card text: filled from the configured parameters (cards/text.py).
PARAM_PLACEHOLDER = re.compile(r"\{param:([A-Za-z_][A-Za-z0-9_]*)\}")
# String fields with a closed vocabulary: a typo (``site_match: smae``) would load and never fire.
# Free-text fields (site, region, local_code) are not listed.
ALLOWED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("order", "modality"): MODALITIES,
    **{(kind, "site_match"): SITE_MATCHES for kind in ("condition", "procedure", "planned")},
    ("lab", "test"): LAB_TESTS,
    ("exam", "test"): EXAM_TESTS,
    ("pregnancy", "polarity"): PREGNANCY_POLARITIES,
    # FHIR R4 value sets administrative-gender and condition-clinical (hl7.org/fhir/R4)
    ("patient", "gender"): ("male", "female", "other", "unknown"),
    ("condition", "clinical_status"): ("active", "recurrence", "relapse", "inactive", "remission", "resolved"),
}
ORDERING_OPS = ("lt", "lte", "gt", "gte")
# durable-rules hangs once one property collects 512 equality tests (design note §6.2).
MAX_EQUALITY_TESTS_PER_FIELD = 256


class RuleError(ValueError):
    """A rule file is wrong; the message starts with the file that needs fixing."""


@dataclass(frozen=True)
class Variant:
    key: str  # engine rule name: "<RULE-ID>#<index>"
    rule_id: str
    name: str
    aliases: tuple[str, ...]  # positive pattern aliases, in order
    kinds: Mapping[str, str]  # alias -> fact kind
    definition: Mapping[str, Any]  # durable-rules JSON: {"all": [...]}
    severity: Mapping[str, str]  # modality -> severity (absent: silent)
    summary: str
    values: Mapping[str, Any]
    finding: str = ""  # the finding's headline on a card ("Heart disease"); rule's if not set
    detail: str = ""  # why and what to do, when this variant says it differently from its rule


@dataclass(frozen=True)
class Rule:
    id: str
    version: str
    title: str
    group: str | None
    sources: tuple[str, ...]
    detail: str
    variants: tuple[Variant, ...]
    suggestions: tuple[str, ...]
    override_reasons: tuple[Mapping[str, str], ...]
    path: str
    cases_dir: Path
    summary: str = ""
    finding: str = ""  # headline of this rule's line on a card; defaults to the title
    links: tuple[Mapping[str, str], ...] = ()  # published sources a clinician can open
    notes: str = ""
    # (modality, lead): a generic instruction that gives way to a critical card on an order of
    # that modality; its detail then closes that card, after ``lead`` ("If you proceed")
    closes_critical: tuple[str, str] | None = None
    # order-missing-tests: the value ``missing`` names -> (system, code, display) to order
    order_codes: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class CardGroup:
    """Rules that share one finding on a card (rule.yaml ``group``), from parameters.yaml."""

    id: str  # the card's finding code, e.g. GRP-IMMUNE
    finding: str  # the headline the clinician reads


@dataclass(frozen=True)
class Rulebook:
    rules: tuple[Rule, ...]
    parameters: Mapping[str, Any]
    revision: str
    by_id: Mapping[str, Rule] = field(default_factory=dict)
    variants: Mapping[str, Variant] = field(default_factory=dict)
    groups: Mapping[str, CardGroup] = field(default_factory=dict)

    def card_code(self, rule: Rule) -> str:
        """The finding a rule's hits are reported under: its group's id, else its own."""
        group = self.groups.get(rule.group or "")
        return group.id if group is not None else rule.id

    def closing_rules(self) -> dict[str, tuple[str, str]]:
        """Modality -> (rule id, lead) of the instruction that closes its critical cards."""
        return {r.closes_critical[0]: (r.id, r.closes_critical[1]) for r in self.rules if r.closes_critical}

    def suppressed_by_critical(self) -> frozenset[str]:
        """Rules whose finding gives way to a critical card on the same order."""
        return frozenset(r.id for r in self.rules if r.closes_critical)

    def engine_rules(self) -> dict[str, dict[str, Any]]:
        """Variant key -> durable-rules JSON (a fresh deep copy: the engine mutates it)."""
        return {key: json.loads(json.dumps(v.definition)) for key, v in self.variants.items()}


def _check_value(where: str, kind: str, fname: str, value: Any) -> None:
    expected = field_type(kind, fname)
    if expected is None:
        raise RuleError(f"{where}: '{kind}' facts have no field '{fname}'")
    ok = {
        BOOL: isinstance(value, bool),
        NUM: isinstance(value, (int, float)) and not isinstance(value, bool),
        STR: isinstance(value, str),
    }[expected]
    if not ok:
        raise RuleError(f"{where}: {kind}.{fname} is a {expected}, got {value!r}")
    allowed = ALLOWED_VALUES.get((kind, fname))
    if allowed is not None and value not in allowed:
        raise RuleError(f"{where}: {kind}.{fname} must be one of {list(allowed)}, got {value!r}")


def _resolve(value: Any, parameters: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, dict) and set(value) == {"param"}:
        name = value["param"]
        if name not in parameters:
            raise RuleError(f"{where}: unknown parameter '{name}' (see rules/parameters.yaml)")
        return parameters[name]
    return value


def _compile_pattern(raw: Any, parameters: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RuleError(f"{where}: a pattern is one '<fact kind>: {{field: test}}' map")
    ((kind, tests),) = raw.items()
    if kind not in FACT_SCHEMA:
        raise RuleError(f"{where}: unknown fact kind '{kind}' (known: {sorted(FACT_SCHEMA)})")
    terms: list[dict[str, Any]] = [{"kind": kind}]
    for fname, test in (tests or {}).items():
        if isinstance(test, dict) and "param" not in test:
            if len(test) != 1 or next(iter(test)) not in OPS:
                raise RuleError(f"{where}: test on '{fname}' must be a value or one of {sorted(OPS)}")
            ((op, operand),) = test.items()
        else:
            op, operand = "eq", test
        operand = _resolve(operand, parameters, where)
        if op in ORDERING_OPS and field_type(kind, fname) not in (NUM, None):
            raise RuleError(f"{where}: '{op}' compares numbers, but {kind}.{fname} is a {field_type(kind, fname)}")
        if op == "in":
            if not isinstance(operand, list) or not operand:
                raise RuleError(f"{where}: 'in' on '{fname}' needs a non-empty list")
            for item in operand:
                _check_value(where, kind, fname, item)
            terms.append({"$or": [{fname: item} for item in operand]})
        else:
            _check_value(where, kind, fname, operand)
            engine_op = OPS[op]
            terms.append({fname: operand} if engine_op is None else {engine_op: {fname: operand}})
    return kind, (terms[0] if len(terms) == 1 else {"$and": terms})


def _compile_variant(
    rule_id: str,
    index: int,
    raw: Mapping[str, Any],
    defaults: Mapping[str, Any],
    parameters: Mapping[str, Any],
    where: str,
) -> Variant:
    unknown = set(raw) - _VARIANT_KEYS
    if unknown:
        raise RuleError(f"{where}: unknown variant keys {sorted(unknown)}")
    name = str(raw.get("name") or f"v{index}")
    where = f"{where} variant '{name}'"
    when = raw.get("when") or []
    unless = raw.get("unless") or []
    if not isinstance(when, list) or not when:
        raise RuleError(f"{where}: 'when' must list at least one pattern")
    all_terms: list[dict[str, Any]] = []
    if unless:  # absence rules anchor on the sentinel asserted last (design note §3, bug B)
        all_terms.append({"req": {"kind": SENTINEL_KIND}})
    # Absence terms come right after the sentinel, before the positive patterns: placed there,
    # the engine checks them against every fact ("none of these exists"); placed after, it
    # would skip the facts the positive patterns bound (checked by the differential test).
    for i, pattern in enumerate(unless if isinstance(unless, list) else [unless]):
        _kind, compiled = _compile_pattern(pattern, parameters, where)
        all_terms.append({f"n{i}$not": compiled})
    aliases, kinds = [], {}
    for i, pattern in enumerate(when):
        kind, compiled = _compile_pattern(pattern, parameters, where)
        alias = f"p{i}"
        aliases.append(alias)
        kinds[alias] = kind
        all_terms.append({alias: compiled})
    severity = dict(raw.get("severity") or defaults["severity"])
    for modality, level in severity.items():
        if modality not in MODALITIES or level not in SEVERITIES:
            raise RuleError(f"{where}: severity must map {MODALITIES} to {SEVERITIES}, got {modality}: {level}")
    text = (defaults.get("variant_text") or {}).get(name) or {}
    summary = str(text.get("summary") or raw.get("summary") or defaults["summary"])
    finding = str(text.get("finding") or defaults.get("finding") or defaults["title"])
    return Variant(
        key=f"{rule_id}#{index}",
        rule_id=rule_id,
        name=name,
        aliases=tuple(aliases),
        kinds=kinds,
        definition={"all": all_terms},
        severity=severity,
        summary=summary,
        values=dict(raw.get("values") or {}),
        finding=finding,
        detail=str(text.get("detail") or "").strip(),
    )


def load_rule(path: Path, parameters: Mapping[str, Any]) -> Rule:
    where = str(path)
    try:
        raw = yamlfile.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RuleError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: expected a map")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RuleError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("id", "version", "title", "sources", "severity", "summary", "detail", "variants"):
        if not raw.get(key):
            raise RuleError(f"{where}: '{key}' is required")
    rule_id = str(raw["id"])
    if rule_id != path.parent.name:
        raise RuleError(f"{where}: id '{rule_id}' must equal its folder name '{path.parent.name}'")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(raw["version"])):
        raise RuleError(f"{where}: version must be semantic (MAJOR.MINOR.PATCH)")
    suggestions = tuple(raw.get("suggestions") or ())
    for s in suggestions:
        if s not in SUGGESTION_KINDS:
            raise RuleError(f"{where}: unknown suggestion '{s}' (known: {SUGGESTION_KINDS})")
    reasons = _override_reasons(raw.get("override_reasons") or (), where)
    links = _links(raw.get("links") or [], where)
    _check_variant_text(raw, where)
    _check_param_placeholders(raw, parameters, where)
    variants = tuple(_compile_variant(rule_id, i, v, raw, parameters, where) for i, v in enumerate(raw["variants"]))
    closes_critical = _closes_critical(raw.get("closes_critical"), raw, where)
    order_codes = _order_codes(raw.get("order_codes"), suggestions, variants, where)
    return Rule(
        id=rule_id,
        version=str(raw["version"]),
        title=str(raw["title"]),
        group=raw.get("group"),
        sources=tuple(str(s) for s in raw["sources"]),
        detail=str(raw["detail"]).strip(),
        variants=variants,
        suggestions=suggestions,
        override_reasons=reasons,
        path=where,
        cases_dir=path.parent / "cases",
        summary=str(raw["summary"]),
        finding=str(raw.get("finding") or raw["title"]),
        links=links,
        notes=str(raw.get("notes") or "").strip(),
        closes_critical=closes_critical,
        order_codes=order_codes,
    )


def _text_fields(raw: Mapping[str, Any]) -> Iterator[str]:
    """Every card text of a rule: its own, its variants' and its variant_text."""
    for key in ("summary", "detail", "finding"):
        if raw.get(key):
            yield str(raw[key])
    for variant in raw.get("variants") or ():
        if isinstance(variant, dict) and variant.get("summary"):
            yield str(variant["summary"])
    for fields in (raw.get("variant_text") or {}).values():
        yield from (str(v) for v in (fields or {}).values() if v)


def _check_param_placeholders(raw: Mapping[str, Any], parameters: Mapping[str, Any], where: str) -> None:
    """A ``{param:name}`` naming no parameter would silently drop its sentence from the card."""
    for text in _text_fields(raw):
        for name in PARAM_PLACEHOLDER.findall(text):
            if name not in parameters:
                raise RuleError(f"{where}: card text names unknown parameter '{{param:{name}}}' (see parameters.yaml)")


def _closes_critical(value: Any, raw: Mapping[str, Any], where: str) -> tuple[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != _CLOSES_CRITICAL_KEYS:
        raise RuleError(f"{where}: 'closes_critical' is {{modality, lead}}")
    modality, lead = value["modality"], value["lead"]
    if modality not in MODALITIES:
        raise RuleError(f"{where}: closes_critical modality must be one of {list(MODALITIES)}, got {modality!r}")
    if modality not in (raw.get("severity") or {}):
        raise RuleError(f"{where}: closes_critical names {modality}, for which the rule has no severity")
    if not isinstance(lead, str) or not lead.strip():
        raise RuleError(f"{where}: closes_critical needs a lead, e.g. 'If you proceed'")
    return str(modality), lead.strip()


def _order_codes(
    value: Any, suggestions: tuple[str, ...], variants: tuple[Variant, ...], where: str
) -> dict[str, tuple[str, str, str]]:
    """What to order for each missing test: every value a variant names under ``missing``."""
    codes: dict[str, tuple[str, str, str]] = {}
    if value is not None:
        if not isinstance(value, dict):
            raise RuleError(f"{where}: 'order_codes' maps each missing test to {{system, code, display}}")
        for name, coding in value.items():
            if not isinstance(coding, dict) or set(coding) != _ORDER_CODE_KEYS:
                raise RuleError(f"{where}: order_codes '{name}' must be {{system, code, display}}")
            if not all(isinstance(v, str) and v.strip() for v in coding.values()):
                raise RuleError(f"{where}: order_codes '{name}': system, code and display are non-empty strings")
            if not re.match(r"https?://\S+$", coding["system"]):
                raise RuleError(f"{where}: order_codes '{name}': system must be a code system URI")
            codes[str(name)] = (coding["system"], coding["code"], coding["display"])
    wants = "order-missing-tests" in suggestions
    if codes and not wants:
        raise RuleError(f"{where}: 'order_codes' without the 'order-missing-tests' suggestion")
    if wants:
        missing = sorted({str(v.values["missing"]) for v in variants if "missing" in v.values} - set(codes))
        if missing:
            raise RuleError(f"{where}: order-missing-tests has no order_codes for {missing}")
    return codes


def _override_reasons(raw: Any, where: str) -> tuple[Mapping[str, str], ...]:
    """Codes of the shared list (cds_hooks/overrides.py), or {code, display} maps.

    A shared code always carries the shared display, so it means one thing on every card;
    a code outside the list is a rule-specific reason and needs its own display."""
    reasons: dict[str, str] = {}
    for item in raw if isinstance(raw, (list, tuple)) else [raw]:
        if isinstance(item, str):
            code, shown = item, SHARED_OVERRIDE_REASONS.get(item)
            if shown is None:
                raise RuleError(
                    f"{where}: override reason '{item}' is not in the shared list; "
                    "give a rule-specific reason as {code, display}"
                )
        elif isinstance(item, dict) and item.get("code") and item.get("display"):
            code = str(item["code"])
            shown = SHARED_OVERRIDE_REASONS.get(code, str(item["display"]))
        else:
            raise RuleError(f"{where}: every override reason needs a code and a display")
        reasons[code] = shown
    return tuple({"code": code, "display": shown} for code, shown in reasons.items())


def _links(raw: Any, where: str) -> tuple[Mapping[str, str], ...]:
    if not isinstance(raw, list):
        raise RuleError(f"{where}: 'links' must be a list of {{title, url}}")
    links = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != _LINK_KEYS or not all(isinstance(v, str) for v in item.values()):
            raise RuleError(f"{where}: every link is {{title, url}}")
        if not re.match(r"https?://[^\s]+$", item["url"]):
            raise RuleError(f"{where}: link url must be an absolute http(s) URL, got {item['url']!r}")
        links.append({"title": item["title"], "url": item["url"]})
    return tuple(links)


def _check_variant_text(raw: Mapping[str, Any], where: str) -> None:
    text = raw.get("variant_text") or {}
    names = {str(v.get("name")) for v in raw["variants"] if isinstance(v, dict)}
    if not isinstance(text, dict):
        raise RuleError(f"{where}: 'variant_text' maps variant names to {{finding, summary}}")
    for name, fields in text.items():
        if name not in names:
            raise RuleError(f"{where}: variant_text names unknown variant '{name}'")
        if not isinstance(fields, dict) or not set(fields) <= _VARIANT_TEXT_KEYS:
            raise RuleError(f"{where}: variant_text '{name}' may set only {sorted(_VARIANT_TEXT_KEYS)}")


def load_groups(folder: Path) -> dict[str, CardGroup]:
    """The card groups of parameters.yaml (``groups: {name: {id, finding}}``)."""
    path = folder / "parameters.yaml"
    raw = (yamlfile.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None) or {}
    groups: dict[str, CardGroup] = {}
    for name, spec in (raw.get("groups") or {}).items():
        if not isinstance(spec, dict) or set(spec) != _GROUP_KEYS or not all(isinstance(v, str) for v in spec.values()):
            raise RuleError(f"{path}: group '{name}' must be {{id, finding}}")
        groups[str(name)] = CardGroup(spec["id"], spec["finding"])
    return groups


def load_parameters(folder: Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Windows and thresholds: the catalogue's defaults from parameters.yaml, then overrides."""
    path = folder / "parameters.yaml"
    raw = yamlfile.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    params = {name: spec["default"] for name, spec in (raw or {}).get("parameters", {}).items()}
    for name, value in (overrides or {}).items():
        if name not in params:
            raise RuleError(f"unknown rule parameter '{name}' in configuration (known: {sorted(params)})")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RuleError(f"rule parameter '{name}' must be a number")
        params[name] = value
    return params


def _revision(folder: Path) -> str:
    """The rules' content hash: every file under ``folder`` by its path there, in path order,
    except the rules' test cases (``cases`` folders), which do not change what the rules do.
    The walk does not enter them (they hold four files in five), and a folder named "cases"
    above ``folder`` counts for nothing."""
    files: list[tuple[tuple[str, ...], Path]] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [name for name in dirs if name != "cases"]
        for name in names:
            path = Path(root, name)
            if name != "cases" and path.is_file():
                files.append((path.relative_to(folder).parts, path))
    digest = hashlib.sha256()
    for _parts, path in sorted(files):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def field_tests(definition: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(field, operator, constant) for every test in a compiled rule; "eq" for equality."""

    def walk(term: Any) -> Iterator[tuple[str, str, Any]]:
        for key, value in term.items():
            if key in ("$and", "$or"):
                for item in value:
                    yield from walk(item)
            elif key.startswith("$"):
                for fname, operand in value.items():
                    yield fname, key, operand
            else:
                yield key, "eq", value

    for term in definition["all"]:
        for pattern in term.values():
            yield from walk(pattern)


def _check_engine_limits(variants: Mapping[str, Variant]) -> None:
    counts: Counter[str] = Counter(
        fname for v in variants.values() for fname, op, _ in field_tests(v.definition) if op == "eq"
    )
    worst = counts.most_common(1)
    if worst and worst[0][1] > MAX_EQUALITY_TESTS_PER_FIELD:
        raise RuleError(
            f"field '{worst[0][0]}' is tested for equality {worst[0][1]} times across rules; "
            "move the code list into a value set"
        )


def load_rulebook(folder: Path, overrides: Mapping[str, Any] | None = None) -> Rulebook:
    parameters = load_parameters(folder, overrides)
    paths = sorted(folder.glob("*/rule.yaml"))
    if not paths:
        raise RuleError(f"{folder}: no rules found (expected <RULE-ID>/rule.yaml)")
    rules = tuple(load_rule(p, parameters) for p in paths)
    variants = {v.key: v for r in rules for v in r.variants}
    _check_engine_limits(variants)
    groups = load_groups(folder)
    for rule in rules:
        if rule.group is not None and rule.group not in groups:
            raise RuleError(f"{rule.path}: group '{rule.group}' is not declared under 'groups' in parameters.yaml")
    closing: dict[str, str] = {}
    for rule in rules:
        if rule.closes_critical is not None:
            other = closing.setdefault(rule.closes_critical[0], rule.id)
            if other != rule.id:
                raise RuleError(f"{rule.path}: {other} already closes critical {rule.closes_critical[0]} cards")
    return Rulebook(
        rules=rules,
        parameters=parameters,
        revision=_revision(folder),
        by_id={r.id: r for r in rules},
        variants=variants,
        groups=groups,
    )
