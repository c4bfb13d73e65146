"""The decision log on a SQLite file without SQLAlchemy: the serving path's statements.

Why: SQLAlchemy costs each process about 15 MB and a fifth of a second to import, and a
warm hook call used three of its functions (the columns' bind processors). So a serving
process on a SQLite file opens its connections, checks or creates the schema, stores
evaluation sets, writes decisions and reads what the no-nagging look-up needs here, through
the driver, with the DDL and bind kinds Core would use (`sqlite_schema`, derived from the
models and checked against them by the tests). Feedback, analytics, the console, purges and
migrations of an older schema still go through Core (`core`); they load it when first used.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from .records import utc_for_log
from .sqlite_lock import retry_while_busy
from .sqlite_schema import COLUMNS, CREATE

VERSION_TABLE = "alembic_version"
Bind = Callable[[Any], Any]


# -- URLs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqliteFile:
    """A ``sqlite:///path`` URL this module can open itself (no query options, no host)."""

    path: str


def sqlite_file(url: str) -> SqliteFile | None:
    """The file of a plain file-backed SQLite URL, as SQLAlchemy reads it; None for anything
    else (in-memory, query options, other databases), which goes through SQLAlchemy."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("sqlite", "sqlite+pysqlite") or "?" in rest or not rest.startswith("/"):
        return None
    path = unquote(rest[1:])
    if path in ("", ":memory:"):
        return None
    return SqliteFile(path)


def backend_name(url: str) -> str:
    """``sqlite``, ``postgresql`` ... from a database URL's scheme, as SQLAlchemy names it."""
    name = url.partition(":")[0].partition("+")[0].lower()
    return "postgresql" if name == "postgres" else name


# -- connections -----------------------------------------------------------------------------


def configure(driver: sqlite3.Connection, busy_ms: int) -> None:
    """Every connection to the log, through SQLAlchemy's pool or not.

    WAL lets readers run beside the writer; busy_timeout makes writers queue, not fail.
    synchronous=NORMAL (in WAL mode) skips the fsync at each commit, about half the cost of a
    decision write (benchmarks/decision_write.py). A committed decision still survives a
    killed process (SIGKILL, OOM): the WAL is in the operating system's hands once written.
    Only an OS crash or power loss can lose the last commits; a site that must survive those
    runs PostgreSQL, whose synchronous_commit stays on.

    Turning a new file to WAL takes an exclusive lock, and SQLite refuses a connection that
    races another's first switch at once ("database is locked", its busy handler not asked):
    two processes starting on one new log. The switch is tried again within ``busy_ms``."""
    driver.isolation_level = None  # transactions are begun explicitly (BEGIN IMMEDIATE)
    cursor = driver.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        retry_while_busy(driver, "PRAGMA journal_mode = WAL", busy_ms / 1000)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def connect(target: SqliteFile, timeout_s: float) -> sqlite3.Connection:
    """A connection opened as the SQLAlchemy engine opens its own (`core.build_engine`)."""
    driver = sqlite3.connect(target.path, timeout=timeout_s, check_same_thread=False)
    try:
        configure(driver, int(timeout_s * 1000))
    except BaseException:
        driver.close()
        raise
    return driver


# -- values as Core binds them ---------------------------------------------------------------


def _utc_datetime(value: datetime | None) -> str | None:
    """`models.UTCDateTime` on SQLite: aware only, turned to UTC, stored as SQLAlchemy's
    DATETIME text (no offset)."""
    if value is None:
        return None
    value = utc_for_log(value)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


