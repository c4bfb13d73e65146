"""A gunicorn worker that has grown past CDS_HOOKS_WORKER_MAX_GROWTH_MB is replaced after it
answers: the call that crossed the limit is answered and recorded, a fresh worker serves the
next one. Elsewhere (werkzeug, the test client) nothing is stopped."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from cds_hooks.app import create_app
from cds_hooks.config import Config, ConfigError, from_env
from cds_hooks.web import memory, worker_memory

from .support import load as load_harness
from .support.database import decisions_held

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "fhir_fixtures" / "requests" / "03-no-findings-whole-body-order-select.json"
SYNTHEA = ROOT / "fhir_fixtures" / "external" / "Parker_Casper_6d0c6969-6843-47e1-9921-d9bf11b1df31.json"
SERVICE = "/cds-services/cryotherapy-order-select"


def _large_body() -> dict[str, Any]:
    """Fixture 03's order with a Synthea patient's conditions and observations, several times
    over (fresh ids): a record of a few thousand resources."""
    body: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    patient_id = body["context"]["patientId"]
    bundle = json.loads(SYNTHEA.read_text(encoding="utf-8"))
    wanted = {"Condition": "conditions", "Observation": "observations"}
    entries: dict[str, list[dict[str, Any]]] = {key: [] for key in wanted.values()}
    for copy in range(6):
        for entry in bundle["entry"]:
            resource = dict(entry["resource"])
            key = wanted.get(resource["resourceType"])
            if key is None:
                continue
            resource["id"] = f"{resource['id']}-{copy}"
            resource["subject"] = {"reference": f"Patient/{patient_id}"}
            resource.pop("encounter", None)
            entries[key].append({"resource": resource})
    for key, items in entries.items():
        body["prefetch"][key] = {"resourceType": "Bundle", "type": "searchset", "entry": items}
    assert len(json.dumps(body)) >= memory.LARGE_BODY_BYTES  # a large body, as web/memory.py counts it
    return body


def _decisions(db: Path) -> int:
    return decisions_held(f"sqlite:///{db}")


def _wait_for_new_worker(master_pid: int, old: list[int], deadline_s: float = 60) -> list[int]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        now = load_harness.worker_pids(master_pid)
        if now and not set(now) & set(old):
            return now
        time.sleep(0.05)
    raise AssertionError(f"worker {old} was not replaced within {deadline_s} s")


@contextmanager
def _sync_gunicorn(tmp_path: Path, limit_mb: str, idle_s: str = "2") -> Iterator[load_harness.Server]:
    """gunicorn with one sync worker (the only kind that replaces itself) on a fresh log."""
    with load_harness.gunicorn(
        f"sqlite:///{tmp_path / 'd.db'}",
        1,
        1,
        tmp_path,
        env_extra={"CDS_HOOKS_WORKER_MAX_GROWTH_MB": limit_mb, "CDS_HOOKS_MEMORY_RELEASE_IDLE_S": idle_s},
        worker_class="sync",
    ) as server:
        yield server


def test_a_grown_worker_answers_then_is_replaced(tmp_path: Path) -> None:
    with _sync_gunicorn(tmp_path, "1") as server:
        first = load_harness.worker_pids(server.process.pid)
        assert len(first) == 1
        response = requests.post(server.base + SERVICE, json=_large_body(), timeout=60)
        assert response.status_code == 200
        assert "cards" in response.json()
        replacement = _wait_for_new_worker(server.process.pid, first)
        assert len(replacement) == 1
        again = requests.post(server.base + SERVICE, json=json.loads(FIXTURE.read_text()), timeout=60)
        assert again.status_code == 200
        log_text = server.log_text()
    assert _decisions(tmp_path / "d.db") == 2  # the call that crossed the limit was recorded first
    assert f"worker {first[0]} grew by" in log_text
    assert "Traceback" not in log_text


def test_large_calls_in_a_row_keep_the_worker_until_a_smaller_answer(tmp_path: Path) -> None:
    """The memory a large call leaves is kept for the next one, not counted as growth; the first
    smaller answer hands it back, and then the worker, still grown past 1 MB, is replaced."""
    large, small = _large_body(), json.loads(FIXTURE.read_text())
    with _sync_gunicorn(tmp_path, "1", idle_s="3600") as server:
        first = load_harness.worker_pids(server.process.pid)
        for _ in range(2):
            assert requests.post(server.base + SERVICE, json=large, timeout=60).status_code == 200
        assert load_harness.worker_pids(server.process.pid) == first
        assert requests.post(server.base + SERVICE, json=small, timeout=60).status_code == 200
        replacement = _wait_for_new_worker(server.process.pid, first)
        assert len(replacement) == 1
        log_text = server.log_text()
    assert log_text.count(" grew by ") == 1
    assert _decisions(tmp_path / "d.db") == 3


def test_a_worker_under_the_limit_is_kept(tmp_path: Path) -> None:
    with _sync_gunicorn(tmp_path, "512") as server:
        first = load_harness.worker_pids(server.process.pid)
        for _ in range(3):
            assert requests.post(server.base + SERVICE, json=_large_body(), timeout=60).status_code == 200
        assert load_harness.worker_pids(server.process.pid) == first


def test_a_threaded_worker_is_never_stopped(tmp_path: Path) -> None:
    with load_harness.gunicorn(
        f"sqlite:///{tmp_path / 'd.db'}", 1, 2, tmp_path, env_extra={"CDS_HOOKS_WORKER_MAX_GROWTH_MB": "1"}
    ) as server:
        first = load_harness.worker_pids(server.process.pid)
        for _ in range(2):
            assert requests.post(server.base + SERVICE, json=_large_body(), timeout=60).status_code == 200
        assert load_harness.worker_pids(server.process.pid) == first
        assert " grew by " not in server.log_text()


def test_a_threaded_worker_answers_and_records_every_call_while_large_ones_hand_memory_back(
    tmp_path: Path,
) -> None:
    """gthread, four threads: with the release after every large call, the memos are emptied
    while other threads are reading records; no call may fail or go unrecorded."""
    large, small = _large_body(), json.loads(FIXTURE.read_text())
    bodies = [large if i % 4 == 0 else small for i in range(16)]
    with load_harness.gunicorn(
        f"sqlite:///{tmp_path / 'd.db'}", 1, 4, tmp_path, env_extra={"CDS_HOOKS_MEMORY_RELEASE_IDLE_S": "0"}
    ) as server:
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(
                pool.map(lambda b: requests.post(server.base + SERVICE, json=b, timeout=60).status_code, bodies)
            )
        log_text = server.log_text()
    assert statuses == [200] * len(bodies)
    assert "Traceback" not in log_text
    assert _decisions(tmp_path / "d.db") == len(bodies)


def _app(tmp_path: Path, limit_mb: float) -> Any:
    return create_app(
        Config(
            rules_dir=ROOT / "rules",
            database_url=f"sqlite:///{tmp_path / 'd.db'}",
            auth_required=False,
            patient_hash_key=b"worker-memory-test-key-0123456789",
            worker_max_growth_mb=limit_mb,
        )
    )


@pytest.mark.parametrize(
    ("server_software", "threaded"), [("Werkzeug/3.1", False), ("gunicorn/27.0.1", True), ("gunicorn/27.0.1", False)]
)
def test_only_a_gunicorn_sync_worker_stops_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server_software: str, threaded: bool
) -> None:
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(worker_memory.os, "kill", lambda pid, sig: signals.append((pid, sig)))
    monkeypatch.setattr(worker_memory, "anonymous_bytes", lambda: 100 * 1024 * 1024)
    app = _app(tmp_path, 1)
    monkeypatch.setattr(worker_memory, "anonymous_bytes", lambda: 200 * 1024 * 1024)  # grown by 100 MB
    client = app.test_client()
    for _ in range(2):
        environ = {"SERVER_SOFTWARE": server_software, "wsgi.multithread": threaded}
        response = client.get("/healthz", environ_overrides=environ, buffered=True)
        assert response.status_code == 200
    stops = server_software.startswith("gunicorn/") and not threaded
    expected = [(os.getpid(), signal.SIGTERM)] if stops else []
    assert signals == expected  # once, however many calls follow before the worker stops


def test_the_limit_is_read_from_the_environment() -> None:
    assert Config().worker_max_growth_mb == 12.0
    assert from_env({"CDS_HOOKS_WORKER_MAX_GROWTH_MB": "0"}).worker_max_growth_mb == 0.0
    assert from_env({"CDS_HOOKS_WORKER_MAX_GROWTH_MB": "48"}).worker_max_growth_mb == 48.0
    with pytest.raises(ConfigError, match="CDS_HOOKS_WORKER_MAX_GROWTH_MB must be 0 or more"):
        from_env({"CDS_HOOKS_WORKER_MAX_GROWTH_MB": "-1"})


def test_anonymous_memory_is_read_on_linux() -> None:
    before = worker_memory.anonymous_bytes()
    assert before is not None and before > 0
    block = bytes(range(256)) * (256 * 1024)  # 64 MB, every page written
    after = worker_memory.anonymous_bytes()
    assert after is not None and after - before >= 32 * 1024 * 1024
    del block


def test_a_forked_child_reads_its_own_memory_not_its_parents() -> None:
    parent = worker_memory.anonymous_bytes()  # the parent's statm is open from here on
    assert parent is not None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: grow by 64 MB, which the parent does not
        block = bytes(range(256)) * (256 * 1024)
        grown = worker_memory.anonymous_bytes()
        os.write(write_end, str(grown).encode())
        del block
        os._exit(0)
    os.close(write_end)
    child = int(os.read(read_end, 64))
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child - parent >= 32 * 1024 * 1024
    after = worker_memory.anonymous_bytes()
    assert after is not None and after - parent < 32 * 1024 * 1024
