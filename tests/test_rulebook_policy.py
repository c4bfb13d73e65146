"""Clinical policy that used to live in code is rule data now, and the loader checks it:
``{param:…}`` in card text, card groups (parameters.yaml ``groups``), the instructions that
give way to a critical card (``closes_critical``), the codes offered for missing tests
(``order_codes``) and the systemic heuristic's thresholds. Each check refuses a bad file,
naming it; the bundled rules load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cds_hooks.orders import SystemicHeuristic
from cds_hooks.rulebook import RuleError, load_rulebook

from .conftest import RULES_DIR

RULE = """\
id: XX-TEST
version: 1.0.0
title: A test rule
sources: ["a test source sentence"]
severity: {local-destructive: warning}
summary: "Test"
detail: "Test detail"
variants:
  - when:
      - order: {modality: local-destructive}
"""


def rules_folder(tmp_path: Path, extra: str = "", *, rule: str = RULE, groups: object = None) -> Path:
    """A rules folder with the bundled parameters and one test rule (plus ``extra`` keys)."""
    folder = tmp_path / "rules"
    (folder / "XX-TEST").mkdir(parents=True)
    shutil.copy(RULES_DIR / "parameters.yaml", folder / "parameters.yaml")
    if groups is not None:
        data = yaml.safe_load((folder / "parameters.yaml").read_text(encoding="utf-8"))
        data["groups"] = groups
        (folder / "parameters.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    (folder / "XX-TEST" / "rule.yaml").write_text(rule + extra, encoding="utf-8")
    return folder


def refused(folder: Path, match: str) -> str:
    with pytest.raises(RuleError, match=match) as caught:
        load_rulebook(folder)
    return str(caught.value)


def test_the_bundled_policy_loads_as_data() -> None:
    rulebook = load_rulebook(RULES_DIR)
    assert rulebook.card_code(rulebook.by_id["DI-CHEMO"]) == "GRP-IMMUNE"
    assert rulebook.groups["immune"].finding == "Weakened immune system"
    assert rulebook.closing_rules() == {
        "local-destructive": ("LC-AFTERCARE", "If you proceed, aftercare"),
        "systemic": ("PR-SYS-SAFETY", "If you proceed"),
    }
    assert rulebook.suppressed_by_critical() == {"LC-AFTERCARE", "PR-SYS-SAFETY"}
    assert set(rulebook.by_id["PR-SYS-EXAM"].order_codes) == {"ECG", "blood test", "urine test"}
    assert SystemicHeuristic.from_parameters(rulebook.parameters) == SystemicHeuristic(-100, 60)


@pytest.mark.parametrize(
    "text",
    [
        'summary: "Anticoagulant in the past {param:anticoag_window_dayz} days."',
        'detail: "Keep {param:pt_spacing_hour} hours apart."',
        'finding: "Within {param:nope} days"',
    ],
)
def test_card_text_naming_an_unknown_parameter_is_refused(tmp_path: Path, text: str) -> None:
    key = text.split(":", 1)[0]
    rule = "\n".join(line for line in RULE.splitlines() if not line.startswith(f"{key}:")) + "\n"
    if key != "finding":
        rule += text + "\n"
        message = refused(rules_folder(tmp_path, rule=rule), "unknown parameter")
    else:
        message = refused(rules_folder(tmp_path, text + "\n"), "unknown parameter")
    assert message.startswith(str(tmp_path / "rules" / "XX-TEST" / "rule.yaml"))


def test_a_variant_text_naming_an_unknown_parameter_is_refused(tmp_path: Path) -> None:
    rule = RULE.replace("  - when:", "  - name: v\n    when:")
    extra = 'variant_text:\n  v: {summary: "Not within {param:peel_spacing_dayz} days."}\n'
    refused(rules_folder(tmp_path, extra, rule=rule), r"unknown parameter '\{param:peel_spacing_dayz\}'")


def test_a_known_parameter_in_card_text_loads(tmp_path: Path) -> None:
    rule = RULE.replace('summary: "Test"', 'summary: "Within {param:peel_spacing_days} days."')
    assert [r.id for r in load_rulebook(rules_folder(tmp_path, rule=rule)).rules] == ["XX-TEST"]


def test_a_rule_in_an_undeclared_group_is_refused(tmp_path: Path) -> None:
    refused(rules_folder(tmp_path, "group: imune\n"), "group 'imune' is not declared")


def test_a_malformed_group_is_refused(tmp_path: Path) -> None:
    folder = rules_folder(tmp_path, "group: immune\n", groups={"immune": {"id": "GRP-IMMUNE"}})
    refused(folder, r"group 'immune' must be \{id, finding\}")


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("closes_critical: {modality: systematic, lead: If you proceed}\n", "closes_critical modality must be"),
        ("closes_critical: {modality: systemic, lead: If you proceed}\n", "no severity"),
        ("closes_critical: {modality: local-destructive}\n", r"is \{modality, lead\}"),
        ("closes_critical: {modality: local-destructive, lead: ''}\n", "needs a lead"),
        ("closes_critical: {modality: local-destructive, lead: Aftercare}\n", "LC-AFTERCARE already closes"),
    ],
)
def test_a_bad_closes_critical_is_refused(tmp_path: Path, extra: str, match: str) -> None:
    folder = rules_folder(tmp_path, extra)
    shutil.copytree(RULES_DIR / "LC-AFTERCARE", folder / "LC-AFTERCARE", ignore=shutil.ignore_patterns("cases"))
    refused(folder, match)


MISSING = RULE.replace("  - when:", "  - values: {missing: ECG}\n    when:") + "suggestions: [order-missing-tests]\n"


@pytest.mark.parametrize(
    ("rule", "extra", "match"),
    [
        (MISSING, "", r"no order_codes for \['ECG'\]"),
        (MISSING, "order_codes:\n  blood test: {system: 'http://loinc.org', code: x, display: y}\n", "'ECG'"),
        (MISSING, "order_codes:\n  ECG: {system: loinc, code: 11524-6, display: EKG study}\n", "code system URI"),
        (MISSING, "order_codes:\n  ECG: {system: 'http://loinc.org', code: 11524-6}\n", "must be"),
        (RULE, "order_codes:\n  ECG: {system: 'http://loinc.org', code: 11524-6, display: EKG}\n", "without the"),
    ],
)
def test_bad_order_codes_are_refused(tmp_path: Path, rule: str, extra: str, match: str) -> None:
    refused(rules_folder(tmp_path, extra, rule=rule), match)


def test_a_configured_systemic_threshold_reaches_the_pipeline(terminology, plain_evaluator) -> None:
    from .conftest import make_pipeline

    rulebook = load_rulebook(RULES_DIR, {"systemic_max_temp_c": -150})
    pipeline = make_pipeline(rulebook, terminology, plain_evaluator)
    assert pipeline.systemic == SystemicHeuristic(-150, 60)
