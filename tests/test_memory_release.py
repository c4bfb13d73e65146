"""After a call with a large body the app hands freed heap pages back (malloc_trim), and only then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.web import memory

ROOT = Path(__file__).resolve().parents[1]


def test_glibc_malloc_trim_is_found_on_this_machine() -> None:
    assert memory._malloc_trim() is not None


def test_trim_runs_after_large_bodies_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    app = create_app(
        Config(
            rules_dir=ROOT / "rules",
            database_url=f"sqlite:///{tmp_path / 'd.db'}",
            auth_required=False,
            patient_hash_key=b"memory-release-test-key-0123456789",
        )
    )
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
