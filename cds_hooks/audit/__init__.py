"""Decision log and feedback store (architecture §5): records in, JSON-able answers out."""

from .records import CardRecord, DecisionRecord, FeedbackItem, FiredRule
from .store import AuditStore, AuditStoreClosedError

__all__ = [
    "AuditStore",
    "AuditStoreClosedError",
    "CardRecord",
    "DecisionRecord",
    "FeedbackItem",
    "FiredRule",
]
