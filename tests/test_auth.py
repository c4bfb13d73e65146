"""Tests for cds_hooks.auth: the CDS Hooks 2.0 §8 client-JWT rules, the attacks they stop, and the
JWKS caching, all with real keys, real signatures and a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from cds_hooks.auth import (
    AuthError,
    InMemoryJtiCache,
    JwtVerifier,
    TrustedIssuer,
    load_issuers,
)
from tests.support.jwt_helpers import b64url, b64url_decode, compact, jwks, make_keypair, sign_token

ISS = "https://ehr.example.org/fhir-ehr"
AUD = "https://cds.example.org/cds-services/cryo-order-select"
SPEC_EXAMPLE = Path(__file__).parent / "data" / "v2-security-jwt-example.json"


class FakeClock:
    """An injectable ``clock`` that tests move forward explicitly."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """A real HTTP server on 127.0.0.1 that serves JWKS documents and counts every fetch."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        self.hits: Counter[str] = Counter()
        self.base = ""

    def url(self, path: str) -> str:
        return self.base + path

    @Request.application  # type: ignore[misc]
    def app(self, request: Request) -> Response:
        self.hits[request.path] += 1
        if request.path == "/redirect":
            return Response(status=302, headers={"Location": self.url("/jwks.json")})
        if request.path == "/slow":
            time.sleep(1.0)
        doc = self.docs.get(request.path)
        if doc is None:
            return Response("not found", status=404)
        body = doc if isinstance(doc, str) else json.dumps(doc)
        return Response(body, mimetype="application/json")


@pytest.fixture(scope="session")
def es_key() -> tuple[Any, dict[str, Any]]:
    return make_keypair("ES384")


@pytest.fixture(scope="session")
def rs_key() -> tuple[Any, dict[str, Any]]:
    return make_keypair("RS384")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks_file(tmp_path: Path, es_key: Any, rs_key: Any) -> str:
    path = tmp_path / "client-jwks.json"
    path.write_text(json.dumps(jwks(es_key[1], rs_key[1])), encoding="utf-8")
    return str(path)


@pytest.fixture
def make_verifier(jwks_file: str, clock: FakeClock) -> Callable[..., JwtVerifier]:
    """Build a verifier trusting ISS via the JWKS file, unless ``issuers`` is given."""

    def build(issuers: list[TrustedIssuer] | None = None, **kwargs: Any) -> JwtVerifier:
        kwargs.setdefault("clock", clock)
        return JwtVerifier(issuers or [TrustedIssuer(iss=ISS, jwks_file=jwks_file)], **kwargs)

    return build


@pytest.fixture
def verifier(make_verifier: Callable[..., JwtVerifier]) -> JwtVerifier:
    return make_verifier()


@pytest.fixture(scope="module")
def _running_server() -> Iterator[JwksServer]:
    jwks_server = JwksServer()
    httpd = make_server("127.0.0.1", 0, jwks_server.app, threaded=True)
    jwks_server.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield jwks_server
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def server(_running_server: JwksServer, es_key: Any) -> JwksServer:
    """The loopback JWKS server, reset for each test: it serves ES384 key at /jwks.json."""
    _running_server.docs.clear()
    _running_server.hits.clear()
    _running_server.docs["/jwks.json"] = jwks(es_key[1])
    return _running_server


def es_token(es_key: Any, clock: FakeClock, iss: str = ISS, aud: Any = AUD, **claims: Any) -> str:
    return sign_token(es_key[0], "ES384", es_key[1]["kid"], iss, aud, now=clock.now, **claims)


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- valid tokens -------------------------------------------------------------------------------


def test_a_valid_es384_token_returns_its_claims(verifier: JwtVerifier, es_key: Any, clock: FakeClock) -> None:
    claims = verifier.verify(bearer(es_token(es_key, clock, tenant="t1")), AUD)
    assert claims["iss"] == ISS and claims["aud"] == AUD and claims["tenant"] == "t1"
    assert "sub" not in claims  # CDS Hooks has no sub claim; none is required


