"""Shared fixtures: the bundled rules and terminology, and a pipeline per evaluator."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from cds_hooks.engine import make_evaluator
from cds_hooks.rulebook import Rulebook, load_rulebook
from cds_hooks.service import Pipeline
from cds_hooks.terminology import Terminology

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
SHARED = ROOT.parent / "shared"


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
