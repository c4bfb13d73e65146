"""Load test of the service under gunicorn, checked against the decision log afterwards.

Starts ``gunicorn -w N -k gthread --threads 4 --preload 'cds_hooks.app:create_app()'`` on a
free local port over a fresh SQLite file or a throwaway PostgreSQL database, sends
order-select calls from a pool of concurrent clients (patients whose records fire
critical, warning and info cards, some none, one order that is not cryotherapy), and from
a third of the way in mixes in feedback posts for a share of the cards those calls
returned (accepted with acceptedSuggestions, overridden with a reason and/or a comment,
some sent again to test idempotency, a few for cards the service never issued).
With ``--kill-worker`` one gunicorn worker is SIGKILLed halfway through. With ``--auth``
JWT checks are on: every call and every feedback post (each retry too) carries a fresh ES384
token, so each request also pays for signature checking and the shared ``seen_jti`` check.

Then it checks, with SQL against the database the service wrote:

* every 200 response has exactly one decision, holding exactly the cards it returned;
  calls whose connection the killed worker dropped are counted apart and left at most one
  complete decision each; no decision row is partial (orders, evaluations, hits, cards);
* the feedback table holds one row per distinct feedback item sent, no more;
* ``cds_hooks.audit.analytics.rule_summary`` (evaluations, fires, cards, accepted,
  overridden, comments, top override reasons) equals what the clients saw and sent;
* the server log holds no audit-write failure or traceback, the killed worker was
  replaced, and the database is still usable (one more call and feedback are recorded).

It prints throughput, latency percentiles, errors and each check; exit status 1 when a
check fails. Run:

    .venv/bin/python benchmarks/load.py --db sqlite --calls 5000 --clients 32 --workers 2 [--kill-worker]
    .venv/bin/python benchmarks/load.py --db postgresql ...   # CRYO_TEST_PG_ADMIN_URL to change the server

The functions are reused by tests/test_load_gunicorn.py at CI scale and by the PostgreSQL
fixtures of tests/conftest.py; benchmarks/load.py is the command-line entry point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from requests.adapters import HTTPAdapter
from sqlalchemy import func, select, text

from cds_hooks.audit.analytics import rule_summary
from cds_hooks.audit.models import Card, Decision, DecisionOrder, EvaluationSetMember, Feedback, RuleHit
from cds_hooks.audit.store import AuditStore
from cds_hooks.devtools.cases import PATIENT_ID, case_request
from cds_hooks.rulebook import load_rulebook

from .loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "cryotherapy-order-select"
LOAD_ISSUER = "https://ehr.load.example"
LOAD_PUBLIC_BASE = "https://cds.load.example"  # the JWT audience base; the port does not matter
PATIENT_HASH_KEY = "load-test-patient-hash-key-0123456789"
GLIBC_TUNABLES = "glibc.malloc.trim_threshold=268435456:glibc.malloc.top_pad=67108864"
PG_ADMIN_URL = os.environ.get("CRYO_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PATIENTS = 40
HOOK_INSTANCE_SLOT = "00000000-hook-inst-ance-slot00000000"
FEEDBACK_FROM = 1 / 3  # feedback posts start after this share of the calls
FEEDBACK_RATE = 0.3  # chance that a client follows a call with a feedback post
REPEAT_RATE = 0.15  # chance that a feedback post re-sends an item already sent
UNKNOWN_CARD_RATE = 0.03  # chance of an item for a card the service never issued
RETRIES = 6  # feedback posts are idempotent, so a dropped one is sent again

SN = "http://snomed.info/sct"
RAYNAUD = {"resourceType": "Condition", "code": {"coding": [{"system": SN, "code": "266261006"}]}}
EXT = "https://example.org/fhir/cryo-cds/StructureDefinition/"


@dataclass(frozen=True)
class LoadCase:
    name: str
    case: dict[str, Any]
    weight: int
    cryo: bool  # a cryotherapy order: every rule is evaluated


CASES = (
    LoadCase("critical: Raynaud's + liquid nitrogen", {"order": "ln2", "resources": [RAYNAUD]}, 2, True),
    LoadCase("critical+warning+info: Raynaud's + whole-body", {"order": "wbc", "resources": [RAYNAUD]}, 2, True),
    LoadCase(
        "critical: whole-body at -180 C",
        {
            "order": {
                "preset": "wbc",
                "extension": [
                    {
                        "url": EXT + "cryo-target-temperature",
                        "valueQuantity": {
                            "value": -180,
                            "unit": "°C",
                            "system": "http://unitsofmeasure.org",
                            "code": "Cel",
                        },
                    }
                ],
            }
        },
        1,
        True,
    ),
    LoadCase(
        "warning: 45 s freeze",
        {
            "order": {
                "preset": "ln2",
                "remove": ["occurrenceTiming"],
                "extension": [
                    {
                        "url": EXT + "cryo-application-duration",
                        "valueQuantity": {"value": 45, "unit": "s", "system": "http://unitsofmeasure.org", "code": "s"},
                    },
                    {"url": EXT + "freeze-thaw-cycles", "valueInteger": 2},
                ],
            }
        },
        2,
        True,
    ),
    LoadCase("info: liquid nitrogen, empty record", {"order": "ln2"}, 2, True),
    LoadCase(
        "no cards: cold pack, normal heart rate",
        {
            "order": "cold-pack",
            "resources": [
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "effectiveDateTime": "2026-11-01",
                    "valueQuantity": {"value": 64, "unit": "/min", "code": "/min"},
                }
            ],
        },
        3,
        True,
    ),
    LoadCase(
        "no cards: cryoablation (not cryotherapy)",
        {
            "order": {
                "code": {
                    "coding": [{"system": SN, "code": "233161001", "display": "Cryoablation operation for arrhythmia"}],
                    "text": "Cryoablation (cryotherapy catheter) for atrial fibrillation",
                },
                "bodySite": [{"coding": [{"system": SN, "code": "33712006", "display": "Skin of hand"}]}],
            }
        },
        1,
        False,
    ),
)
CASE_BY_NAME = {case.name: case for case in CASES}


# -- requests ----------------------------------------------------------------------------


def request_templates() -> dict[tuple[str, int], str]:
    """JSON text of every (case, patient) request, with a slot for the hookInstance."""
    templates = {}
    for case in CASES:
        body = case_request(case.case)
        body["hookInstance"] = HOOK_INSTANCE_SLOT
        raw = json.dumps(body, separators=(",", ":"))
        assert raw.count(PATIENT_ID) >= 2
        for patient in range(PATIENTS):
            templates[(case.name, patient)] = raw.replace(PATIENT_ID, f"load-patient-{patient:03d}")
    return templates


def schedule(calls: int, seed: int) -> list[tuple[str, int]]:
    """(case name, patient) per call, weighted by case."""
    rng = random.Random(seed)
    names = [case.name for case in CASES]
    weights = [case.weight for case in CASES]
    return [(rng.choices(names, weights)[0], rng.randrange(PATIENTS)) for _ in range(calls)]


# -- results -----------------------------------------------------------------------------


@dataclass
class CardSeen:
    uuid: str
    code: str
    indicator: str
    suggestions: tuple[str, ...]
    reasons: tuple[tuple[str, str, str], ...]  # (system, code, display)
    rules: tuple[tuple[str, str], ...] = ()  # (rule, indicator) of every finding the card carries


@dataclass
class CallResult:
    index: int
    case: str
    hook_instance: str
    status: int | None = None  # None: no HTTP response (connection dropped)
    latency_s: float = 0.0
    cards: list[CardSeen] = field(default_factory=list)
    error: str | None = None


@dataclass
class FeedbackPost:
    items: list[dict[str, Any]]
    status: int | None = None
    attempts: int = 0
    latency_s: float = 0.0
    error: str | None = None
    body_text: str = ""


@dataclass
class LoadResult:
    calls: list[CallResult]
    posts: list[FeedbackPost]
    wall_s: float
    killed_pid: int | None = None
    killed_at_call: int | None = None
    replacement_pids: list[int] = field(default_factory=list)
    card_by_uuid: dict[str, CardSeen] = field(default_factory=dict)

    @property
    def ok_calls(self) -> list[CallResult]:
        return [c for c in self.calls if c.status == 200]

    @property
    def dropped_calls(self) -> list[CallResult]:
        return [c for c in self.calls if c.status is None]

    @property
    def http_error_calls(self) -> list[CallResult]:
        return [c for c in self.calls if c.status is not None and c.status != 200]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


# -- feedback items ----------------------------------------------------------------------


def item_key(item: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two feedback items the same entry (a re-sent one is the same)."""
    stamp = datetime.fromisoformat(item["outcomeTimestamp"].replace("Z", "+00:00")).astimezone(UTC)
    reason = item.get("overrideReason") or {}
    coding = reason.get("reason") or {}
    return (
        item["card"],
        item["outcome"],
        stamp.isoformat(timespec="microseconds"),
        tuple(sorted(s["id"] for s in item.get("acceptedSuggestions") or ())),
        coding.get("system"),
        coding.get("code"),
        reason.get("userComment"),
    )


