"""Decision and card ids: valid UUIDv7 strings whose order follows their creation time."""

from __future__ import annotations

import os
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


def test_a_forked_child_does_not_reuse_the_random_bytes_its_parent_holds() -> None:
    """gunicorn forks its workers from a loaded app: a child handing out the bytes left in
    the parent's block would repeat the parent's next ids."""
    time_ordered_uuid()  # the parent now holds a block with unused bytes
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, back through the pipe
        try:
            os.write(write_end, ",".join(time_ordered_uuid() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child_ids = pipe.read().decode().split(",")
    os.waitpid(pid, 0)
    parent_ids = [time_ordered_uuid() for _ in range(5)]
    random_bits = {uuid.UUID(i).int & ((1 << 74) - 1) & ~(0b11 << 62) for i in [*child_ids, *parent_ids]}
    assert len(child_ids) == 5
    assert len(random_bits) == 10
