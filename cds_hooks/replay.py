"""Replay protection shared by every worker and host: a ``seen_jti`` table (CDS Hooks §8).

A cache inside one process lets a token replayed to another gunicorn worker through. The
service database is already shared by all workers (it holds the audit log), so one atomic
upsert per call decides, whichever process receives the replay.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from .audit.store import AuditStore, StoreTimeout, is_database_error

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger("cds_hooks.replay")

#: Expired rows are deleted at most this often per process; they are harmless meanwhile.
PURGE_INTERVAL_S = 60.0
_T = TypeVar("_T")
# SQLite through the driver: an UPDATE whose WHERE fails changes no row (rowcount 0).
_UPSERT = (
    "INSERT INTO seen_jti (key_hash, expires_at) VALUES (?, ?) "
    "ON CONFLICT (key_hash) DO UPDATE SET expires_at = excluded.expires_at WHERE seen_jti.expires_at <= ?"
)
_PURGE = "DELETE FROM seen_jti WHERE expires_at <= ?"
Runner = Callable[[Callable[[], Any]], Any]


def _run_inline(work: Callable[[], _T]) -> _T:
    return work()


class ReplayStoreUnavailable(RuntimeError):
    """The replay store could not be asked; the call must be refused (fail closed), but as a
    server fault (503), not as a bad token."""


class DatabaseJtiCache:
    """:class:`cds_hooks.auth.JtiCache` over the ``seen_jti`` table (SQLite or PostgreSQL)."""

    def __init__(self, database: AuditStore | Engine, run: Runner = _run_inline) -> None:
        """``database``: the service's store (on a SQLite file its driver connections, so a
        serving process needs no SQLAlchemy) or an engine. ``run`` executes the database
        work; the service passes ``AuditStore.run_bounded`` so that a hung database fails the
        check closed within the store's timeout."""
        self._database = database
        self._run = run
        self._purge_lock = threading.Lock()
        self._next_purge = 0.0

    def add_if_absent(self, key: str, expires_at: float, now: float) -> bool:
        """Insert the key, or take over a row whose token has expired; False when an unexpired
        row exists. The database's conflict handling makes it atomic across processes."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        database = self._database
        direct = isinstance(database, AuditStore) and database.writes_directly
        work = self._insert_direct if direct else self._insert_core
        try:
            return bool(self._run(partial(work, digest, expires_at, now)))
        except Exception as exc:
            if not (isinstance(exc, StoreTimeout) or is_database_error(exc)):
                raise
            log.error("replay store unavailable: %s", type(exc).__name__)
            raise ReplayStoreUnavailable("the token replay store is unavailable") from None

    def _insert_direct(self, digest: str, expires_at: float, now: float) -> bool:
        # Reads no decision, so the decision journal is not filed first (audit/journal.py).
        assert isinstance(self._database, AuditStore)
        with self._database.direct_transaction() as driver:
            added = driver.execute(_UPSERT, (digest, expires_at, now)).rowcount == 1
            if self._purge_due(now):
                driver.execute(_PURGE, (now,))
        return added

    def _insert_core(self, digest: str, expires_at: float, now: float) -> bool:
        from sqlalchemy import delete

        from .audit.core import dialect_insert, wrote_row
        from .audit.models import SeenJti

        engine = self._database.engine if isinstance(self._database, AuditStore) else self._database
        stmt = dialect_insert(engine.dialect.name, SeenJti).values(key_hash=digest, expires_at=expires_at)
        stmt = stmt.on_conflict_do_update(
            index_elements=[SeenJti.key_hash],
            set_={"expires_at": stmt.excluded.expires_at},
            where=SeenJti.expires_at <= now,
        )
        # Reads no decision, so the decision journal is not filed first (audit/journal.py).
        with engine.connect().execution_options(audit_no_filing=True) as conn, conn.begin():
            added = wrote_row(conn, stmt, SeenJti.key_hash)
            if self._purge_due(now):
                conn.execute(delete(SeenJti).where(SeenJti.expires_at <= now))
        return added

    def _purge_due(self, now: float) -> bool:
        with self._purge_lock:
            if now < self._next_purge:
                return False
            self._next_purge = now + PURGE_INTERVAL_S
            return True
