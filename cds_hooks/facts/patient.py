"""The patient's own facts (gender, age) and the record fact MD-NO-DATA reads."""

from __future__ import annotations

from ..fhirtime import age_in_years
from ..record import PatientRecord
from .context import Fact, FactContext


def patient_fact(record: PatientRecord, ctx: FactContext) -> Fact:
    patient = record.patient
    gender = getattr(patient, "gender", None) if patient is not None else None
    age = age_in_years(patient.birthDate, ctx.now) if patient is not None and patient.birthDate else None
    return ctx.new_fact(
        "patient",
        patient,
        gender=gender,
        age=age,
        label=f"{gender or 'unknown gender'}, {age if age is not None else '?'} y",
    )


HISTORY_KEYS = ("conditions", "observations")
MEDICATION_KEYS = ("medicationRequests", "medicationStatements", "medicationAdministrations")


def record_fact(record: PatientRecord, ctx: FactContext) -> Fact:
    """MD-NO-DATA: the history queries were answered and returned nothing at all; a clinical
    resource that arrived but could not be read (named in MD-INCOMPLETE) is not "nothing"."""
    answered = all(k in record.available for k in HISTORY_KEYS) and any(k in record.available for k in MEDICATION_KEYS)
    empty = answered and not record.holds_history()
    return ctx.new_fact("record", None, history_empty=empty, label="patient record")
