"""Identifiers for decisions and cards: UUID version 7 (RFC 9562 §5.7), time-ordered.

The decision log indexes these ids (decision and card primary keys, the hits' and orders'
references to them). Random version 4 ids land on a random B-tree leaf of each index at every
write; ids that grow with time land on the last leaf, which the previous write has just
touched, so a write dirties a few pages instead of one per index. On two SQLite writers over
a log of 20,000 decisions that cut the CPU of a decision write from 0.97-1.05 ms to 0.63-0.76 ms
(benchmarks/decision_ids.py). The 74 random bits keep ids unguessable and unique; the
first 48 bits are the creation time in milliseconds, which the card's receiver knows anyway.

The random bits come from the operating system's generator (``os.urandom``), read a block
at a time: a call makes about six ids, and one system call each was a tenth of the cost of
making its cards. A forked process (a gunicorn worker) drops the block it inherited, so two
workers never hand out the same bits.
"""

from __future__ import annotations

import os
import threading
import time

_RANDOM_BITS = 74  # 12 bits of rand_a + 62 bits of rand_b
_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_ID_BYTES = 10  # 80 bits read per id, the top 74 used
_BLOCK_IDS = 64


class _RandomBlock:
    """Bytes of ``os.urandom`` handed out in slices, each slice once; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._offset = 0

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._offset + size > len(self._block):
                self._block = os.urandom(size * _BLOCK_IDS)
                self._offset = 0
            start = self._offset
            self._offset += size
            return self._block[start : start + size]

    def forget(self) -> None:
        """After a fork: the parent's bytes must not be used again by the child."""
        self._lock = threading.Lock()
        self._block = b""
        self._offset = 0


_RANDOM = _RandomBlock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_RANDOM.forget)


def time_ordered_uuid() -> str:
    """A new UUIDv7 as its canonical string: 48-bit Unix milliseconds, version, 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(_RANDOM.take(_ID_BYTES), "big") >> (8 * _ID_BYTES - _RANDOM_BITS)
    value = (millis << 80) | _VERSION_7 | ((rand >> 62) << 64) | _VARIANT_RFC | (rand & ((1 << 62) - 1))
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
