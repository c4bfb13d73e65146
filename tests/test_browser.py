"""A real browser (headless Chromium) on its own origin calls the service the way the official
CDS Hooks Sandbox does: JWTs signed in the page with a `jku` the service fetches, discovery,
prefetch read by the browser from the FHIR sandbox server, the hook call, then feedback from
clicks on the cards. The browser enforces CORS, so wrong preflight answers fail here.

Chromium comes from Debian (`/usr/bin/chromium`, installed by `.ci/run`) through the shared
``chromium`` fixture (tests/support/browser.py): without it the tests skip with the reason on a
developer machine and fail when the CI environment variable is set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response
from sqlalchemy import create_engine, text

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.fhir_server import create_fhir_app, load_resources

from .conftest import RULES_DIR
from .support.jwt_helpers import b64url, jwks, make_keypair
from .support.loopback import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
PAGE = Path(__file__).resolve().parent / "browser" / "ehr_client.html"
REQUESTS = ROOT / "fhir_fixtures" / "requests"


def _page_app(public_jwks: dict[str, Any]) -> Flask:
    """The client's origin: the page, and its JWKS at the `jku` its tokens name (like
    https://sandbox.cds-hooks.org/.well-known/jwks.json)."""
    app = Flask("ehr-client")
    app.add_url_rule("/", "page", lambda: Response(PAGE.read_bytes(), mimetype="text/html"))
    app.add_url_rule("/.well-known/jwks.json", "jwks", lambda: public_jwks)
    return app


class Setup:
    def __init__(self, fixture: str, tmp_path: Path, *, allow_page_origin: bool = True) -> None:
        private, public = make_keypair("ES384", kid="browser-es384")
        self.private_jwk = _private_jwk(private, public)
        self.page_server = LoopbackServer(_page_app(jwks(public)))
        self.request = json.loads((REQUESTS / fixture).read_text())
        self.fhir = LoopbackServer(create_fhir_app(load_resources([REQUESTS / fixture]), page_size=5))
        self.db = tmp_path / "decisions.db"
        origin = self.page_server.url
        holder: dict[str, Any] = {}
        self.service = LoopbackServer(lambda env, start: holder["app"](env, start))
        holder["app"] = create_app(
            Config(
                rules_dir=RULES_DIR,
                database_url=f"sqlite:///{self.db}",
                patient_hash_key=b"k" * 32,
                auth_required=True,
                public_base_url=self.service.url,
                cors_origins=(origin,) if allow_page_origin else ("https://ehr.elsewhere.example",),
                trusted_issuers=json.dumps([{"iss": origin, "allowed_jku": [origin + "/.well-known/jwks.json"]}]),
            )
        )

    def client_config(self) -> dict[str, Any]:
        origin = self.page_server.url
        return {
            "privateJwk": self.private_jwk,
            "kid": "browser-es384",
            "iss": origin,
            "jku": origin + "/.well-known/jwks.json",
            "serviceBase": self.service.url,
            "fhirServer": self.fhir.url,
        }

    def stop(self) -> None:
        for server in (self.service, self.fhir, self.page_server):
            server.stop()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        engine = create_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql))]
        finally:
            engine.dispose()


def _private_jwk(private: Any, public: dict[str, Any]) -> dict[str, Any]:
    """The private half as a JWK for WebCrypto's importKey (P-384, `d` added to the public JWK)."""
    numbers = private.private_numbers()
    d = numbers.private_value.to_bytes(48, "big")
    return {"kty": "EC", "crv": "P-384", "x": public["x"], "y": public["y"], "d": b64url(d), "ext": True}


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context()
    yield context.new_page
    context.close()


def _cards_in_page(page: Any) -> list[tuple[str, str]]:
    found = page.eval_on_selector_all(
        "#cards li.card", "items => items.map(i => [i.dataset.rule, i.dataset.indicator])"
    )
    return sorted((rule, indicator) for rule, indicator in found)


def test_the_browser_gets_our_cards_and_its_feedback_is_recorded(open_page, tmp_path) -> None:
    setup = Setup("05-raynaud-local-ln2-order-select.json", tmp_path)
    try:
        page = open_page()
        page.goto(setup.page_server.url + "/")
        page.evaluate("config => setUp(config)", setup.client_config())
        assert sorted(page.evaluate("() => discover()")) == ["cryotherapy-order-select", "cryotherapy-order-sign"]
        context = {key: setup.request["context"][key] for key in ("userId", "patientId", "draftOrders", "selections")}
        assert page.evaluate("context => callHook('cryotherapy-order-select', context)", context) == 1

        assert _cards_in_page(page) == [("CI-RAYNAUD", "critical")]
        assert "Raynaud" in page.inner_text("#cards li.card .summary")

        page.click("#cards li.card button.suggestion")  # "Cancel the cryotherapy order"
        page.click("#cards li.card button.override")  # then overridden (a second, separate answer)
        page.wait_for_function("() => document.querySelectorAll('#feedback li').length === 2")
        statuses = page.eval_on_selector_all("#feedback li", "items => items.map(i => i.dataset.status)")
        assert statuses == ["200", "200"]
    finally:
        setup.stop()

    # The service recorded the decision, its card, and both answers tied to that card. The page
    # sends the two answers without waiting for each other, so they may be stored in either order.
    [(card_uuid, rule)] = setup.rows("select uuid, rule_id from card")
    assert rule == "CI-RAYNAUD"
    feedback = setup.rows("select card_uuid, outcome, override_code, known_card from feedback order by outcome")
    assert [(c == card_uuid, outcome, code, bool(known)) for c, outcome, code, known in feedback] == [
        (True, "accepted", None, True),
        (True, "overridden", "specialist-cleared", True),
    ]
    # The browser read the record from the FHIR server itself: nothing had to be fetched or was missing.
    [(gaps,)] = setup.rows("select data_gaps from decision")
    assert json.loads(gaps) in ({}, [])


def test_a_warning_card_reaches_the_browser_for_an_order_sign(open_page, tmp_path) -> None:
    setup = Setup("06-warfarin-cold-pack-order-select.json", tmp_path)
    try:
        page = open_page()
        page.goto(setup.page_server.url + "/")
        page.evaluate("config => setUp(config)", setup.client_config())
        page.evaluate("() => discover()")
        context = {key: setup.request["context"][key] for key in ("userId", "patientId", "draftOrders")}
        assert page.evaluate("context => callHook('cryotherapy-order-sign', context)", context) == 1
        assert _cards_in_page(page) == [("DI-ANTICOAG", "warning")]
        assert "warfarin" in page.inner_text("#cards li.card .summary")
    finally:
        setup.stop()


def test_an_origin_off_the_allow_list_is_blocked_by_the_browser(open_page, tmp_path) -> None:
    setup = Setup("05-raynaud-local-ln2-order-select.json", tmp_path, allow_page_origin=False)
    try:
        page = open_page()
        page.goto(setup.page_server.url + "/")
        page.evaluate("config => setUp(config)", setup.client_config())
        error = page.evaluate("() => discover().then(() => 'answered', e => e.name + ': ' + e.message)")
        assert error.startswith("TypeError")  # the fetch is refused by CORS, not answered
    finally:
        setup.stop()
    assert setup.rows("select (select count(*) from decision) + (select count(*) from pending_decision)") == [(0,)]
