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
from typing import Any, TypeVar

from sqlalchemy import Engine, delete
from sqlalchemy.exc import SQLAlchemyError

from .audit.models import SeenJti
from .audit.store import StoreTimeout, dialect_insert, wrote_row

log = logging.getLogger("cds_hooks.replay")

#: Expired rows are deleted at most this often per process; they are harmless meanwhile.
PURGE_INTERVAL_S = 60.0
_T = TypeVar("_T")
Runner = Callable[[Callable[[], Any]], Any]


def _run_inline(work: Callable[[], _T]) -> _T:
    return work()


class ReplayStoreUnavailable(RuntimeError):
    """The replay store could not be asked; the call must be refused (fail closed), but as a
    server fault (503), not as a bad token."""


class DatabaseJtiCache:
    """:class:`cds_hooks.auth.JtiCache` over the ``seen_jti`` table (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, run: Runner = _run_inline) -> None:
        """``run`` executes the database work; the service passes ``AuditStore.run_bounded``
        so that a hung database fails the check closed within the store's timeout."""
        self._engine = engine
        self._run = run
        self._purge_lock = threading.Lock()
        self._next_purge = 0.0

    def add_if_absent(self, key: str, expires_at: float, now: float) -> bool:
        """Insert the key, or take over a row whose token has expired; False when an unexpired
        row exists. The database's conflict handling makes it atomic across processes."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        stmt = dialect_insert(self._engine.dialect.name, SeenJti).values(key_hash=digest, expires_at=expires_at)
        stmt = stmt.on_conflict_do_update(
            index_elements=[SeenJti.key_hash],
            set_={"expires_at": stmt.excluded.expires_at},
            where=SeenJti.expires_at <= now,
        )
        try:
            return bool(self._run(partial(self._insert, stmt, now)))
        except (SQLAlchemyError, StoreTimeout) as exc:
            log.error("replay store unavailable: %s", type(exc).__name__)
            raise ReplayStoreUnavailable("the token replay store is unavailable") from None

    def _insert(self, stmt: Any, now: float) -> bool:
        # Reads no decision, so the decision journal is not filed first (audit/journal.py).
        with self._engine.connect().execution_options(audit_no_filing=True) as conn, conn.begin():
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
