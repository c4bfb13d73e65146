"""Every example resource of ../shared/external/fhir-data goes through the reader
(tools/read_external.py): each is read, read leniently or skipped with a reason, and the
count of what was accounted for equals the count of what the files hold (none vanish)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import ROOT, SHARED

FHIR_DATA = SHARED / "external" / "fhir-data"
pytestmark = pytest.mark.skipif(not FHIR_DATA.is_dir(), reason=f"{FHIR_DATA} is absent")


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("read_external", ROOT / "tools" / "read_external.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["read_external"] = module
    spec.loader.exec_module(module)
    return module


def _count(doc: Any) -> int:
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle" and doc.get("entry"):
        return sum(_count(e["resource"]) if isinstance(e, dict) and "resource" in e else 1 for e in doc["entry"])
    return 1


def _items_in_files(folder: Path) -> int:
    """What the files hold, counted without the reader: resources (in Bundles, nested too), lines."""
    total = 0
    for path in folder.rglob("*"):
        if path.suffix == ".ndjson":
            total += sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        elif path.suffix == ".json":
            total += _count(json.loads(path.read_text(encoding="utf-8")))
    return total


@pytest.fixture(scope="module")
def result():
    return _tool().survey([FHIR_DATA])


def test_every_example_resource_is_accounted_for(result, capsys) -> None:
    report = _tool().report(result, details=True)
    with capsys.disabled():
        print("\n" + report)
    assert len(result.items) == _items_in_files(FHIR_DATA)
    counts = result.counts()
    assert set(counts) <= {"read", "lenient", "skipped", "not a resource"}
    assert counts["read"] > 15000
    for item in result.items:
        if item.outcome != "read":
            assert item.why, item
        if item.outcome == "not a resource":  # the manifest, a bulk-export log, DELETE entries
            assert (
                "MANIFEST" in item.where
                or "log.ndjson" in item.where
                or "DELETE" in item.why
                or "empty Bundle" in item.why
            ), item


def test_synthea_us_core_and_ips_are_read_strictly(result) -> None:
    for item in result.items:
        if item.where.split("/", 1)[0].startswith(("synthea", "us-core", "ips")) and item.ref != "-":
            assert item.outcome == "read", item


def test_the_vendor_defects_are_read_leniently(result) -> None:
    lenient = {
        (item.where.split("#")[0].rsplit("/", 1)[-1], item.ref): item.why
        for item in result.items
        if item.outcome == "lenient"
    }
    assert "stray spaces" in lenient[("R4_OBSERVATION_ENTERED_IN_ERROR_STATUS.json", "Observation/L-197412603")]
    assert "recordedDate" in lenient[("R4_PATIENT_CONDITION_ENTRY.json", "Condition/p73875571")]
    assert ("R4_PATIENT_CONDITION_BUNDLE.json", "Condition/p73875571") in lenient  # a Condition straight in entry[]


def test_the_cli_prints_the_table_and_refuses_a_missing_folder(capsys, tmp_path) -> None:
    tool = _tool()
    (tmp_path / "one.json").write_text(
        json.dumps(
            {
                "resourceType": "Observation",
                "id": "x",
                "status": "final",
                "code": {"text": "t"},
                "effectiveDateTime": "2024-01-01T10:00",
            }
        )
    )
    assert tool.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| **all 1** | 0 | 1 | 0 | 0 |" in out and "no time-zone offset" in out
    assert tool.main([str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
