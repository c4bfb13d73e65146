"""One pipeline constructor: the service, ``cryo-cds check`` and the tests get the same
settings; ``destruction_codes_imply_cryo`` in particular is honoured everywhere."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.hooks import parse_hook_request
from cds_hooks.pipeline_factory import build_pipeline, fixed_clock, load_parts
from cds_hooks.service import SERVICES

from .conftest import ROOT, RULES_DIR
from .support.cli import cryo

RAYNAUD = ROOT / "fhir_fixtures" / "requests" / "05-raynaud-local-ln2-order-select.json"
NOW = datetime.fromisoformat("2026-11-21T12:00:00+00:00")


def cpt_only_request() -> dict[str, Any]:
    """Fixture 05 with its order coded only as CPT 17110 (destruction, method not stated)."""
    body: dict[str, Any] = json.loads(RAYNAUD.read_text())
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["code"] = {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "17110"}]}
    order.pop("note")
    return body


@pytest.mark.parametrize("imply", [False, True])
def test_the_setting_reaches_the_pipeline_of_the_app_and_of_build_pipeline(tmp_path: Path, imply: bool) -> None:
    config = Config(rules_dir=RULES_DIR, data_dir=tmp_path, destruction_codes_imply_cryo=imply, evaluator="plain")
    assert build_pipeline(config).destruction_codes_imply_cryo is imply
    app = create_app(config.with_overrides(auth_required=False))
    assert app.extensions["cryo_cds"].pipeline.destruction_codes_imply_cryo is imply
    app.extensions["cryo_cds"].store.dispose()


def test_a_cpt_destruction_code_is_cryotherapy_only_when_configured(tmp_path: Path) -> None:
    service = SERVICES["cryotherapy-order-select"]
    seen = {}
    for imply in (False, True):
        config = Config(rules_dir=RULES_DIR, data_dir=tmp_path, destruction_codes_imply_cryo=imply)
        pipeline = build_pipeline(config, parts=load_parts(config, evaluator="plain"), clock=fixed_clock(NOW))
        outcome = pipeline.run(service, parse_hook_request(cpt_only_request(), service.hook))
        seen[imply] = [c["source"]["topic"]["code"] for c in outcome.body["cards"]]
    assert seen[False] == []
    assert "CI-RAYNAUD" in seen[True]


def test_check_honours_the_setting_like_the_service(tmp_path: Path) -> None:
    home = {"cwd": tmp_path / "cwd", "data": tmp_path / "data"}
    home["cwd"].mkdir()
    (home["cwd"] / "cpt.json").write_text(json.dumps(cpt_only_request()), encoding="utf-8")
    args = ("check", "--json", "--now", NOW.isoformat(), "cpt.json")
    off = json.loads(cryo(home, *args).stdout)
    on = json.loads(cryo(home, *args, CDS_HOOKS_DESTRUCTION_CODES_IMPLY_CRYO="true").stdout)
    assert off["response"]["cards"] == []
    assert "CI-RAYNAUD" in [c["source"]["topic"]["code"] for c in on["response"]["cards"]]
