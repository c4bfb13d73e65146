"""Checkpoints of the SQLite log's write-ahead log, taken off the decision write's path.

By default SQLite moves the WAL's pages into the database file (a checkpoint) inside the
commit that takes the WAL past 1,000 pages. That commit then copies the pages and waits for
two fsyncs (the WAL's, then the database's) before the hook call's answer can leave. On a
virtual disk an fsync can take milliseconds: with every fsync slowed by 5 ms (an
``LD_PRELOAD`` shim), two sync workers on the small body at c=8 served 391 req/s with SQLite's
own checkpoints and 634 with this thread; 604 and 622 at this machine's fsync of about 0.2 ms
(`benchmarks/results/wal-checkpoint.txt`).

Here the connections that write decisions do not checkpoint (``wal_autocheckpoint = 0``, set
by `writer_connection`); one background thread per process does, on its own connection,
``INTERVAL_S`` after the first decision written since its last checkpoint. A PASSIVE
checkpoint takes no lock that writers or readers wait for, and the driver releases the GIL
while SQLite works, so the request thread goes on while the thread copies and syncs.

What stays true: a decision is committed to the WAL before its answer leaves, as before
(``synchronous = NORMAL``: it survives a killed process; only an OS crash or power loss can
lose the last commits). The WAL holds at most about ``INTERVAL_S`` of decisions beyond
what a checkpoint has moved; other commits on these connections (rare: metadata, replay
records) are moved by the next checkpoint, and SQLite checkpoints the whole WAL when the
last connection to the file closes. Where no thread can be started, the writer checkpoints
itself once ``INTERVAL_S`` has passed, as SQLite would.

A forked child starts its own thread at its first decision; the parent's thread and
connection are not used there (nor closed: closing an inherited SQLite connection can
release the child's own locks on the file).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from ..forking import after_fork_in_child

log = logging.getLogger("cds_hooks.audit")

INTERVAL_S = 0.2  # about 150 small decisions at full speed on two cores: near SQLite's 1,000 pages
_PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"


class WalCheckpointer:
    """Checkpoints one SQLite file's WAL in a background thread while decisions are written.

    ``connect`` opens a connection to the file (journal_mode WAL); ``written`` is called after
    each commit of a decision; ``close`` stops the thread and closes its connection."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], interval_s: float = INTERVAL_S) -> None:
        self._connect = connect
        self.interval_s = interval_s
        self._reset()
        # The parent's connection is left open and unused in the child (see above).
        after_fork_in_child(self, WalCheckpointer._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()  # set: a decision was committed since the last checkpoint began
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inline = False  # no thread could be started: the writer checkpoints itself
        self._last_inline = time.monotonic()
        self._driver: sqlite3.Connection | None = None
        self._closed = False
        self.checkpoints = 0  # taken by this process
        self.last_result: tuple[int, int, int] | None = None

    def written(self) -> None:
        """A decision was committed: have the WAL checkpointed within ``interval_s``."""
        if self._closed or self._wake.is_set():
            return  # closed, or a checkpoint that begins after this commit is on its way
        if self._thread is None and not self._inline:
            self._start()  # or, where no thread can start, switch to checkpointing inline
        if not self._inline:
            self._wake.set()
        elif time.monotonic() - self._last_inline >= self.interval_s:
            self._last_inline = time.monotonic()
            self.checkpoint_now()

    def checkpoint_now(self) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint on the checkpointer's connection: (busy, frames in the WAL,
        frames moved), as SQLite reports them; None when it could not be run (logged)."""
        with self._lock:
            if self._closed:
                return None
            try:
                if self._driver is None:
                    self._driver = self._connect()
                busy, frames, moved = self._driver.execute(_PASSIVE).fetchone()
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint not taken (%s); the next one retries", type(exc).__name__)
                self._drop_connection()
                return None
            self.checkpoints += 1
            self.last_result = (int(busy), int(frames), int(moved))
            return self.last_result

    def close(self) -> None:
        """Stop the thread and close its connection (SQLite checkpoints the rest when the
        last connection to the file closes)."""
        thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            self._closed = True
            self._drop_connection()

    @property
    def running(self) -> bool:
        """True while this process's checkpoint thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._inline:
                return
            thread = threading.Thread(target=self._run, name="cryo-cds-wal-checkpoint", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread can be started here: checkpoint from the writer
                self._inline = True
                return
            self._thread = thread

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.wait(self.interval_s):  # gather the decisions of one interval
                break
            self._wake.clear()  # a commit from now on sets it again
            self.checkpoint_now()

    def _drop_connection(self) -> None:
        driver, self._driver = self._driver, None
        if driver is not None:
            with suppress(sqlite3.Error):
                driver.close()
