"""Screenshots of every console page at 1366x768, after a small load run, so anyone can look.

Starts the service twice on loopback over one fresh SQLite file: once without authentication
to take hook calls (every bundled fixture and every rule case, then feedback on a fixed share
of the cards: every third overridden with the card's first override reason, every third
accepted), and once as a deployment would run it, with JWT checks on and a console token,
whose console is then logged into and photographed in headless Chromium (Debian's
``/usr/bin/chromium``; no browser download). Run:

    .venv/bin/python benchmarks/console_screenshots.py DIR [--cases N]

It prints the files it wrote. The seed and the console settings come from
tests/support/console_seed.py, shared with tests/test_console_browser.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not this folder: its http.py would shadow the standard library's

from cds_hooks.app import create_app
from cds_hooks.config import Config
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, chromium_missing
from tests.support.console_seed import RULES, SITE_PARAMS, TOKEN, console_config, seed
from tests.support.loopback import LoopbackServer

PATIENTS = ROOT / "fhir_fixtures" / "external"  # real Synthea patients (sources in its README)
COMPLEX_PATIENT = "Jerrell_Gerlach_20f72f10-7dfd-4dc6-abb6-2160e0a548eb.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--cases", type=int, default=None, help="seed only the first N rule cases")
    args = parser.parse_args(argv)
    if (missing := chromium_missing()) is not None:
        print(missing, file=sys.stderr)
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "decisions.db"
        hooks_app = create_app(
            Config(
                rules_dir=RULES,
                database_url=f"sqlite:///{db}",
                patient_hash_key=b"s" * 32,
                auth_required=False,
                rule_params=SITE_PARAMS,
            )
        )
        with LoopbackServer(hooks_app) as hooks:
            counts = seed(hooks.url, args.cases)
        print(f"seeded: {counts}")
        os.environ.setdefault("CDS_HOOKS_CONSOLE_PATIENTS", str(PATIENTS))
        with LoopbackServer(create_app(console_config(db))) as console, sync_playwright() as playwright:
            url = console.url
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            written = []

            def shot(name: str) -> None:
                path = args.dir / f"{name}.png"
                page.screenshot(path=str(path))
                written.append(path)

            page.goto(f"{url}/console/")
            shot("01-login")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/console/")
            shot("02-home")
            page.goto(f"{url}/console/rules")
            page.click("#rules-table th:nth-child(7)")  # sort by evaluations
            page.click("#rules-table th:nth-child(8)")  # then by fires (ascending)
            page.click("#rules-table th:nth-child(8)")  # descending
            shot("03-rules")
            page.goto(f"{url}/console/rules/CI-ANEMIA")
            page.wait_for_function("document.querySelector('#trend-chart').dataset.drawn === '1'")
            shot("04-rule")
            page.goto(f"{url}/console/sandbox")
            page.select_option("#source", f"patient:{COMPLEX_PATIENT}")
            page.select_option("#preset", "wbc")
            page.fill("#date", "2026-11-21")
            page.click("#run")
            page.wait_for_selector("#sandbox-output")
            page.evaluate("window.scrollTo(0, 0)")
            shot("05-sandbox")
            page.evaluate("window.scrollTo(0, document.querySelector('#why').offsetTop + 500)")
            shot("05b-sandbox-why")
            page.goto(f"{url}/console/dashboard")
            page.wait_for_function("document.querySelector('#chart-rules').dataset.drawn === '1'")
            shot("06-dashboard")
            page.evaluate("window.scrollTo(0, document.querySelector('#summary-table').offsetTop - 80)")
            shot("07-dashboard-tables")
            page.goto(f"{url}/console/decisions?q=CI-ANEMIA")
            shot("08-decisions")
            page.click("#decisions-table tbody tr:first-child a")
            page.wait_for_selector(".finding")
            shot("09-decision")
            browser.close()
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
