"""The one place a :class:`Pipeline` is assembled from configuration.

Why: the service, ``cryo-cds check``, rule coverage, the benchmarks and the tests used to
build it each in their own way, and one of them dropped ``destruction_codes_imply_cryo``, so
``check`` could disagree with the running service. Everything now goes through here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .config import Config
from .engine import Evaluator, make_evaluator
from .fhirtime import utc_now
from .rulebook import Rulebook, load_rulebook
from .service import Pipeline
from .terminology import Terminology


@dataclass(frozen=True)
class PipelineParts:
    """The expensive per-process parts, loaded once and shared by pipelines that differ only
    in their clock (coverage evaluates every patient as of its own date)."""

    rulebook: Rulebook
    terminology: Terminology
    evaluator: Evaluator


def load_parts(config: Config, *, evaluator: str | None = None) -> PipelineParts:
    """Rules, value sets and the evaluator named by ``evaluator`` (default: the configured one)."""
    terminology = Terminology.load(config.rules_dir / "valuesets")
    rulebook = load_rulebook(config.rules_dir, config.rule_params)
    return PipelineParts(rulebook, terminology, make_evaluator(rulebook.engine_rules(), evaluator or config.evaluator))


def build_pipeline(
    config: Config, *, parts: PipelineParts | None = None, clock: Callable[[], datetime] | None = None
) -> Pipeline:
    """The service's pipeline for ``config``; ``parts`` reuses loaded rules, ``clock`` pins
    the evaluation time (default: the current time)."""
    parts = parts or load_parts(config)
    return Pipeline(
        parts.rulebook,
        parts.terminology,
        parts.evaluator,
        destruction_codes_imply_cryo=config.destruction_codes_imply_cryo,
        card_grouping=config.card_grouping,
        public_base_url=config.public_base_url,
        clock=clock or utc_now,
    )


def fixed_clock(when: datetime) -> Callable[[], datetime]:
    """A clock that always answers ``when`` (rule cases, fixtures, ``check --now``)."""
    return lambda: when


__all__ = ["PipelineParts", "build_pipeline", "fixed_clock", "load_parts"]
