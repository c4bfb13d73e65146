"""Property-based fuzzing of the HTTP service: no 5xx, no crash, valid cards.

Two generators drive the same in-process Flask app (one per module, like a real worker):

* Hypothesis, over whole requests: arbitrary JSON and arbitrary bytes as the body; requests
  built with ``case_request`` whose prefetch is then mutated (random and missing fields,
  wrong JSON types, nulls, OperationOutcomes, Bundles without type, ``[{}]`` codings,
  partial and invalid dates, random quantities, units, statuses, and codes drawn from the
  value sets in ``rules/valuesets``); and random draftOrders entries. Every answer is a
  4xx JSON error or a 200 whose body passes ``conformance.validate("response", ...)``.
* Schemathesis, over ``cds_hooks/openapi.yaml`` (positive and negative data): no 5xx, and
  every answer conforms to the document (schema, status code, content type).

Numbers in the in-process generators stay within +-10,000 with at most two decimals (and
a timing period never nearer 0 than 0.5): a fact number that JSON writes in exponent form
(>= 1e16, or non-zero and < 1e-4) makes durable-rules segfault, which would take the whole
pytest process down. That class of input has its own test,
``test_extreme_numbers_do_not_kill_the_service``, which sends each example from a forked
child process, so a crash is reported (with the Python stack at the crash) and shrunk.
The service's clock is fixed at 2026-11-21 so a run does not depend on its date.

Every generated case is counted; the last test checks that a run generates at least 1,000
Hypothesis and 1,000 Schemathesis cases. A passing run takes well under 90 s on two cores
(a failing one longer: Hypothesis shrinks every failure it finds).
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import pickle
import shutil
import signal
import tempfile
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.cases import ORDER_PRESETS, PATIENT_ID, case_request
from cds_hooks.devtools.conformance import validate
from cds_hooks.errors import BadRequest
from cds_hooks.hooks import parse_hook_request
from cds_hooks.orders import CYCLES_URL, DURATION_URL, TEMPERATURE_URL
from cds_hooks.record import PREFETCH_QUERIES
from cds_hooks.terminology import ATC, CPT, ICD10CM, LOINC, RXNORM, SNOMED, Terminology

from .conftest import RULES_DIR

OPENAPI = Path(__file__).resolve().parent.parent / "cds_hooks" / "openapi.yaml"
SELECT, SIGN = "/cds-services/cryotherapy-order-select", "/cds-services/cryotherapy-order-sign"
SERVICE_OF_HOOK = {"order-select": SELECT, "order-sign": SIGN}
MIN_CASES = 1_000

# Generated cases per family, filled by the tests and checked by the last one.
HYPOTHESIS_CASES: Counter[str] = Counter()
SCHEMATHESIS_CASES: Counter[str] = Counter()
# Schemathesis conformance problems, collected so one of them does not stop the 5xx hunt;
# test_schemathesis_answers_conform_to_the_openapi_document reports them.
CONFORMANCE_FAILURES: dict[tuple[str, int, str], list[Any]] = {}

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def fuzz(max_examples: int) -> settings:
    return settings(FUZZ, max_examples=max_examples)


# --------------------------------------------------------------------------------------------
# The service under test
# --------------------------------------------------------------------------------------------


class _ExceptionTrap(logging.Handler):
    """Keeps what the app's last-resort error handler logs (log.exception), so a 500 is
    reported with the server-side exception and traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@dataclass
class Answer:
    status: int
    data: bytes
    mimetype: str
    server_error: BaseException | None = None
    server_traceback: str = ""

    def text(self, limit: int = 1500) -> str:
        return self.data[:limit].decode("utf-8", "replace")


