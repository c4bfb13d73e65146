"""The statements of a decision write, prepared once per process.

Every hook call writes the same few statements, and through SQLAlchemy Core each call paid
again for cache keys, compiled-cache lookups and parameter construction, and on PostgreSQL
for one round trip per table (benchmarks/decision_write.py). Here:

* SQLite: each table's INSERT is compiled by SQLAlchemy once (so its SQL is what Core would
  send) and run through the driver, values passing through the columns' own bind processors,
  so they are stored exactly as Core stores them.
* PostgreSQL: the whole decision is one statement, one INSERT per table in data-modifying
  CTEs, each reading its rows from one JSON parameter (``json_populate_recordset``); the
  foreign keys are checked at the end of the statement, when the decision row is there.

PostgreSQL's statement goes through `exec_driver_sql` (SQLAlchemy's error wrapping and
disconnect handling); SQLite's inserts go to the driver's cursor, errors wrapped alike.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Dialect, Table, insert
from sqlalchemy.exc import DBAPIError

from .models import metadata

# Insert order: the decision first (its children reference it), then the children.
TABLES: tuple[Table, ...] = tuple(metadata.tables[name] for name in ("decision", "decision_order", "card", "rule_hit"))
_Processor = Callable[[Any], Any]


class DecisionWriter:
    """Writes one decision's rows (as built by the store) on a connection; thread-safe."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._pg_statement = _pg_statement() if dialect.name == "postgresql" else ""
        # (table, columns) -> (SQL, parameter order, bind processor per column). Racing
        # threads compile the same plan; either copy is kept.
        self._plans: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...], dict[str, _Processor]]] = {}

    def write(self, conn: Connection, rows: Mapping[str, Any]) -> None:
        """Insert ``rows["decision"]`` and its ``decision_order``, ``card`` and ``rule_hit``
        rows, in the caller's transaction."""
        if self._pg_statement:
            params = tuple(
                json.dumps(rows[table.name], default=_json_default, allow_nan=False, separators=(",", ":"))
                for table in TABLES
            )
            conn.exec_driver_sql(self._pg_statement, params)
            return
        for table in TABLES:
            batch = [rows["decision"]] if table.name == "decision" else rows[table.name]
            if batch:
                self._sqlite_insert(conn, table, batch)

    def _sqlite_insert(self, conn: Connection, table: Table, batch: Sequence[Mapping[str, Any]]) -> None:
        keys = tuple(batch[0])
        plan = self._plans.get((table.name, keys))
        if plan is None:
            compiled = insert(table).compile(dialect=self._dialect, column_keys=list(keys))
            processors = {key: _processor(table.c[key].type.dialect_impl(self._dialect), self._dialect) for key in keys}
            plan = (str(compiled), tuple(compiled.positiontup or ()), processors)
            self._plans[(table.name, keys)] = plan
        sql, order, processors = plan
        params = [tuple(processors[key](row[key]) for key in order) for row in batch]
        # Straight to the driver's cursor, inside the connection's transaction: Core's
        # per-statement bookkeeping cost more than the inserts (benchmarks/decision_write.py).
        # Its error wrapping is kept: a driver error is raised as Core would raise it.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, params)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error, hide_parameters=True) from exc
        finally:
            cursor.close()


def _pg_statement() -> str:
    """``WITH decision AS (INSERT ...), decision_order AS (INSERT ...), ... SELECT 1``.

    Rows with serial ids are inserted in list order (WITH ORDINALITY), as an executemany
    would, since readers order hits and orders by id."""
    parts = []
    for n, table in enumerate(TABLES, start=1):
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
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("audit timestamps must be timezone-aware")
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in the decision log")


def _processor(type_: Any, dialect: Dialect) -> _Processor:
    bind = type_.bind_processor(dialect)
    return bind if bind is not None else _same


def _same(value: Any) -> Any:
    return value
