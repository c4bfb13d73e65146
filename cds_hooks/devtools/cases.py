"""Rule cases (``rules/<ID>/cases/*.yaml``) turned into whole CDS Hooks requests.

A case is a small patient written as FHIR resources plus a draft cryotherapy order, often
built from a named preset; the request it becomes is exactly what an EHR would send, so
the cases exercise the whole pipeline, not the rules alone.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..record import PREFETCH_QUERIES

LOCAL = "https://example.org/fhir/cryo-cds/CodeSystem/local"
EXT = "https://example.org/fhir/cryo-cds/StructureDefinition/"
SNOMED = "http://snomed.info/sct"
DEFAULT_NOW = "2026-11-21T12:00:00+00:00"
PATIENT_ID = "case-patient"

ORDER_PRESETS: dict[str, dict[str, Any]] = {
    "wbc": {
        "code": {
            "coding": [{"system": LOCAL, "code": "whole-body-cryotherapy"}],
            "text": "Whole-body cryotherapy (cryochamber)",
        },
        "bodySite": [{"coding": [{"system": SNOMED, "code": "38266002", "display": "Entire body"}]}],
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "G89.29"}]}],
        "occurrenceTiming": {
            "repeat": {
                "frequency": 2,
                "period": 1,
                "periodUnit": "wk",
                "count": 8,
                "duration": 3,
                "durationUnit": "min",
            }
        },
        "extension": [
            {
                "url": EXT + "cryo-target-temperature",
                "valueQuantity": {"value": -120, "unit": "°C", "system": "http://unitsofmeasure.org", "code": "Cel"},
            }
        ],
    },
    "ln2": {
        "code": {
            "coding": [
                {"system": SNOMED, "code": "302396003", "display": "Cryotherapy to skin lesion"},
                {"system": "http://www.ama-assn.org/go/cpt", "code": "17110"},
            ]
        },
        "bodySite": [{"coding": [{"system": SNOMED, "code": "33712006", "display": "Skin of hand"}]}],
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "B07.9"}]}],
        "occurrenceTiming": {"repeat": {"duration": 10, "durationUnit": "s", "count": 1}},
        "extension": [{"url": EXT + "freeze-thaw-cycles", "valueInteger": 2}],
        "note": [{"text": "liquid nitrogen spray"}],
    },
    "cold-pack": {
        "code": {
            "coding": [{"system": SNOMED, "code": "182660006", "display": "Cold therapy"}],
            "text": "Cold pack to knee",
        },
        "bodySite": [{"coding": [{"system": SNOMED, "code": "181553006", "display": "Knee"}]}],
    },
    "cryomassage": {
        "code": {"coding": [{"system": LOCAL, "code": "cryomassage"}], "text": "Cryomassage"},
        "bodySite": [{"coding": [{"system": SNOMED, "code": "73897004", "display": "Skin of face"}]}],
    },
    "cryopeeling": {
        "code": {"coding": [{"system": LOCAL, "code": "cryopeeling"}], "text": "Cryopeeling"},
        "bodySite": [{"coding": [{"system": SNOMED, "code": "73897004", "display": "Skin of face"}]}],
    },
}
DEFAULT_PATIENT = {"gender": "male", "birthDate": "1980-06-15"}


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(extra)


def build_order(spec: Any, order_id: str = "cryo-1") -> dict[str, Any]:
    """A draft ServiceRequest from a preset name, {preset: name, ...overrides}, or a full resource."""
    if isinstance(spec, str):
        spec = {"preset": spec}
    spec = dict(spec)
    preset = spec.pop("preset", None)
    remove = spec.pop("remove", [])
    base = copy.deepcopy(ORDER_PRESETS[preset]) if preset else {}
    order: dict[str, Any] = _merge(base, spec)
    for key in remove:
        order.pop(key, None)
    order.setdefault("resourceType", "ServiceRequest")
    order.setdefault("id", order_id)
    order.setdefault("status", "draft")
    order.setdefault("intent", "order")
    order.setdefault("subject", {"reference": f"Patient/{PATIENT_ID}"})
    return order


def _with_subject(resource: Mapping[str, Any]) -> dict[str, Any]:
    res = dict(resource)
    kind = res.get("resourceType")
    if kind in ("Device", "AllergyIntolerance"):
        res.setdefault("patient", {"reference": f"Patient/{PATIENT_ID}"})
    elif kind == "Appointment":
        res.setdefault("participant", [{"actor": {"reference": f"Patient/{PATIENT_ID}"}, "status": "accepted"}])
    elif kind not in ("Medication", "Patient"):
        res.setdefault("subject", {"reference": f"Patient/{PATIENT_ID}"})
    if kind == "AllergyIntolerance":
        res.setdefault("clinicalStatus", {"coding": [{"code": "active"}]})
    return res


def case_request(case: Mapping[str, Any], hook: str = "order-select") -> dict[str, Any]:
    """The CDS Hooks request a case describes, with every prefetch key answered."""
    orders = [build_order(case.get("order", "ln2"))]
    orders += [build_order(spec, f"cryo-{i + 2}") for i, spec in enumerate(case.get("extra_orders", []))]
    drafts = orders + [_with_subject(d) for d in case.get("drafts", [])]
    patient = {"resourceType": "Patient", "id": PATIENT_ID, **(case.get("patient") or DEFAULT_PATIENT)}
    resources = [_with_subject(r) for r in case.get("resources", [])]
    for i, resource in enumerate(resources):
        resource.setdefault("id", f"r{i + 1}")
    prefetch: dict[str, Any] = {"patient": patient}
    for key, (_template, types) in PREFETCH_QUERIES.items():
        if key == "patient" or key in case.get("omit_prefetch", []):
            continue
        matching = [r for r in resources if r.get("resourceType") in types]
        prefetch[key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matching),
            "entry": [{"resource": r} for r in matching],
        }
    context: dict[str, Any] = {
        "userId": "Practitioner/case-author",
        "patientId": PATIENT_ID,
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": d} for d in drafts]},
    }
    if hook == "order-select":
        context["selections"] = [f"ServiceRequest/{o['id']}" for o in orders]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}


def load_case(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a case is a YAML map")
    return data


def bundle_request(bundle: Mapping[str, Any], order: Any = "wbc", hook: str = "order-select") -> dict[str, Any]:
    """A request for the patient in a FHIR Bundle (e.g. a Synthea transaction bundle): its
    resources become searchset prefetch answers under our keys, and a draft order is added."""
    resources = [e["resource"] for e in bundle.get("entry") or () if isinstance(e, dict) and "resource" in e]
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
    if patient is None:
        raise ValueError("the bundle holds no Patient")
    patient_id = str(patient.get("id"))
    draft = build_order(order)
    draft["subject"] = {"reference": f"Patient/{patient_id}"}
    prefetch: dict[str, Any] = {"patient": patient}
    for key, (_template, types) in PREFETCH_QUERIES.items():
        if key != "patient":
            matching = [r for r in resources if r.get("resourceType") in types]
            prefetch[key] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(matching),
                "entry": [{"resource": r} for r in matching],
            }
    context: dict[str, Any] = {
        "userId": "Practitioner/sandbox",
        "patientId": patient_id,
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]},
    }
    if hook == "order-select":
        context["selections"] = [f"ServiceRequest/{draft['id']}"]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}
