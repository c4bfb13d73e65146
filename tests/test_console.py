"""The console over real HTTP on loopback: access (login, cookie, CSRF, JWT-free paths), the
sandbox giving the hook endpoint's cards without touching the decision log, clear 4xx on bad
input, CSV exports equal to the analytics, and the "why" of silent rules."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from markupsafe import escape

from cds_hooks.app import create_app
from cds_hooks.audit import analytics
from cds_hooks.config import Config, ConfigError, from_env
from cds_hooks.console.access import settings_from
from cds_hooks.console.explain import closest_miss, pattern_words
from cds_hooks.console.render import markdown
from cds_hooks.devtools.cases import bundle_request, case_request, load_case
from cds_hooks.facts import build_facts
from cds_hooks.hooks import parse_hook_request
from cds_hooks.orders import SystemicHeuristic, find_cryo_orders
from cds_hooks.record import build_record, parse_draft_orders
from cds_hooks.rulebook import load_rulebook
from cds_hooks.service import SERVICES
from cds_hooks.terminology import Terminology

from .conftest import RULES_DIR
from .support.database import decisions_held
from .support.loopback import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = ROOT / "fhir_fixtures" / "requests"
TOKEN = "console-test-token-abcdefghijklmnop"
FIXED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # the fixtures' date, noon as the sandbox uses
PAGES = [
    "/console/",
    "/console/rules",
    "/console/rules/CI-ANEMIA",
    "/console/sandbox",
    "/console/dashboard",
    "/console/decisions",
    "/console/rules?format=csv",
    "/console/dashboard/rules.csv",
]
SERVICE = {"order-select": "cryotherapy-order-select", "order-sign": "cryotherapy-order-sign"}


class Service:
    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.db = tmp_path / "decisions.db"
        settings = {
            "rules_dir": RULES_DIR,
            "database_url": f"sqlite:///{self.db}",
            "patient_hash_key": b"k" * 32,
            "auth_required": True,
            "audit_token": TOKEN,
            "evaluator": "plain",
            **config,
        }
        self.app = create_app(Config(**settings))
        self.app.extensions["cryo_cds"].pipeline.clock = lambda: FIXED
        self.server = LoopbackServer(self.app)
        self.url = self.server.url

    def decisions(self) -> int:
        return decisions_held(f"sqlite:///{self.db}")

    def login(self) -> requests.Session:
        session = requests.Session()
        page = session.get(f"{self.url}/console/login")
        answer = session.post(
            f"{self.url}/console/login", data={"token": TOKEN, "csrf_token": csrf_of(page.text)}, allow_redirects=False
        )
        assert answer.status_code == 302, answer.text
        return session


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "page has no CSRF field"
    return found.group(1)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path)
    yield running
    running.server.stop()


def test_without_a_session_every_page_redirects_to_login_and_every_action_is_401(service: Service) -> None:
    for path in PAGES:
        answer = requests.get(service.url + path, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, path
        assert answer.headers["Location"].startswith("/console/login?next=")
    for path in ("/console/sandbox", "/console/logout"):
        assert requests.post(service.url + path, data={"source": "x"}, timeout=10).status_code == 401
    assert requests.get(service.url + "/console/rules", headers={"HX-Request": "true"}, timeout=10).status_code == 401


def test_login_sets_a_signed_httponly_strict_cookie_without_the_token(service: Service) -> None:
    session = requests.Session()
    page = session.get(f"{service.url}/console/login")
    assert page.status_code == 200
    wrong = session.post(f"{service.url}/console/login", data={"token": "nope", "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    answer = session.post(
        f"{service.url}/console/login", data={"token": TOKEN, "csrf_token": csrf_of(page.text)}, allow_redirects=False
    )
    assert answer.status_code == 302
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; Secure is set when served over https
    assert TOKEN not in cookie
    for path in PAGES:
        assert session.get(service.url + path, timeout=30).status_code == 200, path


def test_login_needs_its_csrf_token_and_a_forged_cookie_is_refused(service: Service) -> None:
    session = requests.Session()
    session.get(f"{service.url}/console/login")
    assert session.post(f"{service.url}/console/login", data={"token": TOKEN}).status_code == 403
    forged = requests.Session()
    forged.cookies.set("cryo_console", "eyJuIjoieCIsImEiOnRydWV9.forged.sig", path="/console")
    assert forged.get(f"{service.url}/console/rules", allow_redirects=False).status_code == 302


def test_a_post_without_its_csrf_token_is_refused(service: Service) -> None:
    session = service.login()
    form = {"source": "fixture:05-raynaud-local-ln2-order-select.json"}
    assert session.post(f"{service.url}/console/sandbox", data=form).status_code == 403
    assert session.post(f"{service.url}/console/sandbox", data={**form, "csrf_token": "0" * 64}).status_code == 403
    token = csrf_of(session.get(f"{service.url}/console/sandbox").text)
    assert session.post(f"{service.url}/console/sandbox", data={**form, "csrf_token": token}).status_code == 200


def test_the_sandbox_gives_the_pipelines_cards_for_every_fixture_and_logs_nothing(service: Service) -> None:
    session = service.login()
    token = csrf_of(session.get(f"{service.url}/console/sandbox").text)
    pipeline = service.app.extensions["cryo_cds"].pipeline
    for fixture in sorted(REQUESTS.glob("*.json")):
        body = json.loads(fixture.read_text())
        endpoint = requests.post(
            f"{service.url}/cds-services/{SERVICE[body['hook']]}",
            json=body,
            timeout=30,
            headers={"Authorization": "Bearer x"},
        )
        assert endpoint.status_code == 401  # JWTs guard the hook endpoint, not the console
        cards = pipeline.run(SERVICES[SERVICE[body["hook"]]], parse_hook_request(body, body["hook"])).body["cards"]
        before = service.decisions()
        upload = {"upload": ("request.json", json.dumps(body), "application/json")}
        answer = session.post(
            f"{service.url}/console/sandbox",
            files=upload,
            data={"csrf_token": token, "source": "upload:", "date": "2026-11-21"},
        )
        assert answer.status_code == 200, fixture.name
        shown = re.findall(r'class="cds-card (\w+)" data-indicator="\w+" data-rule="([^"]*)"', answer.text)
        assert shown == [(c["indicator"], c["source"]["topic"]["code"]) for c in cards], fixture.name
        for card in cards:
            assert str(escape(card["summary"])) in answer.text
        assert service.decisions() == before


def test_the_sandbox_equals_the_hook_endpoint_over_http(tmp_path: Path) -> None:
    open_service = Service(tmp_path, auth_required=False)
    try:
        session = open_service.login()
        token = csrf_of(session.get(f"{open_service.url}/console/sandbox").text)
        for fixture in ("07-heart-failure-afib-whole-body-order-sign.json", "01-pregnant-whole-body-order-select.json"):
            body = json.loads((REQUESTS / fixture).read_text())
            cards = requests.post(
                f"{open_service.url}/cds-services/{SERVICE[body['hook']]}", json=body, timeout=30
            ).json()["cards"]
            before = open_service.decisions()
            page = session.post(
                f"{open_service.url}/console/sandbox", data={"csrf_token": token, "source": f"fixture:{fixture}"}
            ).text
            shown = re.findall(r'class="cds-card (\w+)" data-indicator="\w+" data-rule="([^"]*)"', page)
            assert cards and shown == [(c["indicator"], c["source"]["topic"]["code"]) for c in cards]
            assert open_service.decisions() == before
    finally:
        open_service.server.stop()


def test_order_edits_reach_the_pipeline(service: Service) -> None:
    session = service.login()
    token = csrf_of(session.get(f"{service.url}/console/sandbox").text)
    form = {
        "csrf_token": token,
        "source": "fixture:03-no-findings-whole-body-order-select.json",
        "temperature_c": "-150",
        "duration": "5",
        "sessions_per_week": "3",
        "course": "12",
    }
    page = session.post(f"{service.url}/console/sandbox", data=form).text
    order = sent_order(page)
    assert (
        order["occurrenceTiming"]["repeat"] | {"duration": 5.0, "frequency": 3, "count": 12}
        == order["occurrenceTiming"]["repeat"]
    )
    assert {"value": -150.0, "unit": "°C", "system": "http://unitsofmeasure.org", "code": "Cel"} in [
        e.get("valueQuantity") for e in order["extension"]
    ]
    swapped = session.post(
        f"{service.url}/console/sandbox", data={**form, "preset": "ln2", "body_site": "73897004"}
    ).text
    assert "Local destructive" in swapped
    assert sent_order(swapped)["bodySite"][0]["coding"][0]["code"] == "73897004"


def sent_order(page: str) -> dict[str, Any]:
    """The first draft order of the request the sandbox shows it sent."""
    found = re.search(r'<pre class="json">(.*?)</pre>', page, re.DOTALL)
    assert found
    body = json.loads(html.unescape(found.group(1)))
    return dict(body["context"]["draftOrders"]["entry"][0]["resource"])


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"source": "upload:"}, "Choose a file"),
        ({"source": "fixture:../../pyproject.toml"}, "no file"),
        ({"source": "patient:x.json"}, "No patient folder"),
        ({"source": "nothing"}, "Pick a fixture"),
        ({"source": "fixture:03-no-findings-whole-body-order-select.json", "course": "many"}, "must be a number"),
        ({"source": "fixture:03-no-findings-whole-body-order-select.json", "date": "21/11/2026"}, "YYYY-MM-DD"),
        ({"source": "fixture:03-no-findings-whole-body-order-select.json", "preset": "laser"}, "Unknown order preset"),
        ({"source": "fixture:03-no-findings-whole-body-order-select.json", "hook": "patient-view"}, "Unknown hook"),
    ],
)
def test_bad_sandbox_input_is_a_clear_400(service: Service, form: dict[str, str], message: str) -> None:
    session = service.login()
    token = csrf_of(session.get(f"{service.url}/console/sandbox").text)
    answer = session.post(f"{service.url}/console/sandbox", data={"csrf_token": token, **form})
    assert answer.status_code == 400
    assert message in answer.text


def test_bad_uploads_are_a_clear_400(service: Service) -> None:
    session = service.login()
    token = csrf_of(session.get(f"{service.url}/console/sandbox").text)
    for content, message in (
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "neither a CDS Hooks request"),
        (b'{"resourceType": "Bundle", "entry": []}', "no Patient"),
        (b'{"hook": "order-select", "context": 3}', "context"),
    ):
        answer = session.post(
            f"{service.url}/console/sandbox",
            data={"csrf_token": token, "source": "upload:"},
            files={"upload": ("x.json", content, "application/json")},
        )
        assert answer.status_code == 400, content
        assert message in answer.text, content


def test_bad_period_and_unknown_things_are_4xx_pages(service: Service) -> None:
    session = service.login()
    assert session.get(f"{service.url}/console/rules?from=yesterday").status_code == 400
    assert session.get(f"{service.url}/console/dashboard?from=2026-12-02&to=2026-12-01").status_code == 400
    assert session.get(f"{service.url}/console/dashboard?service=nope").status_code == 400
    assert session.get(f"{service.url}/console/rules/NO-SUCH-RULE").status_code == 404
    assert session.get(f"{service.url}/console/decisions/nope").status_code == 404
    assert session.get(f"{service.url}/console/dashboard/nope.csv").status_code == 404


def test_the_service_root_links_to_the_console(service: Service) -> None:
    answer = requests.get(service.url + "/", timeout=10)
    assert answer.status_code == 200 and 'href="/console/"' in answer.text


def test_the_console_is_open_without_login_on_loopback_when_auth_is_off(tmp_path: Path) -> None:
    open_service = Service(tmp_path, auth_required=False, audit_token="")
    try:
        session = requests.Session()
        for path in PAGES:
            assert session.get(open_service.url + path, timeout=30).status_code == 200, path
        token = csrf_of(session.get(f"{open_service.url}/console/sandbox").text)
        form = {"source": "fixture:05-raynaud-local-ln2-order-select.json"}
        assert session.post(f"{open_service.url}/console/sandbox", data=form).status_code == 403
        assert (
            session.post(f"{open_service.url}/console/sandbox", data={**form, "csrf_token": token}).status_code == 200
        )
    finally:
        open_service.server.stop()


def test_the_console_token_is_read_with_the_settings_and_must_be_24_characters() -> None:
    audit = "audit-token-abcdefghijklmnopq"
    config = from_env({"CDS_HOOKS_CONSOLE_TOKEN": TOKEN, "CDS_HOOKS_AUDIT_TOKEN": audit})
    assert settings_from(config, {}).token == TOKEN  # the console's own token wins
    assert settings_from(from_env({"CDS_HOOKS_CONSOLE_TOKEN": "", "CDS_HOOKS_AUDIT_TOKEN": audit}), {}).token == audit
    assert from_env({"CDS_HOOKS_CONSOLE_TOKEN": "x" * 24}).console_token == "x" * 24
    for name in ("CDS_HOOKS_CONSOLE_TOKEN", "CDS_HOOKS_AUDIT_TOKEN"):
        with pytest.raises(ConfigError, match=f"^{name} must be at least 24 characters$"):
            from_env({name: "x" * 23})


def test_without_any_token_and_with_auth_on_the_console_is_closed(tmp_path: Path) -> None:
    closed = Service(tmp_path, audit_token="")
    try:
        assert requests.get(f"{closed.url}/console/rules", timeout=10).status_code == 403
    finally:
        closed.server.stop()


def test_csv_exports_equal_the_analytics(service: Service) -> None:
    open_app = service.app.extensions["cryo_cds"]
    for fixture in sorted(REQUESTS.glob("0[1-7]*.json")):
        body = json.loads(fixture.read_text())
        outcome = open_app.pipeline.run(SERVICES[SERVICE[body["hook"]]], parse_hook_request(body, body["hook"]))
        open_app.store.record_decision(outcome.decision, outcome.evaluated_rules)
    session = service.login()
    period = "from=2026-11-01&to=2026-11-30"
    rows = session.get(f"{service.url}/console/dashboard/rules.csv?{period}").text.strip().splitlines()
    expected = analytics.rule_summary(
        open_app.store, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    )
    assert len(rows) == len(expected) + 1 and len(expected) > 10
    header = rows[0].split(",")
    for line, want in zip(rows[1:], expected, strict=True):
        got = dict(zip(header, line.split(","), strict=True))
        assert (got["rule_id"], int(got["evaluations"]), int(got["fires"])) == (
            want["rule_id"],
            want["evaluations"],
            want["fires"],
        )
    decisions = session.get(f"{service.url}/console/decisions?{period}&q=CI-PREG").text
    assert "1 decision" in decisions
    empty = session.get(f"{service.url}/console/dashboard/rules.csv?from=2026-10-01&to=2026-10-31").text
    assert empty.strip().count("\n") == 0


def test_markdown_in_cards_is_rendered_with_html_escaped() -> None:
    html = str(markdown("**Stop** <script>alert(1)</script> [x](javascript:alert(1)) [ok](https://example.org)"))
    assert "<strong>Stop</strong>" in html and "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html and 'href="https://example.org"' in html


def test_a_silent_rule_shows_the_test_that_failed_as_its_closest_miss() -> None:
    rulebook = load_rulebook(RULES_DIR)
    terminology = Terminology.load(RULES_DIR / "valuesets")
    case = load_case(RULES_DIR / "CI-ANEMIA" / "cases" / "silent-latest-hb-normal.yaml")
    body = case_request(case)
    drafts, _ = parse_draft_orders(body["context"]["draftOrders"])
    heuristic = SystemicHeuristic.from_parameters(rulebook.parameters)
    (order,) = find_cryo_orders(drafts, terminology, body["context"]["selections"], systemic=heuristic)
    now = datetime.fromisoformat(str(case.get("now", "2026-11-21T12:00:00+00:00")))
    facts = build_facts(order, build_record(body["prefetch"]), drafts, terminology, now, rulebook.parameters)
    miss = closest_miss(rulebook.by_id["CI-ANEMIA"], order.modality, facts, rulebook.parameters)
    assert miss is not None and not miss.complete
    lab = next(p for p in miss.when if p.words.startswith("lab:"))
    assert not lab.matched and lab.nearest is not None
    assert any(f.startswith("value < 8.0") for f in lab.failed)
    assert (
        pattern_words({"lab": {"value": {"lt": {"param": "hb_severe_g_dl"}}}}, {"hb_severe_g_dl": 8.0})
        == "lab: value < 8.0 (hb_severe_g_dl)"
    )


def test_a_patient_from_the_patients_folder_runs_with_a_new_order(tmp_path: Path, monkeypatch: Any) -> None:
    patients = ROOT / "fhir_fixtures" / "external"
    name = "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json"
    monkeypatch.setenv("CDS_HOOKS_CONSOLE_PATIENTS", str(patients))
    with_patients = Service(tmp_path)
    try:
        session = with_patients.login()
        page = session.get(f"{with_patients.url}/console/sandbox").text
        assert f'value="patient:{name}"' in page
        body = bundle_request(json.loads((patients / name).read_text()), "wbc", "order-select")
        pipeline = with_patients.app.extensions["cryo_cds"].pipeline
        cards = pipeline.run(SERVICES["cryotherapy-order-select"], parse_hook_request(body, "order-select")).body[
            "cards"
        ]
        answer = session.post(
            f"{with_patients.url}/console/sandbox",
            data={
                "csrf_token": csrf_of(page),
                "source": f"patient:{name}",
                "preset": "wbc",
                "hook": "order-select",
                "date": "2026-11-21",
            },
        )
        assert answer.status_code == 200
        shown = re.findall(r'class="cds-card (\w+)" data-indicator="\w+" data-rule="([^"]*)"', answer.text)
        assert cards and shown == [(c["indicator"], c["source"]["topic"]["code"]) for c in cards]
    finally:
        with_patients.server.stop()
