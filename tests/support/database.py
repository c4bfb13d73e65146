"""A second, independent engine on a test database: checks what is really stored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.pool import NullPool


@contextmanager
def raw_engine(url: str) -> Iterator[Engine]:
    """An engine of its own (no pool kept), disposed on leaving."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def decisions_held(url: str) -> int:
    """Decisions the log holds, counted without the store: rows of ``decision`` and, on
    SQLite, hook calls' decisions still in the journal (``pending_decision``, not refused)."""
    with raw_engine(url) as engine, engine.connect() as conn:
        held = int(conn.execute(text("SELECT count(*) FROM decision")).scalar_one())
        if engine.dialect.name == "sqlite" and inspect(conn).has_table("pending_decision"):
            held += int(conn.execute(text("SELECT count(*) FROM pending_decision WHERE problem IS NULL")).scalar_one())
    return held
