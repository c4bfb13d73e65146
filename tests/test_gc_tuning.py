"""The app sets the cyclic collector for serving (thresholds, paused while a request is in
flight), and the gunicorn hook freezes start-up objects."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.gc_tuning import THRESHOLDS, CollectorPause
from cds_hooks.gunicorn_conf import when_ready
from cds_hooks.service import Pipeline

from .support.loopback import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path) -> Config:
    """The bundled rules, a fresh SQLite log, no JWT."""
    return Config(
        rules_dir=ROOT / "rules",
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        auth_required=False,
        patient_hash_key=b"gc-tuning-test-key-0123456789abcdef",
    )


def test_the_app_raises_the_collector_thresholds(tmp_path: Path) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        create_app(_config(tmp_path))
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[0] > 700
    finally:
        gc.set_threshold(*before)


def test_the_gunicorn_hook_freezes_what_start_up_built() -> None:
    try:
        when_ready(None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


# -- the collector paused while a request is in flight ----------------------------------------


@pytest.fixture
def collector_on() -> Iterator[None]:
    """Each test starts with the collector on and leaves it as it found it."""
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        (gc.enable if was else gc.disable)()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.usefixtures("collector_on")
def test_the_collector_is_off_from_the_first_request_in_until_the_last_one_out() -> None:
    pause = CollectorPause()
    pause.begin()
    assert not gc.isenabled()
    pause.begin()  # a second request overlaps (a threaded server)
    pause.end()
    assert not gc.isenabled()
    pause.end()
    assert gc.isenabled()
    pause.end()  # an extra end (never expected) changes nothing and counts nothing
    pause.begin()
    assert not gc.isenabled()
    pause.end()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_a_collector_someone_else_turned_off_stays_off() -> None:
    pause = CollectorPause()
    gc.disable()
    pause.begin()
    pause.end()
    assert not gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_overlapping_requests_cannot_hold_the_collector_off_for_longer_than_the_limit() -> None:
    clock = FakeClock()
    pause = CollectorPause(max_pause_s=1.0, clock=clock)
    pause.begin()
    clock.now += 0.5
    pause.begin()
    assert not gc.isenabled()
    clock.now += 0.6  # 1.1 s since the pause began, and requests still overlap
    pause.begin()
    assert gc.isenabled()
    for _ in range(3):
        pause.end()
    assert gc.isenabled()
    pause.begin()  # nothing in flight any more: the next request pauses again
    assert not gc.isenabled()
    pause.end()


def _wsgi_app(seen: list[bool], closed: list[str]) -> Callable[..., Iterable[bytes]]:
    class Body:
        def __iter__(self) -> Iterator[bytes]:
            seen.append(gc.isenabled())
            yield b"ok"

        def close(self) -> None:
            closed.append(f"body closed, collector {'on' if gc.isenabled() else 'off'}")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append(gc.isenabled())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    return app


@pytest.mark.usefixtures("collector_on")
def test_a_wrapped_app_runs_paused_and_its_own_close_runs_before_the_collector_resumes() -> None:
    seen: list[bool] = []
    closed: list[str] = []
    wrapped = CollectorPause().wrap(_wsgi_app(seen, closed))
    answer = wrapped({}, lambda *_: None)
    assert b"".join(answer) == b"ok"
    assert gc.isenabled() is False
    answer.close()  # type: ignore[attr-defined]
    assert seen == [False, False]
    assert closed == ["body closed, collector off"]
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_an_answer_dropped_without_being_closed_ends_its_pause() -> None:
    wrapped = CollectorPause().wrap(_wsgi_app([], []))
    answer = wrapped({}, lambda *_: None)
    assert not gc.isenabled()
    del answer
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_an_app_that_raises_ends_its_pause() -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError):
        CollectorPause().wrap(broken)({}, lambda *_: None)
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_over_real_http_a_hook_call_runs_paused_and_the_collector_resumes_after_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pause of its own: answers other tests left unclosed must not count as in flight here.
    monkeypatch.setattr("cds_hooks.app.COLLECTOR_PAUSE", CollectorPause())
    app = create_app(_config(tmp_path))
    during: list[bool] = []
    real_run = Pipeline.run

    def run_noting(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        during.append(gc.isenabled())
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "run", run_noting)
    body = (ROOT / "fhir_fixtures/requests/03-no-findings-whole-body-order-select.json").read_bytes()
    with LoopbackServer(app) as server:
        answer = requests.post(
            server.url + "/cds-services/cryotherapy-order-select",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200
        assert during == [False]
        deadline = time.monotonic() + 10  # the server closes the answer just after sending it
        while not gc.isenabled() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.isenabled()
