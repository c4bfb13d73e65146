"""SQLite's decision journal (cds_hooks/audit/journal.py) on a real database file: a hook
call's decision is committed as one journal row; every transaction the store opens files
the journal first, and a writer files it every FILE_EVERY rows; filed rows are the rows a
direct write stores; a killed process loses nothing; a row the tables refuse is kept, with
its reason, and does not hold the others back."""

from __future__ import annotations

import json
import logging
import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_hooks.audit import AuditStore, analytics, journal
from cds_hooks.replay import DatabaseJtiCache

from .test_audit_store import EVALUATED, KEY, card, decision, hit
from .test_database_faults import _app as database_faults_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[AuditStore]:
    """A log holding one filed decision ("w-0"): the first call of an evaluation set stores
    the set in the tables and, like every call, its decision in the journal."""
    store = AuditStore(f"sqlite:///{db_path}", KEY)
    store.migrate()
    store.record_or_spool(call(0, "w"), EVALUATED)
    assert raw_count(db_path, "evaluation_set") == 1
    assert raw_count(db_path, "pending_decision") == 1
    store.count_decisions()  # a reader files it
    assert raw_count(db_path, "pending_decision") == 0
    yield store
    store.dispose()


def raw_count(db_path: Path, table: str, where: str = "") -> int:
    """Rows as a plain SQLite reader sees them, without the store filing anything."""
    with sqlite3.connect(db_path) as conn:
        count: int = conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0]
    return count


def raw_rows(db_path: Path, table: str, order: str) -> list[dict[str, Any]]:
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY {order}")]


def call(n: int, prefix: str = "d") -> Any:
    """A hook call's decision with one hit and one card."""
    return decision(f"{prefix}-{n}", (hit("CI-RAYNAUD", f"{prefix}-c{n}"),), (card(f"{prefix}-c{n}", "CI-RAYNAUD"),))


def test_a_hook_calls_decision_is_one_journal_row_until_someone_reads(store: AuditStore, db_path: Path) -> None:
    for n in range(3):
        assert store.record_or_spool(call(n), EVALUATED)

    assert raw_count(db_path, "pending_decision") == 3
    assert raw_count(db_path, "decision") == 1

    assert store.count_decisions() == 4  # a reading transaction files the journal first
    assert raw_count(db_path, "pending_decision") == 0
    assert raw_count(db_path, "decision") == 4
    assert raw_count(db_path, "card") == 4
    assert raw_count(db_path, "rule_hit") == 4
    assert raw_count(db_path, "decision_order") == 8


def test_analytics_see_the_decisions_still_in_the_journal(store: AuditStore) -> None:
    for n in range(2):
        store.record_or_spool(call(n), EVALUATED)

    report = analytics.rule_summary(store)

    raynaud = next(row for row in report if row["rule_id"] == "CI-RAYNAUD")
    assert raynaud["fires"] == 3


def test_a_filed_decision_is_the_row_a_direct_write_stores(tmp_path: Path) -> None:
    """Same decision through the journal and through the direct write: identical rows, bar
    the serial ids."""
    stored: list[dict[str, list[dict[str, Any]]]] = []
    first, rec = call(0, "w"), call(1)
    for way in ("journal", "direct"):
        path = tmp_path / f"{way}.db"
        one = AuditStore(f"sqlite:///{path}", KEY)
        one.migrate()
        one.record_decision(first, EVALUATED)  # stores the evaluation set
        if way == "journal":
            one.record_or_spool(rec, EVALUATED)
            assert raw_count(path, "pending_decision") == 1
            one.count_decisions()
        else:
            one.record_decision(rec, EVALUATED)
        one.dispose()
        stored.append(
            {
                table: [{k: v for k, v in row.items() if k != "id"} for row in raw_rows(path, table, "rowid")]
                for table in ("decision", "decision_order", "card", "rule_hit")
            }
        )
    assert stored[0] == stored[1]
    assert stored[0]["decision"][1]["decision_id"] == "d-1"  # real rows, not empty tables


