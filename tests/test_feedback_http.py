"""Feedback (CDS Hooks §feedback) and the read-only audit API, through HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.conformance import validate

from .conftest import RULES_DIR

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
AUDIT_TOKEN = "audit-token-for-tests-0123456789"
SELECT = "/cds-services/cryotherapy-order-select"


@pytest.fixture()
def client(tmp_path: Path):
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
        audit_token=AUDIT_TOKEN,
    )
    app = create_app(config)
    yield app.test_client()
    app.extensions["cryo_cds"].store.dispose()


def _raynaud_cards(client) -> list[dict]:
    body = json.loads((FIXTURES / "05-raynaud-local-ln2-order-select.json").read_text())
    return client.post(SELECT, json=body).get_json()["cards"]


def _audit(client, path: str):
    return client.get(path, headers={"Authorization": f"Bearer {AUDIT_TOKEN}"})


def test_accepted_and_overridden_feedback_is_stored_once_and_summarised(client) -> None:
    card = _raynaud_cards(client)[0]
    suggestion = card["suggestions"][0]["uuid"]
    accepted = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestion}],
                "outcomeTimestamp": "2026-11-21T10:00:00Z",
            }
        ]
    }
    assert validate("feedback", accepted) == []
    for _ in range(2):  # a repeated POST is idempotent
        response = client.post(f"{SELECT}/feedback", json=accepted)
        assert response.status_code == 200 and response.get_json() == {}
    second = _raynaud_cards(client)[0]
    overridden = {
        "feedback": [
            {
                "card": second["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-21T10:05:00Z",
                "overrideReason": {
                    "reason": {"code": "physician-assessed", "system": "x"},
                    "userComment": "specialist agreed",
                },
            }
        ]
    }
    assert client.post(f"{SELECT}/feedback", json=overridden).status_code == 200
    rows = {r["rule_id"]: r for r in _audit(client, "/audit/summary").get_json()["rules"]}
    raynaud = rows["CI-RAYNAUD"]
    assert (raynaud["fires"], raynaud["accepted"], raynaud["overridden"]) == (2, 1, 1)
    assert raynaud["override_rate"] == 0.5
    assert raynaud["top_override_reasons"][0]["code"] == "physician-assessed"
    assert raynaud["comments"] == 1
    explained = _audit(client, f"/audit/cards/{second['uuid']}").get_json()
    assert explained["rule_id"] == "CI-RAYNAUD"
    assert "Condition/r1" in json.dumps(explained)


def test_feedback_for_an_unknown_card_is_accepted_and_flagged(client) -> None:
    body = {"feedback": [{"card": "no-such-card", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z"}]}
    assert client.post(f"{SELECT}/feedback", json=body).status_code == 200


@pytest.mark.parametrize(
    ("item", "phrase"),
    [
        (
            {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-21T10:00:00Z"},
            "acceptedSuggestions is required",
        ),
        ({"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-11-21T10:00:00Z"}, "outcome must be"),
        ({"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}, "RFC 3339"),
        (
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z", "overrideReason": {}},
            "overrideReason needs",
        ),
    ],
)
def test_invalid_feedback_gets_a_400_naming_the_problem(client, item, phrase) -> None:
    response = client.post(f"{SELECT}/feedback", json={"feedback": [item]})
    assert response.status_code == 400
    assert phrase in json.dumps(response.get_json())


def test_the_audit_api_needs_its_token(client) -> None:
    assert client.get("/audit/summary").status_code == 401
    assert client.get("/audit/summary", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert _audit(client, "/audit/summary").status_code == 200
    assert _audit(client, "/audit/summary?since=notadate").status_code == 400
    silent = _audit(client, "/audit/silent-rules").get_json()
    assert "CI-RAYNAUD" in silent["never_evaluated"] or "CI-RAYNAUD" in silent["never_fired"]
