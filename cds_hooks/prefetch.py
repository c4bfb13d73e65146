"""What the service asks the EHR for: one place for the discovery prefetch templates, the
FHIR-server fallback queries (the same templates) and the Observation codes the facts read.

Why one place: a code the facts step reads but the prefetch does not ask for is data that
never arrives. Observations are asked for twice: by category (so panels with local codes and
their components arrive) and by the analyte and exam codes (for those sent without a category,
e.g. the ice test). Medication requests and statements include the Medications they reference.
CDS Hooks 2.0 prefetch tokens cannot compute dates, so no date bound is set in the templates;
the facts step applies the rules' look-back windows.
"""

from __future__ import annotations

from .terminology import Terminology

PATIENT_TOKEN = "{{context.patientId}}"
OBSERVATION_CODES_PLACEHOLDER = "{observation_codes}"
# The categories real systems file the analytes under (US Core / FHIR observation-category).
OBSERVATION_CATEGORIES = ("vital-signs", "laboratory", "social-history", "survey")
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"

# Value sets of Observation codes the facts step reads (facts/observations.py takes its ids from here).
BP_SETS = ("OBS-BP.sbp", "OBS-BP.dbp")
HR_SETS = ("OBS-BP.hr",)
HB_SETS = ("OBS-HB.mass", "OBS-HB.molar")
A1C_SETS = ("OBS-A1C",)
ANC_SETS = ("CL-IMMUNO.anc-obs",)
PREGNANCY_SETS = ("CL-PREG.status-obs", "CL-PREG.hcg-tests")
EXAM_SETS = (
    "OBS-PREEXAM.ecg-obs",
    "OBS-PREEXAM.ecg-proc",
    "OBS-PREEXAM.cbc",
    "OBS-PREEXAM.urine",
    "OBS-PREEXAM.ice-test",
)
PANEL_SETS = ("OBS-BP.panel",)  # asked for so that panels whose category is missing arrive too
OBSERVATION_SETS = PANEL_SETS + BP_SETS + HR_SETS + HB_SETS + A1C_SETS + ANC_SETS + PREGNANCY_SETS + EXAM_SETS


def _search(resource: str, *params: str) -> str:
    return resource + "?" + "&".join(params)


# Prefetch key -> (FHIR query template, resource types it yields). Discovery advertises these and
# the FHIR-server fallback runs them for keys the client left out.
PREFETCH_QUERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "patient": (f"Patient/{PATIENT_TOKEN}", ("Patient",)),
    "conditions": (_search("Condition", f"patient={PATIENT_TOKEN}"), ("Condition",)),
    "medicationRequests": (
        _search("MedicationRequest", f"patient={PATIENT_TOKEN}", "_include=MedicationRequest:medication"),
        ("MedicationRequest", "Medication"),
    ),
    "medicationStatements": (
        _search("MedicationStatement", f"patient={PATIENT_TOKEN}", "_include=MedicationStatement:medication"),
        ("MedicationStatement", "Medication"),
    ),
    "medicationAdministrations": (
        _search("MedicationAdministration", f"patient={PATIENT_TOKEN}", "_include=MedicationAdministration:medication"),
        ("MedicationAdministration", "Medication"),
    ),
    "observations": (
        _search("Observation", f"patient={PATIENT_TOKEN}", "category=" + ",".join(OBSERVATION_CATEGORIES)),
        ("Observation",),
    ),
    "observationsByCode": (
        _search("Observation", f"patient={PATIENT_TOKEN}", "code=" + OBSERVATION_CODES_PLACEHOLDER),
        ("Observation",),
    ),
    "devices": (_search("Device", f"patient={PATIENT_TOKEN}"), ("Device",)),
    "deviceUseStatements": (_search("DeviceUseStatement", f"patient={PATIENT_TOKEN}"), ("DeviceUseStatement",)),
    "allergies": (_search("AllergyIntolerance", f"patient={PATIENT_TOKEN}"), ("AllergyIntolerance",)),
    "procedures": (_search("Procedure", f"patient={PATIENT_TOKEN}"), ("Procedure",)),
    "serviceRequests": (_search("ServiceRequest", f"patient={PATIENT_TOKEN}"), ("ServiceRequest",)),
    "appointments": (f"Appointment?actor=Patient/{PATIENT_TOKEN}", ("Appointment",)),
}
# Keys whose absence leaves rules unchecked (an MD-INCOMPLETE card). The others are often
# not offered by EHRs, and draftOrders already carries the planned services.
COMPLETENESS_KEYS = (
    "patient",
    "conditions",
    "medicationRequests",
    "observations",
    "devices",
    "allergies",
    "procedures",
)
# Keys that ask again for a type another key already brings: their absence is never a gap of its own.
SUPPLEMENTARY_KEYS = ("observationsByCode",)


def observation_codes(terminology: Terminology) -> str:
    """The Observation codes the rules read, as a FHIR token list for the prefetch query."""
    codes = []
    for vs_id in OBSERVATION_SETS:
        for system, code in sorted(terminology[vs_id].exact):
            codes.append(f"{system}|{code}")
    return ",".join(dict.fromkeys(codes))


def prefetch_templates(terminology: Terminology) -> dict[str, str]:
    """The discovery prefetch (and fallback queries), with the code list filled in."""
    codes = observation_codes(terminology)
    return {
        key: template.replace(OBSERVATION_CODES_PLACEHOLDER, codes)
        for key, (template, _types) in PREFETCH_QUERIES.items()
    }
