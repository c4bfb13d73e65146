"""WAL checkpoints off the decision write's path (cds_hooks/audit/sqlite_checkpoint.py): the
writers' connections never checkpoint, the background thread does once decisions were
written, a forked child runs its own, closing the store stops it, and without threads the
writer checkpoints itself."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from cds_hooks.audit import AuditStore
from cds_hooks.audit.sqlite_checkpoint import WalCheckpointer
from cds_hooks.audit.sqlite_direct import SqliteFile, connect
from cds_hooks.audit.writer_connection import WriterConnections

from .test_audit_store import EVALUATED, KEY
from .test_decision_journal import call

WAIT_S = 60.0  # a generous bound for the background thread on a loaded machine, not a timing


def _until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    connect(SqliteFile(str(path)), 5.0).close()  # the log exists in WAL mode, as the store makes it
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    opened = AuditStore(f"sqlite:///{tmp_path / 'log.db'}", KEY)
    opened.migrate()
    yield opened
    opened.dispose()


def _checkpointer(store: AuditStore) -> WalCheckpointer:
    connections = store._writer_connections
    assert connections is not None and connections._checkpointer is not None
    return connections._checkpointer


def _frames_in_wal(db_path: Path) -> int:
    """Frames in the WAL, read from its size (header 32 bytes, each frame 24 + one page)."""
    wal = db_path.with_name(db_path.name + "-wal")
    page = 4096
    return (wal.stat().st_size - 32) // (24 + page) if wal.exists() else 0


def _write_pages(connections: WriterConnections, pages: int) -> None:
    """Commits that add about ``pages`` pages to the WAL, on the writers' connections."""
    with connections.writing() as driver:
        driver.execute("CREATE TABLE IF NOT EXISTS filler (body BLOB)")
        for _ in range(pages // 10):
            connections.begin(driver)
            driver.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(3500),) for _ in range(10)])
            driver.execute("COMMIT")
            connections.committed()


def test_the_decision_writers_do_not_checkpoint(store: AuditStore) -> None:
    assert store.record_or_spool(call(0), EVALUATED)
    connections = store._writer_connections
    assert connections is not None
    with connections.writing() as driver:
        assert driver.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0


def test_commits_past_a_thousand_pages_are_not_checkpointed_by_the_writer(db_path: Path) -> None:
    """SQLite's default would checkpoint inside the commit that passes 1,000 pages, and the
    WAL would start again from its beginning; here the WAL keeps every frame until the
    checkpointer (whose thread waits an hour here) moves them."""
    checkpointer = WalCheckpointer(partial(connect, SqliteFile(str(db_path)), 5.0), interval_s=3600)
    connections = WriterConnections(
        partial(connect, SqliteFile(str(db_path)), 5.0), lock_wait_s=5.0, checkpointer=checkpointer
    )
    try:
        _write_pages(connections, 2_500)
        assert _frames_in_wal(db_path) >= 2_500
        assert checkpointer.checkpoints == 0
        busy, frames, moved = checkpointer.checkpoint_now() or (-1, -1, -1)
        assert (busy, moved) == (0, frames) and frames >= 2_500
    finally:
        connections.close()


def test_without_a_checkpointer_the_connections_checkpoint_as_sqlite_does(db_path: Path) -> None:
    """The control for the test above: the same commits on connections left to SQLite."""
    connections = WriterConnections(partial(connect, SqliteFile(str(db_path)), 5.0), lock_wait_s=5.0)
    try:
        _write_pages(connections, 2_500)
        assert _frames_in_wal(db_path) < 1_500
    finally:
        connections.close()


def test_the_thread_checkpoints_the_decisions_written(store: AuditStore) -> None:
    checkpointer = _checkpointer(store)
    checkpointer.interval_s = 0.01
    for n in range(20):
        assert store.record_or_spool(call(n), EVALUATED)
    assert checkpointer.running

    # Once the writes stop, a checkpoint that began after the last of them moves every frame.
    def all_moved() -> bool:
        result = checkpointer.last_result
        return result is not None and result[0] == 0 and result[1] == result[2]

    assert _until(all_moved)
    assert checkpointer.last_result is not None and checkpointer.last_result[1] > 0
    assert store.count_decisions() == 20


def test_closing_the_store_stops_the_thread(tmp_path: Path) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'log.db'}", KEY)
    store.migrate()
    assert store.record_or_spool(call(0), EVALUATED)
    checkpointer = _checkpointer(store)
    assert checkpointer.running
    store.dispose()
    assert not checkpointer.running
    assert checkpointer.checkpoint_now() is None  # closed: nothing runs any more


def test_a_forked_child_runs_its_own_thread(store: AuditStore) -> None:
    checkpointer = _checkpointer(store)
    checkpointer.interval_s = 0.01
    assert store.record_or_spool(call(0, "parent"), EVALUATED)
    parent_thread = checkpointer._thread
    assert parent_thread is not None
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if its own thread checkpointed its decision
        ok = False
        try:
            ok = not checkpointer.running and checkpointer.checkpoints == 0  # nothing of the parent's
            ok = ok and store.record_or_spool(call(0, "child"), EVALUATED)
            ok = ok and checkpointer._thread is not parent_thread and _until(lambda: checkpointer.checkpoints > 0)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert checkpointer._thread is parent_thread and checkpointer.running
    assert store.count_decisions() == 2


def test_where_no_thread_can_start_the_writer_checkpoints_itself(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    checkpointer = _checkpointer(store)
    checkpointer.interval_s = 0.0
    for n in range(3):
        assert store.record_or_spool(call(n), EVALUATED)
    assert not checkpointer.running
    assert checkpointer.checkpoints == 3


def test_a_checkpoint_that_cannot_run_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    checkpointer = WalCheckpointer(broken, interval_s=0)
    assert checkpointer.checkpoint_now() is None
    assert checkpointer.checkpoints == 0
    assert "WAL checkpoint not taken (OperationalError)" in caplog.text
    checkpointer.close()
