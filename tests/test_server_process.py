"""A real server process: its first request is a patient for whom no rule fires (the
durable-rules segfault of design note §6.1), then thousands of requests follow, and
every one of them leaves exactly one decision record."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import requests

from cds_hooks.devtools.cases import case_request

from .support.database import decisions_held
from .support.loopback import free_port, wait_until_up

REQUESTS_AFTER_FIRST = 3000
NO_ALERT_CASE = {
    "order": "cold-pack",
    "resources": [
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "effectiveDateTime": "2026-11-01",
            "valueQuantity": {"value": 64, "unit": "/min", "code": "/min"},
        }
    ],
}
ALERT_CASE = {
    "order": "ln2",
    "resources": [
        {"resourceType": "Condition", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "266261006"}]}}
    ],
}


def test_fresh_server_survives_a_no_alert_first_request_and_thousands_after(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "decisions.db"
    env = {**os.environ, "CDS_HOOKS_DATABASE_URL": f"sqlite:///{db}", "CDS_HOOKS_PATIENT_HASH_KEY": "k" * 32}
    log = (tmp_path / "server.log").open("wb")  # a file, not a pipe: a full pipe would block the server
    server = subprocess.Popen(
        [sys.executable, "-m", "cds_hooks.cli", "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", server)
        session = requests.Session()
        first = session.post(
            f"{base}/cds-services/cryotherapy-order-select", json=case_request(NO_ALERT_CASE), timeout=30
        )
        assert first.status_code == 200
        assert first.json() == {"cards": []}
        no_alert, alert = case_request(NO_ALERT_CASE), case_request(ALERT_CASE)
        for i in range(REQUESTS_AFTER_FIRST):
            body = copy.deepcopy(alert if i % 3 == 0 else no_alert)
            body["hookInstance"] = f"00000000-0000-4000-8000-{i:012d}"
            response = session.post(f"{base}/cds-services/cryotherapy-order-select", json=body, timeout=30)
            assert response.status_code == 200, response.text
            assert bool(response.json()["cards"]) == (i % 3 == 0)
        assert server.poll() is None, "the server died"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert server.returncode in (0, -15), (tmp_path / "server.log").read_text(errors="replace")[-2000:]
    assert decisions_held(f"sqlite:///{db}") == REQUESTS_AFTER_FIRST + 1
