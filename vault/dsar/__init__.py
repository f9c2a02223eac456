"""Data-subject requests (GDPR, CCPA/CPRA, PIPL).

So far: the statutory clocks (:mod:`vault.dsar.clocks`), pure functions of a
regime's clock profile, the instant a request was received and a holiday
calendar.
"""

from __future__ import annotations

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

__all__ = [
    "ClockProfile",
    "ClockRule",
    "ClockUnit",
    "ExtensionRule",
    "HolidayCalendar",
    "HolidaysPackageCalendar",
    "KindClock",
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
]
