"""JWT security at the HTTP boundary (CDS Hooks §8): the attack list against the running
service, valid ES384 and RS384 tokens, CORS preflight for browser clients."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.serving import make_server

from cds_hooks.app import create_app
from cds_hooks.config import Config

from .conftest import RULES_DIR
from .support.jwt_helpers import b64url, jwks, make_keypair, sign_token

ISS = "https://ehr.example.org"
FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"


@pytest.fixture(scope="module")
def keys():
    return {"ES384": make_keypair("ES384", kid="es-1"), "RS384": make_keypair("RS384", kid="rs-1")}


@pytest.fixture(scope="module")
def server(tmp_path_factory, keys):
    tmp = tmp_path_factory.mktemp("auth")
    (tmp / "jwks.json").write_text(json.dumps(jwks(keys["ES384"][1], keys["RS384"][1])))
    holder: dict = {}
    srv = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start), threaded=True)
    base = f"http://127.0.0.1:{srv.server_port}"
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=True,
        public_base_url=base,
        cors_origins=("https://sandbox.cds-hooks.org",),
        trusted_issuers=json.dumps([{"iss": ISS, "jwks_file": str(tmp / "jwks.json")}]),
    )
    holder["app"] = create_app(config)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield base
    srv.shutdown()
    thread.join(timeout=5)


def _call(base: str, token: str | None, path: str = "/cds-services/cryotherapy-order-sign") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = json.loads((FIXTURES / "02-pacemaker-whole-body-order-sign.json").read_text())
    return requests.post(base + path, json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_a_valid_token_gets_200(server, keys, alg) -> None:
    private, jwk = keys[alg]
    token = sign_token(private, alg, jwk["kid"], ISS, server + "/cds-services/cryotherapy-order-sign")
    assert _call(server, token).status_code == 200


def test_discovery_and_feedback_need_their_own_audience(server, keys) -> None:
    private, jwk = keys["ES384"]
    assert requests.get(server + "/cds-services", timeout=5).status_code == 401
    token = sign_token(private, "ES384", jwk["kid"], ISS, server + "/cds-services")
    assert (
        requests.get(server + "/cds-services", headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code
        == 200
    )
    feedback = {"feedback": [{"card": "x", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z"}]}
    url = server + "/cds-services/cryotherapy-order-sign/feedback"
    wrong = sign_token(private, "ES384", jwk["kid"], ISS, server + "/cds-services/cryotherapy-order-sign")
    assert requests.post(url, json=feedback, headers={"Authorization": f"Bearer {wrong}"}, timeout=5).status_code == 401
    right = sign_token(private, "ES384", jwk["kid"], ISS, url)
    assert requests.post(url, json=feedback, headers={"Authorization": f"Bearer {right}"}, timeout=5).status_code == 200


def _attacks(base: str, keys) -> dict[str, str | None]:
    private, jwk = keys["ES384"]
    aud = base + "/cds-services/cryotherapy-order-sign"
    good = sign_token(private, "ES384", jwk["kid"], ISS, aud)
    header, payload, signature = good.split(".")
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": jwk["kid"]}).encode())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = b64url(json.dumps({"alg": "HS384", "typ": "JWT", "kid": jwk["kid"]}).encode())
    hs_sig = b64url(hmac.new(pem, f"{hs_header}.{payload}".encode(), hashlib.sha384).digest())
    claims = json.loads(__import__("base64").urlsafe_b64decode(payload + "=="))
    tampered = b64url(json.dumps({**claims, "iss": ISS, "tenant": "other"}).encode())
    return {
        "alg none": f"{none_header}.{payload}.",
        "HS384 with the public key": f"{hs_header}.{payload}.{hs_sig}",
        "expired": sign_token(private, "ES384", jwk["kid"], ISS, aud, iat=1_600_000_000, exp=1_600_000_300),
        "not yet valid": sign_token(
            private, "ES384", jwk["kid"], ISS, aud, nbf=4_000_000_000, iat=4_000_000_000, exp=4_000_000_300
        ),
        "wrong aud": sign_token(private, "ES384", jwk["kid"], ISS, base + "/cds-services/other"),
        "unknown issuer": sign_token(private, "ES384", jwk["kid"], "https://evil.example", aud),
        "unknown kid": sign_token(private, "ES384", "nope", ISS, aud),
        # An unlisted jku is never fetched: the pinned keys decide, and this key is not pinned.
        "untrusted jku": sign_token(
            ec.generate_private_key(ec.SECP384R1()),
            "ES384",
            jwk["kid"],
            ISS,
            aud,
            headers={"jku": "https://evil.example/jwks"},
        ),
        "tampered payload": f"{header}.{tampered}.{signature}",
        "missing Authorization": None,
    }


@pytest.mark.parametrize(
    "attack",
    [
        "alg none",
        "HS384 with the public key",
        "expired",
        "not yet valid",
        "wrong aud",
        "unknown issuer",
        "unknown kid",
        "untrusted jku",
        "tampered payload",
        "missing Authorization",
    ],
)
def test_the_jwt_attack_list_gets_a_bare_401(server, keys, attack) -> None:
    response = _call(server, _attacks(server, keys)[attack])
    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_a_replayed_jti_gets_401(server, keys) -> None:
    private, jwk = keys["RS384"]
    token = sign_token(private, "RS384", jwk["kid"], ISS, server + "/cds-services/cryotherapy-order-sign")
    assert _call(server, token).status_code == 200
    assert _call(server, token).status_code == 401


def test_cors_preflight_allows_the_listed_origin_only(server) -> None:
    for path in (
        "/cds-services",
        "/cds-services/cryotherapy-order-select",
        "/cds-services/cryotherapy-order-select/feedback",
    ):
        allowed = requests.options(
            server + path,
            timeout=5,
            headers={
                "Origin": "https://sandbox.cds-hooks.org",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert allowed.status_code == 204
        assert allowed.headers["Access-Control-Allow-Origin"] == "https://sandbox.cds-hooks.org"
        assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
        assert "Access-Control-Allow-Private-Network" not in allowed.headers  # not asked for
        other = requests.options(server + path, timeout=5, headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers


def test_a_public_web_client_may_reach_a_loopback_service_when_its_origin_is_allowed(server) -> None:
    """Chrome's Private Network Access preflight, as sent by https://sandbox.cds-hooks.org to a
    service on localhost."""
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
        "Access-Control-Request-Private-Network": "true",
    }
    allowed = requests.options(
        server + "/cds-services/cryotherapy-order-select",
        timeout=5,
        headers={**ask, "Origin": "https://sandbox.cds-hooks.org"},
    )
    assert allowed.headers["Access-Control-Allow-Private-Network"] == "true"
    other = requests.options(
        server + "/cds-services/cryotherapy-order-select", timeout=5, headers={**ask, "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Private-Network" not in other.headers
