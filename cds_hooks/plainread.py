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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import orjson

from .lenient import NEEDS, Reading, present, raw_ref
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


# Every memo of text values that passed a check (see _pattern), so that they can be dropped.
_KNOWN_TEXT: list[set[str]] = []


def forget_known_text() -> None:
    """Drop the remembered text values and elements. After a large record they are strings
    of its JSON, scattered over the memory pools the record filled, and a few thousand of them
    keep Python from handing back tens of megabytes (tests/test_memory_release.py); the memos
    fill again from the next calls."""
    for known in _KNOWN_TEXT:
        known.clear()
    _KNOWN_ELEMENTS.clear()


def _pattern(pattern: re.Pattern[str], known_limit: int = 10_000) -> Callable[[Any], str]:
    """The check of a text type, remembering the values that passed: a record repeats the same
    codes, systems and displays hundreds of times (dates, nearly all distinct, are not kept)."""
    known: set[str] = set()
    _KNOWN_TEXT.append(known)

    def check(value: Any) -> str:
        if type(value) is not str:
            raise NotPlain
        if value not in known:
            _text(pattern, value)
            if len(known) >= known_limit:
                known.clear()
            known.add(value)
        return value

    return check


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


def _integer(low: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if type(value) is not int or value < low or value not in _INT32:
            raise NotPlain
        return value

    return check


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise NotPlain
    return value


PRIMITIVE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "Boolean": _boolean,
    "Code": _pattern(_CODE),
    "Date": _date,
    "DateTime": _date_time,
    "Decimal": _decimal,
    "Id": _pattern(_ID),
    "Instant": _instant,
    "Integer": _integer(-(2**31)),
    "Markdown": _pattern(_STRING),
    "PositiveInt": _integer(1),
    "String": _pattern(_STRING),
    "UnsignedInt": _integer(0),
    "Uri": _pattern(_URI),
}


def _has_content(value: Any) -> bool:
    """False for what the full reader prunes away (null, "", [], {} and containers of only those)."""
    if type(value) is dict:
        return any(_has_content(v) for v in value.values())
    if type(value) is list:
        return any(_has_content(v) for v in value)
    return value is not None and value != ""


def _contained(_value: Any) -> Any:
    raise NotPlain  # a contained resource: the full reader models it


@dataclass(frozen=True)
class _Table:
    """One type's reading plan: per JSON key, how to read it (None: count its content only,
    for a choice group), whether it is a list and its choice group."""

    cls: type[PlainElement]
    readers: dict[str, tuple[Callable[[Any], Any] | None, bool, int | None]]
    unread: frozenset[str]
    required_read: tuple[str, ...]
    required_unread: tuple[str, ...]
    is_resource: bool


# Elements a record repeats nearly verbatim: codes (and the clinical and verification status
# of every Condition), the subject reference, meta tags. Read once per distinct JSON text, they
# are shared by every resource that holds them; nothing modifies a resource once it is read.
SHARED_TYPES = frozenset({"CodeableConcept", "Meta", "Reference"})
_KNOWN_ELEMENTS: dict[tuple[str, bytes], PlainElement | None] = {}
_KNOWN_ELEMENTS_LIMIT = 4_096
_UNKNOWN = PlainElement()  # not in the memo (None is a remembered answer: an empty element)


def _shared_element(type_name: str, raw: Any) -> PlainElement | None:
    """`_element`, remembered by the element's JSON text (which costs a tenth of reading it)."""
    if type(raw) is not dict:
        raise NotPlain
    try:
        key = (type_name, orjson.dumps(raw))
    except TypeError:  # not JSON orjson writes (an integer beyond 64 bits): read it every time
        return _element(type_name, raw)
    # One look-up, not `in` then `[]`: another thread (a gthread worker's other requests, or the
    # memory release's idle timer) may empty the memo between the two.
    known = _KNOWN_ELEMENTS.get(key, _UNKNOWN)
    if known is not _UNKNOWN:
        return known
    element = _element(type_name, raw)  # NotPlain is not remembered: the full reader decides
    if len(_KNOWN_ELEMENTS) >= _KNOWN_ELEMENTS_LIMIT:
        _KNOWN_ELEMENTS.clear()
    _KNOWN_ELEMENTS[key] = element
    return element


