"""Derive the plain reader's schema (``cds_hooks/plainschema.py``) from the code that reads it.

The plain reader (``cds_hooks/plainread.py``) builds light objects instead of R4B models, and
those objects carry only the elements listed in the schema. The list must therefore hold every
element the rules' readers could touch. It is derived, not hand-kept: every attribute name
(and every ``getattr(x, "name")``) in the modules that read the record is collected from their
syntax trees, and for each resource type the R4B elements bearing one of those names are kept,
recursively through their data types. A name used for something else only adds an element
that is checked needlessly; an element the readers use can never be missing.

    python -m cds_hooks.devtools.plain_schema > cds_hooks/plainschema.py

``tests/test_plainread.py`` fails when the file is not what this prints.
"""

from __future__ import annotations

import ast
import typing
from collections.abc import Iterable
from pathlib import Path
from pprint import pformat
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

PACKAGE = Path(__file__).resolve().parents[1]
# The modules that read parsed resources (the record, the facts, order detection).
READERS = (
    "facts/__init__.py",
    "facts/conditions.py",
    "facts/context.py",
    "facts/medications.py",
    "facts/observations.py",
    "facts/orders.py",
    "facts/patient.py",
    "concepts.py",
    "orders.py",
    "record.py",
    "service.py",
)
# The resource types the plain reader builds (lenient.NEEDS: every type a rule reads).
RESOURCE_TYPES = (
    "AllergyIntolerance",
    "Appointment",
    "Condition",
    "Device",
    "DeviceUseStatement",
    "Medication",
    "MedicationAdministration",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Patient",
    "Procedure",
    "ServiceRequest",
)
# Element types never built although their element's name is read elsewhere, with why. A
# resource's narrative (``text``) is the human-readable rendering; the readers read ``.text``
# of CodeableConcept, Annotation, Dosage and HumanName, never a resource's narrative.
NOT_READ = {"Narrative": "a resource's narrative is for display; no reader reads it"}


def names_read(files: Iterable[Path]) -> set[str]:
    """Every attribute name, and every constant name given to getattr/hasattr, in ``files``."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                names.add(node.args[1].value)
    return names


def _element_type(annotation: Any) -> tuple[str, bool]:
    """(FHIR type name, is a list) of a model field's annotation."""
    is_list = False
    current = annotation
    while True:
        args = [a for a in typing.get_args(current) if a is not type(None)]
        origin = typing.get_origin(current)
        if origin in (list, typing.List):  # noqa: UP006 (the models' own spelling)
            is_list = True
            current = args[0]
        elif origin is typing.Annotated:
            return type(current.__metadata__[0]).__name__, is_list
        elif origin is typing.Union or (origin is not None and len(args) == 1):
            current = args[0]
        elif isinstance(current, type):
            name = current.__name__
            return (name[:-4] if name.endswith("Type") and name != "Type" else name), is_list
        else:
            raise TypeError(f"unexpected annotation {annotation!r}")


def _primitive_name(kind: str) -> str:
    return {"bool": "Boolean", "str": "String"}.get(kind, kind)


Schema = tuple[
    dict[str, dict[str, tuple[str, bool]]],
    dict[str, tuple[tuple[str, ...], ...]],
    dict[str, tuple[str, ...]],
    dict[str, tuple[str, ...]],
]


def build_schema(names: set[str]) -> Schema:
    """(fields, choice groups, unread elements) per type: the elements read (name -> (type,
    is list)); every choice group of the type, read or not, since two values in one group
    make it invalid; the type's other elements (a key that is none of them is unknown, and
    the full reader drops it); and its required elements (without one, the full reader drops
    the element, or cannot read the resource)."""
    fields: dict[str, dict[str, tuple[str, bool]]] = {}
    choices: dict[str, tuple[tuple[str, ...], ...]] = {}
    unread: dict[str, tuple[str, ...]] = {}
    required: dict[str, tuple[str, ...]] = {}
    pending = list(RESOURCE_TYPES)
    while pending:
        type_name = pending.pop()
        if type_name in fields:
            continue
        model = get_fhir_model_class(type_name)
        read: dict[str, tuple[str, bool]] = {}
        groups: dict[str, list[str]] = {}
        others: list[str] = []
        needed: list[str] = []
        for field_name, info in model.model_fields.items():
            if field_name.endswith("__ext"):
                continue
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get("element_required") or info.is_required():
                needed.append(info.alias or field_name)
            group = extra.get("one_of_many")
            if isinstance(group, str):
                groups.setdefault(group, []).append(info.alias or field_name)
            kind, is_list = _element_type(info.annotation)
            kind = _primitive_name(kind)
            if field_name not in names or kind in NOT_READ:
                others.append(info.alias or field_name)
                continue
            read[info.alias or field_name] = (kind, is_list)
            if kind not in PRIMITIVES and kind != "Resource":  # contained resources: the full reader
                pending.append(kind)
        fields[type_name] = dict(sorted(read.items()))
        choices[type_name] = tuple(tuple(sorted(v)) for _k, v in sorted(groups.items()) if len(v) > 1)
        unread[type_name] = tuple(sorted(others))
        required[type_name] = tuple(sorted(needed))
    return (
        dict(sorted(fields.items())),
        dict(sorted(choices.items())),
        dict(sorted(unread.items())),
        dict(sorted(required.items())),
    )


# Primitive FHIR types the plain reader knows how to check (plainread.PRIMITIVE_CHECKS).
PRIMITIVES = frozenset(
    {
        "Boolean",
        "Canonical",
        "Code",
        "Date",
        "DateTime",
        "Decimal",
        "Id",
        "Instant",
        "Integer",
        "Markdown",
        "PositiveInt",
        "String",
        "UnsignedInt",
        "Uri",
        "Url",
        "Xhtml",
    }
)


def render() -> str:
    """The text of cds_hooks/plainschema.py."""
    fields, choices, unread, required = build_schema(names_read(PACKAGE / p for p in READERS))
    unknown = sorted(
        {kind for table in fields.values() for kind, _ in table.values()} - PRIMITIVES - set(fields) - {"Resource"}
    )
    if unknown:
        raise SystemExit(f"element types without a schema or a check: {', '.join(unknown)}")
    return (
        '"""What the plain reader builds: generated by ``python -m cds_hooks.devtools.plain_schema``.\n\n'
        "Do not edit: tests/test_plainread.py fails when this is not what the generator prints.\n"
        '"""\n\n'
        "# type -> element read -> (FHIR type, is a list)\n"
        f"FIELDS: dict[str, dict[str, tuple[str, bool]]] = {pformat(fields, width=110, sort_dicts=False)}\n\n"
        "# type -> its choice groups ([x] elements): at most one of each group may hold a value\n"
        f"CHOICES: dict[str, tuple[tuple[str, ...], ...]] = {pformat(choices, width=110, sort_dicts=False)}\n\n"
        "# type -> its elements not read (any other key is unknown to FHIR R4)\n"
        f"UNREAD: dict[str, tuple[str, ...]] = {pformat(unread, width=110, sort_dicts=False, compact=True)}\n\n"
        "# type -> its required elements\n"
        f"REQUIRED: dict[str, tuple[str, ...]] = {pformat(required, width=110, sort_dicts=False, compact=True)}\n"
    )


if __name__ == "__main__":
    print(render(), end="")
