"""A decision log worth looking at: every bundled fixture and the rule cases sent as real hook
calls, then feedback on a fixed share of the cards (every third overridden with the card's
first override reason, every third accepted), and the deployment-like settings of a console
that reads it.

Why here: tests/test_console_browser.py and benchmarks/console_screenshots.py need the same
seed; tests do not load modules from benchmarks/, so the script imports this module.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from cds_hooks.config import Config
from cds_hooks.devtools.cases import case_request, load_case

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = ROOT / "fhir_fixtures" / "requests"
RULES = ROOT / "rules"
TOKEN = "console-screenshots-token-0123456789"
SITE_PARAMS = {"hb_window_days": 120}  # one site override, so the rule page shows how it is marked
SERVICE_FOR_HOOK = {"order-select": "cryotherapy-order-select", "order-sign": "cryotherapy-order-sign"}


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
