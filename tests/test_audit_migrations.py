"""The audit schema's two ways into being, and revision 0006 (evaluation sets).

A fresh database is created from the models (``create_all``, stamped at the newest revision)
and an older one is migrated by Alembic: both must give the same schema. Revision 0006 moves
the per-decision ``rule_evaluation`` rows into shared evaluation sets and back, and decisions
spooled in the 0005 format still drain into the new schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from cds_hooks.audit import AuditStore, CardRecord, DecisionRecord, FiredRule, analytics
from cds_hooks.audit.store import MIGRATIONS_DIR, evaluation_set_key
from tests.support.database import raw_engine
from tests.support.load import throwaway_database

KEY = b"migration-test-patient-key-32byt"
EVALUATED = [("CI-RAYNAUD", "1.0.0"), ("CI-PACEMAKER", "2.0.0")]


def alembic_to(url: str, revision: str, *, down: bool = False) -> None:
    """Run Alembic by hand (its own connection), as an operator would."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    (command.downgrade if down else command.upgrade)(cfg, revision)


def schema_of(url: str) -> dict[str, Any]:
    """Tables with their columns (type, nullability), primary key, indexes, unique
    constraints and foreign keys, as the database reports them."""
    with raw_engine(url) as engine:
        insp = inspect(engine)
        # SQLite can give a constraint a name only in CREATE TABLE; revision 0006 adds the
        # decision -> evaluation_set reference with a new column, so it is unnamed there.
        fk_names = engine.dialect.name != "sqlite"
        schema: dict[str, Any] = {}
        for table in sorted(insp.get_table_names()):
            schema[table] = {
                "columns": sorted(
                    (c["name"], c["type"].compile(dialect=engine.dialect), c["nullable"])
                    for c in insp.get_columns(table)
                ),
                "primary key": insp.get_pk_constraint(table),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(table)
                ),
                "unique": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)),
                "foreign keys": sorted(
                    (
                        fk["name"] if fk_names else None,
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                        fk["options"].get("ondelete"),
                    )
                    for fk in insp.get_foreign_keys(table)
                ),
            }
        return schema


@pytest.fixture
def second_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """Another empty database of the same kind as ``db_url``."""
    kind = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    folder = tmp_path / "second"
    folder.mkdir()
    with throwaway_database(kind, folder) as url:
        yield url


def decision(decision_id: str, fired: tuple[FiredRule, ...] = (), cards: tuple[CardRecord, ...] = ()) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id,
        created_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        service_id="cryo-order-sign",
        hook="order-sign",
        hook_instance=f"hi-{decision_id}",
        patient_id="pat-1",
        rules_revision="rev-1",
        evaluator="plain",
        latency_ms=3.5,
        orders=(("ServiceRequest/cryo-1", "systemic"),),
        fired=fired,
        cards=cards,
        data_gaps=(),
    )


def raynaud_hit(card_uuid: str | None, order: str = "ServiceRequest/cryo-1") -> FiredRule:
    return FiredRule("CI-RAYNAUD", "1.0.0", "critical", card_uuid, order, ("Condition/r1",), {"raynaud": True})


# -- create_all and Alembic give one schema ---------------------------------------------------


def test_a_fresh_database_made_from_the_models_equals_the_migrated_one(db_url: str, second_url: str) -> None:
    fresh, migrated = AuditStore(db_url, KEY), AuditStore(second_url, KEY)
    try:
        fresh.migrate()  # no tables: create_all, stamped at the newest revision
        alembic_to(second_url, "head")  # every migration, in order

        assert schema_of(db_url) == schema_of(second_url)
        assert "evaluation_set" in schema_of(db_url)
        assert fresh.schema_is_current() and migrated.schema_is_current()
    finally:
        fresh.dispose()
        migrated.dispose()