def _table(type_name: str) -> _Table:
    group_of = {variant: i for i, group in enumerate(CHOICES[type_name]) for variant in group}
    readers: dict[str, tuple[Callable[[Any], Any] | None, bool, int | None]] = {}
    for name, (kind, is_list) in FIELDS[type_name].items():
        if kind in PRIMITIVE_CHECKS:
            read: Callable[[Any], Any] = PRIMITIVE_CHECKS[kind]
        elif kind == "Resource":
            read = _contained
        else:
            read = partial(_shared_element if kind in SHARED_TYPES else _element, kind)
        readers[name] = (read, is_list, group_of.get(name))
    for name in UNREAD[type_name]:
        if name in group_of:
            readers[name] = (None, False, group_of[name])
    required = REQUIRED[type_name]
    return _Table(
        _plain_class(type_name),
        readers,
        frozenset(UNREAD[type_name]),
        tuple(n for n in required if n in FIELDS[type_name]),
        tuple(n for n in required if n not in FIELDS[type_name]),
        type_name in NEEDS,
    )


def _element(type_name: str, raw: Any) -> PlainElement | None:
    """A plain object for one complex element, None when it holds nothing or lacks a required
    element (the full reader drops such an element; a resource lacking one is its to read)."""
    if type(raw) is not dict:
        raise NotPlain
    table = _TABLES[type_name]
    readers = table.readers
    element = table.cls()
    present = element.__dict__
    groups = 0
    for key, value in raw.items():
        reader = readers.get(key)
        if reader is None:
            if key[:1] == "_":
                raise NotPlain  # a primitive's extension (e.g. data-absent-reason)
            continue  # not read (its content is looked at below, if it matters)
        read, is_list, group = reader
        if value is None or value == "":
            continue
        if read is None:  # an unread variant of a choice element
            if not _has_content(value):
                continue
        elif is_list:
            if type(value) is not list:
                raise NotPlain
            items = [one for one in map(read, value) if one is not None]
            if not items:
                continue
            present[key] = items
        else:
            if type(value) is list:
                raise NotPlain
            one = read(value)
            if one is None:
                continue
            present[key] = one
        if group is not None:
            if groups >> group & 1:
                raise NotPlain  # two values for one choice element
            groups |= 1 << group
    if not present and not any(k in table.unread and _has_content(v) for k, v in raw.items()):
        return None
    if not table.required_read and not table.required_unread:
        return element
    lacking = any(name not in present for name in table.required_read) or any(
        not _has_content(raw.get(name)) for name in table.required_unread
    )
    if lacking and table.is_resource:
        raise NotPlain  # the full reader puts in a placeholder or names the resource
    return None if lacking else element  # the full reader drops an element lacking a required one


_TABLES = {name: _table(name) for name in FIELDS}


_NEED_PLANS = {kind: tuple((n.fields, n.what, n.required) for n in needs) for kind, needs in NEEDS.items()}


def _lacks_a_need(kind: str, raw: dict[str, Any]) -> bool:
    """``lenient._lost_needs(kind, raw, raw)`` is not empty (the same test, without its words)."""
    for fields, what, required in _NEED_PLANS[kind]:
        had = False
        for name in fields:
            value = raw.get(name)
            if value is None or value == "" or value == [] or value == {}:
                continue
            if present(value, what):
                break
            had = True
        else:
            if had or required:
                return True
    return False


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
    if resource is None or _lacks_a_need(kind, raw):
        return None  # the full reader names what is missing, in its words
    return Reading(kind, raw_ref(raw), "read", resource)
