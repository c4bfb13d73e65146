"""Decision and card ids: valid UUIDv7 strings whose order follows their creation time."""

from __future__ import annotations

import time
import uuid

import pytest

from cds_hooks.ids import time_ordered_uuid


def test_ids_are_canonical_version_7_uuids() -> None:
    text = time_ordered_uuid()
    parsed = uuid.UUID(text)
    assert str(parsed) == text
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_the_first_48_bits_are_the_creation_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    parsed = uuid.UUID(time_ordered_uuid())
    after = time.time_ns() // 1_000_000
    assert before <= parsed.int >> 80 <= after


def test_ids_of_later_milliseconds_sort_after_earlier_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(1_700_000_000_000_000_000, 1_700_000_000_100_000_000, 1_000_000))
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    ids = [time_ordered_uuid() for _ in range(50)]
    assert ids == sorted(ids)


def test_ids_within_one_millisecond_stay_unique_and_random(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000_000_000)
    ids = {time_ordered_uuid() for _ in range(10_000)}
    assert len(ids) == 10_000
    random_parts = {uuid.UUID(i).int & ((1 << 62) - 1) for i in ids}
    assert len(random_parts) == 10_000
