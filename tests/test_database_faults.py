"""A database that hangs, refuses or is locked (issue 12): every call still answers within the
store's timeout + 1 s, ``/readyz`` says 503 with the reason, decisions go to the local spool
and reach the database once it is back (0 lost, none twice), and the replay check fails
closed within the timeout. PostgreSQL runs behind a TCP proxy written here that can hang or
cut every connection; SQLite is locked by another connection."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, make_url, select

from cds_hooks.app import create_app
from cds_hooks.audit.models import Decision
from cds_hooks.config import Config
from cds_hooks.replay import DatabaseJtiCache, ReplayStoreUnavailable

from .conftest import RULES_DIR, _reset_pg

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
TIMEOUT_S = 1.5
SERVICE = "/cds-services/cryotherapy-order-sign"


class FaultyProxy:
    """Forwards TCP connections to ``upstream``; ``hang()`` stops forwarding (connections stay
    open, bytes wait), ``cut()`` closes every connection and refuses new ones, ``heal()``
    forwards again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._cut = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            try:
                server = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # hung: hold the bytes
                if self._cut:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def hang(self) -> None:
        self._flowing.clear()

    def cut(self) -> None:
        self._cut = True
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._flowing.set()  # wake pumps so they see the cut

    def heal(self) -> None:
        self._cut = False
        self._flowing.set()

    def close(self) -> None:
        self.cut()
        self._listener.close()


def _body(n: int) -> dict[str, Any]:
    body = json.loads((FIXTURES / "02-pacemaker-whole-body-order-sign.json").read_text())
    body["hookInstance"] = f"fault-{n}"
    return body


