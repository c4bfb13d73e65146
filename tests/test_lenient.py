"""The lenient reader (cds_hooks/lenient.py): strict R4B when valid, repaired when the needed
fields survive, skipped with the reason otherwise; never raises; documented in rules/README.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_hooks.lenient import NEEDS, date_candidates, needed_fields, read_resource

from .conftest import RULES_DIR

OBS = {
    "resourceType": "Observation",
    "id": "o",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
    "effectiveDateTime": "2026-11-10T10:00:00Z",
    "valueQuantity": {"value": 7, "unit": "g/dL"},
}


@pytest.mark.parametrize(
    "text, first",
    [
        ("2026-11-10T10:00:00", "2026-11-10T10:00:00Z"),
        ("2026-11-10T10:00", "2026-11-10T10:00:00Z"),
        ("2026-11-10 10:00:00", "2026-11-10T10:00:00Z"),
        ("2026-11-10T10:00:00+0100", "2026-11-10T10:00:00+01:00"),
        ("2026-11-10T10:00:00-05", "2026-11-10T10:00:00-05:00"),
        ("2023-08-01T16: 09: 08.000Z", "2023-08-01T16:09:08.000Z"),
        ("20261110", "2026-11-10"),
        ("2026-11", "2026-11"),
    ],
)
def test_date_candidates_put_the_most_faithful_reading_first(text: str, first: str) -> None:
    assert date_candidates(text)[0] == first


def test_no_date_is_made_up_from_words() -> None:
    assert date_candidates("yesterday") == [] and date_candidates("10/11/2026") == []


def test_a_valid_resource_is_read_strictly() -> None:
    reading = read_resource(OBS)
    assert reading.state == "read" and reading.notes == [] and reading.ref == "Observation/o"


def test_a_datetime_without_offset_is_read_as_utc_and_the_repair_is_said() -> None:
    reading = read_resource(OBS | {"effectiveDateTime": "2026-11-10T10:00:00"})
    assert reading.state == "lenient" and reading.resource is not None
    assert reading.resource.effectiveDateTime == datetime(2026, 11, 10, 10, tzinfo=UTC)
    assert reading.notes == ["effectiveDateTime has no time-zone offset (read as UTC)"]


def test_an_element_the_rules_do_not_read_is_dropped_and_the_rest_is_kept() -> None:
    reading = read_resource(OBS | {"note": "free text", "bodySite": 7})
    assert reading.state == "lenient" and reading.resource is not None
    assert reading.resource.valueQuantity.value == 7 and reading.resource.bodySite is None
    assert any("bodySite" in note for note in reading.notes)


@pytest.mark.parametrize(
    "change, why",
    [
        ({"effectiveDateTime": "last week"}, "its date (effectiveDateTime) could not be read"),
        ({"code": 12}, "its code (code) could not be read"),
        ({"code": {"coding": [{"system": "http://loinc.org"}]}}, "its code (code) could not be read"),
        ({"status": None}, "it has no status (status)"),
    ],
)
def test_a_resource_whose_needed_field_cannot_be_read_is_skipped_with_the_reason(
    change: dict[str, Any], why: str
) -> None:
    reading = read_resource(OBS | change)
    assert reading.state == "skipped" and reading.resource is None and reading.why == why


def test_needed_fields_answer_from_raw_json_alone() -> None:
    assert needed_fields(OBS) == {"code": OBS["code"], "status": "final", "effectiveDateTime": OBS["effectiveDateTime"]}
    assert needed_fields({"resourceType": "Basic"}) == {}


def test_the_readme_documents_the_fields_each_type_must_yield() -> None:
    text = (RULES_DIR / "README.md").read_text(encoding="utf-8")
    section = text.split("## Fields read from the record", 1)[1]
    for kind, needs in NEEDS.items():
        row = next((line for line in section.splitlines() if line.startswith(f"| {kind} |")), None)
        assert row is not None, kind
        for need in needs:
            for name in need.fields:
                assert re.search(rf"\b{name}\b", row), (kind, name)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(sorted(NEEDS)),
    extra=st.dictionaries(
        st.sampled_from(
            [
                "code",
                "status",
                "effectiveDateTime",
                "onsetDateTime",
                "subject",
                "component",
                "clinicalStatus",
                "medicationReference",
                "medicationCodeableConcept",
                "authoredOn",
                "meta",
                "contained",
                "hasMember",
                "note",
                "foo",
            ]
        ),
        _json,
        max_size=6,
    ),
)
def test_reading_never_raises_and_always_says_what_happened(kind: str, extra: dict[str, Any]) -> None:
    reading = read_resource({"resourceType": kind, "id": "x", **extra})
    assert reading.state in ("read", "lenient", "skipped")
    assert (reading.resource is None) == (reading.state == "skipped")
    if reading.state == "skipped":
        assert reading.why
