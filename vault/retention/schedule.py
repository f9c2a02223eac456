"""The retention schedule (``policies/retention.toml``) and pure expiry arithmetic.

A rule says how long data of one category is kept under one regime, from which
event the period runs and what happens when it ends::

    [[categories.marketing.gdpr]]
    period = "P30D"                 # ISO 8601: PnY, PnM, PnD (combinations allowed)
    from = "consent_withdrawn"      # created | last_interaction | contract_end | consent_withdrawn
    action = "delete"               # delete | shred | anonymise

A category may have several rules per regime: its data expires at the
*earliest* expiry among the rules whose event has happened (for example on
consent withdrawal, or after two years without interaction, whichever comes
first). A regime without rules for a category uses the category's ``default``
rules; every category must have them.

Nothing here does I/O apart from :func:`load_schedule`; the expiry functions
are pure and unit-tested per regime.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from vault._toml import load_model
from vault.errors import ConfigError
from vault.retention._regime import DEFAULT_REGIME, REGIMES
from vault.schema import NAME_PATTERN, Classification, CollectionSchema, SchemaRegistry

__all__ = ["Action", "CategoryExpiry", "Event", "Period", "RetentionRule", "RetentionSchedule",
           "SubjectEvents", "add_period", "category_expiry", "load_schedule", "record_expiries"]

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

_PERIOD = re.compile(r"P(?:(\d{1,4})Y)?(?:(\d{1,5})M)?(?:(\d{1,6})D)?")


class Event(StrEnum):
    """The event a retention period runs from."""

    CREATED = "created"
    LAST_INTERACTION = "last_interaction"
    CONTRACT_END = "contract_end"
    CONSENT_WITHDRAWN = "consent_withdrawn"


#: Events recorded per subject with ``v.retention.record_event`` (``created`` is the record's).
SUBJECT_EVENTS = (Event.LAST_INTERACTION, Event.CONTRACT_END, Event.CONSENT_WITHDRAWN)


class Action(StrEnum):
    """What happens to a category's data when its retention ends.

    ``delete``: its fields are removed from the record (the record goes when
    nothing is left). ``shred``: the same, and the subject's data key is
    destroyed once the subject has no record left. ``anonymise``: the record's
    personal and sensitive fields are removed; its internal and public fields
    (country, language, segment...) are kept, unlinked from the subject.
    """

    DELETE = "delete"
    SHRED = "shred"
    ANONYMISE = "anonymise"


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """A calendar period: years, months and days."""

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse an ISO 8601 period such as ``P6Y``, ``P13M``, ``P30D`` or ``P1Y6M``.

        Raises:
            ValueError: not such a period.
        """
        match = _PERIOD.fullmatch(text) if isinstance(text, str) else None
        if match is None or text == "P":
            raise ValueError("period must be an ISO 8601 period like P6Y, P13M, P30D or P0D")
        years, months, days = (int(g) if g else 0 for g in match.groups())
        return cls(years, months, days)

    def __str__(self) -> str:
        parts = [f"{n}{unit}" for n, unit in ((self.years, "Y"), (self.months, "M"),
                                                (self.days, "D")) if n]
        return "P" + ("".join(parts) or "0D")


def add_period(start: dt.datetime, period: Period) -> dt.datetime:
    """``start`` plus ``period`` in calendar terms.

    Months and years are added to the calendar date, clamping the day to the
    end of a shorter month (31 January + 1 month = 28 or 29 February); days
    are added last.
    """
    total = start.month - 1 + period.months + 12 * period.years
    year, month = start.year + total // 12, total % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day) + dt.timedelta(days=period.days)


