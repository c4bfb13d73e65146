"""Rules in words, and why a rule stayed silent for one order.

A rule's patterns are shown as their author wrote them (``rule.yaml``), with parameters
resolved to their current values. For a silent rule, each variant is matched pattern by
pattern with the plain evaluator's own test (``evaluator.matches``); the variant that came
nearest is the "closest miss": the patterns that held, the one that failed with the fact
that came closest and the test it failed, or the fact that an ``unless`` pattern found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..evaluator import matches
from ..rulebook import SENTINEL_KIND, Rule, Variant

OP_WORDS = {
    "eq": "=",
    "lt": "<",
    "lte": "≤",
    "gt": ">",
    "gte": "≥",
    "in": "one of",
    "$lt": "<",
    "$lte": "≤",
    "$gt": ">",
    "$gte": "≥",
}


@lru_cache(maxsize=512)
def raw_rule(path: str) -> dict[str, Any]:
    """The rule file as written (for notes, patterns and parameter names)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _value_words(value: Any, parameters: Mapping[str, Any]) -> str:
    if isinstance(value, dict) and set(value) == {"param"}:
        name = str(value["param"])
        return f"{_fmt(parameters.get(name, '?'))} ({name})"
    if isinstance(value, list):
        return "[" + ", ".join(_value_words(v, parameters) for v in value) + "]"
    return _fmt(value)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def pattern_words(pattern: Any, parameters: Mapping[str, Any]) -> str:
    """``lab: {test: hb, value: {lt: {param: x}}}`` -> ``lab: test = hb, value < 8.0 (x)``."""
    if not isinstance(pattern, dict) or len(pattern) != 1:
        return str(pattern)
    ((kind, tests),) = pattern.items()
    parts = []
    for name, test in (tests or {}).items():
        if isinstance(test, dict) and "param" not in test and len(test) == 1:
            ((op, operand),) = test.items()
        else:
            op, operand = "eq", test
        parts.append(f"{name} {OP_WORDS.get(op, op)} {_value_words(operand, parameters)}")
    return f"{kind}: " + (", ".join(parts) if parts else "any")


def rule_parameters(rule: Rule) -> list[str]:
    """Names of the parameters a rule's file refers to, in order of first use."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"param"}:
                found.append(str(node["param"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(raw_rule(rule.path).get("variants"))
    return list(dict.fromkeys(found))


def variant_patterns(rule: Rule, index: int, parameters: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(when, unless) of one variant, in words."""
    variants = raw_rule(rule.path).get("variants") or []
    raw = variants[index] if index < len(variants) else {}
    unless = raw.get("unless") or []
    unless = unless if isinstance(unless, list) else [unless]
    return (
        [pattern_words(p, parameters) for p in raw.get("when") or []],
        [pattern_words(p, parameters) for p in unless],
    )


# -- closest miss ------------------------------------------------------------------------


