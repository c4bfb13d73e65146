"""The decision write's wait for SQLite's write lock (cds_hooks/audit/sqlite_lock.py): it gets
the lock as soon as the other writer lets go, gives up after the connection's busy timeout
as SQLite would, and leaves the busy timeout as it found it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds_hooks.audit.sqlite_lock import begin_immediate


def _connect(path: Path, busy_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


@pytest.fixture
def two_connections(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    path = tmp_path / "lock.db"
    first, second = _connect(path, 5000), _connect(path, 5000)
    first.execute("CREATE TABLE t (x INTEGER)")
    yield first, second
    first.close()
    second.close()


def _busy_timeout(conn: sqlite3.Connection) -> int:
    value: int = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    return value


def test_the_lock_is_taken_at_once_when_free(two_connections) -> None:
    first, _second = two_connections
    begin_immediate(first, 5.0)
    assert first.in_transaction
    first.execute("INSERT INTO t VALUES (1)")
    first.execute("COMMIT")
    assert _busy_timeout(first) == 5000


def test_the_lock_is_taken_soon_after_the_other_writer_lets_go(two_connections) -> None:
    first, second = two_connections
    second.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.05, lambda: second.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    begin_immediate(first, 5.0)
    waited = time.monotonic() - started
    first.execute("COMMIT")
    release.join()
    assert 0.04 <= waited < 1.0
    assert _busy_timeout(first) == 5000


def test_the_wait_ends_with_database_is_locked_after_the_busy_timeout(two_connections) -> None:
    first, second = two_connections
    first.execute("PRAGMA busy_timeout = 200")
    second.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        begin_immediate(first, 0.2)
    assert 0.19 <= time.monotonic() - started < 2.0
    assert not first.in_transaction
    assert _busy_timeout(first) == 200
    second.execute("COMMIT")


def test_other_errors_are_raised_at_once(two_connections) -> None:
    first, _second = two_connections
    first.execute("BEGIN")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        begin_immediate(first, 5.0)
    assert time.monotonic() - started < 0.5
    assert _busy_timeout(first) == 5000
    first.execute("ROLLBACK")
