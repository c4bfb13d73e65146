"""Bad bytes and oversized work (issue 12): every request leaves exactly one decision or a clear
4xx naming the problem, never a 500; logs cannot be forged; tokens in URLs are refused and
never written; metrics are exposed in the Prometheus text format behind the audit token."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cds_hooks.app import create_app
from cds_hooks.config import Config

from .conftest import RULES_DIR
from .support.loopback import LoopbackServer

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
SIGN = "/cds-services/cryotherapy-order-sign"
FEEDBACK = "/cds-services/cryotherapy-order-sign/feedback"
AUDIT_TOKEN = "audit-token-0123456789abcdef"


def _make(db_url: str, **overrides: Any) -> Any:
    config = Config(
        rules_dir=RULES_DIR,
        database_url=db_url,
        patient_hash_key=b"k" * 32,
        auth_required=False,
        audit_token=AUDIT_TOKEN,
        **overrides,
    )
    return create_app(config)


@pytest.fixture()
def app(tmp_path: Path) -> Iterator[Any]:
    application = _make(f"sqlite:///{tmp_path / 'd.db'}", feedback_max_items=5, max_body_bytes=200_000)
    yield application
    application.extensions["cryo_cds"].store.dispose()


def _body() -> dict[str, Any]:
    return json.loads((FIXTURES / "02-pacemaker-whole-body-order-sign.json").read_text())


def _raw(body: dict[str, Any], replace: dict[str, str]) -> bytes:
    """The body as JSON text with placeholders swapped for raw JSON (escapes Python won't emit)."""
    text = json.dumps(body)
    for placeholder, raw in replace.items():
        text = text.replace(json.dumps(placeholder), raw)
    return text.encode()


def _rows(app: Any) -> int:
    return int(app.extensions["cryo_cds"].store.count_decisions())


@pytest.mark.parametrize(
    ("field", "raw", "phrase"),
    [
        ("hookInstance", json.dumps("h" * 129), "hookInstance is longer than 128"),
        ("hookInstance", '"abc\\u0000def"', "hookInstance contains control characters"),
        ("hookInstance", '"abc\\ud800"', "hookInstance contains control characters, NUL or unpaired surrogates"),
        ("patientId", '"p\\udfff"', "context.patientId contains"),
        ("patientId", json.dumps("p" * 300), "context.patientId is longer than 256"),
        (
            "fhirServer",
            '"http://a.example:1@b.example/"',
            "fhirServer is not usable: the URL must not contain user info",
        ),
    ],
)
def test_unstorable_identifiers_are_a_400_naming_the_field_and_leave_no_row(app, field, raw, phrase) -> None:
    body = _body()
    if field == "patientId":
        body["context"]["patientId"] = "PLACEHOLDER"
    else:
        body[field] = "PLACEHOLDER"
    response = app.test_client().post(SIGN, data=_raw(body, {"PLACEHOLDER": raw}), content_type="application/json")
    assert response.status_code == 400
    assert phrase in json.dumps(response.get_json()["problems"])
    assert _rows(app) == 0


def test_odd_text_inside_resources_is_answered_and_recorded_once(db_url: str) -> None:
    application = _make(db_url)
    body = _body()
    entry = body["context"]["draftOrders"]["entry"][0]["resource"]
    entry.setdefault("note", []).append({"text": "PLACEHOLDER"})
    for value in body["prefetch"].values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            for item in value.get("entry", []):
                item["resource"].setdefault("note", []).append({"text": "PLACEHOLDER"})
    raw = _raw(body, {"PLACEHOLDER": '"nul \\u0000 and lone \\ud800 surrogate"'})
    response = application.test_client().post(SIGN, data=raw, content_type="application/json")
    assert response.status_code == 200
    assert _rows(application) == 1
    application.extensions["cryo_cds"].store.dispose()


@pytest.mark.parametrize("path", [SIGN, FEEDBACK])
@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        ("1" * 5000, "not acceptable JSON"),
        ("NaN", "not acceptable JSON"),
        ("-Infinity", "not acceptable JSON"),
    ],
)
def test_parser_failures_are_400(app, path, raw, phrase) -> None:
    body = _body() if path == SIGN else {"feedback": [{"card": "x", "outcome": "accepted"}]}
    body["extension"] = {"n": "PLACEHOLDER"}
    response = app.test_client().post(path, data=_raw(body, {"PLACEHOLDER": raw}), content_type="application/json")
    assert response.status_code == 400
    assert phrase in response.get_json()["detail"]


def _feedback_item(**changes: Any) -> dict[str, Any]:
    item = {
        "card": "0f6a8c1e-0000-4000-8000-000000000001",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-12-01T10:00:00Z",
        "overrideReason": {
            "reason": {"code": "x", "system": "http://example.org", "display": "X"},
            "userComment": "fine",
        },
    }
    item.update(changes)
    return item


def test_too_many_feedback_items_are_refused_naming_the_limit(app) -> None:
    response = app.test_client().post(FEEDBACK, json={"feedback": [_feedback_item()] * 6})
    assert response.status_code == 413
    assert "at most 5 items" in response.get_json()["detail"]