def _terms(pattern: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The tests of a compiled pattern other than its fact kind."""
    if "$and" in pattern:
        return [t for t in pattern["$and"] if not (isinstance(t, Mapping) and set(t) == {"kind"})]
    return [{k: v} for k, v in pattern.items() if k != "kind"]


def _term_field(term: Mapping[str, Any]) -> tuple[str, str, Any]:
    ((key, value),) = term.items()
    if key == "$or":
        names = {next(iter(item)) for item in value}
        return ", ".join(sorted(names)), "in", [next(iter(item.values())) for item in value]
    if key.startswith("$"):
        ((fname, operand),) = value.items()
        return fname, key, operand
    return key, "eq", value


def term_words(term: Mapping[str, Any], fact: Mapping[str, Any] | None = None) -> str:
    fname, op, operand = _term_field(term)
    text = f"{fname} {OP_WORDS.get(op, op)} {_fmt(operand) if not isinstance(operand, list) else operand}"
    if fact is not None:
        actual = fact.get(fname.split(", ")[0], "absent")
        text += f" (was {_fmt(actual)})"
    return text


@dataclass
class PatternCheck:
    words: str
    matched: list[Mapping[str, Any]]
    nearest: Mapping[str, Any] | None = None
    failed: list[str] = field(default_factory=list)


@dataclass
class VariantCheck:
    name: str
    applies: bool  # the variant has a severity for the order's modality
    when: list[PatternCheck]
    blocked_by: list[PatternCheck]

    @property
    def satisfied(self) -> int:
        return sum(1 for p in self.when if p.matched)

    @property
    def complete(self) -> bool:
        """Every pattern held: the variant matched (silent by modality, grouped or suppressed)."""
        return self.satisfied == len(self.when) and not self.blocked_by

    @property
    def score(self) -> tuple[int, int, int]:
        partial = sum(1 for p in self.when if not p.matched and p.nearest is not None)
        near_failures = sum(len(p.failed) for p in self.when if not p.matched)
        return (self.satisfied * 2 + partial - len(self.blocked_by), -near_failures, int(self.applies))


def _check_pattern(words: str, compiled: Mapping[str, Any], facts: Sequence[Mapping[str, Any]]) -> PatternCheck:
    kind = (
        compiled.get("kind")
        if "kind" in compiled
        else next((t["kind"] for t in compiled.get("$and", ()) if isinstance(t, Mapping) and set(t) == {"kind"}), None)
    )
    pool = [f for f in facts if kind is None or f.get("kind") == kind]
    found = [f for f in pool if matches(f, compiled)]
    check = PatternCheck(words, found)
    if found:
        return check
    terms = _terms(compiled)
    best: tuple[int, Mapping[str, Any], list[str]] | None = None
    for fact in pool:
        failed = [term_words(t, fact) for t in terms if not matches(fact, t)]
        passed = len(terms) - len(failed)
        if passed and (best is None or passed > best[0]):
            best = (passed, fact, failed)
    if best is not None:
        check.nearest, check.failed = best[1], best[2]
    return check


def check_variant(
    rule: Rule,
    index: int,
    variant: Variant,
    modality: str,
    facts: Sequence[Mapping[str, Any]],
    parameters: Mapping[str, Any],
) -> VariantCheck:
    when_words, unless_words = variant_patterns(rule, index, parameters)
    usable = [f for f in facts if f.get("kind") != SENTINEL_KIND]
    when: list[PatternCheck] = []
    blocked: list[PatternCheck] = []
    for term in variant.definition["all"]:
        ((alias, compiled),) = term.items()
        if alias == "req":
            continue
        if alias.endswith("$not"):
            i = int(alias[1:].split("$")[0])
            words = unless_words[i] if i < len(unless_words) else str(compiled)
            check = _check_pattern(words, compiled, usable)
            if check.matched:
                blocked.append(check)
        else:
            i = int(alias[1:])
            words = when_words[i] if i < len(when_words) else str(compiled)
            when.append(_check_pattern(words, compiled, usable))
    return VariantCheck(variant.name, modality in variant.severity, when, blocked)


def closest_miss(
    rule: Rule, modality: str, facts: Sequence[Mapping[str, Any]], parameters: Mapping[str, Any]
) -> VariantCheck | None:
    """The variant of a silent rule that came nearest to firing, if any came near at all."""
    checks = [check_variant(rule, i, v, modality, facts, parameters) for i, v in enumerate(rule.variants)]
    near = [c for c in checks if c.satisfied or any(p.nearest is not None for p in c.when)]
    if not near:
        return None
    return max(near, key=lambda c: c.score)


def merge_hits(hits: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (rule, order): a rule that matched several fact combinations is one finding
    whose facts and evidence are the union of its hits."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for hit in hits:
        key = (hit["rule_id"], hit["order_ref"])
        if key not in merged:
            merged[key] = {**hit, "facts": dict(hit.get("facts") or {}), "evidence": list(hit.get("evidence") or [])}
            continue
        entry = merged[key]
        entry["facts"].update(hit.get("facts") or {})
        entry["evidence"] = list(dict.fromkeys([*entry["evidence"], *(hit.get("evidence") or [])]))
    return list(merged.values())
