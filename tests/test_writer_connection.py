"""The SQLite decision write's own connections (cds_hooks/audit/writer_connection.py): kept
between calls, opened as the engine opens its own, one per concurrent write, never shared with a forked child,
replaced after an error, closed with the store; and the write still waits for another
process's lock."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from cds_hooks.audit import AuditStore
from cds_hooks.audit.sqlite_direct import SqliteFile, connect
from cds_hooks.audit.writer_connection import WriterConnections

from .test_audit_store import EVALUATED, KEY
from .test_decision_journal import call, raw_count


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def connections(db_path: Path) -> Iterator[WriterConnections]:
    # The log exists, in WAL mode, before any test connects, as the store makes it at start-up:
    # turning a new file to WAL takes an exclusive lock, and three first connections racing
    # for it could wait out their busy timeouts on a loaded machine.
    connect(SqliteFile(str(db_path)), 5.0).close()
    kept = WriterConnections(partial(connect, SqliteFile(str(db_path)), 5.0), lock_wait_s=5.0, keep=2)
    yield kept
    kept.close()


def _busy_timeout(driver: sqlite3.Connection) -> int:
    value: int = driver.execute("PRAGMA busy_timeout").fetchone()[0]
    return value


def test_one_writer_after_another_reuses_one_connection(connections, db_path) -> None:
    with connections.writing() as first:
        assert _busy_timeout(first) == 0  # its waits are begin_immediate_unhandled's
        assert first.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # the store's PRAGMAs
        assert first.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert first.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with connections.writing() as second:
        pass
    assert second is first


def test_concurrent_writers_each_get_their_own_and_at_most_keep_are_kept(connections) -> None:
    inside = threading.Barrier(3)
    seen: list[sqlite3.Connection] = []

    def write() -> None:
        with connections.writing() as driver:
            seen.append(driver)
            inside.wait(timeout=60)  # all three hold a connection at once; a generous bound, not a timing

    threads = [threading.Thread(target=write) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(driver) for driver in seen}) == 3
    assert len(connections._free) == 2
    closed = [driver for driver in seen if driver not in connections._free]
    with pytest.raises(sqlite3.ProgrammingError):
        closed[0].execute("SELECT 1")


def test_a_connection_that_failed_is_closed_and_replaced(connections) -> None:
    with pytest.raises(sqlite3.OperationalError), connections.writing() as failed:
        failed.execute("SELECT * FROM no_such_table")
    with pytest.raises(sqlite3.ProgrammingError):
        failed.execute("SELECT 1")
    with connections.writing() as fresh:
        assert fresh is not failed
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_a_busy_lock_keeps_the_connection(connections, db_path) -> None:
    with connections.writing() as driver:
        driver.execute("CREATE TABLE t (x INTEGER)")
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    quick = WriterConnections(connections._connect, lock_wait_s=0.1)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"), quick.writing() as waiting:
            quick.begin(waiting)
        with quick.writing() as again:
            assert again is waiting
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        quick.close()


def test_a_write_waits_for_another_writer_to_let_go(connections, db_path) -> None:
    with connections.writing() as driver:
        driver.execute("CREATE TABLE t (x INTEGER)")
    locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.05, lambda: locker.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    with connections.writing() as driver:
        connections.begin(driver)
        driver.execute("INSERT INTO t VALUES (1)")
        driver.execute("COMMIT")
    release.join()
    locker.close()
    assert 0.04 <= time.monotonic() - started < 2.0
    assert raw_count(db_path, "t") == 1


def test_close_closes_the_kept_connections_and_those_still_in_use(connections) -> None:
    with connections.writing() as kept:
        pass
    with connections.writing() as in_use:
        connections.close()
    for driver in (kept, in_use):
        with pytest.raises(sqlite3.ProgrammingError):
            driver.execute("SELECT 1")


def test_a_forked_child_writes_on_its_own_connection_and_the_parent_keeps_its_own(db_path) -> None:
    store = AuditStore(f"sqlite:///{db_path}", KEY)
    store.migrate()
    try:
        store.record_or_spool(call(0, "parent"), EVALUATED)
        store.record_or_spool(call(1, "parent"), EVALUATED)  # the journal's way: a kept connection
        parent_connection = store._writer_connections._free[0]
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if its write went in on a connection of its own
            ok = False
            try:
                ok = store.record_or_spool(call(0, "child"), EVALUATED)
                ok = ok and store._writer_connections._free[0] is not parent_connection
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.record_or_spool(call(2, "parent"), EVALUATED)
        assert store._writer_connections._free[0] is parent_connection
        assert store.count_decisions() == 4
    finally:
        store.dispose()


def test_first_connections_racing_on_a_new_file_all_open_it(tmp_path: Path) -> None:
    """Two processes starting on one new log: the first switch to WAL takes an exclusive
    lock and SQLite refuses a racing connection at once, without its busy handler; the
    switch is tried again, so every connection opens (before, about one round in ten here
    lost one of them to "database is locked")."""
    for round_ in range(40):
        path = tmp_path / f"new-{round_}.db"
        errors: list[BaseException] = []
        opened: list[sqlite3.Connection] = []
        start = threading.Barrier(4)

        def open_one(
            path: Path = path,
            errors: list[BaseException] = errors,
            opened: list[sqlite3.Connection] = opened,
            start: threading.Barrier = start,
        ) -> None:
            start.wait(timeout=60)
            try:
                opened.append(connect(SqliteFile(str(path)), 5.0))
            except BaseException as exc:  # every failure is the finding
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert {driver.execute("PRAGMA journal_mode").fetchone()[0] for driver in opened} == {"wal"}
        for driver in opened:
            driver.close()
