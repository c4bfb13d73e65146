"""The decision log on a SQLite file without SQLAlchemy (cds_hooks/audit/sqlite_direct.py) is
the log Core makes: the derived schema module is current, a database it creates is the one
``create_all`` creates, its INSERTs are Core's, every column's values are bound as Core binds
them, and its URL reading is SQLAlchemy's."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, make_url
from sqlalchemy.dialects import sqlite

from cds_hooks.audit import sqlite_direct
from cds_hooks.audit.core import VERSION
from cds_hooks.audit.models import metadata
from cds_hooks.audit.sqlite_schema import COLUMNS
from cds_hooks.audit.store import AuditStore, head_revisions
from cds_hooks.devtools import sqlite_schema

GENERATED = Path(__file__).resolve().parents[1] / "cds_hooks" / "audit" / "sqlite_schema.py"
KEY = b"sqlite-schema-test-patient-key-01"
DIALECT = sqlite.dialect()
TABLES = [*metadata.sorted_tables, VERSION]


def test_the_schema_module_is_what_the_models_derive() -> None:
    written = GENERATED.read_text(encoding="utf-8")
    assert written == sqlite_schema.render(), (
        "run: python -m cds_hooks.devtools.sqlite_schema > cds_hooks/audit/sqlite_schema.py"
    )


def _master(path: Path) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    return [tuple(row) for row in rows]


def test_a_log_created_through_the_driver_is_the_one_create_all_creates(tmp_path: Path) -> None:
    direct, core = tmp_path / "direct.db", tmp_path / "core.db"
    store = AuditStore(f"sqlite:///{direct}", KEY)
    try:
        store.migrate()
    finally:
        store.dispose()
    engine = create_engine(f"sqlite:///{core}")
    with engine.begin() as conn:
        metadata.create_all(conn)
        VERSION.create(conn)
        conn.execute(insert(VERSION).values(version_num=next(iter(head_revisions()))))
    engine.dispose()

    assert _master(direct) == _master(core)
    assert len(_master(direct)) > 20
    with sqlite3.connect(direct) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(next(iter(head_revisions())),)]


def test_a_second_start_finds_the_schema_current_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    for _ in range(2):
        store = AuditStore(f"sqlite:///{path}", KEY)
        try:
            store.migrate()
            assert store.schema_is_current()
        finally:
            store.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_the_columns_are_the_tables_in_table_order(table: Any) -> None:
    assert [name for name, _kind in COLUMNS[table.name]] == [column.name for column in table.columns]


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_insert_is_the_one_core_compiles(table: Any) -> None:
    every = [column.name for column in table.columns]
    without_serial = [c.name for c in table.columns if not (c.primary_key and c.autoincrement is True)]
    required = [c.name for c in table.columns if c.name in without_serial and not c.nullable]
    for keys in (every, without_serial, list(reversed(without_serial)), required):
        compiled = insert(table).compile(dialect=DIALECT, column_keys=keys)
        plan = sqlite_direct.insert_plan(table.name, keys)
        assert plan.sql == str(compiled)
        assert plan.order == tuple(compiled.positiontup or ())


def test_a_column_the_table_lacks_is_refused() -> None:
    with pytest.raises(KeyError, match="no_such_column"):
        sqlite_direct.insert_plan("decision", ["decision_id", "no_such_column"])


AWARE = [
    datetime(2026, 12, 7, 10, 30, 15, 123456, tzinfo=UTC),
    datetime(2026, 12, 7, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))),  # another day in UTC
    datetime(1999, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5, minutes=30))),
]
SAMPLES: dict[str, list[Any]] = {
    "value": ["text", "ünïcode ✓", "", 0, 42, -7, None],
    "float": [0, 1, 2.5, -1e-9, 1e300, None],
    "utc_datetime": [*AWARE, None],
    "json": [
        {"a": [1, 2.5, None, True], "ü": "✓"},
        [],
        ["x", {"nested": {"deep": [1]}}],
        "plain",
        3,
        None,
        {"float": float("nan")},
    ],
    "json_or_null": [{"a": 1}, [1, "two"], None, "text"],
    "boolean": [True, False, None],
    "binary": [b"\x00\x01body", b""],
}


def _core_bind(table: str, column: str) -> Any:
    kind = metadata.tables[table].c[column].type if table in metadata.tables else VERSION.c[column].type
    impl = kind.dialect_impl(DIALECT)
    processor = impl.bind_processor(DIALECT)
    if hasattr(kind, "process_bind_param"):  # a TypeDecorator (UTCDateTime) runs its own step first
        inner = processor

        def processor(value: Any) -> Any:
            value = kind.process_bind_param(value, DIALECT)
            return inner(value) if inner is not None else value

    return processor or (lambda value: value)


@pytest.mark.parametrize(
    ("table", "column", "kind"),
    [(table, column, kind) for table, columns in COLUMNS.items() for column, kind in columns],
)
def test_every_value_is_bound_as_core_binds_it(table: str, column: str, kind: str) -> None:
    core = _core_bind(table, column)
    for value in SAMPLES[kind]:
        ours = sqlite_direct.bound(table, column, value)
        theirs = core(value)
        if isinstance(theirs, memoryview):
            assert bytes(ours) == bytes(theirs)
        else:
            assert ours == theirs, (table, column, value)
            assert type(ours) is type(theirs)


def test_a_naive_timestamp_is_refused_as_core_refuses_it() -> None:
    naive = datetime(2026, 12, 7, 10, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        sqlite_direct.bound("decision", "created_at", naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        _core_bind("decision", "created_at")(naive)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///decisions.db",
        "sqlite:////var/lib/cryo-cds/decisions.db",
        "sqlite+pysqlite:////tmp/a%20b.db",
        "sqlite:///relative/dir/log.db",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file.db?timeout=3",
        "postgresql://user:secret@db.example.org:5432/audit",
        "postgres://u@h/d",
        "postgresql+psycopg://u:p@h/d",
    ],
)
def test_urls_are_read_as_sqlalchemy_reads_them(url: str) -> None:
    parsed = make_url(url)
    expected = parsed.get_backend_name()
    assert sqlite_direct.backend_name(url) == ("postgresql" if expected == "postgres" else expected)
    target = sqlite_direct.sqlite_file(url)
    if target is not None:  # the driver opens exactly the file SQLAlchemy would
        assert parsed.get_backend_name() == "sqlite" and not parsed.query
        assert target.path == parsed.database
    else:
        assert parsed.get_backend_name() != "sqlite" or parsed.query or parsed.database in (None, "", ":memory:")