def test_a_valid_rs384_token_returns_its_claims(verifier: JwtVerifier, rs_key: Any, clock: FakeClock) -> None:
    token = sign_token(rs_key[0], "RS384", rs_key[1]["kid"], ISS, AUD, now=clock.now)
    assert verifier.verify(bearer(token), AUD)["iss"] == ISS


@pytest.mark.parametrize("aud", [[AUD, "https://other.example.org"], AUD + "/"])
def test_an_audience_array_or_a_trailing_slash_difference_is_accepted(
    verifier: JwtVerifier, es_key: Any, clock: FakeClock, aud: Any
) -> None:
    assert verifier.verify(bearer(es_token(es_key, clock, aud=aud)), AUD)["iss"] == ISS


def test_a_lowercase_bearer_scheme_is_accepted(verifier: JwtVerifier, es_key: Any, clock: FakeClock) -> None:
    assert verifier.verify("bearer " + es_token(es_key, clock), AUD)["iss"] == ISS


def test_a_token_inside_the_clock_skew_is_accepted(verifier: JwtVerifier, es_key: Any, clock: FakeClock) -> None:
    token = es_token(
        es_key,
        clock,
        iat=int(clock.now) + 30,
        exp=int(clock.now) - 30 + 300,
        nbf=int(clock.now) + 30,
    )
    assert verifier.verify(bearer(token), AUD)["iss"] == ISS


