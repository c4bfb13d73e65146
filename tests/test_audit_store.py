"""The audit store against real databases: a SQLite file and a throwaway PostgreSQL database.

PostgreSQL tests skip (with the reason) when 127.0.0.1:5432 is unreachable on a developer
machine, and fail when the CI environment variable is set, so CI cannot go green without them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import bindparam, inspect, text
from sqlalchemy.exc import IntegrityError

from cds_hooks.audit import (
    AuditStore,
    AuditStoreClosedError,
    CardRecord,
    DecisionRecord,
    FeedbackItem,
    FiredRule,
    analytics,
)
from cds_hooks.audit.models import UTCDateTime, metadata
from cds_hooks.audit.store import MIGRATIONS_DIR
from tests.support.database import raw_engine

KEY = b"test-only-patient-key-32-bytes!!"
ROOT = Path(__file__).resolve().parent.parent
RAW_PATIENT = "pat-raw-7c41e9"
SNOMED = "http://snomed.info/sct"
REASONS = "http://example.org/override-reason"
# The newest migration: every store must end up there (file names start with the revision id).
HEAD_REVISION = max(
    p.name.split("_", 1)[0]
    for p in (Path(__file__).resolve().parent.parent / "cds_hooks/audit/migrations/versions").glob("0*.py")
)
TABLES = {
    "decision",
    "decision_order",
    "rule_hit",
    "card",
    "feedback",
    "evaluation_set",
    "pending_decision",
    "evaluation_set_member",
    "seen_jti",
    "store_meta",
}


# -- databases ---------------------------------------------------------------------------


@pytest.fixture
def empty_store(db_url: str) -> Iterator[AuditStore]:
    store = AuditStore(db_url, KEY)
    yield store
    store.dispose()


@pytest.fixture
def store(empty_store: AuditStore) -> AuditStore:
    empty_store.migrate()
    return empty_store


def table_rows(url: str, table: str) -> list[dict[str, Any]]:
    with raw_engine(url) as engine, engine.connect() as conn:
        return [dict(row) for row in conn.execute(text(f"SELECT * FROM {table}")).mappings()]


# -- records -----------------------------------------------------------------------------


def hit(rule: str, card: str | None, order: str = "ServiceRequest/cryo-1", **kw: Any) -> FiredRule:
    return FiredRule(
        rule_id=rule,
        rule_version=kw.get("version", "1.0.0"),
        severity=kw.get("severity", "critical"),
        card_uuid=card,
        order_ref=order,
        evidence=kw.get("evidence", ("Condition/raynaud-1",)),
        facts=kw.get("facts", {"has_raynaud": True, "days_since_onset": 400}),
    )


def card(uuid_: str, rule: str) -> CardRecord:
    return CardRecord(uuid_, rule, "critical", f"{rule}: do not freeze", (f"{uuid_}-s1",))


def decision(
    decision_id: str,
    fired: tuple[FiredRule, ...] = (),
    cards: tuple[CardRecord, ...] = (),
    *,
    created_at: datetime | None = None,
    service_id: str = "cryo-order-sign",
    patient_id: str = RAW_PATIENT,
) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id,
        created_at=created_at or datetime.now(UTC),
        service_id=service_id,
        hook="order-sign",
        hook_instance=f"hi-{decision_id}",
        patient_id=patient_id,
        rules_revision="rev-abc123",
        evaluator="plain",
        latency_ms=12.5,
        orders=(("ServiceRequest/cryo-1", "systemic"), ("ServiceRequest/cryo-2", "local-cold")),
        fired=fired,
        cards=cards,
        data_gaps=("pregnancy-status",),
    )


def overridden(
    card_uuid: str, code: str | None = "R1", comment: str | None = None, at: datetime | None = None
) -> FeedbackItem:
    return FeedbackItem(
        card_uuid=card_uuid,
        outcome="overridden",
        outcome_timestamp=at or datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        accepted_suggestions=(),
        override_code=code,
        override_system=REASONS if code else None,
        override_display=f"Reason {code}" if code else None,
        user_comment=comment,
    )


def accepted(card_uuid: str) -> FeedbackItem:
    return FeedbackItem(
        card_uuid,
        "accepted",
        datetime(2026, 3, 1, 9, 31, tzinfo=UTC),
        (f"{card_uuid}-s1",),
        None,
        None,
        None,
        None,
    )


EVALUATED = [("CI-RAYNAUD", "1.0.0"), ("CI-PACEMAKER", "2.0.0")]


# -- decisions ---------------------------------------------------------------------------


def test_recorded_decision_can_be_explained_with_orders_hits_cards_and_feedback(
    store: AuditStore,
) -> None:
    cet = timezone(timedelta(hours=1))
    created = datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=cet)
    rec = decision(
        "d-1",
        fired=(
            hit("CI-RAYNAUD", "c-1", "ServiceRequest/cryo-1"),
            hit("CI-RAYNAUD", "c-1", "ServiceRequest/cryo-2"),
        ),
        cards=(card("c-1", "CI-RAYNAUD"),),
        created_at=created,
    )
    store.record_decision(rec, EVALUATED)
    store.record_feedback("cryo-order-sign", [overridden("c-1", comment="patient insists")])

    explained = analytics.explain_decision(store, "d-1")

    assert explained is not None
    assert explained["decision"]["created_at"] == "2026-03-01T09:00:00.250000+00:00"
    assert explained["decision"]["patient_hash"] == store.hash_patient(RAW_PATIENT)
    assert explained["decision"]["evaluator"] == "plain"
    assert explained["decision"]["data_gaps"] == ["pregnancy-status"]
    assert [o["order_ref"] for o in explained["orders"]] == [
        "ServiceRequest/cryo-1",
        "ServiceRequest/cryo-2",
    ]
    assert explained["evaluated_rules"] == [
        {"rule_id": "CI-PACEMAKER", "rule_version": "2.0.0"},
        {"rule_id": "CI-RAYNAUD", "rule_version": "1.0.0"},
    ]
    assert len(explained["fired"]) == 2
    assert explained["fired"][0]["evidence"] == ["Condition/raynaud-1"]
    assert explained["fired"][0]["facts"] == {"has_raynaud": True, "days_since_onset": 400}
    [shown] = explained["cards"]
    assert shown["uuid"] == "c-1" and shown["suggestion_uuids"] == ["c-1-s1"]
    assert shown["feedback"][0]["override_reason"]["code"] == "R1"
    assert shown["feedback"][0]["user_comment"] == "patient insists"
    json.dumps(explained)  # plain JSON, no datetimes or Row objects
    assert analytics.explain_decision(store, "no-such-decision") is None
    assert store.count_decisions() == 1


def test_explain_card_names_rule_version_evidence_facts_and_feedback(store: AuditStore) -> None:
    store.record_decision(decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),)), EVALUATED)
    store.record_feedback("cryo-order-sign", [accepted("c-1")])

    explained = analytics.explain_card(store, "c-1")

    assert explained is not None
    assert explained["rule_id"] == "CI-RAYNAUD" and explained["rule_version"] == "1.0.0"
    assert explained["decision_id"] == "d-1"
    assert explained["evidence"] == ["Condition/raynaud-1"]
    assert explained["facts"]["has_raynaud"] is True
    assert explained["feedback"][0]["outcome"] == "accepted"
    assert explained["feedback"][0]["accepted_suggestions"] == ["c-1-s1"]
    json.dumps(explained)
    assert analytics.explain_card(store, "no-such-card") is None


def test_patient_id_is_never_stored_raw_in_any_column_of_any_table(store: AuditStore, db_url: str) -> None:
    leaky = hit(
        "CI-RAYNAUD",
        "c-1",
        evidence=("Condition/raynaud-1", f"Patient/{RAW_PATIENT}"),
        facts={"subject": f"Patient/{RAW_PATIENT}/_history/2", "ids": [RAW_PATIENT]},
    )
    store.record_decision(decision("d-1", (leaky,), (card("c-1", "CI-RAYNAUD"),)), EVALUATED)
    store.record_feedback("cryo-order-sign", [overridden("c-1")])

    with raw_engine(db_url) as engine:
        tables = inspect(engine).get_table_names()
    assert set(tables) >= TABLES
    scanned = 0
    for table in tables:
        for row in table_rows(db_url, table):
            for value in row.values():
                assert RAW_PATIENT not in json.dumps(value, default=str), table
                scanned += 1
    assert scanned > 30
    expected = hmac.new(KEY, RAW_PATIENT.encode(), hashlib.sha256).hexdigest()
    assert table_rows(db_url, "decision")[0]["patient_hash"] == expected
    other_key = AuditStore("sqlite://", b"another-key-of-32-bytes-length!!")
    assert other_key.hash_patient(RAW_PATIENT) != expected
    other_key.dispose()


def test_a_short_patient_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        AuditStore("sqlite://", b"short")


def test_a_failed_decision_write_leaves_no_partial_rows(store: AuditStore, db_url: str) -> None:
    store.record_decision(decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),)), EVALUATED)
    pacemaker = hit("CI-PACEMAKER", "c-2", version="2.0.0")
    again = decision("d-1", (pacemaker,), (card("c-2", "CI-PACEMAKER"),))

    with pytest.raises(IntegrityError):
        store.record_decision(again, EVALUATED)

    assert [row["uuid"] for row in table_rows(db_url, "card")] == ["c-1"]
    assert len(table_rows(db_url, "rule_hit")) == 1


# -- feedback ----------------------------------------------------------------------------


def test_feedback_is_joined_to_its_card_decision_and_rule(store: AuditStore, db_url: str) -> None:
    store.record_decision(decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),)), EVALUATED)

    [result] = store.record_feedback("cryo-order-sign", [overridden("c-1")])

    assert result == {
        "card_uuid": "c-1",
        "outcome": "overridden",
        "known_card": True,
        "decision_id": "d-1",
        "rule_id": "CI-RAYNAUD",
        "rule_ids": ["CI-RAYNAUD"],
        "stored": True,
    }
    [row] = table_rows(db_url, "feedback")
    assert (row["decision_id"], row["rule_id"], row["override_code"]) == ("d-1", "CI-RAYNAUD", "R1")
    assert bool(row["known_card"]) is True


def test_feedback_for_an_unknown_card_is_kept_and_flagged(store: AuditStore) -> None:
    store.record_decision(decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),)), EVALUATED)

    unknown, other_service = store.record_feedback(
        "cryo-order-sign", [overridden("never-issued")]
    ) + store.record_feedback("another-service", [overridden("c-1")])

    for result in (unknown, other_service):
        assert result["known_card"] is False and result["stored"] is True
        assert result["decision_id"] is None and result["rule_id"] is None
    summary = analytics.rule_summary(store)
    assert summary[0]["rule_id"] == "CI-PACEMAKER"
    assert summary[1]["overridden"] == 0  # feedback sent to the wrong service does not count


def test_repeated_feedback_is_stored_once(store: AuditStore, db_url: str) -> None:
    store.record_decision(decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),)), EVALUATED)
    post = [overridden("c-1", comment="seen"), accepted("c-1"), overridden("c-1", comment="seen")]

    first = store.record_feedback("cryo-order-sign", post)
    second = store.record_feedback("cryo-order-sign", post)

    assert [r["stored"] for r in first] == [True, True, False]
    assert [r["stored"] for r in second] == [False, False, False]
    assert len(table_rows(db_url, "feedback")) == 2
    later = overridden("c-1", comment="seen", at=datetime(2026, 3, 2, tzinfo=UTC))
    assert store.record_feedback("cryo-order-sign", [later])[0]["stored"] is True


def test_invalid_feedback_is_refused_before_anything_is_written(store: AuditStore, db_url: str) -> None:
    naive = overridden("c-2", at=datetime(2026, 3, 1, 9, 30))
    ignored = FeedbackItem("c-3", "ignored", datetime.now(UTC), (), None, None, None, None)

    for bad in (naive, ignored):
        with pytest.raises(ValueError, match=r"timezone-aware|outcome"):
            store.record_feedback("cryo-order-sign", [overridden("c-1"), bad])

    assert table_rows(db_url, "feedback") == []


def test_an_inconsistent_decision_is_refused_by_the_store_not_at_construction(
    store: AuditStore,
) -> None:
    orphan = decision("d-1", (hit("CI-RAYNAUD", "c-missing"),), ())
    naive = decision("d-2", created_at=datetime(2026, 3, 1, 10, 0))

    for bad in (orphan, naive):
        with pytest.raises(ValueError, match=r"does not list|timezone-aware"):
            store.record_decision(bad, EVALUATED)
        assert store.record_decision_safely(bad, EVALUATED) is False
    assert store.count_decisions() == 0


# -- analytics ---------------------------------------------------------------------------


def test_rule_summary_counts_evaluations_fires_rates_and_top_reasons(store: AuditStore) -> None:
    now = datetime.now(UTC)
    raynaud = [
        # d-1 fires on two orders with one card: one fire, one card.
        ("d-1", (hit("CI-RAYNAUD", "c-1"), hit("CI-RAYNAUD", "c-1", "ServiceRequest/cryo-2"))),
        ("d-2", (hit("CI-RAYNAUD", "c-2"),)),
        ("d-3", (hit("CI-RAYNAUD", "c-3"),)),
        ("d-4", ()),
    ]
    for did, fired in raynaud:
        cards = tuple(card(c, "CI-RAYNAUD") for c in {h.card_uuid for h in fired if h.card_uuid})
        store.record_decision(decision(did, fired, cards, created_at=now), EVALUATED)
    # An old decision, outside a 30-day window.
    store.record_decision(
        decision(
            "d-old",
            (hit("CI-RAYNAUD", "c-old"),),
            (card("c-old", "CI-RAYNAUD"),),
            created_at=now - timedelta(days=60),
        ),
        EVALUATED,
    )
    store.record_feedback(
        "cryo-order-sign",
        [
            overridden("c-1", "R1"),
            overridden("c-2", "R1", comment="benefit outweighs risk"),
            accepted("c-3"),
            overridden("c-old", "R2"),
        ],
    )

    recent = {r["rule_id"]: r for r in analytics.rule_summary(store, since=now - timedelta(30))}
    everything = {r["rule_id"]: r for r in analytics.rule_summary(store)}

    assert recent["CI-RAYNAUD"] == {
        "rule_id": "CI-RAYNAUD",
        "rule_version": "1.0.0",
        "evaluations": 4,
        "fires": 3,
        "fire_rate": 0.75,
        "cards": 3,
        "accepted": 1,
        "overridden": 2,
        "override_rate": pytest.approx(2 / 3),
        "top_override_reasons": [{"code": "R1", "system": REASONS, "display": "Reason R1", "count": 2}],
        "comments": 1,
    }
    assert recent["CI-PACEMAKER"]["evaluations"] == 4
    assert recent["CI-PACEMAKER"]["fires"] == 0 and recent["CI-PACEMAKER"]["fire_rate"] == 0
    assert recent["CI-PACEMAKER"]["override_rate"] is None
    assert everything["CI-RAYNAUD"]["evaluations"] == 5
    assert everything["CI-RAYNAUD"]["overridden"] == 3
    assert [r["code"] for r in everything["CI-RAYNAUD"]["top_override_reasons"]] == ["R1", "R2"]
    assert analytics.rule_summary(store, until=now - timedelta(30))[1]["fires"] == 1
    json.dumps(everything)


def test_rule_summary_keeps_only_the_five_most_common_override_reasons(store: AuditStore) -> None:
    items = []
    for n in range(7):
        c = f"c-{n}"
        store.record_decision(decision(f"d-{n}", (hit("CI-RAYNAUD", c),), (card(c, "CI-RAYNAUD"),)), EVALUATED)
        items.append(overridden(c, code="R-common" if n < 2 else f"R-{n}"))
    store.record_feedback("cryo-order-sign", items)

    [_, raynaud] = analytics.rule_summary(store)

    reasons = raynaud["top_override_reasons"]
    assert len(reasons) == 5
    assert reasons[0] == {
        "code": "R-common",
        "system": REASONS,
        "display": "Reason R-common",
        "count": 2,
    }
    assert raynaud["override_rate"] == 1.0


def test_silent_rules_separates_never_evaluated_from_never_fired(store: AuditStore) -> None:
    store.record_decision(decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),)), EVALUATED)
    all_rules = ["CI-RAYNAUD", "CI-PACEMAKER", "CI-PREGNANCY", "DI-ANTICOAG"]

    silent = analytics.silent_rules(store, all_rules)
    later = analytics.silent_rules(store, all_rules, since=datetime.now(UTC) + timedelta(1))

    assert silent == {
        "never_evaluated": ["CI-PREGNANCY", "DI-ANTICOAG"],
        "never_fired": ["CI-PACEMAKER"],
    }
    assert later == {"never_evaluated": sorted(all_rules), "never_fired": []}


def test_a_fired_rule_missing_from_the_evaluated_list_still_counts_as_evaluated(
    store: AuditStore,
) -> None:
    store.record_decision(decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),)), [])

    [summary] = analytics.rule_summary(store)

    assert (summary["evaluations"], summary["fires"], summary["fire_rate"]) == (1, 1, 1.0)


# -- retention ---------------------------------------------------------------------------


def test_purge_deletes_only_records_older_than_the_cutoff(store: AuditStore, db_url: str) -> None:
    now = datetime.now(UTC)
    store.record_decision(
        decision(
            "d-old",
            (hit("CI-RAYNAUD", "c-old"),),
            (card("c-old", "CI-RAYNAUD"),),
            created_at=now - timedelta(days=40),
        ),
        EVALUATED,
    )
    store.record_decision(
        decision(
            "d-new",
            (hit("CI-RAYNAUD", "c-new"),),
            (card("c-new", "CI-RAYNAUD"),),
            created_at=now - timedelta(days=1),
        ),
        EVALUATED,
    )
    store.record_feedback("cryo-order-sign", [overridden("c-old"), overridden("c-new")])
    backdate = text("UPDATE feedback SET received_at = :t WHERE card_uuid = 'c-old'")
    with raw_engine(db_url) as engine, engine.begin() as conn:
        conn.execute(
            backdate.bindparams(bindparam("t", type_=UTCDateTime())),
            {"t": now - timedelta(days=39)},
        )

    assert store.purge_older_than(30) == 1

    assert analytics.explain_decision(store, "d-old") is None
    kept = analytics.explain_decision(store, "d-new")
    assert kept is not None and len(kept["evaluated_rules"]) == 2
    for table in ("decision_order", "rule_hit", "card"):
        assert {row["decision_id"] for row in table_rows(db_url, table)} == {"d-new"}, table
    # The evaluation set both decisions shared stays (no patient data; writers remember it).
    assert len(table_rows(db_url, "evaluation_set")) == 1
    assert [row["card_uuid"] for row in table_rows(db_url, "feedback")] == ["c-new"]
    assert store.purge_older_than(30) == 0
    with pytest.raises(ValueError):
        store.purge_older_than(-1)


# -- migrations --------------------------------------------------------------------------


def test_migrate_on_an_empty_database_creates_the_schema(empty_store: AuditStore, db_url: str) -> None:
    with raw_engine(db_url) as engine:
        assert inspect(engine).get_table_names() == []

    empty_store.migrate()

    with raw_engine(db_url) as engine:
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    assert table_rows(db_url, "alembic_version") == [{"version_num": HEAD_REVISION}]


def test_migrate_twice_is_a_no_op_and_keeps_data(store: AuditStore, db_url: str) -> None:
    store.record_decision(decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),)), EVALUATED)
    store.record_feedback("cryo-order-sign", [overridden("c-1")])
    before = {table: table_rows(db_url, table) for table in TABLES}

    store.migrate()

    assert {table: table_rows(db_url, table) for table in TABLES} == before
    assert table_rows(db_url, "alembic_version") == [{"version_num": HEAD_REVISION}]
    assert store.count_decisions() == 1


def test_models_match_the_migrated_schema(db_url: str) -> None:
    cfg = Config()  # by hand: store.migrate() would create a fresh database from the models
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", db_url)
    command.upgrade(cfg, "head")
    with raw_engine(db_url) as engine, engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


MIGRATE_SCRIPT = """
import sys
from cds_hooks.audit import AuditStore
store = AuditStore(sys.argv[1], b"k" * 32)
store.migrate()
store.dispose()
"""


def test_worker_processes_migrating_at_the_same_time_create_the_schema_once(
    db_url: str,
) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_SCRIPT, db_url],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    errors = [w.communicate(timeout=60)[1] for w in workers]

    assert [w.returncode for w in workers] == [0, 0, 0, 0], errors
    assert table_rows(db_url, "alembic_version") == [{"version_num": HEAD_REVISION}]


def test_threads_migrating_at_the_same_time_do_not_trip_over_alembic(db_url: str) -> None:
    stores = [AuditStore(db_url, KEY) for _ in range(4)]
    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(lambda s: s.migrate(), stores))
        assert table_rows(db_url, "alembic_version") == [{"version_num": HEAD_REVISION}]
    finally:
        for s in stores:
            s.dispose()


# -- concurrency and failure -------------------------------------------------------------


def test_concurrent_writes_from_8_threads_all_land(store: AuditStore) -> None:
    start = threading.Barrier(8)

    def write(worker: int) -> int:
        start.wait()
        for n in range(50):
            c = f"c-{worker}-{n}"
            rec = decision(f"d-{worker}-{n}", (hit("CI-RAYNAUD", c),), (card(c, "CI-RAYNAUD"),))
            store.record_decision(rec, EVALUATED)
        return worker

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(write, range(8))) == list(range(8))

    assert store.count_decisions() == 400
    assert analytics.rule_summary(store)[1]["fires"] == 400


def test_recording_on_a_closed_store_raises_and_the_safe_variant_counts_a_failure(
    store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    rec = decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),))
    store.dispose()
    before = AuditStore.write_failures

    with pytest.raises(AuditStoreClosedError):
        store.record_decision(rec, EVALUATED)
    with caplog.at_level(logging.ERROR, logger="cds_hooks.audit"):
        assert store.record_decision_safely(rec, EVALUATED) is False

    assert AuditStore.write_failures == before + 1
    assert "d-1" in caplog.text and RAW_PATIENT not in caplog.text


def test_recording_on_a_broken_database_raises_and_the_safe_variant_returns_false(
    empty_store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    rec = decision("d-1", (hit("CI-RAYNAUD", "c-1"),), (card("c-1", "CI-RAYNAUD"),))
    before = AuditStore.write_failures

    with pytest.raises(Exception, match=r"(?i)decision|evaluation_set"):  # no such table
        empty_store.record_decision(rec, EVALUATED)
    with caplog.at_level(logging.ERROR, logger="cds_hooks.audit"):
        assert empty_store.record_decision_safely(rec, EVALUATED) is False
        ok = decision("d-2", (), ())
        empty_store.migrate()
        assert empty_store.record_decision_safely(ok, EVALUATED) is True

    assert AuditStore.write_failures == before + 1
    [record] = caplog.records
    assert record.name == "cds_hooks.audit" and "d-1" in record.getMessage()
    assert RAW_PATIENT not in caplog.text
    assert empty_store.hash_patient(RAW_PATIENT) not in caplog.text


@pytest.mark.parametrize("patient_id", [RAW_PATIENT, 'odd "id" \\ with JSON escapes'])
def test_the_scrubber_copies_only_what_needs_cleaning(patient_id: str) -> None:
    from cds_hooks.audit.store import _Scrubber

    scrub = _Scrubber(patient_id, "abc")
    clean = {"kind": "lab", "value": 7.2, "codes": ["1234-5", None, True], "nested": {"label": "Kälte"}}
    assert scrub(clean) == clean
    # nothing to clean: the container itself, unless the id is one JSON would escape
    assert (scrub(clean) is clean) is (patient_id == RAW_PATIENT)
    leaky = {"ref": f"Patient/{patient_id}/_history/2", "ids": (patient_id, "other"), "note": "a\x00b"}
    assert scrub(leaky) == {
        "ref": "Patient/hmac-abc/_history/2",
        "ids": ["Patient/hmac-abc", "other"],
        "note": "a\ufffdb",
    }
    assert scrub([{"text": "lone \ud800 surrogate"}]) == [{"text": "lone \ufffd surrogate"}]
