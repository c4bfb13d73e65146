"""Prefetch left out -> the service fetches from the client's FHIR server, over real HTTP
against the FHIR sandbox server on loopback (CDS Hooks §prefetch, issue: EHR-ready)."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, request

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.fhir_server import create_fhir_app, load_resources

from .conftest import RULES_DIR, card_findings
from .support.loopback import LoopbackServer

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
PACEMAKER = FIXTURES / "02-pacemaker-whole-body-order-sign.json"
TOKEN = "secret-access-token-0123456789"


@pytest.fixture()
def fhir_server() -> Iterator[tuple[LoopbackServer, list[str]]]:
    seen_auth: list[str] = []
    app = create_fhir_app(load_resources([PACEMAKER]), page_size=2)

    @app.before_request
    def remember_authorization() -> None:
        seen_auth.append(request.headers.get("Authorization", ""))

    server = LoopbackServer(app)
    yield server, seen_auth
    server.stop()


def _client(tmp_path: Path, budget_s: float = 4.0):
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
        fetch_budget_s=budget_s,
    )
    return create_app(config).test_client()


def _cards(response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return sorted(card_findings(response.get_json()["cards"]))


def test_without_prefetch_the_service_fetches_and_returns_the_same_cards(tmp_path, fhir_server, caplog) -> None:
    server, seen_auth = fhir_server
    client = _client(tmp_path)
    body = json.loads(PACEMAKER.read_text())
    with_prefetch = _cards(client.post("/cds-services/cryotherapy-order-sign", json=body))
    fetched = copy.deepcopy(body)
    del fetched["prefetch"]
    fetched["fhirServer"] = server.url
    fetched["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cryo-cds",
    }
    with caplog.at_level(logging.DEBUG):
        without_prefetch = _cards(client.post("/cds-services/cryotherapy-order-sign", json=fetched))
    assert without_prefetch == with_prefetch
    assert ("CI-DEVICE-CARDIAC", "warning") in without_prefetch
    assert seen_auth and all(a == f"Bearer {TOKEN}" for a in seen_auth)
    assert TOKEN not in caplog.text


def test_paginated_prefetch_is_completed_from_the_server(tmp_path, fhir_server) -> None:
    server, _ = fhir_server
    client = _client(tmp_path)
    body = json.loads(PACEMAKER.read_text())
    import requests

    first_page = requests.get(f"{server.url}/Observation?patient=case-patient", timeout=5).json()
    assert any(link["relation"] == "next" for link in first_page["link"])
    expected = _cards(client.post("/cds-services/cryotherapy-order-sign", json=body))
    body["prefetch"]["observations"] = first_page
    body["fhirServer"] = server.url
    assert _cards(client.post("/cds-services/cryotherapy-order-sign", json=body)) == expected


def test_with_the_fhir_server_down_and_no_prefetch_the_answer_is_412(tmp_path, fhir_server) -> None:
    server, _ = fhir_server
    url = server.url
    server.stop()
    body = json.loads(PACEMAKER.read_text())
    del body["prefetch"]
    body["fhirServer"] = url
    response = _client(tmp_path).post("/cds-services/cryotherapy-order-sign", json=body)
    assert response.status_code == 412
    assert response.get_json()["operationOutcome"]["resourceType"] == "OperationOutcome"


def test_with_the_fhir_server_down_and_partial_prefetch_cards_come_with_md_incomplete(tmp_path, fhir_server) -> None:
    server, _ = fhir_server
    url = server.url
    server.stop()
    body = json.loads(PACEMAKER.read_text())
    for key in ("observations", "procedures", "allergies"):
        del body["prefetch"][key]
    body["fhirServer"] = url
    cards = _cards(_client(tmp_path).post("/cds-services/cryotherapy-order-sign", json=body))
    assert ("MD-INCOMPLETE", "warning") in cards
    assert ("CI-DEVICE-CARDIAC", "warning") in cards


def test_a_slow_fhir_server_is_cut_off_by_the_time_budget(tmp_path) -> None:
    slow = Flask("slow")

    @slow.get("/<path:anything>")
    def crawl(anything: str):
        time.sleep(3)
        return {"resourceType": "Bundle", "type": "searchset", "entry": []}

    server = LoopbackServer(slow)
    try:
        body = json.loads(PACEMAKER.read_text())
        for key in ("observations", "procedures"):
            del body["prefetch"][key]
        body["fhirServer"] = server.url
        client = _client(tmp_path, budget_s=1.0)  # built first: loading the rules is not the call
        started = time.monotonic()
        cards = _cards(client.post("/cds-services/cryotherapy-order-sign", json=body))
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert ("MD-INCOMPLETE", "warning") in cards
    assert elapsed < 2.5


def test_a_fhir_server_outside_the_allow_list_is_not_queried(tmp_path, fhir_server) -> None:
    server, seen_auth = fhir_server
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
        fhir_server_allow=("https://fhir.hospital.example/",),
    )
    body = json.loads(PACEMAKER.read_text())
    del body["prefetch"]
    body["fhirServer"] = server.url
    response = create_app(config).test_client().post("/cds-services/cryotherapy-order-sign", json=body)
    assert response.status_code == 412
    assert seen_auth == []