# --- the attack list ----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("signature", ["", "c2ln"])
def test_an_alg_none_token_is_rejected(
    verifier: JwtVerifier, es_key: Any, clock: FakeClock, alg: str, signature: str
) -> None:
    now = int(clock.now)
    token = compact(
        {"alg": alg, "typ": "JWT", "kid": es_key[1]["kid"]},
        {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": "n1"},
    )
    with pytest.raises(AuthError):
        verifier.verify(bearer(f"{token}.{signature}"), AUD)


@pytest.mark.parametrize("which", ["es", "rs"])
def test_an_hs384_token_signed_with_the_public_key_pem_as_secret_is_rejected(
    verifier: JwtVerifier, es_key: Any, rs_key: Any, clock: FakeClock, which: str
) -> None:
    private, jwk = es_key if which == "es" else rs_key
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(clock.now)
    signing_input = compact(
        {"alg": "HS384", "typ": "JWT", "kid": jwk["kid"]},
        {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": "h1"},
    )
    mac = hmac.new(pem, signing_input.encode("ascii"), hashlib.sha384).digest()
    with pytest.raises(AuthError, match="alg not allowed"):
        verifier.verify(bearer(f"{signing_input}.{b64url(mac)}"), AUD)


def test_an_expired_token_is_rejected(verifier: JwtVerifier, es_key: Any, clock: FakeClock) -> None:
    now = int(clock.now)
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(bearer(es_token(es_key, clock, iat=now - 400, exp=now - 61)), AUD)


@pytest.mark.parametrize(("field", "reason"), [("iat", "issued in the future"), ("nbf", "not yet valid")])
def test_a_token_from_the_future_is_rejected(
    verifier: JwtVerifier, es_key: Any, clock: FakeClock, field: str, reason: str
) -> None:
    later = int(clock.now) + 120
    claims = {"iat": later, "exp": later + 300} if field == "iat" else {"nbf": later}
    with pytest.raises(AuthError, match=reason):
        verifier.verify(bearer(es_token(es_key, clock, **claims)), AUD)


@pytest.mark.parametrize(
    "aud",
    [
        "https://cds.example.org/cds-services/other-service",
        AUD + "-evil",
        "https://cds.example.org/cds-services",
        [],
        ["https://cds.example.org/cds-services"],
    ],
)
def test_a_token_for_another_audience_is_rejected(
    verifier: JwtVerifier, es_key: Any, clock: FakeClock, aud: Any
) -> None:
    with pytest.raises(AuthError, match="aud"):
        verifier.verify(bearer(es_token(es_key, clock, aud=aud)), AUD)


def test_a_token_from_an_unknown_issuer_is_rejected(verifier: JwtVerifier, es_key: Any, clock: FakeClock) -> None:
    with pytest.raises(AuthError, match="untrusted issuer"):
        verifier.verify(bearer(es_token(es_key, clock, iss="https://evil.example.org")), AUD)


def test_a_token_with_an_unknown_kid_is_rejected(verifier: JwtVerifier, clock: FakeClock) -> None:
    stranger, jwk = make_keypair("ES384")
    with pytest.raises(AuthError, match="unknown kid"):
        verifier.verify(bearer(sign_token(stranger, "ES384", jwk["kid"], ISS, AUD, now=clock.now)), AUD)


def test_a_key_of_one_issuer_does_not_verify_a_token_claiming_another_issuer(
    make_verifier: Callable[..., JwtVerifier],
    jwks_file: str,
    tmp_path: Path,
    es_key: Any,
    clock: FakeClock,
) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps(jwks(make_keypair("ES384")[1])), encoding="utf-8")
    verifier = make_verifier(
        [
            TrustedIssuer(iss=ISS, jwks_file=jwks_file),
            TrustedIssuer(iss="https://other.example.org", jwks_file=str(other)),
        ]
    )
    with pytest.raises(AuthError, match="unknown kid"):
        verifier.verify(bearer(es_token(es_key, clock, iss="https://other.example.org")), AUD)


def test_a_jku_that_is_not_allow_listed_is_never_fetched_and_the_pinned_keys_decide(
    make_verifier: Callable[..., JwtVerifier],
    server: JwksServer,
    jwks_file: str,
    es_key: Any,
    clock: FakeClock,
) -> None:
    server.docs["/evil.json"] = jwks(es_key[1])
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks_file=jwks_file, allowed_jku=(server.url("/jwks.json"),))])
    token = sign_token(
        es_key[0],
        "ES384",
        es_key[1]["kid"],
        ISS,
        AUD,
        now=clock.now,
        headers={"jku": server.url("/evil.json")},
    )
    # Signed by a pinned key: the unlisted jku is ignored and the pinned key verifies it.
    assert verifier.verify(bearer(token), AUD)["iss"] == ISS
    assert server.hits["/evil.json"] == 0  # never fetched

    outsider = ec.generate_private_key(ec.SECP384R1())
    forged = sign_token(
        outsider, "ES384", es_key[1]["kid"], ISS, AUD, now=clock.now, headers={"jku": server.url("/evil.json")}
    )
    with pytest.raises(AuthError, match="signature invalid"):
        verifier.verify(bearer(forged), AUD)
    assert server.hits["/evil.json"] == 0


def test_a_jku_without_pinned_keys_to_fall_back_on_is_rejected(
    server: JwksServer, es_key: Any, clock: FakeClock
) -> None:
    verifier = JwtVerifier([TrustedIssuer(iss=ISS, allowed_jku=(server.url("/jwks.json"),))], clock=clock)
    token = sign_token(
        es_key[0], "ES384", es_key[1]["kid"], ISS, AUD, now=clock.now, headers={"jku": server.url("/evil.json")}
    )
    with pytest.raises(AuthError, match="jku not allow-listed"):
        verifier.verify(bearer(token), AUD)


def test_an_allow_listed_jku_that_cannot_be_fetched_falls_back_to_the_pinned_keys(
    jwks_file: str, es_key: Any, clock: FakeClock
) -> None:
    from .support.loopback import free_port

    dead = f"http://127.0.0.1:{free_port()}/jwks.json"  # nothing listens there
    verifier = JwtVerifier([TrustedIssuer(iss=ISS, jwks_file=jwks_file, allowed_jku=(dead,))], clock=clock)
    token = sign_token(es_key[0], "ES384", es_key[1]["kid"], ISS, AUD, now=clock.now, headers={"jku": dead})
    assert verifier.verify(bearer(token), AUD)["iss"] == ISS


