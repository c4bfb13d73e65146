"""Record variants real systems send, each with what the service must do with it.

Every variant is a small patient (FHIR resources as JSON, some deliberately invalid) and
an order preset from ``cds_hooks.devtools.cases``. ``fires``: the rules that must fire (the evidence was
read); ``silent``: rules that must not (read, and correctly not counted); ``named``: the
resources that cannot be read and must be named in MD-INCOMPLETE and the decision's data gaps.
Dates are relative to ``cds_hooks.devtools.cases.DEFAULT_NOW`` (2026-11-21T12:00Z).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
EXT = "https://example.org/fhir/cryo-cds/StructureDefinition/"


@dataclass(frozen=True)
class Variant:
    name: str
    resources: list[dict[str, Any]]
    order: Any = "ln2"
    fires: tuple[str, ...] = ()
    silent: tuple[str, ...] = ()
    named: tuple[str, ...] = ()
    read_leniently: tuple[str, ...] = ()  # refs that must be read, and only leniently
    facts: dict[str, Any] = field(default_factory=dict)  # kind -> fields one fact of that kind must carry


def _cc(system: str, code: str, display: str | None = None, text: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    concept: dict[str, Any] = {"coding": [coding]}
    if text:
        concept["text"] = text
    return concept


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _category(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": CATEGORY, "code": code}]}]


def bp_panel(
    rid: str, panel: dict[str, Any], sbp: float = 185, dbp: float = 105, unit: str = "mm[Hg]", **when: Any
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": _category("vital-signs"),
        "code": panel,
        "component": [
            {"code": _cc(LOINC, "8480-6", "Systolic blood pressure"), "valueQuantity": _qty(sbp, unit)},
            {"code": _cc(LOINC, "8462-4", "Diastolic blood pressure"), "valueQuantity": _qty(dbp, unit)},
        ],
    }
    obs.update(when or {"effectiveDateTime": "2026-11-10T09:30:00Z"})
    return obs


def observation(
    rid: str, code: dict[str, Any], value: Any = None, status: str = "final", category: str = "laboratory", **extra: Any
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "category": _category(category),
        "code": code,
    }
    if value is not None:
        obs["valueQuantity"] = value
    obs.update(extra)
    obs.setdefault("effectiveDateTime", "2026-11-10T09:30:00Z")
    return obs


def condition(rid: str, code: Any, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "code": code,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
        "onsetDateTime": "2020-03-01",
    }
    res.update(extra)
    return {k: v for k, v in res.items() if v is not None}


def med_request(
    rid: str, status: str = "active", authored: str = "2026-11-11T08:00:00Z", **medication: Any
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "authoredOn": authored,
    }
    res.update(medication or {"medicationCodeableConcept": _cc(RXNORM, "6851", "methotrexate")})
    return res


BP_85354 = _cc(LOINC, "85354-9", "Blood pressure panel with all children optional")
RAYNAUD = _cc(ICD, "I73.0", "Raynaud's syndrome")
HB = _cc(LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood")
CBC = _cc(LOINC, "58410-2", "CBC panel - Blood by Automated count")
MTX = ("DI-CHEMO", "DI-IMMSUP")

VALID_DATETIMES = [
    "2026-11-10",
    "2026-11",
    "2026",
    "2026-11-10T10:00:00Z",
    "2026-11-10T10:00:00+01:00",
    "2026-11-10T10:00:00.123Z",
    "2026-11-10T10:00:00.123456-05:00",
    "2026-11-10T23:59:59+14:00",
]
READABLE_INVALID_DATETIMES = [
    "2026-11-10T10:00:00",
    "2026-11-10T10:00",
    "2026-11-10 10:00:00",
    "2026-11-10T10:00:00+0100",
    "20261110",
    "2026-11-10T10:00:00.000+0000",
    " 2026-11-10 ",
    "2026-11-10T10:00:00-05",
]
UNREADABLE_DATETIMES = ["yesterday", "2026-13-45", "10/11/2026", "2026-02-30T10:00:00Z"]


def _date_variants() -> list[Variant]:
    out = []
    for i, when in enumerate(VALID_DATETIMES):
        out.append(
            Variant(
                f"bp-date-valid-{when}",
                [bp_panel(f"bp{i}", BP_85354, effectiveDateTime=when)],
                order="wbc",
                fires=("CI-HTN",),
            )
        )
        out.append(
            Variant(
                f"condition-onset-valid-{when}",
                [condition(f"c{i}", RAYNAUD, onsetDateTime=when)],
                fires=("CI-RAYNAUD",),
            )
        )
    for i, when in enumerate(READABLE_INVALID_DATETIMES):
        out.append(
            Variant(
                f"bp-date-lenient-{when.strip()}",
                [bp_panel(f"bp{i}", BP_85354, effectiveDateTime=when)],
                order="wbc",
                fires=("CI-HTN",),
                read_leniently=(f"Observation/bp{i}",),
            )
        )
        out.append(
            Variant(
                f"condition-onset-lenient-{when.strip()}",
                [condition(f"c{i}", RAYNAUD, onsetDateTime=when)],
                fires=("CI-RAYNAUD",),
                read_leniently=(f"Condition/c{i}",),
            )
        )
        out.append(
            Variant(
                f"med-authored-lenient-{when.strip()}",
                [med_request(f"m{i}", authored=when)],
                fires=MTX,
                read_leniently=(f"MedicationRequest/m{i}",),
            )
        )
    for i, when in enumerate(UNREADABLE_DATETIMES):
        out.append(
            Variant(
                f"bp-date-unreadable-{when}",
                [bp_panel(f"bp{i}", BP_85354, effectiveDateTime=when)],
                order="wbc",
                named=(f"Observation/bp{i}",),
                silent=("CI-HTN", "MD-NO-DATA"),
            )
        )
        out.append(
            Variant(
                f"condition-onset-unreadable-{when}",
                [condition(f"c{i}", RAYNAUD, onsetDateTime=when)],
                named=(f"Condition/c{i}",),
                silent=("MD-NO-DATA",),
            )
        )
    out += [
        Variant(
            "bp-effective-instant",
            [bp_panel("bp", BP_85354, effectiveInstant="2026-11-10T10:00:00.5Z")],
            order="wbc",
            fires=("CI-HTN",),
        ),
        Variant(
            "bp-effective-period",
            [bp_panel("bp", BP_85354, effectivePeriod={"start": "2026-11-10T10:00:00Z"})],
            order="wbc",
            fires=("CI-HTN",),
        ),
        Variant(
            "bp-issued-only", [bp_panel("bp", BP_85354, issued="2026-11-10T10:00:00Z")], order="wbc", fires=("CI-HTN",)
        ),
        Variant(
            "bp-no-date-at-all",
            [{k: v for k, v in bp_panel("bp", BP_85354).items() if k != "effectiveDateTime"}],
            order="wbc",
            named=("Observation/bp",),
            silent=("CI-HTN", "MD-NO-DATA"),
        ),
        Variant(
            "condition-recorded-date-no-offset",
            [condition("c", RAYNAUD, onsetDateTime=None, recordedDate="2025-01-01T08:00:00")],
            fires=("CI-RAYNAUD",),
            read_leniently=("Condition/c",),
        ),
    ]
    return out


CLINICAL_STATUS = {
    "active": True,
    "recurrence": True,
    "relapse": True,
    "inactive": False,
    "remission": False,
    "resolved": False,
}
VERIFICATION_STATUS = {
    "confirmed": True,
    "unconfirmed": True,
    "provisional": True,
    "differential": True,
    "refuted": False,
    "entered-in-error": False,
}
OBSERVATION_STATUS = {
    "final": True,
    "amended": True,
    "corrected": True,
    "preliminary": True,
    "registered": False,
    "cancelled": False,
    "entered-in-error": False,
    "unknown": False,
}
REQUEST_STATUS = {
    "active": True,
    "on-hold": True,
    "completed": True,
    "stopped": True,
    "cancelled": False,
    "entered-in-error": False,
    "draft": False,
    "unknown": False,
}
STATEMENT_STATUS = {
    "active": True,
    "intended": True,
    "on-hold": True,
    "completed": True,
    "stopped": True,
    "entered-in-error": False,
    "not-taken": False,
    "unknown": False,
}


def _status_variants() -> list[Variant]:
    out = []
    for status, counts in CLINICAL_STATUS.items():
        res = condition("c", RAYNAUD, clinicalStatus={"coding": [{"system": CLINICAL, "code": status}]})
        out.append(Variant(f"condition-clinical-{status}", [res], **_outcome(counts, ("CI-RAYNAUD",))))
    for status, counts in VERIFICATION_STATUS.items():
        res = condition("c", RAYNAUD, verificationStatus={"coding": [{"system": VERIFICATION, "code": status}]})
        out.append(Variant(f"condition-verification-{status}", [res], **_outcome(counts, ("CI-RAYNAUD",))))
    out.append(
        Variant(
            "condition-no-status",
            [condition("c", RAYNAUD, clinicalStatus=None, verificationStatus=None)],
            fires=("CI-RAYNAUD",),
        )
    )
    out.append(
        Variant(
            "condition-status-without-system",
            [condition("c", RAYNAUD, clinicalStatus={"coding": [{"code": "active"}]})],
            fires=("CI-RAYNAUD",),
        )
    )
    out.append(
        Variant(
            "condition-status-text-only",
            [condition("c", RAYNAUD, clinicalStatus={"text": "Resolved"})],
            named=("Condition/c",),
            silent=("MD-NO-DATA",),
        )
    )
    for status, counts in OBSERVATION_STATUS.items():
        res = observation("hb", HB, _qty(6.5, "g/dL"), status=status)
        out.append(Variant(f"observation-status-{status}", [res], **_outcome(counts, ("CI-ANEMIA",))))
    out.append(
        Variant(
            "observation-no-status",
            [{k: v for k, v in observation("hb", HB, _qty(6.5, "g/dL")).items() if k != "status"}],
            named=("Observation/hb",),
        )
    )
    for status, counts in REQUEST_STATUS.items():
        out.append(Variant(f"medication-request-{status}", [med_request("m", status)], **_outcome(counts, MTX)))
    for status, counts in STATEMENT_STATUS.items():
        res = {
            "resourceType": "MedicationStatement",
            "id": "s",
            "status": status,
            "medicationCodeableConcept": _cc(RXNORM, "6851", "methotrexate"),
            "effectiveDateTime": "2026-11-15",
        }
        out.append(Variant(f"medication-statement-{status}", [res], **_outcome(counts, MTX)))
    return out


def _outcome(counts: bool, rules: tuple[str, ...]) -> dict[str, Any]:
    return {"fires": rules} if counts else {"silent": rules}


def _code_variants() -> list[Variant]:
    out = []
    for label, code in (
        ("dotted", "I73.0"),
        ("dotless", "I730"),
        ("lower-case", "i73.0"),
        ("child-dotted", "I73.00"),
        ("child-dotless", "I7300"),
        ("spaces", " I73.0 "),
    ):
        out.append(
            Variant(
                f"icd-raynaud-{label}",
                [condition("c", _cc(ICD, code.strip() if label != "spaces" else code))],
                fires=("CI-RAYNAUD",),
                read_leniently=("Condition/c",) if label == "spaces" else (),
            )
        )
    for system in ("http://hl7.org/fhir/sid/icd-10", "urn:oid:2.16.840.1.113883.6.90"):
        out.append(
            Variant(f"icd-raynaud-system-{system}", [condition("c", _cc(system, "I730"))], fires=("CI-RAYNAUD",))
        )
    out += [
        Variant("icd-pacemaker-Z95.0", [condition("c", _cc(ICD, "Z95.0"))], order="wbc", fires=("CI-DEVICE-CARDIAC",)),
        Variant("icd-pacemaker-Z950", [condition("c", _cc(ICD, "Z950"))], order="wbc", fires=("CI-DEVICE-CARDIAC",)),
        Variant("icd-dm-neuro-E11.42", [condition("c", _cc(ICD, "E11.42"))], fires=("CI-DMNEURO",)),
        Variant("icd-dm-neuro-E1142", [condition("c", _cc(ICD, "E1142"))], fires=("CI-DMNEURO",)),
        Variant("icd-dm-neuro-not-E1165", [condition("c", _cc(ICD, "E1165"))], silent=("CI-DMNEURO",)),
        Variant("text-only-cryofibrinogen", [condition("c", {"text": "Cryofibrinogenaemia"})], fires=("CI-CRYOGLOB",)),
        Variant(
            "text-only-cold-agglutinin", [condition("c", {"text": "Cold agglutinin disease"})], fires=("CI-COLD-AGGL",)
        ),
        Variant("text-only-cold-urticaria", [condition("c", {"text": "Cold urticaria"})], fires=("CI-COLD-URT",)),
        Variant(
            "empty-coding-and-text",
            [condition("c", {"coding": [{}], "text": "Cold urticaria"})],
            fires=("CI-COLD-URT",),
        ),
        Variant(
            "coding-as-object",
            [condition("c", {"coding": {"system": ICD, "code": "I73.0"}})],
            fires=("CI-RAYNAUD",),
            read_leniently=("Condition/c",),
        ),
        Variant(
            "code-as-list",
            [condition("c", [_cc(ICD, "I73.0")])],
            fires=("CI-RAYNAUD",),
            read_leniently=("Condition/c",),
        ),
        Variant(
            "code-as-bare-string",
            [condition("c", "Cold urticaria")],
            fires=("CI-COLD-URT",),
            read_leniently=("Condition/c",),
        ),
        Variant(
            "condition-without-subject",
            [condition("c", RAYNAUD) | {"subject": None}],
            fires=("CI-RAYNAUD",),
            read_leniently=("Condition/c",),
        ),
        Variant(
            "unknown-element-and-bad-note",
            [condition("c", RAYNAUD, severity="high", note="see chart")],
            fires=("CI-RAYNAUD",),
            read_leniently=("Condition/c",),
        ),
        Variant(
            "condition-no-code", [condition("c", {"coding": [{}]})], named=("Condition/c",), silent=("MD-NO-DATA",)
        ),
        Variant("condition-code-is-a-number", [condition("c", 4711)], named=("Condition/c",), silent=("MD-NO-DATA",)),
    ]
    return out


def _contained_medication(code: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": "med", "code": code}


def _medication_variants() -> list[Variant]:
    ways: list[tuple[str, list[dict[str, Any]]]] = [
        ("rxnorm-ingredient", [med_request("m")]),
        ("rxnorm-scd", [med_request("m", medicationCodeableConcept=_cc(RXNORM, "105585"))]),
        ("atc-L01BA01", [med_request("m", medicationCodeableConcept=_cc(ATC, "L01BA01"))]),
        ("atc-L04AX03", [med_request("m", medicationCodeableConcept=_cc(ATC, "L04AX03"))]),
        ("text-only", [med_request("m", medicationCodeableConcept={"text": "Methotrexate 2.5 mg tablet weekly"})]),
        (
            "local-code-with-display",
            [med_request("m", medicationCodeableConcept=_cc("urn:oid:1.2.3.4", "MTX25", "METHOTREXATE 2.5MG TAB"))],
        ),
        (
            "contained",
            [
                med_request(
                    "m",
                    contained=[_contained_medication(_cc(RXNORM, "6851"))],
                    medicationReference={"reference": "#med"},
                )
            ],
        ),
        (
            "referenced-in-prefetch",
            [
                med_request("m", medicationReference={"reference": "Medication/mtx"}),
                {"resourceType": "Medication", "id": "mtx", "code": _cc(RXNORM, "105585")},
            ],
        ),
        (
            "reference-display-only",
            [
                med_request(
                    "m",
                    medicationReference={
                        "reference": "Medication/not-sent",
                        "display": "Methotrexate 2.5 MG Oral Tablet",
                    },
                )
            ],
        ),
        (
            "medication-by-ingredient",
            [
                med_request("m", medicationReference={"reference": "Medication/mtx"}),
                {
                    "resourceType": "Medication",
                    "id": "mtx",
                    "code": {"text": "Rheumatrex"},
                    "ingredient": [{"itemCodeableConcept": _cc(RXNORM, "6851")}],
                },
            ],
        ),
        (
            "medication-ingredient-reference",
            [
                med_request("m", medicationReference={"reference": "Medication/mtx"}),
                {
                    "resourceType": "Medication",
                    "id": "mtx",
                    "code": {"text": "Trexall"},
                    "ingredient": [{"itemReference": {"reference": "Substance/x", "display": "methotrexate sodium"}}],
                },
            ],
        ),
    ]
    out = [Variant(f"methotrexate-{name}", resources, fires=MTX) for name, resources in ways]
    out += [
        Variant(
            "stopped-no-stop-date-20-days",
            [med_request("m", "completed", authored="2026-11-01T08:00:00Z")],
            fires=MTX,
            facts={"medication": {"stop_date_recorded": False}},
        ),
        Variant(
            "stopped-no-stop-date-60-days", [med_request("m", "completed", authored="2026-09-22T08:00:00Z")], silent=MTX
        ),
        Variant(
            "stopped-last-updated-recently",
            [
                med_request(
                    "m",
                    "completed",
                    authored="2026-09-22T08:00:00Z",
                    meta={"lastUpdated": "2026-11-15T10:00:00Z"},
                    medicationCodeableConcept=_cc(RXNORM, "6851"),
                )
            ],
            fires=MTX,
        ),
        Variant(
            "stopped-with-supply-duration",
            [
                med_request(
                    "m",
                    "stopped",
                    authored="2026-08-13T08:00:00Z",
                    dispenseRequest={
                        "expectedSupplyDuration": {"value": 90, "unit": "days", "system": UCUM, "code": "d"}
                    },
                    medicationCodeableConcept=_cc(RXNORM, "6851"),
                )
            ],
            fires=MTX,
        ),
        Variant(
            "stopped-with-recorded-end",
            [
                med_request(
                    "m",
                    "stopped",
                    authored="2026-11-01T08:00:00Z",
                    dosageInstruction=[
                        {"timing": {"repeat": {"boundsPeriod": {"start": "2026-09-01", "end": "2026-10-01"}}}}
                    ],
                    medicationCodeableConcept=_cc(RXNORM, "6851"),
                )
            ],
            silent=MTX,
        ),
        Variant(
            "methotrexate-reference-unresolvable",
            [med_request("m", medicationReference={"reference": "Medication/not-sent"})],
            named=("MedicationRequest/m",),
            silent=("MD-NO-DATA",),
        ),
        Variant(
            "medication-no-drug",
            [
                {
                    "resourceType": "MedicationRequest",
                    "id": "m",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": "Patient/case-patient"},
                }
            ],
            named=("MedicationRequest/m",),
            silent=("MD-NO-DATA",),
        ),
    ]
    return out


def _panel_variants() -> list[Variant]:
    def member(rid: str, code: str, value: float, dated: bool = True) -> dict[str, Any]:
        obs = observation(rid, _cc(LOINC, code), _qty(value, "mm[Hg]"), category="vital-signs")
        if not dated:
            del obs["effectiveDateTime"]
        return obs

    def with_members(refs: list[str], **extra: Any) -> dict[str, Any]:
        return observation(
            "panel", BP_85354, category="vital-signs", hasMember=[{"reference": r} for r in refs], **extra
        )

    out = [
        Variant(f"bp-components-of-{name}", [bp_panel("bp", panel)], order="wbc", fires=("CI-HTN",))
        for name, panel in (
            ("85354-9", BP_85354),
            ("55284-4", _cc(LOINC, "55284-4")),
            ("35094-2", _cc(LOINC, "35094-2")),
            ("local-panel", _cc("urn:oid:1.2.3", "BPPANEL", text="BP")),
            ("text-only-panel", {"text": "Vital signs"}),
        )
    ]
    out += [
        Variant(
            "bp-separate-observations",
            [member("s", "8480-6", 185), member("d", "8462-4", 105)],
            order="wbc",
            fires=("CI-HTN",),
        ),
        Variant(
            "bp-has-member-dated",
            [with_members(["Observation/s", "Observation/d"]), member("s", "8480-6", 185), member("d", "8462-4", 105)],
            order="wbc",
            fires=("CI-HTN",),
        ),
        Variant(
            "bp-has-member-undated",
            [
                with_members(["Observation/s", "Observation/d"]),
                member("s", "8480-6", 185, dated=False),
                member("d", "8462-4", 105, dated=False),
            ],
            order="wbc",
            fires=("CI-HTN",),
        ),
        Variant(
            "bp-has-member-contained",
            [with_members(["#s"], contained=[member("s", "8480-6", 185, dated=False)])],
            order="wbc",
            fires=("CI-HTN",),
        ),
        Variant("bp-normal-in-panel", [bp_panel("bp", BP_85354, sbp=118, dbp=76)], order="wbc", silent=("CI-HTN",)),
        Variant("bp-in-kpa", [bp_panel("bp", BP_85354, sbp=25, dbp=14, unit="kPa")], order="wbc", fires=("CI-HTN",)),
        Variant(
            "hb-component-of-cbc-58410-2",
            [observation("cbc", CBC, component=[{"code": HB, "valueQuantity": _qty(6.5, "g/dL")}])],
            fires=("CI-ANEMIA",),
        ),
        Variant(
            "hb-component-of-cbc-57021-8",
            [observation("cbc", _cc(LOINC, "57021-8"), component=[{"code": HB, "valueQuantity": _qty(65, "g/L")}])],
            fires=("CI-ANEMIA",),
        ),
        Variant(
            "hb-member-of-cbc",
            [
                observation("cbc", CBC, hasMember=[{"reference": "Observation/hb"}]),
                {k: v for k, v in observation("hb", HB, _qty(6.5, "g/dL")).items() if k != "effectiveDateTime"},
            ],
            fires=("CI-ANEMIA",),
        ),
        Variant("hb-g-per-l", [observation("hb", HB, _qty(65, "g/L"))], fires=("CI-ANEMIA",)),
        Variant("hb-g-per-l-normal", [observation("hb", HB, _qty(135, "g/L"))], silent=("CI-ANEMIA",)),
        Variant("hb-mmol-per-l", [observation("hb", HB, _qty(4.0, "mmol/L"))], fires=("CI-ANEMIA",)),
        Variant("hb-molar-code", [observation("hb", _cc(LOINC, "59260-0"), _qty(4.0, "mmol/L"))], fires=("CI-ANEMIA",)),
        Variant(
            "a1c-mmol-per-mol",
            [observation("a1c", _cc(LOINC, "4548-4"), _qty(86, "mmol/mol"))],
            fires=("CI-DM-UNCTRL",),
        ),
        Variant(
            "a1c-percent-component",
            [
                observation(
                    "p",
                    {"text": "Diabetes panel"},
                    component=[{"code": _cc(LOINC, "4548-4"), "valueQuantity": _qty(10.2, "%")}],
                )
            ],
            fires=("CI-DM-UNCTRL",),
        ),
        Variant(
            "hr-per-minute-component",
            [
                bp_panel("bp", BP_85354, sbp=120, dbp=80)
                | {"component": [{"code": _cc(LOINC, "8867-4"), "valueQuantity": _qty(130, "/min")}]}
            ],
            order="wbc",
            fires=("CI-ARR",),
        ),
        Variant(
            "hr-per-second",
            [observation("hr", _cc(LOINC, "8867-4"), _qty(2.1, "/s"), category="vital-signs")],
            order="wbc",
            fires=("CI-ARR",),
        ),
        Variant(
            "hr-beats-per-minute",
            [
                observation(
                    "hr",
                    _cc(LOINC, "8867-4"),
                    {"value": 120, "unit": "beats/minute", "code": "{beats}/min"},
                    category="vital-signs",
                )
            ],
            order="wbc",
            fires=("CI-ARR",),
        ),
        Variant(
            "anc-per-microlitre", [observation("anc", _cc(LOINC, "751-8"), _qty(500, "/uL"))], fires=("CI-IMMUNO",)
        ),
        Variant(
            "anc-component-of-cbc",
            [observation("cbc", CBC, component=[{"code": _cc(LOINC, "751-8"), "valueQuantity": _qty(0.5, "10*9/L")}])],
            fires=("CI-IMMUNO",),
        ),
        Variant(
            "pregnancy-status-component",
            [
                observation(
                    "p",
                    {"text": "Obstetric screen"},
                    category="social-history",
                    component=[{"code": _cc(LOINC, "82810-3"), "valueCodeableConcept": _cc(LOINC, "LA15173-0")}],
                )
            ],
            order="wbc",
            fires=("CI-PREG",),
        ),
        Variant(
            "hcg-positive-member",
            [
                observation(
                    "p",
                    {"text": "Pregnancy tests"},
                    hasMember=[{"reference": "#h"}],
                    contained=[
                        {
                            "resourceType": "Observation",
                            "id": "h",
                            "status": "final",
                            "code": _cc(LOINC, "2106-3"),
                            "interpretation": [
                                _cc("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "POS")
                            ],
                        }
                    ],
                )
            ],
            order="wbc",
            fires=("CI-PREG",),
        ),
    ]
    return out


def _order_unit_variants() -> list[Variant]:
    cold = {
        "preset": "wbc",
        "extension": [
            {
                "url": EXT + "cryo-target-temperature",
                "valueQuantity": {"value": -250, "unit": "°F", "system": UCUM, "code": "[degF]"},
            }
        ],
    }

    def lasting(duration: int, unit: str) -> dict[str, Any]:
        """The preset's schedule with another session length (build_order merges the rest)."""
        return {"preset": "wbc", "occurrenceTiming": {"repeat": {"duration": duration, "durationUnit": unit}}}

    long, seconds = lasting(4, "min"), lasting(240, "s")
    return [
        Variant("order-temperature-in-degF", [], order=cold, fires=("TD-SYS-TEMP",)),
        Variant("order-duration-in-min", [], order=long, fires=("TD-SYS-DUR",)),
        Variant("order-duration-in-s", [], order=seconds, fires=("TD-SYS-DUR",)),
    ]


def variants() -> list[Variant]:
    """The whole corpus."""
    return (
        _date_variants()
        + _status_variants()
        + _code_variants()
        + _medication_variants()
        + _panel_variants()
        + _order_unit_variants()
    )
