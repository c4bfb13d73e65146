"""Verification of the JWT a CDS Client sends as ``Authorization: Bearer`` (CDS Hooks 2.0 §8).

Framework-free so the rules can be tested without a web server; the HTTP layer answers a bare 401
on :class:`AuthError`. Order: cheap header checks, then the issuer allow-list before any key is
fetched (untrusted senders cannot make us fetch anything), the signature before any claim is
believed, and the jti stored last so a rejected token never burns a nonce.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from heapq import heappop, heappush
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

# PyJWT, cryptography and requests weigh ~14 MB per process: PyJWT and cryptography are imported
# at the first token checked, requests at the first JWKS fetched over HTTP, so a service running
# without JWT checks loads none of them, and one whose issuers name key files never loads requests.
if TYPE_CHECKING:
    import jwt
    import requests

from .fhir_targets import parse_allow_list

logger = logging.getLogger("cds_hooks.auth")

#: Asymmetric algorithms an issuer may list. ``none`` and HS* are absent by design: the spec forbids
#: them, and HS* with a public key as the secret is the classic algorithm-confusion attack.
SUPPORTED_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
JWKS_MIN_REFRESH_INTERVAL_S = 60.0  # unknown kids must not let anyone hammer the issuer (or us)
JWKS_MAX_AGE_S = 3600.0  # re-read a JWKS hourly so that removed (revoked) keys stop working
_MAX_TOKEN_CHARS = 16_384  # real client tokens are < 1 KB; refuse to parse megabytes
_MAX_JWKS_BYTES = 256_000
_MAX_JTI_CHARS = 256  # jti values are stored; keep an attacker from filling memory with long ones
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_KTY_FOR_ALG_PREFIX = {"ES": "EC", "RS": "RSA", "PS": "RSA"}
_ISSUER_KEYS = {"iss", "jwks_file", "jwks_url", "allowed_jku", "algorithms", "fhir_servers"}
# Time and audience are checked by JwtVerifier against its own (injectable) clock and URL rule.
_DECODE_OPTIONS: Any = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "enforce_minimum_key_length": True,
}  # RSA < 2048 bits is refused
_Jwks = dict[str, list[dict[str, Any]]]  # kid -> candidate public JWKs


class AuthError(Exception):
    """A rejected request. The message is a short fixed reason for logs, never shown to the client
    (which gets a bare 401) and never containing the token."""


@dataclass(frozen=True)
class TrustedIssuer:
    """One allow-listed CDS Client. Keys come from ``jwks_file``/``jwks_url`` (exchanged out of
    band) or, when the token has a ``jku`` header, from that URL, but only if it is listed here;
    a ``jku`` that is not listed or cannot be fetched falls back to the pinned keys (by ``kid``),
    so a client that always sends ``jku`` (the CDS Hooks Sandbox) works offline with a pinned key.
    ``fhir_servers`` are the base URLs this client's calls may name as ``fhirServer``."""

    iss: str
    jwks_file: str | None = None
    jwks_url: str | None = None
    allowed_jku: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ("ES384", "RS384")
    fhir_servers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Config mistakes must fail at start-up, not surface later as mysterious 401s.
        object.__setattr__(self, "allowed_jku", tuple(self.allowed_jku))
        object.__setattr__(self, "algorithms", tuple(self.algorithms))
        object.__setattr__(self, "fhir_servers", tuple(self.fhir_servers))
        parse_allow_list(self.fhir_servers)  # raises ValueError naming a bad entry
        if not self.iss or (self.jwks_file and self.jwks_url):
            raise ValueError(f"issuer {self.iss!r}: empty iss, or both jwks_file and jwks_url")
        if not (self.jwks_file or self.jwks_url or self.allowed_jku):
            raise ValueError(f"issuer {self.iss!r}: needs jwks_file, jwks_url or allowed_jku")
        bad = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
        if bad or not self.algorithms:
            raise ValueError(f"issuer {self.iss!r}: unsupported or no algorithms {bad}")
        for url in (self.jwks_url, *self.allowed_jku):
            if url is not None and not re.match(r"https?://", url):
                raise ValueError(f"issuer {self.iss!r}: JWKS URL must be http(s): {url!r}")


class JtiCache(Protocol):
    """Replay protection store. The service uses :class:`cds_hooks.replay.DatabaseJtiCache`,
    shared by every worker; :class:`InMemoryJtiCache` only protects a single process."""

    def add_if_absent(self, key: str, expires_at: float, now: float) -> bool:
        """Atomically remember ``key`` until ``expires_at``; False if it is already remembered."""
        ...


