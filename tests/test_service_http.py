"""The HTTP contract of the service: discovery, calls, bad input and the decision log.

Run against the Flask app in-process (the WSGI contract); the real-process test for the
engine crash lives in test_server_process.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.conformance import validate

from .conftest import RULES_DIR, card_findings, cards_by_rule
from .support.database import decisions_held

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
SANDBOX_PAMA = (
    Path(__file__).resolve().parent
    / "data"
    / "cds-hooks-examples"
    / "captured-sandbox"
    / "sandbox-pama-request-order-select.json"
)


@pytest.fixture()
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'decisions.db'}"


@pytest.fixture()
def client(db_url: str):
    config = Config(
        rules_dir=RULES_DIR,
        database_url=db_url,
        patient_hash_key=b"test-key-0123456789",
        auth_required=False,
        max_body_bytes=2_000_000,
    )
    app = create_app(config)
    yield app.test_client()
    app.extensions["cryo_cds"].store.dispose()


def _decisions(db_url: str) -> int:
    return decisions_held(db_url)


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_discovery_lists_order_select_and_order_sign_with_prefetch(client) -> None:
    for path in ("/cds-services", "/cds-services/"):
        body = client.get(path).get_json()
        assert validate("discovery", body) == []
        hooks = {s["hook"]: s for s in body["services"]}
        assert set(hooks) == {"order-select", "order-sign"}
        prefetch = hooks["order-select"]["prefetch"]
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        assert "http://loinc.org|8480-6" in prefetch["observationsByCode"]
        assert "category=vital-signs,laboratory" in prefetch["observations"]
        assert "_include=MedicationRequest:medication" in prefetch["medicationRequests"]
        for key in (
            "conditions",
            "medicationRequests",
            "medicationStatements",
            "devices",
            "allergies",
            "procedures",
            "serviceRequests",
        ):
            assert "{{context.patientId}}" in prefetch[key]


def test_captured_sandbox_request_with_empty_coding_gets_no_cards(client, db_url) -> None:
    body = json.loads(SANDBOX_PAMA.read_text())
    response = client.post("/cds-services/cryotherapy-order-select", json=body)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    assert _decisions(db_url) == 1


def test_pregnant_patient_with_whole_body_order_gets_critical_ci_preg(client) -> None:
    body = _fixture("01-pregnant-whole-body-order-select")
    # the fixture's pregnancy is dated for 2026-11-21; move it to "recent" for any run date
    from datetime import UTC, datetime, timedelta

    recent = (datetime.now(UTC) - timedelta(days=60)).date().isoformat()
    for entry in body["prefetch"]["conditions"]["entry"]:
        entry["resource"]["onsetDateTime"] = recent
    cards = client.post("/cds-services/cryotherapy-order-select", json=body).get_json()["cards"]
    assert validate("response", {"cards": cards}) == []
    preg = [cards_by_rule(cards)["CI-PREG"]]
    assert preg[0]["indicator"] == "critical"
    assert preg[0]["suggestions"][0]["actions"][0] == {
        "type": "delete",
        "description": "Cancel the draft whole-body cryotherapy order",
        "resourceId": "ServiceRequest/cryo-1",
    }
    assert "Condition/r" in preg[0]["detail"]


def test_pacemaker_patient_with_whole_body_order_gets_ci_device_cardiac(client) -> None:
    body = _fixture("02-pacemaker-whole-body-order-sign")
    cards = client.post("/cds-services/cryotherapy-order-sign", json=body).get_json()["cards"]
    codes = dict(card_findings(cards))
    assert codes["CI-DEVICE-CARDIAC"] == "warning"


def test_cards_are_ordered_critical_then_warning_then_info(client) -> None:
    body = _fixture("07-heart-failure-afib-whole-body-order-sign")
    body["prefetch"]["medicationRequests"]["entry"].append(
        {
            "resource": {
                "resourceType": "MedicationRequest",
                "id": "w1",
                "status": "active",
                "intent": "order",
                "subject": {"reference": "Patient/case-patient"},
                "medicationCodeableConcept": {
                    "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "11289"}]
                },
            }
        }
    )
    cards = client.post("/cds-services/cryotherapy-order-sign", json=body).get_json()["cards"]
    ranks = [{"critical": 0, "warning": 1, "info": 2}[c["indicator"]] for c in cards]
    assert ranks == sorted(ranks) and ranks[0] == 0 and 1 in ranks


@pytest.mark.parametrize(
    ("payload", "content_type", "status", "phrase"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[]", "application/json", 400, "JSON object"),
        (b'{"hook": "order-select"}', "application/json", 400, "hookInstance is required"),
        (
            b'{"hook": 5, "hookInstance": "x", "context": {}}',
            "application/json",
            400,
            "hook must be a non-empty string",
        ),
        (b"hook=order-select", "application/x-www-form-urlencoded", 415, "application/json"),
    ],
)
def test_bad_input_gets_a_clear_4xx_json_error(client, db_url, payload, content_type, status, phrase) -> None:
    response = client.post("/cds-services/cryotherapy-order-select", data=payload, content_type=content_type)
    assert response.status_code == status
    body = response.get_json()
    assert phrase in json.dumps(body)
    assert body["operationOutcome"]["resourceType"] == "OperationOutcome"
    assert "Traceback" not in response.get_data(as_text=True)
    assert _decisions(db_url) == 0


def test_missing_context_fields_are_all_reported_at_once(client) -> None:
    body = {"hook": "order-select", "hookInstance": "d1", "context": {"draftOrders": {"resourceType": "Patient"}}}
    problems = client.post("/cds-services/cryotherapy-order-select", json=body).get_json()["problems"]
    assert "context.userId is required" in problems
    assert "context.patientId is required" in problems
    assert "context.draftOrders must be a FHIR Bundle" in problems
    assert "context.selections is required for order-select" in problems


def test_wrong_hook_for_the_service_is_refused(client) -> None:
    body = _fixture("04-no-findings-local-ln2-order-sign")
    response = client.post("/cds-services/cryotherapy-order-select", json=body)
    assert response.status_code == 400
    assert "this service answers 'order-select'" in json.dumps(response.get_json())


def test_unknown_service_is_404_with_a_hint(client) -> None:
    response = client.post("/cds-services/nope", json={})
    assert response.status_code == 404
    assert "GET /cds-services" in response.get_json()["detail"]


def test_oversized_body_is_413(client) -> None:
    response = client.post(
        "/cds-services/cryotherapy-order-select", data=b"{" + b" " * 2_100_000 + b"}", content_type="application/json"
    )
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload-too-large"


def test_every_call_leaves_exactly_one_decision_record(client, db_url) -> None:
    names = sorted(p.stem for p in FIXTURES.glob("*.json"))
    for name in names:
        body = _fixture(name)
        service = "cryotherapy-order-sign" if body["hook"] == "order-sign" else "cryotherapy-order-select"
        assert client.post(f"/cds-services/{service}", json=body).status_code == 200
    assert _decisions(db_url) == len(names)


def test_no_prefetch_and_no_fhir_server_is_412_with_operation_outcome(client, db_url) -> None:
    body = _fixture("03-no-findings-whole-body-order-select")
    del body["prefetch"]
    response = client.post("/cds-services/cryotherapy-order-select", json=body)
    assert response.status_code == 412
    assert response.get_json()["operationOutcome"]["issue"][0]["severity"] == "error"
    assert _decisions(db_url) == 1


def test_partial_prefetch_adds_an_md_incomplete_warning(client) -> None:
    body = _fixture("04-no-findings-local-ln2-order-sign")
    del body["prefetch"]["devices"]
    cards = client.post("/cds-services/cryotherapy-order-sign", json=body).get_json()["cards"]
    incomplete = [c for c in cards if ("MD-INCOMPLETE", "warning") in card_findings([c])]
    assert incomplete and incomplete[0]["indicator"] == "warning" and "devices" in incomplete[0]["detail"]


def test_a_cryotherapy_draft_that_is_not_valid_fhir_is_not_passed_in_silence(client) -> None:
    body = _fixture("04-no-findings-local-ln2-order-sign")
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["occurrenceDateTime"] = "2026-12-01"  # together with occurrenceTiming: invalid R4 (one choice only)
    cards = client.post("/cds-services/cryotherapy-order-sign", json=body).get_json()["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [("MD-INCOMPLETE", "warning")]
    assert card_findings(cards) == {("MD-INCOMPLETE", "warning")}
    assert "ServiceRequest/cryo-1" in cards[0]["detail"]


def test_an_invalid_draft_that_is_not_cryotherapy_gives_no_card(client) -> None:
    body = _fixture("09-mri-order-no-cryotherapy-order-sign")
    body["context"]["draftOrders"]["entry"][0]["resource"]["status"] = 42
    assert client.post("/cds-services/cryotherapy-order-sign", json=body).get_json() == {"cards": []}
