"""Reading codes and text out of parsed FHIR elements, whatever shape they arrived in.

Facts and order detection both need "every coding of this CodeableConcept" and "all the
human text about it"; real clients send empty codings, text-only concepts and lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .terminology import ValueSet, normalise_system


def codings(concept: Any) -> Iterator[tuple[str, str, str | None]]:
    """(system, code, display) for every coding with a code in a CodeableConcept or list."""
    if concept is None:
        return
    if isinstance(concept, (list, tuple)):
        for item in concept:
            yield from codings(item)
        return
    for coding in getattr(concept, "coding", None) or ():
        code = getattr(coding, "code", None)
        if code:
            yield normalise_system(getattr(coding, "system", None)), str(code), getattr(coding, "display", None)


def texts(concept: Any) -> list[str]:
    """concept.text and every coding display: the words a clinician sees."""
    if concept is None:
        return []
    if isinstance(concept, (list, tuple)):
        return [t for item in concept for t in texts(item)]
    out = [str(concept.text)] if getattr(concept, "text", None) else []
    out.extend(str(c.display) for c in getattr(concept, "coding", None) or () if getattr(c, "display", None))
    return out


def in_set(concept: Any, value_set: ValueSet, *, with_text: bool = False) -> bool:
    """True if any coding of the concept is in the value set (or, optionally, its text matches)."""
    if any(value_set.has_code(system, code) for system, code, _ in codings(concept)):
        return True
    return with_text and any(value_set.matches_text(t) for t in texts(concept))


def first_code(concept: Any, value_set: ValueSet) -> tuple[str, str, str | None] | None:
    """The first coding of the concept that is in the value set."""
    for system, code, display in codings(concept):
        if value_set.has_code(system, code):
            return system, code, display
    return None


def label(concept: Any, fallback: str = "unnamed") -> str:
    """A short human label: text, else the first display, else the first code."""
    if concept is None:
        return fallback
    if isinstance(concept, (list, tuple)):
        return label(concept[0], fallback) if concept else fallback
    if getattr(concept, "text", None):
        return str(concept.text)
    for coding in getattr(concept, "coding", None) or ():
        if getattr(coding, "display", None):
            return str(coding.display)
    for _system, code, _ in codings(concept):
        return code
    return fallback


def status_code(concept: Any) -> str | None:
    """The code of a status CodeableConcept (clinicalStatus, verificationStatus)."""
    for _system, code, _ in codings(concept):
        return code
    return None


def joined_text(parts: Iterable[str | None]) -> str:
    return " | ".join(p for p in parts if p)
