"""Cards a clinician can act on: one card per order and severity tier (or per rule when a
site asks), the findings extension, clinician language (the detector over every rule case
and fixture), links and rule pages from a real running service, override reasons with one
meaning each, and feedback attributed to every rule of a card over HTTP."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import select

from cds_hooks import overrides
from cds_hooks.app import create_app
from cds_hooks.audit.analytics import rule_summary
from cds_hooks.audit.models import Feedback
from cds_hooks.cardcheck import card_problems, text_problems
from cds_hooks.cards import FINDINGS_EXTENSION, findings_of
from cds_hooks.cards.text import evidence_sentence, long_date, number, render
from cds_hooks.config import Config, ConfigError, from_env
from cds_hooks.devtools.cases import DEFAULT_NOW, bundle_request, case_request, load_case
from cds_hooks.devtools.conformance import validate
from cds_hooks.engine import make_evaluator
from cds_hooks.hooks import parse_hook_request
from cds_hooks.rulebook import RuleError, load_rule, load_rulebook
from cds_hooks.service import SERVICES, Pipeline

from .conftest import RULES_DIR, SHARED
from .support.loopback import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures" / "requests"
CASES = sorted(RULES_DIR.glob("*/cases/*.yaml"))
SYNTHEA = SHARED / "external/fhir-data/synthea-smart-r4"
SELECT = SERVICES["cryotherapy-order-select"]
NOW = datetime.fromisoformat(DEFAULT_NOW)
SN = "http://snomed.info/sct"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _pipeline(rulebook, terminology, evaluator, grouping: str = "order", base: str = "http://cds.test") -> Pipeline:
    return Pipeline(rulebook, terminology, evaluator, clock=lambda: NOW, card_grouping=grouping, public_base_url=base)


def _condition(code: str, display: str, onset: str = "2021-06-01") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"c-{code}",
        "code": {"coding": [{"system": SN, "code": code, "display": display}]},
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "onsetDateTime": onset,
    }


HEART = [_condition("84114007", "Heart failure"), _condition("49436004", "Atrial fibrillation")]
WARFARIN = {
    "resourceType": "MedicationRequest",
    "id": "m-warfarin",
    "status": "active",
    "intent": "order",
    "medicationCodeableConcept": {"coding": [{"system": RX, "code": "11289", "display": "warfarin"}]},
}


def _run(pipeline: Pipeline, case: dict[str, Any], hook: str = "order-select") -> list[dict[str, Any]]:
    service = SERVICES["cryotherapy-order-select" if hook == "order-select" else "cryotherapy-order-sign"]
    cards: list[dict[str, Any]] = pipeline.run(service, parse_hook_request(case_request(case, hook), hook)).body[
        "cards"
    ]
    return cards


# -- one card per order and tier ----------------------------------------------------------


def test_two_contraindications_make_one_critical_card_naming_both(rulebook, terminology, plain_evaluator) -> None:
    cards = _run(_pipeline(rulebook, terminology, plain_evaluator), {"order": "wbc", "resources": [*HEART, WARFARIN]})
    assert validate("response", {"cards": cards}) == []
    critical = [c for c in cards if c["indicator"] == "critical"]
    assert len(critical) == 1
    card = critical[0]
    assert card["summary"].startswith("Do not proceed with whole-body cryotherapy:")
    assert len(card["summary"]) < 140
    rules = {item["rule"] for item in card["extension"][FINDINGS_EXTENSION]}
    assert rules == {"CI-CV", "CI-ARR"}
    assert card["source"]["topic"]["code"] in rules
    assert "Heart failure, diagnosed 1 June 2021" in card["detail"]
    assert [s["label"] for s in card["suggestions"]] == ["Cancel the whole-body cryotherapy order"]
    assert card["suggestions"][0]["actions"][0] == {
        "type": "delete",
        "resourceId": "ServiceRequest/cryo-1",
        "description": "Cancel the draft whole-body cryotherapy order",
    }
    # warfarin is a warning: its own tier card, never on the critical one
    warning = [c for c in cards if c["indicator"] == "warning"]
    assert len(warning) == 1 and ("DI-ANTICOAG", "warning") in findings_of(warning)
    assert len(cards) <= 4


def test_each_rule_appears_at_most_once_per_order(rulebook, terminology, plain_evaluator) -> None:
    cards = _run(_pipeline(rulebook, terminology, plain_evaluator), {"order": "wbc", "resources": [*HEART, WARFARIN]})
    rules = [rule for rule, _ in findings_of(cards)]
    assert len(rules) == len(set(rules))


def test_critical_cards_end_with_what_to_do_if_the_clinician_proceeds(rulebook, terminology, plain_evaluator) -> None:
    pipeline = _pipeline(rulebook, terminology, plain_evaluator)
    systemic = _run(pipeline, {"order": "wbc", "resources": HEART})
    local = _run(pipeline, {"order": "ln2", "resources": [_condition("195295006", "Raynaud's disease")]})
    [sys_card] = [c for c in systemic if c["indicator"] == "critical"]
    [loc_card] = [c for c in local if c["indicator"] == "critical"]
    sentences = sys_card["detail"].split("<details>")[0]
    assert "If you proceed: observe blood pressure and pulse for 30 minutes" in sentences
    assert "If you proceed, aftercare:" in loc_card["detail"].split("<details>")[0]
    # the generic instruction cards themselves are suppressed under a critical card
    assert not {"PR-SYS-SAFETY", "LC-AFTERCARE"} & {r for r, _ in findings_of(systemic + local)}


def test_without_a_critical_card_the_instructions_stay_in_the_checklist(rulebook, terminology, plain_evaluator) -> None:
    cards = _run(_pipeline(rulebook, terminology, plain_evaluator), {"order": "wbc", "resources": []})
    info = [c for c in cards if c["indicator"] == "info"]
    assert len(info) == 1 and info[0]["summary"].startswith("Checklist for whole-body cryotherapy:")
    assert ("PR-SYS-SAFETY", "info") in findings_of(info)


def test_per_rule_grouping_keeps_one_card_per_rule(rulebook, terminology, plain_evaluator) -> None:
    case = {"order": "wbc", "resources": [*HEART, WARFARIN]}
    per_tier = _run(_pipeline(rulebook, terminology, plain_evaluator), case)
    per_rule = _run(_pipeline(rulebook, terminology, plain_evaluator, grouping="rule"), case)
    assert validate("response", {"cards": per_rule}) == []
    assert sorted(findings_of(per_rule)) == sorted(findings_of(per_tier))
    assert all(len(c["extension"][FINDINGS_EXTENSION]) == 1 for c in per_rule)
    assert all(c["source"]["topic"]["code"] == c["extension"][FINDINGS_EXTENSION][0]["rule"] for c in per_rule)
    assert len(per_rule) == len(findings_of(per_rule)) > len(per_tier)


def test_per_rule_grouping_keeps_the_immune_group_on_one_card(rulebook, terminology, plain_evaluator) -> None:
    hiv = _condition("86406008", "Human immunodeficiency virus infection")
    prednisone = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RX, "code": "8640", "display": "prednisone"}]},
    }
    cards = _run(
        _pipeline(rulebook, terminology, plain_evaluator, grouping="rule"),
        {"order": "wbc", "resources": [hiv, prednisone]},
    )
    immune = [c for c in cards if {i["rule"] for i in c["extension"][FINDINGS_EXTENSION]} & {"CI-IMMUNO", "DI-IMMSUP"}]
    assert len(immune) == 1
    assert {i["rule"] for i in immune[0]["extension"][FINDINGS_EXTENSION]} == {"CI-IMMUNO", "DI-IMMSUP"}


def test_card_grouping_setting(monkeypatch) -> None:
    assert from_env({"CDS_HOOKS_CARD_GROUPING": "rule"}).card_grouping == "rule"
    assert from_env({}).card_grouping == "order"
    with pytest.raises(ConfigError, match="CARD_GROUPING"):
        from_env({"CDS_HOOKS_CARD_GROUPING": "severity"})


def test_several_orders_get_their_own_cards_named_in_the_summary(rulebook, terminology, plain_evaluator) -> None:
    body = json.loads((FIXTURES / "07-heart-failure-afib-whole-body-order-sign.json").read_text())
    wbc = body["context"]["draftOrders"]["entry"][0]["resource"]
    ln2 = case_request({"order": "ln2"}, "order-sign")["context"]["draftOrders"]["entry"][0]["resource"]
    ln2 = {**ln2, "id": "cryo-ln2", "subject": wbc["subject"]}
    body["context"]["draftOrders"]["entry"].append({"resource": ln2})
    pipeline = _pipeline(rulebook, terminology, plain_evaluator)
    outcome = pipeline.run(SERVICES["cryotherapy-order-sign"], parse_hook_request(body, "order-sign"))
    cards = outcome.body["cards"]
    assert validate("response", outcome.body) == []
    assert len(outcome.decision.orders) == 2
    named = {c["summary"].split(":")[0] for c in cards}
    assert any("whole-body cryotherapy" in s for s in named) and any("liquid-nitrogen cryotherapy" in s for s in named)
    hits = {(h.rule_id, h.order_ref) for h in outcome.decision.fired}
    assert ("CI-CV", wbc["resourceType"] + "/" + wbc["id"]) in hits
    assert all(h.card_uuid in {c["uuid"] for c in cards} for h in outcome.decision.fired)


# -- clinician language -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "SEED-B: anticoagulants",
        "Catalogue §5",
        "(assumption, configurable)",
        "ATC C02/C03",
        "Condition/bdf463c4-1",
        "Ordered not recorded °C, not recorded min.",
        "{drug}, last taken",
        "long-term use, Z79.01",
        "0b1f17ec-e88b-4d74-9d3c-abd13001d1e4",
        "see CI-CV",
        "Hb None g/dL",
        "date unknown",
    ],
)
def test_the_detector_finds_what_a_clinician_must_not_read(bad: str) -> None:
    assert text_problems(bad), bad


@pytest.mark.parametrize(
    "good",
    [
        "Atrial fibrillation, diagnosed 1 June 2021.",
        "Warfarin, last taken 3 days before the session (stop date not recorded).",
        "Chamber temperature −150 °C is colder than the usual −100 to −140 °C: confirm the protocol.",
        "Haemoglobin 7.2 g/dL on 3 March 2026.",
    ],
)
def test_the_detector_passes_plain_clinical_text(good: str) -> None:
    assert text_problems(good) == []


def test_codes_and_ids_are_allowed_only_in_the_collapsed_evidence_section() -> None:
    card = {
        "summary": "Do not proceed with whole-body cryotherapy: heart failure.",
        "detail": "- **Heart failure** — diagnosed 1 June 2021.\n\n<details><summary>Evidence</summary>\n\n"
        "- Heart failure: SNOMED CT 84114007, Condition/abc\n\n</details>",
    }
    assert card_problems(card) == []
    assert card_problems({**card, "detail": card["detail"].replace("<details>", "")})


@pytest.mark.parametrize("grouping", ["order", "rule"])
def test_no_rule_case_or_fixture_card_breaks_the_language_rules(
    grouping, rulebook, terminology, plain_evaluator
) -> None:
    problems = []
    for path in CASES:
        case = load_case(path)
        now = datetime.fromisoformat(str(case.get("now", DEFAULT_NOW)))
        pipeline = Pipeline(rulebook, terminology, plain_evaluator, clock=lambda now=now: now, card_grouping=grouping)
        for card in _run(pipeline, case, case.get("hook", "order-select")):
            problems += [
                f"{path.parent.parent.name}/{path.stem}: {card['summary']!r}: {p}" for p in card_problems(card)
            ]
    pipeline = _pipeline(rulebook, terminology, plain_evaluator, grouping)
    for path in sorted(FIXTURES.glob("*.json")):
        body = json.loads(path.read_text())
        service = SERVICES["cryotherapy-order-sign" if body["hook"] == "order-sign" else "cryotherapy-order-select"]
        for card in pipeline.run(service, parse_hook_request(body, body["hook"])).body["cards"]:
            problems += [f"{path.stem}: {card['summary']!r}: {p}" for p in card_problems(card)]
    assert problems == []


def test_every_rule_text_renders_clean_with_nothing_known(rulebook) -> None:
    problems = []
    for rule in rulebook.rules:
        for template in (
            rule.summary,
            rule.detail,
            rule.finding,
            *(t for v in rule.variants for t in (v.summary, v.finding, v.detail)),
        ):
            text = render(template, {}, rulebook.parameters)
            problems += [f"{rule.id}: {template!r}: {p}" for p in text_problems(text)]
    assert problems == []


def test_unknown_values_are_left_out_and_parameters_follow_the_configuration() -> None:
    template = "Anticoagulant[ ({drug})] in the past {param:anticoag_window_days} days. Last taken {date}. Review it."
    assert render(template, {}, {"anticoag_window_days": 10}) == "Anticoagulant in the past 10 days. Review it."
    assert render(template, {"drug": "Warfarin", "date": "1 June 2021"}, {"anticoag_window_days": 14}) == (
        "Anticoagulant (Warfarin) in the past 14 days. Last taken 1 June 2021. Review it."
    )


def _render_the_long_way(template: str, ctx: dict[str, str], parameters: dict[str, Any], optional: bool) -> str:
    """``render`` as it was before templates were split into sentences once: optional parts
    filled (or dropped) by regular expression, then sentences split and filled one by one."""
    field = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?::[A-Za-z_][A-Za-z0-9_]*)?)\}")

    class Missing(KeyError):
        pass

    def fill(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("param:"):
                if parameters.get(name[6:]) is None:
                    raise Missing(name)
                return number(parameters[name[6:]])
            if name not in ctx:
                raise Missing(name)
            return ctx[name]

        return field.sub(one, text)

    def optional_part(match: re.Match[str]) -> str:
        if not optional:
            return ""
        try:
            return fill(match.group(1))
        except Missing:
            return ""

    text = re.sub(r"\[([^\[\]]*)\]", optional_part, " ".join(template.split()))
    kept = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        try:
            kept.append(fill(sentence))
        except Missing:
            continue
    return re.sub(r"\s+([,.;:])", r"\1", " ".join(kept)).strip()


def test_rendering_every_rule_text_matches_the_long_way(rulebook) -> None:
    templates = {
        t
        for rule in rulebook.rules
        for t in (
            rule.summary,
            rule.detail,
            rule.finding,
            *(x for v in rule.variants for x in (v.summary, v.finding, v.detail)),
        )
        if t
    }
    names = {name for t in templates for name in re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", t)}
    contexts = [
        {},
        {name: f"{name} value" for name in names},
        dict.fromkeys(sorted(names)[::2], "St. John's wort. Stopped {age}"),  # sentence ends and braces in values
        dict.fromkeys(sorted(names)[1::2], " spaced "),
    ]
    differ = [
        (template, ctx, optional)
        for template in sorted(templates)
        for ctx in contexts
        for optional in (True, False)
        if render(template, ctx, rulebook.parameters, optional=optional)
        != _render_the_long_way(template, ctx, dict(rulebook.parameters), optional)
    ]
    assert len(templates) > 100 and any("[" in t for t in templates)
    assert differ == []


def test_a_configured_window_changes_the_card_text(terminology) -> None:
    rulebook = load_rulebook(RULES_DIR, {"anticoag_window_days": 10})
    cards = _run(
        _pipeline(rulebook, terminology, make_evaluator(rulebook.engine_rules(), "plain")),
        {"order": "ln2", "resources": [WARFARIN]},
    )
    text = json.dumps(cards)
    assert "within 10 days" in text and "within 14 days" not in text


def test_evidence_sentences_give_the_date_in_words() -> None:
    assert long_date("2021-06-01") == "1 June 2021"
    assert long_date("garbage") is None
    assert evidence_sentence(
        {"kind": "condition", "label": "Atrial fibrillation (disorder)", "date": "2021-06-01"}
    ) == ("Atrial fibrillation, diagnosed 1 June 2021")
    stopped = {"kind": "medication", "label": "warfarin", "current": False, "days_before_treatment": 3.2}
    assert evidence_sentence(stopped) == "Warfarin, last taken 3 days before the session"
    assert evidence_sentence({**stopped, "stop_date_recorded": False}) == (
        "Warfarin, last taken 3 days before the session (stop date not recorded)"
    )
    assert evidence_sentence({"kind": "lab", "test": "hb", "value": 7.2, "date": "2026-03-03"}) == (
        "Haemoglobin 7.2 g/dL on 3 March 2026"
    )
    assert evidence_sentence({"kind": "order", "label": "x"}) is None


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared Synthea data not present")
@pytest.mark.parametrize("grouping", ["order", "rule"])
def test_real_patients_get_valid_clean_cards(grouping, rulebook, terminology, plain_evaluator) -> None:
    pipeline = _pipeline(rulebook, terminology, plain_evaluator, grouping)
    counts: dict[str, list[int]] = {"wbc": [], "ln2": []}
    problems = []
    for path in sorted(SYNTHEA.glob("*.json")):
        bundle = json.loads(path.read_text())
        for order, seen in counts.items():
            body = pipeline.run(SELECT, parse_hook_request(bundle_request(bundle, order), "order-select")).body
            assert validate("response", body) == [], path.name
            seen.append(len(body["cards"]))
            problems += [f"{path.stem} {order}: {p}" for c in body["cards"] for p in card_problems(c)]
    assert problems == []
    if grouping == "order":
        assert max(counts["wbc"]) <= 4 and sorted(counts["wbc"])[len(counts["wbc"]) // 2] <= 3
        assert sorted(counts["ln2"])[len(counts["ln2"]) // 2] <= 2


# -- links, rule pages, override reasons --------------------------------------------------


def test_links_are_absolute_and_at_most_three(rulebook, terminology, plain_evaluator) -> None:
    cards = _run(_pipeline(rulebook, terminology, plain_evaluator), {"order": "wbc", "resources": [*HEART, WARFARIN]})
    linked = [c for c in cards if c.get("links")]
    assert linked
    known = {link["url"] for r in rulebook.rules for link in r.links}
    for card in cards:
        assert len(card.get("links", [])) <= 3
        for link in card.get("links", []):
            assert link["type"] == "absolute" and link["url"].startswith(("https://", "http://"))
            assert link["url"] in known


def test_rule_links_are_the_verified_references() -> None:
    """Every link a rule offers is one of the references checked against its publisher."""
    verified = {
        "https://doi.org/10.3389/fresc.2025.1567402",
        "https://ijdvl.com/guidelines-for-cryotherapy",
        "http://www.aafp.org/afp/2004/0515/p2365.html",
        "https://fastlyheal.com/remove-spots-on-the-skin-with-liquid-nitrogen/",
        "http://www.who.int/vmnis/indicators/haemoglobin/en/",
    }
    rulebook = load_rulebook(RULES_DIR)
    assert {link["url"] for r in rulebook.rules for link in r.links} <= verified


@pytest.fixture()
def served(tmp_path: Path):
    """The service on a real loopback port (authentication off: these tests are about cards)."""
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
    )
    app = create_app(config)
    with LoopbackServer(app) as server:
        app.extensions["cryo_cds"].pipeline.cards.base_url = server.url
        yield server, app
    app.extensions["cryo_cds"].store.dispose()


def test_every_card_source_url_is_a_rule_page_the_service_serves(served) -> None:
    server, _app = served
    body = case_request({"order": "wbc", "resources": [*HEART, WARFARIN]})
    cards = requests.post(f"{server.url}/cds-services/cryotherapy-order-select", json=body, timeout=30).json()["cards"]
    assert cards
    for card in cards:
        page = requests.get(card["source"]["url"], timeout=10)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert f'<code id="rule-id">{card["source"]["topic"]["code"]}</code>' in page.text


def test_rule_pages_need_no_login_and_show_version_parameters_and_sources(tmp_path: Path) -> None:
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=True,
        rule_params={"anticoag_window_days": 10},
    )
    app = create_app(config)
    try:
        with LoopbackServer(app) as server:
            assert (
                requests.post(f"{server.url}/cds-services/cryotherapy-order-select", json={}, timeout=10).status_code
                == 401
            )
            page = requests.get(f"{server.url}/rules/DI-ANTICOAG", timeout=10)
            assert page.status_code == 200
            assert '<span id="rule-version">' in page.text and "anticoag_window_days" in page.text
            assert "<td>10</td>" in page.text and "within 10 days" in page.text
            listing = requests.get(f"{server.url}/rules", timeout=10)
            assert listing.status_code == 200 and "/rules/CI-CV" in listing.text
            lh = requests.get(f"{server.url}/rules/LC-HAIR", timeout=10).text
            assert 'href="https://fastlyheal.com/remove-spots-on-the-skin-with-liquid-nitrogen/"' in lh
            missing = requests.get(f"{server.url}/rules/NO-SUCH-RULE", timeout=10)
            assert missing.status_code == 404 and "No such rule" in missing.text
            odd = requests.get(f"{server.url}/rules/%3Cscript%3E", timeout=10)
            assert odd.status_code == 404 and "<script>" not in odd.text
    finally:
        app.extensions["cryo_cds"].store.dispose()


def test_each_override_code_means_one_thing_on_every_card(rulebook) -> None:
    displays: dict[str, set[str]] = {}
    for rule in rulebook.rules:
        for reason in rule.override_reasons:
            displays.setdefault(reason["code"], set()).add(reason["display"])
    assert {code: shown for code, shown in displays.items() if len(shown) > 1} == {}
    for code, display in overrides.SHARED.items():
        assert displays.get(code, {display}) == {display}


def test_a_rule_file_in_the_earlier_schema_still_loads(tmp_path: Path) -> None:
    folder = tmp_path / "CI-CTD"
    folder.mkdir()
    (folder / "rule.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "CI-CTD",
                "version": "1.0.0",
                "title": "Connective tissue disease",
                "sources": ["IJDVL09: collagen vascular disease"],
                "severity": {"systemic": "warning"},
                "summary": "Connective tissue disease: physician assessment first.",
                "detail": "Cold may trigger vasospasm.",
                "variants": [{"name": "ctd", "when": [{"condition": {"in_raynaud": True}}]}],
                "override_reasons": [
                    {"code": "physician-assessed", "display": "Assessed"},
                    {"code": "ctd-inactive", "display": "Disease inactive"},
                ],
            }
        )
    )
    rule = load_rule(folder / "rule.yaml", {})
    assert rule.finding == "Connective tissue disease" and rule.links == ()
    assert [r["display"] for r in rule.override_reasons] == [overrides.SHARED["physician-assessed"], "Disease inactive"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"override_reasons": ["no-such-shared-code"]}, "not in the shared list"),
        ({"links": [{"title": "x", "url": "ftp://example.org"}]}, "absolute http"),
        ({"variant_text": {"nope": {"summary": "x"}}}, "unknown variant"),
        ({"variant_text": {"ctd": {"colour": "x"}}}, "may set only"),
    ],
)
def test_the_loader_names_wrong_text_fields(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    folder = tmp_path / "CI-CTD"
    folder.mkdir()
    raw = {
        "id": "CI-CTD",
        "version": "1.0.0",
        "title": "t",
        "sources": ["s"],
        "severity": {"systemic": "warning"},
        "summary": "s",
        "detail": "d",
        "variants": [{"name": "ctd", "when": [{"condition": {"in_raynaud": True}}]}],
    }
    (folder / "rule.yaml").write_text(yaml.safe_dump({**raw, **change}))
    with pytest.raises(RuleError, match=message):
        load_rule(folder / "rule.yaml", {})


# -- feedback attributed to every rule of a card, over HTTP -------------------------------


def test_feedback_with_only_a_code_is_stored_with_its_display_for_every_rule(served) -> None:
    server, app = served
    url = f"{server.url}/cds-services/cryotherapy-order-select"
    cards = requests.post(url, json=case_request({"order": "wbc", "resources": HEART}), timeout=30).json()["cards"]
    [card] = [c for c in cards if c["indicator"] == "critical"]
    offered = {r["code"]: r["display"] for r in card["overrideReasons"]}
    assert "specialist-cleared" in offered
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-12-04T10:00:00Z",
                "overrideReason": {"reason": {"code": "specialist-cleared"}},
            }
        ]
    }
    assert requests.post(f"{url}/feedback", json=feedback, timeout=10).status_code == 200
    rows = {r["rule_id"]: r for r in rule_summary(app.extensions["cryo_cds"].store)}
    for rule in ("CI-CV", "CI-ARR"):
        assert rows[rule]["overridden"] == 1, rule
        assert rows[rule]["top_override_reasons"] == [
            {
                "code": "specialist-cleared",
                "system": overrides.SYSTEM,
                "display": offered["specialist-cleared"],
                "count": 1,
            }
        ]
    with app.extensions["cryo_cds"].store.reading() as conn:
        [row] = conn.execute(select(Feedback.rule_ids, Feedback.override_display)).all()
    assert sorted(row.rule_ids) == ["CI-ARR", "CI-CV"] and row.override_display == offered["specialist-cleared"]