class InMemoryJtiCache:
    """Thread-safe, bounded jti store for one process. When full it drops expired entries first,
    then the ones expiring soonest: that reopens the smallest replay window, whereas refusing new
    tokens would let a flood lock out every client."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max(1, max_entries)
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (expires_at, key); mirrors _expiry
        self._lock = threading.Lock()

    def add_if_absent(self, key: str, expires_at: float, now: float) -> bool:
        """See :meth:`JtiCache.add_if_absent`."""
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                del self._expiry[heappop(self._heap)[1]]
            if key in self._expiry:
                return False
            if len(self._expiry) >= self._max:
                logger.warning("jti cache full (%d); evicting the soonest-expiring", self._max)
                del self._expiry[heappop(self._heap)[1]]
            self._expiry[key] = expires_at
            heappush(self._heap, (expires_at, key))
            return True


class _KeySource:
    """Cached JWKS from one file or URL: refreshed when stale or on an unknown kid, but at most
    once per JWKS_MIN_REFRESH_INTERVAL_S. The lock makes concurrent misses share one fetch."""

    def __init__(self, loader: Callable[[], _Jwks], label: str) -> None:
        self._loader = loader
        self._label = label
        self._keys: _Jwks | None = None
        self._loaded_at = self._last_attempt = -math.inf
        self._lock = threading.Lock()

    def get(self, kid: str, now: float) -> list[dict[str, Any]]:
        with self._lock:
            wanted = self._keys is None or kid not in self._keys
            stale = now - self._loaded_at >= JWKS_MAX_AGE_S
            if (wanted or stale) and now - self._last_attempt >= JWKS_MIN_REFRESH_INTERVAL_S:
                self._last_attempt = now
                try:
                    self._keys, self._loaded_at = self._loader(), now
                except AuthError:
                    if self._keys is None:
                        raise
                    # Keep the previous keys: an issuer outage should not lock its clients out.
                    logger.warning("JWKS refresh failed for %s; keeping cached keys", self._label)
            if self._keys is None:
                raise AuthError("JWKS unavailable (retry rate-limited)")
            if kid not in self._keys:
                raise AuthError("unknown kid")
            return self._keys[kid]


def _parse_jwks(doc: Any) -> _Jwks:
    """Index usable public signing keys by kid. A kid may repeat across key types during a
    migration, so every candidate is kept and the algorithm picks among them later."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise TypeError("JWKS must be an object with a 'keys' array")
    out: _Jwks = {}
    for jwk in doc["keys"]:
        if (
            not isinstance(jwk, dict)
            or not isinstance(jwk.get("kid"), str)
            or jwk.get("kty") not in ("EC", "RSA")
            or jwk.get("use", "sig") != "sig"
        ):
            continue
        if "d" in jwk:  # a published private key is compromised; never trust it
            logger.warning("JWKS key %r contains private material; ignored", jwk["kid"])
            continue
        out.setdefault(jwk["kid"], []).append(jwk)
    return out


def _read_jwks_file(path: str) -> _Jwks:
    return _parse_jwks(json.loads(Path(path).read_text(encoding="utf-8")))


def _load_jwks_file(path: str) -> _Jwks:
    """Re-read on refresh so a rotated key file is picked up without a restart."""
    try:
        return _read_jwks_file(path)
    except (OSError, ValueError, TypeError):
        raise AuthError("JWKS file unreadable") from None


def _fetch_jwks(url: str, session: requests.Session | None, timeout: float) -> _Jwks:
    """GET a JWKS. No redirects: an open redirect on an allow-listed host must not lead to other
    keys. The deadline bounds a slow-drip body, which requests' per-read timeout does not.
    requests is imported here, at the first fetch: a service whose issuers name key files never
    loads it (5 MB and 70 ms in every process)."""
    import requests

    http_get = session.get if session is not None else requests.get
    deadline = time.monotonic() + timeout
    try:
        with http_get(
            url, timeout=timeout, allow_redirects=False, stream=True, headers={"Accept": "application/json"}
        ) as resp:
            if resp.status_code != 200:
                raise AuthError(f"JWKS fetch failed (HTTP {resp.status_code})")
            body = bytearray()
            for chunk in resp.iter_content(65_536):
                body += chunk
                if len(body) > _MAX_JWKS_BYTES or time.monotonic() > deadline:
                    raise AuthError("JWKS fetch failed (too large or too slow)")
        return _parse_jwks(json.loads(body))
    except requests.RequestException as exc:
        raise AuthError(f"JWKS fetch failed ({type(exc).__name__})") from None
    except (ValueError, TypeError):
        raise AuthError("JWKS fetch failed (invalid JWKS)") from None


