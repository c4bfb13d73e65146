"""Under gunicorn (2 workers, multiprocess metrics, the shipped gunicorn settings): metrics add
up across workers, and the access log holds no query-string token and no forged line."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from .support import load as load_harness
from .support.loopback import free_port

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
AUDIT_TOKEN = "gunicorn-audit-token-0123456789"
CALLS = 8
# Every family issue 12 lists: calls by service/hook/status, step latency, cards by rule and
# severity, audit write failures, spool depth, FHIR fetches by outcome.
FAMILIES = {
    "cryo_cds_calls",
    "cryo_cds_step_seconds",
    "cryo_cds_cards",
    "cryo_cds_audit_write_failures",
    "cryo_cds_audit_spool_depth",
    "cryo_cds_fhir_fetches",
}


def test_metrics_add_up_across_workers_and_the_access_log_stays_clean(tmp_path: Path) -> None:
    load = load_harness
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "CDS_HOOKS_AUDIT_TOKEN": AUDIT_TOKEN,
        "CDS_HOOKS_SPOOL_DIR": str(tmp_path / "spool"),
    }
    body = json.loads((FIXTURES / "02-pacemaker-whole-body-order-sign.json").read_text())
    with load.gunicorn(
        f"sqlite:///{tmp_path / 'd.db'}",
        2,
        2,
        tmp_path,
        env_extra=env,
        args_extra=("-c", "python:cds_hooks.gunicorn_conf", "--access-logfile", "-"),
    ) as server:
        for _ in range(CALLS):
            with requests.Session() as session:  # a new connection each time: both workers serve
                response = session.post(server.base + "/cds-services/cryotherapy-order-sign", json=body, timeout=30)
                assert response.status_code == 200
        unreachable = dict(body, fhirServer=f"http://127.0.0.1:{free_port()}")  # nothing listens there
        del unreachable["prefetch"]
        fetch = requests.post(server.base + "/cds-services/cryotherapy-order-sign", json=unreachable, timeout=30)
        assert fetch.status_code == 412
        refused = requests.get(server.base + "/cds-services?access_token=SECRET-IN-URL", timeout=10)
        assert refused.status_code == 400
        requests.get(server.base + "/x%0AFORGED-LINE", timeout=10)
        scraped = requests.get(server.base + "/metrics", headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}, timeout=10)
        log_text = server.log_text()
    assert scraped.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(scraped.text)}
    assert set(families) >= FAMILIES, FAMILIES - set(families)
    assert any(s.labels.get("outcome") == "unreachable" for s in families["cryo_cds_fhir_fetches"].samples)
    total = sum(
        sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
        if sample.name == "cryo_cds_calls_total" and sample.labels.get("status") == "200"
    )
    assert total == CALLS
    assert "SECRET-IN-URL" not in log_text
    assert not any(line.startswith("FORGED-LINE") for line in log_text.splitlines())
    assert "/x%0AFORGED-LINE" in log_text  # logged, but as the escaped request path
