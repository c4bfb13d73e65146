"""Taking SQLite's write lock on the decision write's path without idling a core.

While another process holds the write lock, SQLite's busy handler sleeps 1 ms, then 2, 5,
10 ms and so on before each new try. A filing of the decision journal holds the lock for one
or two milliseconds, so a serving process that arrived just after it began slept 3 ms for
it: with two sync workers on two cores and the journal filed every few calls, about one core
in twenty sat idle under load (benchmarks/http.py at c=8). Here the writer tries without the
handler and, while the lock is taken, tries again after 0.1 ms, then 0.2, 0.4 ... up to 1 ms
between tries (each failed try costs a few microseconds of CPU), up to the same time limit;
the connection's busy timeout is put back once the lock is held.
"""

from __future__ import annotations

import sqlite3
import time

FIRST_PAUSE_S = 0.0001
LONGEST_PAUSE_S = 0.001


def begin_immediate(driver: sqlite3.Connection, wait_s: float) -> None:
    """``BEGIN IMMEDIATE`` on ``driver``, waiting up to ``wait_s`` for another writer; the
    connection's busy timeout must be ``wait_s`` (the store sets it so) and is left so.
    Raises ``sqlite3.OperationalError`` ("database is locked") once the wait is over."""
    driver.execute("PRAGMA busy_timeout = 0")
    try:
        begin_immediate_unhandled(driver, wait_s)
    finally:
        driver.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")


def begin_immediate_unhandled(driver: sqlite3.Connection, wait_s: float) -> None:
    """`begin_immediate` on a connection whose busy timeout is 0 already (the decision
    write's own connection, `writer_connection`)."""
    retry_while_busy(driver, "BEGIN IMMEDIATE", wait_s)


def retry_while_busy(driver: sqlite3.Connection, statement: str, wait_s: float) -> None:
    """Run ``statement``, trying again while another connection holds the lock (0.1 ms
    apart, then 0.2, 0.4 ... at most 1 ms), up to ``wait_s``; then its "database is locked"
    error is raised."""
    deadline = time.monotonic() + wait_s
    pause = FIRST_PAUSE_S
    while True:
        try:
            driver.execute(statement)
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE_S)


def is_busy(exc: sqlite3.Error) -> bool:
    """True for SQLite's "database is locked" (another connection holds the lock)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
    return "database is locked" in str(exc)
