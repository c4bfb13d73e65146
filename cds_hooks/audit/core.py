"""The decision log's SQLAlchemy side: the engine, its connection and transaction hooks, and
the Core statements that differ by dialect.

Loaded by PostgreSQL stores at once and by SQLite stores only when something off the serving
path needs Core (feedback, analytics, the console, purges, an older schema's migration, an
in-memory database); the serving path on a SQLite file goes through `sqlite_direct`.
"""

from __future__ import annotations

import math
import os
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    insert,
    make_url,
)
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from . import sqlite_direct
from .models import EvaluationSet, EvaluationSetMember, Feedback, StoreMeta

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert

# Alembic's version table, as Alembic creates it (for stamping a database made by create_all).
VERSION = Table(
    sqlite_direct.VERSION_TABLE,
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{sqlite_direct.VERSION_TABLE}_pkc"),
)


def normalise_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        # Bare "postgresql://" means psycopg2 to SQLAlchemy; the project ships psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def build_engine(url: str, pool_size: int, timeout_s: float, file_pending: Callable[[Any], int] | None) -> Engine:
    """The store's engine. ``file_pending`` (SQLite) files the decision journal at the start of
    every transaction that reads decisions (`on_begin`)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() != "sqlite":
        # libpq's connect_timeout is whole seconds (minimum 2); the statement and lock timeouts
        # end server-side waits; a hung network is left to AuditStore.run_bounded.
        ms = int(timeout_s * 1000)
        pg_args: dict[str, Any] = {
            "connect_timeout": max(2, math.ceil(timeout_s)),
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": ms,
        }
        engine = create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=pool_size,
            pool_timeout=timeout_s,
            hide_parameters=True,
            connect_args=pg_args,
        )
    else:
        connect_args = {"check_same_thread": False, "timeout": timeout_s}
        # Every connection to ":memory:" is a new empty database, so share one there.
        memory = parsed.database in (None, "", ":memory:")
        pooling: dict[str, Any] = {"poolclass": StaticPool} if memory else {"pool_size": pool_size}
        if "pool_size" in pooling:
            pooling["pool_timeout"] = timeout_s
        engine = create_engine(parsed, connect_args=connect_args, hide_parameters=True, **pooling)
        event.listen(engine, "connect", partial(_on_connect, int(timeout_s * 1000)))
        if file_pending is not None:
            event.listen(engine, "begin", partial(_on_begin, file_pending))
    # A forked worker (gunicorn --preload) must never reuse the parent's connections: two
    # processes on one socket lose writes. SQLAlchemy's recipe for forked processes.
    os.register_at_fork(after_in_child=partial(_forget_inherited_connections, weakref.ref(engine)))
    return engine


def _forget_inherited_connections(engine_ref: weakref.ref[Engine]) -> None:
    engine = engine_ref()
    if engine is not None:
        engine.dispose(close=False)


def _on_connect(busy_ms: int, dbapi_connection: Any, _record: Any) -> None:
    sqlite_direct.configure(dbapi_connection, busy_ms)


def _on_begin(file_pending: Callable[[Any], int], conn: Connection) -> None:
    """Files the decision journal first (`journal.py`), so the transaction sees every decision
    written so far, unless it says it reads none (``audit_no_filing``: token replay checks,
    readiness pings). Writers take the lock up front: a deferred transaction that reads first
    and then writes can fail with SQLITE_BUSY at once instead of waiting out the busy timeout."""
    options = conn.get_execution_options()
    driver: Any = conn.connection.dbapi_connection
    if not options.get("audit_no_filing") and driver is not None:
        try:
            file_pending(driver)
        except sqlite3.Error as exc:  # a locked log: OperationalError, as Core raises it
            raise core_error(exc) from exc
    if options.get("audit_read_only"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def core_error(exc: sqlite3.Error) -> Exception:
    """A driver error of our own SQLite calls as SQLAlchemy Core raises driver errors
    (parameters hidden), so callers handle one kind of error on every path."""
    from sqlalchemy.exc import DBAPIError

    return DBAPIError.instance(None, None, exc, sqlite3.Error, hide_parameters=True)


# -- dialect-specific inserts ------------------------------------------------------------------


def dialect_insert(dialect_name: str, table: Any) -> PgInsert | SqliteInsert:
    """An INSERT of the dialect at hand, so that ON CONFLICT clauses can be added to it."""
    if dialect_name == "postgresql":
        # Imported here: SQLAlchemy's PostgreSQL dialect package loads every PostgreSQL driver
        # module it knows (~2 MB per process), which a SQLite deployment never needs.
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    return sqlite_insert(table)


def wrote_row(conn: Connection, stmt: PgInsert | SqliteInsert, key: Any) -> bool:
    """Run an INSERT ... ON CONFLICT; True when it inserted or updated a row."""
    if conn.dialect.insert_returning:
        # With RETURNING in play (implicit for the primary key) rowcount reads -1.
        return conn.execute(stmt.returning(key)).first() is not None
    return conn.execute(stmt).rowcount == 1


def insert_ignoring_duplicate_feedback(conn: Connection, row: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT (dedupe_key) DO NOTHING; True when a row was written."""
    stmt = dialect_insert(conn.dialect.name, Feedback).values(row)
    return wrote_row(conn, stmt.on_conflict_do_nothing(index_elements=["dedupe_key"]), Feedback.id)


def store_evaluation_set(conn: Connection, key: str, pairs: Sequence[tuple[str, str]]) -> None:
    """Insert the set and its members unless it is there. A concurrent writer of the same set
    makes the INSERT wait for its commit and then skip, so members are written once, whole."""
    stmt = dialect_insert(conn.dialect.name, EvaluationSet).values(set_key=key)
    if wrote_row(conn, stmt.on_conflict_do_nothing(index_elements=["set_key"]), EvaluationSet.set_key):
        conn.execute(
            insert(EvaluationSetMember),
            [{"set_key": key, "rule_id": rule_id, "rule_version": version} for rule_id, version in pairs],
        )


def keep_meta(conn: Connection, name: str, value: str) -> str:
    """The value stored under ``name`` in ``store_meta``, storing ``value`` when there is none."""
    from sqlalchemy import select

    stmt = dialect_insert(conn.dialect.name, StoreMeta).values(name=name, value=value)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
    return str(conn.execute(select(StoreMeta.value).where(StoreMeta.name == name)).scalar_one())


__all__ = [
    "VERSION",
    "build_engine",
    "core_error",
    "dialect_insert",
    "insert_ignoring_duplicate_feedback",
    "keep_meta",
    "normalise_url",
    "store_evaluation_set",
    "wrote_row",
]