def _timed(client: Any, method: str, path: str, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = getattr(client, method)(path, **kwargs)
    return response, time.monotonic() - started


def _app(database_url: str, spool: Path) -> Any:
    config = Config(
        rules_dir=RULES_DIR,
        database_url=database_url,
        patient_hash_key=b"k" * 32,
        auth_required=False,
        db_timeout_s=TIMEOUT_S,
        spool_dir=spool,
    )
    return create_app(config)


def _count(url: str) -> tuple[int, set[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            instances = {row[0] for row in conn.execute(select(Decision.hook_instance))}
            return int(conn.execute(select(func.count()).select_from(Decision)).scalar_one()), instances
    finally:
        engine.dispose()


@pytest.fixture()
def pg_behind_proxy(pg_database: str) -> Iterator[tuple[str, str, FaultyProxy]]:
    """(direct URL, URL through the proxy, proxy) of an empty throwaway database."""
    _reset_pg(pg_database)
    url = make_url(pg_database)
    proxy = FaultyProxy((url.host or "127.0.0.1", url.port or 5432))
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield pg_database, through, proxy
    proxy.close()


def _outage_run(client: Any, app: Any, direct_url: str, fail: Any, heal: Any) -> None:
    """One call before, three during (each answered in time, spooled), readiness 503 during,
    then healing: the next call drains the spool and every decision is in the database once."""
    store = app.extensions["cryo_cds"].store
    healthy, baseline = _timed(client, "post", SERVICE, json=_body(0))
    assert healthy.status_code == 200
    # The pipeline's own time (measured healthy, doubled for a loaded machine) plus the timeout + 1 s.
    limit = TIMEOUT_S + 1 + 2 * baseline
    fail()
    for n in (1, 2, 3):
        response, elapsed = _timed(client, "post", SERVICE, json=_body(n))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert elapsed < limit, f"call {n} took {elapsed:.1f} s"
    ready, elapsed = _timed(client, "get", "/readyz")
    assert ready.status_code == 503 and elapsed < TIMEOUT_S + 1
    assert ready.get_json()["reason"].startswith("database unavailable")
    assert ready.get_json()["spoolDepth"] == 3
    assert client.get("/healthz").get_json()["auditWriteFailures"] >= 3
    metrics_text = _metrics(app)
    assert _sample(metrics_text, "cryo_cds_audit_spool_depth") == 3

    heal()
    assert client.post(SERVICE, json=_body(4)).status_code == 200  # writes, then drains the spool
    assert store.spool.depth() == 0
    assert client.get("/readyz").get_json() == {"status": "ready", "spoolDepth": 0}
    count, instances = _count(direct_url)
    assert count == 5 and instances == {f"fault-{n}" for n in range(5)}


def _metrics(app: Any) -> str:
    from prometheus_client.parser import text_string_to_metric_families

    response = app.test_client().get("/metrics", headers={"Authorization": "Bearer " + "t" * 32})
    assert response.status_code == 200
    text_body = response.get_data(as_text=True)
    list(text_string_to_metric_families(text_body))  # parses
    return text_body


def _sample(text_body: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text_body):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exposed")


def _app_with_token(database_url: str, spool: Path) -> Any:
    config = Config(
        rules_dir=RULES_DIR,
        database_url=database_url,
        patient_hash_key=b"k" * 32,
        auth_required=False,
        db_timeout_s=TIMEOUT_S,
        spool_dir=spool,
        audit_token="t" * 32,
    )
    return create_app(config)


@pytest.mark.parametrize("fault", ["hang", "cut"])
def test_postgresql_outage_answers_in_time_spools_and_drains(pg_behind_proxy, tmp_path: Path, fault: str) -> None:
    direct, through, proxy = pg_behind_proxy
    app = _app_with_token(through, tmp_path / "spool")
    client = app.test_client()

    def heal() -> None:
        proxy.cut()  # hung connections die (their threads are released), then forwarding resumes
        proxy.heal()

    try:
        _outage_run(client, app, direct, getattr(proxy, fault), heal)
    finally:
        proxy.cut()
        app.extensions["cryo_cds"].store.dispose()


def test_the_replay_check_fails_closed_within_the_timeout_when_postgresql_hangs(pg_behind_proxy, tmp_path) -> None:
    _direct, through, proxy = pg_behind_proxy
    app = _app(through, tmp_path / "spool")
    store = app.extensions["cryo_cds"].store
    cache = DatabaseJtiCache(store.engine, run=store.run_bounded)
    now = time.time()
    assert cache.add_if_absent("iss\x00jti-1", now + 60, now) is True
    proxy.hang()
    started = time.monotonic()
    with pytest.raises(ReplayStoreUnavailable):
        cache.add_if_absent("iss\x00jti-2", now + 60, now)
    assert time.monotonic() - started < TIMEOUT_S + 1
    proxy.cut()
    proxy.heal()
    assert cache.add_if_absent("iss\x00jti-1", now + 60, now) is False  # still remembered
    store.dispose()


# A write abandoned at the timeout leaves its SQLite connection to the garbage collector,
# which may warn about it at any later moment: not a failure of the behaviour under test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_locked_sqlite_database_answers_in_time_spools_and_drains(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    url = f"sqlite:///{db}"
    app = _app_with_token(url, tmp_path / "spool")
    client = app.test_client()
    locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)

    def lock() -> None:
        locker.execute("BEGIN EXCLUSIVE")

    def unlock() -> None:
        locker.execute("ROLLBACK")

    try:
        _outage_run(client, app, url, lock, unlock)
    finally:
        locker.close()
        app.extensions["cryo_cds"].store.dispose()


def test_a_decision_that_committed_late_is_not_written_twice_by_the_drain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    app = _app(url, tmp_path / "spool")
    store = app.extensions["cryo_cds"].store
    client = app.test_client()
    assert client.post(SERVICE, json=_body(0)).status_code == 200
    # Simulate a write that timed out but committed: the same rows both stored and spooled.
    with store.reading() as conn:
        row = dict(conn.execute(select(Decision.__table__)).mappings().one())
    assert store.spool is not None
    store.spool.put(
        row["decision_id"], {"decision": row, "decision_order": [], "rule_evaluation": [], "card": [], "rule_hit": []}
    )
    assert store.drain_spool() == 1
    assert _count(url)[0] == 1 and store.spool.depth() == 0
    store.dispose()
