"""FHIR resources -> flat facts the rules compare with constants (one module per family).

Everything clinical that needs code lists, dates or units is decided here, in Python, so
rule conditions stay simple comparisons (which is also what keeps durable-rules correct).
The catalogue's record filters (F-COND, F-MED, F-OBS, F-DEV, F-ALG) are applied here;
resources that do not count never become facts. The modules depend only on ``context``
and on each other downwards (conditions <- observations), never on the engine: turning
facts into what the C engine can read is the engine's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import count
from typing import Any

from ..orders import CryoOrder, SystemicHeuristic
from ..record import PatientRecord
from ..terminology import Terminology
from .conditions import allergy_facts, condition_facts, device_facts
from .context import CodeIndex, Fact, FactContext
from .medications import medication_facts
from .observations import observation_facts
from .orders import OrderContext, interval_facts, order_fact
from .patient import patient_fact, record_fact


def build_facts(
    order: CryoOrder,
    record: PatientRecord,
    drafts: Sequence[Any],
    terminology: Terminology,
    now: datetime,
    parameters: Mapping[str, Any],
) -> list[Fact]:
    """All facts for evaluating one cryotherapy order against the record (``parameters``: the
    rulebook's, for the windows and heuristics the facts step applies itself)."""
    octx = OrderContext.build(order, record, terminology, now)
    supply_days = float(parameters["medication_supply_days"])
    systemic = SystemicHeuristic.from_parameters(parameters)
    ctx = FactContext(terminology, now, octx.treatment, count(), systemic, supply_days)
    facts = [order_fact(order, octx, record, ctx), patient_fact(record, ctx), record_fact(record, ctx)]
    facts += condition_facts(record, ctx, octx)
    facts += medication_facts(record, drafts, order, ctx)
    facts += observation_facts(record, ctx)
    facts += device_facts(record, ctx)
    facts += allergy_facts(record, ctx)
    facts += interval_facts(order, octx, record, drafts, ctx)
    return facts


__all__ = ["CodeIndex", "Fact", "FactContext", "build_facts"]
