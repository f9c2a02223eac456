"""Retention and legal holds: schedule, per-record expiry, the sweeper, holds.

``policies/retention.toml`` says, per data category and regime, how long data
is kept, from which event, and what happens then (delete, shred, anonymise).
Every record carries its next expiry (table ``retention``), kept in step by
writes and by :meth:`RetentionService.record_event`. The sweeper removes what
has expired in audited, crash-safe batches; legal holds stop it, and stop
deletion and crypto-shredding, for a subject or a whole tenant.

This package's root exports the pure parts (the schedule and its periods).
The services reached from an open vault live in :mod:`vault.retention.service`
(``v.retention``, with the sweeper of :mod:`vault.retention.sweeper`) and
:mod:`vault.retention.holds` (``v.holds``).
"""

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

__all__ = [
    "Action",
    "Event",
    "Period",
    "RetentionRule",
    "RetentionSchedule",
    "SubjectEvents",
    "add_period",
    "category_expiry",
    "load_schedule",
]
