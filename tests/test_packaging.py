"""The package as a new user gets it: ``python -m build`` (sdist, then the wheel built from
that sdist), the wheel installed in a fresh virtual environment without the test extras,
run from an empty directory. It must check a fixture with the same cards as the source
tree, serve the same cards over HTTP, and ``audit summary`` must read the log it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import ROOT
from .support.cli import strip_uuids
from .support.loopback import free_port, wait_until_up

FIXTURE = ROOT / "fhir_fixtures" / "requests" / "01-pregnant-whole-body-order-select.json"
NOW = "2026-11-21T12:00:00+00:00"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel built from a fresh sdist, installed in a new venv; an empty directory to run in."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("cryo_cds-*.whl")
    venv.create(work / "venv", with_pip=True)
    python = work / "venv" / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, install.stderr[-3000:]
    (work / "empty").mkdir()
    return {
        "python": python,
        "cryo": work / "venv" / "bin" / "cryo-cds",
        "cwd": work / "empty",
        "data": work / "data",
        "wheel": wheel,
    }


def env_for(installed: dict[str, Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_HOOKS_", "PYTHON"))}
    return {**env, "CDS_HOOKS_DATA_DIR": str(installed["data"])}


def test_the_wheel_carries_the_rules_and_no_test_extras(installed: dict[str, Path]) -> None:
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for rule_dir in (p for p in (ROOT / "rules").iterdir() if (p / "rule.yaml").exists()):
        assert f"cds_hooks/_bundled/rules/{rule_dir.name}/rule.yaml" in names
    assert "cds_hooks/_bundled/rules/parameters.yaml" in names
    assert any(n.startswith("cds_hooks/_bundled/rules/valuesets/vsac/") for n in names)
    listed = subprocess.run(
        [str(installed["python"]), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    installed_names = {p["name"].lower() for p in json.loads(listed)}
    assert "cryo-cds" in installed_names and "pytest" not in installed_names


def test_check_from_an_empty_directory_gives_the_source_trees_cards(installed: dict[str, Path]) -> None:
    def cards(cryo: str, cwd: Path, env: dict[str, str]) -> Any:
        result = subprocess.run(
            [cryo, "check", "--json", "--now", NOW, str(FIXTURE)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return strip_uuids(json.loads(result.stdout)["response"]["cards"])

    source = cards(str(Path(sys.executable).parent / "cryo-cds"), ROOT, env_for(installed))
    from_wheel = cards(str(installed["cryo"]), installed["cwd"], env_for(installed))
    assert from_wheel == source
    assert [c["source"]["topic"]["code"] for c in from_wheel] == ["CI-PREG"]
    assert list(installed["cwd"].iterdir()) == []  # nothing written where it was run


def test_serve_answers_and_audit_summary_reads_the_log_it_wrote(installed: dict[str, Path]) -> None:
    port = free_port()
    log = installed["cwd"].parent / "serve.log"
    env = env_for(installed)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(installed["cryo"]), "serve", "--no-auth", "--port", str(port)],
            cwd=installed["cwd"],
            env=env,
            stdout=sink,
            stderr=sink,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", process, log)
            answer = requests.post(
                f"http://127.0.0.1:{port}/cds-services/cryotherapy-order-select",
                json=json.loads(FIXTURE.read_text()),
                timeout=30,
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert answer.status_code == 200, answer.text
    assert [c["source"]["topic"]["code"] for c in answer.json()["cards"]] == ["CI-PREG"]
    assert f"data dir {installed['data']}" in log.read_text()
    summary = subprocess.run(
        [str(installed["cryo"]), "audit", "summary", "--json"],
        cwd=installed["cwd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert summary.returncode == 0, summary.stderr
    assert f"decision log sqlite:///{installed['data'] / 'decisions.db'}" in summary.stderr
    rows = {row["rule_id"]: row for row in json.loads(summary.stdout)}
    assert rows["CI-PREG"]["fires"] == 1 and rows["CI-PREG"]["evaluations"] == 1
    assert sorted(p.name for p in installed["data"].iterdir() if not p.name.startswith("decisions.db-")) == [
        "decisions.db",
        "patient-hash.key",
        "spool",  # where decisions wait if the log cannot be written
    ]
    assert list(installed["cwd"].iterdir()) == []
