"""A second, independent engine on a test database: checks what is really stored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool


@contextmanager
def raw_engine(url: str) -> Iterator[Engine]:
    """An engine of its own (no pool kept), disposed on leaving."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