@pytest.mark.parametrize(
    "claims",
    [{"tenant": ["a"]}, {"tenant": {"a": 1}}, {"exp": 10**400}, {"iat": 10**400}, {"nbf": 10**400}, {"exp": 10**20}],
)
def test_a_wrongly_typed_tenant_or_a_huge_time_claim_is_rejected_not_crashed(
    make_verifier: Callable[..., JwtVerifier], es_key: Any, clock: FakeClock, claims: dict[str, Any]
) -> None:
    verifier = make_verifier(None, tenants=["a"]) if "tenant" in claims else make_verifier()
    token = es_token(es_key, clock, **claims)
    with pytest.raises(AuthError):
        verifier.verify(bearer(token), AUD)


def test_a_tampered_payload_with_the_original_signature_is_rejected(
    verifier: JwtVerifier, es_key: Any, clock: FakeClock
) -> None:
    header, payload, signature = es_token(es_key, clock).split(".")
    claims = json.loads(b64url_decode(payload))
    claims["tenant"] = "someone-else"
    forged = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(AuthError, match="signature invalid"):
        verifier.verify(bearer(forged), AUD)


def test_a_replayed_jti_is_rejected(verifier: JwtVerifier, es_key: Any, clock: FakeClock) -> None:
    token = es_token(es_key, clock)
    verifier.verify(bearer(token), AUD)
    with pytest.raises(AuthError, match="jti replayed"):
        verifier.verify(bearer(token), AUD)
    same_jti = es_token(es_key, clock, jti=json.loads(b64url_decode(token.split(".")[1]))["jti"])
    with pytest.raises(AuthError, match="jti replayed"):
        verifier.verify(bearer(same_jti), AUD)


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_authorization_header_is_rejected(verifier: JwtVerifier, value: str | None) -> None:
    with pytest.raises(AuthError, match="missing"):
        verifier.verify(value, AUD)


@pytest.mark.parametrize(
    "value",
    [
        "Basic x",
        "Bearer",
        "Bearer ",
        "garbage",
        "Bearer garbage",
        "Bearer a.b",
        "Bearer a.b.c d",
        "Bearer a.b.",
        "Bearer ..",
        "Bearer eyJ!.eyJ.sig",
        "Token a.b.c",
        "Bearer " + "a" * 20000 + ".b.c",
    ],
)
def test_a_malformed_authorization_header_is_rejected(verifier: JwtVerifier, value: str) -> None:
    with pytest.raises(AuthError):
        verifier.verify(value, AUD)


@pytest.mark.parametrize("claim", ["jti", "exp", "iat"])
def test_a_token_missing_a_required_claim_is_rejected(
    verifier: JwtVerifier, es_key: Any, clock: FakeClock, claim: str
) -> None:
    with pytest.raises(AuthError, match=claim):
        verifier.verify(bearer(es_token(es_key, clock, **{claim: None})), AUD)


@pytest.mark.parametrize("exp", [float("nan"), float("inf"), "9999999999", True])
def test_a_non_numeric_exp_is_rejected(verifier: JwtVerifier, es_key: Any, clock: FakeClock, exp: Any) -> None:
    with pytest.raises(AuthError, match="exp"):
        verifier.verify(bearer(es_token(es_key, clock, exp=exp)), AUD)


def test_a_token_whose_lifetime_is_too_long_is_rejected(verifier: JwtVerifier, es_key: Any, clock: FakeClock) -> None:
    with pytest.raises(AuthError, match="lifetime"):
        verifier.verify(bearer(es_token(es_key, clock, exp=int(clock.now) + 3601)), AUD)


