"""A plain-Python interpreter of the compiled rule JSON.

It is the oracle the durable-rules engine is checked against (the engine has silent
wrong-result bugs), and the evaluator used where ``durable`` cannot be imported. It
understands exactly the subset the rulebook emits: ``$and``, ``$or``, equality, ``$lt``,
``$lte``, ``$gt``, ``$gte`` and absence patterns (``<alias>$not``). As in the engine, the
positive patterns of one rule bind different facts; an absence pattern means that no fact
at all matches it.

It also holds what both evaluators share: the ``Hit`` and per-order ``OrderEvaluation``
results the cards read, and the conversion that makes facts safe for the C engine (applied
here too, so the oracle reads exactly what the engine reads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import TYPE_CHECKING, Any, cast

from .rulebook import SENTINEL_KIND

if TYPE_CHECKING:
    from .facts import Fact as RecordFact

Fact = Mapping[str, Any]  # what the evaluators read: a fact dict (``facts.Fact``) or a test's own


@dataclass(frozen=True, order=True)
class Hit:
    """One rule variant that matched: its key ("<RULE-ID>#<index>") and the fact each of its
    positive patterns bound, as (alias, fact id) pairs in pattern order."""

    variant: str
    bindings: tuple[tuple[str, str], ...]

    @property
    def rule_id(self) -> str:
        return self.variant.split("#", 1)[0]

    @property
    def fact_ids(self) -> tuple[str, ...]:
        return tuple(fact_id for _alias, fact_id in self.bindings)


@dataclass
class OrderEvaluation:
    """What the rules found on one cryotherapy order: the hits and the facts they name."""

    order_ref: str
    modality: str
    hits: list[Hit]
    facts: dict[str, RecordFact] = field(default_factory=dict)


NUMBER_LIMIT = 1e12


def engine_safe(value: Any) -> Any:
    """Numbers the C engine can read: it crashes the process on JSON numbers written in
    exponent form (>= 1e16, or non-zero below 1e-4). Clamp and round; drop NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if value != value:  # NaN
        return None
    return round(max(-NUMBER_LIMIT, min(NUMBER_LIMIT, float(value))), 4)


def engine_safe_fact(fact: Mapping[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for key, value in fact.items():
        kind = type(value)  # most values are text or flags: kept without a call
        if kind is not str and kind is not bool and value is not None:
            value = engine_safe(value)
        if value is not None:
            safe[key] = value
    return safe


def engine_ready(facts: Sequence[RecordFact]) -> list[RecordFact]:
    """The facts as both evaluators read them (numbers clamped and rounded, NaN dropped);
    the cards and the decision log are built from the same dicts, so they say what was
    evaluated."""
    return [cast("RecordFact", engine_safe_fact(fact)) for fact in facts]


_COMPARE = {
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
}


def matches(fact: Fact, term: Mapping[str, Any]) -> bool:
    """Does one fact satisfy one compiled test expression?"""
    for key, value in term.items():
        if key == "$and":
            if not all(matches(fact, t) for t in value):
                return False
        elif key == "$or":
            if not any(matches(fact, t) for t in value):
                return False
        elif key in _COMPARE:
            ((fname, operand),) = value.items()
            actual = fact.get(fname)
            if not isinstance(actual, (int, float)) or isinstance(actual, bool):
                return False
            if not _COMPARE[key](actual, operand):
                return False
        elif fact.get(key, _MISSING) != value:
            return False
    return True


_MISSING = object()


def _kind_of(pattern: Mapping[str, Any]) -> Any:
    """The fact kind a compiled pattern requires, so only those facts are scanned."""
    if "kind" in pattern:
        return pattern["kind"]
    for term in pattern.get("$and", ()):
        if isinstance(term, Mapping) and set(term) == {"kind"}:
            return term["kind"]
    return None


class PlainEvaluator:
    """Evaluates compiled rules over one request's facts; stateless and thread-safe."""

    name = "plain"

    def __init__(self, rules: Mapping[str, Mapping[str, Any]]):
        self._rules = {
            key: [(alias, pattern, _kind_of(pattern)) for term in definition["all"] for alias, pattern in term.items()]
            for key, definition in rules.items()
        }

    def evaluate(self, facts: Sequence[Fact], *, ready: bool = False) -> list[Hit]:
        """The rules' hits on ``facts``; ``ready`` when they come from ``engine_ready``."""
        hits: list[Hit] = []
        by_kind: dict[Any, list[Fact]] = {}
        for fact in facts if ready else map(engine_safe_fact, facts):  # what the durable engine reads, too
            if fact.get("kind") != SENTINEL_KIND:
                by_kind.setdefault(fact.get("kind"), []).append(fact)
        everything = [f for group in by_kind.values() for f in group]
        for key, terms in self._rules.items():
            positive: list[tuple[str, list[Fact]]] = []
            absent: list[list[Fact]] = []
            for alias, pattern, kind in terms:
                if alias == "req" and pattern == {"kind": SENTINEL_KIND}:
                    continue
                pool = everything if kind is None else by_kind.get(kind, [])
                found = [f for f in pool if matches(f, pattern)]
                if alias.endswith("$not"):
                    absent.append(found)
                else:
                    positive.append((alias, found))
            if any(not found for _, found in positive) or any(absent):
                continue
            aliases = [a for a, _ in positive]
            for combo in product(*(found for _, found in positive)):
                ids = [str(f["id"]) for f in combo]
                if len(set(ids)) != len(ids):
                    continue  # each pattern binds a different fact, as in the engine
                hits.append(Hit(key, tuple(zip(aliases, ids, strict=True))))
        return hits