def row_key(row: Any) -> tuple[Any, ...]:
    return (
        row.card_uuid,
        row.outcome,
        row.outcome_timestamp.astimezone(UTC).isoformat(timespec="microseconds"),
        tuple(sorted(row.accepted_suggestions or ())),
        row.override_system,
        row.override_code,
        row.user_comment,
    )


def make_item(card: CardSeen, rng: random.Random, serial: int) -> dict[str, Any]:
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    if (card.suggestions and rng.random() < 0.5) or not card.reasons or rng.random() < 0.1:
        chosen = [{"id": s} for s in card.suggestions[:1]]
        return {"card": card.uuid, "outcome": "accepted", "outcomeTimestamp": stamp, "acceptedSuggestions": chosen}
    style = rng.randrange(3)
    reason: dict[str, Any] = {}
    if style in (0, 1):
        system, code, display = rng.choice(card.reasons)
        reason["reason"] = {"system": system, "code": code, "display": display}
    if style in (1, 2):
        reason["userComment"] = f"load comment {serial}: geprüft – ok"
    return {"card": card.uuid, "outcome": "overridden", "outcomeTimestamp": stamp, "overrideReason": reason}


def unknown_card_item() -> dict[str, Any]:
    return {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": datetime.now(UTC).isoformat(),
        "overrideReason": {"userComment": "card the service never issued"},
    }


