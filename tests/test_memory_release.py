"""A call with a large body keeps its memory while large calls keep coming; after the next
smaller answer, or once the worker is idle, the app drops the plain reader's text memo and hands
freed heap pages back (malloc_trim), and only then checks the worker's growth."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, cast

import pytest
from flask import Flask

from cds_hooks import plainread
from cds_hooks.app import create_app
from cds_hooks.config import Config, ConfigError, from_env
from cds_hooks.web import memory
from cds_hooks.web.worker_memory import WorkerReplacement

ROOT = Path(__file__).resolve().parents[1]


def _app(tmp_path: Path, idle_s: float = 3600.0) -> Flask:
    """The app; by default an idle worker waits an hour, so only answers release here."""
    return create_app(
        Config(
            rules_dir=ROOT / "rules",
            database_url=f"sqlite:///{tmp_path / 'd.db'}",
            auth_required=False,
            patient_hash_key=b"memory-release-test-key-0123456789",
            memory_release_idle_s=idle_s,
        )
    )


def test_glibc_malloc_trim_is_found_on_this_machine() -> None:
    assert memory._malloc_trim() is not None


SERVICE = "/cds-services/cryotherapy-order-select"
SMALL = json.dumps({"hook": "order-select"}).encode()
LARGE = json.dumps({"hook": "order-select", "padding": "x" * memory.LARGE_BODY_BYTES}).encode()


def _post(client: Any, body: bytes) -> None:
    # buffered: the client reads the whole answer and closes it, as a server does once sent
    response = client.post(SERVICE, data=body, content_type="application/json", buffered=True)
    assert response.status_code == 400  # not a valid hook call: the release does not depend on it


def _wait_for(events: list[str], wanted: list[str], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while events != wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events == wanted


def _trims_and_growth_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The trims and growth checks of every app built afterwards, in order, as a gunicorn sync
    worker would make them."""
    events: list[str] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda _pad: events.append("trim") or 1)
    monkeypatch.setattr(WorkerReplacement, "applies", lambda self, environ: True)
    monkeypatch.setattr(WorkerReplacement, "after_answer", lambda self: events.append("growth checked"))
    return events


def test_a_large_call_keeps_its_memory_until_a_smaller_answer_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    client = _app(tmp_path).test_client()
    _post(client, SMALL)
    assert calls == []  # nothing was kept
    _post(client, LARGE)
    _post(client, LARGE)
    assert calls == []  # large calls back to back reuse the memory
    _post(client, SMALL)
    assert calls == [0]  # the first smaller answer hands it back
    _post(client, SMALL)
    assert calls == [0]  # once


def test_an_idle_worker_hands_back_what_a_large_call_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _trims_and_growth_checks(monkeypatch)
    client = _app(tmp_path, idle_s=0.05).test_client()
    _post(client, LARGE)
    _wait_for(events, ["trim", "growth checked"])  # no further request needed
    time.sleep(0.2)
    assert events == ["trim", "growth checked"]  # and only once


def test_a_large_body_drops_the_text_memo_then_trims_then_checks_growth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _trims_and_growth_checks(monkeypatch)
    client = _app(tmp_path).test_client()
    fixture = (ROOT / "fhir_fixtures" / "requests" / "03-no-findings-whole-body-order-select.json").read_bytes()
    assert client.post(SERVICE, data=fixture, content_type="application/json", buffered=True).status_code == 200
    assert any(plainread._KNOWN_TEXT), "the plain reader remembered the record's text"
    assert events == ["growth checked"]  # a small body: nothing handed back, growth still checked
    events.clear()
    _post(client, LARGE)
    assert events == []  # kept for now: neither handed back nor counted as growth
    assert client.post(SERVICE, data=fixture, content_type="application/json", buffered=True).status_code == 200
    assert events == ["trim", "growth checked"]  # what was handed back is not counted as growth
    events.clear()
    _post(client, LARGE)
    _post(client, SMALL)
    assert not any(plainread._KNOWN_TEXT)  # dropped with the release
    assert events == ["trim", "growth checked"]


def test_with_no_idle_wait_every_large_call_releases_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _trims_and_growth_checks(monkeypatch)
    client = _app(tmp_path, idle_s=0).test_client()
    _post(client, LARGE)
    assert events == ["trim", "growth checked"]
    _post(client, LARGE)
    assert events == ["trim", "growth checked"] * 2
    _post(client, SMALL)
    assert events == ["trim", "growth checked"] * 2 + ["growth checked"]  # nothing was kept


def test_the_idle_wait_is_read_from_the_environment() -> None:
    assert Config().memory_release_idle_s == 2.0
    assert from_env({"CDS_HOOKS_MEMORY_RELEASE_IDLE_S": "0"}).memory_release_idle_s == 0.0
    assert from_env({"CDS_HOOKS_MEMORY_RELEASE_IDLE_S": "7.5"}).memory_release_idle_s == 7.5
    for bad, says in (("-1", "must be 0 or more"), ("soon", "must be a number"), ("7200", "must be 3600.0 or less")):
        with pytest.raises(ConfigError, match=f"CDS_HOOKS_MEMORY_RELEASE_IDLE_S {says}"):
            from_env({"CDS_HOOKS_MEMORY_RELEASE_IDLE_S": bad})


# -- the decision itself, without an app ----------------------------------------------------


class _Checks:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def after_answer(self) -> None:
        self.events.append("growth checked")


def _release(events: list[str], idle_s: float) -> memory.MemoryRelease:
    return memory.MemoryRelease(lambda _pad: events.append("trim") or 1, idle_s)


def test_a_request_begun_before_the_idle_time_is_up_leaves_the_decision_to_its_answer() -> None:
    events: list[str] = []
    release = _release(events, 0.05)
    checks = cast(WorkerReplacement, _Checks(events))
    release.request_started()
    release.answer_sent(large=True, replacement=checks)
    release.request_started()  # the next call comes in before the worker has been idle long enough
    time.sleep(0.3)
    assert events == []
    release.answer_sent(large=False, replacement=None)
    assert events == ["trim", "growth checked"]  # the growth check put off with the large call


def test_only_the_last_large_answer_sets_the_idle_time() -> None:
    events: list[str] = []
    release = _release(events, 1.0)
    for _ in range(3):
        release.request_started()
        release.answer_sent(large=True, replacement=None)
        time.sleep(0.01)
    _wait_for(events, ["trim"])
    time.sleep(0.3)
    assert events == ["trim"]  # the earlier timers were cancelled


def test_without_glibc_only_the_memos_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    dropped: list[str] = []
    monkeypatch.setattr(memory, "forget_known_text", lambda: dropped.append("text"))
    monkeypatch.setattr(memory, "forget_drug_classes", lambda: dropped.append("drug classes"))
    release = memory.MemoryRelease(None, 3600.0)
    release.answer_sent(large=True, replacement=None)
    release.answer_sent(large=False, replacement=None)
    assert dropped == ["text", "drug classes"]


def test_a_forked_child_owes_nothing_its_parent_kept() -> None:
    events: list[str] = []
    release = _release(events, 3600.0)
    release.answer_sent(large=True, replacement=None)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a small answer must not release what only the parent kept
        release.answer_sent(large=False, replacement=None)
        os.write(write, ",".join(events).encode() or b"-")
        os._exit(0)
    os.close(write)
    child_events = os.read(read, 100)
    os.close(read)
    os.waitpid(pid, 0)
    assert child_events == b"-"
    release.answer_sent(large=False, replacement=None)
    assert events == ["trim"]  # the parent still does
