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
import math
import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import orjson
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    make_url,
    select,
)
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool

from .. import metrics
from ..overrides import SYSTEM as OVERRIDE_REASON_SYSTEM
from .models import Card, Decision, DecisionOrder, EvaluationSet, EvaluationSetMember, Feedback, RuleHit, metadata
from .records import DecisionRecord, FeedbackItem
from .spool import Spool
from .writer import ORJSON_STRICT, DecisionWriter, core_error
from .writer_connection import WriterConnections

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert

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
    """Decision and feedback storage over one SQLAlchemy engine (thread-safe)."""

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
        self._url = _normalise_url(url)
        if self._url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("the audit store supports sqlite:// and postgresql+psycopg:// URLs")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._timeout = timeout_s
        self._engine = _build_engine(self._url, pool_size, timeout_s)
        self._in_caller_thread = self._url.get_backend_name() == "sqlite"
        self._closed = False
        self._workers = pool_size + 2
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0
        self._executor_lock = threading.Lock()
        self.spool = Spool(spool_dir) if spool_dir is not None else None
        # Evaluation sets this process has seen committed: the usual call writes no set.
        self._stored_sets: set[str] = set()
        self._writer = DecisionWriter(self._engine.dialect, lock_wait_s=timeout_s)
        self._writer_connections: WriterConnections | None = None
        if self._url.get_backend_name() == "sqlite":
            self._writer_connections = WriterConnections(self._engine, timeout_s, keep=pool_size)
            event.listen(self._engine, "begin", partial(_sqlite_on_begin, self._writer))
        # A forked worker (gunicorn --preload) must never reuse the parent's connections:
        # two processes on one socket lose writes. SQLAlchemy's recipe for forked processes.
        os.register_at_fork(after_in_child=partial(_forget_inherited_connections, weakref.ref(self._engine)))

    @property
    def engine(self) -> Engine:
        """The shared engine, for other tables of the service database (``seen_jti``)."""
        return self._engine

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
            with self._engine.begin() as conn:
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
        imports Alembic (~0.3 s, ~15 MB); only an older schema is migrated through it."""
        self._check_open()
        with _MIGRATE_LOCK:  # not beside another thread's migration: its DDL locks the file
            done = self.schema_is_current() or self._create_if_empty()
        if done:
            self._engine.dispose()  # hold no connection across a later fork
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("path_separator", "os")
        # ConfigParser interpolates '%', which URL-encoded passwords contain.
        url = self._url.render_as_string(hide_password=False).replace("%", "%%")
        cfg.set_main_option("sqlalchemy.url", url)
        with _MIGRATE_LOCK, self._engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        self._engine.dispose()  # hold no connection across a later fork

    def _create_if_empty(self) -> bool:
        """Create the newest schema with ``metadata.create_all`` and stamp its revision, if the
        database has no table at all; True when it did. Workers starting together are
        serialised as Alembic's are (PostgreSQL advisory lock; SQLite's BEGIN IMMEDIATE),
        and the loser finds tables and leaves them to the caller's check."""
        heads = head_revisions()
        if len(heads) != 1:
            return False
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            if inspect(conn).get_table_names():
                return False
            metadata.create_all(conn)
            _VERSION.create(conn)
            conn.execute(insert(_VERSION).values(version_num=next(iter(heads))))
        return True

    def schema_is_current(self) -> bool:
        """True when the database's Alembic version is the newest migration (read-only check)."""
        heads = head_revisions()
        if not heads:
            return False
        with self._engine.connect().execution_options(audit_read_only=True) as conn:
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
        self._engine.dispose()

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
        try:
            connections = self._writer_connections
            if connections is not None and not ignore_existing and (key is None or key in self._stored_sets):
                # The usual call on SQLite: its set is stored, the decision goes in on its own.
                self._writer.write_sqlite_transaction(connections, {**rows, "decision": decision}, journal=journal)
                return True
            with self._engine.begin() as conn:
                if key is not None and (ignore_existing or key not in self._stored_sets):
                    _store_evaluation_set(conn, key, pairs)
                if not ignore_existing:
                    self._writer.write(conn, {**rows, "decision": decision})
                else:
                    # Rare (spool drain), so plain Core: rows of any spooled format go in.
                    stmt = dialect_insert(conn.dialect.name, Decision).values(decision)
                    if not wrote_row(
                        conn, stmt.on_conflict_do_nothing(index_elements=["decision_id"]), Decision.decision_id
                    ):
                        return False
                    for model in (DecisionOrder, Card, RuleHit):
                        if rows[model.__tablename__]:
                            conn.execute(insert(model), rows[model.__tablename__])
        except BaseException:
            # The set may be gone (a database recreated under this process): store it again.
            self._stored_sets.discard(key or "")
            raise
        if key is not None:
            self._stored_sets.add(key)
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
            except (IntegrityError, DataError, ValueError, TypeError, KeyError) as exc:
                log.error("spooled decision refused (%s)", _describe(exc))
                self.spool.quarantine(claimed)
                continue
            except Exception as exc:
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
        received_at = datetime.now(UTC)
        results: list[dict[str, Any]] = []
        with self._engine.begin() as conn:
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
                stored = _insert_ignoring_duplicate(conn, row)
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
        cutoff = datetime.now(UTC) - timedelta(days=days)
        old = select(Decision.decision_id).where(Decision.created_at < cutoff)
        with self._engine.begin() as conn:
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
        with self.reading() as conn:
            return int(conn.execute(select(func.count()).select_from(Decision)).scalar_one())

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only connection for queries (`analytics`); takes no write lock."""
        self._check_open()
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(postgresql_readonly=True)
            else:
                conn.execution_options(audit_read_only=True)
            yield conn

    def _check_open(self) -> None:
        if self._closed:
            raise AuditStoreClosedError("audit store is closed; create a new AuditStore")


# -- schema version ----------------------------------------------------------------------

VERSION_TABLE = "alembic_version"
# Serialises schema changes of workers and hosts on PostgreSQL (pg_advisory_xact_lock); the
# constant names "cryo-cds audit migrations". Also taken by migrations/env.py.
MIGRATION_LOCK_ID = 0x4352_594F_4155_4454
# Alembic's version table, as Alembic creates it (for stamping a database made by create_all).
_VERSION = Table(
    VERSION_TABLE,
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)
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


# -- engine set-up -----------------------------------------------------------------------


def _forget_inherited_connections(engine_ref: weakref.ref[Engine]) -> None:
    engine = engine_ref()
    if engine is not None:
        engine.dispose(close=False)


def _normalise_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        # Bare "postgresql://" means psycopg2 to SQLAlchemy; the project ships psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _build_engine(url: URL, pool_size: int, timeout_s: float) -> Engine:
    if url.get_backend_name() != "sqlite":
        # libpq's connect_timeout is whole seconds (minimum 2); the statement and lock timeouts
        # end server-side waits; a hung network is left to AuditStore.run_bounded.
        ms = int(timeout_s * 1000)
        pg_args: dict[str, Any] = {
            "connect_timeout": max(2, math.ceil(timeout_s)),
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": ms,
        }
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=pool_size,
            pool_timeout=timeout_s,
            hide_parameters=True,
            connect_args=pg_args,
        )
    busy_ms = int(timeout_s * 1000)
    connect_args = {"check_same_thread": False, "timeout": timeout_s}
    # Every connection to ":memory:" is a new empty database, so share one there.
    memory = url.database in (None, "", ":memory:")
    pooling: dict[str, Any] = {"poolclass": StaticPool} if memory else {"pool_size": pool_size}
    if "pool_size" in pooling:
        pooling["pool_timeout"] = timeout_s
    engine = create_engine(url, connect_args=connect_args, hide_parameters=True, **pooling)
    event.listen(engine, "connect", partial(_sqlite_on_connect, busy_ms))
    return engine


def _sqlite_on_connect(busy_ms: int, dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; busy_timeout makes writers queue, not fail.

    synchronous=NORMAL (in WAL mode) skips the fsync at each commit, about half the cost of a
    decision write (benchmarks/decision_write.py). A committed decision still survives a killed
    process (SIGKILL, OOM): the WAL is in the operating system's hands once written. Only an
    OS crash or power loss can lose the last commits; a site that must survive those runs
    PostgreSQL, whose synchronous_commit stays on."""
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see below)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(writer: DecisionWriter, conn: Connection) -> None:
    """Files the decision journal first (`journal.py`), so the transaction sees every decision
    written so far, unless it says it reads none (``audit_no_filing``: token replay checks,
    readiness pings). Writers take the lock up front: a deferred transaction that reads first
    and then writes can fail with SQLITE_BUSY at once instead of waiting out the busy timeout."""
    options = conn.get_execution_options()
    driver: Any = conn.connection.dbapi_connection
    if not options.get("audit_no_filing") and driver is not None:
        try:
            writer.file_pending(driver)
        except sqlite3.Error as exc:  # a locked log: OperationalError, as Core raises it
            raise core_error(exc) from exc
    if options.get("audit_read_only"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


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


def _store_evaluation_set(conn: Connection, key: str, pairs: Sequence[tuple[str, str]]) -> None:
    """Insert the set and its members unless it is there. A concurrent writer of the same set
    makes the INSERT wait for its commit and then skip, so members are written once, whole."""
    stmt = dialect_insert(conn.dialect.name, EvaluationSet).values(set_key=key)
    if wrote_row(conn, stmt.on_conflict_do_nothing(index_elements=["set_key"]), EvaluationSet.set_key):
        conn.execute(
            insert(EvaluationSetMember),
            [{"set_key": key, "rule_id": rule_id, "rule_version": version} for rule_id, version in pairs],
        )


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


def dialect_insert(dialect_name: str, table: Any) -> PgInsert | SqliteInsert:
    """An INSERT of the dialect at hand, so that ON CONFLICT clauses can be added to it."""
    if dialect_name == "postgresql":
        # Imported here: SQLAlchemy's PostgreSQL dialect package loads every PostgreSQL driver
        # module it knows (~2 MB per process), which a SQLite deployment never needs.
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    return sqlite_insert(table)


def wrote_row(conn: Connection, stmt: PgInsert | SqliteInsert, key: Any) -> bool:
    """Run an INSERT ... ON CONFLICT; True when it inserted or updated a row."""
    if conn.dialect.insert_returning:
        # With RETURNING in play (implicit for the primary key) rowcount reads -1.
        return conn.execute(stmt.returning(key)).first() is not None
    return conn.execute(stmt).rowcount == 1


def _insert_ignoring_duplicate(conn: Connection, row: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT (dedupe_key) DO NOTHING; True when a row was written."""
    stmt = dialect_insert(conn.dialect.name, Feedback).values(row)
    return wrote_row(conn, stmt.on_conflict_do_nothing(index_elements=["dedupe_key"]), Feedback.id)


def _describe(exc: BaseException) -> str:
    """An error description safe to log: class names and the first line of DB messages."""
    if isinstance(exc, (ValueError, AuditStoreClosedError)):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        # Later lines (PostgreSQL DETAIL: "Failing row contains ...") may echo row values.
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        return f"{type(exc).__name__} ({type(exc.orig).__name__}: {first_line})"
    return type(exc).__name__
