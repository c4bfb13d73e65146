"""The console in a real browser (headless Chromium from Debian, as tests/test_browser.py):
log in, open every page, run a sandbox case and see its cards, compare the dashboard with
``cryo-cds audit summary --json`` for the same period, and see login and CSRF refusals.

The decision log is filled by real hook calls (``seed`` of tests/support/console_seed.py, which
the screenshot script uses too) to a second app on the same SQLite file with JWT checks off;
the console's app has them on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.hooks import parse_hook_request
from cds_hooks.service import SERVICES

from .conftest import RULES_DIR
from .support import console_seed
from .support.loopback import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = "07-heart-failure-afib-whole-body-order-sign.json"
FIXED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class Console:
    def __init__(self, tmp: Path) -> None:
        self.token = console_seed.TOKEN
        self.db = tmp / "decisions.db"
        hooks = LoopbackServer(
            create_app(
                Config(
                    rules_dir=RULES_DIR,
                    database_url=f"sqlite:///{self.db}",
                    patient_hash_key=b"s" * 32,
                    auth_required=False,
                )
            )
        )
        try:
            self.seeded = console_seed.seed(hooks.url, max_cases=24)
        finally:
            hooks.stop()
        self.app = create_app(console_seed.console_config(self.db))
        self.server = LoopbackServer(self.app)
        self.url = self.server.url


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    running = Console(tmp_path_factory.mktemp("console"))
    yield running
    running.server.stop()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1366, "height": 768})
    yield context.new_page()
    context.close()


def _log_in(page: Any, console: Console, token: str | None = None) -> None:
    page.goto(f"{console.url}/console/rules")
    assert page.url.startswith(f"{console.url}/console/login")
    page.fill("#token", token or console.token)
    page.click("button[type=submit]")


def test_login_refuses_a_wrong_token_then_every_page_opens(page: Any, console: Console) -> None:
    _log_in(page, console, "not-the-token")
    assert "not valid" in page.inner_text("#login-error")
    page.fill("#token", console.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.url}/console/rules")
    rows = page.eval_on_selector_all("#rules-table tbody tr", "rows => rows.map(r => r.dataset.rule)")
    assert set(rows) >= {rule.id for rule in console.app.extensions["cryo_cds"].pipeline.rulebook.rules}
    page.click("#rules-table th:nth-child(8)")  # fires, ascending then descending
    page.click("#rules-table th:nth-child(8)")
    fires = page.eval_on_selector_all(
        "#rules-table tbody td[data-col=fires]", "cells => cells.map(c => +c.textContent)"
    )
    assert fires == sorted(fires, reverse=True) and fires[0] > 0
    page.click("#rules-table tbody tr:first-child a")
    page.wait_for_function("document.querySelector('#trend-chart')?.dataset.drawn === '1'")
    assert page.locator("a[href^='/rules/']").count() == 1
    page.goto(f"{console.url}/console/dashboard")
    page.wait_for_function("document.querySelector('#chart-rules')?.dataset.drawn === '1'")
    page.goto(f"{console.url}/console/decisions")
    assert page.locator("#decisions-table tbody tr").count() > 0
    page.fill("#q", "NO-SUCH-RULE")
    page.wait_for_selector("text=No decisions match.")
    page.fill("#q", "")
    page.wait_for_function("document.querySelectorAll('#decisions-table tbody tr a').length > 0")
    page.click("#decisions-table tbody tr:first-child a")
    page.wait_for_selector("h1 >> text=Decision")


def test_a_sandbox_run_shows_the_pipelines_cards_and_why(page: Any, console: Console) -> None:
    _log_in(page, console)
    page.wait_for_url(f"{console.url}/console/rules")
    page.goto(f"{console.url}/console/sandbox")
    page.select_option("#source", f"fixture:{FIXTURE}")
    page.click("#run")
    page.wait_for_selector("#sandbox-output")
    shown = page.eval_on_selector_all("#cards .cds-card", "cs => cs.map(c => [c.dataset.indicator, c.dataset.rule])")
    body = json.loads((ROOT / "fhir_fixtures" / "requests" / FIXTURE).read_text())
    pipeline = console.app.extensions["cryo_cds"].pipeline
    saved, pipeline.clock = pipeline.clock, (lambda: FIXED)
    try:
        service = next(s for s in SERVICES.values() if s.hook == body["hook"])
        cards = pipeline.run(service, parse_hook_request(body, body["hook"])).body["cards"]
    finally:
        pipeline.clock = saved
    assert cards and shown == [[c["indicator"], c["source"]["topic"]["code"]] for c in cards]
    findings = page.eval_on_selector_all("#why .finding", "fs => fs.map(f => f.dataset.rule)")
    assert set(findings) >= {
        c["source"]["topic"]["code"] for c in cards if c["source"]["topic"]["code"] != "MD-INCOMPLETE"
    }
    assert page.locator("#why .miss").count() > 0


def test_the_dashboard_shows_the_numbers_of_the_audit_cli(
    page: Any, console: Console, monkeypatch: Any, capsys: Any
) -> None:
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=1), today + timedelta(days=1)
    _log_in(page, console)
    page.wait_for_url(f"{console.url}/console/rules")
    page.goto(f"{console.url}/console/dashboard?from={start}&to={end}")
    rows = page.eval_on_selector_all(
        "#summary-table tbody tr[data-rule]",
        """rows => rows.map(r => {
        const o = {rule_id: r.dataset.rule, rule_version: r.dataset.version};
        r.querySelectorAll('td[data-col]').forEach(c => { o[c.dataset.col] = +c.textContent; });
        return o; })""",
    )
    monkeypatch.setenv("CDS_HOOKS_DATABASE_URL", f"sqlite:///{console.db}")
    monkeypatch.setenv("CDS_HOOKS_PATIENT_HASH_KEY", "s" * 32)
    since = datetime.combine(start, datetime.min.time(), tzinfo=UTC).isoformat()
    until = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC).isoformat()
    from cds_hooks import cli

    capsys.readouterr()
    assert cli.main(["audit", "summary", "--since", since, "--until", until, "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    keys = ("evaluations", "fires", "cards", "accepted", "overridden", "comments")
    assert rows == [
        {"rule_id": r["rule_id"], "rule_version": r["rule_version"], **{k: r[k] for k in keys}} for r in expected
    ]
    assert sum(r["fires"] for r in rows) > 0 and sum(r["overridden"] for r in rows) > 0
    assert int(page.inner_text("[data-total=decisions]")) == console.seeded["calls"]


def test_a_form_posted_without_its_csrf_token_is_refused(page: Any, console: Console) -> None:
    _log_in(page, console)
    page.wait_for_url(f"{console.url}/console/rules")
    page.goto(f"{console.url}/console/sandbox")
    with page.expect_navigation() as navigation:
        page.evaluate("""() => { const f = document.querySelector('#sandbox-form');
                                 f.querySelector('input[name=csrf_token]').remove(); f.submit(); }""")
    assert navigation.value.status == 403
    assert "CSRF" in page.inner_text("body")


def test_a_fresh_browser_is_sent_to_login(page: Any, console: Console) -> None:
    for path in ("/console/", "/console/sandbox", "/console/dashboard", "/console/decisions"):
        page.goto(console.url + path)
        assert page.url.startswith(f"{console.url}/console/login"), path


def test_the_cli_is_called_as_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from cds_hooks import cli; raise SystemExit(cli.main(['--help']))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and "audit" in out.stdout
