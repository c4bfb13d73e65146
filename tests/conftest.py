"""Shared fixtures: the bundled rules and terminology, a pipeline per evaluator (built by
``cds_hooks.pipeline_factory``, like the service's), and an empty database of each kind (a
SQLite file, a throwaway PostgreSQL database).

PostgreSQL tests skip (with the reason) when 127.0.0.1:5432 is unreachable on a developer
machine, and fail when the CI environment variable is set, so CI cannot go green without them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from cds_hooks.cards import finding_codes, group_codes
from cds_hooks.config import Config
from cds_hooks.engine import Evaluator, make_evaluator
from cds_hooks.pipeline_factory import PipelineParts, build_pipeline, fixed_clock
from cds_hooks.rulebook import Rulebook, load_rulebook
from cds_hooks.service import Pipeline
from cds_hooks.terminology import Terminology

from .support import load
from .support.browser import chromium  # noqa: F401  (the shared headless-Chromium fixture)

# Per-user state (the default data directory) goes to a throwaway folder for the whole run,
# subprocesses included, never to the developer's own ~/.local/share/cryo-cds.
_USER_DATA = tempfile.mkdtemp(prefix="cryo-cds-test-home-")
atexit.register(shutil.rmtree, _USER_DATA, ignore_errors=True)
os.environ["XDG_DATA_HOME"] = _USER_DATA
os.environ.pop("CDS_HOOKS_DATA_DIR", None)

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
SHARED = ROOT.parent / "shared"
PG_ADMIN_URL = os.environ.get("CRYO_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_CONFIG = Config(rules_dir=RULES_DIR)


_GROUPS: dict[str, str] = {}


def card_findings(cards: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(rule id or group id, indicator) of every finding the cards carry (their
    ``org.cryo-cds.findings`` extension), as the acceptance suite judges them."""
    if not _GROUPS:
        _GROUPS.update(group_codes(load_rulebook(RULES_DIR)))
    return set(finding_codes(cards, _GROUPS))


def cards_by_rule(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each rule (or group) id -> the card that carries its finding."""
    if not _GROUPS:
        _GROUPS.update(group_codes(load_rulebook(RULES_DIR)))
    return {code: card for card in cards for code, _ in finding_codes([card], _GROUPS)}


@pytest.fixture(scope="session")
def terminology() -> Terminology:
    return Terminology.load(RULES_DIR / "valuesets")


@pytest.fixture(scope="session")
def rulebook() -> Rulebook:
    return load_rulebook(RULES_DIR)


@pytest.fixture(scope="session")
def durable_evaluator(rulebook: Rulebook) -> Evaluator:
    return make_evaluator(rulebook.engine_rules(), "durable")


@pytest.fixture(scope="session")
def plain_evaluator(rulebook: Rulebook) -> Evaluator:
    return make_evaluator(rulebook.engine_rules(), "plain")


def make_pipeline(
    rulebook: Rulebook,
    terminology: Terminology,
    evaluator: Evaluator,
    now: datetime | None = None,
    config: Config = TEST_CONFIG,
) -> Pipeline:
    """The service's pipeline (``build_pipeline``) over the session's loaded parts."""
    return build_pipeline(
        config,
        parts=PipelineParts(rulebook, terminology, evaluator),
        clock=fixed_clock(now) if now is not None else None,
    )


# -- databases ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One throwaway PostgreSQL database for the whole session, dropped at the end."""
    if reason := load.postgres_reachable(PG_ADMIN_URL):
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the PostgreSQL tests must run", pytrace=False)
        pytest.skip(f"{reason}; start it, or set CI=1 to turn this skip into a failure")
    with load.throwaway_database("postgresql", tmp_path_factory.mktemp("pg"), PG_ADMIN_URL) as url:
        yield url


def _reset_pg(url: str) -> None:
    libpq_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """An empty database of each kind, fresh for every test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    url: str = request.getfixturevalue("pg_database")
    _reset_pg(url)
    return url
