"""One wall-clock deadline per hook call (``CDS_HOOKS_CALL_DEADLINE_S``).

Why: an EHR waits for the answer while the clinician waits for the EHR, so a call must answer
within a known time whatever the record or the FHIR server does. The FHIR fetch budget is
taken from this deadline (keeping a reserve for the steps after it), and the pipeline checks
it between steps; a call that runs out answers at once with a card saying the check could not
be completed, never with an empty (all-clear) list.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_CALL_DEADLINE_S = 5.0
# Share of the deadline kept for facts, rules, cards and the decision write after the fetch.
_RESERVE_SHARE = 0.2
_RESERVE_MAX_S = 1.0


class CallDeadline:
    """The moment a call must stop working and answer; read from a monotonic clock."""

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self._clock = clock
        self._started = clock()

    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def remaining_s(self) -> float:
        return self.limit_s - self.elapsed_s()

    def passed(self) -> bool:
        return self.remaining_s() <= 0

    def fetch_budget_s(self, configured_s: float) -> float:
        """The FHIR fetch budget: the configured one, cut so the steps after it still fit."""
        reserve = min(_RESERVE_MAX_S, self.limit_s * _RESERVE_SHARE)
        return max(0.0, min(configured_s, self.remaining_s() - reserve))


__all__ = ["DEFAULT_CALL_DEADLINE_S", "CallDeadline"]
