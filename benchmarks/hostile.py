"""Hostile-request run (issue 12): the service under gunicorn (2 workers, JWT on, multiprocess
metrics, the shipped gunicorn settings) against ≥ 5,000 hostile requests, then the figures the
issue checks. Run:

    .venv/bin/python benchmarks/hostile.py [--db sqlite|postgresql] [--scale 1.0] [--clients 8]

Attacks: oversize and chunked bodies, huge integers, NUL / lone surrogates / over-length fields,
bad tokens (none, wrong key, expired, wrong audience, garbage, huge exp, tenant list, foreign
jku, replay, missing), tokens in query strings, %0A / %00 paths, feedback floods, FHIR servers
that drip headers or body, send a gigabyte or JSON no parser should take, redirects, ``next``
links (served or prefetched) to another host, user-info and dot-segment URLs, servers outside
the allow-list, link-local metadata addresses. Hostile FHIR servers and the foreign origin run
in this process on loopback.

Printed: answers by status class per attack (5xx must be 0), the slowest hostile-FHIR call
against the fetch budget + 1 s, worker RSS growth, requests and tokens that reached the foreign
origin or stepped out of an allowed path (0), tokens and forged lines in the access log (0),
decision rows against answers that must leave one, and the metric families exposed.

The gunicorn start-up, databases and tokens come from tests/support (load.py, jwt_helpers.py,
hostile_fhir.py); nothing here is a second copy of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The checkout, not this folder, goes first: benchmarks/http.py would shadow the standard library.
sys.path[0] = str(ROOT)

import requests
from flask import Flask
from flask import request as incoming
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from cds_hooks.audit.models import Decision
from cds_hooks.devtools.fhir_server import create_fhir_app, load_resources
from tests.support import load as harness
from tests.support.hostile_fhir import (
    UNPARSABLE_ANSWERS,
    Firehose,
    HostileServer,
    answer_with,
    dripping_body,
    foreign_next_app,
    redirect_to,
    slow_headers,
)
from tests.support.jwt_helpers import b64url, compact, jwks, make_keypair, sign_token
from tests.support.loopback import LoopbackServer

PACEMAKER = ROOT / "fhir_fixtures" / "requests" / "02-pacemaker-whole-body-order-sign.json"
ISS = "https://ehr.hostile.example"
PUBLIC_BASE = "https://cds.hostile.example"
SIGN = "/cds-services/cryotherapy-order-sign"
FEEDBACK = SIGN + "/feedback"
AUDIT_TOKEN = "hostile-audit-token-0123456789abcdef"
ACCESS_TOKEN = f"hostile-fhir-access-token-{uuid.uuid4().hex}"
URL_SECRET = f"URLSECRET{uuid.uuid4().hex[:12]}"
FETCH_BUDGET_S = 2.0
CALL_DEADLINE_S = 3.0
MAX_BODY_BYTES = 2_000_000
METRIC_FAMILIES = (
    "cryo_cds_calls",
    "cryo_cds_step_seconds",
    "cryo_cds_cards",
    "cryo_cds_audit_write_failures",
    "cryo_cds_audit_spool_depth",
    "cryo_cds_fhir_fetches",
)


@dataclass
class Answer:
    attack: str
    status: int | None  # None: no HTTP answer (connection reset, client timeout)
    seconds: float
    hostile_fhir: bool
    call: bool  # a hook call (leaves a decision row when answered 200 or 412)
    error: str = ""


@dataclass
class Origins:
    """The loopback servers the service is pointed at, and what reached the ones it must not call."""

    foreign_hits: list[tuple[str, str]] = field(default_factory=list)  # (path, Authorization)
    path_hits: list[str] = field(default_factory=list)
    servers: list[Any] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for server in self.servers:
            if isinstance(server, HostileServer):
                server.close()
            else:
                server.stop()


def start_origins() -> Origins:
    origins = Origins()

    foreign = Flask("foreign")

    @foreign.route("/", defaults={"path": ""})
    @foreign.route("/<path:path>")
    def anything(path: str) -> Any:
        origins.foreign_hits.append((path, incoming.headers.get("Authorization", "")))
        return {"resourceType": "Bundle", "type": "searchset", "entry": []}

    pathsite = Flask("pathsite")

    @pathsite.route("/", defaults={"path": ""})
    @pathsite.route("/<path:path>")
    def record_path(path: str) -> Any:
        origins.path_hits.append("/" + path)
        return {"resourceType": "Bundle", "type": "searchset", "entry": []}

    foreign_server = LoopbackServer(foreign)
    good = LoopbackServer(create_fhir_app(load_resources([PACEMAKER])))
    paged = foreign_next_app(load_resources([PACEMAKER]), foreign_server.url)

    servers = {
        "foreign": foreign_server,
        "good": good,
        "paged": LoopbackServer(paged),
        "pathsite": LoopbackServer(pathsite),
        "slow-headers": HostileServer(slow_headers),
        "dripping-body": HostileServer(dripping_body),
        "firehose": HostileServer(Firehose()),
        "redirect": HostileServer(redirect_to(foreign_server.url + "/Patient/x")),
        "deep-nesting": HostileServer(answer_with(UNPARSABLE_ANSWERS["deep nesting"])),
        "huge-integer": HostileServer(answer_with(UNPARSABLE_ANSWERS["huge integer"])),
    }
    origins.servers = list(servers.values())
    origins.urls = {name: server.url for name, server in servers.items()}
    return origins


def allow_list(origins: Origins) -> list[str]:
    """The issuer's fhir_servers: every loopback server but the foreign one; pathsite only under /fhir."""
    names = ("good", "paged", "slow-headers", "dripping-body", "firehose", "redirect", "deep-nesting", "huge-integer")
    return [origins.urls[n] for n in names] + [origins.urls["pathsite"] + "/fhir"]