@pytest.mark.parametrize("tenant", ["t2", None])
def test_a_tenant_that_is_not_allowed_is_rejected(
    make_verifier: Callable[..., JwtVerifier], es_key: Any, clock: FakeClock, tenant: str | None
) -> None:
    verifier = make_verifier(tenants={"t1"})
    assert verifier.verify(bearer(es_token(es_key, clock, tenant="t1")), AUD)["tenant"] == "t1"
    with pytest.raises(AuthError, match="tenant"):
        verifier.verify(bearer(es_token(es_key, clock, tenant=tenant)), AUD)


def test_es256_is_rejected_unless_the_issuer_lists_it(tmp_path: Path, clock: FakeClock) -> None:
    private, jwk = make_keypair("ES256")
    path = tmp_path / "es256.json"
    path.write_text(json.dumps(jwks(jwk)), encoding="utf-8")
    default = JwtVerifier([TrustedIssuer(iss=ISS, jwks_file=str(path))], clock=clock)
    with pytest.raises(AuthError, match="alg not allowed for issuer"):
        default.verify(bearer(sign_token(private, "ES256", jwk["kid"], ISS, AUD, now=clock.now)), AUD)
    opted_in = JwtVerifier([TrustedIssuer(iss=ISS, jwks_file=str(path), algorithms=("ES256",))], clock=clock)
    assert opted_in.verify(bearer(sign_token(private, "ES256", jwk["kid"], ISS, AUD, now=clock.now)), AUD)


@pytest.mark.parametrize("headers", [{"typ": "at+jwt"}, {"kid": ""}, {"crit": ["exp"], "exp": 1}])
def test_a_bad_jose_header_is_rejected(
    verifier: JwtVerifier, es_key: Any, clock: FakeClock, headers: dict[str, Any]
) -> None:
    token = sign_token(es_key[0], "ES384", es_key[1]["kid"], ISS, AUD, now=clock.now, headers=headers)
    with pytest.raises(AuthError):
        verifier.verify(bearer(token), AUD)


def test_a_token_without_kid_is_rejected(verifier: JwtVerifier, es_key: Any, clock: FakeClock) -> None:
    now = int(clock.now)
    signing_input = compact(
        {"alg": "ES384", "typ": "JWT"},
        {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": "k1"},
    )
    with pytest.raises(AuthError, match="kid missing"):
        verifier.verify(bearer(f"{signing_input}.c2ln"), AUD)


def test_a_token_whose_alg_does_not_fit_the_key_of_its_kid_is_rejected(
    verifier: JwtVerifier, rs_key: Any, es_key: Any, clock: FakeClock
) -> None:
    # RS384-signed, but names the EC key's kid: the EC key must not be used as an RSA key.
    token = sign_token(rs_key[0], "RS384", es_key[1]["kid"], ISS, AUD, now=clock.now)
    with pytest.raises(AuthError, match="no usable key"):
        verifier.verify(bearer(token), AUD)


# --- JWKS over HTTP: jwks_url, jku, caching ------------------------------------------------------


def test_keys_from_a_jwks_url_are_fetched_once_and_cached(
    make_verifier: Callable[..., JwtVerifier], server: JwksServer, es_key: Any, clock: FakeClock
) -> None:
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks_url=server.url("/jwks.json"))])
    for _ in range(3):
        verifier.verify(bearer(es_token(es_key, clock)), AUD)
    assert server.hits["/jwks.json"] == 1


def test_an_unknown_kid_refreshes_the_jwks_once_and_finds_a_rotated_key(
    make_verifier: Callable[..., JwtVerifier], server: JwksServer, es_key: Any, clock: FakeClock
) -> None:
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks_url=server.url("/jwks.json"))])
    verifier.verify(bearer(es_token(es_key, clock)), AUD)
    clock.now += 61
    new_private, new_jwk = make_keypair("ES384")
    server.docs["/jwks.json"] = jwks(es_key[1], new_jwk)
    token = sign_token(new_private, "ES384", new_jwk["kid"], ISS, AUD, now=clock.now)
    assert verifier.verify(bearer(token), AUD)["iss"] == ISS
    assert server.hits["/jwks.json"] == 2


