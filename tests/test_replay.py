"""Replay protection shared by every worker (CDS Hooks §8 "jti"): the ``seen_jti`` store on a
real SQLite file and a real PostgreSQL database; two real server processes sharing one
database, where a token accepted by one process is refused when replayed to the other; and
gunicorn with two workers, whose access log shows replays refused by the other worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from cds_hooks import replay
from cds_hooks.app import create_app
from cds_hooks.audit import AuditStore
from cds_hooks.config import Config
from cds_hooks.replay import DatabaseJtiCache, ReplayStoreUnavailable

from .conftest import RULES_DIR
from .support import load
from .support.jwt_helpers import jwks, make_keypair, sign_token
from .support.loopback import LoopbackServer, free_port, wait_until_up

KEY = b"test-only-patient-key-32-bytes!!"
ISS = "https://ehr.example.org"
PUBLIC_BASE = "https://cds.example.org"  # what both processes call themselves: one service, two workers
SERVICE_PATH = "/cds-services/cryotherapy-order-sign"
FIXTURE = (
    Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests" / "02-pacemaker-whole-body-order-sign.json"
)


@pytest.fixture
def store(db_url: str) -> Iterator[AuditStore]:
    store = AuditStore(db_url, KEY)
    store.migrate()
    yield store
    store.dispose()


@pytest.fixture(params=["store", "engine"])
def cache_over(request: pytest.FixtureRequest, store: AuditStore) -> DatabaseJtiCache:
    """The cache over the service's store (on SQLite, its driver connections, as a serving
    process runs it) and over a SQLAlchemy engine: both must behave alike."""
    return DatabaseJtiCache(store if request.param == "store" else store.engine)


def _rows(store: AuditStore) -> list[tuple[str, float]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("select key_hash, expires_at from seen_jti"))]


# -- the store ---------------------------------------------------------------------------


def test_a_key_is_accepted_once_until_it_expires(cache_over: DatabaseJtiCache) -> None:
    cache = cache_over
    assert cache.add_if_absent("iss\x00a", expires_at=1000.0, now=700.0) is True
    assert cache.add_if_absent("iss\x00a", expires_at=1000.0, now=701.0) is False
    assert cache.add_if_absent("iss\x00a", expires_at=1300.0, now=999.0) is False
    assert cache.add_if_absent("iss\x00b", expires_at=1000.0, now=702.0) is True
    assert cache.add_if_absent("other-iss\x00a", expires_at=1000.0, now=702.0) is True


def test_an_expired_entry_is_taken_over_by_a_new_token(store: AuditStore, cache_over: DatabaseJtiCache) -> None:
    cache = cache_over
    assert cache.add_if_absent("iss\x00a", expires_at=1000.0, now=700.0)
    assert cache.add_if_absent("iss\x00a", expires_at=1500.0, now=1000.0)  # the old token is dead
    assert not cache.add_if_absent("iss\x00a", expires_at=1800.0, now=1200.0)  # the new one is not
    assert [expires for _key, expires in _rows(store)] == [1500.0]


def test_the_row_holds_a_hash_not_the_jti(store: AuditStore, cache_over: DatabaseJtiCache) -> None:
    cache_over.add_if_absent(f"{ISS}\x00jti-visible-7f3a", expires_at=1000.0, now=1.0)
    [(key_hash, expires)] = _rows(store)
    assert len(key_hash) == 64 and int(key_hash, 16) >= 0
    assert "jti-visible" not in key_hash and expires == 1000.0


def test_expired_rows_are_purged_at_most_once_an_interval(store: AuditStore, cache_over: DatabaseJtiCache) -> None:
    cache = cache_over
    for i in range(5):
        cache.add_if_absent(f"iss\x00old-{i}", expires_at=100.0, now=50.0)  # first call purges nothing
    assert len(_rows(store)) == 5
    cache.add_if_absent("iss\x00fresh", expires_at=10_000.0, now=50.0 + replay.PURGE_INTERVAL_S / 2)
    assert len(_rows(store)) == 6  # not due yet
    cache.add_if_absent("iss\x00later", expires_at=10_000.0, now=50.0 + replay.PURGE_INTERVAL_S + 1)
    assert sorted(exp for _k, exp in _rows(store)) == [10_000.0, 10_000.0]


def test_racing_processes_let_each_token_through_exactly_once(store: AuditStore, db_url: str) -> None:
    # Separate engines stand for separate worker processes: each has its own connections,
    # so only the database can arbitrate.
    engines = [create_engine(store.engine.url) for _ in range(4)]
    caches = [DatabaseJtiCache(engine) for engine in engines]
    stores: list[AuditStore] = []
    if db_url.startswith("sqlite"):
        for engine in engines:
            engine.dispose()
        # As serving processes: driver connections, WAL, busy timeout, BEGIN IMMEDIATE.
        stores = [AuditStore(db_url, KEY) for _ in range(4)]
        engines, caches = [], [DatabaseJtiCache(one) for one in stores]
    keys = [f"iss\x00race-{i}" for i in range(40)]

    def claim(cache: DatabaseJtiCache) -> list[bool]:
        return [cache.add_if_absent(key, expires_at=2e9, now=1e9) for key in keys]

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(claim, caches * 2))
    finally:
        for engine in engines:
            engine.dispose()
        for one in stores:
            one.dispose()
    wins_per_key = [sum(result[i] for result in results) for i in range(len(keys))]
    assert wins_per_key == [1] * len(keys)


def test_an_unreachable_database_fails_closed() -> None:
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    with pytest.raises(ReplayStoreUnavailable):
        DatabaseJtiCache(engine).add_if_absent("iss\x00a", expires_at=2e9, now=1e9)
    engine.dispose()


# -- the running service -----------------------------------------------------------------


@pytest.fixture(scope="module")
def es384() -> tuple:
    return make_keypair("ES384", kid="es-1")


def _token(es384: tuple, path: str = SERVICE_PATH) -> str:
    private, jwk = es384
    return sign_token(private, "ES384", jwk["kid"], ISS, PUBLIC_BASE + path)


def _post(base: str, token: str) -> requests.Response:
    return requests.post(
        base + SERVICE_PATH,
        json=json.loads(FIXTURE.read_text()),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _start_server(db_url: str, jwks_path: Path, workdir: Path, name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "CDS_HOOKS_DATABASE_URL": db_url,
        "CDS_HOOKS_PATIENT_HASH_KEY": "k" * 32,
        "CDS_HOOKS_TRUSTED_ISSUERS": json.dumps([{"iss": ISS, "jwks_file": str(jwks_path)}]),
    }
    with (workdir / f"{name}.log").open("wb") as log:  # a file, not a pipe: a full pipe blocks the server
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds_hooks.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--public-base-url",
                PUBLIC_BASE,
            ],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base + "/healthz", process, workdir / f"{name}.log")
    return process, base


def test_a_token_replayed_to_another_process_is_refused(db_url: str, es384: tuple, tmp_path: Path) -> None:
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(jwks(es384[1])))
    AuditStore(db_url, KEY).migrate()  # as a deployment does before starting workers
    servers = [_start_server(db_url, jwks_path, tmp_path, name) for name in ("worker-a", "worker-b")]
    (_, a), (_, b) = servers
    try:
        first = _token(es384)
        assert _post(a, first).status_code == 200
        assert _post(b, first).status_code == 401  # the other process has never seen it
        assert _post(a, first).status_code == 401

        second = _token(es384)
        assert _post(b, second).status_code == 200
        assert _post(a, second).status_code == 401

        # The same token fired at both processes at once is let through exactly once.
        racing = [_token(es384) for _ in range(10)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(lambda job: _post(*job).status_code, [(base, tok) for tok in racing for base in (a, b, a, b)])
            )
        per_token = [sorted(statuses[i * 4 : (i + 1) * 4]) for i in range(len(racing))]
        assert per_token == [[200, 401, 401, 401]] * len(racing)
        for process, _ in servers:
            assert process.poll() is None
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=30)


def test_a_lost_replay_store_answers_503_not_401(tmp_path: Path, es384: tuple) -> None:
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(jwks(es384[1])))
    db = tmp_path / "d.db"
    app = create_app(
        Config(
            rules_dir=RULES_DIR,
            database_url=f"sqlite:///{db}",
            patient_hash_key=KEY,
            auth_required=True,
            public_base_url=PUBLIC_BASE,
            trusted_issuers=json.dumps([{"iss": ISS, "jwks_file": str(jwks_path)}]),
        )
    )
    with LoopbackServer(app) as server:
        base = server.url
        assert _post(base, _token(es384)).status_code == 200
        engine = create_engine(f"sqlite:///{db}")
        with engine.begin() as conn:
            conn.execute(text("drop table seen_jti"))
        engine.dispose()
        answer = _post(base, _token(es384))
        assert answer.status_code == 503
        body = answer.json()
        assert body["error"] == "service-unavailable"
        assert body["operationOutcome"]["resourceType"] == "OperationOutcome"
        assert "Traceback" not in answer.text


def test_under_gunicorn_a_token_replayed_to_the_other_worker_is_refused(
    db_url: str, es384: tuple, tmp_path: Path
) -> None:
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(jwks(es384[1])))
    auth = {
        "CDS_HOOKS_AUTH": "on",
        "CDS_HOOKS_PUBLIC_BASE_URL": PUBLIC_BASE,
        "CDS_HOOKS_TRUSTED_ISSUERS": json.dumps([{"iss": ISS, "jwks_file": str(jwks_path)}]),
    }
    # One access-log line per request: worker pid, status, path and the request's sequence
    # number (a header), so lines are matched to requests whatever order the workers wrote them.
    access = (
        "--access-logfile",
        str(tmp_path / "access.log"),
        "--access-logformat",
        "ACCESS %(p)s %(s)s %(U)s %({x-test-seq}i)s",
    )
    tokens, replays = 40, 3
    with load.gunicorn(db_url, 2, 2, tmp_path, env_extra=auth, args_extra=access) as server:
        statuses = []
        for _ in range(tokens):
            token = _token(es384)
            for _attempt in range(1 + replays):
                # A new connection each time, so the kernel may hand it to either worker.
                with requests.Session() as session:
                    statuses.append(
                        session.post(
                            server.base + SERVICE_PATH,
                            json=json.loads(FIXTURE.read_text()),
                            headers={
                                "Authorization": f"Bearer {token}",
                                "Connection": "close",
                                "X-Test-Seq": str(len(statuses)),
                            },
                            timeout=30,
                        ).status_code
                    )
    assert statuses == ([200] + [401] * replays) * tokens
    lines = [
        line.split()[1:] for line in (tmp_path / "access.log").read_text().splitlines() if line.startswith("ACCESS ")
    ]
    by_seq = {int(seq): (pid, int(status)) for pid, status, path, seq in lines if path == SERVICE_PATH}
    assert sorted(by_seq) == list(range(len(statuses)))
    served = [by_seq[i] for i in range(len(statuses))]
    assert [status for _pid, status in served] == statuses
    # The point of the test: some replays landed on a worker that had not seen the token.
    crossed = 0
    for i in range(tokens):
        group = served[i * (1 + replays) : (i + 1) * (1 + replays)]
        first_pid = group[0][0]
        crossed += sum(1 for pid, _status in group[1:] if pid != first_pid)
    assert crossed > 0, "every replay reached the worker that accepted the token; nothing was shown"