@dataclass
class Service:
    app: Any
    trap: _ExceptionTrap
    tmp: Path
    client: Any = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.app.test_client()

    def post(self, path: str, data: bytes, content_type: str = "application/json") -> Answer:
        self.trap.records.clear()
        response = self.client.post(path, data=data, content_type=content_type)
        answer = Answer(response.status_code, response.get_data(), response.mimetype)
        if self.trap.records:
            record = self.trap.records[-1]
            answer.server_error = record.exc_info[1] if record.exc_info else None
            answer.server_traceback = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        return answer

    def post_isolated(self, path: str, data: bytes) -> Answer | str:
        """POST from a forked child: the Answer, or how the child died and the Python stack
        at that moment (a crash of the service process is a test failure, not the end of
        the pytest run)."""
        read_end, write_end = os.pipe()
        stack_read, stack_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: answer the request, send the result back, never return
            try:
                os.close(read_end)
                os.close(stack_read)
                faulthandler.enable(file=os.fdopen(stack_write, "w"), all_threads=False)
                # The store sets the parent's connections aside itself (os.register_at_fork).
                answer = self.post(path, data)
                payload = pickle.dumps((answer.status, answer.data, answer.mimetype, answer.server_traceback))
                with os.fdopen(write_end, "wb") as pipe:
                    pipe.write(payload)
            finally:
                os._exit(0)
        os.close(write_end)
        os.close(stack_write)
        with os.fdopen(read_end, "rb") as pipe:
            payload = pipe.read()
        with os.fdopen(stack_read, "r", errors="replace") as pipe:
            stack = pipe.read()
        _pid, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            lines = stack.strip().splitlines()
            end = next((i for i, line in enumerate(lines) if __file__ in line), len(lines))  # the service's part
            return f"the service process was killed by {signal.Signals(os.WTERMSIG(status)).name}\n" + "\n".join(
                lines[:end]
            )
        if not payload:
            return f"the service process exited with status {os.WEXITSTATUS(status)} without answering\n{stack}"
        code, body, mimetype, server_traceback = pickle.loads(payload)
        return Answer(code, body, mimetype, None, server_traceback)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    shm = Path("/dev/shm")  # the decision log commits every call: keep it off the disk when possible
    tmp = Path(tempfile.mkdtemp(prefix="cryo-fuzz-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp / 'decisions.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
    )
    trap = _ExceptionTrap()
    app_log = logging.getLogger("cds_hooks.app")
    app_log.addHandler(trap)
    app = create_app(config)
    app.extensions["cryo_cds"].pipeline.clock = lambda: FIXED_NOW  # same answers whatever the date of the run
    svc = Service(app, trap, tmp)
    for preset in sorted(ORDER_PRESETS):  # warm the lazy imports (also keeps forked children fast)
        assert svc.post(SELECT, _dumps(case_request({"order": preset}))).status == 200
    try:
        yield svc
    finally:
        app_log.removeHandler(trap)
        app.extensions["cryo_cds"].store.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def _dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode()


def _strict_json(data: bytes) -> Any:
    """RFC 8259 JSON only: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(data, parse_constant=refuse)


def _shorten(data: bytes, limit: int = 6000) -> str:
    text = data.decode("utf-8", "replace")
    return (
        text if len(text) <= limit else f"{text[: limit // 2]} ...[{len(text) - limit} more]... {text[-limit // 2 :]}"
    )


def _server_failure(answer: Answer, request: bytes) -> str:
    return (
        f"HTTP {answer.status} for a request of {len(request)} bytes:\n{_shorten(request)}"
        f"\n\nresponse: {answer.text()}\n\nserver traceback:\n{answer.server_traceback or '(none logged)'}"
    )


def _assert_no_server_error(answer: Answer, request: bytes) -> None:
    if answer.status >= 500:
        # raised *from* the server's exception so Hypothesis tells different crash sites apart
        raise AssertionError(_server_failure(answer, request)) from answer.server_error


def _assert_error_body(answer: Answer) -> None:
    assert answer.mimetype == "application/json", answer.mimetype
    body = _strict_json(answer.data)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    assert body["operationOutcome"]["resourceType"] == "OperationOutcome", body
    assert "Traceback" not in answer.text(100_000)


def _assert_hook_answer(answer: Answer, request: bytes, allowed: tuple[int, ...]) -> None:
    """A service call on a structurally valid request: 200 with conformant cards (or 412)."""
    _assert_no_server_error(answer, request)
    assert answer.status in allowed, f"HTTP {answer.status}: {answer.text()}\nrequest: {request[:2000]!r}"
    if answer.status != 200:
        _assert_error_body(answer)
        return
    body = _strict_json(answer.data)
    event(f"HTTP 200 with {min(len(body.get('cards', [])), 3)}{'+' if len(body.get('cards', [])) > 3 else ''} cards")
    for card in body.get("cards", []):
        event(f"card {card.get('source', {}).get('topic', {}).get('code')}")
    problems = validate("response", body)
    assert problems == [], f"invalid response {problems}\nbody: {answer.text(4000)}\nrequest: {request[:3000]!r}"


# --------------------------------------------------------------------------------------------
# Strategies: JSON, FHIR-ish values, codes from the value sets
# --------------------------------------------------------------------------------------------

TERMINOLOGY = Terminology.load(RULES_DIR / "valuesets")


def _catalogue() -> tuple[list[tuple[str, str, str]], list[str]]:
    """Every code the value sets name (ICD-10-CM prefixes and range ends, ATC prefixes, CPT
    range ends) and every display/title/ingredient name, sorted so runs are reproducible."""
    codes: set[tuple[str, str, str]] = set()
    words: set[str] = set()
    for vs in TERMINOLOGY.all():
        words.add(vs.title)
        words.update(vs.ingredient_names)
        for system, code in vs.exact:
            codes.add((system, code, vs.displays.get((system, code), "")))
        for prefix in (*vs.icd_prefixes, *vs.icd_exclude_prefixes):
            codes.add((ICD10CM, prefix, ""))
        for icd_range in (*vs.icd_ranges, *vs.icd_exclude_ranges):
            codes.update({(ICD10CM, icd_range.low, ""), (ICD10CM, icd_range.high, "")})
        for prefix in vs.atc_prefixes:
            codes.update({(ATC, prefix, ""), (ATC, prefix + "01", "")})
        for low, high in vs.cpt_ranges:
            codes.update({(CPT, str(low), ""), (CPT, str(high), "")})
        codes.update((CPT, code, "") for code in vs.cpt_exclude)
        words.update(vs.displays.values())
    return sorted(codes), sorted(w for w in words if w)


CATALOGUE_CODES, CATALOGUE_WORDS = _catalogue()
CLINICAL_WORDS = [
    "cold urticaria",
    "cold-induced",
    "cryofibrinogenaemia",
    "liquid nitrogen spray",
    "whole body cryotherapy",
    "cryochamber",
    "cryoprecipitate",
    "cryoablation",
    "ice pack",
    "cold pack",
    "pregnant",
    "warfarin 5 mg",
    "prednisolone eye drops",
    "hydrocortisone cream",
    "laser resurfacing",
    "chemical peel",
    "physical therapy",
    "pacemaker",
    "common cold",
    "x",
]
SYSTEMS = [
    SNOMED,
    ICD10CM,
    LOINC,
    RXNORM,
    CPT,
    ATC,
    "https://example.org/fhir/cryo-cds/CodeSystem/local",
    "http://snomed.info/sct/",
    "urn:oid:2.16.840.1.113883.6.96",
    "http://hl7.org/fhir/sid/icd-10",
    "urn:oid:2.16.840.1.113883.6.1",
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
    "http://terminology.hl7.org/CodeSystem/condition-clinical",
    "http://unitsofmeasure.org",
    "",
]
# Status values per resource type (the ones the facts step distinguishes, and some it ignores).
STATUSES = {
    "clinical": ["active", "recurrence", "relapse", "inactive", "remission", "resolved", "unknown"],
    "verification": ["confirmed", "unconfirmed", "provisional", "differential", "refuted", "entered-in-error"],
    "Observation": ["final", "amended", "corrected", "preliminary", "registered", "cancelled", "entered-in-error"],
    "medication": [
        "active",
        "on-hold",
        "completed",
        "stopped",
        "intended",
        "cancelled",
        "entered-in-error",
        "not-taken",
        "unknown",
        "draft",
        "not-done",
        "in-progress",
    ],
    "Procedure": ["completed", "in-progress", "preparation", "not-done", "stopped", "entered-in-error"],
    "Device": ["active", "inactive", "unknown", "entered-in-error"],
    "DeviceUseStatement": ["active", "completed", "stopped", "intended", "on-hold"],
    "ServiceRequest": ["active", "on-hold", "draft", "completed", "revoked", "entered-in-error"],
    "Appointment": ["booked", "proposed", "pending", "arrived", "fulfilled", "cancelled", "noshow"],
    "interpretation": ["POS", "NEG", "A", "AA", "N", "ND", "DET", "H", "L"],
}
ALL_STATUSES = sorted({s for values in STATUSES.values() for s in values} | {"", "ACTIVE", "bogus"})
UNITS = [
    "Cel",
    "°C",
    "K",
    "[degF]",
    "degF",
    "°F",
    "s",
    "sec",
    "min",
    "h",
    "ms",
    "d",
    "wk",
    "mo",
    "a",
    "g/dL",
    "g/dl",
    "g/L",
    "mg/dL",
    "mmol/L",
    "%",
    "mmol/mol",
    "percent",
    "10*3/uL",
    "10*9/L",
    "/uL",
    "cells/uL",
    "/mm3",
    "/min",
    "mm[Hg]",
    "1",
    "",
    "bogus",
]
REFERENCES = [
    f"Patient/{PATIENT_ID}",
    "Medication/r1",
    "Medication/r2",
    "Device/r1",
    "Device/r2",
    "Condition/r1",
    "Condition/r3",
    "#c1",
    "#nope",
    "Medication/r1/_history/2",
    "https://fhir.example.org/r4/Device/r2",
    "Device",
    "/",
]
IDS = ["r1", "r2", "r3", "c1", "cryo-1", "cryo-2", "x" * 64, "a.b-c"]
EXTENSION_URLS = [TEMPERATURE_URL, DURATION_URL, CYCLES_URL, "https://example.org/other"]
FIXED_NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # the service's clock in this module (cases.DEFAULT_NOW)

# Text that is never numeric: FHIR decimals accept numeric strings ("1e99"), which would
# reach the engine as an exponent-form number (see the module docstring).
PLAIN_TEXT = st.text(st.characters(exclude_categories=("Nd", "Cs")), max_size=12)
TEXT = st.one_of(st.sampled_from(CATALOGUE_WORDS), st.sampled_from(CLINICAL_WORDS), PLAIN_TEXT)
# Engine-safe numbers: |x| <= 10,000 with at most two decimals. A timing period is never
# closer to 0 than 0.5 (sessions per day = frequency / period, times a course of up to
# 10,000 years, stays below 1e16).
NUMBER = st.one_of(
    st.integers(-10_000, 10_000),
    st.decimals(min_value=-10_000, max_value=10_000, places=2, allow_nan=False, allow_infinity=False).map(float),
)
PERIOD_NUMBER = st.one_of(
    st.integers(-100, 10_000), st.decimals(min_value="0.5", max_value=10_000, places=2).map(float)
)
JUNK_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10_000, 10_000),
    PLAIN_TEXT,
    st.just(""),
    st.just({}),
    st.dictionaries(PLAIN_TEXT, st.integers(0, 9), min_size=1, max_size=2),
)
JUNK = st.one_of(
    JUNK_SCALAR, st.just([]), st.just([{}]), st.just([None]), st.lists(st.integers(0, 9), min_size=1, max_size=2)
)


def _date_text(when: datetime, style: str) -> str:
    return {
        "date": when.date().isoformat(),
        "month": when.strftime("%Y-%m"),
        "year": when.strftime("%Y"),
        "utc": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "zoned": when.astimezone(timezone(timedelta(hours=-5))).isoformat(timespec="seconds"),
    }[style]


# Dates around the clock (where the rules' windows are), valid but extreme ones, and invalid ones.
NEAR_DATE = st.builds(
    _date_text,
    st.integers(-800 * 24, 120 * 24).map(lambda h: FIXED_NOW + timedelta(hours=h)),
    st.sampled_from(["date", "date", "utc", "zoned", "month", "year"]),
)
EXTREME_DATE = st.one_of(
    st.tuples(st.datetimes(), st.sampled_from(["Z", "+00:00", "+14:00", "-12:00", "+05:30"])).map(
        lambda p: p[0].isoformat(timespec="seconds") + p[1]
    ),
    st.dates().map(lambda d: d.isoformat()),
    st.integers(1, 9999).map(lambda y: f"{y:04d}"),
    st.sampled_from(["0001-01-01", "9999-12-31", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"]),
)
BAD_DATE = st.one_of(
    st.sampled_from(
        [
            "2020-13",
            "2020-02-30",
            "2020-00-10",
            "20200517",
            "2020-5-1",
            "0000",
            "2020-05-17T25:00:00Z",
            "2020-05-17T10:00:00",
            "yesterday",
            "",
        ]
    ),
    PLAIN_TEXT,
)


@dataclass(frozen=True)
class Family:
    """FHIR-ish strategies, clean (valid FHIR, odd values) or dirty (wrong types, bad dates)."""

    dirty: bool

    def wrong(self, valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        """``valid``; in the dirty family sometimes a value of the wrong JSON type."""
        return st.one_of(valid, valid, valid, JUNK) if self.dirty else valid

    def fields(
        self, required: dict[str, st.SearchStrategy[Any]] | None = None, **optional: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(required or {}, optional=optional)

    def list_of(self, item: st.SearchStrategy[Any], max_size: int = 2) -> st.SearchStrategy[Any]:
        return self.wrong(st.lists(item, min_size=0 if self.dirty else 1, max_size=max_size))

    @property
    def date(self) -> st.SearchStrategy[Any]:
        if self.dirty:
            return st.one_of(NEAR_DATE, EXTREME_DATE, BAD_DATE, JUNK)
        return st.one_of(NEAR_DATE, NEAR_DATE, NEAR_DATE, EXTREME_DATE)

    def status(self, kind: str) -> st.SearchStrategy[Any]:
        valid = st.sampled_from(STATUSES[kind])
        return self.wrong(st.one_of(valid, valid, st.sampled_from(ALL_STATUSES))) if self.dirty else valid

    def status_concept(self, kind: str) -> st.SearchStrategy[Any]:
        concept = self.status(kind).map(lambda s: {"coding": [{"system": SYSTEMS[-3], "code": s}]})
        return st.one_of(concept, self.concept) if self.dirty else concept

    @property
    def coding(self) -> st.SearchStrategy[Any]:
        catalogue = st.sampled_from(CATALOGUE_CODES).map(
            lambda c: {"system": c[0], "code": c[1], **({"display": c[2]} if c[2] else {})}
        )
        if not self.dirty:
            return st.one_of(
                catalogue,
                catalogue,
                catalogue,
                self.fields(
                    {
                        "system": st.sampled_from(SYSTEMS[:-1]),
                        "code": st.sampled_from(CATALOGUE_CODES).map(lambda c: c[1]),
                    },
                    display=TEXT,
                ),
            )
        return st.one_of(
            catalogue,
            self.fields(
                system=self.wrong(st.sampled_from(SYSTEMS)),
                code=self.wrong(st.sampled_from(CATALOGUE_CODES).map(lambda c: c[1])),
                display=self.wrong(TEXT),
                userSelected=self.wrong(st.booleans()),
            ),
            JUNK,
        )

    @property
    def concept(self) -> st.SearchStrategy[Any]:
        if not self.dirty:
            return st.one_of(
                self.fields({"coding": st.lists(self.coding, min_size=1, max_size=3)}, text=TEXT),
                self.fields({"text": TEXT}),
            )
        return st.one_of(
            self.fields(coding=self.wrong(st.lists(self.coding, max_size=3)), text=self.wrong(TEXT)),
            st.just({"coding": [{}]}),
            st.just({"coding": [{}], "text": "cold pack"}),
        )

    @property
    def concepts(self) -> st.SearchStrategy[Any]:
        return self.list_of(self.concept, 3)

    @property
    def reference(self) -> st.SearchStrategy[Any]:
        return self.wrong(self.fields({"reference": self.wrong(st.sampled_from(REFERENCES))}, display=self.wrong(TEXT)))

    @property
    def period(self) -> st.SearchStrategy[Any]:
        return self.wrong(self.fields(start=self.date, end=self.date))

    @property
    def quantity(self) -> st.SearchStrategy[Any]:
        return self.wrong(
            self.fields(
                {"value": self.wrong(NUMBER)},
                unit=self.wrong(st.sampled_from(UNITS) | TEXT),
                code=self.wrong(st.sampled_from(UNITS)),
                system=st.sampled_from(["http://unitsofmeasure.org"]),
            )
        )

    @property
    def timing(self) -> st.SearchStrategy[Any]:
        positive = st.integers(1, 1_000) if not self.dirty else st.integers(-2, 1_000)
        repeat = self.fields(
            frequency=self.wrong(positive),
            period=self.wrong(PERIOD_NUMBER),
            periodUnit=self.wrong(st.sampled_from(UNITS)),
            duration=self.wrong(NUMBER),
            durationUnit=self.wrong(st.sampled_from(UNITS)),
            count=self.wrong(positive),
            boundsPeriod=self.period,
            boundsDuration=self.quantity,
        )
        return self.wrong(self.fields(event=self.list_of(self.date, 3), repeat=self.wrong(repeat)))

    @property
    def extensions(self) -> st.SearchStrategy[Any]:
        url = self.wrong(st.sampled_from(EXTENSION_URLS))
        extension = st.one_of(
            self.fields({"url": url, "valueQuantity": self.quantity}),
            self.fields({"url": url, "valueInteger": self.wrong(st.integers(-10, 10_000))}),
            self.fields({"url": url, "valueString": self.wrong(TEXT)}),
        )
        return self.list_of(st.one_of(extension, JUNK) if self.dirty else extension, 3)

    @property
    def notes(self) -> st.SearchStrategy[Any]:
        return self.list_of(self.wrong(self.fields({"text": self.wrong(TEXT)})))

    @property
    def dosage(self) -> st.SearchStrategy[Any]:
        return self.wrong(self.fields(route=self.concept, text=self.wrong(TEXT), timing=self.timing))

    def resource(
        self, kind: str, required: dict[str, st.SearchStrategy[Any]] | None = None, **optional: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[dict[str, Any]]:
        extra = {"id": self.wrong(st.sampled_from(IDS)), "extension": self.extensions} if self.dirty else {}
        return self.fields({"resourceType": st.just(kind), **(required or {})}, **extra, **optional)

    @property
    def medication(self) -> st.SearchStrategy[dict[str, Any]]:
        return self.resource(
            "Medication",
            code=self.concept,
            form=self.concept,
            ingredient=self.list_of(self.wrong(self.fields(itemCodeableConcept=self.concept))),
        )

    def resources(self) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
        contained = self.list_of(self.medication.map(lambda m: {**m, "id": "c1"}), 1)
        medication_of = st.one_of(
            self.fields({"medicationCodeableConcept": self.concept}),
            self.fields({"medicationReference": self.reference}, contained=contained),
        )
        if self.dirty:
            medication_of = self.fields(
                medicationCodeableConcept=self.concept, medicationReference=self.reference, contained=contained
            )

        def with_medication(strategy: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
            return st.tuples(strategy, medication_of).map(lambda p: {**p[1], **p[0]})

        date, concept, concepts, period, quantity = self.date, self.concept, self.concepts, self.period, self.quantity
        return {
            "Condition": self.resource(
                "Condition",
                {"code": concept},
                clinicalStatus=self.status_concept("clinical"),
                verificationStatus=self.status_concept("verification"),
                onsetDateTime=date,
                onsetPeriod=period,
                recordedDate=date,
                abatementDateTime=date,
                abatementPeriod=period,
                abatementString=self.wrong(TEXT),
                bodySite=concepts,
            ),
            "Observation": self.resource(
                "Observation",
                {"status": self.status("Observation"), "code": concept},
                effectiveDateTime=date,
                effectivePeriod=period,
                issued=self.wrong(EXTREME_DATE if self.dirty else NEAR_DATE.filter(lambda d: "T" in d)),
                valueQuantity=quantity,
                valueCodeableConcept=concept,
                interpretation=self.list_of(self.status_concept("interpretation")),
                component=self.list_of(self.fields(code=concept, valueQuantity=quantity), 3),
            ),
            "MedicationRequest": with_medication(
                self.resource(
                    "MedicationRequest",
                    {"status": self.status("medication"), "intent": self.wrong(st.just("order"))},
                    authoredOn=date,
                    dosageInstruction=self.list_of(self.dosage),
                    dispenseRequest=self.wrong(self.fields(validityPeriod=period, expectedSupplyDuration=quantity)),
                )
            ),
            "MedicationStatement": with_medication(
                self.resource(
                    "MedicationStatement",
                    {"status": self.status("medication")},
                    effectiveDateTime=date,
                    effectivePeriod=period,
                    dateAsserted=date,
                    dosage=self.list_of(self.dosage),
                )
            ),
            "MedicationAdministration": with_medication(
                self.resource(
                    "MedicationAdministration",
                    {"status": self.status("medication")},
                    effectiveDateTime=date,
                    effectivePeriod=period,
                    dosage=self.dosage,
                )
            ),
            "Medication": self.medication,
            "Device": self.resource("Device", status=self.status("Device"), type=concept),
            "DeviceUseStatement": self.resource(
                "DeviceUseStatement",
                {"status": self.status("DeviceUseStatement"), "device": self.reference},
                contained=self.list_of(self.resource("Device", type=concept).map(lambda d: {**d, "id": "c1"}), 1),
            ),
            "AllergyIntolerance": self.resource(
                "AllergyIntolerance",
                code=concept,
                clinicalStatus=self.status_concept("clinical"),
                verificationStatus=self.status_concept("verification"),
                recordedDate=date,
                onsetDateTime=date,
            ),
            "Procedure": self.resource(
                "Procedure",
                {"status": self.status("Procedure")},
                code=concept,
                performedDateTime=date,
                performedPeriod=period,
                bodySite=concepts,
            ),
            "ServiceRequest": self.resource(
                "ServiceRequest",
                {"status": self.status("ServiceRequest"), "intent": self.wrong(st.just("order"))},
                code=concept,
                authoredOn=date,
                occurrenceDateTime=date,
                occurrencePeriod=period,
                occurrenceTiming=self.timing,
                bodySite=concepts,
                reasonCode=concepts,
                orderDetail=concepts,
                note=self.notes,
                quantityQuantity=quantity,
                reasonReference=self.list_of(self.reference),
            ),
            "Appointment": self.resource(
                "Appointment",
                {"status": self.status("Appointment")},
                start=date,
                serviceType=concepts,
                reasonCode=concepts,
                appointmentType=concept,
                description=self.wrong(TEXT),
            ),
            "Patient": self.resource(
                "Patient", gender=self.wrong(st.sampled_from(["female", "male", "other"])), birthDate=date
            ),
        }

    def order_overrides(self) -> st.SearchStrategy[dict[str, Any]]:
        """Changes to a preset draft order: codes, sites, timing, extensions, text."""
        return self.fields(
            code=self.concept,
            bodySite=self.concepts,
            occurrenceTiming=self.timing,
            extension=self.extensions,
            note=self.notes,
            orderDetail=self.concepts,
            reasonCode=self.concepts,
            reasonReference=self.list_of(self.reference),
            status=self.status("ServiceRequest"),
            intent=self.wrong(st.sampled_from(["order", "plan", "proposal"])),
            occurrenceDateTime=self.date,
            occurrencePeriod=self.period,
            quantityQuantity=self.quantity,
            authoredOn=self.date,
            text=self.wrong(self.fields({"status": st.just("generated"), "div": st.just("<div>cryo</div>")})),
        )


CLEAN, DIRTY = Family(dirty=False), Family(dirty=True)
CLEAN_RESOURCES, DIRTY_RESOURCES = CLEAN.resources(), DIRTY.resources()
ODD_RESOURCE = st.one_of(
    st.fixed_dictionaries(
        {"resourceType": st.sampled_from(["OperationOutcome", "Bundle", "Basic", "Foo", "condition", ""])},
        optional={"id": st.sampled_from(IDS), "code": DIRTY.concept, "issue": JUNK, "entry": JUNK},
    ),
    st.fixed_dictionaries({"resourceType": JUNK}, optional={"code": DIRTY.concept}),
    st.fixed_dictionaries({}, optional={"code": DIRTY.concept, "status": DIRTY.status("Observation")}),
)
RECORD_TYPES = [k for k in sorted(CLEAN_RESOURCES) if k != "Patient"]
# Two clean resources for every dirty one: rules only fire on resources that are valid FHIR.
RECORD_RESOURCE = st.one_of(
    *(CLEAN_RESOURCES[k] for k in RECORD_TYPES),
    *(CLEAN_RESOURCES[k] for k in RECORD_TYPES),
    *(DIRTY_RESOURCES[k] for k in RECORD_TYPES),
)
ANY_RESOURCE = st.one_of(RECORD_RESOURCE, CLEAN_RESOURCES["Patient"], DIRTY_RESOURCES["Patient"], ODD_RESOURCE)
OPERATION_OUTCOME = st.fixed_dictionaries(
    {"resourceType": st.just("OperationOutcome")},
    optional={
        "issue": DIRTY.wrong(
            st.lists(
                DIRTY.wrong(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "severity": DIRTY.wrong(st.sampled_from(["fatal", "error", "warning", "information"])),
                            "code": DIRTY.wrong(TEXT),
                            "diagnostics": DIRTY.wrong(TEXT),
                        },
                    )
                ),
                max_size=2,
            )
        )
    },
)
ENTRY = st.one_of(
    ANY_RESOURCE.map(lambda r: {"resource": r}),
    st.fixed_dictionaries({}, optional={"resource": JUNK, "fullUrl": DIRTY.wrong(TEXT)}),
    JUNK,
)
HOOK_INSTANCE = st.uuids().map(str)


def _bundle(entries: list[Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries, **extra}


PREFETCH_MUTATIONS = ["keep"] * 10 + [
    "null",
    "operation-outcome",
    "no-type",
    "odd-entries",
    "entry-not-array",
    "next-page",
    "bare-resource",
    "outcome-entry",
    "odd-fields",
    "no-resourceType",
    "other-resourceType",
]


@st.composite
def prefetch_value(draw: st.DrawFn, value: dict[str, Any]) -> dict[str, Any] | None:
    """One prefetch answer as a sloppy or failing EHR might send it (dict or null: anything
    else is a 400 by design)."""
    mutation = draw(st.sampled_from(PREFETCH_MUTATIONS))
    entries = list(value.get("entry", []))
    if mutation == "keep":
        return value
    if mutation == "null":
        return None
    if mutation == "operation-outcome":
        return draw(OPERATION_OUTCOME)
    if mutation == "no-type":
        return {k: v for k, v in value.items() if k != "type"}
    if mutation == "odd-entries":
        return _bundle(draw(st.permutations(entries + draw(st.lists(ENTRY, min_size=1, max_size=4)))))
    if mutation == "entry-not-array":
        return {**value, "entry": draw(JUNK_SCALAR)}
    if mutation == "next-page":
        return {
            **value,
            "link": draw(DIRTY.wrong(st.just([{"relation": "next", "url": "https://fhir.example.org/p2"}]))),
        }
    if mutation == "bare-resource":
        return entries[0]["resource"] if entries and draw(st.booleans()) else draw(ANY_RESOURCE)
    if mutation == "outcome-entry":
        return _bundle([*entries, {"resource": draw(OPERATION_OUTCOME)}])
    if mutation == "odd-fields":
        return {
            **value,
            **draw(st.fixed_dictionaries({}, optional=dict.fromkeys(("type", "total", "link", "meta", "issue"), JUNK))),
        }
    if mutation == "no-resourceType":
        return {k: v for k, v in value.items() if k != "resourceType"}
    return {**value, "resourceType": draw(st.sampled_from(["OperationOutcome", "Patient", "Foo", ""]) | PLAIN_TEXT)}


@st.composite
def mutated_prefetch_requests(draw: st.DrawFn) -> dict[str, Any]:
    hook = draw(st.sampled_from(sorted(SERVICE_OF_HOOK)))
    patient = draw(st.one_of(CLEAN_RESOURCES["Patient"], DIRTY_RESOURCES["Patient"]))
    case = {
        "order": draw(st.sampled_from(sorted(ORDER_PRESETS))),
        "patient": {k: v for k, v in patient.items() if k != "resourceType"},
        "resources": draw(st.lists(RECORD_RESOURCE, max_size=6)),
        "omit_prefetch": draw(st.lists(st.sampled_from(sorted(PREFETCH_QUERIES)), unique=True, max_size=3)),
    }
    body = case_request(case, hook)
    body["hookInstance"] = draw(HOOK_INSTANCE)
    prefetch = body["prefetch"]
    for key in sorted(prefetch):
        if draw(st.integers(0, 19)) == 0:
            del prefetch[key]
        else:
            prefetch[key] = draw(prefetch_value(prefetch[key]))
    # keys the service did not ask for are read too, by resource type
    extra = draw(
        st.dictionaries(
            st.sampled_from(["other", "conditionsAll", "obs2"]) | PLAIN_TEXT,
            st.one_of(st.none(), st.lists(ENTRY, max_size=3).map(_bundle), ANY_RESOURCE),
            max_size=2,
        )
    )
    for key, value in extra.items():
        prefetch.setdefault(key, value)
    return body


ORDER_SPEC = st.tuples(
    st.sampled_from(sorted(ORDER_PRESETS)) | st.none(),
    st.one_of(CLEAN.order_overrides(), DIRTY.order_overrides()),
    st.lists(
        st.sampled_from(
            ["code", "bodySite", "occurrenceTiming", "extension", "reasonCode", "status", "intent", "subject", "note"]
        ),
        unique=True,
        max_size=3,
    ),
)


def _order_spec(spec: tuple[str | None, dict[str, Any], list[str]]) -> dict[str, Any]:
    preset, overrides, remove = spec
    return {**({"preset": preset} if preset else {}), **overrides, "remove": remove}


@st.composite
def draft_order_requests(draw: st.DrawFn) -> dict[str, Any]:
    hook = draw(st.sampled_from(sorted(SERVICE_OF_HOOK)))
    case = {
        "order": _order_spec(draw(ORDER_SPEC)),
        "extra_orders": [_order_spec(s) for s in draw(st.lists(ORDER_SPEC, max_size=2))],
        "drafts": draw(
            st.lists(
                st.one_of(
                    CLEAN_RESOURCES["ServiceRequest"],
                    CLEAN_RESOURCES["MedicationRequest"],
                    CLEAN_RESOURCES["Procedure"],
                    ANY_RESOURCE,
                ),
                max_size=3,
            )
        ),
        "resources": draw(st.lists(RECORD_RESOURCE, max_size=3)),
    }
    body = case_request(case, hook)
    body["hookInstance"] = draw(HOOK_INSTANCE)
    draft = body["context"]["draftOrders"]
    entries = draft["entry"] + draw(st.lists(ENTRY, max_size=2))
    draft["entry"] = draw(st.permutations(entries))
    if draw(st.booleans()):
        del draft["type"]
    if hook == "order-select" and draw(st.booleans()):  # selections that name nothing, or a non-order
        extra = draw(
            st.lists(
                st.sampled_from(
                    [
                        "ServiceRequest/nope",
                        "MedicationRequest/r1",
                        "ServiceRequest/r1",
                        "Procedure/r2",
                        "ServiceRequest/cryo-2",
                    ]
                ),
                max_size=2,
            )
        )
        body["context"]["selections"] = body["context"]["selections"] + extra
    return body


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "order-select",
            "order-sign",
            "Bundle",
            "Patient/p1",
            "Bearer",
            "accepted",
            "overridden",
            "2026-11-21T12:00:00Z",
            str(uuid.UUID(int=7)),
        ]
    ),
)
JSON_KEYS = st.text(max_size=8) | st.sampled_from(
    [
        "hook",
        "hookInstance",
        "context",
        "prefetch",
        "fhirServer",
        "fhirAuthorization",
        "extension",
        "userId",
        "patientId",
        "encounterId",
        "draftOrders",
        "selections",
        "resourceType",
        "entry",
        "resource",
        "access_token",
        "token_type",
        "expires_in",
        "feedback",
        "card",
        "outcome",
        "outcomeTimestamp",
        "acceptedSuggestions",
        "overrideReason",
        "reason",
        "userComment",
        "id",
    ]
)
JSON_VALUE = st.recursive(
    JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_KEYS, inner, max_size=5), max_leaves=30
)
DEEP_JSON = st.tuples(st.integers(1, 200_000), st.sampled_from(["[", '{"a":'])).map(
    lambda p: p[1] * p[0] + ("1" if p[1] != "[" else "") + ("]" if p[1] == "[" else "}") * p[0]
)
POST_PATHS = [SELECT, SIGN, SELECT + "/feedback", SIGN + "/feedback"]


def _expected_status(path: str, body: Any) -> set[int]:
    """400, unless the body happens to be a valid call (the service's own parser decides)."""
    if path.endswith("/feedback"):
        return {200, 400}  # a random value that is valid feedback is acceptable
    try:
        parse_hook_request(body, "order-select" if path == SELECT else "order-sign")
    except BadRequest:
        return {400}
    return {200, 412}


# --------------------------------------------------------------------------------------------
# Hypothesis tests (their max_examples add up to >= MIN_CASES)
# --------------------------------------------------------------------------------------------


@fuzz(400)
@given(body=JSON_VALUE, path=st.sampled_from(POST_PATHS))
def test_arbitrary_json_body_gets_a_json_4xx(service: Service, body: Any, path: str) -> None:
    HYPOTHESIS_CASES["arbitrary-json"] += 1
    request = _dumps(body)
    answer = service.post(path, request)
    _assert_no_server_error(answer, request)
    assert answer.status in _expected_status(path, body), (answer.status, answer.text(), body)
    if answer.status >= 400:
        _assert_error_body(answer)


@fuzz(150)
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        JSON_VALUE.map(lambda v: json.dumps(v).encode()),
        DEEP_JSON.map(str.encode),
        st.just(b""),
        st.just(b"\xef\xbb\xbf{}"),
        st.just(b'{"a": NaN}'),
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/fhir+json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/xml",
            "",
        ]
    )
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    path=st.sampled_from(POST_PATHS),
)
def test_any_bytes_with_any_content_type_get_a_json_4xx(
    service: Service, payload: bytes, content_type: str, path: str
) -> None:
    HYPOTHESIS_CASES["raw-bytes"] += 1
    answer = service.post(path, payload, content_type)
    _assert_no_server_error(answer, payload)
    if answer.status != 200:
        assert answer.status in (400, 412, 415), (answer.status, answer.text(), payload[:200], content_type)
        _assert_error_body(answer)


