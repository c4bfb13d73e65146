"""MD-UNFINISHED: the call ran out of time before every order was checked.

Why a card and not silence: an empty card list reads as "all clear" in every EHR, so a check
that was cut short must say so, name what was not checked, and send the clinician to the chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import overrides
from ..ids import time_ordered_uuid
from .build import FINDINGS_EXTENSION, MODALITY_NAMES, OVERRIDE_REASON_SYSTEM, SOURCE_LABEL, TOPIC_SYSTEM

RULE_ID = "MD-UNFINISHED"
VERSION = "1.0.0"


def unfinished_card(unchecked: Sequence[tuple[str, str]], *, partly: bool) -> dict[str, Any]:
    """The card for orders (ref, modality) whose checks did not run before the call's deadline;
    ``partly`` when other orders were checked and their cards are shown beside it."""
    names = list(dict.fromkeys(MODALITY_NAMES.get(modality, "cryotherapy") for _ref, modality in unchecked))
    orders = ", ".join(names) or "the cryotherapy order"
    shown = "The cards shown are for the orders that were checked. " if partly else "No safety findings are shown. "
    return {
        "uuid": time_ordered_uuid(),
        "summary": "The cryotherapy safety check could not be completed in time.",
        "indicator": "warning",
        "detail": (
            f"The safety check did not finish in time, so these orders were not checked: **{orders}**. "
            + shown
            + "This is not an all-clear: review the patient's contraindications in the chart before "
            "proceeding, or sign again to repeat the check.\n\n"
            "<details><summary>Evidence</summary>\n\n"
            + "\n".join(f"- {ref}: not checked (time limit reached)" for ref, _modality in unchecked)
            + "\n\n</details>"
        ),
        "source": {
            "label": SOURCE_LABEL,
            "topic": {"system": TOPIC_SYSTEM, "code": RULE_ID, "display": "Safety check not completed"},
        },
        "overrideReasons": [
            {"code": "done-elsewhere", "system": OVERRIDE_REASON_SYSTEM, "display": overrides.SHARED["done-elsewhere"]}
        ],
        "extension": {FINDINGS_EXTENSION: [{"rule": RULE_ID, "version": VERSION, "indicator": "warning"}]},
    }


__all__ = ["RULE_ID", "unfinished_card"]
