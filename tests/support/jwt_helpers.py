"""Test helpers for CDS Hooks client JWTs: keys as a real client would publish them, and tokens
signed the way a client signs them, so tests exercise the verifier end to end with no mocks."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


def make_keypair(alg: str = "ES384", kid: str | None = None) -> tuple[PrivateKey, dict[str, Any]]:
    """Return ``(private_key, public_jwk)`` for ES256/384/512 or RS256/384/512 (RSA 2048).

    The JWK carries ``kid``, ``alg`` and ``use: sig`` like the spec's example JWKS.
    """
    private: PrivateKey
    if alg in _CURVES:
        private = ec.generate_private_key(_CURVES[alg]())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg in ("RS256", "RS384", "RS512"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        raise ValueError(f"unsupported alg {alg}")
    jwk.update(kid=kid or str(uuid.uuid4()), alg=alg, use="sig")
    return private, jwk


def jwks(*public_jwks: dict[str, Any]) -> dict[str, Any]:
    """A JWK Set document as served at a client's ``jku``."""
    return {"keys": list(public_jwks)}


def sign_token(
    private_key: PrivateKey,
    alg: str,
    kid: str,
    iss: str,
    aud: str | list[str],
    *,
    headers: dict[str, Any] | None = None,
    now: float | None = None,
    **claims: Any,
) -> str:
    """Sign a CDS Hooks client JWT with fresh ``jti``, ``iat`` = now and ``exp`` = now + 300 s.

    Extra ``claims`` override the defaults; a claim given as ``None`` is left out, which is how
    tests build tokens missing a required claim. ``headers`` adds or overrides JOSE headers
    (``jku``, ``typ``...); ``typ: JWT`` is set because the spec requires it.
    """
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "iat": issued,
        "exp": issued + 300,
        "jti": str(uuid.uuid4()),
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, private_key, algorithm=alg, headers={"typ": "JWT", "kid": kid, **(headers or {})})


def b64url(data: bytes) -> str:
    """Unpadded base64url, for hand-assembling tokens PyJWT refuses to produce."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Inverse of :func:`b64url`, for reading or tampering with a token's payload."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def compact(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """The ``header.payload`` signing input of a compact JWS, for hand-made (attack) tokens."""
    enc = [b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)]
    return ".".join(enc)