def _json(value: Any) -> str:
    return json.dumps(value)


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _boolean(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _binary(value: Any) -> Any:
    return None if value is None else sqlite3.Binary(value)


# Kind (as `sqlite_schema.COLUMNS` names it) -> the bind; None where the value goes as it is.
BINDS: dict[str, Bind | None] = {
    "value": None,
    "utc_datetime": _utc_datetime,
    "json": _json,
    "json_or_null": _json_or_null,
    "float": _float,
    "boolean": _boolean,
    "binary": _binary,
}


@dataclass(frozen=True)
class InsertPlan:
    """One table's INSERT for one set of columns: its SQL, the columns in parameter order
    (table order, as Core compiles them) and each column's bind (None: bound as it is)."""

    sql: str
    order: tuple[str, ...]
    binds: tuple[tuple[str, Bind | None], ...]


def insert_plan(table: str, keys: Iterable[str], binds: Mapping[str, Bind | None] = BINDS) -> InsertPlan:
    """``INSERT INTO table (...) VALUES (?, ...)`` for ``keys``, in the table's column order;
    ``binds`` may replace a kind's bind (the writer's faster JSON)."""
    wanted = set(keys)
    columns = COLUMNS[table]
    unknown = wanted - {name for name, _ in columns}
    if unknown:
        raise KeyError(f"table {table} has no column {sorted(unknown)[0]}")
    chosen = tuple((name, binds[kind]) for name, kind in columns if name in wanted)
    order = tuple(name for name, _ in chosen)
    sql = f"INSERT INTO {table} ({', '.join(order)}) VALUES ({', '.join('?' * len(order))})"
    return InsertPlan(sql, order, chosen)


def bound(table: str, column: str, value: Any) -> Any:
    """One value as Core would bind it into ``table.column`` (look-up parameters)."""
    bind = BINDS[dict(COLUMNS[table])[column]]
    return value if bind is None else bind(value)


# -- schema ------------------------------------------------------------------------------------


def stored_revisions(driver: sqlite3.Connection) -> frozenset[str] | None:
    """The schema revisions recorded in the log; None when it has no version table."""
    found = driver.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,))
    if found.fetchone() is None:
        return None
    return frozenset(str(row[0]) for row in driver.execute(f"SELECT version_num FROM {VERSION_TABLE}"))


def create_if_empty(driver: sqlite3.Connection, head: str, begin: Callable[[sqlite3.Connection], None]) -> bool:
    """Create the newest schema and stamp ``head`` when the database has no table at all;
    True when it did. ``begin`` takes the write lock, so of two processes starting together
    one creates and the other finds the tables (then the caller's check decides)."""
    begin(driver)
    try:
        if driver.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1").fetchone() is not None:
            driver.execute("ROLLBACK")
            return False
        for statement in CREATE:
            driver.execute(statement)
        driver.execute(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (?)", (head,))
        driver.execute("COMMIT")
    except BaseException:
        if driver.in_transaction:
            driver.execute("ROLLBACK")
        raise
    return True


# -- the serving path's small statements -------------------------------------------------------


def store_evaluation_set(driver: sqlite3.Connection, key: str, pairs: Sequence[tuple[str, str]]) -> None:
    """Insert a set and its members unless the set is there, in the caller's transaction."""
    added = driver.execute("INSERT INTO evaluation_set (set_key) VALUES (?) ON CONFLICT (set_key) DO NOTHING", (key,))
    if added.rowcount == 1:
        driver.executemany(
            "INSERT INTO evaluation_set_member (set_key, rule_id, rule_version) VALUES (?, ?, ?)",
            [(key, rule_id, version) for rule_id, version in pairs],
        )


def keep_meta(driver: sqlite3.Connection, name: str, value: str) -> str:
    """The value stored under ``name`` in ``store_meta``, storing ``value`` when there is none;
    in the caller's (write) transaction."""
    driver.execute("INSERT INTO store_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, value))
    row = driver.execute("SELECT value FROM store_meta WHERE name = ?", (name,)).fetchone()
    return str(row[0])


__all__ = [
    "BINDS",
    "VERSION_TABLE",
    "InsertPlan",
    "SqliteFile",
    "backend_name",
    "bound",
    "configure",
    "connect",
    "create_if_empty",
    "insert_plan",
    "keep_meta",
    "sqlite_file",
    "store_evaluation_set",
    "stored_revisions",
]