@pytest.mark.parametrize(
    ("item", "phrase"),
    [
        (_feedback_item(card="c" * 65), "feedback[0].card is longer than 64"),
        (_feedback_item(card="PLACEHOLDER"), "feedback[0].card contains"),
        (_feedback_item(overrideReason={"userComment": "x" * 4001}), "overrideReason.userComment is longer than 4000"),
        (_feedback_item(overrideReason={"userComment": "PLACEHOLDER"}), "overrideReason.userComment contains"),
        (_feedback_item(overrideReason={"reason": {"code": "PLACEHOLDER"}}), "overrideReason.reason.code contains"),
        (
            _feedback_item(outcome="accepted", acceptedSuggestions=[{"id": "PLACEHOLDER"}]),
            "acceptedSuggestions[].id contains",
        ),
    ],
)
def test_unstorable_feedback_fields_are_a_400_naming_the_field(app, item, phrase) -> None:
    raw = _raw({"feedback": [item]}, {"PLACEHOLDER": '"a\\u0000\\ud800"'})
    response = app.test_client().post(FEEDBACK, data=raw, content_type="application/json")
    assert response.status_code == 400
    assert phrase in json.dumps(response.get_json()["problems"])


@pytest.mark.parametrize(
    "bound", ["0001-01-01", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "not-a-date"]
)
def test_audit_date_bounds_out_of_range_are_400(app, bound) -> None:
    response = app.test_client().get(
        f"/audit/summary?since={bound}", headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}
    )
    assert response.status_code == 400
    assert "since" in response.get_json()["detail"]


@pytest.mark.parametrize(
    "query", ["access_token=abc123secret", "token=abc123secret", "x=eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJ4In0.abc123secret"]
)
def test_credentials_in_the_query_string_are_refused_and_not_logged(app, caplog, query) -> None:
    with caplog.at_level(logging.DEBUG):
        response = app.test_client().get(f"/cds-services?{query}")
    assert response.status_code == 400
    assert "Authorization header" in response.get_json()["detail"]
    assert "abc123secret" not in caplog.text


def test_the_development_server_log_leaves_out_query_strings_and_escapes_paths(app, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="werkzeug"), LoopbackServer(app) as server:
        assert requests.get(server.url + "/cds-services?access_token=abc123secret", timeout=10).status_code == 400
        requests.get(server.url + "/healthz?x=1", timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any('"GET /healthz HTTP/1.1" 200' in line for line in lines), lines
    assert "abc123secret" not in caplog.text


def test_a_newline_or_nul_in_the_path_cannot_forge_a_log_line(app, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        response = app.test_client().get("/cds-services/x%0AFORGED%20line%00%0D%0Aanother")
    assert response.status_code == 405  # the service path exists for POST only
    messages = [record.getMessage() for record in caplog.records]
    assert messages and all("\n" not in m and "\r" not in m and "\x00" not in m for m in messages)
    assert any("x\\x0aFORGED line\\x00" in m for m in messages)


def test_a_chunked_body_over_the_limit_is_413(app) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"}'

    with LoopbackServer(app) as server:
        response = requests.post(
            server.url + SIGN, data=chunks(), timeout=30, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["error"] == "payload-too-large"


def test_metrics_are_token_protected_and_in_the_prometheus_text_format(app) -> None:
    client = app.test_client()
    assert client.post(SIGN, json=_body()).status_code == 200
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {AUDIT_TOKEN}"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }
    calls = samples[
        ("cryo_cds_calls_total", (("hook", "order-sign"), ("service", "cryotherapy-order-sign"), ("status", "200")))
    ]
    assert calls >= 1
    assert samples[("cryo_cds_cards_total", (("rule", "CI-DEVICE-CARDIAC"), ("severity", "warning")))] >= 1
    assert any(
        name == "cryo_cds_step_seconds_count" and dict(labels).get("step") == "engine" for name, labels in samples
    )
    assert ("cryo_cds_audit_spool_depth", ()) in samples


def test_metrics_are_off_without_an_audit_token(tmp_path: Path) -> None:
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
    )
    application = create_app(config)
    assert application.test_client().get("/metrics").status_code == 404
    application.extensions["cryo_cds"].store.dispose()


def test_the_gunicorn_access_log_drops_query_strings_and_escapes_paths() -> None:
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config as GunicornConfig

    from cds_hooks.gunicorn_conf import SafeAccessLogger

    logger = SafeAccessLogger(GunicornConfig())
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/cds-services/x%0Aforged\nline?access_token=secret",
        "PATH_INFO": "/cds-services/x\nforged",
        "QUERY_STRING": "access_token=secret",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }
    response = SimpleNamespace(status="200 OK", sent=2, headers=[])
    atoms = logger.atoms(
        response, SimpleNamespace(headers=[("Authorization", "Bearer secret")]), environ, timedelta(milliseconds=5)
    )
    line = " ".join(atoms[key] for key in ("r", "U", "q", "{authorization}i"))
    assert "secret" not in line
    assert "\n" not in line and "x%0Aforged\\x0aline" in line
