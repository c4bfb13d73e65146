"""The one list of override reasons a card may offer: each code means the same thing on
every card, so feedback and analytics can count a code across rules.

A rule names the codes it offers in ``override_reasons`` (rules/README.md). A rule may add a
reason of its own only under a code that is not in this list (a rule-specific reason).
"""

from __future__ import annotations

SYSTEM = "https://example.org/fhir/cryo-cds/CodeSystem/override-reason"

# code -> display, as offered on the card. Order is the order offered when a card merges rules.
SHARED: dict[str, str] = {
    "physician-assessed": "Physician has assessed the risk for this patient",
    "specialist-cleared": "Specialist (e.g. cardiology) has cleared the treatment",
    "benefit-outweighs-risk": "Benefit outweighs the risk for this patient",
    "checked-today": "Checked with the patient today; the risk does not apply now",
    "data-incorrect": "Record is out of date or wrong",
    "order-will-be-corrected": "Order details are wrong; will correct the order",
    "physician-directed": "Schedule or dose directed by the treating physician",
    "schedule-adjusted": "Sessions will be rescheduled to keep the interval",
    "different-site": "Different treatment site",
    "protocol-confirmed": "Chamber protocol confirmed by the physician",
    "prescriber-agreed": "Plan agreed with the prescriber",
    "patient-informed": "Patient informed and agrees",
    "done-elsewhere": "Done or documented outside this record",
    "acknowledged": "Instructions given to the patient",
}
# A fallback for a card whose rules offer none.
DEFAULT_CODES = ("physician-assessed", "benefit-outweighs-risk", "data-incorrect")


def display(code: str) -> str | None:
    """The display of a shared code, or None for a rule-specific one."""
    return SHARED.get(code)
