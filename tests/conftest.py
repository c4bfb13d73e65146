"""Shared fixtures: the bundled rules and terminology, a pipeline per evaluator, and an empty
database of each kind (a SQLite file, a throwaway PostgreSQL database).

PostgreSQL tests skip (with the reason) when 127.0.0.1:5432 is unreachable on a developer
machine, and fail when the CI environment variable is set, so CI cannot go green without them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from cds_hooks.cards import finding_codes, group_codes
from cds_hooks.engine import make_evaluator
from cds_hooks.rulebook import Rulebook, load_rulebook
from cds_hooks.service import Pipeline
from cds_hooks.terminology import Terminology

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
SHARED = ROOT.parent / "shared"
PG_ADMIN_URL = os.environ.get("CRYO_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


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
def durable_evaluator(rulebook: Rulebook):
    return make_evaluator(rulebook.engine_rules(), "durable")


@pytest.fixture(scope="session")
def plain_evaluator(rulebook: Rulebook):
    return make_evaluator(rulebook.engine_rules(), "plain")


def make_pipeline(rulebook: Rulebook, terminology: Terminology, evaluator, now: datetime | None = None) -> Pipeline:
    if now is None:
        return Pipeline(rulebook, terminology, evaluator)
    return Pipeline(rulebook, terminology, evaluator, clock=lambda: now)


# -- databases ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One throwaway PostgreSQL database for the whole session, dropped at the end."""
    load = load_benchmark()
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


def load_benchmark(name: str = "load") -> ModuleType:
    """A script of benchmarks/ as a module (it is not a package): its gunicorn and database
    helpers and its checks are shared with the tests that run them at CI scale."""
    module_name = f"cryo_cds_benchmarks_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve their module while the class is built
    spec.loader.exec_module(module)
    return module