# -- gunicorn ----------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    log_path: Path
    workers: int

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def worker_pids(master_pid: int) -> list[int]:
    """The gunicorn master's child processes (its workers)."""
    pids: set[int] = set()
    try:
        for task in Path(f"/proc/{master_pid}/task").iterdir():
            pids.update(int(p) for p in (task / "children").read_text().split())
    except OSError:
        out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True, check=False).stdout
        pids.update(int(p) for p in out.split())
    return sorted(pids)


def wait_until_up(server: Server, deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"gunicorn exited with {server.process.returncode} before answering:\n" + server.log_text()[-3000:]
            )
        try:
            if (
                requests.get(server.base + "/healthz", timeout=2).status_code == 200
                and len(worker_pids(server.process.pid)) >= server.workers
            ):
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer in time:\n" + server.log_text()[-3000:])


def extra_args() -> list[str]:
    """gunicorn >= 27 opens a control socket in ~/.gunicorn, shared by every instance: not here."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


@contextlib.contextmanager
def gunicorn_process(
    app: str,
    worker_args: Sequence[str],
    workdir: Path,
    env: Mapping[str, str],
    *,
    log_name: str = "gunicorn.log",
    args_extra: Sequence[str] = (),
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``gunicorn --preload`` serving ``app`` on a free loopback port: (process, port, log).

    Its output goes to a file in ``workdir`` (a full pipe would block the server); on leaving,
    SIGTERM lets the workers finish their requests, SIGKILL follows after 30 s. Shared by the
    load harness, the replay test and benchmarks/http.py, which wait for it in their own ways.
    """
    port = free_port()
    log_path = workdir / log_name
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        *worker_args,
        "--preload",
        "-b",
        f"127.0.0.1:{port}",
        *extra_args(),
        *args_extra,
        app,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process, port, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextlib.contextmanager
def gunicorn(
    db_url: str,
    workers: int,
    threads: int,
    workdir: Path,
    *,
    env_extra: dict[str, str] | None = None,
    args_extra: tuple[str, ...] = (),
    worker_class: str = "gthread",
) -> Iterator[Server]:
    """gunicorn (gthread workers with ``threads`` threads, or sync workers) serving the app;
    JWT checks off unless ``env_extra`` turns them on."""
    env = {
        **os.environ,
        "CDS_HOOKS_AUTH": "off",
        "CDS_HOOKS_DATABASE_URL": db_url,
        "CDS_HOOKS_PATIENT_HASH_KEY": PATIENT_HASH_KEY,
        "GLIBC_TUNABLES": GLIBC_TUNABLES,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **(env_extra or {}),
    }
    worker_args: tuple[str, ...] = ("-w", str(workers), "-k", worker_class)
    if worker_class == "gthread":
        worker_args += ("--threads", str(threads))
    with gunicorn_process(
        "cds_hooks.app:create_app()", worker_args, workdir, env, args_extra=("--log-level", "info", *args_extra)
    ) as (process, port, log_path):
        server = Server(process, f"http://127.0.0.1:{port}", log_path, workers)
        wait_until_up(server)
        yield server


# -- databases ---------------------------------------------------------------------------


