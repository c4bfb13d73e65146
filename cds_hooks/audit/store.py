"""The decision log: write decisions and feedback, purge, migrate (architecture §5).

One `AuditStore` per process, shared by all request threads. SQLite (the embedded default)
and PostgreSQL (multi-worker, multi-host) run the same code; only connection set-up and the
duplicate-ignoring insert differ by dialect. Patient ids never reach the database: they are
replaced by HMAC-SHA256 under a site key, so a log reader can group by patient but cannot
recover who the patient is without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import orjson

from .. import metrics
from ..overrides import SYSTEM as OVERRIDE_REASON_SYSTEM
from . import sqlite_direct
from .records import DecisionRecord, FeedbackItem
from .spool import Spool
from .sqlite_checkpoint import WalCheckpointer
from .writer import ORJSON_STRICT, DecisionWriter
from .writer_connection import WriterConnections

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

log = logging.getLogger("cds_hooks.audit")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIN_KEY_BYTES = 16
_T = TypeVar("_T")
# Alembic's `context` is a module-level proxy, so two threads must not migrate at once;
# processes and hosts are serialised by the database (see migrations/env.py).
_MIGRATE_LOCK = threading.Lock()
DEFAULT_TIMEOUT_S = 5.0
DRAIN_BATCH = 20  # spooled decisions written back per successful call


class AuditStoreClosedError(RuntimeError):
    """Raised when a store is used after `dispose()`."""


class StoreTimeout(RuntimeError):
    """The database did not answer within the store's timeout (hung server or network)."""


