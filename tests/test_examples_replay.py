"""Every official CDS Hooks example (tests/data/cds-hooks-examples, copied from ../shared)
replayed against the service with a fresh hookInstance and a freshly signed JWT:
order-select/order-sign requests get 200 (or 412 where the data cannot be had), feedback
gets 200, requests for other hooks and the negative examples get a 4xx."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.cases import build_order
from cds_hooks.devtools.conformance import validate

from .conftest import RULES_DIR
from .support.jwt_helpers import jwks, make_keypair, sign_token

EXAMPLES = Path(__file__).resolve().parent / "data" / "cds-hooks-examples"
ISS = "https://ehr.example.org"
BASE = "http://cds.test"
UNREACHABLE_FHIR = "http://127.0.0.1:9"  # loopback, nothing listens: the record cannot be had


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _requests() -> list[Path]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.json")):
        body = _load(path)
        if "negative" in path.parts:
            continue
        if isinstance(body, dict) and ("hook" in body or set(body) == {"context"}):
            found.append(path)
    return found


def _feedback() -> list[Path]:
    return [p for p in sorted(EXAMPLES.rglob("*.json")) if isinstance(_load(p), dict) and "feedback" in _load(p)]


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    private, jwk = make_keypair("ES384", kid="replay")
    (tmp / "jwks.json").write_text(json.dumps(jwks(jwk)))
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp / 'd.db'}",
        patient_hash_key=b"k" * 32,
        public_base_url=BASE,
        fetch_budget_s=1.0,
        trusted_issuers=json.dumps([{"iss": ISS, "jwks_file": str(tmp / "jwks.json")}]),
    )
    client = create_app(config).test_client()

    def post(path: str, body) -> object:
        token = sign_token(private, "ES384", "replay", ISS, BASE + path)
        return client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    return post


def _as_request(path: Path) -> dict:
    body = copy.deepcopy(_load(path))
    if "hook" not in body:  # a library context example: wrap it into a whole request
        hook = "order-sign" if "order-sign" in path.name else "order-select"
        body = {"hook": hook, "context": body["context"]}
    body["hookInstance"] = str(uuid.uuid4())
    return body


def _service_for(hook: str) -> str:
    return "cryotherapy-order-sign" if hook == "order-sign" else "cryotherapy-order-select"


@pytest.mark.parametrize("path", _requests(), ids=lambda p: p.name)
def test_example_request_is_answered(signed, path) -> None:
    body = _as_request(path)
    response = signed(f"/cds-services/{_service_for(body['hook'])}", body)
    if body["hook"] not in ("order-select", "order-sign"):
        assert response.status_code == 400
        assert "this service answers" in json.dumps(response.get_json())
        return
    assert response.status_code in (200, 412), response.get_data(as_text=True)
    if response.status_code == 200:
        assert validate("response", response.get_json()) == []


ORDER_REQUESTS = [p for p in _requests() if _as_request(p)["hook"] in ("order-select", "order-sign")]


@pytest.mark.parametrize("path", ORDER_REQUESTS, ids=lambda p: p.name)
def test_example_request_with_a_cryotherapy_order_added_is_answered(signed, path) -> None:
    body = _as_request(path)
    context = body["context"]
    order = build_order("wbc", "added-cryo")
    context["draftOrders"].setdefault("entry", []).append({"resource": order})
    if body["hook"] == "order-select":
        context["selections"] = [*list(context.get("selections") or []), "ServiceRequest/added-cryo"]
    if "fhirServer" in body:
        body["fhirServer"] = UNREACHABLE_FHIR  # never reach out beyond this machine
    response = signed(f"/cds-services/{_service_for(body['hook'])}", body)
    assert response.status_code in (200, 412), response.get_data(as_text=True)
    if response.status_code == 200:
        cards = response.get_json()["cards"]
        assert validate("response", {"cards": cards}) == []
        assert cards, "a whole-body order always gets at least one card"


@pytest.mark.parametrize("path", _feedback(), ids=lambda p: p.name)
def test_example_feedback_is_accepted(signed, path) -> None:
    assert signed("/cds-services/cryotherapy-order-select/feedback", _load(path)).status_code == 200


@pytest.mark.parametrize("path", sorted((EXAMPLES / "negative").glob("*.json")), ids=lambda p: p.name)
def test_negative_examples_get_a_4xx(signed, path) -> None:
    response = signed("/cds-services/cryotherapy-order-sign", _load(path))
    assert 400 <= response.status_code < 500
    assert response.get_json()["operationOutcome"]["resourceType"] == "OperationOutcome"
