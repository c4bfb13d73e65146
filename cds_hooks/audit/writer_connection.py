"""The SQLite decision write's own connections, kept open between calls.

Each hook call used to check a connection out of SQLAlchemy's pool and back in, and to turn
the connection's busy timeout off and on around its ``BEGIN IMMEDIATE`` (`sqlite_lock`):
together about 4% of a serving process's CPU under load (benchmarks/http_ab.py). Here a
write takes a connection from a small free list of its own, opened as the engine opens its
own (`sqlite_direct.connect`: same file, same PRAGMAs), with its busy handler switched off
for good (`sqlite_lock.begin_immediate_unhandled` does the waiting), and puts it back
afterwards. There are as many as writes ever ran at once, at most ``keep`` of them kept.

* A forked child never uses its parent's connections: it sets them aside without closing
  them (closing an inherited SQLite connection can release the child's own locks on the
  file) and opens its own at its first write.
* A connection that raised anything but a busy lock is closed; the next write opens another.
* `close` (the store's dispose) closes the connections this process opened.
* An in-memory database has one connection shared by the whole pool: there the write borrows
  it per call (``shared``).
* With a ``checkpointer`` (`sqlite_checkpoint`), the connections do not checkpoint the WAL
  themselves; `committed` tells the checkpointer that a decision went in.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress

from ..forking import after_fork_in_child
from .sqlite_checkpoint import WalCheckpointer
from .sqlite_lock import begin_immediate, begin_immediate_unhandled, is_busy


class WriterConnections:
    """The decision writes' connections to one SQLite database; thread-safe.

    ``connect`` opens a new connection; ``shared`` (an in-memory database) lends its one
    connection instead, and then ``connect`` is not used."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        lock_wait_s: float,
        keep: int = 5,
        *,
        shared: Callable[[], AbstractContextManager[sqlite3.Connection]] | None = None,
        checkpointer: WalCheckpointer | None = None,
    ) -> None:
        self._connect = connect
        self._checkpointer = checkpointer
        self._lock_wait_s = lock_wait_s
        self._keep = keep
        self._shared = shared
        self._lock = threading.Lock()
        self._free: list[sqlite3.Connection] = []
        self._inherited: list[sqlite3.Connection] = []  # a forked child's copies of its parent's: never closed
        after_fork_in_child(self, WriterConnections._after_fork_in_child)

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A writer connection, outside any transaction, for this caller alone."""
        if self._shared is not None:
            with self._shared() as lent:
                yield lent
            return
        with self._lock:
            driver = self._free.pop() if self._free else None
        if driver is None:
            driver = self._open()
        try:
            yield driver
        except sqlite3.Error as exc:
            if not is_busy(exc):
                _close(driver)
                raise
            self._put_back(driver)
            raise
        except BaseException:
            if driver.in_transaction:  # a caller's own error: leave no transaction open
                _close(driver)
            else:
                self._put_back(driver)
            raise
        self._put_back(driver)

    def begin(self, driver: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE`` on a connection of `writing`, waiting for another writer."""
        if self._shared is not None:
            begin_immediate(driver, self._lock_wait_s)
        else:
            begin_immediate_unhandled(driver, self._lock_wait_s)

    def committed(self) -> None:
        """A decision was committed on one of these connections (its WAL pages are the
        checkpointer's to move)."""
        if self._checkpointer is not None:
            self._checkpointer.written()

    def close(self) -> None:
        """Close the kept connections (those in use are closed when they come back) and stop
        the checkpointer."""
        with self._lock:
            self._keep = 0  # from now on a connection that comes back is closed
        self.close_idle()
        if self._checkpointer is not None:
            self._checkpointer.close()

    def close_idle(self) -> None:
        """Close the kept connections and go on (none is held across a later fork)."""
        with self._lock:
            free, self._free = self._free, []
        for driver in free:
            _close(driver)

    def _open(self) -> sqlite3.Connection:
        driver = self._connect()
        driver.execute("PRAGMA busy_timeout = 0")
        if self._checkpointer is not None:
            driver.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's thread does it
        return driver

    def _put_back(self, driver: sqlite3.Connection) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(driver)
                return
        _close(driver)

    def _after_fork_in_child(self) -> None:
        self._inherited.extend(self._free)
        self._free = []
        self._lock = threading.Lock()


def _close(driver: sqlite3.Connection) -> None:
    with suppress(sqlite3.Error):
        driver.close()
