"""Site policy: what a policy may change, the never-list it may not touch, the revision it
stamps on decisions, per-tenant sections, and ``cryo-cds policy check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from cds_hooks.audit.models import Decision
from cds_hooks.audit.store import AuditStore
from cds_hooks.devtools.cases import case_request
from cds_hooks.hooks import parse_hook_request
from cds_hooks.pipeline_factory import PipelineParts, build_pipeline, configured_policy
from cds_hooks.policy import NO_POLICY, PolicyError, check_policy, load_never_list, parse_policy
from cds_hooks.service import SERVICES

from .conftest import RULES_DIR, SHARED, TEST_CONFIG, card_findings
from .support.cli import assert_one_line_error, cryo
from .support.load import RAYNAUD
from .support.loopback import free_port
from .test_catalogue import CATALOGUE_IDS

SELECT = SERVICES["cryotherapy-order-select"]
# Whole-body order, Raynaud's: CI-RAYNAUD critical, PR-SYS-EXAM warning, CI-ICE-TEST info.
CASE = {"order": "wbc", "resources": [RAYNAUD]}


def _cards(pipeline: Any) -> list[dict[str, Any]]:
    return list(pipeline.run(SELECT, parse_hook_request(case_request(CASE), "order-select")).body["cards"])


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@pytest.fixture()
def home(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "cwd").mkdir()
    return {"cwd": tmp_path / "cwd", "data": tmp_path / "data"}


# -- the never-list ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "needle"),
    [
        (
            "rules: {CI-RAYNAUD: {severity: {local-cold: warning}}}",
            "CI-RAYNAUD is on the never-list and cannot be demoted",
        ),
        ("rules: {CI-PREG: {enabled: false}}", "CI-PREG is on the never-list and cannot be turned off"),
        ("rules: {CI-CV: {severity: {systemic: warning}}}", "CI-CV is on the never-list and cannot be demoted"),
        ("rules: {CI-DEVICE-CARDIAC: false}", "CI-DEVICE-CARDIAC is on the never-list"),
        (
            "tenants: {north: {rules: {CI-RAYNAUD: {severity: {systemic: info}}}}}",
            "tenant 'north': rule CI-RAYNAUD is on the never-list",
        ),
    ],
)
def test_a_policy_that_turns_off_or_demotes_a_never_list_rule_is_refused(policy: str, needle: str) -> None:
    with pytest.raises(PolicyError, match=needle):
        check_policy(parse_policy(yaml.safe_load(policy), "p.yaml"), RULES_DIR)


def test_never_list_protects_only_the_modalities_it_names() -> None:
    # CI-PREG is protected on whole-body orders; its local warning may be demoted.
    check_policy(parse_policy({"rules": {"CI-PREG": {"severity": {"local-destructive": "info"}}}}), RULES_DIR)
    # Promotion of a never-list rule is allowed.
    check_policy(parse_policy({"rules": {"CI-DEVICE-CARDIAC": {"severity": {"local-cold": "warning"}}}}), RULES_DIR)


def test_never_list_cites_the_catalogue_for_every_rule_and_names_real_rules() -> None:
    never = load_never_list(RULES_DIR)
    assert {"CI-PREG", "CI-CV", "CI-DEVICE-CARDIAC", "CI-RAYNAUD"} <= set(never)
    assert never["CI-PREG"].modalities == ("systemic",) and never["CI-CV"].modalities == ("systemic",)
    shared = SHARED / "spec" / "clinical-rules.md"
    # Without ../shared beside the repo, the catalogue's ids as copied (and checked against it
    # in CI) by test_catalogue.
    catalogue = shared.read_text() if shared.exists() else "".join(f"| {rule_id} |" for rule_id in CATALOGUE_IDS)
    for entry in never.values():
        assert (RULES_DIR / entry.rule_id / "rule.yaml").is_file()
        assert entry.source.startswith("catalogue §4") and f"| {entry.rule_id} |" in catalogue


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"rules": {"CI-NOPE": False}}, "unknown rule CI-NOPE"),
        ({"parameters": {"no_such_window": 3}}, "unknown parameter 'no_such_window'"),
        ({"parameters": {"anticoag_window_days": "ten"}}, "must be a number"),
        ({"parameters": {"anticoag_window_days": 7.5}}, "must be a whole number"),
        ({"parameters": {"anticoag_window_days": -1}}, "must not be negative"),
        ({"rules": {"CI-CV": {"severity": {"local-cold": "warning"}}}}, "never fires on local-cold orders"),
    ],
)
def test_unknown_rules_parameters_and_wrong_values_are_refused(raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(PolicyError, match=needle):
        check_policy(parse_policy(raw), RULES_DIR)


@pytest.mark.parametrize(
    "raw",
    [
        {"rulez": {}},
        {"card_grouping": "patient"},
        {"rules": {"CI-HTN": {"severity": {"systemic": "urgent"}}}},
        {"repeat_critical_cards": "no"},
    ],
)
def test_malformed_policies_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        parse_policy(raw)


# -- what a policy changes ----------------------------------------------------------------------


def test_turning_off_a_rule_removes_its_cards_and_regrading_changes_the_indicator(tmp_path: Path) -> None:
    before = card_findings(_cards(build_pipeline(TEST_CONFIG)))
    assert {("PR-SYS-EXAM", "warning"), ("CI-ICE-TEST", "info")} <= before
    policy_file = _write(
        tmp_path, "rules:\n  PR-SYS-EXAM: {enabled: false}\n  CI-ICE-TEST: {severity: {systemic: warning}}\n"
    )
    pipeline = build_pipeline(TEST_CONFIG.with_overrides(policy_file=policy_file))
    after = card_findings(_cards(pipeline))
    assert "PR-SYS-EXAM" not in {rule for rule, _ in after}
    assert ("CI-ICE-TEST", "warning") in after and ("CI-RAYNAUD", "critical") in after
    assert "PR-SYS-EXAM" not in {r.id for r in pipeline.rulebook.rules}  # not counted as evaluated


def test_the_decision_record_carries_the_policy_revision(tmp_path: Path) -> None:
    policy_file = _write(tmp_path, "rules: {PR-SYS-EXAM: false}\n")
    config = TEST_CONFIG.with_overrides(policy_file=policy_file)
    policy = configured_policy(config)
    outcome = build_pipeline(config).run(SELECT, parse_hook_request(case_request(CASE), "order-select"))
    assert outcome.decision.policy_revision == policy.revision != NO_POLICY.revision
    store = AuditStore(f"sqlite:///{tmp_path / 'd.db'}", b"k" * 32)
    try:
        store.migrate()
        store.record_decision(outcome.decision, outcome.evaluated_rules)
        with store.reading() as conn:
            row = conn.execute(select(Decision.policy_revision, Decision.facts, Decision.rules_revision)).one()
        assert store.purge_older_than(0) == 1  # the facts go with their decision
        with store.reading() as conn:
            assert conn.execute(select(Decision.facts)).first() is None
    finally:
        store.dispose()
    assert row.policy_revision == policy.revision and row.rules_revision == outcome.decision.rules_revision
    # The stored facts: codes and values, no references, labels or dates.
    stored = [fact for order in row.facts["orders"] for fact in order["facts"]]
    assert any(f["kind"] == "condition" and f.get("in_raynaud") for f in stored)
    assert not any(key in fact for fact in stored for key in ("ref", "label", "date", "value_text", "site", "id"))


def test_revision_is_the_hash_of_the_normalised_policy() -> None:
    one = parse_policy({"rules": {"CI-HTN": {"severity": {"systemic": "warning"}}, "CI-ELDERLY": False}})
    two = parse_policy({"rules": {"CI-ELDERLY": {"enabled": False}, "CI-HTN": {"severity": {"systemic": "warning"}}}})
    other = parse_policy({"rules": {"CI-ELDERLY": {"enabled": False}}})
    assert one.revision == two.revision != other.revision


def test_tenant_and_issuer_sections_choose_their_own_pipeline(tmp_path: Path, rulebook: Any, terminology: Any) -> None:
    policy_file = _write(
        tmp_path,
        "tenants:\n  north: {card_grouping: rule, rules: {PR-SYS-EXAM: false}}\n"
        "issuers:\n  https://ehr.south.example: {rules: {CI-ICE-TEST: false}}\n",
    )
    site = build_pipeline(
        TEST_CONFIG.with_overrides(policy_file=policy_file),
        parts=PipelineParts(rulebook, terminology, build_pipeline(TEST_CONFIG).evaluator),
    )
    assert site.for_claims(None) is site and site.for_claims({"tenant": "elsewhere"}) is site
    north = site.for_claims({"tenant": "north", "iss": "https://ehr.other.example"})
    assert north.cards.grouping == "rule" and "PR-SYS-EXAM" not in north.rulebook.by_id
    south = site.for_claims({"iss": "https://ehr.south.example"})
    assert "CI-ICE-TEST" not in {rule for rule, _ in card_findings(_cards(south))}
    both = site.for_claims({"tenant": "north", "iss": "https://ehr.south.example"})
    assert not {"CI-ICE-TEST", "PR-SYS-EXAM"} & set(both.rulebook.by_id)
    assert len({site.policy_revision, north.policy_revision, south.policy_revision}) == 1


# -- the command line and start-up --------------------------------------------------------------


def test_policy_check_prints_one_line_per_change(home: dict[str, Path], tmp_path: Path) -> None:
    policy_file = _write(
        tmp_path,
        "rules:\n  CI-ELDERLY: {enabled: false}\n  CI-ICE-TEST: {severity: {systemic: warning}}\n"
        "parameters: {anticoag_window_days: 10}\ncard_grouping: rule\n",
    )
    result = cryo(home, "policy", "check", str(policy_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "CI-ELDERLY: turned off (no cards; not evaluated)",
        "CI-ICE-TEST on systemic orders: re-graded info/warning/critical -> warning",
        "parameter anticoag_window_days: 14 -> 10",
        "card grouping: rule",
    ]
    assert "valid; policy revision" in result.stderr


def test_policy_check_refuses_an_invalid_policy_in_one_line(home: dict[str, Path], tmp_path: Path) -> None:
    policy_file = _write(tmp_path, "rules: {CI-RAYNAUD: {enabled: false}}\n")
    assert_one_line_error(cryo(home, "policy", "check", str(policy_file)), "CI-RAYNAUD", "never-list")
    assert_one_line_error(cryo(home, "policy", "check", str(tmp_path / "missing.yaml")), "no such file")
    (tmp_path / "broken.yaml").write_text("rules: [\n")
    assert_one_line_error(cryo(home, "policy", "check", str(tmp_path / "broken.yaml")), "not valid YAML")


def test_start_up_refuses_a_policy_that_demotes_a_never_list_rule(home: dict[str, Path], tmp_path: Path) -> None:
    policy_file = _write(tmp_path, "rules: {CI-CV: {severity: {systemic: info}}}\n")
    result = cryo(home, "serve", "--no-auth", "--port", str(free_port()), CDS_HOOKS_POLICY=str(policy_file))
    assert_one_line_error(result, "CI-CV", "never-list", "cannot be demoted")
