"""Where the service keeps its state (the data directory: SQLite decision log and patient-hash
key) and the guard that keeps one log under one key.

Why: the log's patient hashes are only comparable under one key. A missing key file next to
an existing log, or a different configured key, would silently start a second, unlinkable
series of hashes; instead the database remembers a fingerprint of its key and a mismatch
stops the service or command with a one-line explanation.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from .audit.models import StoreMeta
from .audit.store import AuditStore
from .config import PREFIX, Config, ConfigError, spool_dir

log = logging.getLogger(__name__)

FINGERPRINT = "patient_hash_key_fingerprint"
_MIN_KEY_BYTES = 16


class StateError(ConfigError):
    """The data directory, key or log cannot be used as configured; the message says why."""


def key_fingerprint(key: bytes) -> str:
    """A short, non-reversible name for a key (an HMAC of a constant under the key)."""
    return hmac.new(key, b"cryo-cds patient-hash key fingerprint v1", hashlib.sha256).hexdigest()[:16]


def safe_url(url: str) -> str:
    """The database URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def sqlite_path(url: str) -> Path | None:
    """The file of a file-backed SQLite URL, else None."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StateError(f"{PREFIX}DATABASE_URL is not a database URL: {safe_url(url)}") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _first_line(exc: SQLAlchemyError) -> str:
    """The driver's message, first line only: no SQL, no parameters."""
    orig = getattr(exc, "orig", None)
    return (str(orig if orig is not None else exc).splitlines() or [type(exc).__name__])[0]


def describe(config: Config) -> str:
    """One line naming the data directory, the log and where the key comes from."""
    key = f"{PREFIX}PATIENT_HASH_KEY" if config.patient_hash_key is not None else str(config.key_file)
    return f"data dir {config.data_dir}; decision log {safe_url(config.database_url)}; patient-hash key {key}"


def _stored_state(url: str) -> tuple[str | None, bool]:
    """(stored key fingerprint, whether any decision exists), creating nothing."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return None, False
    engine = create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url
    )
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            fingerprint = None
            if "store_meta" in tables:
                fingerprint = conn.execute(
                    select(StoreMeta.value).where(StoreMeta.name == FINGERPRINT)
                ).scalar_one_or_none()
            # A decision may still be in the journal, not yet filed (audit/journal.py).
            has_decisions = any(
                table in tables and conn.execute(text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None
                for table in ("decision", "pending_decision")
            )
            return fingerprint, has_decisions
    except SQLAlchemyError as exc:
        raise StateError(f"cannot open the decision log {safe_url(url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def resolve_patient_hash_key(config: Config) -> bytes:
    """The configured key, else the data directory's key file, else a new key file; but never
    a new key beside a log that already holds decisions (that would split the log)."""
    if config.patient_hash_key is not None:
        return config.patient_hash_key
    path = config.key_file
    if path.is_file():
        key = path.read_bytes().strip()
        if len(key) < _MIN_KEY_BYTES:
            raise StateError(f"patient-hash key file {path} holds fewer than {_MIN_KEY_BYTES} bytes")
        return key
    if path.exists():
        raise StateError(f"patient-hash key path {path} is not a file")
    fingerprint, has_decisions = _stored_state(config.database_url)
    if fingerprint is not None or has_decisions:
        raise StateError(
            f"the decision log {safe_url(config.database_url)} was written with a patient-hash key "
            f"(fingerprint {fingerprint or 'not recorded'}) but {path} is missing; restore that file "
            f"or set {PREFIX}PATIENT_HASH_KEY, instead of starting a second key"
        )
    key = secrets.token_hex(32).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked into place: a worker starting at the
        # same moment sees either no key file or a complete one, never an empty file.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".patient-hash.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(key)
            os.link(temporary, path)
        finally:
            os.unlink(temporary)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes().strip()
    except OSError as exc:
        raise StateError(f"cannot create the patient-hash key {path}: {exc.strerror}") from None
    log.info("created a new patient-hash key in %s", path)
    return key


def check_fingerprint(store: AuditStore, key: bytes, url: str) -> None:
    """Record the key's fingerprint in a log that has none; refuse a log written under another."""
    mine = key_fingerprint(key)
    with store.engine.begin() as conn:
        stored = conn.execute(select(StoreMeta.value).where(StoreMeta.name == FINGERPRINT)).scalar_one_or_none()
        if stored is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(StoreMeta).values(name=FINGERPRINT, value=mine))
                stored = mine
            except IntegrityError:  # a concurrent first start recorded it
                stored = conn.execute(select(StoreMeta.value).where(StoreMeta.name == FINGERPRINT)).scalar_one()
    if stored != mine:
        raise StateError(
            f"the decision log {safe_url(url)} was written with another patient-hash key (fingerprint "
            f"{stored}; this key's is {mine}); point {PREFIX}DATA_DIR or {PREFIX}PATIENT_HASH_KEY at the "
            "matching key, or use another database"
        )


def open_audit_store(config: Config) -> AuditStore:
    """The migrated decision log of ``config``, under the one key it was written with."""
    path = sqlite_path(config.database_url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the directory {path.parent}: {exc.strerror}") from None
    key = resolve_patient_hash_key(config)
    store = AuditStore(config.database_url, key, timeout_s=config.db_timeout_s, spool_dir=spool_dir(config))
    try:
        store.migrate()
        check_fingerprint(store, key, config.database_url)
    except SQLAlchemyError as exc:
        store.dispose()
        raise StateError(f"cannot open the decision log {safe_url(config.database_url)}: {_first_line(exc)}") from None
    except BaseException:
        store.dispose()
        raise
    log.info("%s", describe(config))
    return store


__all__ = [
    "StateError",
    "check_fingerprint",
    "describe",
    "key_fingerprint",
    "open_audit_store",
    "resolve_patient_hash_key",
    "safe_url",
    "sqlite_path",
]
