"""Why part of the record is missing, in words a clinician can act on.

The record step names each gap with a technical reason (a failed FHIR query, a refused link,
a skipped resource). The MD-INCOMPLETE card must say *why* the part is missing, because the
remedy differs: a record system that did not answer in time may answer on a retry, a page that
pointed to another server never will, and an unreadable entry must be looked at in the chart.
"""

from __future__ import annotations

import re

# (pattern in the technical reason, what the clinician reads). First match wins.
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), words)
    for pattern, words in (
        (
            r"leads away from the FHIR server",
            "the record system pointed the next page of results to another server "
            "(it leads away from the FHIR server), so it was not fetched",
        ),
        (r"link of the FHIR server was refused", "the record system sent a link that is not safe to follow"),
        (r"time budget|did not answer within|ran out of time", "the record system did not answer in time"),
        (r"larger than \d+ bytes", "the record system's answer was too large to read"),
        (r"more than \d+ pages", "the record system returned more pages of results than are read"),
        (r"answered HTTP (\d{3})", r"the record system answered with an error (HTTP \1)"),
        (r"not JSON|not a FHIR resource", "the record system's answer could not be read"),
        (r"could not be reached|does not resolve|connection failed", "the record system could not be reached"),
        (r"address is refused", "the record system's address is not one the service may contact"),
        (r"the query failed", "the record system reported that the query failed"),
        (r"only the first page was sent", "only the first page of results was sent"),
        (r"not provided in prefetch", "it was not sent with the order"),
        (r"^skipped:", "an entry could not be read"),
        (r"not valid FHIR", "the order could not be read"),
    )
)


def reason_in_words(why: str) -> str:
    """The clinician's version of a gap's technical reason (generic when it is not recognised)."""
    for pattern, words in _REASONS:
        match = pattern.search(why)
        if match:
            return match.expand(words)
    return "it could not be obtained"


__all__ = ["reason_in_words"]