def test_refreshes_on_unknown_kids_are_rate_limited_to_once_per_60_seconds(
    make_verifier: Callable[..., JwtVerifier], server: JwksServer, es_key: Any, clock: FakeClock
) -> None:
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks_url=server.url("/jwks.json"))])
    verifier.verify(bearer(es_token(es_key, clock)), AUD)
    clock.now += 61
    for _ in range(5):
        stranger, jwk = make_keypair("ES384")
        with pytest.raises(AuthError, match="unknown kid"):
            verifier.verify(bearer(sign_token(stranger, "ES384", jwk["kid"], ISS, AUD, now=clock.now)), AUD)
    assert server.hits["/jwks.json"] == 2  # the first load plus one refresh
    clock.now += 61
    with pytest.raises(AuthError, match="unknown kid"):
        verifier.verify(bearer(sign_token(stranger, "ES384", jwk["kid"], ISS, AUD, now=clock.now)), AUD)
    assert server.hits["/jwks.json"] == 3


def test_an_allow_listed_jku_supplies_the_keys_and_is_cached(
    make_verifier: Callable[..., JwtVerifier], server: JwksServer, es_key: Any, clock: FakeClock
) -> None:
    server.docs["/jku.json"] = jwks(es_key[1])
    server.docs["/jwks.json"] = jwks()  # the out-of-band JWKS lacks the key: it must not be used
    verifier = make_verifier(
        [TrustedIssuer(iss=ISS, jwks_url=server.url("/jwks.json"), allowed_jku=(server.url("/jku.json"),))]
    )
    for _ in range(2):
        token = sign_token(
            es_key[0],
            "ES384",
            es_key[1]["kid"],
            ISS,
            AUD,
            now=clock.now,
            headers={"jku": server.url("/jku.json")},
        )
        assert verifier.verify(bearer(token), AUD)["iss"] == ISS
    assert server.hits == Counter({"/jku.json": 1})


def test_an_issuer_configured_only_with_jku_rejects_tokens_without_jku(
    make_verifier: Callable[..., JwtVerifier], server: JwksServer, es_key: Any, clock: FakeClock
) -> None:
    verifier = make_verifier([TrustedIssuer(iss=ISS, allowed_jku=(server.url("/jwks.json"),))])
    with pytest.raises(AuthError, match="jku required"):
        verifier.verify(bearer(es_token(es_key, clock)), AUD)


@pytest.mark.parametrize("path", ["/missing.json", "/bad.json", "/notjwks.json", "/redirect", "/slow"])
def test_a_jwks_fetch_failure_is_an_auth_error(
    make_verifier: Callable[..., JwtVerifier],
    server: JwksServer,
    es_key: Any,
    clock: FakeClock,
    path: str,
) -> None:
    server.docs.update({"/bad.json": "{not json", "/notjwks.json": {"keys": "x"}, "/slow": jwks(es_key[1])})
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks_url=server.url(path))], http_timeout_s=0.3)
    with pytest.raises(AuthError, match="JWKS fetch failed"):
        verifier.verify(bearer(es_token(es_key, clock)), AUD)
    with pytest.raises(AuthError, match="JWKS unavailable"):  # no hammering of a failing endpoint
        verifier.verify(bearer(es_token(es_key, clock)), AUD)
    assert server.hits[path] == 1


def test_an_unreachable_jwks_server_is_an_auth_error(
    make_verifier: Callable[..., JwtVerifier], es_key: Any, clock: FakeClock
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks_url=f"http://127.0.0.1:{port}/jwks.json")])
    with pytest.raises(AuthError, match="JWKS fetch failed"):
        verifier.verify(bearer(es_token(es_key, clock)), AUD)