def test_an_older_schema_is_still_migrated_by_alembic(db_url: str) -> None:
    alembic_to(db_url, "0005")
    store = AuditStore(db_url, KEY)
    try:
        assert not store.schema_is_current()
        store.migrate()
        assert store.schema_is_current()
        store.record_decision(decision("d-1"), EVALUATED)
        assert analytics.explain_decision(store, "d-1")["evaluated_rules"] == [  # type: ignore[index]
            {"rule_id": "CI-PACEMAKER", "rule_version": "2.0.0"},
            {"rule_id": "CI-RAYNAUD", "rule_version": "1.0.0"},
        ]
    finally:
        store.dispose()


# -- revision 0006 ---------------------------------------------------------------------------

OLD_EVALUATIONS = {
    "d-a": [("CI-RAYNAUD", "1.0.0"), ("CI-PACEMAKER", "2.0.0")],
    "d-b": [("CI-PACEMAKER", "2.0.0"), ("CI-RAYNAUD", "1.0.0")],  # the same set as d-a
    "d-c": [("CI-RAYNAUD", "1.1.0")],
    "d-none": [],
}


def _write_0005_log(url: str) -> None:
    created = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    with raw_engine(url) as engine, engine.begin() as conn:
        for n, (decision_id, pairs) in enumerate(OLD_EVALUATIONS.items()):
            conn.execute(
                text(
                    "INSERT INTO decision (decision_id, created_at, service_id, hook, hook_instance, patient_hash,"
                    " rules_revision, evaluator, latency_ms, status, data_gaps) VALUES (:d, :t, 's', 'order-sign',"
                    " :d, 'h', 'rev-1', 'plain', 1.0, 200, '[]')"
                ),
                {"d": decision_id, "t": created + timedelta(minutes=n)},
            )
            for rule_id, version in pairs:
                conn.execute(
                    text("INSERT INTO rule_evaluation (decision_id, rule_id, rule_version) VALUES (:d, :r, :v)"),
                    {"d": decision_id, "r": rule_id, "v": version},
                )
        conn.execute(
            text(
                "INSERT INTO rule_hit (decision_id, rule_id, rule_version, severity, order_ref, evidence, facts)"
                " VALUES ('d-a', 'CI-RAYNAUD', '1.0.0', 'critical', 'ServiceRequest/1', '[]', '{}')"
            )
        )


def _rule_evaluation_rows(url: str) -> list[tuple[str, str, str]]:
    with raw_engine(url) as engine, engine.connect() as conn:
        rows = conn.execute(text("SELECT decision_id, rule_id, rule_version FROM rule_evaluation")).all()
    return sorted((r[0], r[1], r[2]) for r in rows)


