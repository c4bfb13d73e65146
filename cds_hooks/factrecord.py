"""The facts a decision was evaluated on, as the decision log keeps them (what-if replay).

Why one function pair: the fact representation is about to change (typed objects instead
of dicts); every writer and reader of the log goes through ``facts_to_record`` and
``facts_from_record``, so that change touches this module only.

What is kept: per cryotherapy order, its modality and the facts' kind and the fields rules
can test (codes, values, flags, relative days). What is not: references and ids, labels and
free text (``site``, ``lesion``, displays), absolute dates. A rule that tests a field not
kept is reported by replay as "cannot replay", never silently skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .factschema import FACT_SCHEMA, STR
from .rulebook import ALLOWED_VALUES

RECORD_VERSION = 1
# Parameters applied while facts are built (not by the rules): replaying with another value
# needs facts the log does not have. Parameter -> fact kinds it shapes.
FACT_BUILD_PARAMETERS: Mapping[str, tuple[str, ...]] = {"medication_supply_days": ("medication",)}
# Codes are kept (they say what, not who); free-text string fields are not.
_KEPT_TEXT = {("order", "local_code"), ("condition", "region")}
RECORDED_FIELDS: Mapping[str, frozenset[str]] = {
    kind: frozenset(
        name
        for name, kind_of_value in fields.items()
        if kind_of_value != STR or (kind, name) in ALLOWED_VALUES or (kind, name) in _KEPT_TEXT
    )
    | {"code", "system"}
    for kind, fields in FACT_SCHEMA.items()
}

OrderFacts = tuple[str, Sequence[Any]]  # (modality, the facts of one order)


def _as_mapping(fact: Any) -> Mapping[str, Any]:
    """A fact as a mapping, whether it is a dict or a (data)class instance."""
    if isinstance(fact, Mapping):
        return fact
    if dataclasses.is_dataclass(fact) and not isinstance(fact, type):
        return dataclasses.asdict(fact)
    for method in ("as_dict", "to_dict", "model_dump"):
        if callable(getattr(fact, method, None)):
            return dict(getattr(fact, method)())
    return dict(vars(fact))


def facts_to_record(orders: Sequence[OrderFacts], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-able, de-identified facts of one decision (one entry per order, in order)."""
    entries = []
    for modality, facts in orders:
        kept = []
        for fact in facts:
            raw = _as_mapping(fact)
            kind = raw.get("kind")
            fields = RECORDED_FIELDS.get(str(kind))
            if fields is None:
                continue
            kept.append({"kind": kind, **{k: v for k, v in raw.items() if k in fields and v is not None}})
        entries.append({"modality": modality, "facts": kept})
    built_with = {name: parameters[name] for name in FACT_BUILD_PARAMETERS if name in parameters}
    return {"v": RECORD_VERSION, "orders": entries, "built_with": built_with}


def facts_from_record(record: Mapping[str, Any] | None) -> list[tuple[str, list[dict[str, Any]]]] | None:
    """(modality, facts the evaluator consumes) per order, or None for a decision logged
    without facts. Fact ids are given afresh: the engine needs them unique per evaluation."""
    if not record or record.get("v") != RECORD_VERSION:
        return None
    orders = []
    for entry in record.get("orders") or ():
        facts = [{**fact, "id": f"r{index}"} for index, fact in enumerate(entry.get("facts") or ())]
        orders.append((str(entry.get("modality")), facts))
    return orders


def built_with(record: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The fact-building parameters a record's facts were made with."""
    return dict((record or {}).get("built_with") or {})


__all__ = [
    "FACT_BUILD_PARAMETERS",
    "RECORDED_FIELDS",
    "built_with",
    "facts_from_record",
    "facts_to_record",
]