def test_cached_keys_survive_a_failed_refresh(
    make_verifier: Callable[..., JwtVerifier], server: JwksServer, es_key: Any, clock: FakeClock
) -> None:
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks_url=server.url("/jwks.json"))])
    verifier.verify(bearer(es_token(es_key, clock)), AUD)
    del server.docs["/jwks.json"]
    clock.now += 3601  # cache is stale, the refresh gets a 404
    assert verifier.verify(bearer(es_token(es_key, clock)), AUD)["iss"] == ISS
    assert server.hits["/jwks.json"] == 2


# --- the spec's own example token ---------------------------------------------------------------


class StaticJwksAdapter(requests.adapters.HTTPAdapter):
    """Answers the spec example's jku (https://fhir-ehr.example.com/jwk_uri) without a network."""

    def __init__(self, docs: dict[str, Any]) -> None:
        super().__init__()
        self.docs = docs

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200 if request.url in self.docs else 404
        response.raw = io.BytesIO(json.dumps(self.docs.get(request.url, {})).encode())
        response.url, response.request = str(request.url), request
        return response


@pytest.fixture
def spec_example() -> Iterator[tuple[dict[str, Any], requests.Session]]:
    example = json.loads(SPEC_EXAMPLE.read_text(encoding="utf-8"))
    with requests.Session() as session:
        session.mount("https://", StaticJwksAdapter({example["jwt_header"]["jku"]: example["jwks_public"]}))
        yield example, session


def spec_verifier(example: dict[str, Any], session: requests.Session, **kwargs: Any) -> JwtVerifier:
    issuer = TrustedIssuer(iss=example["jwt_payload"]["iss"], allowed_jku=(example["jwt_header"]["jku"],))
    return JwtVerifier([issuer], session=session, **kwargs)


def test_the_spec_example_token_is_rejected_as_expired(spec_example: Any) -> None:
    example, session = spec_example
    with pytest.raises(AuthError, match="expired"):
        spec_verifier(example, session).verify(
            bearer(example["authorization_header_token"]), example["jwt_payload"]["aud"]
        )


def test_the_spec_example_token_verifies_with_the_clock_frozen_at_its_iat(
    spec_example: Any,
) -> None:
    example, session = spec_example
    payload = example["jwt_payload"]
    # The example lives 3.5 years (iat 2011, exp 2015), far beyond the 1 h best-practice limit.
    verifier = spec_verifier(
        example,
        session,
        clock=lambda: float(payload["iat"]),
        max_lifetime_s=payload["exp"] - payload["iat"],
    )
    assert verifier.verify(bearer(example["authorization_header_token"]), payload["aud"]) == payload


def test_the_spec_example_token_verifies_against_its_pinned_key_when_its_jku_is_not_allow_listed(
    tmp_path: Path,
) -> None:
    example = json.loads(SPEC_EXAMPLE.read_text(encoding="utf-8"))
    path = tmp_path / "spec-jwks.json"
    path.write_text(json.dumps(example["jwks_public"]), encoding="utf-8")
    payload = example["jwt_payload"]
    verifier = JwtVerifier(
        [TrustedIssuer(iss=payload["iss"], jwks_file=str(path))],
        clock=lambda: float(payload["iat"]),
        max_lifetime_s=10**9,
    )
    claims = verifier.verify(bearer(example["authorization_header_token"]), payload["aud"])
    assert claims["iss"] == payload["iss"]


# --- logging ------------------------------------------------------------------------------------