def test_0006_turns_evaluation_rows_into_shared_sets_and_back(db_url: str) -> None:
    alembic_to(db_url, "0005")
    _write_0005_log(db_url)
    before = _rule_evaluation_rows(db_url)
    store = AuditStore(db_url, KEY)
    try:
        store.migrate()  # 0005 -> 0006 through Alembic, on the store's own connection

        with raw_engine(db_url) as engine, engine.connect() as conn:
            sets = {r[0]: r[1] for r in conn.execute(text("SELECT decision_id, evaluation_set FROM decision"))}
            n_sets = conn.execute(text("SELECT count(*) FROM evaluation_set")).scalar_one()
        assert n_sets == 2
        assert sets == {
            "d-a": evaluation_set_key(OLD_EVALUATIONS["d-a"]),
            "d-b": evaluation_set_key(OLD_EVALUATIONS["d-a"]),
            "d-c": evaluation_set_key(OLD_EVALUATIONS["d-c"]),
            "d-none": None,
        }
        summary = {
            (r["rule_id"], r["rule_version"]): (r["evaluations"], r["fires"]) for r in analytics.rule_summary(store)
        }
        assert summary == {
            ("CI-PACEMAKER", "2.0.0"): (2, 0),
            ("CI-RAYNAUD", "1.0.0"): (2, 1),
            ("CI-RAYNAUD", "1.1.0"): (1, 0),
        }
        assert analytics.silent_rules(store, ["CI-RAYNAUD", "CI-PACEMAKER", "CI-X"]) == {
            "never_evaluated": ["CI-X"],
            "never_fired": ["CI-PACEMAKER"],
        }
        assert analytics.explain_decision(store, "d-none")["evaluated_rules"] == []  # type: ignore[index]

        # A new decision with a migrated set reuses it: the keys agree.
        store.record_decision(decision("d-new"), OLD_EVALUATIONS["d-a"])
        with raw_engine(db_url) as engine, engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM evaluation_set")).scalar_one() == 2
    finally:
        store.dispose()

    alembic_to(db_url, "0005", down=True)

    assert _rule_evaluation_rows(db_url) == sorted(
        [*before, ("d-new", "CI-PACEMAKER", "2.0.0"), ("d-new", "CI-RAYNAUD", "1.0.0")]
    )
    with raw_engine(db_url) as engine:
        tables = set(inspect(engine).get_table_names())
        assert "evaluation_set" not in tables
        with engine.connect() as conn:  # the decision table was rebuilt on SQLite: nothing cascaded
            assert conn.execute(text("SELECT decision_id FROM rule_hit")).scalars().all() == ["d-a"]
            assert conn.execute(text("SELECT count(*) FROM decision_order")).scalar_one() == 1
        assert "evaluation_set" not in {c["name"] for c in inspect(engine).get_columns("decision")}
    alembic_to(db_url, "head")  # and up again
    again = AuditStore(db_url, KEY)
    try:
        assert again.schema_is_current()
        assert len(analytics.explain_decision(again, "d-new")["evaluated_rules"]) == 2  # type: ignore[index]
    finally:
        again.dispose()


# -- writing with evaluation sets ------------------------------------------------------------


def test_each_distinct_evaluated_set_is_stored_once(db_url: str) -> None:
    store = AuditStore(db_url, KEY)
    try:
        store.migrate()
        for n in range(5):
            store.record_decision(decision(f"d-{n}"), EVALUATED)
        store.record_decision(decision("d-other"), [("CI-RAYNAUD", "1.1.0")])
        store.record_decision(decision("d-none"), [])

        with raw_engine(db_url) as engine, engine.connect() as conn:
            members = conn.execute(text("SELECT set_key, rule_id, rule_version FROM evaluation_set_member")).all()
        assert sorted((r[1], r[2]) for r in members) == sorted([*EVALUATED, ("CI-RAYNAUD", "1.1.0")])
        assert len({r[0] for r in members}) == 2
        summary = {(r["rule_id"], r["rule_version"]): r["evaluations"] for r in analytics.rule_summary(store)}
        assert summary == {("CI-PACEMAKER", "2.0.0"): 5, ("CI-RAYNAUD", "1.0.0"): 5, ("CI-RAYNAUD", "1.1.0"): 1}
    finally:
        store.dispose()


def test_a_set_removed_under_a_running_writer_is_stored_again(db_url: str) -> None:
    store = AuditStore(db_url, KEY)
    try:
        store.migrate()
        store.record_decision(decision("d-1"), EVALUATED)
        with raw_engine(db_url) as engine, engine.begin() as conn:  # e.g. the log restored from an old copy
            conn.execute(text("DELETE FROM decision_order"))
            conn.execute(text("DELETE FROM decision"))
            conn.execute(text("DELETE FROM evaluation_set_member"))
            conn.execute(text("DELETE FROM evaluation_set"))

        with pytest.raises(IntegrityError):  # the remembered set is gone: refused, not dangling
            store.record_decision(decision("d-2"), EVALUATED)
        store.record_decision(decision("d-2"), EVALUATED)

        assert len(analytics.explain_decision(store, "d-2")["evaluated_rules"]) == 2  # type: ignore[index]
    finally:
        store.dispose()


