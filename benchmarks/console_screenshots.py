"""Screenshots of every console page at 1366x768, after a small load run, so anyone can look.

Starts the service twice on loopback over one fresh SQLite file: once without authentication
to take hook calls (every bundled fixture and every rule case, then feedback on a fixed share
of the cards: every third overridden with the card's first override reason, every third
accepted), and once as a deployment would run it, with JWT checks on and a console token,
whose console is then logged into and photographed in headless Chromium (Debian's
``/usr/bin/chromium``; no browser download). Run:

    .venv/bin/python benchmarks/console_screenshots.py DIR [--cases N]

It prints the files it wrote. ``seed`` is shared with tests/test_console_browser.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.cases import case_request, load_case

REQUESTS = ROOT / "fhir_fixtures" / "requests"
RULES = ROOT / "rules"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "console-screenshots-token-0123456789"
SITE_PARAMS = {"hb_window_days": 120}  # one site override, so the rule page shows how it is marked
PATIENTS = ROOT / "fhir_fixtures" / "external"  # real Synthea patients (sources in its README)
COMPLEX_PATIENT = "Jerrell_Gerlach_20f72f10-7dfd-4dc6-abb6-2160e0a548eb.json"
SERVICE_FOR_HOOK = {"order-select": "cryotherapy-order-select", "order-sign": "cryotherapy-order-sign"}


@contextmanager
def serve(app: Callable[..., Any]) -> Iterator[str]:
    """The WSGI app on a free 127.0.0.1 port, in a thread, for the duration of the block."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def seed_requests(max_cases: int | None = None) -> list[dict[str, Any]]:
    """The bundled fixtures, then the rule cases (in file order, at most ``max_cases``)."""
    bodies = [json.loads(path.read_text()) for path in sorted(REQUESTS.glob("*.json"))]
    cases = sorted(RULES.glob("*/cases/*.yaml"))[:max_cases]
    for index, path in enumerate(cases):
        bodies.append(case_request(load_case(path), "order-sign" if index % 4 == 3 else "order-select"))
    return bodies


def seed(base_url: str, max_cases: int | None = None) -> dict[str, int]:
    """Send the seed requests and feedback; returns how many calls, cards and feedback items."""
    counts = {"calls": 0, "cards": 0, "overridden": 0, "accepted": 0}
    session = requests.Session()
    for body in seed_requests(max_cases):
        service = SERVICE_FOR_HOOK[body["hook"]]
        answer = session.post(f"{base_url}/cds-services/{service}", json=body, timeout=30)
        counts["calls"] += 1
        if answer.status_code != 200:
            continue
        feedback = []
        for card in answer.json()["cards"]:
            counts["cards"] += 1
            stamp = datetime.now(UTC).isoformat()
            if counts["cards"] % 3 == 0 and card.get("overrideReasons"):
                reason = card["overrideReasons"][0]
                feedback.append(
                    {
                        "card": card["uuid"],
                        "outcome": "overridden",
                        "outcomeTimestamp": stamp,
                        "overrideReason": {"reason": reason},
                    }
                )
                counts["overridden"] += 1
            elif counts["cards"] % 3 == 1 and card.get("suggestions"):
                feedback.append(
                    {
                        "card": card["uuid"],
                        "outcome": "accepted",
                        "outcomeTimestamp": stamp,
                        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                    }
                )
                counts["accepted"] += 1
        if feedback:
            session.post(
                f"{base_url}/cds-services/{service}/feedback", json={"feedback": feedback}, timeout=30
            ).raise_for_status()
    return counts


def console_config(db: Path, *, token: str = TOKEN) -> Config:
    """A deployment-like service: JWT checks on (no issuers needed here), console token set."""
    return Config(
        rules_dir=RULES,
        database_url=f"sqlite:///{db}",
        patient_hash_key=b"s" * 32,
        auth_required=True,
        audit_token=token,
        rule_params=SITE_PARAMS,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--cases", type=int, default=None, help="seed only the first N rule cases")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"Chromium not found at {CHROMIUM} (Debian package 'chromium')", file=sys.stderr)
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
        with serve(hooks_app) as hooks_url:
            counts = seed(hooks_url, args.cases)
        print(f"seeded: {counts}")
        os.environ.setdefault("CDS_HOOKS_CONSOLE_PATIENTS", str(PATIENTS))
        with serve(create_app(console_config(db))) as url, sync_playwright() as playwright:
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
