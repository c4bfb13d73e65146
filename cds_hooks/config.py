"""Service configuration: embedded defaults, overridden by ``CDS_HOOKS_*`` environment
variables, validated once at start so a bad setting stops the service with a clear message
instead of failing on the first request.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from .deadline import DEFAULT_CALL_DEADLINE_S

PACKAGE_DIR = Path(__file__).resolve().parent
PREFIX = "CDS_HOOKS_"
DATABASE_FILE = "decisions.db"
KEY_FILE = "patient-hash.key"
MAX_PORT = 65535
#: Shortest audit or console token accepted: a short one could be guessed by trying.
MIN_TOKEN_CHARS = 24
DEFAULT_MEMORY_RELEASE_IDLE_S = 2.0  # seconds without requests before a worker hands back a large call's memory
N = TypeVar("N", int, float)


def bundled_rules_dir() -> Path:
    """The rules shipped with the package: copied into the wheel as ``cds_hooks/_bundled/rules``
    at build time (setup.py); in a source checkout or an editable install, the top-level
    ``rules/`` folder, which stays the source of truth."""
    packaged = PACKAGE_DIR / "_bundled" / "rules"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "rules"


DEFAULT_RULES_DIR = bundled_rules_dir()


def default_data_dir() -> Path:
    """Where state lives when CDS_HOOKS_DATA_DIR is not set: the per-user data directory
    (e.g. ~/.local/share/cryo-cds), so every command finds the same log from any directory."""
    return platformdirs.user_data_path("cryo-cds", appauthor=False)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Config:
    rules_dir: Path = DEFAULT_RULES_DIR
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""  # empty: sqlite:///<data_dir>/decisions.db
    patient_hash_key: bytes | None = None  # None: read or create <data_dir>/patient-hash.key
    evaluator: str = "durable"  # "durable" or "plain"
    rule_params: Mapping[str, Any] = field(default_factory=dict)
    destruction_codes_imply_cryo: bool = False
    auth_required: bool = True
    trusted_issuers: str = ""  # JSON list, or a path to a JSON file (see README)
    public_base_url: str = "http://127.0.0.1:8080"
    jwt_clock_skew_s: int = 60
    tenants: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 20 * 1024 * 1024
    fetch_budget_s: float = 4.0
    fetch_max_pages: int = 20
    fhir_server_allow: tuple[str, ...] = ()  # URL prefixes the service may fetch from; empty: any
    audit_token: str = ""  # empty: the /audit HTTP API is off
    console_token: str = ""  # the console's login token; empty: the audit token
    card_grouping: str = "order"  # "order": one card per order and severity; "rule": one per rule
    host: str = "127.0.0.1"
    port: int = 8080
    # -- hardening: hostile FHIR servers, database faults, bounded work (issue 12) --
    fetch_max_bytes: int = 16 * 1024 * 1024  # per FHIR server response, streamed
    fhir_allow_private: bool = False  # no allow-list + JWT on: loopback/private/link-local refused
    db_timeout_s: float = 5.0  # connect, statement and hung-network limit of every database call
    spool_dir: Path | None = None  # decisions the database could not take; None: see spool_dir()
    feedback_max_items: int = 100  # per feedback POST
    call_deadline_s: float = DEFAULT_CALL_DEADLINE_S  # whole hook call; the FHIR fetch budget is cut to fit
    policy_file: Path | None = None  # site policy (issue 14); None: the bundled rules as they are
    worker_max_growth_mb: float = 12.0  # a gunicorn sync worker grown by more is replaced; 0: never
    memory_release_idle_s: float = DEFAULT_MEMORY_RELEASE_IDLE_S  # web/memory.py; 0: not kept

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / DATABASE_FILE}")

    @property
    def key_file(self) -> Path:
        return self.data_dir / KEY_FILE

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **changes)


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{PREFIX}{name} must be true or false, got {raw!r}")


def parse_number(raw: str, kind: type[N], *, allow_zero: bool = False, maximum: N | None = None) -> N:
    """``raw`` as a whole number (``int``) or a finite number (``float``) above 0 (or 0 and
    above), at most ``maximum``; ValueError saying what was expected. The one number parser
    of the ``CDS_HOOKS_*`` settings and of the command line's options."""
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ValueError(f"must be {'a whole number' if kind is int else 'a number'}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {raw!r}")
    lowest = "0 or more" if allow_zero else ("1 or more" if kind is int else "more than 0")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"must be {lowest}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be {maximum} or less, got {value}")
    return value


def _number(name: str, raw: str, kind: type[N], maximum: N | None = None) -> N:
    try:
        return parse_number(raw, kind, maximum=maximum)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name} {exc}") from None