@fuzz(900)
@given(body=mutated_prefetch_requests())
def test_mutated_prefetch_gets_valid_cards_or_412(service: Service, body: dict[str, Any]) -> None:
    HYPOTHESIS_CASES["mutated-prefetch"] += 1
    request = _dumps(body)
    answer = service.post(SERVICE_OF_HOOK[body["hook"]], request)
    _assert_hook_answer(answer, request, (200, 412))


@fuzz(700)
@given(body=draft_order_requests())
def test_random_draft_orders_get_valid_cards(service: Service, body: dict[str, Any]) -> None:
    HYPOTHESIS_CASES["draft-orders"] += 1
    request = _dumps(body)
    answer = service.post(SERVICE_OF_HOOK[body["hook"]], request)
    _assert_hook_answer(answer, request, (200,))


# Out-of-range numbers, each request answered by a forked child so a crash is a failure.
EXTREME_NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**30), 10**30),
    st.sampled_from([1e16, -1e16, 1e-5, 3e-5, 1e-320, 1e308, 2**63, 10**20]),
)


@st.composite
def extreme_number_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A whole-body cryotherapy order (order-sign) whose numbers are out of range."""
    number = draw(EXTREME_NUMBER)
    where = draw(st.sampled_from(["temperature", "duration", "period", "count", "systolic", "heart-rate"]))
    order: dict[str, Any] = {"preset": "wbc"}
    resources: list[dict[str, Any]] = []
    if where == "temperature":
        order["extension"] = [{"url": TEMPERATURE_URL, "valueQuantity": {"value": number, "code": "Cel"}}]
    elif where in ("duration", "period", "count"):
        # build_order merges this into the preset's schedule, keeping its other fields
        order["occurrenceTiming"] = {"repeat": {where: number if where != "count" else int(abs(number)) + 1}}
    else:
        code = "8480-6" if where == "systolic" else "8867-4"
        resources.append(
            {
                "resourceType": "Observation",
                "status": "final",
                "effectiveDateTime": "2026-11-20",
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": {"value": number, "unit": "mm[Hg]" if where == "systolic" else "/min"},
            }
        )
    body = case_request({"order": order, "resources": resources}, "order-sign")
    body["hookInstance"] = draw(HOOK_INSTANCE)
    return body


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to survive a crashing service")
@fuzz(60)
@given(body=extreme_number_requests())
def test_extreme_numbers_do_not_kill_the_service(service: Service, body: dict[str, Any]) -> None:
    HYPOTHESIS_CASES["extreme-numbers"] += 1
    request = json.dumps(body).encode()
    answer = service.post_isolated(SIGN, request)
    assert isinstance(answer, Answer), f"{answer}\nwhile answering:\n{request.decode()}"
    _assert_hook_answer(answer, request, (200,))


# --------------------------------------------------------------------------------------------
# Schemathesis over the OpenAPI document the project ships
# --------------------------------------------------------------------------------------------

SCHEMA = schemathesis.openapi.from_path(OPENAPI)
SCHEMA.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True, database="none"
)
CONFORMANCE_CHECKS: list[Callable[..., Any]] = [
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


def _run_schemathesis_case(service: Service, case: schemathesis.Case) -> None:
    SCHEMATHESIS_CASES[case.operation.label] += 1
    response = case.call(app=service.app)
    case.validate_response(response, checks=[not_a_server_error])
    try:
        case.validate_response(response, checks=CONFORMANCE_CHECKS)
    except FailureGroup as failure:
        first_line = next(
            (
                line.strip()
                for line in str(failure).splitlines()
                if line.strip() and not line.startswith(("Schemathesis", "-"))
            ),
            repr(failure),
        )
        key = (case.operation.label, response.status_code, first_line[:300])
        seen = CONFORMANCE_FAILURES.setdefault(key, [0, None])
        seen[0] += 1
        if seen[1] is None:
            seen[1] = f"{case.as_curl_command()}\n-> {response.status_code} {response.text[:600]}"


@SCHEMA.include(operation_id="callService").parametrize()
@fuzz(500)
def test_schemathesis_service_calls(service: Service, case: schemathesis.Case) -> None:
    _run_schemathesis_case(service, case)


@SCHEMA.include(operation_id="sendFeedback").parametrize()
@fuzz(100)
def test_schemathesis_feedback(service: Service, case: schemathesis.Case) -> None:
    _run_schemathesis_case(service, case)


@SCHEMA.include(operation_id=["discover", "discoverTrailingSlash", "health"]).parametrize()
@fuzz(100)
def test_schemathesis_discovery_and_health(service: Service, case: schemathesis.Case) -> None:
    _run_schemathesis_case(service, case)


def test_schemathesis_answers_conform_to_the_openapi_document() -> None:
    if not SCHEMATHESIS_CASES:
        pytest.skip("the schemathesis tests did not run")
    report = [
        f"{label} -> {status}: {message}  ({count}x)\n  e.g. {example}"
        for (label, status, message), (count, example) in sorted(CONFORMANCE_FAILURES.items())
    ]
    assert not report, "answers that do not conform to cds_hooks/openapi.yaml:\n" + "\n".join(report)


def test_each_run_generates_at_least_1000_cases_per_tool() -> None:
    families = {"arbitrary-json", "raw-bytes", "mutated-prefetch", "draft-orders"}
    if not families <= set(HYPOTHESIS_CASES) or not SCHEMATHESIS_CASES:
        pytest.skip("run the whole module to count the generated cases")
    hypothesis_total, schemathesis_total = sum(HYPOTHESIS_CASES.values()), sum(SCHEMATHESIS_CASES.values())
    print(
        f"\ngenerated cases: hypothesis {hypothesis_total} {dict(HYPOTHESIS_CASES)}; "
        f"schemathesis {schemathesis_total} {dict(SCHEMATHESIS_CASES)}"
    )
    hint = " (a test that fails stops generating early: fix the failures first)"
    assert hypothesis_total >= MIN_CASES, f"{dict(HYPOTHESIS_CASES)}{hint}"
    assert schemathesis_total >= MIN_CASES, f"{dict(SCHEMATHESIS_CASES)}{hint}"
