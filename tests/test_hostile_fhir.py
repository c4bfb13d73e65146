"""Hostile FHIR servers on loopback (issue 12): a call that must fetch from them answers within
its budget + 1 s, reads no more than the size cap, follows nothing to another origin and never
sends the access token anywhere but the origin of ``fhirServer``."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.fhir_server import load_resources
from cds_hooks.fhir_targets import address_refused, parse_allow_list, parse_target

from .conftest import RULES_DIR
from .support.hostile_fhir import (
    UNPARSABLE_ANSWERS,
    Firehose,
    HostileServer,
    answer_with,
    dripping_body,
    foreign_next_app,
    redirect_to,
    slow_headers,
)
from .support.loopback import LoopbackServer

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
PACEMAKER = FIXTURES / "02-pacemaker-whole-body-order-sign.json"
TOKEN = "hostile-test-access-token-0123456789"
BUDGET_S = 1.5
SERVICE = "/cds-services/cryotherapy-order-sign"


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[Any]:
    yield from _client(tmp_path)


def _client(tmp_path: Path, **overrides: Any) -> Iterator[Any]:
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
        fetch_budget_s=BUDGET_S,
        fetch_max_bytes=1024 * 1024,
        **overrides,
    )
    app = create_app(config)
    yield app.test_client()
    app.extensions["cryo_cds"].store.dispose()


def _call_without_prefetch(client: Any, fhir_server: str) -> tuple[Any, float]:
    body = json.loads(PACEMAKER.read_text())
    del body["prefetch"]
    body["fhirServer"] = fhir_server
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cryo-cds",
    }
    started = time.monotonic()
    response = client.post(SERVICE, json=body)
    return response, time.monotonic() - started


@pytest.mark.parametrize("behaviour", [slow_headers, dripping_body], ids=["slow headers", "dripping body"])
def test_a_slow_server_cannot_hold_a_call_past_its_budget(client, behaviour) -> None:
    server = HostileServer(behaviour)
    try:
        response, elapsed = _call_without_prefetch(client, server.url)
    finally:
        server.close()
    assert elapsed < BUDGET_S + 1, f"the call took {elapsed:.1f} s"
    assert response.status_code == 412  # nothing could be read: the record is unavailable
    assert "time budget" in response.get_data(as_text=True)
    assert server.requests  # it was asked


def test_a_huge_body_is_cut_at_the_size_cap(client) -> None:
    firehose = Firehose()
    server = HostileServer(firehose)
    try:
        response, elapsed = _call_without_prefetch(client, server.url)
    finally:
        server.close()
    assert elapsed < BUDGET_S + 1
    assert response.status_code == 412
    assert "larger than 1048576 bytes" in response.get_data(as_text=True)
    # What left the server per request: the cap plus socket buffers, not the gigabyte on offer.
    assert firehose.sent < len(server.requests) * (1024 * 1024 + 16 * 1024 * 1024)


@pytest.mark.parametrize("kind", sorted(UNPARSABLE_ANSWERS))
def test_an_answer_hostile_to_the_json_parser_is_a_failed_query_not_a_500(client, kind) -> None:
    server = HostileServer(answer_with(UNPARSABLE_ANSWERS[kind]))
    try:
        response, _elapsed = _call_without_prefetch(client, server.url)
    finally:
        server.close()
    assert response.status_code == 412
    assert "not JSON" in response.get_data(as_text=True)
    assert server.requests


def test_a_redirect_is_not_followed(client) -> None:
    other = HostileServer(slow_headers)
    server = HostileServer(redirect_to(other.url + "/Patient/x"))
    try:
        response, _elapsed = _call_without_prefetch(client, server.url)
    finally:
        server.close()
        other.close()
    assert response.status_code == 412 and "HTTP 302" in response.get_data(as_text=True)
    assert other.requests == []


@pytest.fixture()
def paged_fhir_with_foreign_next() -> Iterator[tuple[LoopbackServer, LoopbackServer, list[str]]]:
    """The fixture FHIR server, whose search pages point ``next`` at another origin."""
    seen_by_other: list[str] = []
    other_app = Flask("other")

    @other_app.route("/<path:_path>")
    def anything(_path: str) -> Any:
        seen_by_other.append(request.headers.get("Authorization", ""))
        return {"resourceType": "Bundle", "type": "searchset", "entry": []}

    other = LoopbackServer(other_app)
    server = LoopbackServer(foreign_next_app(load_resources([PACEMAKER]), other.url))
    yield server, other, seen_by_other
    server.stop()
    other.stop()


def test_next_links_to_another_origin_are_not_followed_and_get_no_token(client, paged_fhir_with_foreign_next) -> None:
    server, _other, seen_by_other = paged_fhir_with_foreign_next
    response, _elapsed = _call_without_prefetch(client, server.url)
    assert response.status_code == 200
    assert "leads away from the FHIR server" in response.get_data(as_text=True)  # MD-INCOMPLETE detail
    incomplete = [c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == "MD-INCOMPLETE"]
    assert len(incomplete) == 1
    in_words = incomplete[0]["detail"].split("<details>", 1)[0]  # what the clinician reads, above Evidence
    assert "**observations (vital signs and results)**: the record system pointed the next page" in in_words
    assert seen_by_other == []


def test_a_prefetched_page_whose_next_link_leaves_the_origin_is_not_followed(
    client, paged_fhir_with_foreign_next
) -> None:
    server, other, seen_by_other = paged_fhir_with_foreign_next
    body = json.loads(PACEMAKER.read_text())
    body["fhirServer"] = server.url
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer"}
    body["prefetch"]["observations"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [],
        "link": [{"relation": "next", "url": other.url + "/Observation?p=2"}],
    }
    response = client.post(SERVICE, json=body)
    assert response.status_code == 200
    assert seen_by_other == []


@pytest.mark.parametrize(
    "fhir_server",
    [
        "http://127.0.0.1:1@evil.example/fhir",
        "http://user:pw@127.0.0.1/fhir",
        "http://127.0.0.1\\@evil.example/",
        "ftp://127.0.0.1/fhir",
        "http:///fhir",
        "http://127.0.0.1/fhir/../admin",  # would step out of an allow-listed path
        "http://127.0.0.1/fhir/%2E%2e/admin",
        "http://127.0.0.1/fhir/./",
    ],
)
def test_user_info_and_other_url_tricks_are_refused_with_400(client, fhir_server) -> None:
    response, _elapsed = _call_without_prefetch(client, fhir_server)
    assert response.status_code == 400
    assert "fhirServer" in response.get_data(as_text=True)


def test_the_allow_list_compares_parsed_host_port_and_path(tmp_path: Path) -> None:
    allowed = parse_allow_list(["http://127.0.0.1:800/fhir"])
    assert any(e.admits(parse_target("http://127.0.0.1:800/fhir")) for e in allowed)
    assert any(e.admits(parse_target("HTTP://127.0.0.1:800/fhir/r4/")) for e in allowed)
    for other in (
        "http://127.0.0.1:8000/fhir",
        "http://127.0.0.1:800/fhirx",
        "https://127.0.0.1:800/fhir",
        "http://127.0.0.10:800/fhir",
        "http://127.0.0.1:800/",
    ):
        assert not any(e.admits(parse_target(other)) for e in allowed), other


def test_a_server_outside_the_allow_list_is_not_asked(tmp_path: Path) -> None:
    server = HostileServer(slow_headers)
    # Same host, a port that the allowed one is a string prefix of.
    port = int(server.url.rsplit(":", 1)[1])
    allowed_url = f"http://127.0.0.1:{str(port)[:-1]}"
    try:
        for client in _client(tmp_path, fhir_server_allow=(allowed_url,)):
            response, _elapsed = _call_without_prefetch(client, server.url)
            assert response.status_code == 412
    finally:
        server.close()
    assert server.requests == []


@pytest.mark.parametrize(
    ("address", "strict", "lenient"),
    [
        ("169.254.169.254", "link-local", "link-local"),
        ("fe80::1", "link-local", "link-local"),
        ("0.0.0.0", "link-local", "link-local"),
        ("127.0.0.1", "private", None),
        ("::ffff:10.0.0.1", "private", None),
        ("192.168.1.5", "private", None),
        ("8.8.8.8", None, None),
    ],
)
def test_without_an_allow_list_only_public_addresses_are_fetched_from(address, strict, lenient) -> None:
    for allow_private, expected in ((False, strict), (True, lenient)):
        why = address_refused(address, allow_private=allow_private)
        assert (why is None) == (expected is None), (address, allow_private, why)
        if expected:
            assert expected in why


def test_with_jwt_on_and_no_allow_list_a_loopback_server_is_refused_unless_allowed(tmp_path: Path, caplog) -> None:
    from cds_hooks.hooks import parse_hook_request
    from cds_hooks.web.state import ServiceState

    server = HostileServer(slow_headers)
    body = json.loads(PACEMAKER.read_text())
    body["fhirServer"] = server.url
    hook_request = parse_hook_request(body, "order-sign")
    try:
        for allow_private in (False, True):
            config = Config(
                rules_dir=RULES_DIR,
                database_url=f"sqlite:///{tmp_path / 'd.db'}",
                patient_hash_key=b"k" * 32,
                auth_required=True,
                trusted_issuers="[]",
                fetch_budget_s=0.3,
                fhir_allow_private=allow_private,
            )
            app = create_app(config)
            state: ServiceState = app.extensions["cryo_cds"]
            fetcher = state.record_source(hook_request)
            assert fetcher is not None
            with pytest.raises(LookupError) as refused:
                fetcher.query("patient")
            if allow_private:
                assert "time budget" in str(refused.value)  # it was asked (and dawdled)
            else:
                assert "address is refused" in str(refused.value)
            state.store.dispose()
    finally:
        server.close()
    assert len(server.requests) == 1
    assert "no FHIR server allow-list" in caplog.text


def test_an_issuers_own_fhir_servers_replace_the_global_list(tmp_path: Path) -> None:
    from cds_hooks.hooks import parse_hook_request

    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    issuers = json.dumps(
        [{"iss": "https://ehr.example", "jwks_file": str(jwks), "fhir_servers": ["http://127.0.0.1:9999/fhir"]}]
    )
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        trusted_issuers=issuers,
        fhir_server_allow=("http://127.0.0.1:7777",),
    )
    app = create_app(config)
    state = app.extensions["cryo_cds"]
    body = copy.deepcopy(json.loads(PACEMAKER.read_text()))
    claims = {"iss": "https://ehr.example"}
    for url, issuer_ok, global_ok in (
        ("http://127.0.0.1:9999/fhir/r4", True, False),
        ("http://127.0.0.1:7777/r4", False, True),
    ):
        body["fhirServer"] = url
        hook_request = parse_hook_request(body, "order-sign")
        assert (state.record_source(hook_request, claims) is not None) == issuer_ok
        assert (state.record_source(hook_request, {"iss": "other"}) is not None) == global_ok
    state.store.dispose()