class AuditStore:
    """Decision and feedback storage (thread-safe).

    PostgreSQL goes through one SQLAlchemy engine. On a SQLite file the serving path (schema
    check or creation, decision writes, readiness, the key's fingerprint, evaluation sets)
    runs on the driver (`sqlite_direct`), and the engine is built when something else first
    needs it (`engine`): a serving process never loads SQLAlchemy."""

    write_failures: ClassVar[int] = 0
    _failures_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        url: str,
        patient_key: bytes,
        *,
        pool_size: int = 5,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        spool_dir: Path | None = None,
    ) -> None:
        if not isinstance(patient_key, bytes) or len(patient_key) < MIN_KEY_BYTES:
            raise ValueError(
                f"patient_key must be at least {MIN_KEY_BYTES} random bytes "
                "(e.g. secrets.token_bytes(32)); a short key lets anyone with the log "
                "recover patient ids by guessing"
            )
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._key = patient_key
        self._url = url
        self._backend = sqlite_direct.backend_name(url)
        if self._backend not in ("sqlite", "postgresql"):
            raise ValueError("the audit store supports sqlite:// and postgresql+psycopg:// URLs")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._timeout = timeout_s
        self._pool_size = pool_size
        self._engine_lock = threading.Lock()
        self._built_engine: Engine | None = None
        self._in_caller_thread = self._backend == "sqlite"
        self._closed = False
        self._workers = pool_size + 2
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0
        self._executor_lock = threading.Lock()
        self.spool = Spool(spool_dir) if spool_dir is not None else None
        # Evaluation sets this process has seen committed: the usual call writes no set.
        self._stored_sets: set[str] = set()
        self._writer = DecisionWriter(self._backend, lock_wait_s=timeout_s)
        # SQLite: the driver's connections for everything on the serving path.
        self._writer_connections: WriterConnections | None = None
        if self._backend == "sqlite":
            target = sqlite_direct.sqlite_file(url)
            if target is not None:
                connect = partial(sqlite_direct.connect, target, timeout_s)
                self._writer_connections = WriterConnections(
                    connect, timeout_s, keep=pool_size, checkpointer=WalCheckpointer(connect)
                )
            else:  # in memory (or URL options only SQLAlchemy reads): its pool's connection
                self._writer_connections = WriterConnections(
                    _no_own_connections, timeout_s, keep=pool_size, shared=self._lend_pooled
                )
        else:
            _ = self.engine  # PostgreSQL needs it for every call: a bad URL fails here

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for Core queries (feedback, analytics, the console, purges,
        ``seen_jti`` on PostgreSQL); on SQLite built at its first use."""
        engine = self._built_engine
        if engine is None:
            self._check_open()
            with self._engine_lock:
                if self._built_engine is None:
                    from .core import build_engine

                    file_pending = self._writer.file_pending if self._backend == "sqlite" else None
                    self._built_engine = build_engine(self._url, self._pool_size, self._timeout, file_pending)
                engine = self._built_engine
        return engine

    @contextmanager
    def _lend_pooled(self) -> Iterator[sqlite3.Connection]:
        """The driver connection of one pooled SQLAlchemy connection (in-memory SQLite)."""
        pooled = self.engine.raw_connection()
        try:
            driver = pooled.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            yield driver
        finally:
            pooled.close()

    @property
    def writes_directly(self) -> bool:
        """True on SQLite, where the serving path runs on the driver (`direct_transaction`)."""
        return self._writer_connections is not None

    @contextmanager
    def direct_reading(self, *, filed_only: bool = False) -> Iterator[sqlite3.Connection]:
        """SQLite: a read transaction on a driver connection, after filing the decision
        journal, so it sees every decision written so far (as Core's readers do).

        ``filed_only``: the tables as they are, for a question that only filed decisions can
        answer; it takes no write lock and files nothing."""
        self._check_open()
        connections = self._writer_connections
        assert connections is not None
        with connections.writing() as driver:
            if not filed_only:
                self._writer.file_pending(driver, connections.begin)
            driver.execute("BEGIN")
            try:
                yield driver
            finally:
                if driver.in_transaction:
                    driver.execute("ROLLBACK")

    @contextmanager
    def direct_transaction(self) -> Iterator[sqlite3.Connection]:
        """SQLite: a write transaction (``BEGIN IMMEDIATE``) on a driver connection, committed
        when the block ends; it does not file the decision journal first."""
        self._check_open()
        connections = self._writer_connections
        assert connections is not None
        with connections.writing() as driver:
            connections.begin(driver)
            try:
                yield driver
                driver.execute("COMMIT")
            except BaseException:
                if driver.in_transaction:
                    driver.execute("ROLLBACK")
                raise

    @property
    def timeout_s(self) -> float:
        return self._timeout

    def run_bounded(self, work: Callable[[], _T]) -> _T:
        """Run database work, giving up after the store's timeout.

        Driver timeouts do not cover every hang (a peer that stops answering mid-statement
        keeps a socket read waiting forever), so the work runs on a small pool and the caller
        stops waiting at the deadline; a hung connection stays with its pool thread until the
        network gives it back. Raises StoreTimeout then.

        SQLite has no peer to hang on: its waits are for locks, which its busy timeout (the
        store's timeout) bounds, so its work runs in the caller's thread, without the hop to
        the pool (a few tenths of a millisecond per call)."""
        self._check_open()
        if self._in_caller_thread:
            return work()
        future: Future[_T] = self._pool().submit(work)
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout:
            future.cancel()
            raise StoreTimeout(f"the database did not answer within {self._timeout:g} s") from None

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None or self._executor_pid != os.getpid():
                # A forked worker inherits the parent's executor object but not its threads.
                self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="audit-db")
                self._executor_pid = os.getpid()
            return self._executor

    def readiness(self) -> str | None:
        """None when the database answers a trivial query within the timeout, else why not."""

        def ping() -> None:
            # A write transaction: on SQLite it takes the write lock (BEGIN IMMEDIATE), so a
            # database locked by someone else is reported, not just a readable one.
            if self._writer_connections is not None:
                with self.direct_transaction() as driver:
                    driver.execute("SELECT 1")
                return
            with self.engine.begin() as conn:
                conn.exec_driver_sql("SELECT 1")

        try:
            self.run_bounded(ping)
        except Exception as exc:
            return f"database unavailable ({_describe(exc)})"
        return None

    def write_failure_count(self) -> int:
        """Failed decision writes: host-wide (all workers) with a spool, else this process."""
        if self.spool is not None:
            try:
                return self.spool.failures()
            except OSError:
                pass
        return AuditStore.write_failures

    # -- lifecycle ---------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest revision; a no-op when it already is.

        The usual start-up finds the schema current: that is told by one query against the
        version files' text. A database without any table gets the newest schema from the
        models and is stamped at the newest revision. Either way a serving worker never
        imports Alembic (~0.3 s, ~15 MB), nor on a SQLite file SQLAlchemy; only an older schema
        is migrated through them."""
        self._check_open()
        with _MIGRATE_LOCK:  # not beside another thread's migration: its DDL locks the file
            done = self.schema_is_current() or self._create_if_empty()
        if done:
            self._hold_no_connection()
            return
        from alembic import command
        from alembic.config import Config

        from .core import normalise_url

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("path_separator", "os")
        # ConfigParser interpolates '%', which URL-encoded passwords contain.
        url = normalise_url(self._url).render_as_string(hide_password=False).replace("%", "%%")
        cfg.set_main_option("sqlalchemy.url", url)
        with _MIGRATE_LOCK, self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        self._hold_no_connection()

    def _hold_no_connection(self) -> None:
        """Close the idle connections: none is held across a later fork (gunicorn --preload)."""
        if self._writer_connections is not None:
            self._writer_connections.close_idle()
        if self._built_engine is not None:
            self._built_engine.dispose()

    def _create_if_empty(self) -> bool:
        """Create the newest schema with ``metadata.create_all`` and stamp its revision, if the
        database has no table at all; True when it did. Workers starting together are
        serialised as Alembic's are (PostgreSQL advisory lock; SQLite's BEGIN IMMEDIATE),
        and the loser finds tables and leaves them to the caller's check."""
        heads = head_revisions()
        if len(heads) != 1:
            return False
        connections = self._writer_connections
        if connections is not None:  # the models' DDL as text (`sqlite_schema`)
            with connections.writing() as driver:
                return sqlite_direct.create_if_empty(driver, next(iter(heads)), connections.begin)
        from sqlalchemy import insert, inspect

        from .core import VERSION
        from .models import metadata

        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            if inspect(conn).get_table_names():
                return False
            metadata.create_all(conn)
            VERSION.create(conn)
            conn.execute(insert(VERSION).values(version_num=next(iter(heads))))
        return True

    def schema_is_current(self) -> bool:
        """True when the database's Alembic version is the newest migration (read-only check)."""
        heads = head_revisions()
        if not heads:
            return False
        if self._writer_connections is not None:
            with self._writer_connections.writing() as driver:
                return sqlite_direct.stored_revisions(driver) == heads
        from sqlalchemy import inspect

        with self.engine.connect() as conn:
            if not inspect(conn).has_table(VERSION_TABLE):
                return False
            stored = {str(v) for v in conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars()}
            conn.rollback()
        return stored == heads

    def dispose(self) -> None:
        """Close every pooled connection; later calls raise `AuditStoreClosedError`."""
        self._closed = True
        if self._writer_connections is not None:
            self._writer_connections.close()
        if self._built_engine is not None:
            self._built_engine.dispose()

    def keep_meta(self, name: str, value: str) -> str:
        """The value the log holds under ``name`` (``store_meta``), storing ``value`` first when
        it holds none; concurrent first stores agree on one."""
        if self._writer_connections is not None:
            with self.direct_transaction() as driver:
                return sqlite_direct.keep_meta(driver, name, value)
        from .core import keep_meta

        with self.engine.begin() as conn:
            return keep_meta(conn, name, value)

    # -- writing -----------------------------------------------------------------------

    def hash_patient(self, patient_id: str) -> str:
        """Keyed hash that stands in for the patient id everywhere in the log."""
        return hmac.new(self._key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def record_decision(self, rec: DecisionRecord, evaluated_rules: Sequence[tuple[str, str]]) -> None:
        """Store one decision with its orders, hits, cards and evaluated rules atomically.

        `evaluated_rules` are the (rule id, version) pairs run for the cryotherapy orders,
        fired or not; fired rules are added if missing so fires never exceed evaluations.
        Raises on any failure; `record_decision_safely` is the variant for request paths.
        """
        self._check_open()
        rec.check()
        rows = _decision_rows(rec, evaluated_rules, self.hash_patient(rec.patient_id))
        self.run_bounded(partial(self._insert_rows, rows, ignore_existing=False, journal=False))

    def _insert_rows(self, rows: dict[str, Any], *, ignore_existing: bool, journal: bool = True) -> bool:
        """Insert one decision's rows in one transaction; with ``ignore_existing`` a decision
        already stored (a write that hung but committed, then was spooled) is left alone.
        ``journal``: on SQLite, the hook call's way (`journal.py`), whose rows the tables check
        when they are filed; else the tables' constraints are checked before this returns.

        The evaluated rules (``rows["rule_evaluation"]``, also the spooled format) become a
        reference to their evaluation set, stored first when this process has not stored it
        yet; a spooled decision always makes sure of its set."""
        pairs = [(row["rule_id"], row["rule_version"]) for row in rows["rule_evaluation"]]
        key = evaluation_set_key(pairs) if pairs else None
        decision = {**rows["decision"], "evaluation_set": key}
        wrote = True
        try:
            connections = self._writer_connections
            if connections is not None and not ignore_existing:
                # SQLite's hook call: on the driver, the set first when this process has not stored it.
                first = None
                if key is not None and key not in self._stored_sets:
                    first = partial(sqlite_direct.store_evaluation_set, key=key, pairs=pairs)
                self._writer.write_sqlite_transaction(
                    connections, {**rows, "decision": decision}, journal=journal, first=first
                )
            else:
                wrote = self._insert_rows_core(rows, decision, key, pairs, ignore_existing=ignore_existing)
        except BaseException:
            # The set may be gone (a database recreated under this process): store it again.
            self._stored_sets.discard(key or "")
            raise
        if key is not None:
            self._stored_sets.add(key)
        return wrote

    def _insert_rows_core(
        self,
        rows: dict[str, Any],
        decision: dict[str, Any],
        key: str | None,
        pairs: Sequence[tuple[str, str]],
        *,
        ignore_existing: bool,
    ) -> bool:
        """`_insert_rows` through Core: PostgreSQL's calls, and a spooled decision on either."""
        from sqlalchemy import insert

        from .core import dialect_insert, store_evaluation_set, wrote_row
        from .models import Card, Decision, DecisionOrder, RuleHit

        with self.engine.begin() as conn:
            if key is not None and (ignore_existing or key not in self._stored_sets):
                store_evaluation_set(conn, key, pairs)
            if not ignore_existing:
                self._writer.write(conn, {**rows, "decision": decision})
                return True
            # Rare (spool drain), so plain Core: rows of any spooled format go in.
            stmt = dialect_insert(conn.dialect.name, Decision).values(decision)
            if not wrote_row(conn, stmt.on_conflict_do_nothing(index_elements=["decision_id"]), Decision.decision_id):
                return False
            for model in (DecisionOrder, Card, RuleHit):
                if rows[model.__tablename__]:
                    conn.execute(insert(model), rows[model.__tablename__])
        return True

    def record_or_spool(self, rec: DecisionRecord, evaluated_rules: Sequence[tuple[str, str]]) -> bool:
        """Store the decision, or keep it in the local spool when the database fails; True
        when it is safe in one of them. After a successful write, spooled decisions are
        written back (a bounded batch per call), so an outage loses nothing."""
        rows = _decision_rows(rec, evaluated_rules, self.hash_patient(rec.patient_id))
        try:
            self._check_open()
            rec.check()
            self.run_bounded(partial(self._insert_rows, rows, ignore_existing=False))
        except Exception as exc:
            self._count_failure()
            if self.spool is None:
                log.error(
                    "audit write failed for decision %s (%s) and no spool is configured",
                    rec.decision_id,
                    _describe(exc),
                )
                return False
            try:
                self.spool.put(rec.decision_id, rows)
            except OSError as spool_exc:
                log.error(
                    "audit write failed for decision %s (%s) and the spool failed too (%s)",
                    rec.decision_id,
                    _describe(exc),
                    type(spool_exc).__name__,
                )
                return False
            metrics.SPOOLED.inc()
            log.error("audit write failed for decision %s (%s); spooled to local disk", rec.decision_id, _describe(exc))
            return True
        if self.spool is not None and not self.spool.is_empty():
            self.drain_spool(DRAIN_BATCH)
        return True

    def drain_spool(self, limit: int = 1000) -> int:
        """Write up to ``limit`` spooled decisions to the database; returns how many were
        taken out of the spool. Stops at the first database failure (the entry goes back)."""
        if self.spool is None:
            return 0
        self.spool.recover_stale_claims()
        drained = 0
        for claimed, rows in self.spool.claim(limit):
            try:
                self.run_bounded(partial(self._insert_rows, rows, ignore_existing=True))
            except Exception as exc:
                if _is_refusal(exc):
                    log.error("spooled decision refused (%s)", _describe(exc))
                    self.spool.quarantine(claimed)
                    continue
                log.warning("spool drain paused: %s", _describe(exc))
                self.spool.release(claimed)
                break
            self.spool.done(claimed)
            drained += 1
        if drained:
            metrics.DRAINED.inc(drained)
            log.info("wrote %d spooled decisions to the database", drained)
        return drained

    def _count_failure(self) -> None:
        with AuditStore._failures_lock:
            AuditStore.write_failures += 1
        metrics.AUDIT_WRITE_FAILURES.inc()
        if self.spool is not None:
            with suppress(OSError):
                self.spool.add_failure()

    def record_decision_safely(self, rec: DecisionRecord, evaluated_rules: Sequence[tuple[str, str]]) -> bool:
        """Like `record_decision`, but a failure is logged and counted, never raised.

        The clinician's cards matter more than their audit trail, so a broken database
        must not turn a served decision into an error. The log line names the decision
        and the error class only: no patient data, no SQL parameters.
        """
        try:
            self.record_decision(rec, evaluated_rules)
        except Exception as exc:
            self._count_failure()
            log.error(
                "audit write failed for decision %s (%s); the response was served but "
                "not recorded - check the audit database",
                rec.decision_id,
                _describe(exc),
            )
            return False
        return True

    def record_feedback(self, service_id: str, items: Sequence[FeedbackItem]) -> list[dict[str, Any]]:
        """Store feedback entries in one transaction, joined to their card's rule.

        A card the log does not hold (never issued, purged, or issued by another
        service) is kept with `known_card=False` so nothing the EHR says is lost. The same
        entry posted twice is stored once (`stored=False` the second time). Returns one
        dict per item: card_uuid, outcome, known_card, decision_id, rule_id, stored.
        """
        self._check_open()
        for item in items:
            item.check()
        if not items:
            return []
        return self.run_bounded(partial(self._write_feedback, service_id, items))

    def _write_feedback(self, service_id: str, items: Sequence[FeedbackItem]) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from .core import insert_ignoring_duplicate_feedback
        from .models import Card, Decision

        received_at = datetime.now(UTC)
        results: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            wanted = sorted({item.card_uuid for item in items})
            query = (
                select(
                    Card.uuid, Card.decision_id, Card.rule_id, Card.rule_ids, Card.override_reasons, Decision.service_id
                )
                .join(Decision, Decision.decision_id == Card.decision_id)
                .where(Card.uuid.in_(wanted))
            )
            cards = {row.uuid: row for row in conn.execute(query)}
            for item in items:
                card = cards.get(item.card_uuid)
                match = card if card is not None and card.service_id == service_id else None
                link = {
                    "known_card": match is not None,
                    "decision_id": match.decision_id if match else None,
                    "rule_id": match.rule_id if match else None,
                    "rule_ids": (match.rule_ids or [match.rule_id]) if match else None,
                }
                row = {**_feedback_row(service_id, item, received_at), **link, **_offered(match, item)}
                stored = insert_ignoring_duplicate_feedback(conn, row)
                results.append({"card_uuid": item.card_uuid, "outcome": item.outcome, **link, "stored": stored})
        return results

    def purge_older_than(self, days: int) -> int:
        """Delete decisions (with children) and feedback older than `days`; retention.

        Decisions age by `created_at`, feedback by `received_at`. Evaluation sets stay: they
        hold no patient data, are shared by decisions old and new, and writers remember them.
        Returns the number of decisions deleted.
        """
        self._check_open()
        if days < 0:
            raise ValueError("days must be zero or more")
        from sqlalchemy import delete, select

        from .models import Card, Decision, DecisionOrder, Feedback, RuleHit

        cutoff = datetime.now(UTC) - timedelta(days=days)
        old = select(Decision.decision_id).where(Decision.created_at < cutoff)
        with self.engine.begin() as conn:
            # Explicit child deletes: SQLite only cascades with foreign_keys on, and a
            # database created by other tools might not have it.
            conn.execute(delete(RuleHit).where(RuleHit.decision_id.in_(old)))
            conn.execute(delete(Card).where(Card.decision_id.in_(old)))
            conn.execute(delete(DecisionOrder).where(DecisionOrder.decision_id.in_(old)))
            deleted = conn.execute(delete(Decision).where(Decision.created_at < cutoff))
            conn.execute(delete(Feedback).where(Feedback.received_at < cutoff))
        return int(deleted.rowcount)

    # -- reading -----------------------------------------------------------------------

    def count_decisions(self) -> int:
        """Number of decisions held (health checks, tests)."""
        from sqlalchemy import func, select

        from .models import Decision

        with self.reading() as conn:
            return int(conn.execute(select(func.count()).select_from(Decision)).scalar_one())

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only connection for queries (`analytics`); takes no write lock."""
        self._check_open()
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(postgresql_readonly=True)
            else:
                conn.execution_options(audit_read_only=True)
            yield conn

    def _check_open(self) -> None:
        if self._closed:
            raise AuditStoreClosedError("audit store is closed; create a new AuditStore")


# -- schema version ----------------------------------------------------------------------

VERSION_TABLE = sqlite_direct.VERSION_TABLE
# Serialises schema changes of workers and hosts on PostgreSQL (pg_advisory_xact_lock); the
# constant names "cryo-cds audit migrations". Also taken by migrations/env.py.
MIGRATION_LOCK_ID = 0x4352_594F_4155_4454
_REVISION = re.compile(r"^revision\b[^=\n]*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\b[^=\n]*=(.*)$", re.MULTILINE)


def head_revisions() -> frozenset[str]:
    """The newest migration id(s), read from the version files' text without importing
    Alembic; empty when a file cannot be read that way (then the caller runs Alembic)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            return frozenset()
        revisions.add(revision.group(1))
        parents.update(re.findall(r"[\"']([^\"']+)[\"']", down.group(1)))
    return frozenset(revisions - parents)


def _no_own_connections() -> sqlite3.Connection:
    raise AssertionError("an in-memory log lends its pool's connection; it opens none of its own")


# -- row building ------------------------------------------------------------------------


def _decision_rows(
    rec: DecisionRecord, evaluated_rules: Sequence[tuple[str, str]], patient_hash: str
) -> dict[str, Any]:
    """Turn a record into insert parameters, the patient id replaced by its hash."""
    versions: dict[str, str] = {}
    for rule_id, version in [*evaluated_rules, *((h.rule_id, h.rule_version) for h in rec.fired)]:
        if versions.setdefault(rule_id, version) != version:
            raise ValueError(f"rule {rule_id} has two versions in one decision")

    scrub = _Scrubber(rec.patient_id, patient_hash)
    did = rec.decision_id
    return {
        "decision": {
            "decision_id": did,
            "created_at": rec.created_at,
            "service_id": rec.service_id,
            "hook": rec.hook,
            "hook_instance": rec.hook_instance,
            "patient_hash": patient_hash,
            "rules_revision": rec.rules_revision,
            "evaluator": rec.evaluator,
            "latency_ms": float(rec.latency_ms),
            "status": int(rec.status),
            "data_gaps": scrub(list(rec.data_gaps)),
            # governance (issue 14): policy revision, replayable facts, suppressed findings
            "policy_revision": rec.policy_revision or None,
            "facts": scrub(rec.facts) if rec.facts is not None else None,
            "suppressed": scrub(list(rec.suppressed)) if rec.suppressed else None,
        },
        "decision_order": [
            {"decision_id": did, "order_ref": scrub(ref), "modality": modality} for ref, modality in rec.orders
        ],
        "rule_evaluation": [
            {"decision_id": did, "rule_id": rule_id, "rule_version": version} for rule_id, version in versions.items()
        ],
        # CardRecord and FiredRule fields are named after their columns.
        "card": [
            {
                **vars(card),
                "decision_id": did,
                "summary": scrub(card.summary),
                "suggestion_uuids": list(card.suggestion_uuids),
                "rule_ids": list(card.rule_ids or (card.rule_id,)),
                "override_reasons": dict(card.override_reasons),
            }
            for card in rec.cards
        ],
        "rule_hit": [
            {
                **vars(hit),
                "decision_id": did,
                "order_ref": scrub(hit.order_ref),
                "evidence": scrub(hit.evidence),
                "facts": scrub(hit.facts),
            }
            for hit in rec.fired
        ],
    }


def evaluation_set_key(pairs: Sequence[tuple[str, str]]) -> str:
    """The key of a set of (rule id, version) pairs: SHA-256 of the sorted pairs as JSON, so
    every process (and migration 0006) names the same set alike without asking the database.
    A process sees few distinct sets (one per rulebook and modality), so keys are remembered."""
    pairs = tuple((rule_id, version) for rule_id, version in pairs)
    known = _SET_KEYS.get(pairs)
    if known is None:
        if len(_SET_KEYS) >= _SET_KEYS_KEPT:
            _SET_KEYS.clear()
        known = _SET_KEYS[pairs] = _set_key(pairs)
    return known


_SET_KEYS: dict[tuple[tuple[str, str], ...], str] = {}
_SET_KEYS_KEPT = 256


def _set_key(pairs: Sequence[tuple[str, str]]) -> str:
    canonical = json.dumps(sorted([rule_id, version] for rule_id, version in pairs), separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_PLAIN = frozenset({int, float, bool, type(None)})
_FHIR_ID = re.compile(r"[A-Za-z0-9.\-]{1,64}")


class _Scrubber:
    """Replaces the raw patient id (alone or as a `Patient/<id>` reference) in strings.

    A guard, not a licence: the pipeline should not put the id in evidence or facts, but
    if a Patient reference slips into them the log still holds only the keyed hash.
    """

    def __init__(self, patient_id: str, patient_hash: str) -> None:
        self._raw = patient_id
        self._ref = f"Patient/{patient_id}"
        self._masked = f"Patient/hmac-{patient_hash}"
        # The id as it reads inside JSON text, when JSON writes it unchanged (FHIR id characters).
        self._raw_in_json = patient_id.encode() if _FHIR_ID.fullmatch(patient_id) else None

    def __call__(self, value: Any) -> Any:
        """``value`` with the id replaced and unstorable characters cleaned, as a copy; a
        container that needs neither is returned as it is, found so from its JSON text
        (orjson refuses lone surrogates; it writes NUL as an escape), which costs a tenth of
        the walk."""
        if type(value) is dict or type(value) is list:
            try:
                text = orjson.dumps(value, option=ORJSON_STRICT)
            except TypeError:
                return self._walk(value)
            if self._raw_in_json is not None and self._raw_in_json not in text and b"\\u0000" not in text:
                return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        # Exact types first: a decision's facts are hundreds of plain values, and the ABC
        # checks below cost a quarter of the walk (benchmarks/decision_write.py).
        kind = type(value)
        if kind is dict:
            return {key: self._walk(item) for key, item in value.items()}
        if kind is str:
            return self._text(value)
        if kind in _PLAIN:
            return value
        if kind is list or kind is tuple:
            return [self._walk(item) for item in value]
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, Mapping):
            return {key: self._walk(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(item) for item in value]
        return value

    def _text(self, value: str) -> str:
        value = clean_text(value)
        if self._raw and (value == self._raw or value == self._ref):
            return self._masked
        if self._raw and value.startswith(self._ref + "/"):
            return self._masked + value[len(self._ref) :]
        return value


def _offered(card: Any, item: FeedbackItem) -> dict[str, Any]:
    """The display (and system) of the override reason as the card offered it, when the
    client sent only its code: the stored feedback keeps its meaning."""
    if card is None or not item.override_code or item.override_display:
        return {}
    shown = (card.override_reasons or {}).get(item.override_code)
    if shown is None:
        return {}
    return {"override_display": shown, "override_system": item.override_system or OVERRIDE_REASON_SYSTEM}


def clean_text(value: str) -> str:
    """Text every database can store: NUL (PostgreSQL refuses it) and lone surrogates (not
    encodable as UTF-8) become U+FFFD. Only derived text passes here (evidence, facts,
    data gaps); identifiers are refused at the door instead (see cds_hooks.hooks)."""
    if "\x00" not in value and value.isascii():
        return value
    value = value.replace("\x00", "\ufffd")
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)


def _feedback_row(service_id: str, item: FeedbackItem, received_at: datetime) -> dict[str, Any]:
    # FeedbackItem fields are named after their columns.
    return {
        **vars(item),
        "accepted_suggestions": list(item.accepted_suggestions),
        "service_id": service_id,
        "received_at": received_at,
        "dedupe_key": item.dedupe_key(),
    }


def _describe(exc: BaseException) -> str:
    """An error description safe to log: class names and the first line of DB messages."""
    if isinstance(exc, (ValueError, AuditStoreClosedError)):
        return f"{type(exc).__name__}: {exc}"
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
    driver_error = orig if isinstance(orig, BaseException) else exc if isinstance(exc, sqlite3.Error) else None
    if driver_error is not None:
        # Later lines (PostgreSQL DETAIL: "Failing row contains ...") may echo row values.
        text = str(driver_error).strip()
        first_line = text.splitlines()[0] if text else ""
        if driver_error is exc:
            return f"{type(exc).__name__}: {first_line}"
        return f"{type(exc).__name__} ({type(driver_error).__name__}: {first_line})"
    return type(exc).__name__


def _is_refusal(exc: BaseException) -> bool:
    """The database refused a spooled decision's rows (they can never go in), as opposed to
    being unavailable."""
    if isinstance(exc, (ValueError, TypeError, KeyError, sqlite3.IntegrityError, sqlite3.DataError)):
        return True
    core_errors = sys.modules.get("sqlalchemy.exc")  # not loaded: not one of its errors
    return core_errors is not None and isinstance(exc, (core_errors.IntegrityError, core_errors.DataError))


def is_database_error(exc: BaseException) -> bool:
    """An error of the database or its driver (SQLite's or SQLAlchemy's), as opposed to a bug."""
    if isinstance(exc, sqlite3.Error):
        return True
    core_errors = sys.modules.get("sqlalchemy.exc")  # not loaded: not one of its errors
    return core_errors is not None and isinstance(exc, core_errors.SQLAlchemyError)


def is_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or did not answer in time (a 503, not a 500)."""
    if isinstance(exc, (StoreTimeout, sqlite3.OperationalError, sqlite3.InterfaceError)):
        return True
    core_errors = sys.modules.get("sqlalchemy.exc")
    return core_errors is not None and isinstance(exc, (core_errors.OperationalError, core_errors.InterfaceError))
