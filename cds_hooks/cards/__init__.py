"""Cards: findings per order (``findings``), card sentences (``text``), card assembly (``build``)."""

from .build import (
    FINDINGS_EXTENSION,
    GROUPINGS,
    OVERRIDE_REASON_SYSTEM,
    SOURCE_LABEL,
    TOPIC_SYSTEM,
    CardBuilder,
    finding_codes,
    findings_of,
    group_codes,
    incomplete_card,
)
from .findings import Finding, collect_findings

__all__ = [
    "FINDINGS_EXTENSION",
    "GROUPINGS",
    "OVERRIDE_REASON_SYSTEM",
    "SOURCE_LABEL",
    "TOPIC_SYSTEM",
    "CardBuilder",
    "Finding",
    "collect_findings",
    "finding_codes",
    "findings_of",
    "group_codes",
    "incomplete_card",
]
