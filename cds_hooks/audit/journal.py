"""SQLite's decision write: one journal row per call, filed into the log's tables in batches.

Why: with two serving processes, the other process's commit empties a connection's page
cache, so a decision written straight into its four tables re-reads and re-writes about a
dozen B-tree pages (rows and indexes) per call. One row appended to ``pending_decision``
touches the end of one B-tree, and the tables are then filled for many decisions at once:
two writers of the typical decision spent 1.07-1.21 ms CPU per direct write, 0.81-0.92 ms
through the journal, filings included (`benchmarks/results/decision-journal.txt`).

What stays true:

* A call's decision is committed (in the journal) before its answer leaves, so a killed
  process loses nothing, as before.
* Nobody sees the log without its latest decisions: every transaction the store opens on
  SQLite files the pending rows first (`AuditStore`'s begin hook), so analytics, feedback,
  purges, no-nagging look-ups and migrations read complete tables. A writer files the journal
  itself every `FILE_EVERY` rows, so the journal stays short even with no reader.
* Filing is one transaction: rows are inserted in journal order (the serial ids of hits and
  orders keep call order) and deleted from the journal together. A row the tables refuse (it
  cannot happen with the store's own rows, but a log must not stall on one) is kept in the
  journal with the reason in ``problem``, logged, and the others are filed; a database that
  cannot be written (locked, full) leaves the journal as it is, for the next filing.

A row holds the INSERT parameters exactly as the direct write binds them (the columns' bind
processors already applied: timestamps and JSON as text), so a filed decision is
byte-for-byte the row the direct write stores. PostgreSQL writes each decision in one
statement already (`writer.py`) and does not use the journal.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from .sqlite_lock import is_busy

log = logging.getLogger("cds_hooks.audit")

TABLE = "pending_decision"
# Journal rows per filing by a writer (a reader files whatever is there). Filing 64 at a time
# was no faster on two cores and left each worker 2 MB larger after a large-body run.
FILE_EVERY = 16
# One table's part of a decision: its column names and one parameter tuple per row, or None.
TablePart = tuple[tuple[str, ...], list[tuple[Any, ...]]] | None
Inserter = Callable[[Any, int, tuple[str, ...], Sequence[tuple[Any, ...]]], None]

_APPEND = f"INSERT INTO {TABLE} (body) VALUES (?)"
_PENDING = f"SELECT seq, body FROM {TABLE} WHERE problem IS NULL ORDER BY seq"
_ANY_PENDING = f"SELECT 1 FROM {TABLE} WHERE problem IS NULL LIMIT 1"
_DELETE_FILED = f"DELETE FROM {TABLE} WHERE problem IS NULL AND seq <= ?"
_MARK_PROBLEM = f"UPDATE {TABLE} SET problem = ? WHERE seq = ?"


def encode(parts: Sequence[TablePart]) -> bytes | None:
    """The journal body of one decision; None when its values cannot be kept exactly in JSON
    (a non-finite float, an integer beyond 64 bits), and the caller writes the tables directly."""
    for part in parts:
        if part is not None:
            for row in part[1]:
                for value in row:
                    if type(value) is float and not math.isfinite(value):
                        return None
    try:
        return orjson.dumps(parts)
    except TypeError:
        return None


def append(driver: sqlite3.Connection, body: bytes) -> int:
    """Add one decision to the journal in the caller's transaction; its sequence number."""
    seq = driver.execute(_APPEND, (body,)).lastrowid
    assert seq is not None
    return seq


def anything_pending(driver: sqlite3.Connection) -> bool:
    """True when the journal holds rows to file (False before the journal's migration); also
    when a connection without a busy handler finds the database busy: the filing then waits
    for the write lock and looks again."""
    try:
        return driver.execute(_ANY_PENDING).fetchone() is not None
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False
        if is_busy(exc):
            return True
        raise


def file_pending(driver: sqlite3.Connection, insert: Inserter, begin: Callable[[sqlite3.Connection], None]) -> int:
    """Move every pending decision into the tables, in one transaction of its own; how many.

    ``insert(driver, table_index, columns, rows)`` inserts rows of one table, raising the
    driver's own errors. When the batch fails for a reason of its rows (a constraint, a body
    that cannot be read), the decisions are filed one at a time and the failing ones marked
    and left; when the database itself fails (locked, full, unreadable), nothing changes.
    ``begin(driver)`` takes the write lock (`sqlite_lock`)."""
    begin(driver)
    try:
        pending = driver.execute(_PENDING).fetchall()
        filed = 0
        if pending:
            driver.execute("SAVEPOINT file_batch")
            try:
                _insert_all(driver, insert, [orjson.loads(body) for _, body in pending])
                driver.execute("RELEASE file_batch")
                filed = len(pending)
            except sqlite3.OperationalError:
                raise
            except Exception:
                driver.execute("ROLLBACK TO file_batch")
                driver.execute("RELEASE file_batch")
                filed = _file_one_by_one(driver, insert, pending)
            driver.execute(_DELETE_FILED, (pending[-1][0],))
        driver.execute("COMMIT")
        return filed
    except BaseException:
        if driver.in_transaction:
            driver.execute("ROLLBACK")
        raise


def _insert_all(driver: sqlite3.Connection, insert: Inserter, decisions: Sequence[Sequence[Any]]) -> None:
    """Table by table (decisions before the rows that reference them), in journal order; each
    run of rows with the same columns in one statement."""
    width = max(len(parts) for parts in decisions)
    for index in range(width):
        columns: tuple[str, ...] | None = None
        rows: list[tuple[Any, ...]] = []
        for parts in decisions:
            part = parts[index] if index < len(parts) else None
            if not part:
                continue
            keys = tuple(part[0])
            if keys != columns and rows:
                assert columns is not None
                insert(driver, index, columns, rows)
                rows = []
            columns = keys
            rows.extend(tuple(row) for row in part[1])
        if rows:
            assert columns is not None
            insert(driver, index, columns, rows)


def _file_one_by_one(driver: sqlite3.Connection, insert: Inserter, pending: Sequence[tuple[int, bytes]]) -> int:
    filed = 0
    for seq, body in pending:
        driver.execute("SAVEPOINT file_one")
        try:
            _insert_all(driver, insert, [orjson.loads(body)])
        except sqlite3.OperationalError:
            raise
        except Exception as exc:
            driver.execute("ROLLBACK TO file_one")
            driver.execute("RELEASE file_one")
            reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:200]
            driver.execute(_MARK_PROBLEM, (reason, seq))
            log.error("decision journal row %d could not be filed (%s); kept in %s", seq, reason, TABLE)
            continue
        driver.execute("RELEASE file_one")
        filed += 1
    return filed
