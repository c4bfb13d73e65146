"""Rule coverage: for every rule, its own cases and whether real patient data ever fires it.

``coverage_rows`` answers "which rules have we only ever seen fire on hand-written cases?".
Real data is read from FHIR Bundles that hold one Patient (Synthea transaction bundles,
searchset examples) and from bulk-export NDJSON folders (``Patient.*.ndjson`` plus other
``*.ndjson`` files, grouped by the patient they reference). Every patient becomes two
order-select requests, a whole-body (``wbc``) and a local liquid-nitrogen (``ln2``) order,
run through the whole pipeline.

Synthea records are old, so by default each patient is evaluated as of its own record date
(the start of its last Encounter, else its latest dated clinical resource); pass ``now`` to
use one fixed time for everyone.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Config
from ..fhirtime import to_instant, utc_now
from ..hooks import ORDER_SELECT, parse_hook_request
from ..pipeline_factory import PipelineParts, build_pipeline, fixed_clock, load_parts
from ..rulebook import Rulebook
from ..service import SERVICES, Pipeline
from .cases import bundle_request

ORDERS = ("wbc", "ln2")
SERVICE = SERVICES["cryotherapy-order-select"]
COLUMNS = ("id", "version", "cases_fires", "cases_silent", "fired_on_real_data", "real_data_requests", "source")


@dataclass(frozen=True)
class PatientBundle:
    label: str  # where it came from: a file path, or "<folder>#Patient/<id>" for NDJSON
    bundle: dict[str, Any]


def _patients(bundle: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry") or ()
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == "Patient"
    ]


def _patient_ref(resource: Mapping[str, Any]) -> str | None:
    """The id of the patient an NDJSON resource belongs to (``Patient/<id>`` or ``urn:uuid:<id>``)."""
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id"))
    for key in ("subject", "patient", "beneficiary"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            text: str = ref["reference"]
            return text.rsplit("/", 1)[-1].removeprefix("urn:uuid:")
    for participant in resource.get("participant") or ():
        ref = (participant or {}).get("actor") or {}
        reference = str(ref.get("reference", ""))
        if reference.startswith("Patient/"):
            return reference.split("/", 1)[1]
    return None


def ndjson_patient_bundles(folder: Path) -> list[PatientBundle]:
    """One collection Bundle per patient of a bulk-export folder, in Patient file order."""
    by_patient: dict[str, list[dict[str, Any]]] = {}
    order: list[str] = []
    for path in sorted(folder.glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            resource = json.loads(line)
            if not isinstance(resource, dict) or "resourceType" not in resource:
                continue  # e.g. the bulk-export log.ndjson
            pid = _patient_ref(resource)
            if pid is None:
                continue
            if resource["resourceType"] == "Patient":
                order.append(pid)
            by_patient.setdefault(pid, []).append(resource)
    return [
        PatientBundle(
            f"{folder}#Patient/{pid}",
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in by_patient[pid]]},
        )
        for pid in order
    ]


def read_patient_bundles(paths: Iterable[Path]) -> list[PatientBundle]:
    """Every one-patient Bundle and NDJSON patient under ``paths`` (files or folders, recursive).

    Files that are not a Bundle with exactly one Patient (single resources, organisation or
    practitioner bundles, multi-patient searchsets, unreadable JSON) are skipped, and so is a
    byte-identical copy of a file already read (fhir_fixtures/external copies shared data)."""
    found: list[PatientBundle] = []
    seen: set[Path] = set()
    digests: set[str] = set()
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        ndjson_dirs = sorted({p.parent for p in files if p.suffix == ".ndjson"})
        for folder in ndjson_dirs:
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                found += ndjson_patient_bundles(folder)
        for path in files:
            if path.suffix != ".json" or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            raw = path.read_bytes()
            digest = hashlib.sha256(raw).hexdigest()
            if digest in digests:
                continue
            try:
                data = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("resourceType") == "Bundle" and len(_patients(data)) == 1:
                digests.add(digest)
                found.append(PatientBundle(str(path), data))
    return found


_DATE_FIELDS = (
    "onsetDateTime",
    "recordedDate",
    "authoredOn",
    "performedDateTime",
    "effectiveDateTime",
    "issued",
    "occurrenceDateTime",
    "dateAsserted",
)
_PERIOD_FIELDS = ("performedPeriod", "effectivePeriod", "onsetPeriod")


def record_date(bundle: Mapping[str, Any]) -> datetime | None:
    """The date a patient's record was current: the start of its last Encounter, else the
    latest date of any clinical resource (Condition, MedicationRequest, Procedure, ...)."""
    resources = [
        e["resource"] for e in bundle.get("entry") or () if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]
    encounter_starts = [
        to_instant((r.get("period") or {}).get("start")) for r in resources if r.get("resourceType") == "Encounter"
    ]
    encounters = [d for d in encounter_starts if d is not None]
    if encounters:
        return max(encounters)
    candidates: list[datetime | None] = []
    for r in resources:
        if r.get("resourceType") == "Patient":
            continue
        candidates += [to_instant(r.get(f)) for f in _DATE_FIELDS]
        candidates += [to_instant((r.get(f) or {}).get("start")) for f in _PERIOD_FIELDS]
    dates = [d for d in candidates if d is not None]
    return max(dates) if dates else None


def case_counts(rulebook: Rulebook) -> dict[str, tuple[int, int]]:
    """Rule id -> (number of fires-*.yaml, number of silent-*.yaml) cases."""
    return {
        r.id: (len(list(r.cases_dir.glob("fires-*.yaml"))), len(list(r.cases_dir.glob("silent-*.yaml"))))
        for r in rulebook.rules
    }


def run_patient(pipeline: Pipeline, patient: PatientBundle, orders: Sequence[str] = ORDERS) -> Iterator[Any]:
    """The pipeline outcome of each order-select request for one patient."""
    for order in orders:
        body = bundle_request(patient.bundle, order, ORDER_SELECT)
        yield pipeline.run(SERVICE, parse_hook_request(body, ORDER_SELECT))


def coverage_rows(
    config: Config,
    bundles: list[Path],
    now: datetime | None = None,
    evaluator: str = "plain",
    progress: Callable[[Iterable[PatientBundle]], Iterable[PatientBundle]] | None = None,
) -> list[dict[str, Any]]:
    """One row per rule, in rulebook order: id, version, first source, its cases (fires/silent),
    and whether (and in how many patient-requests) it fired on the real data under ``bundles``.

    A grouped rule (CI-IMMUNO, DI-CHEMO, DI-IMMSUP) counts when it contributed to the group card;
    a rule whose card was suppressed (LC-AFTERCARE, PR-SYS-SAFETY under a critical) did not fire.
    ``progress`` wraps the patient loop (the CLI's progress bar)."""
    parts: PipelineParts = load_parts(config, evaluator=evaluator)
    rulebook = parts.rulebook
    fired: Counter[str] = Counter()
    patients = read_patient_bundles(bundles)
    requests = 0
    for patient in (progress or iter)(patients):
        when = now or record_date(patient.bundle) or utc_now()
        pipeline = build_pipeline(config, parts=parts, clock=fixed_clock(when))
        for outcome in run_patient(pipeline, patient):
            requests += 1
            for rule_id in {f.rule_id for f in outcome.decision.fired}:
                fired[rule_id] += 1
    counts = case_counts(rulebook)
    return [
        {
            "id": rule.id,
            "version": rule.version,
            "source": rule.sources[0] if rule.sources else "",
            "cases_fires": counts[rule.id][0],
            "cases_silent": counts[rule.id][1],
            "fired_on_real_data": fired[rule.id] > 0,
            "real_data_requests": fired[rule.id],
            "real_data_patients": len(patients),
            "real_data_total_requests": requests,
        }
        for rule in rulebook.rules
    ]


__all__ = [
    "COLUMNS",
    "PatientBundle",
    "case_counts",
    "coverage_rows",
    "ndjson_patient_bundles",
    "read_patient_bundles",
    "record_date",
    "run_patient",
]