def postgres_reachable(admin_url: str = PG_ADMIN_URL) -> str | None:
    """None when PostgreSQL answers, else why not."""
    import psycopg

    try:
        psycopg.connect(admin_url, autocommit=True, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at {admin_url} is unreachable ({type(exc).__name__})"
    return None


@contextlib.contextmanager
def throwaway_database(kind: str, workdir: Path, admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A fresh SQLite file, or a PostgreSQL database created here and dropped at the end."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'decisions.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    import psycopg
    from psycopg import sql
    from sqlalchemy import make_url

    name = f"cryo_load_{uuid.uuid4().hex}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- the load ----------------------------------------------------------------------------


def _card_seen(card: dict[str, Any]) -> CardSeen:
    return CardSeen(
        card["uuid"],
        card["source"]["topic"]["code"],
        card["indicator"],
        tuple(s["uuid"] for s in card.get("suggestions") or ()),
        tuple((r.get("system", ""), r["code"], r.get("display", "")) for r in card.get("overrideReasons") or ()),
        tuple((f["rule"], f["indicator"]) for f in (card.get("extension") or {}).get("org.cryo-cds.findings", ())),
    )


class TokenSigner:
    """An EHR client's ES384 key: its JWKS file for the service, a fresh token per request."""

    def __init__(self, workdir: Path) -> None:
        self._key = ec.generate_private_key(ec.SECP384R1())
        jwk = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True) | {"kid": "load-1", "alg": "ES384"}
        self.jwks_path = workdir / "load-jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [jwk]}))

    def server_env(self) -> dict[str, str]:
        return {
            "CDS_HOOKS_AUTH": "on",
            "CDS_HOOKS_PUBLIC_BASE_URL": LOAD_PUBLIC_BASE,
            "CDS_HOOKS_TRUSTED_ISSUERS": json.dumps([{"iss": LOAD_ISSUER, "jwks_file": str(self.jwks_path)}]),
        }

    def header(self, path: str) -> dict[str, str]:
        now = int(time.time())
        token = jwt.encode(
            {
                "iss": LOAD_ISSUER,
                "aud": LOAD_PUBLIC_BASE + path,
                "iat": now,
                "exp": now + 300,
                "jti": str(uuid.uuid4()),
            },
            self._key,
            algorithm="ES384",
            headers={"kid": "load-1", "typ": "JWT"},
        )
        return {"Authorization": f"Bearer {token}"}


def run_load(
    server: Server,
    calls: int,
    clients: int,
    *,
    kill_worker: bool,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _m: None,
    signer: TokenSigner | None = None,
) -> LoadResult:
    templates = request_templates()
    plan = schedule(calls, seed)
    results = [CallResult(i, case, str(uuid.uuid4())) for i, (case, _p) in enumerate(plan)]
    posts: list[FeedbackPost] = []
    answered: list[CallResult] = []  # 200 responses with cards, for feedback
    sent_items: list[dict[str, Any]] = []
    lock = threading.Lock()
    done = threading.Semaphore(0)
    completed = [0]
    local = threading.local()
    sessions: list[requests.Session] = []
    call_url = f"{server.base}/cds-services/{SERVICE}"
    feedback_url = f"{call_url}/feedback"
    base_headers = {"Content-Type": "application/json"}

    def headers(path: str) -> dict[str, str]:
        return base_headers if signer is None else {**base_headers, **signer.header(path)}

    def session() -> requests.Session:
        s = getattr(local, "session", None)
        if s is None:
            s = local.session = requests.Session()
            s.mount("http://", HTTPAdapter(max_retries=0))  # never re-send a call by itself
            with lock:
                sessions.append(s)
        return s

    def post_feedback(post: FeedbackPost) -> None:
        post.body_text = json.dumps({"feedback": post.items})
        started = time.perf_counter()
        while post.attempts < RETRIES:
            post.attempts += 1
            try:
                response = session().post(
                    feedback_url,
                    data=post.body_text.encode(),
                    headers=headers(f"/cds-services/{SERVICE}/feedback"),
                    timeout=60,
                )
            except requests.RequestException as exc:  # dropped by the killed worker: send again
                post.error = f"{type(exc).__name__}: {exc}"[:300]
                time.sleep(0.2 * post.attempts)
                continue
            post.status, post.error = response.status_code, None if response.ok else response.text[:300]
            break
        post.latency_s = time.perf_counter() - started

    def maybe_feedback(index: int) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        if rng.random() >= FEEDBACK_RATE:
            return
        with lock:
            if not answered:
                return
            source = rng.choice(answered)
            repeats = [rng.choice(sent_items)] if sent_items and rng.random() < REPEAT_RATE else []
            serial = len(sent_items)
        cards = rng.sample(source.cards, min(len(source.cards), rng.choice((1, 1, 2))))
        items = [make_item(card, rng, serial + n) for n, card in enumerate(cards)]
        if rng.random() < UNKNOWN_CARD_RATE:
            items.append(unknown_card_item())
        if rng.random() < 0.05:
            items.append(dict(items[0]))  # the same entry twice in one post
        items += repeats
        rng.shuffle(items)
        post = FeedbackPost(items)
        with lock:
            posts.append(post)
            sent_items.extend(items)
        post_feedback(post)

    def one_call(result: CallResult) -> None:
        body = templates[(result.case, plan[result.index][1])].replace(HOOK_INSTANCE_SLOT, result.hook_instance)
        started = time.perf_counter()
        try:
            response = session().post(
                call_url, data=body.encode(), headers=headers(f"/cds-services/{SERVICE}"), timeout=60
            )
            result.status = response.status_code
            if response.status_code == 200:
                result.cards = [_card_seen(card) for card in response.json()["cards"]]
            else:
                result.error = response.text[:300]
        except requests.RequestException as exc:
            result.status, result.error = None, f"{type(exc).__name__}: {exc}"[:300]
        except (ValueError, KeyError, TypeError) as exc:  # a 200 whose body is not a CDS response
            result.status, result.error = 0, f"bad response body: {type(exc).__name__}: {exc}"[:300]
        result.latency_s = time.perf_counter() - started
        with lock:
            completed[0] += 1
            if result.status == 200 and result.cards:
                answered.append(result)
            feedback_on = completed[0] >= calls * FEEDBACK_FROM
        done.release()
        if feedback_on:
            maybe_feedback(result.index)

    killed: dict[str, Any] = {}

    def killer() -> None:
        for _ in range(calls // 2):
            done.acquire()
        pids = worker_pids(server.process.pid)
        if not pids:
            killed["error"] = "no worker found"
            return
        victim = random.Random(seed).choice(pids)
        os.kill(victim, signal.SIGKILL)
        with lock:
            killed.update(pid=victim, at=completed[0])
        progress(f"SIGKILL worker {victim} after {completed[0]} calls (workers were {pids})")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = worker_pids(server.process.pid)
            if victim not in now and len(now) >= server.workers:
                killed["replacements"] = [p for p in now if p not in pids]
                progress(f"workers now {now}")
                return
            time.sleep(0.1)

    started = time.perf_counter()
    kill_thread = threading.Thread(target=killer, daemon=True) if kill_worker else None
    if kill_thread:
        kill_thread.start()
    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="client") as pool:
        for future in [pool.submit(one_call, result) for result in results]:
            future.result()
    wall = time.perf_counter() - started
    if kill_thread:
        kill_thread.join(timeout=70)
    for s in sessions:
        s.close()
    if kill_worker and "pid" not in killed:
        raise RuntimeError(f"no worker was killed: {killed.get('error', 'the load ended first')}")
    outcome = LoadResult(results, posts, wall, killed.get("pid"), killed.get("at"), killed.get("replacements", []))
    for result in results:
        for card in result.cards:
            outcome.card_by_uuid[card.uuid] = card
    return outcome


# -- checks ------------------------------------------------------------------------------


def _signature(cards: list[CardSeen]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(finding for c in cards for finding in (c.rules or ((c.code, c.indicator),))))


def _sample(values: Any, n: int = 3) -> str:
    values = list(values)
    return ", ".join(str(v) for v in values[:n]) + (f" (+{len(values) - n} more)" if len(values) > n else "")


def verify(db_url: str, load: LoadResult, *, kill_worker: bool, server_log: str) -> tuple[list[Check], dict[str, Any]]:
    """Compare the decision log with what the clients saw and sent."""
    checks: list[Check] = []
    facts: dict[str, Any] = {}
    rulebook = load_rulebook(ROOT / "rules")
    rule_ids = {rule.id for rule in rulebook.rules}
    n_rules = len(rulebook.rules)
    ok, dropped, http_errors = load.ok_calls, load.dropped_calls, load.http_error_calls

    # What each case returns (it is deterministic): learnt from its 200 responses.
    signatures: dict[str, set[tuple[tuple[str, str], ...]]] = defaultdict(set)
    for call in ok:
        signatures[call.case].add(_signature(call.cards))
    unstable = {case: sigs for case, sigs in signatures.items() if len(sigs) != 1}
    checks.append(Check("each case always returned the same cards", not unstable, _sample(unstable.items(), 1)))
    signature = {case: next(iter(sigs)) for case, sigs in signatures.items()}
    # a card may carry several findings: what the log holds per card is (topic code, indicator)
    card_count = {call.case: len(call.cards) for call in ok}
    card_sig = {call.case: tuple(sorted((c.code, c.indicator) for c in call.cards)) for call in ok}
    codes_seen = {card.code for call in ok for card in call.cards}
    checks.append(
        Check(
            "every card code names one rule (feedback maps to rules unambiguously)",
            codes_seen <= rule_ids,
            _sample(codes_seen - rule_ids),
        )
    )
    indicators = Counter(card.indicator for call in ok for card in call.cards)
    facts["cards by indicator"] = dict(indicators)
    facts["calls without cards"] = sum(1 for call in ok if not call.cards)
    checks.append(
        Check(
            "the mix fired critical, warning and info cards and some calls had none",
            all(indicators[k] for k in ("critical", "warning", "info")) and facts["calls without cards"] > 0,
        )
    )

    checks.append(
        Check("no call answered with an HTTP error", not http_errors, _sample((c.status, c.error) for c in http_errors))
    )
    if not kill_worker:
        checks.append(Check("no call dropped (no worker was killed)", not dropped, _sample(c.error for c in dropped)))

    store = AuditStore(db_url, PATIENT_HASH_KEY.encode())
    try:
        with store.reading() as conn:
            decisions = conn.execute(select(Decision.decision_id, Decision.hook_instance, Decision.status)).all()
            cards = conn.execute(select(Card.uuid, Card.decision_id, Card.rule_id, Card.indicator)).all()
            per = {}
            for name, model in (("orders", DecisionOrder), ("hits", RuleHit)):
                per[name] = dict(
                    conn.execute(select(model.decision_id, func.count()).group_by(model.decision_id)).all()
                )
            per["evaluations"] = dict(
                conn.execute(
                    select(Decision.decision_id, func.count())
                    .join(EvaluationSetMember, EvaluationSetMember.set_key == Decision.evaluation_set)
                    .group_by(Decision.decision_id)
                ).all()
            )
            dangling_hits = conn.execute(
                select(func.count())
                .select_from(RuleHit)
                .outerjoin(Card, Card.uuid == RuleHit.card_uuid)
                .where(RuleHit.card_uuid.is_not(None), Card.uuid.is_(None))
            ).scalar_one()
            orphans = 0
            for model in (DecisionOrder, RuleHit, Card):
                orphans += conn.execute(
                    select(func.count())
                    .select_from(model)
                    .outerjoin(Decision, Decision.decision_id == model.decision_id)
                    .where(Decision.decision_id.is_(None))
                ).scalar_one()
            feedback_rows = conn.execute(
                select(
                    Feedback.card_uuid,
                    Feedback.outcome,
                    Feedback.outcome_timestamp,
                    Feedback.accepted_suggestions,
                    Feedback.override_system,
                    Feedback.override_code,
                    Feedback.user_comment,
                    Feedback.known_card,
                    Feedback.rule_id,
                )
            ).all()
        summary = rule_summary(store)
    finally:
        store.dispose()

    # -- decisions
    by_instance: dict[str, list[Any]] = defaultdict(list)
    for row in decisions:
        by_instance[row.hook_instance].append(row)
    cards_by_decision: dict[str, list[Any]] = defaultdict(list)
    for row in cards:
        cards_by_decision[row.decision_id].append(row)
    not_one = [
        (c.hook_instance, len(by_instance.get(c.hook_instance, [])))
        for c in ok
        if len(by_instance.get(c.hook_instance, [])) != 1
    ]
    checks.append(
        Check(
            f"each of the {len(ok)} 200 responses has exactly one decision record",
            not not_one,
            f"{len(not_one)} do not, e.g. (hookInstance, records): {_sample(not_one)}",
        )
    )
    wrong_cards = []
    for call in ok:
        rows = by_instance.get(call.hook_instance, [])
        if len(rows) != 1:
            continue
        stored = {(r.uuid, r.rule_id, r.indicator) for r in cards_by_decision.get(rows[0].decision_id, [])}
        sent = {(c.uuid, c.code, c.indicator) for c in call.cards}
        if stored != sent:
            wrong_cards.append(call.hook_instance)
    checks.append(
        Check(
            "each 200 response's decision holds exactly the cards returned",
            not wrong_cards,
            f"{len(wrong_cards)} differ, e.g. {_sample(wrong_cards)}",
        )
    )
    committed_dropped = [c for c in dropped if by_instance.get(c.hook_instance)]
    twice = [c.hook_instance for c in dropped if len(by_instance.get(c.hook_instance, [])) > 1]
    facts["dropped calls"] = len(dropped)
    facts["dropped calls whose decision was committed"] = len(committed_dropped)
    if dropped or kill_worker:
        checks.append(
            Check(f"each of the {len(dropped)} dropped calls left at most one decision", not twice, _sample(twice))
        )
    known = {c.hook_instance for c in load.calls}
    strays = [h for h in by_instance if h not in known]
    expected_rows = len(ok) + len(committed_dropped)
    checks.append(
        Check(
            f"decision rows ({len(decisions)}) == 200 responses ({len(ok)}) + committed dropped calls "
            f"({len(committed_dropped)}), none unaccounted for",
            len(decisions) == expected_rows and not strays,
            f"strays: {_sample(strays)}",
        )
    )
    call_by_instance = {c.hook_instance: c for c in load.calls}
    partial = []
    hits_by_case: dict[str, set[int]] = defaultdict(set)  # a rule may hit more than once per card
    for row in decisions:
        call = call_by_instance.get(row.hook_instance)
        if call is None or call.case not in signature:
            continue
        case, sig = CASE_BY_NAME[call.case], signature[call.case]
        hits = per["hits"].get(row.decision_id, 0)
        hits_by_case[call.case].add(hits)
        want = {
            "orders": 1 if case.cryo else 0,
            "evaluations": n_rules if case.cryo else 0,
            "cards": card_count.get(call.case, len(sig)),
        }
        got = {
            "orders": per["orders"].get(row.decision_id, 0),
            "evaluations": per["evaluations"].get(row.decision_id, 0),
            "cards": len(cards_by_decision.get(row.decision_id, [])),
        }
        if (
            got != want
            or hits < len(sig)
            or row.status != 200
            or _signature_rows(cards_by_decision.get(row.decision_id, [])) != card_sig.get(call.case, sig)
        ):
            partial.append((row.hook_instance, got, want))
    uneven_hits = {case: sorted(counts) for case, counts in hits_by_case.items() if len(counts) != 1}
    if uneven_hits:
        partial.append(("rule hits per decision differ within a case", uneven_hits))
    missing_sig = [c.hook_instance for c in committed_dropped if c.case not in signature]
    checks.append(
        Check(
            "every decision row is complete (orders, evaluations, hits, cards), none orphaned",
            not partial and not dangling_hits and not orphans and not missing_sig,
            f"partial: {_sample(partial, 2)}; hits without card: {dangling_hits}; orphans: {orphans}",
        )
    )

    # -- feedback
    confirmed = [p for p in load.posts if p.status == 200]
    failed_posts = [p for p in load.posts if p.status != 200]
    sent_keys = [item_key(item) for post in confirmed for item in post.items]
    distinct = {item_key(item): item for post in confirmed for item in post.items}
    facts["feedback posts"] = len(load.posts)
    facts["feedback posts retried"] = sum(1 for p in load.posts if p.attempts > 1)
    facts["feedback items sent"] = len(sent_keys)
    facts["feedback items distinct"] = len(distinct)
    checks.append(
        Check(
            "every feedback post was accepted (200), after retries of dropped ones",
            not failed_posts,
            _sample((p.status, p.error) for p in failed_posts),
        )
    )
    row_counts = Counter(row_key(row) for row in feedback_rows)
    extra = [k for k, n in row_counts.items() if k not in distinct or n > 1]
    absent = [k for k in distinct if k not in row_counts]
    checks.append(
        Check(
            f"feedback rows ({len(feedback_rows)}) == distinct feedback items sent ({len(distinct)}), "
            f"one row each ({len(sent_keys) - len(distinct)} re-sent items stored once)",
            len(feedback_rows) == len(distinct) and not extra and not absent,
            f"extra/duplicated: {_sample(extra, 2)}; missing: {_sample(absent, 2)}",
        )
    )
    client_cards = load.card_by_uuid
    wrong_link = [
        row.card_uuid
        for row in feedback_rows
        if bool(row.known_card) != (row.card_uuid in client_cards)
        or (row.card_uuid in client_cards and row.rule_id != client_cards[row.card_uuid].code)
    ]
    checks.append(
        Check(
            "feedback joined to the right card and rule (unknown cards kept, flagged)",
            not wrong_link,
            _sample(wrong_link),
        )
    )

    # -- the summary
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for call in ok + committed_dropped:
        if call.case not in signature:
            continue
        if CASE_BY_NAME[call.case].cryo:
            for rule_id in rule_ids:
                expected[rule_id]["evaluations"] += 1
        for code, _indicator in signature[call.case]:
            expected[code]["fires"] += 1
            expected[code]["cards"] += 1
    for key, item in distinct.items():
        card = client_cards.get(item["card"])
        if card is None:
            continue
        for rule_id in dict.fromkeys(r for r, _ in card.rules or ((card.code, card.indicator),)):
            # feedback on a card counts for every rule it carries
            expected[rule_id][item["outcome"]] += 1
            if key[6] is not None:
                expected[rule_id]["comments"] += 1
            if item["outcome"] == "overridden" and key[5] is not None:
                reasons[rule_id][(key[5], key[4])] += 1
    fields = ("evaluations", "fires", "cards", "accepted", "overridden", "comments")
    actual = {row["rule_id"]: row for row in summary}
    mismatches = []
    for rule_id in sorted(set(actual) | {r for r, c in expected.items() if any(c.values())}):
        row = actual.get(rule_id, {})
        for name in fields:
            if row.get(name, 0) != expected[rule_id][name]:
                mismatches.append(f"{rule_id}.{name}: summary {row.get(name, 0)} != sent {expected[rule_id][name]}")
        want_top = [
            (code, system, n)
            for (code, system), n in sorted(reasons[rule_id].items(), key=lambda kv: (-kv[1], kv[0][0]))
        ][:5]
        got_top = [(r["code"], r["system"], r["count"]) for r in row.get("top_override_reasons", [])]
        if got_top != want_top:
            mismatches.append(f"{rule_id}.top_override_reasons: {got_top} != {want_top}")
    totals = {
        name: (sum(int(r[name]) for r in summary), sum(c[name] for c in expected.values()))
        for name in ("fires", "accepted", "overridden")
    }
    facts["summary totals (summary, sent)"] = totals
    checks.append(
        Check(
            "rule_summary equals what the clients saw and sent (evaluations, fires, cards, accepted, "
            "overridden, comments, top override reasons)",
            not mismatches,
            "; ".join(mismatches[:6]),
        )
    )

    # -- the server
    failures = server_log.count("audit write failed")
    tracebacks = server_log.count("Traceback")
    checks.append(
        Check(
            "server log: no audit write failure, no traceback",
            failures == 0 and tracebacks == 0,
            f"{failures} 'audit write failed', {tracebacks} tracebacks",
        )
    )
    if kill_worker:
        checks.append(
            Check(
                f"worker {load.killed_pid} was SIGKILLed (after {load.killed_at_call} calls) and replaced",
                load.killed_pid is not None and bool(load.replacement_pids),
                f"replacements: {load.replacement_pids}",
            )
        )
    return checks, facts


def _signature_rows(rows: list[Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((r.rule_id, r.indicator) for r in rows))


def check_usable(server: Server, db_url: str, signer: TokenSigner | None = None) -> list[Check]:
    """After the load: one more call and one feedback post are served and recorded."""
    checks = []
    body = case_request(CASES[1].case)

    def auth(path: str) -> dict[str, str]:
        return {} if signer is None else signer.header(path)

    with requests.Session() as s:
        response = s.post(
            f"{server.base}/cds-services/{SERVICE}", json=body, timeout=30, headers=auth(f"/cds-services/{SERVICE}")
        )
        cards = response.json().get("cards", []) if response.status_code == 200 else []
        feedback_status = None
        if cards:
            item = {
                "card": cards[0]["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": datetime.now(UTC).isoformat(),
                "overrideReason": {"userComment": "after the load"},
            }
            feedback_status = s.post(
                f"{server.base}/cds-services/{SERVICE}/feedback",
                json={"feedback": [item]},
                timeout=30,
                headers=auth(f"/cds-services/{SERVICE}/feedback"),
            ).status_code
    store = AuditStore(db_url, PATIENT_HASH_KEY.encode())
    try:
        with store.reading() as conn:
            ids = (
                conn.execute(select(Decision.decision_id).where(Decision.hook_instance == body["hookInstance"]))
                .scalars()
                .all()
            )
            stored_cards = conn.execute(
                select(func.count()).select_from(Card).where(Card.decision_id.in_(ids))
            ).scalar_one()
            stored_feedback = conn.execute(
                select(func.count())
                .select_from(Feedback)
                .where(Feedback.card_uuid == (cards[0]["uuid"] if cards else ""), Feedback.known_card.is_(True))
            ).scalar_one()
            if conn.dialect.name == "sqlite":
                integrity = conn.execute(text("PRAGMA integrity_check")).scalar_one()
            else:
                integrity = "ok"
                for _ in range(20):  # the killed worker's sessions must not stay open in a transaction
                    stuck = conn.execute(
                        text(
                            "select count(*) from pg_stat_activity where datname = current_database() "
                            "and state like 'idle in transaction%' and pid <> pg_backend_pid()"
                        )
                    ).scalar_one()
                    if not stuck:
                        break
                    time.sleep(0.25)
                else:
                    integrity = f"{stuck} sessions idle in transaction"
    finally:
        store.dispose()
    checks.append(
        Check(
            "database usable afterwards: one more call (200) and its feedback are recorded",
            response.status_code == 200
            and len(ids) == 1
            and stored_cards == len(cards) > 0
            and feedback_status == 200
            and stored_feedback == 1,
            f"status {response.status_code}, decisions {len(ids)}, cards {stored_cards}/{len(cards)}, "
            f"feedback {feedback_status}/{stored_feedback}",
        )
    )
    checks.append(
        Check(
            "database consistent afterwards (SQLite integrity_check / no PostgreSQL session left idle in transaction)",
            integrity == "ok",
            str(integrity),
        )
    )
    return checks


# -- figures and the whole run -----------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Report:
    db: str
    calls: int
    clients: int
    workers: int
    kill_worker: bool
    load: LoadResult
    checks: list[Check]
    facts: dict[str, Any]
    server_log: str = ""

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def figures(self) -> dict[str, Any]:
        ok_latencies = [c.latency_s * 1000 for c in self.load.calls if c.status == 200]
        fb = [p.latency_s * 1000 for p in self.load.posts if p.status == 200]
        return {
            "wall_s": round(self.load.wall_s, 2),
            "calls_per_s": round(len(self.load.calls) / self.load.wall_s, 1),
            "requests_per_s (calls + feedback posts)": round(
                (len(self.load.calls) + len(self.load.posts)) / self.load.wall_s, 1
            ),
            "call latency ms p50/p90/p99/max": [round(percentile(ok_latencies, q), 1) for q in (50, 90, 99, 100)],
            "feedback latency ms p50/p99/max": [round(percentile(fb, q), 1) for q in (50, 99, 100)],
            "calls 200": len(self.load.ok_calls),
            "calls dropped (connection lost)": len(self.load.dropped_calls),
            "calls HTTP error": len(self.load.http_error_calls),
            "feedback posts failed": sum(1 for p in self.load.posts if p.status != 200),
        }

    def render(self) -> str:
        lines = [
            f"== load: {self.db}, {self.calls} calls, {self.clients} clients, {self.workers} gunicorn workers "
            f"(gthread x4, --preload){', one worker SIGKILLed mid-load' if self.kill_worker else ''}"
        ]
        for key, value in {**self.figures(), **self.facts}.items():
            lines.append(f"  {key}: {value}")
        for check in self.checks:
            lines.append(
                f"  [{'PASS' if check.ok else 'FAIL'}] {check.name}"
                + (f"\n         {check.detail}" if not check.ok and check.detail else "")
            )
        lines.append(f"  => {'all checks passed' if self.ok else 'CHECKS FAILED'}")
        return "\n".join(lines)


def run(
    db: str,
    calls: int,
    clients: int,
    workers: int,
    *,
    kill_worker: bool,
    threads: int = 4,
    workdir: Path | None = None,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _m: None,
    auth: bool = False,
) -> Report:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cryo-load-")))
        db_url = stack.enter_context(throwaway_database(db, workdir))
        signer = TokenSigner(workdir) if auth else None
        with gunicorn(db_url, workers, threads, workdir, env_extra=signer.server_env() if signer else None) as server:
            progress(f"gunicorn up at {server.base}, workers {worker_pids(server.process.pid)}")
            load = run_load(
                server, calls, clients, kill_worker=kill_worker, seed=seed, progress=progress, signer=signer
            )
            progress(f"load done in {load.wall_s:.1f} s; verifying")
            alive = server.process.poll() is None
            checks, facts = verify(db_url, load, kill_worker=kill_worker, server_log=server.log_text())
            checks.append(Check("gunicorn master still running after the load", alive))
            if alive:
                checks += check_usable(server, db_url, signer)
        report = Report(db, calls, clients, workers, kill_worker, load, checks, facts, server.log_text())
        facts["server log lines"] = report.server_log.count("\n")
        facts["JWT checks"] = "on: fresh ES384 token per request, shared jti check" if auth else "off"
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--kill-worker", action="store_true", help="SIGKILL one gunicorn worker halfway through")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--auth", action="store_true", help="JWT checks on: a fresh ES384 token per request")
    args = parser.parse_args(argv)
    if args.workers < 2 and args.kill_worker:
        parser.error("--kill-worker needs at least 2 workers")
    report = run(
        args.db,
        args.calls,
        args.clients,
        args.workers,
        kill_worker=args.kill_worker,
        threads=args.threads,
        seed=args.seed,
        progress=lambda m: print(f"  .. {m}", flush=True),
        auth=args.auth,
    )
    print(report.render(), flush=True)
    if not report.ok:
        saved = Path(tempfile.gettempdir()) / f"cryo-load-{args.db}-{os.getpid()}.log"
        saved.write_text(report.server_log, encoding="utf-8")
        print(f"  server log kept at {saved}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
