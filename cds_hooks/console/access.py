"""Who may use the console: open on loopback when the service runs without authentication,
otherwise a console token entered once on the login page.

The cookie holds a signed, expiring session value (a random nonce), never the token. The
signing key is derived from the token, so every worker process accepts the same cookies and
changing the token logs everyone out. CSRF tokens are an HMAC of the session nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "cryo_console"
SESSION_MAX_AGE_S = 12 * 3600
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class ConsoleSettings:
    """The console's own settings (read once when it is registered)."""

    token: str  # empty: only the open (loopback, no-auth) mode can be used
    open_on_loopback: bool
    patients_dir: Path | None
    secret: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if not self.secret:
            self.secret = (
                hashlib.sha256(b"cryo-cds console session|" + self.token.encode()).digest()
                if self.token
                else secrets.token_bytes(32)
            )

    def serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt="cryo-cds-console")


def settings_from(config: Any, environ: Any = None) -> ConsoleSettings:
    """Token: the configured console token (CDS_HOOKS_CONSOLE_TOKEN), else the audit token.
    Patients: CDS_HOOKS_CONSOLE_PATIENTS."""
    env = os.environ if environ is None else environ
    token = config.console_token or config.audit_token or ""
    patients = env.get("CDS_HOOKS_CONSOLE_PATIENTS")
    open_mode = not config.auth_required and config.host in LOOPBACK
    return ConsoleSettings(token=token, open_on_loopback=open_mode, patients_dir=Path(patients) if patients else None)


def new_session(settings: ConsoleSettings, authenticated: bool) -> tuple[str, dict[str, Any]]:
    """A fresh signed cookie value and the session it carries."""
    session = {"n": secrets.token_urlsafe(18), "a": authenticated}
    return str(settings.serializer().dumps(session)), session


def read_session(settings: ConsoleSettings, cookie: str | None) -> dict[str, Any] | None:
    if not cookie:
        return None
    try:
        value = settings.serializer().loads(cookie, max_age=SESSION_MAX_AGE_S)
    except BadSignature:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("n"), str):
        return None
    return value


def csrf_token(settings: ConsoleSettings, session: dict[str, Any]) -> str:
    return hmac.new(settings.secret, b"csrf|" + str(session["n"]).encode(), hashlib.sha256).hexdigest()


def csrf_ok(settings: ConsoleSettings, session: dict[str, Any] | None, given: str | None) -> bool:
    if session is None or not given:
        return False
    return hmac.compare_digest(csrf_token(settings, session).encode(), given.encode())


def token_ok(settings: ConsoleSettings, given: str) -> bool:
    return bool(settings.token) and hmac.compare_digest(given.encode(), settings.token.encode())
