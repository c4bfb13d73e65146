"""FHIR date and time values read the catalogue's way.

FHIR allows partial dates ("2020", "2020-05"), dates and zoned date-times. The catalogue
reads a value without a time as 00:00 UTC, and compares look-back windows in elapsed
24-hour days, so everything here is converted to aware UTC datetimes first.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

# UCUM time units (Timing.periodUnit, Duration.code) in days; a month is 30 d, a year 365 d.
UNIT_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}
_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


def to_instant(value: Any) -> datetime | None:
    """An aware UTC datetime for a FHIR date/dateTime/instant (model value or string)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 has no UTC equivalent
            return None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        match = _PARTIAL.match(text)
        if match:
            year, month, day = (int(g) if g else 1 for g in match.groups())
            try:
                return datetime(year, month, day, tzinfo=UTC)
            except ValueError:
                return None
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return to_instant(parsed)
    return None


def written_date(value: Any) -> date | None:
    """The calendar date as written in the value (no time-zone shift): the CMS165 'BP day'."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        match = re.match(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?", value.strip())
        if match:
            year, month, day = (int(g) if g else 1 for g in match.groups())
            try:
                return date(year, month, day)
            except ValueError:
                return None
    return None


def days_between(earlier: datetime, later: datetime) -> float:
    """Elapsed days (fractional) from earlier to later; negative if 'earlier' is later."""
    return (later - earlier) / timedelta(days=1)


def age_in_years(birth: Any, now: datetime) -> int | None:
    """Completed years at ``now``."""
    born = written_date(birth)
    if born is None:
        return None
    today = now.date()
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return max(years, 0)


def utc_now() -> datetime:
    return datetime.now(UTC)
