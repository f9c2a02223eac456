"""Data-subject requests (GDPR, CCPA/CPRA, PIPL): ``v.dsar``.

- :mod:`vault.dsar.clocks`: the statutory clocks, pure functions of a regime's
  clock profile, the instant a request was received and a holiday calendar;
- :mod:`vault.dsar.model`: states, moves, the frozen :class:`DSARRequest`;
- :mod:`vault.dsar.service`: :class:`DSARService`, every move authorised,
  recorded in the append-only history and audited;
- :mod:`vault.dsar.identity`: matching and verifying requesters through keyed
  digests, without decrypting;
- :mod:`vault.dsar.fulfil`: access/portability exports, erasure, rectification,
  restriction, objections and opt-outs, explanations, through the services below;
- :mod:`vault.dsar.bundle`: signed export bundles and erasure certificates;
- :mod:`vault.dsar.report`: on-time figures and the request log.
"""

from __future__ import annotations

from vault.dsar.bundle import verify_bundle, verify_document
from vault.dsar.clocks import (
    ClockProfile,
    ClockRule,
    ClockUnit,
    ExtensionRule,
    HolidayCalendar,
    HolidaysPackageCalendar,
    KindClock,
    WeekendsOnlyCalendar,
    acknowledge_by,
    calendar_for,
    clock_profile,
    day_of_receipt,
    due_date,
    extended_due,
    extension_notice_by,
    is_on_time,
    respond_by,
)
from vault.dsar.fulfil import FulfilServices, Recipient
from vault.dsar.model import (
    DSARRequest,
    RejectReason,
    RequestKind,
    RequestState,
    Transition,
    Verification,
    VerificationResult,
)
from vault.dsar.report import DSARReport, GroupFigures
from vault.dsar.service import CHANNELS, DSARService

__all__ = [
    "CHANNELS",
    "ClockProfile",
    "ClockRule",
    "ClockUnit",
    "DSARReport",
    "DSARRequest",
    "DSARService",
    "ExtensionRule",
    "FulfilServices",
    "GroupFigures",
    "HolidayCalendar",
    "HolidaysPackageCalendar",
    "KindClock",
    "Recipient",
    "RejectReason",
    "RequestKind",
    "RequestState",
    "Transition",
    "Verification",
    "VerificationResult",
    "WeekendsOnlyCalendar",
    "acknowledge_by",
    "calendar_for",
    "clock_profile",
    "day_of_receipt",
    "due_date",
    "extended_due",
    "extension_notice_by",
    "is_on_time",
    "respond_by",
    "verify_bundle",
    "verify_document",
]
