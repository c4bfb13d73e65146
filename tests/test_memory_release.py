"""After a call with a large body the app drops the plain reader's text memo and hands freed heap
pages back (malloc_trim), and only then; the worker's growth is checked after that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from cds_hooks import plainread
from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.web import memory
from cds_hooks.web.worker_memory import WorkerReplacement

ROOT = Path(__file__).resolve().parents[1]


def _app(tmp_path: Path) -> Flask:
    return create_app(
        Config(
            rules_dir=ROOT / "rules",
            database_url=f"sqlite:///{tmp_path / 'd.db'}",
            auth_required=False,
            patient_hash_key=b"memory-release-test-key-0123456789",
        )
    )


def test_glibc_malloc_trim_is_found_on_this_machine() -> None:
    assert memory._malloc_trim() is not None


def test_trim_runs_after_large_bodies_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    app = _app(tmp_path)
    client = app.test_client()
    small = json.dumps({"hook": "order-select"}).encode()
    large = json.dumps({"hook": "order-select", "padding": "x" * memory.LARGE_BODY_BYTES}).encode()
    for body in (small, large):
        # buffered: the client reads the whole answer and closes it, as a server does once sent
        response = client.post(
            "/cds-services/cryotherapy-order-select", data=body, content_type="application/json", buffered=True
        )
        assert response.status_code == 400  # not a valid hook call: the trim does not depend on it
        assert calls == ([0] if body is large else [])
        calls.clear()


def test_a_large_body_drops_the_text_memo_then_trims_then_checks_growth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda _pad: events.append("trim") or 1)
    monkeypatch.setattr(WorkerReplacement, "applies", lambda self, environ: True)
    monkeypatch.setattr(WorkerReplacement, "after_answer", lambda self: events.append("growth checked"))
    app = _app(tmp_path)
    client = app.test_client()
    fixture = (ROOT / "fhir_fixtures" / "requests" / "03-no-findings-whole-body-order-select.json").read_bytes()
    path = "/cds-services/cryotherapy-order-select"
    assert client.post(path, data=fixture, content_type="application/json", buffered=True).status_code == 200
    assert any(plainread._KNOWN_TEXT), "the plain reader remembered the record's text"
    assert events == ["growth checked"]  # a small body: nothing handed back, growth still checked
    events.clear()
    large = json.dumps({"hook": "order-select", "padding": "x" * memory.LARGE_BODY_BYTES}).encode()
    client.post(path, data=large, content_type="application/json", buffered=True)
    assert not any(plainread._KNOWN_TEXT)
    assert events == ["trim", "growth checked"]  # what was handed back is not counted as growth
