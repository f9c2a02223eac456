"""Retention and legal holds: schedule, per-record expiry, the sweeper, holds.

``policies/retention.toml`` says, per data category and regime, how long data
is kept, from which event, and what happens then (delete, shred, anonymise).
Every record carries its next expiry (table ``retention``), kept in step by
writes and by :meth:`RetentionService.record_event`. The sweeper removes what
has expired in audited, crash-safe batches; legal holds stop it, and stop
deletion and crypto-shredding, for a subject or a whole tenant.
"""

from vault.retention.holds import HoldService, LegalHold
from vault.retention.schedule import (
    Action,
    Event,
    Period,
    RetentionRule,
    RetentionSchedule,
    SubjectEvents,
    add_period,
    category_expiry,
    load_schedule,
)
from vault.retention.service import (
    PlanEntry,
    RetentionPlan,
    RetentionReport,
    RetentionService,
    RunSummary,
)
from vault.retention.sweeper import SweepReport

__all__ = [
    "Action",
    "Event",
    "HoldService",
    "LegalHold",
    "Period",
    "PlanEntry",
    "RetentionPlan",
    "RetentionReport",
    "RetentionRule",
    "RetentionSchedule",
    "RetentionService",
    "RunSummary",
    "SubjectEvents",
    "SweepReport",
    "add_period",
    "category_expiry",
    "load_schedule",
]
