"""The per-call deadline (issue 12, ``CDS_HOOKS_CALL_DEADLINE_S``): the FHIR fetch budget is
taken from it, the pipeline checks it between steps, and a call that runs out answers with a
card saying the check was not completed (never an empty, all-clear list) and a decision row
that says so. Clocks are driven by the test (or by a loopback FHIR server), never waited on."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cds_hooks.app import create_app
from cds_hooks.audit.models import Decision
from cds_hooks.config import Config, ConfigError, from_env
from cds_hooks.deadline import CallDeadline
from cds_hooks.devtools.fhir_server import create_fhir_app, load_resources
from cds_hooks.hooks import parse_hook_request
from cds_hooks.service import SERVICES

from .conftest import RULES_DIR, card_findings
from .support.hostile_fhir import HostileServer, dripping_body
from .support.loopback import LoopbackServer

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
PACEMAKER = FIXTURES / "02-pacemaker-whole-body-order-sign.json"
SIGN = SERVICES["cryotherapy-order-sign"]


class FakeClock:
    """A monotonic clock the test (or a loopback server handling a request) moves forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class DeadlineAfterChecks(CallDeadline):
    """A deadline that passes at its ``n``-th check: pins down where the pipeline checks it."""

    def __init__(self, n: int) -> None:
        super().__init__(5.0)
        self.checks, self._n = 0, n

    def passed(self) -> bool:
        self.checks += 1
        return self.checks >= self._n


@pytest.fixture()
def app(tmp_path: Path) -> Iterator[Any]:
    application = _app(tmp_path)
    yield application
    application.extensions["cryo_cds"].store.dispose()


def _app(tmp_path: Path, **overrides: Any) -> Any:
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
        fhir_allow_private=True,
        **overrides,
    )
    return create_app(config)


def _two_orders() -> dict[str, Any]:
    """The pacemaker request with a second whole-body order beside the first."""
    body = json.loads(PACEMAKER.read_text())
    entries = body["context"]["draftOrders"]["entry"]
    second = copy.deepcopy(entries[0])
    second["resource"]["id"] = "cryo-second"
    entries.append(second)
    return body


def _rows(app: Any) -> list[Any]:
    with app.extensions["cryo_cds"].store.reading() as conn:
        return list(conn.execute(select(Decision.status, Decision.data_gaps)))


def test_the_setting_is_read_and_checked() -> None:
    assert from_env({"CDS_HOOKS_CALL_DEADLINE_S": "2.5"}).call_deadline_s == 2.5
    assert from_env({}).call_deadline_s == 5.0
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ConfigError, match="CDS_HOOKS_CALL_DEADLINE_S"):
            from_env({"CDS_HOOKS_CALL_DEADLINE_S": bad})


def test_the_fetch_budget_is_cut_to_fit_the_deadline_with_a_reserve() -> None:
    clock = FakeClock()
    deadline = CallDeadline(5.0, clock)
    assert deadline.fetch_budget_s(4.0) == 4.0  # 5 s minus a 1 s reserve
    assert deadline.fetch_budget_s(30.0) == 4.0
    clock.now += 3.0
    assert deadline.fetch_budget_s(4.0) == pytest.approx(1.0)
    clock.now += 3.0
    assert deadline.fetch_budget_s(4.0) == 0.0 and deadline.passed()


def test_a_deadline_passing_during_the_fetch_answers_with_an_unfinished_card(app) -> None:
    """The FHIR server 'takes' 10 s of a 5 s deadline: no order is checked, and the card says so."""
    clock = FakeClock()
    fhir = create_fhir_app(load_resources([PACEMAKER]))

    @fhir.after_request
    def slow(response: Any) -> Any:
        clock.now = 1010.0  # the first answer took 10 s; the others came at once
        return response

    body = json.loads(PACEMAKER.read_text())
    del body["prefetch"]
    state = app.extensions["cryo_cds"]
    with LoopbackServer(fhir) as server:
        body["fhirServer"] = server.url
        hook_request = parse_hook_request(body, SIGN.hook)
        deadline = CallDeadline(5.0, clock)
        outcome = state.pipeline.run(SIGN, hook_request, state.record_source(hook_request, None, deadline), deadline)
    assert outcome.status == 200
    assert card_findings(outcome.body["cards"]) == {("MD-UNFINISHED", "warning")}
    card = outcome.body["cards"][0]
    assert "could not be completed" in card["summary"]
    assert "not an all-clear" in card["detail"] and "No safety findings are shown" in card["detail"]
    assert outcome.evaluated_rules == []
    assert any(gap.startswith("call deadline: stopped after 10.00 s (limit 5 s)") for gap in outcome.decision.data_gaps)


def test_the_deadline_is_checked_between_orders_and_keeps_the_cards_of_those_checked(app) -> None:
    state = app.extensions["cryo_cds"]
    hook_request = parse_hook_request(_two_orders(), SIGN.hook)
    complete = state.pipeline.run(SIGN, hook_request)
    # checks: after reading the record (1), before the first order (2), before the second (3)
    deadline = DeadlineAfterChecks(3)
    partial = state.pipeline.run(SIGN, hook_request, None, deadline)
    assert deadline.checks == 3
    findings = card_findings(partial.body["cards"])
    assert ("MD-UNFINISHED", "warning") in findings
    assert ("CI-DEVICE-CARDIAC", "warning") in findings  # the first order's findings stay
    assert ("MD-UNFINISHED", "warning") not in card_findings(complete.body["cards"])
    unfinished = next(c for c in partial.body["cards"] if c["source"]["topic"]["code"] == "MD-UNFINISHED")
    assert "The cards shown are for the orders that were checked" in unfinished["detail"]
    assert "ServiceRequest/cryo-second: not checked" in unfinished["detail"]
    assert "ServiceRequest/cryo-second" in partial.decision.data_gaps[-1]
    assert partial.decision.data_gaps[-1].startswith("call deadline:")


def test_a_call_past_its_deadline_over_http_answers_200_with_one_row_that_says_so(tmp_path: Path) -> None:
    application = _app(tmp_path, call_deadline_s=1e-9)  # passed before the record is read
    try:
        response = application.test_client().post(f"/cds-services/{SIGN.id}", json=json.loads(PACEMAKER.read_text()))
        assert response.status_code == 200
        assert card_findings(response.get_json()["cards"]) == {("MD-UNFINISHED", "warning")}
        rows = _rows(application)
    finally:
        application.extensions["cryo_cds"].store.dispose()
    assert len(rows) == 1
    status, gaps = rows[0]
    assert status == 200 and any(gap.startswith("call deadline:") for gap in gaps)


def test_the_fetch_budget_over_http_is_taken_from_the_call_deadline(tmp_path: Path) -> None:
    """A FHIR server that drips its body: with a 60 s fetch budget but a 1 s call deadline, the
    fetch is cut within the call deadline (if it were not, the call would hang for a minute)."""
    application = _app(tmp_path, call_deadline_s=1.0, fetch_budget_s=60.0)
    server = HostileServer(dripping_body)
    body = json.loads(PACEMAKER.read_text())
    del body["prefetch"]
    body["fhirServer"] = server.url
    try:
        started = time.monotonic()
        response = application.test_client().post(f"/cds-services/{SIGN.id}", json=body)
        elapsed = time.monotonic() - started
    finally:
        server.close()
        application.extensions["cryo_cds"].store.dispose()
    assert elapsed < 30, f"the fetch ignored the call deadline ({elapsed:.0f} s)"
    assert server.requests  # it was asked
    assert response.status_code in (200, 412)
    text = response.get_data(as_text=True)
    assert "time budget" in text or "could not be completed" in text