class Client:
    """Signs tokens as the EHR would (tests/support/jwt_helpers.py) and builds attack requests."""

    def __init__(self, workdir: Path) -> None:
        self.key, public = make_keypair("ES384", kid="hostile-1")
        self.kid = public["kid"]
        self.other_key, _ = make_keypair("ES384", kid="hostile-1")  # same kid, wrong key
        self.jwks_path = workdir / "client-jwks.json"
        self.jwks_path.write_text(json.dumps(jwks(public)))
        self.template = json.loads(PACEMAKER.read_text())

    def token(self, path: str, *, key: Any = None, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        return sign_token(key or self.key, "ES384", self.kid, ISS, PUBLIC_BASE + path, headers=headers, **claims)

    def auth(self, path: str, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(path, **kwargs)}"}

    def body(self, **changes: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(self.template))
        body["hookInstance"] = str(uuid.uuid4())
        body.update(changes)
        return body

    def without_prefetch(self, fhir_server: str) -> dict[str, Any]:
        body = self.body(fhirServer=fhir_server)
        del body["prefetch"]
        body["fhirAuthorization"] = {
            "access_token": ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cryo-cds",
        }
        return body


def raw_json(body: dict[str, Any], replacements: dict[str, str]) -> bytes:
    """JSON text with placeholders swapped for raw JSON (escapes json.dumps will not write)."""
    text = json.dumps(body)
    for placeholder, raw in replacements.items():
        text = text.replace(json.dumps(placeholder), raw)
    return text.encode()


def feedback_item(card: str | None = None, comment: str = "assessed") -> dict[str, Any]:
    return {
        "card": card or str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-12-01T10:00:00Z",
        "overrideReason": {"userComment": comment},
    }


Request = dict[str, Any]  # keyword arguments of requests.request, plus "attack" and "hostile_fhir"


def attacks(client: Client, origins: Origins) -> dict[str, tuple[int, Callable[[], list[Request]]]]:
    """Attack name -> (how many, a maker of the request(s) of one attack)."""
    u = origins.urls
    foreign_port = u["foreign"].rsplit(":", 1)[1]
    good_port = u["good"].rsplit(":", 1)[1]

    def call(body: dict[str, Any] | bytes, *, headers: dict[str, str] | None = None, fhir: bool = False) -> Request:
        extra = {"json": body} if isinstance(body, dict) else {"data": body}
        return {
            "method": "POST",
            "url": SIGN,
            "headers": {"Content-Type": "application/json", **(client.auth(SIGN) if headers is None else headers)},
            "hostile_fhir": fhir,
            **extra,
        }

    def fetch_from(name: str, path: str = "") -> Callable[[], list[Request]]:
        return lambda: [call(client.without_prefetch(u[name] + path), fhir=True)]

    def placeholder(where: str, raw: str) -> Callable[[], list[Request]]:
        def make() -> list[Request]:
            body = client.body()
            if where == "patientId":
                body["context"]["patientId"] = "PLACEHOLDER"
            elif where == "extension":
                body["extension"] = {"n": "PLACEHOLDER"}
            else:
                body[where] = "PLACEHOLDER"
            return [call(raw_json(body, {"PLACEHOLDER": raw}))]

        return make

    def bad_token(make_token: Callable[[], str]) -> Callable[[], list[Request]]:
        return lambda: [call(client.body(), headers={"Authorization": f"Bearer {make_token()}"})]

    def replay() -> list[Request]:
        headers = client.auth(SIGN)
        return [call(client.body(), headers=headers), call(client.body(), headers=headers)]

    def unsigned() -> str:
        header = {"alg": "none", "typ": "JWT", "kid": client.kid}
        now = int(time.time())
        payload = {"iss": ISS, "aud": PUBLIC_BASE + SIGN, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        return compact(header, payload) + "."

    def huge_exp() -> str:
        header = {"alg": "ES384", "typ": "JWT", "kid": client.kid}
        payload = {"iss": ISS, "aud": PUBLIC_BASE + SIGN, "iat": 1, "exp": 10**400, "jti": str(uuid.uuid4())}
        return compact(header, payload) + "." + b64url(b"\x00" * 96)

    def oversize() -> list[Request]:
        return [call(b'{"pad": "' + b"x" * (MAX_BODY_BYTES + 100_000) + b'"}')]

    def chunked() -> list[Request]:
        def chunks() -> Any:
            yield b'{"pad": "'
            for _ in range(MAX_BODY_BYTES // 50_000 + 4):
                yield b"x" * 50_000
            yield b'"}'

        return [call(chunks())]  # type: ignore[arg-type]

    def query_token() -> list[Request]:
        name = random.choice(["access_token", "token", "id_token", "jwt"])
        return [{"method": "GET", "url": f"/cds-services?{name}={URL_SECRET}", "hostile_fhir": False}]

    def forged_path() -> list[Request]:
        tail = random.choice(["%0AFORGED-LINE 200", "%0D%0AFORGED-LINE", "%00FORGED-LINE", "%0a%00%0dFORGED-LINE"])
        return [{"method": "GET", "url": f"/cds-services/x{tail}", "hostile_fhir": False}]

    def feedback(items: list[dict[str, Any]] | bytes) -> Callable[[], list[Request]]:
        def make() -> list[Request]:
            extra = {"json": {"feedback": items}} if isinstance(items, list) else {"data": items}
            return [
                {
                    "method": "POST",
                    "url": FEEDBACK,
                    "headers": {"Content-Type": "application/json", **client.auth(FEEDBACK)},
                    "hostile_fhir": False,
                    **extra,
                }
            ]

        return make

    prefetch_next = client.body(fhirServer=u["good"])
    prefetch_next["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer"}
    prefetch_next["prefetch"]["observations"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [],
        "link": [{"relation": "next", "url": u["foreign"] + "/Observation?p=2"}],
    }

    def prefetched_next() -> list[Request]:
        return [call(dict(prefetch_next, hookInstance=str(uuid.uuid4())), fhir=True)]

    return {
        # control: well-formed calls and feedback
        "valid call": (800, lambda: [call(client.body())]),
        "feedback, 100 items": (150, feedback([feedback_item() for _ in range(100)])),
        # bodies and bytes
        "body over the limit (Content-Length)": (150, oversize),
        "chunked body over the limit": (150, chunked),
        "feedback flood, 12,000 items": (
            100,
            feedback([{"card": str(uuid.uuid4()), "outcome": "accepted"} for _ in range(12_000)]),
        ),
        "huge integer in a call": (250, placeholder("extension", "1" * 5000)),
        "huge integer in feedback": (
            100,
            feedback(raw_json({"feedback": [dict(feedback_item(), n="PLACEHOLDER")]}, {"PLACEHOLDER": "9" * 5000})),
        ),
        "hookInstance over 128 characters": (150, placeholder("hookInstance", json.dumps("h" * 129))),
        "hookInstance with NUL": (150, placeholder("hookInstance", '"abc\\u0000def"')),
        "hookInstance with a lone surrogate": (150, placeholder("hookInstance", '"abc\\ud800"')),
        "patientId with a lone surrogate": (150, placeholder("patientId", '"p\\udfff"')),
        "feedback field with NUL and a surrogate": (
            150,
            feedback(
                raw_json({"feedback": [feedback_item(comment="PLACEHOLDER")]}, {"PLACEHOLDER": '"a\\u0000\\ud800"'})
            ),
        ),
        # tokens
        "token: alg none": (150, bad_token(unsigned)),
        "token: wrong key, same kid": (150, bad_token(lambda: client.token(SIGN, key=client.other_key))),
        "token: expired": (150, bad_token(lambda: client.token(SIGN, now=time.time() - 3600))),
        "token: wrong audience": (150, bad_token(lambda: client.token(FEEDBACK))),
        "token: garbage": (150, bad_token(lambda: "not.a.token" + "A" * random.randint(0, 500))),
        "token: huge exp": (100, bad_token(huge_exp)),
        "token: tenant is a list": (100, bad_token(lambda: client.token(SIGN, tenant=["a", "b"]))),
        "token: jku at the foreign origin, wrong key": (
            150,
            bad_token(lambda: client.token(SIGN, key=client.other_key, headers={"jku": u["foreign"] + "/jwks.json"})),
        ),
        "token: replayed (2 requests)": (150, replay),
        "token: missing": (100, lambda: [call(client.body(), headers={})]),
        "token in the query string": (300, query_token),
        "%0A / %00 in the path": (300, forged_path),
        # hostile FHIR servers and URLs
        "FHIR: slow headers": (80, fetch_from("slow-headers")),
        "FHIR: dripping body": (80, fetch_from("dripping-body")),
        "FHIR: 1 GB body": (40, fetch_from("firehose")),
        "FHIR: redirect to another host": (60, fetch_from("redirect")),
        "FHIR: answer nested 200,000 deep": (40, fetch_from("deep-nesting")),
        "FHIR: answer with a 5,000-digit integer": (40, fetch_from("huge-integer")),
        "FHIR: next link to another host": (80, fetch_from("paged")),
        "FHIR: prefetched next link to another host": (80, prefetched_next),
        "FHIR: user-info URL": (
            100,
            lambda: [call(client.without_prefetch(f"http://127.0.0.1:{good_port}@127.0.0.1:{foreign_port}/"))],
        ),
        "FHIR: server not allow-listed": (60, fetch_from("foreign")),
        "FHIR: link-local metadata address": (
            60,
            lambda: [call(client.without_prefetch("http://169.254.169.254/latest/meta-data"), fhir=True)],
        ),
        "FHIR: dot segments out of the allowed path": (60, fetch_from("pathsite", "/fhir/../admin")),
        "FHIR: path prefix of the allowed path": (60, fetch_from("pathsite", "/fhirx")),
    }


def send(base: str, req: Request, attack: str) -> Answer:
    kwargs = {k: v for k, v in req.items() if k not in ("hostile_fhir",)}
    is_call = kwargs["url"] == SIGN
    kwargs["url"] = base + kwargs["url"]
    started = time.monotonic()
    try:
        with requests.Session() as session:  # a connection per request: both workers serve
            response = session.request(timeout=60, allow_redirects=False, **kwargs)
        return Answer(attack, response.status_code, time.monotonic() - started, req["hostile_fhir"], is_call)
    except requests.RequestException as exc:
        return Answer(attack, None, time.monotonic() - started, req["hostile_fhir"], is_call, type(exc).__name__)


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def scrape(base: str) -> set[str]:
    text = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}, timeout=30).text
    return {family.name for family in text_string_to_metric_families(text)}


def decision_rows(db_url: str) -> tuple[int, float]:
    """How many decisions the log holds, and the longest server-side call latency among them (s)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            count, slowest = conn.execute(select(func.count(), func.max(Decision.latency_ms))).one()
            return int(count), float(slowest or 0) / 1000
    finally:
        engine.dispose()


def run(db: str, scale: float, clients: int, seed: int) -> int:
    random.seed(seed)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the loopback servers' request lines
    with tempfile.TemporaryDirectory(prefix="cryo-hostile-") as tmp:
        workdir = Path(tmp)
        origins = start_origins()
        client = Client(workdir)
        metrics_dir = workdir / "prometheus"
        metrics_dir.mkdir()
        env = {
            "CDS_HOOKS_AUTH": "on",
            "CDS_HOOKS_PUBLIC_BASE_URL": PUBLIC_BASE,
            "CDS_HOOKS_TRUSTED_ISSUERS": json.dumps(
                [{"iss": ISS, "jwks_file": str(client.jwks_path), "fhir_servers": allow_list(origins)}]
            ),
            "CDS_HOOKS_AUDIT_TOKEN": AUDIT_TOKEN,
            "CDS_HOOKS_SPOOL_DIR": str(workdir / "spool"),
            "CDS_HOOKS_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "CDS_HOOKS_FETCH_BUDGET_S": str(FETCH_BUDGET_S),
            "CDS_HOOKS_CALL_DEADLINE_S": str(CALL_DEADLINE_S),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        plan = [
            (name, make)
            for name, (count, make) in attacks(client, origins).items()
            for _ in range(max(1, round(count * scale)))
        ]
        random.shuffle(plan)
        try:
            with (
                harness.throwaway_database(db, workdir) as db_url,
                harness.gunicorn(
                    db_url,
                    2,
                    4,
                    workdir,
                    env_extra=env,
                    args_extra=("-c", "python:cds_hooks.gunicorn_conf", "--access-logfile", "-"),
                ) as server,
            ):
                pids = harness.worker_pids(server.process.pid)
                for _ in range(20):  # warm both workers before taking the baseline
                    send(
                        server.base,
                        {
                            "method": "POST",
                            "url": SIGN,
                            "hostile_fhir": False,
                            "headers": client.auth(SIGN),
                            "json": client.body(),
                        },
                        "warm-up",
                    )
                rss_before = {pid: rss_kib(pid) for pid in pids}
                rows_before, _ = decision_rows(db_url)
                started = time.monotonic()
                answers: list[Answer] = []
                rss_half: dict[int, int] = {}
                with ThreadPoolExecutor(max_workers=clients) as pool:
                    # Two halves, RSS read between them: retained allocator memory levels off, a leak does not.
                    for half in (plan[: len(plan) // 2], plan[len(plan) // 2 :]):
                        batches = pool.map(lambda item: [send(server.base, r, item[0]) for r in item[1]()], half)
                        answers += [a for batch in batches for a in batch]
                        rss_half = rss_half or {pid: rss_kib(pid) for pid in pids}
                wall = time.monotonic() - started
                rss_after = {pid: rss_kib(pid) for pid in pids}
                peak = {pid: rss_kib(pid, "VmHWM") for pid in pids}
                families = scrape(server.base)
                alive = sorted(harness.worker_pids(server.process.pid)) == sorted(pids)
                log_text = server.log_text()
                rows_after, server_slowest = decision_rows(db_url)
                rows = rows_after - rows_before
        finally:
            origins.close()
        spooled = len(list((workdir / "spool").glob("**/*.json"))) if (workdir / "spool").exists() else 0
    print(
        report(
            answers,
            wall,
            rss_before,
            rss_half,
            rss_after,
            peak,
            families,
            alive,
            log_text,
            (rows, spooled, server_slowest),
            origins,
            db,
        )
    )
    fivexx = sum(1 for a in answers if a.status is not None and a.status >= 500)
    return 0 if fivexx == 0 else 1


def report(
    answers: list[Answer],
    wall: float,
    rss_before: dict[int, int],
    rss_half: dict[int, int],
    rss_after: dict[int, int],
    peak: dict[int, int],
    families: set[str],
    alive: bool,
    log_text: str,
    log_rows: tuple[int, int, float],
    origins: Origins,
    db: str,
) -> str:
    by_attack: dict[str, Counter[str]] = defaultdict(Counter)
    slowest: dict[str, float] = defaultdict(float)
    for a in answers:
        by_attack[a.attack][f"{a.status // 100}xx" if a.status else f"no answer ({a.error})"] += 1
        slowest[a.attack] = max(slowest[a.attack], a.seconds)
    classes = Counter(f"{a.status // 100}xx" if a.status else "no answer" for a in answers)
    statuses = Counter(a.status for a in answers)
    hostile = [a.seconds for a in answers if a.hostile_fhir]
    bypass_paths = [p for p in origins.path_hits if not (p == "/fhir" or p.startswith("/fhir/"))]
    tokens_abroad = sum(1 for _path, auth in origins.foreign_hits if ACCESS_TOKEN in auth)
    forged = sum(1 for line in log_text.splitlines() if line.lstrip().startswith("FORGED-LINE"))
    rows, spooled, server_slowest = log_rows
    must_have_rows = sum(1 for a in answers if a.call and a.status in (200, 412))
    others = [a.seconds for a in answers if not a.hostile_fhir]
    slowest_fhir = max(hostile, default=0.0)
    lines = [
        f"hostile run: {len(answers)} requests in {wall:.0f} s, gunicorn 2 workers x 4 threads, JWT on, "
        f"database {db}, fetch budget {FETCH_BUDGET_S:g} s, call deadline {CALL_DEADLINE_S:g} s",
        "",
        "answers by status class: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items())),
        "answers by status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))),
        "",
        f"{'attack':<48} {'answers':<34} slowest",
    ]
    for attack in sorted(by_attack):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(by_attack[attack].items()))
        lines.append(f"{attack:<48} {counts:<34} {slowest[attack]:.2f} s")
    growth = {pid: (rss_after[pid] - rss_before[pid]) / 1024 for pid in rss_before}
    lines += [
        "",
        f"5xx answers: {classes.get('5xx', 0)} (must be 0); no HTTP answer: {classes.get('no answer', 0)}",
        f"hostile-FHIR calls: {len(hostile)}, slowest {slowest_fhir:.2f} s at the client: against fetch budget"
        f" + 1 s = {FETCH_BUDGET_S + 1:.1f} s {_verdict(slowest_fhir, FETCH_BUDGET_S + 1)}, against call"
        f" deadline + 1 s = {CALL_DEADLINE_S + 1:.1f} s {_verdict(slowest_fhir, CALL_DEADLINE_S + 1)}"
        f" (slowest other answer {max(others, default=0):.2f} s: queueing on this machine)",
        f"slowest call inside the service (decision rows' latency): {server_slowest:.2f} s",
        "worker RSS MiB (before -> half-way -> after, peak): "
        + "; ".join(
            f"pid {pid}: {rss_before[pid] / 1024:.0f} -> {rss_half[pid] / 1024:.0f} -> {rss_after[pid] / 1024:.0f}"
            f" (+{growth[pid]:.0f}), "
            f"peak {peak[pid] / 1024:.0f}"
            for pid in sorted(rss_before)
        )
        + f"; largest growth {max(growth.values(), default=0):.0f} MiB (limit 100); same workers throughout: {alive}",
        f"requests that reached the foreign origin (allow-list bypasses): {len(origins.foreign_hits)}",
        f"requests outside the allowed path /fhir on an allowed origin: {len(bypass_paths)}",
        f"access tokens seen by the foreign origin: {tokens_abroad}",
        f"query-string tokens in the server log: {log_text.count(URL_SECRET)}; "
        f"access tokens in the server log: {log_text.count(ACCESS_TOKEN)}; forged log lines: {forged}",
        f"decision rows written: {rows} (+ {spooled} spooled) for {must_have_rows} hook-call answers that leave"
        " one (200 and 412); none for the other 4xx",
        "metric families exposed: "
        + ", ".join(f"{name} {'yes' if name in families else 'MISSING'}" for name in METRIC_FAMILIES),
    ]
    return "\n".join(lines)


def _verdict(value: float, limit: float) -> str:
    return "within" if value <= limit else "OVER"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every attack's count (1.0: 5,390 requests)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args(argv)
    if args.db == "postgresql" and (why := harness.postgres_reachable()):
        print(why, file=sys.stderr)
        return 2
    socket.setdefaulttimeout(120)
    return run(args.db, args.scale, args.clients, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
