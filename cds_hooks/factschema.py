"""The vocabulary rules may use: every fact kind and its fields, with their types.

A misspelt field in a rule would make it silently never fire; the rulebook checks every
field a rule tests against this table at load time, and the facts tests check that the
facts step only emits what is declared here.
"""

from __future__ import annotations

BOOL, NUM, STR = "bool", "number", "string"

# Fields every fact may carry for display and audit; rules do not test them.
DISPLAY_FIELDS = {
    "id": STR,
    "kind": STR,
    "ref": STR,
    "label": STR,
    "code": STR,
    "system": STR,
    "date": STR,
    "value_text": STR,
    "sid": STR,
}

CONDITION_FLAGS = (
    "in_cv",
    "in_htn",
    "in_htn_crisis",
    "in_arr",
    "in_cardiac_device",
    "in_electronic_implant",
    "in_metal_implant",
    "in_pregnancy",
    "in_anemia",
    "in_immuno",
    "in_dm_any",
    "in_dm_unctrl",
    "in_dm_neuro",
    "in_sensory_loss",
    "in_pvd",
    "in_cold_urticaria_text",
    "in_cold_urticaria_icd",
    "in_cold_intolerance",
    "in_cryoglob",
    "in_raynaud",
    "in_cold_aggl",
    "in_wound",
    "in_resp",
    "in_seizure",
    "in_vte",
    "in_claustrophobia",
    "in_hypothyroid",
    "in_gi_bleed",
    "in_rosacea",
    "in_anticoag_use",
    "in_antiplt_use",
    "in_nsaid_use",
    "in_chemo",
    "in_immsup_use",
    "in_wound_acute",
    "in_resp_acute",
    "in_ctd",
    "in_lesion_check",
    "in_melanoma",
)
MEDICATION_FLAGS = (
    "med_anticoag",
    "med_antiplt",
    "med_nsaid",
    "med_chemo",
    "med_immsup",
    "med_glucocorticoid",
    "med_vaso",
    "med_cns",
)

FACT_SCHEMA: dict[str, dict[str, str]] = {
    "order": {
        "modality": STR,
        "local_code": STR,
        "freeze_s": NUM,
        "has_duration": BOOL,
        "temp_c": NUM,
        "has_temp": BOOL,
        "sessions_per_week": NUM,
        "sessions_per_course": NUM,
        "sessions_per_day": NUM,
        "week_load": NUM,
        "course_weeks": NUM,
        "interval_days": NUM,
        "has_indication": BOOL,
        "reason_pigment_spot": BOOL,
        "reason_acne": BOOL,
        "reason_rosacea": BOOL,
        "reason_alopecia": BOOL,
        "site_hair_bearing": BOOL,
        "site_beard_area": BOOL,
        "region_known": BOOL,
        "site": STR,
        "reason_lesion_check": BOOL,
        "reason_melanoma": BOOL,
        "lesion": STR,
    },
    "patient": {"gender": STR, "age": NUM},
    "condition": {
        **dict.fromkeys(CONDITION_FLAGS, BOOL),
        "onset_days_ago": NUM,
        "site_match": STR,
        "region": STR,
        "clinical_status": STR,
        "lesion": STR,
    },
    "medication": {
        **dict.fromkeys(MEDICATION_FLAGS, BOOL),
        "current": BOOL,
        "days_before_treatment": NUM,
        "stop_date_recorded": BOOL,
    },
    "device": {"cardiac_device": BOOL, "electronic_implant": BOOL, "metal_implant": BOOL},
    "allergy": {"cold_text": BOOL, "cold_urticaria_text": BOOL, "raynaud_text": BOOL},
    "lab": {"test": STR, "value": NUM, "days_ago": NUM, "positive": BOOL},
    "bp": {"sbp": NUM, "dbp": NUM, "days_ago": NUM},
    "exam": {"test": STR, "days_ago": NUM},
    "pregnancy": {"polarity": STR, "superseded": BOOL, "days_ago": NUM, "informative": BOOL},
    "procedure": {
        "cryo": BOOL,
        "site_match": STR,
        "days_before_treatment": NUM,
        "hours_apart": NUM,
        "days_apart": NUM,
        "pt": BOOL,
        "laser": BOOL,
        "peel": BOOL,
        "chemo": BOOL,
    },
    "planned": {
        "cryo": BOOL,
        "pt": BOOL,
        "laser": BOOL,
        "peel": BOOL,
        "hours_apart": NUM,
        "days_apart": NUM,
        "days_after_treatment": NUM,
        "site_match": STR,
    },
    "prior_course": {"most_recent": BOOL, "authored_days_ago": NUM, "freq_delta": NUM},
    "record": {"history_empty": BOOL},
}

LAB_TESTS = ("hb", "a1c", "anc", "hr", "ice")
EXAM_TESTS = ("ecg", "cbc", "urine", "ice")
SITE_MATCHES = ("same", "other", "unknown")
PREGNANCY_POLARITIES = ("pregnant", "possible", "not-pregnant", "documented")


def field_type(kind: str, field: str) -> str | None:
    """The declared type of ``kind.field``, or None if rules may not test it."""
    return FACT_SCHEMA.get(kind, {}).get(field)