class JwtVerifier:
    """Checks CDS Hooks client JWTs against a fixed allow-list of issuers. Thread-safe."""

    def __init__(
        self,
        issuers: Sequence[TrustedIssuer],
        *,
        clock_skew_s: int = 60,
        max_lifetime_s: int = 3600,
        tenants: Collection[str] | None = None,
        http_timeout_s: float = 3.0,
        jti_cache: JtiCache | None = None,
        clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
    ) -> None:
        """``clock`` is injectable so tests (and replays of recorded traffic) can freeze time;
        ``session`` lets the app share a connection pool or proxy/CA settings for JWKS fetches."""
        self._issuers = {issuer.iss: issuer for issuer in issuers}
        if len(self._issuers) != len(issuers):
            raise ValueError("duplicate iss in issuers")
        self._skew = clock_skew_s
        self._max_lifetime = max_lifetime_s
        self._tenants = frozenset(tenants) if tenants is not None else None
        self._jti = jti_cache if jti_cache is not None else InMemoryJtiCache()
        self._clock = clock
        fetch = partial(_fetch_jwks, session=session, timeout=http_timeout_s)
        # One cache per (issuer, source): issuers sharing a URL cannot starve each other's refresh.
        self._default_sources: dict[str, _KeySource] = {}
        self._jku_sources: dict[tuple[str, str], _KeySource] = {}
        for iss, issuer in self._issuers.items():
            if issuer.jwks_file:
                path = issuer.jwks_file
                _read_jwks_file(path)  # fail fast at start-up on an unreadable or invalid file
                self._default_sources[iss] = _KeySource(partial(_load_jwks_file, path), path)
            elif issuer.jwks_url:
                url = issuer.jwks_url
                self._default_sources[iss] = _KeySource(partial(fetch, url), url)
            for jku in issuer.allowed_jku:
                self._jku_sources[(iss, jku)] = _KeySource(partial(fetch, jku), jku)

    def verify(self, authorization_header: str | None, audience: str) -> dict[str, Any]:
        """Return the verified claims or raise AuthError. ``audience`` is the exact URL of the
        endpoint invoked (discovery, service or feedback): the spec binds each token to one
        endpoint so that it cannot be replayed against another."""
        if not audience:
            raise ValueError("audience must be the URL of the invoked endpoint")
        seen: dict[str, Any] = {}
        try:
            return self._verify(authorization_header, audience, seen)
        except AuthError as exc:
            # Only identifiers go to the log (never the token); %r neutralises injected newlines.
            ids = {k: str(v)[:200] for k, v in seen.items() if v is not None}
            logger.warning(
                "CDS client JWT rejected: %s (iss=%r kid=%r jti=%r)",
                exc,
                ids.get("iss"),
                ids.get("kid"),
                ids.get("jti"),
            )
            raise

    def issuer(self, iss: str) -> TrustedIssuer | None:
        """The trusted issuer of that name (for its per-client settings such as fhir_servers)."""
        return self._issuers.get(iss)

    def _candidates(self, issuer: TrustedIssuer, jku: Any, has_jku: bool, kid: str, now: float) -> list[dict[str, Any]]:
        """Keys for ``kid``: from an allow-listed ``jku``, else (not listed, or not fetchable)
        from the issuer's pinned keys. A ``jku`` never adds trust: only configured sources
        are ever read."""
        pinned = self._default_sources.get(issuer.iss)
        listed = self._jku_sources.get((issuer.iss, jku)) if has_jku and isinstance(jku, str) else None
        if listed is not None:
            try:
                return listed.get(kid, now)
            except AuthError:
                if pinned is None:
                    raise
        if pinned is None:
            raise AuthError("jku not allow-listed" if has_jku else "jku required by issuer config")
        return pinned.get(kid, now)

    def _verify(self, authorization_header: str | None, audience: str, seen: dict[str, Any]) -> dict[str, Any]:
        import jwt

        token = _bearer_token(authorization_header)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        if not isinstance(unverified, dict):
            raise AuthError("malformed token")
        seen.update(iss=unverified.get("iss"), kid=header.get("kid"), jti=unverified.get("jti"))

        if "typ" in header and header["typ"] != "JWT":
            raise AuthError("typ is not JWT")
        if "crit" in header:
            raise AuthError("critical header extensions are not supported")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
            raise AuthError("alg not allowed")  # covers none and HS* before any key lookup
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("kid missing")
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("untrusted issuer")
        if alg not in issuer.algorithms:
            raise AuthError("alg not allowed for issuer")

        now = self._clock()
        key = _pick_key(self._candidates(issuer, header.get("jku"), "jku" in header, kid, now), alg)

        try:
            claims = jwt.decode(token, key=key, algorithms=[alg], options=_DECODE_OPTIONS)
        except jwt.InvalidSignatureError:
            raise AuthError("signature invalid") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"token rejected ({type(exc).__name__})") from None

        if claims.get("iss") != issuer.iss:
            raise AuthError("untrusted issuer")
        _check_audience(claims.get("aud"), audience)
        exp, iat = _numeric(claims, "exp"), _numeric(claims, "iat")
        if exp <= now - self._skew:
            raise AuthError("token expired")
        if iat > now + self._skew:
            raise AuthError("token issued in the future")
        if "nbf" in claims and _numeric(claims, "nbf") > now + self._skew:
            raise AuthError("token not yet valid")
        if exp - iat > self._max_lifetime:
            raise AuthError("token lifetime too long")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthError("tenant is not a string")
        if self._tenants is not None and tenant not in self._tenants:
            raise AuthError("tenant not allowed")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI_CHARS:
            raise AuthError("jti missing or invalid")
        # Namespaced by issuer: one client's nonces must not collide with another's.
        if not self._jti.add_if_absent(f"{issuer.iss}\x00{jti}", exp + self._skew, now):
            raise AuthError("jti replayed")
        return claims


