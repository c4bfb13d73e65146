"""The rule loader refuses values a fact field can never take (a typo would load and never
fire) and ordering tests on non-numbers, naming the file; the bundled rules all pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cds_hooks.rulebook import ALLOWED_VALUES, RuleError, load_rulebook

from .conftest import RULES_DIR

RULE = """\
id: XX-TEST
version: 1.0.0
title: A test rule
sources: ["a test source sentence"]
severity: {{local-destructive: warning}}
summary: "Test"
detail: "Test detail"
variants:
  - when:
      - {pattern}
"""


def write_rule(tmp_path: Path, pattern: str) -> Path:
    folder = tmp_path / "rules"
    (folder / "XX-TEST").mkdir(parents=True)
    shutil.copy(RULES_DIR / "parameters.yaml", folder / "parameters.yaml")
    (folder / "XX-TEST" / "rule.yaml").write_text(RULE.format(pattern=pattern), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("pattern", "field", "bad"),
    [
        ("procedure: {cryo: true, site_match: smae}", "procedure.site_match", "'smae'"),
        ("planned: {peel: true, site_match: {in: [same, unknwon]}}", "planned.site_match", "'unknwon'"),
        ("condition: {in_wound: true, site_match: Same}", "condition.site_match", "'Same'"),
        ("lab: {test: hgb, value: {lt: 8}}", "lab.test", "'hgb'"),
        ("exam: {test: ekg}", "exam.test", "'ekg'"),
        ("pregnancy: {polarity: positive}", "pregnancy.polarity", "'positive'"),
        ("patient: {gender: F}", "patient.gender", "'F'"),
        ("order: {modality: systematic}", "order.modality", "'systematic'"),
        ("condition: {in_cv: true, clinical_status: activ}", "condition.clinical_status", "'activ'"),
    ],
)
def test_a_value_outside_the_fields_vocabulary_is_refused_naming_the_file(
    tmp_path: Path, pattern: str, field: str, bad: str
) -> None:
    folder = write_rule(tmp_path, pattern)
    with pytest.raises(RuleError) as caught:
        load_rulebook(folder)
    message = str(caught.value)
    assert message.startswith(str(folder / "XX-TEST" / "rule.yaml"))
    assert f"{field} must be one of" in message and bad in message


def test_an_ordering_test_on_a_string_field_is_refused(tmp_path: Path) -> None:
    folder = write_rule(tmp_path, "lab: {test: {gt: hb}}")
    with pytest.raises(RuleError, match=r"'gt' compares numbers, but lab\.test is a string"):
        load_rulebook(folder)


@pytest.mark.parametrize(
    "pattern",
    [
        "procedure: {cryo: true, site_match: same}",
        "planned: {peel: true, site_match: {in: [same, unknown]}}",
        "lab: {test: hb, value: {lt: 8}}",
        "patient: {gender: female, age: {gte: 65}}",
    ],
)
def test_values_inside_the_vocabulary_load(tmp_path: Path, pattern: str) -> None:
    assert [r.id for r in load_rulebook(write_rule(tmp_path, pattern)).rules] == ["XX-TEST"]


def test_every_closed_vocabulary_is_used_by_the_facts_schema() -> None:
    from cds_hooks.factschema import STR, field_type

    for kind, field in ALLOWED_VALUES:
        assert field_type(kind, field) == STR, (kind, field)


def test_the_rules_revision_hashes_the_rule_files_not_their_cases_nor_where_they_lie(tmp_path: Path) -> None:
    """The revision stamped on every decision: the same files give the same hash wherever
    the folder lies (also under a folder named "cases"), a changed rule file changes it, and
    the rules' test cases do not."""
    shipped = load_rulebook(RULES_DIR).revision
    copy = tmp_path / "cases" / "rules"
    shutil.copytree(RULES_DIR, copy)
    assert load_rulebook(copy).revision == shipped
    case = next(copy.glob("*/cases/*"))
    case.write_text(case.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert load_rulebook(copy).revision == shipped
    rule = copy / "CI-CV" / "rule.yaml"
    rule.write_text(rule.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert load_rulebook(copy).revision != shipped