def test_a_writer_files_the_journal_every_file_every_rows(store: AuditStore, db_path: Path) -> None:
    for n in range(journal.FILE_EVERY - 1):
        store.record_or_spool(call(n), EVALUATED)
    assert raw_count(db_path, "pending_decision") == journal.FILE_EVERY - 1

    store.record_or_spool(call(journal.FILE_EVERY), EVALUATED)

    assert raw_count(db_path, "pending_decision") == 0
    assert raw_count(db_path, "decision") == journal.FILE_EVERY + 1


def test_filing_keeps_the_order_of_the_calls(store: AuditStore, db_path: Path) -> None:
    for n in range(5):
        store.record_or_spool(call(n), EVALUATED)
    store.count_decisions()

    hits = raw_rows(db_path, "rule_hit", "id")

    assert [h["decision_id"] for h in hits] == ["w-0"] + [f"d-{n}" for n in range(5)]


def test_a_token_replay_check_does_not_file_the_journal(store: AuditStore, db_path: Path) -> None:
    store.record_or_spool(call(1), EVALUATED)

    assert DatabaseJtiCache(store.engine).add_if_absent("issuer|jti-1", expires_at=2e9, now=1e9)

    assert raw_count(db_path, "pending_decision") == 1
    assert store.count_decisions() == 2


def test_a_killed_process_loses_no_decision_from_the_journal(db_path: Path) -> None:
    """Decisions written by a process that is then SIGKILLed are all in the log."""
    AuditStore(f"sqlite:///{db_path}", KEY).migrate()
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_decision_journal import call
        from tests.test_audit_store import EVALUATED, KEY
        from cds_hooks.audit import AuditStore
        store = AuditStore({f"sqlite:///{db_path}"!r}, KEY)
        for n in range(6):
            assert store.record_or_spool(call(n), EVALUATED)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    assert raw_count(db_path, "pending_decision") == 6  # the first also stored its evaluation set

    after = AuditStore(f"sqlite:///{db_path}", KEY)
    try:
        assert after.count_decisions() == 6
    finally:
        after.dispose()