def test_a_rejection_logs_iss_kid_and_jti_but_never_the_token(
    verifier: JwtVerifier, es_key: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    token = es_token(es_key, clock, aud="https://elsewhere.example.org", jti="jti-123")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as excinfo:
        verifier.verify(bearer(token), AUD)
    records = [r for r in caplog.records if r.name == "cds_hooks.auth"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert ISS in message and es_key[1]["kid"] in message and "jti-123" in message
    for part in token.split("."):
        assert part not in caplog.text and part not in str(excinfo.value)


# --- InMemoryJtiCache ----------------------------------------------------------------------------


def test_the_jti_cache_remembers_a_jti_until_it_expires() -> None:
    cache = InMemoryJtiCache()
    assert cache.add_if_absent("a", expires_at=100.0, now=0.0)
    assert not cache.add_if_absent("a", expires_at=100.0, now=99.0)
    assert cache.add_if_absent("a", expires_at=200.0, now=100.0)


def test_the_jti_cache_admits_a_jti_only_once_under_concurrency() -> None:
    cache = InMemoryJtiCache()
    results: list[bool] = []
    barrier = threading.Barrier(32)

    def add() -> None:
        barrier.wait()
        results.append(cache.add_if_absent("same", expires_at=100.0, now=0.0))

    threads = [threading.Thread(target=add) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1 and len(results) == 32


def test_the_jti_cache_is_bounded_and_evicts_expired_entries_first() -> None:
    cache = InMemoryJtiCache(max_entries=2)
    cache.add_if_absent("old", expires_at=10.0, now=0.0)
    cache.add_if_absent("live", expires_at=100.0, now=0.0)
    assert cache.add_if_absent("new", expires_at=100.0, now=50.0)  # "old" expired and made room
    assert not cache.add_if_absent("live", expires_at=100.0, now=50.0)  # "live" was kept
    assert cache.add_if_absent("newer", expires_at=300.0, now=50.0)  # full: soonest-expiring goes
    assert not cache.add_if_absent("newer", expires_at=300.0, now=50.0)


def test_the_verifier_stores_the_jti_until_exp_plus_skew(es_key: Any, jwks_file: str, clock: FakeClock) -> None:
    seen: list[tuple[str, float, float]] = []

    class RecordingCache:
        def add_if_absent(self, key: str, expires_at: float, now: float) -> bool:
            seen.append((key, expires_at, now))
            return True

    verifier = JwtVerifier(
        [TrustedIssuer(iss=ISS, jwks_file=jwks_file)],
        clock=clock,
        jti_cache=RecordingCache(),
        clock_skew_s=60,
    )
    claims = verifier.verify(bearer(es_token(es_key, clock)), AUD)
    assert seen == [(f"{ISS}\x00{claims['jti']}", claims["exp"] + 60, clock.now)]


# --- configuration ------------------------------------------------------------------------------


def test_issuers_load_from_a_json_string_a_file_or_dicts(tmp_path: Path, jwks_file: str) -> None:
    entry = {
        "iss": ISS,
        "jwks_file": "client-jwks.json",
        "allowed_jku": ["https://ehr.example.org/jwks"],
        "algorithms": ["ES384"],
    }
    config = tmp_path / "issuers.json"
    config.write_text(json.dumps([entry]), encoding="utf-8")
    from_file = load_issuers(str(config))
    assert from_file == [
        TrustedIssuer(
            iss=ISS,
            jwks_file=jwks_file,
            allowed_jku=("https://ehr.example.org/jwks",),
            algorithms=("ES384",),
        )
    ]
    from_string = load_issuers(json.dumps([{**entry, "jwks_file": jwks_file}]))
    assert from_string == from_file == load_issuers([{**entry, "jwks_file": jwks_file}])


@pytest.mark.parametrize(
    "entry",
    [
        {"iss": ISS, "jwks_uri": "https://x"},
        {"iss": ISS, "jwks_url": "https://x", "algorithms": ["HS256"]},
        {"iss": ISS, "jwks_url": "https://x", "algorithms": ["none"]},
        {"iss": ISS, "jwks_url": "https://x", "algorithms": []},
        {"iss": ISS},
        {"iss": "", "jwks_url": "https://x"},
        {"iss": ISS, "jwks_url": "https://x", "jwks_file": "/tmp/x.json"},
        {"iss": ISS, "jwks_url": "file:///etc/jwks.json"},
    ],
)
def test_a_bad_issuer_config_fails_at_start_up(entry: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        load_issuers([entry])


def test_an_unreadable_jwks_file_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises((OSError, ValueError)):
        JwtVerifier([TrustedIssuer(iss=ISS, jwks_file=str(tmp_path / "absent.json"))])
