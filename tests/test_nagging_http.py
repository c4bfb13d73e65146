"""No nagging twice, end to end over HTTP on loopback: order-select, feedback (overridden
with a reason), then order-sign for the same draft order. The answered warning card does not
come back, the critical one does (unless the policy says otherwise), and the decision log
holds both calls, with the left-out findings and why."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from cds_hooks.app import create_app
from cds_hooks.audit.analytics import revision_summary, rule_summary
from cds_hooks.audit.models import Decision, RuleHit
from cds_hooks.config import Config
from cds_hooks.devtools.cases import PATIENT_ID, case_request
from cds_hooks.nagging import FeedbackMemory
from cds_hooks.policy import NO_POLICY

from .conftest import RULES_DIR, card_findings
from .support.load import RAYNAUD
from .support.loopback import LoopbackServer

SELECT = "/cds-services/cryotherapy-order-select"
SIGN = "/cds-services/cryotherapy-order-sign"
# Whole-body order for a patient with Raynaud's: critical, warning and info cards.
CASE = {"order": "wbc", "resources": [RAYNAUD]}


def _serve(tmp_path: Path, db_url: str, policy: str | None = None) -> Iterator[tuple[str, Any]]:
    policy_file = None
    if policy is not None:
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(policy)
    config = Config(
        rules_dir=RULES_DIR,
        database_url=db_url,
        patient_hash_key=b"k" * 32,
        auth_required=False,
        policy_file=policy_file,
    )
    app = create_app(config)
    with LoopbackServer(app) as server:
        yield server.url, app.extensions["cryo_cds"].store
    app.extensions["cryo_cds"].store.dispose()


@pytest.fixture()
def service(tmp_path: Path, db_url: str) -> Iterator[tuple[str, Any]]:
    """The service over an empty SQLite or PostgreSQL log (conftest's ``db_url``)."""
    yield from _serve(tmp_path, db_url)


@pytest.fixture()
def strict_service(tmp_path: Path, db_url: str) -> Iterator[tuple[str, Any]]:
    yield from _serve(tmp_path, db_url, "repeat_critical_cards: false\n")


def _override_all(base: str, cards: list[dict[str, Any]], indicators: set[str]) -> None:
    items = [
        {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-12-05T10:00:00Z",
            "overrideReason": {"reason": {"code": "benefit-outweighs-risk"}, "userComment": "discussed"},
        }
        for card in cards
        if card["indicator"] in indicators
    ]
    assert items, f"no {indicators} card to answer"
    response = requests.post(f"{base}{SELECT}/feedback", json={"feedback": items}, timeout=30)
    assert response.status_code == 200, response.text


def _call(base: str, path: str, hook: str) -> list[dict[str, Any]]:
    response = requests.post(f"{base}{path}", json=case_request(CASE, hook), timeout=60)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def test_answered_warning_is_not_shown_again_at_order_sign_but_critical_is(service: tuple[str, Any]) -> None:
    base, store = service
    selected = _call(base, SELECT, "order-select")
    indicators = {c["indicator"] for c in selected}
    assert {"critical", "warning"} <= indicators
    warning_findings = {f for f in card_findings(selected) if f[1] == "warning"}
    critical_findings = {f for f in card_findings(selected) if f[1] == "critical"}
    assert warning_findings and critical_findings

    # Without feedback, order-sign repeats everything: the suppression needs an answer.
    assert {c["indicator"] for c in _call(base, SIGN, "order-sign")} == indicators

    _override_all(base, selected, {"warning", "critical"})
    signed = _call(base, SIGN, "order-sign")
    signed_findings = card_findings(signed)
    assert not warning_findings & signed_findings, "the answered warning came back"
    assert critical_findings <= signed_findings, "the critical finding must be shown again"
    assert "warning" not in {c["indicator"] for c in signed}

    with store.reading() as conn:
        decisions = conn.execute(
            select(Decision.decision_id, Decision.hook, Decision.suppressed).order_by(Decision.created_at)
        ).all()
        assert [d.hook for d in decisions] == ["order-select", "order-sign", "order-sign"]
        last = decisions[-1]
        suppressed = last.suppressed or []
        assert {(s["finding"], s["severity"]) for s in suppressed} == warning_findings
        assert all("overridden with reason benefit-outweighs-risk" in s["reason"] for s in suppressed)
        assert {s["answered_decision"] for s in suppressed} == {decisions[0].decision_id}
        hits = conn.execute(
            select(RuleHit.severity, RuleHit.card_uuid).where(RuleHit.decision_id == last.decision_id)
        ).all()
        # Both are in the log: the critical hit with its card, the warning hits without one.
        assert {h.severity for h in hits if h.card_uuid is None} == {"warning"}
        assert "critical" in {h.severity for h in hits if h.card_uuid is not None}
        assert decisions[1].suppressed is None  # before the feedback nothing was left out
    # Analytics still count the left-out findings, per rules and policy revision.
    (row,) = revision_summary(store)
    assert row["policy_revision"] == NO_POLICY.revision and row["decisions"] == 3
    assert row["findings_left_out"] == len(warning_findings)
    fires = {r["rule_id"]: r["fires"] for r in rule_summary(store)}
    assert all(fires[rule] == 3 for rule, _ in warning_findings)  # fired on every call, shown twice


def test_policy_can_leave_out_answered_critical_cards_too(strict_service: tuple[str, Any]) -> None:
    base, store = strict_service
    selected = _call(base, SELECT, "order-select")
    _override_all(base, selected, {"critical"})
    signed = _call(base, SIGN, "order-sign")
    assert "critical" not in {c["indicator"] for c in signed}
    assert "warning" in {c["indicator"] for c in signed}  # not answered, so shown
    with store.reading() as conn:
        last = conn.execute(select(Decision.suppressed).order_by(Decision.created_at.desc())).first()
        assert last is not None and {s["severity"] for s in last.suppressed or []} == {"critical"}


@pytest.fixture()
def no_window_service(tmp_path: Path, db_url: str) -> Iterator[tuple[str, Any]]:
    yield from _serve(tmp_path, db_url, "parameters: {repeat_card_window_hours: 0}\n")


def test_answers_older_than_the_window_do_not_suppress(no_window_service: tuple[str, Any]) -> None:
    base, _store = no_window_service
    selected = _call(base, SELECT, "order-select")
    _override_all(base, selected, {"warning"})
    assert "warning" in {c["indicator"] for c in _call(base, SIGN, "order-sign")}


def test_an_accepted_card_counts_as_answered_but_a_bare_override_does_not(service: tuple[str, Any]) -> None:
    base, _store = service
    selected = _call(base, SELECT, "order-select")
    warning = next(c for c in selected if c["indicator"] == "warning")
    bare = {"card": warning["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-12-05T10:00:00Z"}
    assert requests.post(f"{base}{SELECT}/feedback", json={"feedback": [bare]}, timeout=30).status_code == 200
    assert "warning" in {c["indicator"] for c in _call(base, SIGN, "order-sign")}
    accepted = {
        "card": warning["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [],
        "outcomeTimestamp": "2026-12-05T10:01:00Z",
    }
    assert requests.post(f"{base}{SELECT}/feedback", json={"feedback": [accepted]}, timeout=30).status_code == 200
    assert "warning" not in {c["indicator"] for c in _call(base, SIGN, "order-sign")}


def test_the_driver_look_up_on_sqlite_finds_what_the_core_query_finds(tmp_path: Path) -> None:
    """A serving process on SQLite looks up earlier answers through the driver
    (``nagging._ANSWERS_SQL``); the Core query it stands for must return the same rows."""
    serving = _serve(tmp_path, f"sqlite:///{tmp_path / 'audit.db'}")
    base, store = next(serving)
    try:
        selected = _call(base, SELECT, "order-select")
        _override_all(base, selected, {"warning", "critical"})
        _call(base, SELECT, "order-select")  # one more decision, unanswered, still in the journal
        info = next(c for c in selected if c["indicator"] == "info")
        accepted = {
            "card": info["uuid"],
            "outcome": "accepted",
            "acceptedSuggestions": [],
            "outcomeTimestamp": "2026-12-05T11:00:00Z",
        }
        answer = requests.post(f"{base}{SELECT}/feedback", json={"feedback": [accepted]}, timeout=30)
        assert answer.status_code == 200

        memory = FeedbackMemory(store)
        patient_hash = store.hash_patient(PATIENT_ID)
        with sqlite3.connect(tmp_path / "audit.db") as conn:
            refs = [row[0] for row in conn.execute("SELECT DISTINCT order_ref FROM rule_hit")]
        assert refs
        for since in (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)):
            for wanted in (refs, [*refs, "ServiceRequest/not-ordered"], ["ServiceRequest/not-ordered"]):
                direct = memory._query(patient_hash, wanted, since)
                assert direct == memory._core_query(patient_hash, wanted, since)
        assert len(memory._query(patient_hash, refs, datetime.now(UTC) - timedelta(hours=1))) >= 2
    finally:
        next(serving, None)


def _pending(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM pending_decision").fetchone()[0])


def test_the_look_up_on_sqlite_reads_the_filed_tables_without_filing_the_journal(tmp_path: Path) -> None:
    """An answered card is always filed: feedback files the decision journal before it looks
    the card up (``known_card``). So the order-sign look-up reads the tables as they are and
    leaves the journal to the writers' filings, without taking the write lock."""
    db_path = tmp_path / "audit.db"
    serving = _serve(tmp_path, f"sqlite:///{db_path}")
    base, _store = next(serving)
    try:
        selected = _call(base, SELECT, "order-select")
        assert _pending(db_path) == 1  # the order-select decision waits in the journal
        _override_all(base, selected, {"warning"})
        assert _pending(db_path) == 0  # the feedback filed it before looking its card up
        _call(base, SELECT, "order-select")  # a second decision, unanswered, in the journal
        signed = _call(base, SIGN, "order-sign")
        assert "warning" not in {c["indicator"] for c in signed}  # the answer was found
        assert "critical" in {c["indicator"] for c in signed}
        assert _pending(db_path) == 2  # the look-up filed nothing: the second select and the sign
    finally:
        next(serving, None)


def test_the_look_up_reads_one_index_range_of_the_patients_decisions_and_only_answered_hits() -> None:
    """The driver statement's plan: the patient's order-select decisions in the window from
    one index range (not the patient's whole history), then cards, then hits of answered
    cards only."""
    from cds_hooks.audit.sqlite_schema import CREATE
    from cds_hooks.nagging import _ANSWERS_SQL

    conn = sqlite3.connect(":memory:")
    for statement in CREATE:
        conn.execute(statement)
    sql = "EXPLAIN QUERY PLAN " + _ANSWERS_SQL.format(refs="?")
    plan = [row[3] for row in conn.execute(sql, ("hash", "order-select", "2026-12-07", "ServiceRequest/x"))]
    conn.close()
    searches = [step for step in plan if step.startswith("SEARCH")]
    assert searches[0].startswith("SEARCH decision USING INDEX ix_decision_patient_hook_time")
    assert "created_at>?" in searches[0]
    assert [step.split()[1] for step in searches] == ["decision", "card", "feedback", "rule_hit"]
