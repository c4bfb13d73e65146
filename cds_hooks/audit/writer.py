"""The statements of a decision write, prepared once per process.

Every hook call writes the same few statements, and through SQLAlchemy Core each call paid
again for cache keys, compiled-cache lookups and parameter construction, and on PostgreSQL
for one round trip per table (benchmarks/decision_write.py). Here:

* SQLite: each table's INSERT is the one Core would compile, run through the driver, values
  passing through the columns' binds (`sqlite_direct`), so they are stored exactly as Core
  stores them, without loading SQLAlchemy.
* PostgreSQL: the whole decision is one statement, one INSERT per table in data-modifying
  CTEs, each reading its rows from one JSON parameter (``json_populate_recordset``); the
  foreign keys are checked at the end of the statement, when the decision row is there.

PostgreSQL's statement goes through `exec_driver_sql` (SQLAlchemy's error wrapping and
disconnect handling); SQLite's inserts go to the driver's cursor, errors wrapped alike.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from . import journal as decision_journal
from .records import utc_for_log
from .sqlite_direct import BINDS, Bind, InsertPlan, insert_plan
from .sqlite_lock import begin_immediate
from .writer_connection import WriterConnections

if TYPE_CHECKING:
    from sqlalchemy import Connection

log = logging.getLogger("cds_hooks.audit")

# Insert order: the decision first (its children reference it), then the children.
TABLES: tuple[str, ...] = ("decision", "decision_order", "card", "rule_hit")


class DecisionWriter:
    """Writes one decision's rows (as built by the store) on a connection; thread-safe."""

    def __init__(self, dialect_name: str, lock_wait_s: float = 30.0) -> None:
        self._lock_wait_s = lock_wait_s  # SQLite: the connections' busy timeout (`sqlite_lock`)
        self._pg_statement = _pg_statement() if dialect_name == "postgresql" else ""
        # (table, columns) -> its INSERT. Racing threads build the same plan; either copy is kept.
        self._plans: dict[tuple[str, tuple[str, ...]], InsertPlan] = {}

    def write(self, conn: Connection, rows: Mapping[str, Any]) -> None:
        """Insert ``rows["decision"]`` and its ``decision_order``, ``card`` and ``rule_hit``
        rows, in the caller's transaction."""
        if self._pg_statement:
            params = tuple(
                json.dumps(rows[table], default=_json_default, allow_nan=False, separators=(",", ":"))
                for table in TABLES
            )
            conn.exec_driver_sql(self._pg_statement, params)
            return
        driver = conn.connection.dbapi_connection
        assert driver is not None
        try:
            self._insert_parts(driver, self._sqlite_parts(rows))
        except sqlite3.Error as exc:  # raised as Core raises driver errors
            raise core_error(exc) from exc

    def write_sqlite_transaction(
        self,
        connections: WriterConnections,
        rows: Mapping[str, Any],
        *,
        journal: bool = True,
        first: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """SQLite: append the decision to the journal (`journal.py`) in a transaction of its
        own, on this thread's writer connection (`writer_connection`), without Core's
        transaction bookkeeping (a fifth of the write's cost); every `journal.FILE_EVERY`
        rows, file the journal into the tables.

        With ``journal=False``, or when JSON cannot keep the decision's values exactly, it goes
        into the tables directly (after the journal's pending rows), so their constraints are
        checked before this returns. ``first`` runs in the same transaction, before the
        decision (storing its evaluation set)."""
        try:
            with connections.writing() as driver:
                parts = self._sqlite_parts(rows)
                body = decision_journal.encode(parts) if journal else None
                if body is None:
                    self.file_pending(driver, connections.begin)
                seq = 0
                try:
                    connections.begin(driver)  # writers take the lock up front, as the store's do
                    if first is not None:
                        first(driver)
                    if body is not None:
                        seq = decision_journal.append(driver, body)
                    else:
                        self._insert_parts(driver, parts)
                    driver.execute("COMMIT")
                except BaseException:
                    if driver.in_transaction:
                        driver.execute("ROLLBACK")
                    raise
                if seq and seq % decision_journal.FILE_EVERY == 0:
                    self._file_after_write(driver, connections.begin)
                connections.committed()
        except sqlite3.Error as exc:
            raise core_error(exc) from exc

    def file_pending(self, driver: Any, begin: Callable[[Any], None] | None = None) -> int:
        """File the journal's pending decisions into the tables (SQLite); how many. With none
        pending it takes no lock. ``begin`` takes the write lock; by default
        `sqlite_lock.begin_immediate` with this writer's wait."""
        if not decision_journal.anything_pending(driver):
            return 0
        return decision_journal.file_pending(driver, self._executemany, begin or self._begin_immediate)

    def _begin_immediate(self, driver: Any) -> None:
        begin_immediate(driver, self._lock_wait_s)

    def _file_after_write(self, driver: Any, begin: Callable[[Any], None]) -> None:
        """A writer's filing: the call's decision is committed already, so a failure here is
        logged and left to the next filing, never raised into the call."""
        try:
            self.file_pending(driver, begin)
        except sqlite3.Error as exc:
            log.warning("decision journal not filed yet (%s); the next write or read retries", type(exc).__name__)

    def _insert_parts(self, driver: Any, parts: Sequence[decision_journal.TablePart]) -> None:
        """Insert a decision's rows, table by table in `TABLES` order."""
        for index, part in enumerate(parts):
            if part is not None:
                self._executemany(driver, index, *part)

    def _sqlite_parts(self, rows: Mapping[str, Any]) -> list[decision_journal.TablePart]:
        """Per table of `TABLES`: (columns, one parameter tuple per row) as bound, or None."""
        parts: list[decision_journal.TablePart] = []
        for table in TABLES:
            batch = [rows["decision"]] if table == "decision" else rows[table]
            if not batch:
                parts.append(None)
                continue
            plan = self._plan(table, tuple(batch[0]))
            binds = plan.binds
            parts.append(
                (plan.order, [tuple([row[k] if bind is None else bind(row[k]) for k, bind in binds]) for row in batch])
            )
        return parts

    def _plan(self, table: str, keys: tuple[str, ...]) -> InsertPlan:
        plan = self._plans.get((table, keys))
        if plan is None:
            plan = insert_plan(table, keys, _WRITER_BINDS)
            # Under its columns as given and as bound: a filing looks it up by the journal's order.
            self._plans[(table, keys)] = self._plans[(table, plan.order)] = plan
        return plan

    def _executemany(self, driver: Any, index: int, columns: Sequence[str], params: Sequence[Sequence[Any]]) -> None:
        # Straight to the driver's cursor: Core's per-statement bookkeeping cost more than the
        # inserts (benchmarks/decision_write.py).
        sql = self._plan(TABLES[index], tuple(columns)).sql
        cursor = driver.cursor()
        try:
            cursor.executemany(sql, params)
        finally:
            cursor.close()


def core_error(exc: sqlite3.Error) -> Exception:
    """A driver error of our own SQLite calls as SQLAlchemy Core raises driver errors
    (parameters hidden), so callers handle one kind of error on every path. SQLAlchemy is
    loaded for it: a failed write is rare, and its error must read like every other."""
    from .core import core_error as wrapped

    return wrapped(exc)


def _pg_statement() -> str:
    """``WITH decision AS (INSERT ...), decision_order AS (INSERT ...), ... SELECT 1``.

    Rows with serial ids are inserted in list order (WITH ORDINALITY), as an executemany
    would, since readers order hits and orders by id."""
    from .models import metadata

    parts = []
    for n, table in enumerate((metadata.tables[name] for name in TABLES), start=1):
        columns = ", ".join(c.name for c in table.columns if not (c.primary_key and c.autoincrement is True))
        if table.name == "decision":
            source = f"json_populate_record(NULL::{table.name}, %s::json)"
            parts.append(f"w{n} AS (INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {source})")
            continue
        source = f"json_populate_recordset(NULL::{table.name}, %s::json) WITH ORDINALITY AS r"
        parts.append(
            f"w{n} AS (INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {source} ORDER BY r.ordinality)"
        )
    return "WITH " + ", ".join(parts) + " SELECT 1"


def _json_default(value: Any) -> Any:
    """Timestamps as UTCDateTime stores them: aware, in UTC."""
    if isinstance(value, datetime):
        return utc_for_log(value).isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in the decision log")


# orjson refuses what the standard encoder would refuse or write differently (datetimes,
# dataclasses, subclasses of str/int/dict/list, non-string keys): those go the column's way,
# and the store's patient-id scrub walks them instead of trusting their JSON text.
ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _fast_json(bind: Bind) -> Bind:
    """A JSON column's bind processor with orjson for plain dicts and lists (a decision has
    about twenty such values; the standard encoder was a tenth of the write). The text
    differs only in spacing and in keeping non-ASCII characters as they are; both read back
    to the same value. NaN and infinities, which orjson would write as null, go the column's
    way too."""

    def process(value: Any) -> Any:
        if type(value) is dict or type(value) is list:
            try:
                text = orjson.dumps(value, option=ORJSON_STRICT).decode()
            except TypeError:
                return bind(value)
            if "null" in text and _has_non_finite(value):
                return bind(value)
            return text
        return bind(value)

    return process


def _has_non_finite(value: Any) -> bool:
    if type(value) is float:
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    return False


def _json_bind(kind: str) -> Bind:
    bind = BINDS[kind]
    assert bind is not None
    return _fast_json(bind)


# The columns' binds, JSON through orjson where it writes what the standard encoder would.
_WRITER_BINDS: dict[str, Bind | None] = {
    **BINDS,
    "json": _json_bind("json"),
    "json_or_null": _json_bind("json_or_null"),
}
