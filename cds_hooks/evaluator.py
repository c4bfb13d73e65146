"""A plain-Python interpreter of the compiled rule JSON.

It is the oracle the durable-rules engine is checked against (the engine has silent
wrong-result bugs), and the evaluator used where ``durable`` cannot be imported. It
understands exactly the subset the rulebook emits: ``$and``, ``$or``, equality, ``$lt``,
``$lte``, ``$gt``, ``$gte`` and absence patterns (``<alias>$not``). As in the engine, the
positive patterns of one rule bind different facts; an absence pattern means that no fact
at all matches it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import product
from typing import Any

from .rulebook import SENTINEL_KIND

Fact = Mapping[str, Any]
Hit = tuple[str, tuple[tuple[str, str], ...]]  # (variant key, ((alias, fact id), ...))

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

    def evaluate(self, facts: Sequence[Fact]) -> list[Hit]:
        hits: list[Hit] = []
        by_kind: dict[Any, list[Fact]] = {}
        for fact in facts:
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
                hits.append((key, tuple(zip(aliases, ids, strict=True))))
        return hits
