"""The data directory and the one-key guard, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from cds_hooks.config import Config, from_env
from cds_hooks.state import StateError, describe, key_fingerprint, open_audit_store, safe_url, sqlite_path

KEY_A, KEY_B = b"a" * 32, b"b" * 32


def test_the_data_dir_holds_the_log_and_a_private_key_file(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "state")
    store = open_audit_store(config)
    store.dispose()
    key_file = tmp_path / "state" / "patient-hash.key"
    assert (tmp_path / "state" / "decisions.db").is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes().strip()) == 64
    assert sorted(p.name for p in (tmp_path / "state").iterdir() if p.name.startswith(".")) == []
    again = open_audit_store(config)  # same key file: accepted
    again.dispose()
    assert describe(config) == (
        f"data dir {tmp_path / 'state'}; decision log sqlite:///{tmp_path / 'state'}"
        f"/decisions.db; patient-hash key {key_file}"
    )


def test_the_environment_sets_the_data_dir_and_the_database_follows(tmp_path: Path) -> None:
    config = from_env({"CDS_HOOKS_DATA_DIR": str(tmp_path / "x")})
    assert config.data_dir == tmp_path / "x"
    assert config.database_url == f"sqlite:///{tmp_path / 'x' / 'decisions.db'}"
    explicit = from_env({"CDS_HOOKS_DATA_DIR": str(tmp_path), "CDS_HOOKS_DATABASE_URL": "sqlite:///elsewhere.db"})
    assert explicit.database_url == "sqlite:///elsewhere.db"


def test_a_log_refuses_a_second_key(db_url: str, tmp_path: Path) -> None:
    store = open_audit_store(Config(data_dir=tmp_path, database_url=db_url, patient_hash_key=KEY_A))
    store.dispose()
    with pytest.raises(
        StateError,
        match=f"another patient-hash key \\(fingerprint {key_fingerprint(KEY_A)}; "
        f"this key's is {key_fingerprint(KEY_B)}\\)",
    ):
        open_audit_store(Config(data_dir=tmp_path, database_url=db_url, patient_hash_key=KEY_B))
    store = open_audit_store(Config(data_dir=tmp_path, database_url=db_url, patient_hash_key=KEY_A))
    store.dispose()


def test_fingerprints_name_keys_without_revealing_them() -> None:
    assert key_fingerprint(KEY_A) != key_fingerprint(KEY_B)
    assert len(key_fingerprint(KEY_A)) == 16 and key_fingerprint(KEY_A) == key_fingerprint(b"a" * 32)


def test_decisions_still_in_the_journal_count_as_a_log_with_decisions(tmp_path: Path) -> None:
    """A log written before fingerprints were kept, whose decisions are all still in the
    journal: without its key file, no second key is started beside them."""
    config = Config(data_dir=tmp_path)
    open_audit_store(config).dispose()
    with sqlite3.connect(tmp_path / "decisions.db") as conn:
        conn.execute("DELETE FROM store_meta")
        conn.execute("INSERT INTO pending_decision (body) VALUES (?)", (b"[]",))
    (tmp_path / "patient-hash.key").unlink()

    with pytest.raises(StateError, match="was written with a patient-hash key"):
        open_audit_store(config)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://cds:s3cr%40t@db.example.org:5432/audit?sslmode=require",
        "postgresql://cds:plain@localhost/audit",
        "postgresql://cds@localhost/audit",
        "sqlite:////var/lib/cryo-cds/decisions.db",
        "sqlite://",
    ],
)
def test_messages_name_the_database_without_its_password_as_sqlalchemy_would(url: str) -> None:
    from sqlalchemy import make_url

    shown = safe_url(url)
    assert shown == make_url(url).render_as_string(hide_password=True)
    assert "s3cr" not in shown and "plain" not in shown


def test_a_url_that_is_no_url_is_named_so() -> None:
    assert safe_url("decisions.db") == "<unparseable database URL>"
    with pytest.raises(StateError, match="not a database URL"):
        sqlite_path("decisions.db")
