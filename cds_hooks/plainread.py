"""Reading a resource straight from its JSON when it is plainly valid R4 (issue 15).

Validating a resource into an R4B model costs about 0.4 ms; a whole-patient record holds
hundreds of the resources the rules read. Most arrive in plain, valid shape, and the rules
read a few of their elements. For those, the elements listed in ``plainschema.FIELDS`` (every
element the record's readers can touch, derived from their code) are checked against the
FHIR R4 rules the R4B models apply and converted to the same Python values (``Decimal``,
``date``, aware ``datetime``), and put on light objects that answer attribute access like
the models do (``None`` for an absent element).

Anything not plainly valid in those elements (a wrong JSON type, a value outside its FHIR
pattern, two values for one choice element, a primitive extension, a contained resource,
a needed element missing) returns None: the full reader (``lenient.read_resource``) then
reads, repairs or names the resource exactly as before. Elements the readers never touch
are not checked: whatever they hold cannot change what the rules see.
``tests/test_plainread.py`` holds the two readers to the same values on every corpus.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from .lenient import NEEDS, Reading, lost_needs, raw_ref
from .plainschema import CHOICES, FIELDS, REQUIRED, UNREAD


class NotPlain(Exception):
    """The JSON is not in plain, valid shape: the full reader must decide."""


class PlainElement:
    """An element read from JSON. Its class holds every schema element as ``None``; the
    instance holds the ones present."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({vars(self)!r})"


class PlainResource(PlainElement):
    resource_type = ""

    @classmethod
    def get_resource_type(cls) -> str:
        return cls.resource_type


def _plain_class(type_name: str) -> type[PlainElement]:
    base: type[PlainElement] = PlainResource if type_name in NEEDS else PlainElement
    attributes: dict[str, Any] = dict.fromkeys(FIELDS[type_name])
    if base is PlainResource:
        attributes["resource_type"] = type_name
    return type(f"Plain{type_name}", (base,), attributes)


_CLASSES = {name: _plain_class(name) for name in FIELDS}
_UNREAD = {name: frozenset(elements) for name, elements in UNREAD.items()}
_CHOICE_OF = {
    name: {variant: i for i, group in enumerate(groups) for variant in group} for name, groups in CHOICES.items()
}

# The FHIR R4 patterns the R4B models enforce (fhir_core.types), anchored; the String and Uri
# ones are at least as strict as the models', so a value that passes here passes there.
_STRING = re.compile(r"[ \r\n\t\S]+")
_URI = re.compile(r"\S*")
_CODE = re.compile(r"[^\s]+(\s[^\s]+)*")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_DATE = re.compile(_YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?")
_DATETIME = re.compile(
    _YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9])"
    r"(\.[0-9]{1,6})?(Z|([+\-])((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)
_INSTANT = re.compile(
    _YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9])"
    r"(\.[0-9]{1,6})?(Z|([+\-])((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
_INT32 = range(-(2**31), 2**31)


def _text(pattern: re.Pattern[str], value: Any) -> str:
    if type(value) is not str or pattern.fullmatch(value) is None:
        raise NotPlain
    return value


def _date(value: Any) -> date | str:
    text = _text(_DATE, value)
    return date.fromisoformat(text) if len(text) == 10 else text  # a partial date stays text, as in R4B


def _date_time(value: Any) -> datetime | date | str:
    # Leap seconds and more than microsecond precision are left to the full reader (the
    # patterns above refuse them).
    text = _text(_DATETIME, value)
    if "T" in text:
        return datetime.fromisoformat(text)
    return date.fromisoformat(text) if len(text) == 10 else text


def _instant(value: Any) -> datetime:
    return datetime.fromisoformat(_text(_INSTANT, value))


def _decimal(value: Any) -> Decimal:
    if type(value) is not int and type(value) is not float:
        raise NotPlain
    return Decimal(_text(_DECIMAL, str(value)))


def _integer(low: int) -> Any:
    def check(value: Any) -> int:
        if type(value) is not int or value < low or value not in _INT32:
            raise NotPlain
        return value

    return check


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise NotPlain
    return value


PRIMITIVE_CHECKS: dict[str, Any] = {
    "Boolean": _boolean,
    "Code": lambda v: _text(_CODE, v),
    "Date": _date,
    "DateTime": _date_time,
    "Decimal": _decimal,
    "Id": lambda v: _text(_ID, v),
    "Instant": _instant,
    "Integer": _integer(-(2**31)),
    "Markdown": lambda v: _text(_STRING, v),
    "PositiveInt": _integer(1),
    "String": lambda v: _text(_STRING, v),
    "UnsignedInt": _integer(0),
    "Uri": lambda v: _text(_URI, v),
}


def _has_content(value: Any) -> bool:
    """False for what the full reader prunes away (null, "", [], {} and containers of only those)."""
    if isinstance(value, dict):
        return any(_has_content(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_content(v) for v in value)
    return value is not None and value != ""


def _value(kind: str, value: Any) -> Any:
    """The element's value, or None when it holds nothing."""
    if value is None or value == "":
        return None
    check = PRIMITIVE_CHECKS.get(kind)
    if check is not None:
        if isinstance(value, (list, dict)):
            raise NotPlain
        return check(value)
    if kind == "Resource":
        raise NotPlain  # a contained resource: the full reader models it
    return _element(kind, value)


def _element(type_name: str, raw: Any) -> PlainElement | None:
    """A plain object for one complex element, None when it holds nothing or lacks a required
    element (the full reader drops such an element; a resource lacking one is its to read)."""
    if type(raw) is not dict:
        raise NotPlain
    fields = FIELDS[type_name]
    unread = _UNREAD[type_name]
    choice_of = _CHOICE_OF[type_name]
    element = _CLASSES[type_name]()
    present = element.__dict__
    filled = False
    groups: set[int] = set()
    for key, value in raw.items():
        spec = fields.get(key)
        if spec is None:
            if key[:1] == "_":
                raise NotPlain  # a primitive's extension (e.g. data-absent-reason)
            if key not in unread or not _has_content(value):
                continue  # resourceType, an unknown element (the full reader drops it), or nothing
        else:
            kind, is_list = spec
            if is_list:
                if type(value) is not list:
                    if value is None:
                        continue
                    raise NotPlain
                items = [item for item in (_value(kind, v) for v in value) if item is not None]
                if not items:
                    continue
                present[key] = items
            else:
                one = _value(kind, value)
                if one is None:
                    continue
                present[key] = one
        filled = True
        group = choice_of.get(key)
        if group is not None:
            if group in groups:
                raise NotPlain  # two values for one choice element
            groups.add(group)
    if not filled:
        return None
    for name in REQUIRED[type_name]:
        if name not in present and (name in fields or not _has_content(raw.get(name))):
            if type_name in NEEDS:
                raise NotPlain
            return None
    return element


def read_plain(raw: Any) -> Reading | None:
    """A Reading for a plainly valid resource of a type the rules read, else None."""
    if type(raw) is not dict:
        return None
    kind = raw.get("resourceType")
    if type(kind) is not str or kind not in NEEDS or raw.get("contained"):
        return None
    try:
        resource = _element(kind, raw)
    except (NotPlain, ValueError, OverflowError):
        return None
    if resource is None or lost_needs(kind, raw, raw):
        return None  # the full reader names what is missing, in its words
    return Reading(kind, raw_ref(raw), "read", resource)
