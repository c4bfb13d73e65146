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
import sqlite3
import tempfile
from pathlib import Path

from .audit.sqlite_direct import backend_name, sqlite_file
from .audit.store import AuditStore, is_database_error
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
    """The database URL without its password (``***``), for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return "<unparseable database URL>"
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return f"{scheme}://{netloc}{slash}{tail}"


def sqlite_path(url: str) -> Path | None:
    """The file of a file-backed SQLite URL, else None."""
    if "://" not in url:
        raise StateError(f"{PREFIX}DATABASE_URL is not a database URL: {safe_url(url)}")
    if backend_name(url) != "sqlite":
        return None
    plain = sqlite_file(url)
    if plain is not None:
        return Path(plain.path)
    if "?" not in url:
        return None  # in memory
    from sqlalchemy.engine import make_url  # URL options: read as SQLAlchemy reads them

    database = make_url(url).database
    return None if database in (None, "", ":memory:") else Path(str(database))


def _first_line(exc: BaseException) -> str:
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
    if path is not None and sqlite_file(url) is not None:
        return _stored_sqlite_state(path)
    from sqlalchemy import create_engine, inspect, select, text
    from sqlalchemy.exc import SQLAlchemyError

    from .audit.models import StoreMeta

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


def _stored_sqlite_state(path: Path) -> tuple[str | None, bool]:
    """`_stored_state` of a SQLite file, read through the driver, read-only."""
    try:
        driver = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open the decision log {path}: {_first_line(exc)}") from None
    try:
        tables = {row[0] for row in driver.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        fingerprint = None
        if "store_meta" in tables:
            row = driver.execute("SELECT value FROM store_meta WHERE name = ?", (FINGERPRINT,)).fetchone()
            fingerprint = None if row is None else str(row[0])
        # A decision may still be in the journal, not yet filed (audit/journal.py).
        has_decisions = any(
            table in tables and driver.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
            for table in ("decision", "pending_decision")
        )
        return fingerprint, has_decisions
    except sqlite3.Error as exc:
        raise StateError(f"cannot open the decision log {path}: {_first_line(exc)}") from None
    finally:
        driver.close()


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
    stored = store.keep_meta(FINGERPRINT, mine)  # of concurrent first starts, one records it
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
    except BaseException as exc:
        store.dispose()
        if is_database_error(exc):
            message = f"cannot open the decision log {safe_url(config.database_url)}: {_first_line(exc)}"
            raise StateError(message) from None
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
