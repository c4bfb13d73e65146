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
from .policy import NO_POLICY, Policy, PolicySection, apply_section, check_policy, load_policy, normalise
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


def configured_policy(config: Config) -> Policy:
    """The site policy of ``config`` (``CDS_HOOKS_POLICY``), checked against the rules and the
    never-list; PolicyError (one line naming the rule) when it asks for what is not allowed."""
    if config.policy_file is None:
        return NO_POLICY
    policy = load_policy(config.policy_file)
    check_policy(policy, config.rules_dir, config.rule_params)
    return policy


def build_pipeline(
    config: Config,
    *,
    parts: PipelineParts | None = None,
    clock: Callable[[], datetime] | None = None,
    policy: Policy | None = None,
) -> Pipeline:
    """The service's pipeline for ``config``; ``parts`` reuses loaded rules, ``clock`` pins
    the evaluation time (default: the current time), ``policy`` replaces the configured site
    policy. A policy with tenant or issuer sections gets one pipeline per section, chosen per
    call by ``Pipeline.for_claims``."""
    policy = policy if policy is not None else configured_policy(config)
    parts = parts or load_parts(config)
    site = _section_pipeline(config, parts, policy, policy.site, clock)
    built: dict[str, Pipeline] = {_key(policy.site): site}
    by_section = {}
    for key, section in policy.sections().items():
        if key == (None, None):
            continue
        if _key(section) not in built:
            built[_key(section)] = _section_pipeline(config, parts, policy, section, clock)
        by_section[key] = built[_key(section)]
    site.by_section = by_section
    return site


def _key(section: PolicySection) -> str:
    return repr(normalise(Policy(section)))


def _section_pipeline(
    config: Config,
    parts: PipelineParts,
    policy: Policy,
    section: PolicySection,
    clock: Callable[[], datetime] | None,
) -> Pipeline:
    """A pipeline with one policy section applied: re-graded or left-out rules and new
    parameters need their own rulebook and evaluator; the terminology is shared."""
    rulebook, evaluator = parts.rulebook, parts.evaluator
    if section.rules or section.parameters:
        rulebook = apply_section(config.rules_dir, section, config.rule_params)
        evaluator = make_evaluator(rulebook.engine_rules(), parts.evaluator.name)
    return Pipeline(
        rulebook,
        parts.terminology,
        evaluator,
        destruction_codes_imply_cryo=config.destruction_codes_imply_cryo,
        card_grouping=section.card_grouping or config.card_grouping,
        public_base_url=config.public_base_url,
        clock=clock or utc_now,
        policy_revision=policy.revision,
        repeat_critical_cards=section.repeat_critical_cards is not False,
    )


def fixed_clock(when: datetime) -> Callable[[], datetime]:
    """A clock that always answers ``when`` (rule cases, fixtures, ``check --now``)."""
    return lambda: when


__all__ = ["PipelineParts", "build_pipeline", "configured_policy", "fixed_clock", "load_parts"]