def _bearer_token(authorization_header: str | None) -> str:
    """Extract the compact JWS; the scheme is case-insensitive (RFC 7235), the rest strict."""
    if not authorization_header:
        raise AuthError("missing Authorization header")
    parts = authorization_header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise AuthError("Authorization header is not 'Bearer <token>'")
    token = parts[1]
    if len(token) > _MAX_TOKEN_CHARS or not _COMPACT_JWS.fullmatch(token):
        raise AuthError("malformed token")
    return token


def _pick_key(candidates: list[dict[str, Any]], alg: str) -> jwt.PyJWK:
    """Choose the JWK for this alg. Binding the PyJWK to ``alg`` makes PyJWT refuse any other
    algorithm with it, and a JWK that declares its own ``alg`` must agree with the header."""
    import jwt

    for jwk in candidates:
        if jwk.get("kty") != _KTY_FOR_ALG_PREFIX[alg[:2]] or jwk.get("alg", alg) != alg:
            continue
        try:
            return jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            continue
    raise AuthError("no usable key for kid and alg")


def _check_audience(aud: Any, expected: str) -> None:
    """``aud`` is a string or array (spec) and must name this endpoint. Only a trailing-slash
    difference is tolerated, as clients disagree on it; anything looser would let a token for
    one service be replayed against another."""
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise AuthError("aud missing or malformed")
    if not any(v.removesuffix("/") == expected.removesuffix("/") for v in values):
        raise AuthError("aud does not match endpoint")


def _numeric(claims: dict[str, Any], name: str) -> float:
    """A required finite NumericDate. JSON NaN would make every comparison false and skip checks."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthError(f"{name} missing or not a number")
    try:
        number = float(value)
    except OverflowError:
        raise AuthError(f"{name} out of range") from None
    if not math.isfinite(number) or abs(number) > 1e11:  # beyond year 5000: no real token
        raise AuthError(f"{name} out of range")
    return number


def load_issuers(config: str | list[dict[str, Any]]) -> list[TrustedIssuer]:
    """Build issuers from a JSON string, a JSON file path, or already-parsed dicts.

    Unknown keys are errors so a typo such as ``jwks_uri`` fails at start-up instead of leaving an
    issuer without keys. A relative ``jwks_file`` in a config file is resolved next to that file.
    """
    base: Path | None = None
    if isinstance(config, str):
        if config.lstrip().startswith("["):
            entries = json.loads(config)
        else:
            path = Path(config)
            entries, base = json.loads(path.read_text(encoding="utf-8")), path.parent
    else:
        entries = config
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("issuer config must be a JSON array of objects")
    issuers = []
    for entry in entries:
        unknown = set(entry) - _ISSUER_KEYS
        if unknown:
            raise ValueError(f"unknown issuer config keys: {sorted(unknown)}")
        fields = dict(entry)
        jwks_file = fields.get("jwks_file")
        if base is not None and jwks_file and not Path(jwks_file).is_absolute():
            fields["jwks_file"] = str(base / jwks_file)
        issuers.append(TrustedIssuer(**fields))
    return issuers
