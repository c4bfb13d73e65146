"""Check CDS Hooks 2.0 messages against the spec, with readable problems.

Why this exists: CDS Hooks has no official JSON Schema (spec §13), so the project
ships its own (``schemas/cds-hooks-2.0.schema.json``). The schema carries every
rule it can express, so OpenAPI tools see the same rules. This module adds what a
schema cannot say well: the §1 "no null or empty values" rule applied to the whole
output document (including embedded FHIR resources), unique card uuids, and clear
wording for the named rules (LM invariants such as cds-resp-6) that the schema
marks with ``x-rule``.

Policy (spec §1 robustness note): lenient when reading (``request``, ``feedback``:
unknown fields and empty values inside FHIR content are accepted), strict when
writing (``discovery``, ``response``: unknown fields, nulls and empties are problems).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Final, Literal

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

__all__ = ["SCHEMA_ID", "Kind", "load_schema", "validate"]

Kind = Literal["discovery", "request", "response", "feedback"]
Path = tuple[str | int, ...]

SCHEMA_ID: Final = "https://cryo-cds.example.org/schemas/cds-hooks-2.0.schema.json"
_SCHEMA_FILE: Final = "schemas/cds-hooks-2.0.schema.json"

# kind -> name under $defs
_DEFS: Final[dict[str, str]] = {
    "discovery": "discoveryResponse",
    "request": "serviceRequest",
    "response": "response",
    "feedback": "feedbackRequest",
}

# Output documents, where §1 forbids null/empty values, and the one top-level
# array per document that §1 allows to be empty.
_STRICT_EMPTY_OK: Final[dict[str, Path]] = {"discovery": ("services",), "response": ("cards",)}

# Wording for subschemas tagged with "x-rule" in the JSON Schema.
_RULES: Final[dict[str, str]] = {
    "card-summary": "summary must be shorter than 140 characters (§card-attributes)",
    "cds-resp-1": "selectionBehavior 'at-most-one' allows at most one suggestion with isRecommended: true (cds-resp-1)",
    "cds-resp-3": "appContext is only allowed on links whose type is 'smart' (cds-resp-3)",
    "cds-resp-4": "each overrideReasons Coding must have a display (cds-resp-4)",
    "cds-resp-5": "an action in a suggestion must have a description (cds-resp-5)",
    "cds-resp-6": "selectionBehavior is required when suggestions are present (cds-resp-6)",
    "action-resource": "create and update actions must carry the resource (§action)",
    "action-delete": "a delete action needs resourceId (§action)",
    "cds-r-1": "fhirServer is required when fhirAuthorization is present (cds-r-1)",
    "cds-fb-2": "acceptedSuggestions is required when outcome is 'accepted' (cds-fb-2)",
    "cds-fb-3": "overrideReason needs a reason and/or a userComment (cds-fb-3)",
    "rfc3339": "must be an RFC 3339 date-time such as 2021-12-11T10:05:31Z (§feedback)",
    "absolute-url": "must be an absolute http(s) URL",
    "type-id": "must be a relative reference 'ResourceType/id'",
    "uuid": "must be a UUID such as d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
}

# Schema keywords whose only complaint is "this is empty/null"; the §1 walk
# already reports those, so the schema's copy is dropped.
_EMPTINESS_KEYWORDS: Final = frozenset({"minLength", "minItems", "minProperties"})

_RFC3339: Final = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_MAX_MESSAGE: Final = 200


def load_schema() -> dict[str, Any]:
    """Read the packaged schema (importlib.resources, so it works from a wheel)."""
    text = resources.files("cds_hooks").joinpath(_SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _is_rfc3339(value: object) -> bool:
    """date-time check that needs no extra package (jsonschema's needs rfc3339-validator).

    The shape is the schema pattern's job; this adds calendar validity (no month 13).
    RFC 3339 allows a leap second (:60), which datetime cannot hold, so it is read as :59.
    """
    if not isinstance(value, str) or not _RFC3339.match(value):
        return True
    text = value.upper()
    if text[17:19] == "60":
        text = text[:17] + "59" + text[19:]
    try:
        datetime.fromisoformat(text)  # 3.11+ reads "Z"
    except ValueError:
        return False
    return True


@cache
def _validator(kind: str) -> Draft202012Validator:
    """Build (once per kind) a validator for {"$ref": "<schema>#/$defs/<name>"}."""
    registry: Registry[Any] = Registry().with_resource(SCHEMA_ID, Resource.from_contents(load_schema()))
    checker = FormatChecker()
    checker.checks("date-time")(_is_rfc3339)
    return Draft202012Validator(
        {"$ref": f"{SCHEMA_ID}#/$defs/{_DEFS[kind]}"},
        registry=registry,
        format_checker=checker,
    )


def _pointer(path: Iterable[str | int]) -> str:
    """JSON Pointer (RFC 6901) for a problem's location; '(root)' for the document."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else "(root)"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _schema_message(error: ValidationError) -> str:
    """Prefer the rule's wording when the failing subschema is tagged with x-rule."""
    rule = error.schema.get("x-rule") if isinstance(error.schema, dict) else None
    if isinstance(rule, str) and rule in _RULES:
        if rule == "card-summary" and isinstance(error.instance, str):
            return f"{_RULES[rule]}; this one has {len(error.instance)}"
        return _RULES[rule]
    return _short(error.message)


def _empties(node: Any, path: Path, allowed: Path) -> Iterator[tuple[Path, str]]:
    """Yield every null or empty value (§1): None, "", [], {}.

    `allowed` is exempt, and so is the root: the schema's type error says more there.
    """
    if node is None and path:
        yield path, "null value: omit an optional attribute instead of sending null (§1)"
        return
    if isinstance(node, (str, list, dict)) and len(node) == 0 and path not in ((), allowed):
        kind = {str: "string", list: "array", dict: "object"}[type(node)]
        yield path, f"empty {kind}: omit an optional attribute instead (§1)"
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _empties(value, (*path, key), allowed)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _empties(value, (*path, index), allowed)


def _duplicate_card_uuids(doc: Any) -> Iterator[tuple[Path, str]]:
    """Card uuids identify cards in feedback (§feedback), so they must not repeat."""
    cards = doc.get("cards") if isinstance(doc, dict) else None
    if not isinstance(cards, list):
        return
    first_seen: dict[str, int] = {}
    for index, card in enumerate(cards):
        uuid = card.get("uuid") if isinstance(card, dict) else None
        if not isinstance(uuid, str) or not uuid:
            continue
        if uuid in first_seen:
            where = _pointer(("cards", first_seen[uuid]))
            yield ("cards", index, "uuid"), f"duplicate card uuid {uuid!r} (first used at {where})"
        else:
            first_seen[uuid] = index


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def validate(kind: Kind, obj: Any) -> list[str]:
    """Return human-readable problems with `obj` as a `kind` message; [] means valid.

    Each problem reads "<JSON Pointer>: <what is wrong>".
    """
    if kind not in _DEFS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(_DEFS)}")
    found: list[tuple[Path, str]] = []
    empty_paths: set[Path] = set()
    if kind in _STRICT_EMPTY_OK:
        for where, message in _empties(obj, (), _STRICT_EMPTY_OK[kind]):
            empty_paths.add(where)
            found.append((where, message))
    for error in _validator(kind).iter_errors(obj):
        path: Path = tuple(error.absolute_path)
        if path in empty_paths and (
            error.validator in _EMPTINESS_KEYWORDS or (error.validator == "type" and error.instance is None)
        ):
            continue
        found.append((path, _schema_message(error)))
    if kind == "response":
        found.extend(_duplicate_card_uuids(obj))
    found.sort(key=lambda item: [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in item[0]])
    return _dedupe([f"{_pointer(path)}: {message}" for path, message in found])