def test_a_row_the_tables_refuse_is_kept_with_its_reason_and_the_rest_are_filed(
    store: AuditStore, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.record_decision(call(1), EVALUATED)  # straight into the tables
    store.record_or_spool(call(2), EVALUATED)
    store.record_or_spool(call(1), EVALUATED)  # the same decision id again: refused when filed
    store.record_or_spool(call(3), EVALUATED)

    with caplog.at_level(logging.ERROR, logger="cds_hooks.audit"):
        assert store.count_decisions() == 4

    [kept] = raw_rows(db_path, "pending_decision", "seq")
    assert kept["problem"].startswith("IntegrityError: UNIQUE constraint failed")
    assert "could not be filed" in caplog.text
    assert [c["uuid"] for c in raw_rows(db_path, "card", "rowid")] == ["w-c0", "d-c1", "d-c2", "d-c3"]
    # later filings pass the refused row by
    store.record_or_spool(call(4), EVALUATED)
    assert store.count_decisions() == 5
    assert raw_count(db_path, "pending_decision") == 1


def test_a_direct_write_files_the_journal_first(store: AuditStore, db_path: Path) -> None:
    store.record_or_spool(call(1), EVALUATED)
    store.record_decision(call(2), EVALUATED)

    assert [h["decision_id"] for h in raw_rows(db_path, "rule_hit", "id")] == ["w-0", "d-1", "d-2"]
    assert raw_count(db_path, "pending_decision") == 0


def test_values_json_cannot_keep_exactly_are_not_journalled() -> None:
    assert journal.encode([(("latency_ms",), [(math.nan,)])]) is None
    assert journal.encode([(("n",), [(2**70,)])]) is None
    assert journal.encode([(("latency_ms",), [(1.5,)]), None]) == b'[[["latency_ms"],[[1.5]]],null]'


def test_a_decision_with_a_non_finite_value_goes_in_directly(store: AuditStore, db_path: Path) -> None:
    """The decision table refuses NaN latency (NOT NULL, as SQLite stores NaN as NULL): the
    hook call's write fails at once and is spooled or reported, never parked in the journal."""
    rec = call(1)
    object.__setattr__(rec, "latency_ms", math.inf)
    store.record_or_spool(rec, EVALUATED)

    assert raw_count(db_path, "pending_decision") == 0


def test_a_locked_database_leaves_the_journal_for_the_next_filing(store: AuditStore, db_path: Path) -> None:
    for n in range(3):
        store.record_or_spool(call(n), EVALUATED)
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    quick = AuditStore(f"sqlite:///{db_path}", KEY, timeout_s=0.2)
    try:
        with pytest.raises(Exception, match="locked"):
            quick.count_decisions()
        assert raw_count(db_path, "pending_decision") == 3
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        quick.dispose()
    assert store.count_decisions() == 4


def test_the_journal_is_sqlite_only(pg_database: str) -> None:
    """PostgreSQL writes each decision in one statement: nothing is journalled there."""
    from .conftest import _reset_pg

    _reset_pg(pg_database)
    pg = AuditStore(pg_database, KEY)
    try:
        pg.migrate()
        pg.record_or_spool(call(1), EVALUATED)
        pg.record_or_spool(call(2), EVALUATED)
        with pg.reading() as conn:
            pending = conn.exec_driver_sql("SELECT count(*) FROM pending_decision").scalar_one()
        assert (pending, pg.count_decisions()) == (0, 2)
    finally:
        pg.dispose()


@pytest.mark.parametrize("body", [b"not json", b'{"decision": 1}', b'[[["no_such_column"],[[1]]]]'])
def test_a_journal_row_that_cannot_be_read_is_kept_and_does_not_stall_the_log(
    store: AuditStore, db_path: Path, body: bytes
) -> None:
    store.record_or_spool(call(1), EVALUATED)
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO pending_decision (body) VALUES (?)", (body,))
    store.record_or_spool(call(2), EVALUATED)

    assert store.count_decisions() == 3

    [kept] = raw_rows(db_path, "pending_decision", "seq")
    assert kept["body"] == body and kept["problem"]


def test_feedback_on_a_locked_log_with_a_journal_to_file_is_a_503(tmp_path: Path) -> None:
    """Filing first cannot take the lock: the answer says the database is unavailable (503),
    as for any locked log, and the journal is filed once the lock is gone."""
    db = tmp_path / "audit.db"
    app = database_faults_app(f"sqlite:///{db}", tmp_path / "spool")  # a short store timeout
    client = app.test_client()
    body = json.loads((ROOT / "fhir_fixtures/requests/05-raynaud-local-ln2-order-select.json").read_text())
    cards = []
    for _ in range(2):  # both go to the journal (the first also stores its evaluation set)
        answer = client.post("/cds-services/cryotherapy-order-select", json=body)
        assert answer.status_code == 200
        cards = answer.get_json()["cards"]
    assert raw_count(db, "pending_decision") == 2
    reason = cards[0]["overrideReasons"][0]
    answer_given = {
        "card": cards[0]["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": {"code": reason["code"], "system": reason["system"]}},
        "outcomeTimestamp": "2026-12-01T10:00:00Z",
    }
    feedback = {"feedback": [answer_given]}
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        refused = client.post("/cds-services/cryotherapy-order-select/feedback", json=feedback)
        assert refused.status_code == 503, refused.get_data(as_text=True)
        locker.execute("ROLLBACK")
    finally:
        locker.close()
    assert client.post("/cds-services/cryotherapy-order-select/feedback", json=feedback).status_code == 200
    assert raw_count(db, "pending_decision") == 0
    app.extensions["cryo_cds"].store.dispose()