def test_hits_keep_their_order_and_values(db_url: str) -> None:
    orders = [f"ServiceRequest/cryo-{n}" for n in (3, 1, 4, 1, 5, 9, 2, 6)]
    fired = tuple(raynaud_hit("c-1" if n % 2 else None, order) for n, order in enumerate(orders))
    store = AuditStore(db_url, KEY)
    try:
        store.migrate()
        store.record_decision(decision("d-1", fired, (CardRecord("c-1", "CI-RAYNAUD", "critical", "s", ()),)), [])

        explained = analytics.explain_decision(store, "d-1")
        assert explained is not None
        assert [h["order_ref"] for h in explained["fired"]] == orders
        assert [h["card_uuid"] for h in explained["fired"]] == ["c-1" if n % 2 else None for n in range(8)]
        assert explained["decision"]["created_at"] == "2026-12-01T09:00:00+00:00"
        assert explained["decision"]["latency_ms"] == 3.5
        assert explained["decision"]["facts"] is None and explained["decision"]["suppressed"] is None
        assert explained["cards"][0]["suggestion_uuids"] == []
    finally:
        store.dispose()


# A decision as the 0005 store spooled it (cds_hooks.audit.spool, one file per decision).
SPOOLED_0005 = {
    "decision": {
        "decision_id": "d-spooled",
        "created_at": {"$datetime": "2026-11-30T08:00:00+00:00"},
        "service_id": "cryo-order-sign",
        "hook": "order-sign",
        "hook_instance": "hi-spooled",
        "patient_hash": "0" * 64,
        "rules_revision": "rev-1",
        "evaluator": "plain",
        "latency_ms": 2.0,
        "status": 200,
        "data_gaps": [],
        "policy_revision": None,
        "facts": None,
        "suppressed": None,
    },
    "decision_order": [{"decision_id": "d-spooled", "order_ref": "ServiceRequest/cryo-1", "modality": "systemic"}],
    "rule_evaluation": [
        {"decision_id": "d-spooled", "rule_id": "CI-RAYNAUD", "rule_version": "1.0.0"},
        {"decision_id": "d-spooled", "rule_id": "CI-PACEMAKER", "rule_version": "2.0.0"},
    ],
    "card": [],
    "rule_hit": [],
}


def test_a_decision_spooled_in_the_0005_format_drains_into_evaluation_sets(db_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    store = AuditStore(db_url, KEY, spool_dir=spool)
    try:
        store.migrate()
        (spool / "d-spooled.json").write_text(json.dumps(SPOOLED_0005))

        assert store.drain_spool() == 1

        assert store.spool is not None and store.spool.depth() == 0
        explained = analytics.explain_decision(store, "d-spooled")
        assert explained is not None
        assert explained["evaluated_rules"] == [
            {"rule_id": "CI-PACEMAKER", "rule_version": "2.0.0"},
            {"rule_id": "CI-RAYNAUD", "rule_version": "1.0.0"},
        ]
        assert not list((spool / "failed").iterdir())
    finally:
        store.dispose()


def _decision_indexes(url: str) -> set[tuple[str, tuple[str, ...]]]:
    return {(name, columns) for name, columns, _unique in schema_of(url)["decision"]["indexes"]}


def test_0008_indexes_a_patients_decisions_by_hook_and_time_and_back(db_url: str) -> None:
    alembic_to(db_url, "0007")
    assert ("ix_decision_patient_hash", ("patient_hash",)) in _decision_indexes(db_url)
    alembic_to(db_url, "0008")
    indexes = _decision_indexes(db_url)
    assert ("ix_decision_patient_hook_time", ("patient_hash", "hook", "created_at")) in indexes
    assert not any(name == "ix_decision_patient_hash" for name, _columns in indexes)
    alembic_to(db_url, "0007", down=True)
    assert ("ix_decision_patient_hash", ("patient_hash",)) in _decision_indexes(db_url)
    assert not any(name == "ix_decision_patient_hook_time" for name, _columns in _decision_indexes(db_url))
