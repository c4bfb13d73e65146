"""The MD-INCOMPLETE card says why each part of the record is missing, in clinician words."""

from __future__ import annotations

import pytest

from cds_hooks.cards import incomplete_card
from cds_hooks.cards.gap_words import reason_in_words


@pytest.mark.parametrize(
    ("why", "words"),
    [
        ("a link leads away from the FHIR server's origin; not followed", "leads away from the FHIR server"),
        ("the FHIR server did not answer within the time budget", "did not answer in time"),
        (
            "further pages could not be fetched: the time budget for FHIR server queries ran out",
            "did not answer in time",
        ),
        ("the FHIR server answered HTTP 503", "answered with an error (HTTP 503)"),
        ("the FHIR server's answer is larger than 1048576 bytes", "too large to read"),
        ("the FHIR server's address is refused (a loopback or private address)", "not one the service may contact"),
        ("not provided in prefetch and no FHIR server to ask", "not sent with the order"),
        ("something nobody foresaw", "could not be obtained"),
    ],
)
def test_each_fetch_failure_is_said_in_clinician_words(why: str, words: str) -> None:
    assert words in reason_in_words(why)


def test_the_card_names_each_part_once_with_its_reasons_and_keeps_the_evidence() -> None:
    card = incomplete_card(
        {
            "observations": "the FHIR server answered HTTP 500",
            "observationsByCode": "a link leads away from the FHIR server's origin; not followed",
            "Device/d1": "skipped: its code (type) could not be read",
        }
    )
    shown, evidence = card["detail"].split("<details>", 1)
    assert shown.count("**observations (vital signs and results)**") == 1
    assert "answered with an error (HTTP 500); the record system pointed the next page" in shown
    assert "**devices and implants**: an entry could not be read." in shown
    assert "Device/d1: skipped: its code (type) could not be read" in evidence
    assert "FHIR server" not in shown.replace("leads away from the FHIR server", "")