def _token(name: str, raw: str) -> str:
    """A token setting: empty (off) or at least MIN_TOKEN_CHARS long."""
    if raw and len(raw) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{PREFIX}{name} must be at least {MIN_TOKEN_CHARS} characters")
    return raw


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def from_env(environ: Mapping[str, str] | None = None) -> Config:
    """Defaults overridden by the environment (see the configuration table in README.md)."""
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {}

    def get(name: str) -> str | None:
        return env.get(PREFIX + name)

    if (raw := get("RULES_DIR")) is not None:
        changes["rules_dir"] = Path(raw)
    if (raw := get("DATA_DIR")) is not None:
        if not raw.strip():
            raise ConfigError(f"{PREFIX}DATA_DIR must not be empty")
        changes["data_dir"] = Path(raw).expanduser().resolve()
    if (raw := get("DATABASE_URL")) is not None:
        changes["database_url"] = raw
    if (raw := get("PATIENT_HASH_KEY")) is not None:
        if len(raw) < 16:
            raise ConfigError(f"{PREFIX}PATIENT_HASH_KEY must be at least 16 characters")
        changes["patient_hash_key"] = raw.encode()
    if (raw := get("EVALUATOR")) is not None:
        if raw not in ("durable", "plain"):
            raise ConfigError(f"{PREFIX}EVALUATOR must be 'durable' or 'plain'")
        changes["evaluator"] = raw
    if (raw := get("RULE_PARAMS")) is not None:
        try:
            params = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{PREFIX}RULE_PARAMS must be a JSON object: {exc}") from None
        if not isinstance(params, dict):
            raise ConfigError(f"{PREFIX}RULE_PARAMS must be a JSON object")
        changes["rule_params"] = params
    if (raw := get("DESTRUCTION_CODES_IMPLY_CRYO")) is not None:
        changes["destruction_codes_imply_cryo"] = _bool("DESTRUCTION_CODES_IMPLY_CRYO", raw)
    if (raw := get("AUTH")) is not None:
        changes["auth_required"] = raw.strip().lower() not in ("off", "disabled", "false", "0")
    if (raw := get("TRUSTED_ISSUERS")) is not None:
        changes["trusted_issuers"] = raw
    if (raw := get("PUBLIC_BASE_URL")) is not None:
        changes["public_base_url"] = raw.rstrip("/")
    if (raw := get("JWT_CLOCK_SKEW_S")) is not None:
        changes["jwt_clock_skew_s"] = _number("JWT_CLOCK_SKEW_S", raw, int)
    if (raw := get("TENANTS")) is not None:
        changes["tenants"] = _list(raw)
    if (raw := get("CORS_ORIGINS")) is not None:
        changes["cors_origins"] = _list(raw)
    if (raw := get("MAX_BODY_BYTES")) is not None:
        changes["max_body_bytes"] = _number("MAX_BODY_BYTES", raw, int)
    if (raw := get("FETCH_BUDGET_S")) is not None:
        changes["fetch_budget_s"] = _number("FETCH_BUDGET_S", raw, float)
    if (raw := get("FETCH_MAX_PAGES")) is not None:
        changes["fetch_max_pages"] = _number("FETCH_MAX_PAGES", raw, int)
    if (raw := get("FHIR_SERVER_ALLOW")) is not None:
        changes["fhir_server_allow"] = _list(raw)
    if (raw := get("AUDIT_TOKEN")) is not None:
        changes["audit_token"] = _token("AUDIT_TOKEN", raw)
    if (raw := get("CONSOLE_TOKEN")) is not None:
        changes["console_token"] = _token("CONSOLE_TOKEN", raw)
    if (raw := get("CARD_GROUPING")) is not None:
        if raw not in ("order", "rule"):
            raise ConfigError(f"{PREFIX}CARD_GROUPING must be 'order' or 'rule', got {raw!r}")
        changes["card_grouping"] = raw
    if (raw := get("HOST")) is not None:
        changes["host"] = raw
    if (raw := get("PORT")) is not None:
        changes["port"] = _number("PORT", raw, int, maximum=MAX_PORT)
    changes.update(_hardening_settings(get))
    return Config(**changes)


def _hardening_settings(get: Any) -> dict[str, Any]:
    """Settings of the fetch, database-fault and work bounds (README: configuration)."""
    changes: dict[str, Any] = {}
    if (raw := get("FETCH_MAX_BYTES")) is not None:
        changes["fetch_max_bytes"] = _number("FETCH_MAX_BYTES", raw, int)
    if (raw := get("FHIR_ALLOW_PRIVATE")) is not None:
        changes["fhir_allow_private"] = _bool("FHIR_ALLOW_PRIVATE", raw)
    if (raw := get("DB_TIMEOUT_S")) is not None:
        changes["db_timeout_s"] = _number("DB_TIMEOUT_S", raw, float)
    if (raw := get("SPOOL_DIR")) is not None:
        changes["spool_dir"] = Path(raw)
    if (raw := get("FEEDBACK_MAX_ITEMS")) is not None:
        changes["feedback_max_items"] = _number("FEEDBACK_MAX_ITEMS", raw, int)
    if (raw := get("CALL_DEADLINE_S")) is not None:
        changes["call_deadline_s"] = _number("CALL_DEADLINE_S", raw, float)
    if raw := get("POLICY"):
        changes["policy_file"] = Path(raw)
    if (raw := get("WORKER_MAX_GROWTH_MB")) is not None:
        try:
            changes["worker_max_growth_mb"] = parse_number(raw, float, allow_zero=True)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}WORKER_MAX_GROWTH_MB {exc}") from None
    if (raw := get("MEMORY_RELEASE_IDLE_S")) is not None:
        try:
            changes["memory_release_idle_s"] = parse_number(raw, float, allow_zero=True, maximum=3600.0)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}MEMORY_RELEASE_IDLE_S {exc}") from None
    return changes


def patient_hash_key(config: Config) -> bytes:
    """The keyed-hash secret for patient ids: configured, or kept in ``<data_dir>/patient-hash.key``
    so hashes stay stable across restarts. Creating a new key file is left to
    ``cds_hooks.state.open_audit_store``, which first checks that the log has no other key."""
    from .state import resolve_patient_hash_key

    return resolve_patient_hash_key(config)


def spool_dir(config: Config) -> Path:
    """Where decisions wait when the database fails: configured, else ``<data_dir>/spool``."""
    return config.spool_dir if config.spool_dir is not None else config.data_dir / "spool"
