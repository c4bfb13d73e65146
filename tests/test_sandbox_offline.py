"""The official CDS Hooks Sandbox signs every token with a ``jku`` header. Offline, with only
its key pinned (``jwks_file``, see the README), its recorded tokens must verify: the ``jku``
is neither allow-listed nor reachable, so the pinned key is used by ``kid``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_hooks.auth import AuthError, JwtVerifier, TrustedIssuer

DATA = Path(__file__).resolve().parent / "data" / "cds-hooks-examples"
JWKS = DATA / "sandbox-jwks-public.json"
CALLS = json.loads((DATA / "captured-sandbox" / "sandbox-rxview-jwts.json").read_text())
ISS = "https://sandbox.cds-hooks.org"


@pytest.mark.parametrize("call", CALLS, ids=[c["path"] for c in CALLS])
def test_a_recorded_sandbox_token_verifies_offline_against_the_pinned_key(call: dict) -> None:
    assert call["jwt_header"]["jku"] == ISS + "/.well-known/jwks.json"
    payload = call["jwt_payload"]
    verifier = JwtVerifier([TrustedIssuer(iss=ISS, jwks_file=str(JWKS))], clock=lambda: float(payload["iat"]))
    claims = verifier.verify(call["authorization_header"], payload["aud"])
    assert claims["jti"] == payload["jti"]


def test_with_the_sandbox_jku_allow_listed_but_unreachable_the_pinned_key_still_verifies() -> None:
    call = CALLS[0]
    payload = call["jwt_payload"]
    unreachable = "http://127.0.0.1:9/.well-known/jwks.json"  # discard port: nothing answers
    issuer = TrustedIssuer(iss=ISS, jwks_file=str(JWKS), allowed_jku=(unreachable,))
    verifier = JwtVerifier([issuer], clock=lambda: float(payload["iat"]), http_timeout_s=1)
    assert verifier.verify(call["authorization_header"], payload["aud"])["iss"] == ISS


def test_a_sandbox_token_is_still_refused_once_expired() -> None:
    call = CALLS[0]
    payload = call["jwt_payload"]
    verifier = JwtVerifier([TrustedIssuer(iss=ISS, jwks_file=str(JWKS))], clock=lambda: payload["exp"] + 3600.0)
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(call["authorization_header"], payload["aud"])