class RetentionRule(BaseModel):
    """One rule of the schedule (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    period: Period
    from_event: Event = Field(alias="from")
    action: Action
    basis: str = Field(default="", max_length=500)

    @field_validator("period", mode="before")
    @classmethod
    def _parse_period(cls, value: Any) -> Period:
        if isinstance(value, Period):
            return value
        return Period.parse(value)

    def expiry(self, events: SubjectEvents) -> dt.datetime | None:
        """When data under this rule expires, or None while its event has not happened."""
        start = events.at(self.from_event)
        return None if start is None else add_period(start, self.period)


class _ScheduleFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(default=1, ge=1, le=1)
    categories: Mapping[Name, Mapping[Name, Sequence[RetentionRule]]]

    @model_validator(mode="after")
    def _check(self) -> _ScheduleFile:
        for category, regimes in self.categories.items():
            unknown = sorted(set(regimes) - REGIMES)
            if unknown:
                raise ValueError(f"categories.{category}: unknown regime {unknown[0]!r} "
                                 f"(known: {', '.join(sorted(REGIMES))})")
            if DEFAULT_REGIME not in regimes:
                raise ValueError(f"categories.{category}: needs rules for the "
                                 f"{DEFAULT_REGIME!r} regime")
            for regime, rules in regimes.items():
                if not rules:
                    raise ValueError(f"categories.{category}.{regime}: no rules")
        return self


@dataclass(frozen=True, slots=True)
class SubjectEvents:
    """The times that retention periods run from, for one record of one subject.

    ``last_interaction`` is never earlier than ``created``: collecting the
    record was itself an interaction.
    """

    created: dt.datetime
    last_interaction: dt.datetime | None = None
    contract_end: dt.datetime | None = None
    consent_withdrawn: dt.datetime | None = None

    def at(self, event: Event) -> dt.datetime | None:
        if event is Event.CREATED:
            return self.created
        if event is Event.LAST_INTERACTION:
            last = self.last_interaction
            return self.created if last is None or last < self.created else last
        if event is Event.CONTRACT_END:
            return self.contract_end
        return self.consent_withdrawn


@dataclass(frozen=True, slots=True)
class CategoryExpiry:
    """When one category of one record expires, and what happens then."""

    category: str
    expires_at: dt.datetime
    action: Action
    rule: RetentionRule


def category_expiry(rules: Sequence[RetentionRule], events: SubjectEvents,
                    category: str) -> CategoryExpiry | None:
    """The earliest expiry among ``rules`` whose event has happened (None: none has)."""
    best: CategoryExpiry | None = None
    for rule in rules:
        when = rule.expiry(events)
        if when is not None and (best is None or when < best.expires_at):
            best = CategoryExpiry(category, when, rule.action, rule)
    return best


class RetentionSchedule:
    """The validated schedule: rules per (category, regime)."""

    __slots__ = ("_rules", "path")

    def __init__(self, rules: Mapping[str, Mapping[str, Sequence[RetentionRule]]],
                 *, path: Path | None = None) -> None:
        self._rules: Mapping[str, Mapping[str, tuple[RetentionRule, ...]]] = MappingProxyType({
            cat: MappingProxyType({reg: tuple(rs) for reg, rs in regimes.items()})
            for cat, regimes in rules.items()
        })
        self.path = path

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted(self._rules))

    def regimes(self, category: str) -> tuple[str, ...]:
        return tuple(sorted(self._rules.get(category, {})))

    def rules(self, category: str, regime: str) -> tuple[RetentionRule, ...]:
        """The rules of ``category`` under ``regime`` (the ``default`` ones if it has none).

        Raises:
            ConfigError: the schedule does not know the category.
        """
        regimes = self._rules.get(category)
        if regimes is None:
            raise ConfigError(f"the retention schedule has no rules for category {category!r}")
        return regimes.get(regime) or regimes[DEFAULT_REGIME]

    def check_covers(self, schemas: Iterable[CollectionSchema]) -> None:
        """Every category used by a collection must have rules.

        Raises:
            ConfigError: naming the schedule file and the uncovered category.
        """
        for schema in schemas:
            for spec in schema.fields.values():
                if spec.category not in self._rules:
                    where = self.path or "retention schedule"
                    raise ConfigError(
                        f"{where}: categories.{spec.category}: no rules, but field "
                        f"{schema.name}.{spec.name} has this category")


def record_expiries(schedule: RetentionSchedule, schema: CollectionSchema, fields: Iterable[str],
                    regime: str, events: SubjectEvents) -> dict[str, CategoryExpiry | None]:
    """Expiry of each category present among ``fields`` of a record (None: not yet running)."""
    categories = {schema.fields[f].category for f in fields if f in schema.fields}
    return {c: category_expiry(schedule.rules(c, regime), events, c) for c in sorted(categories)}


def identifying(schema: CollectionSchema, field: str) -> bool:
    """Whether a field is removed by anonymisation (personal or sensitive data)."""
    spec = schema.fields.get(field)
    return spec is None or spec.classification in (Classification.PERSONAL,
                                                    Classification.SENSITIVE)


def load_schedule(path: Path, schemas: SchemaRegistry | None = None) -> RetentionSchedule:
    """Read and validate a retention schedule file.

    Args:
        path: usually ``policies/retention.toml``.
        schemas: if given, every category they use must have rules.

    Raises:
        ConfigError: the file is missing, not TOML, or invalid; the message
            names the file and the offending setting, never a value.
    """
    parsed = load_model(path, _ScheduleFile, what="the retention schedule",
                        kind="retention schedule")
    schedule = RetentionSchedule(parsed.categories, path=path)
    if schemas is not None:
        schedule.check_covers(schemas)
    return schedule
