"""Statutory clocks of data-subject requests: when a response is due.

Everything here is pure date arithmetic. A clock is a function of a regime's
:class:`ClockProfile`, the instant the request was received and a
:class:`HolidayCalendar`; nothing reads the time, a file or a database (the
holiday calendar is computed by the ``holidays`` package, in memory).

How the periods are counted (legal background: ``JURISDICTIONS.md``):

- The day of receipt is the date of ``received_at`` in the controller's time
  zone (a profile setting): a request sent at 23:30 UTC reaches a controller
  in Shanghai on the next day.
- Counting starts on the day after receipt (GDPR: Regulation 1182/71 Art.
  3(1) leaves out the day of the event; for the CCPA and PIPL clocks this is
  the project's reading, ``JURISDICTIONS.md``).
- ``calendar_day``: N days later. ``business_day``: the Nth Monday-to-Friday
  that is not a holiday of the profile's calendar. ``working_day`` (PRC
  工作日): the same, but a Saturday or Sunday the calendar makes a working day
  (调休) counts. ``calendar_month``: the same day number N months later, or that
  month's last day when it has none (Reg. 1182/71 Art. 3(2)(c)).
- ``roll_to_business_day``: a due day on a Saturday, Sunday or holiday moves
  to the next business day (Reg. 1182/71 Art. 3(4)); CCPA's 45 calendar days
  do not roll unless the profile says so.
- An extension is a longer period counted from receipt under the same rules
  (GDPR Art. 12(3): three months from receipt, not two months added to a date
  already moved off a weekend), and may only be taken while the first period
  runs.
- A due date in a year the calendar does not cover is a :class:`ConfigError`,
  never a guess.

Misuse to avoid: :func:`due_date` takes the *day of receipt*, not the due day
of an earlier period; pass a calendar built for the same profile
(:func:`calendar_for`), or the holidays of one country are applied to another.
"""

from __future__ import annotations

import datetime as dt
from calendar import monthrange
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from vault.errors import ConfigError, InvalidData
from vault.jurisdiction import JurisdictionProfile

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

# A bound on a clock's length and on a run of days off: a misconfigured
# calendar (every day a holiday) must fail, not loop for ever.
_MAX_COUNT = 1000
_MAX_DAYS_OFF = 366
_SATURDAY = 5


class ClockUnit(StrEnum):
    """The unit a clock counts in (the ``unit`` of a profile's deadline)."""

    CALENDAR_DAY = "calendar_day"
    BUSINESS_DAY = "business_day"
    WORKING_DAY = "working_day"
    CALENDAR_MONTH = "calendar_month"


_CALENDAR_UNITS = frozenset({ClockUnit.CALENDAR_DAY, ClockUnit.CALENDAR_MONTH})


@dataclass(frozen=True, slots=True)
class ClockRule:
    """``count`` ``unit``s from the day after receipt.

    Attributes:
        unit: what is counted.
        count: how many (1 to 1000).
        roll_to_business_day: a due day that is not a business day moves to the
            next one (only for calendar units: a counted business or working day
            is already one).

    Raises:
        ConfigError: an unknown unit, a count out of range, or a roll on a
            counted unit.
    """

    unit: ClockUnit
    count: int
    _: KW_ONLY
    roll_to_business_day: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "unit", ClockUnit(self.unit))
        except ValueError:
            raise ConfigError("clock rule: unknown unit") from None
        # bool is an int: True must not pass for a count of one.
        if (not isinstance(self.count, int) or isinstance(self.count, bool)
                or not 1 <= self.count <= _MAX_COUNT):
            raise ConfigError(f"clock rule: count must be an integer from 1 to {_MAX_COUNT}")
        if not isinstance(self.roll_to_business_day, bool):
            raise ConfigError("clock rule: roll_to_business_day must be true or false")
        if self.roll_to_business_day and self.unit not in _CALENDAR_UNITS:
            raise ConfigError("clock rule: roll_to_business_day applies to calendar_day and "
                              "calendar_month only")


@dataclass(frozen=True, slots=True)
class ExtensionRule:
    """How far a period can be extended, and until when.

    Attributes:
        total: the whole extended period, counted from receipt (GDPR: 3 calendar
            months; CCPA: 90 calendar days).
        notify_by: the last day on which the extension may be taken and the
            requester told, counted from receipt; never later than the first
            period (GDPR Art. 12(3), CCPA §7021(b)).
    """

    total: ClockRule
    notify_by: ClockRule


@dataclass(frozen=True, slots=True)
class KindClock:
    """The clocks of one kind of request.

    Attributes:
        acknowledge: the acknowledgement clock, or None where none is required.
        respond: the response clock.
        extension: the extension, or None where the period cannot be extended.
    """

    acknowledge: ClockRule | None
    respond: ClockRule
    extension: ExtensionRule | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockProfile:
    """One regime's clocks and where they run.

    Attributes:
        time_zone: IANA name of the controller's zone; the day of receipt and
            the day of completion are dates there.
        holiday_country: ISO 3166-1 alpha-2 code as the ``holidays`` package
            knows it, or None for no holidays (only weekends are off).
        holiday_subdivision: e.g. ``CA`` (California), ``BE`` (Berlin), or None.
        holiday_categories: the package's categories (``public`` by default).
        announced_yearly: the calendar is fixed by a yearly official notice
            (PRC State Council): a year counts as covered only once the
            ``holidays`` package carries that year's notice.
        acknowledge: default acknowledgement clock, or None.
        respond: default response clock.
        extension: default extension, or None.
        overrides: clocks of particular kinds of request, keyed by the name the
            profile uses (a right such as ``rectify``, or ``opt_out_sale_sharing``).

    Raises:
        ConfigError: an unknown time zone, a subdivision without a country.
    """

    time_zone: str
    holiday_country: str | None
    holiday_subdivision: str | None = None
    holiday_categories: tuple[str, ...] = ("public",)
    announced_yearly: bool = False
    acknowledge: ClockRule | None = None
    respond: ClockRule
    extension: ExtensionRule | None = None
    overrides: Mapping[str, KindClock] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _zone(self.time_zone)
        if self.holiday_subdivision is not None and self.holiday_country is None:
            raise ConfigError("clock: holiday_subdivision needs a holiday_country")
        if not self.holiday_categories:
            raise ConfigError("clock: holiday_categories must not be empty")
        # Frozen means frozen: nobody changes a clock through a dict kept elsewhere.
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    @property
    def zone(self) -> ZoneInfo:
        """The controller's time zone."""
        return _zone(self.time_zone)

    def clock_for(self, kind: str) -> KindClock:
        """The clocks of a request of ``kind`` (an override, else the defaults)."""
        override = self.overrides.get(kind)
        if override is not None:
            return override
        return KindClock(self.acknowledge, self.respond, self.extension)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> ClockProfile:
        """Build the clocks of a regime from its profile data.

        Reads ``clock`` (``time_zone``, ``holiday_country``,
        ``holiday_subdivision``, ``holiday_categories``, ``announced_yearly``),
        ``acknowledge``, ``respond``, ``respond_by_right``,
        ``opt_out_sale_sharing`` and ``limit_sensitive``, each deadline a table
        of ``value``, ``unit``, ``extension``, ``notify_by`` and
        ``roll_to_business_day``; other keys of the profile are left to
        :mod:`vault.jurisdiction`. A missing or None key is absent.

        Args:
            data: one ``[regimes.<name>]`` table of ``jurisdictions.toml``, or
                a validated profile's ``model_dump()``.

        Returns:
            The clock profile.

        Raises:
            ConfigError: naming the bad key, never its value.
        """
        clock = _table(data, "clock", required=True)
        _only(clock, "clock", {"time_zone", "holiday_country", "holiday_subdivision",
                               "holiday_categories", "announced_yearly"})
        time_zone = _text(clock, "clock", "time_zone", required=True)
        assert time_zone is not None  # required=True
        categories = clock.get("holiday_categories")
        if categories is None:
            categories = ("public",)
        if (not isinstance(categories, list | tuple)
                or not all(isinstance(c, str) for c in categories)):
            raise ConfigError("clock.holiday_categories must be a list of names")
        announced = clock.get("announced_yearly", False)
        if announced is None:
            announced = False
        if not isinstance(announced, bool):
            raise ConfigError("clock.announced_yearly must be true or false")

        acknowledge = _deadline(data.get("acknowledge"), "acknowledge")
        if acknowledge is not None and acknowledge[1] is not None:
            raise ConfigError("acknowledge: an acknowledgement clock has no extension")
        ack_rule = acknowledge[0] if acknowledge is not None else None
        respond = _deadline(data.get("respond"), "respond")
        if respond is None:
            raise ConfigError("respond: a response clock is required")
        overrides: dict[str, KindClock] = {}
        for right, raw in _table(data, "respond_by_right", required=False).items():
            clock_of_right = _deadline(raw, f"respond_by_right.{right}")
            if clock_of_right is not None:
                # A right's own response clock; the acknowledgement is the regime's.
                overrides[right] = KindClock(ack_rule, *clock_of_right)
        for kind in ("opt_out_sale_sharing", "limit_sensitive"):
            clock_of_kind = _deadline(data.get(kind), kind)
            if clock_of_kind is not None:
                # CCPA §7021(a) asks for a confirmation of receipt of requests to
                # know, delete and correct only; an opt-out (§7026(f)) and a
                # request to limit (§7027(g)) have their own 15-business-day
                # clock and no acknowledgement.
                overrides[kind] = KindClock(None, *clock_of_kind)
        return cls(
            time_zone=time_zone,
            holiday_country=_text(clock, "clock", "holiday_country", required=False),
            holiday_subdivision=_text(clock, "clock", "holiday_subdivision", required=False),
            holiday_categories=tuple(categories),
            announced_yearly=announced,
            acknowledge=ack_rule,
            respond=respond[0],
            extension=respond[1],
            overrides=overrides,
        )


def clock_profile(profile: JurisdictionProfile) -> ClockProfile:
    """The clocks of a loaded jurisdiction profile.

    Args:
        profile: a profile from :func:`vault.jurisdiction.load_jurisdictions`.

    Returns:
        Its :class:`ClockProfile`.

    Raises:
        ConfigError: the profile has no ``clock`` table, or a clock is invalid.
    """
    if profile.clock is None:
        raise ConfigError(f"regime {profile.name!r} has no clock settings (clock table)")
    try:
        return ClockProfile.from_mapping(profile.model_dump())
    except ConfigError as exc:
        raise ConfigError(f"regimes.{profile.name}: {exc.message}") from None


# ----------------------------------------------------------------- calendars


class HolidayCalendar(Protocol):
    """Which days are off in one place (the seam between the clocks and a calendar).

    Saturdays and Sundays are the weekend (Reg. 1182/71 Art. 2(2); CCPA business
    days; the PRC week); a calendar says which other days are holidays and which
    weekend days are made working days.
    """

    def covers(self, year: int) -> bool:
        """Whether the calendar knows the holidays of ``year``."""
        ...

    def is_holiday(self, day: dt.date) -> bool:
        """Whether ``day`` is a holiday.

        Raises:
            ConfigError: the calendar does not cover ``day``'s year.
        """
        ...

    def is_adjusted_working_day(self, day: dt.date) -> bool:
        """Whether ``day``, a Saturday or Sunday, is made a working day (PRC 调休).

        Raises:
            ConfigError: the calendar does not cover ``day``'s year.
        """
        ...


class WeekendsOnlyCalendar:
    """A calendar without holidays: only Saturdays and Sundays are off.

    For a regime whose holiday calendar is deliberately unset (the conservative
    default profile): no holiday ever pushes a due date later.
    """

    __slots__ = ()

    def covers(self, year: int) -> bool:
        return dt.MINYEAR <= year <= dt.MAXYEAR

    def is_holiday(self, day: dt.date) -> bool:
        return False

    def is_adjusted_working_day(self, day: dt.date) -> bool:
        return False

    def __repr__(self) -> str:
        return "WeekendsOnlyCalendar()"


@dataclass(frozen=True, slots=True)
class _Year:
    holidays: frozenset[dt.date]
    working_weekend_days: frozenset[dt.date]


class HolidaysPackageCalendar:
    """A :class:`HolidayCalendar` over the ``holidays`` package.

    One instance serves one place (country, subdivision, categories) and caches
    each year it computes, so one calendar per profile should be kept and passed
    to the clock functions. Years outside the package's range for the country
    are not covered (the package returns no holidays there, which would be a
    guess); with ``announced_yearly``, neither is a year whose official notice
    the package does not carry (its table of the year's special days).

    Args:
        country: ISO 3166-1 alpha-2 code, e.g. ``DE``, ``US``, ``CN``.
        subdivision: e.g. ``BE`` (Berlin), ``CA`` (California), or None.
        categories: the package's holiday categories.
        announced_yearly: see above.

    Raises:
        ConfigError: the package does not know the country, subdivision or a
            category.
    """

    __slots__ = ("_announced", "_categories", "_country", "_first", "_last", "_noticed",
                 "_subdivision", "_years")

    def __init__(self, country: str, *, subdivision: str | None = None,
                 categories: tuple[str, ...] = ("public",),
                 announced_yearly: bool = False) -> None:
        self._country = country
        self._subdivision = subdivision
        self._categories = categories
        self._announced = announced_yearly
        probe = self._build(())
        self._first = probe.start_year
        self._last = probe.end_year
        # The years whose notice the package carries: the keys of its table of
        # special (announced) days; read defensively, an unexpected shape covers
        # nothing (fail closed).
        special = getattr(probe, "special_public_holidays", None)
        self._noticed: frozenset[int] = frozenset(
            year for year in (special if isinstance(special, Mapping) else ())
            if isinstance(year, int))
        self._years: dict[int, _Year] = {}

    def _build(self, years: tuple[int, ...]) -> holidays.HolidayBase:
        # The package's errors are translated here, in one place.
        try:
            return holidays.country_holidays(self._country, subdiv=self._subdivision,
                                             years=years, categories=self._categories)
        except (NotImplementedError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"holiday calendar {self._place()}: not available in the holidays package"
            ) from exc

    def _place(self) -> str:
        return self._country + (f"-{self._subdivision}" if self._subdivision else "")

    def covers(self, year: int) -> bool:
        if not self._first <= year <= self._last:
            return False
        return not self._announced or year in self._noticed

    def _year(self, year: int) -> _Year:
        cached = self._years.get(year)
        if cached is not None:
            return cached
        if not self.covers(year):
            why = (" (no official notice for that year in this version of the holidays "
                   "package)" if self._first <= year <= self._last else "")
            raise ConfigError(f"holiday calendar {self._place()} does not cover {year}{why}: "
                              "no due date is computed from a guess")
        days = self._build((year,))
        computed = _Year(
            holidays=frozenset(day for day in days if day.year == year),
            working_weekend_days=frozenset(days.weekend_workdays),
        )
        self._years[year] = computed
        return computed

    def is_holiday(self, day: dt.date) -> bool:
        return day in self._year(day.year).holidays

    def is_adjusted_working_day(self, day: dt.date) -> bool:
        # The year first: a day of an uncovered year is refused, weekday or not.
        this_year = self._year(day.year)
        if day.weekday() < _SATURDAY:
            return False
        if day in this_year.working_weekend_days:
            return True
        # A late-December weekend day can be made a working day by the notice of
        # the next year's New Year holiday; consult that year when it is known.
        nxt = day.year + 1
        return self.covers(nxt) and day in self._year(nxt).working_weekend_days

    def __repr__(self) -> str:
        return f"HolidaysPackageCalendar({self._place()!r})"


def _calendar(profile: ClockProfile, calendar: HolidayCalendar | None) -> HolidayCalendar:
    # "is None", not "or": a calendar may be a mapping, and an empty one is falsy.
    return calendar if calendar is not None else calendar_for(profile)


def calendar_for(profile: ClockProfile) -> HolidayCalendar:
    """The holiday calendar a profile names.

    Args:
        profile: the clock profile.

    Returns:
        A :class:`HolidaysPackageCalendar` for its country, or a
        :class:`WeekendsOnlyCalendar` when it names none. Keep it and pass it to
        the clock functions to reuse its cache.

    Raises:
        ConfigError: the holidays package does not know the place.
    """
    if profile.holiday_country is None:
        return WeekendsOnlyCalendar()
    return HolidaysPackageCalendar(profile.holiday_country,
                                   subdivision=profile.holiday_subdivision,
                                   categories=profile.holiday_categories,
                                   announced_yearly=profile.announced_yearly)


# ----------------------------------------------------------------- arithmetic


def _is_business_day(day: dt.date, calendar: HolidayCalendar) -> bool:
    return day.weekday() < _SATURDAY and not calendar.is_holiday(day)


def _is_working_day(day: dt.date, calendar: HolidayCalendar) -> bool:
    if day.weekday() >= _SATURDAY:
        return calendar.is_adjusted_working_day(day)
    return not calendar.is_holiday(day)


def _next_day(day: dt.date) -> dt.date:
    try:
        return day + dt.timedelta(days=1)
    except OverflowError:
        raise ConfigError("clock: the due date falls after the last representable date") from None


def _nth_after(start: dt.date, count: int, counts: Callable[[dt.date], bool]) -> dt.date:
    day, counted, off = start, 0, 0
    while counted < count:
        day = _next_day(day)
        if counts(day):
            counted, off = counted + 1, 0
        else:
            off += 1
            if off > _MAX_DAYS_OFF:
                raise ConfigError("clock: the calendar has no working day in a whole year")
    return day


def _add_months(day: dt.date, months: int) -> dt.date:
    # Reg. 1182/71 Art. 3(2)(c): the same date in the last month, or that month's
    # last day when it has no such date (31 Jan + 1 month = 28/29 Feb).
    year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
    if year > dt.MAXYEAR:
        raise ConfigError("clock: the due date falls after the last representable date")
    month = month0 + 1
    return dt.date(year, month, min(day.day, monthrange(year, month)[1]))


def due_date(rule: ClockRule, received_on: dt.date, calendar: HolidayCalendar) -> dt.date:
    """The last day of a period that starts the day after ``received_on``.

    Args:
        rule: the clock.
        received_on: the day of receipt (a date in the controller's zone; see
            :func:`day_of_receipt`). Never the due day of an earlier period.
        calendar: the holidays of the profile's place.

    Returns:
        The due day: a response completed on it is on time.

    Raises:
        ConfigError: the calendar does not cover a year the count runs through
            or the due day's year.
    """
    if rule.unit is ClockUnit.CALENDAR_DAY:
        due = received_on
        for _ in range(rule.count):
            due = _next_day(due)
    elif rule.unit is ClockUnit.CALENDAR_MONTH:
        due = _add_months(received_on, rule.count)
    elif rule.unit is ClockUnit.BUSINESS_DAY:
        due = _nth_after(received_on, rule.count, lambda d: _is_business_day(d, calendar))
    else:
        due = _nth_after(received_on, rule.count, lambda d: _is_working_day(d, calendar))
    if rule.roll_to_business_day:
        # Reg. 1182/71 Art. 3(4): a period ending on a Saturday, Sunday or public
        # holiday ends with the next working day.
        off = 0
        while not _is_business_day(due, calendar):
            due, off = _next_day(due), off + 1
            if off > _MAX_DAYS_OFF:
                raise ConfigError("clock: the calendar has no working day in a whole year")
    # Checked even when no holiday was consulted (calendar days without a roll),
    # so that every clock of a profile answers for the same years.
    if not calendar.covers(due.year):
        raise ConfigError(f"clock: the holiday calendar does not cover {due.year}, the year "
                          "of the due date: no due date is computed from a guess")
    return due


# ----------------------------------------------------------------- the clocks


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ConfigError("clock.time_zone: not a known IANA time zone") from None


def _aware(instant: dt.datetime, name: str) -> dt.datetime:
    # A naive datetime has no instant: which day it is depends on a zone the
    # caller did not say.
    if not isinstance(instant, dt.datetime):
        raise InvalidData(f"{name} must be a datetime", field=name)
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise InvalidData(f"{name} must be timezone-aware", field=name)
    return instant


def day_of_receipt(profile: ClockProfile, received_at: dt.datetime) -> dt.date:
    """The day of receipt: the date of ``received_at`` in the controller's zone.

    Args:
        profile: the clock profile.
        received_at: an aware datetime.

    Returns:
        The date there.

    Raises:
        InvalidData: ``received_at`` is naive or not a datetime.
    """
    return _aware(received_at, "received_at").astimezone(profile.zone).date()


def acknowledge_by(profile: ClockProfile, kind: str, received_at: dt.datetime, *,
                   calendar: HolidayCalendar | None = None) -> dt.date | None:
    """The last day to confirm receipt (CCPA §7021(a): 10 business days).

    Args:
        profile: the clock profile.
        kind: the kind of request (or the profile's name for it).
        received_at: when the request was received (aware).
        calendar: the profile's calendar; built with :func:`calendar_for` when None.

    Returns:
        The due day, or None where the regime asks for no acknowledgement.

    Raises:
        InvalidData: ``received_at`` is naive.
        ConfigError: the calendar does not cover the period.
    """
    rule = profile.clock_for(kind).acknowledge
    received_on = day_of_receipt(profile, received_at)
    if rule is None:
        return None
    return due_date(rule, received_on, _calendar(profile, calendar))


def respond_by(profile: ClockProfile, kind: str, received_at: dt.datetime, *,
               calendar: HolidayCalendar | None = None) -> dt.date:
    """The last day on which the response is on time (before any extension).

    Args:
        profile: the clock profile.
        kind: the kind of request (or the profile's name for it).
        received_at: when the request was received (aware); the clock does not
            pause for identity verification (CCPA §7021(b)).
        calendar: the profile's calendar; built with :func:`calendar_for` when None.

    Returns:
        The due day.

    Raises:
        InvalidData: ``received_at`` is naive.
        ConfigError: the calendar does not cover the period.
    """
    received_on = day_of_receipt(profile, received_at)
    return due_date(profile.clock_for(kind).respond, received_on,
                    _calendar(profile, calendar))


def extension_notice_by(profile: ClockProfile, kind: str, received_at: dt.datetime, *,
                        calendar: HolidayCalendar | None = None) -> dt.date | None:
    """The last day on which the period may be extended and the requester told.

    The earlier of the first period's due day and the profile's ``notify_by``:
    an extension is only taken while the first period runs (GDPR Art. 12(3);
    CCPA §7021(b), notice within the first 45 days).

    Args:
        profile: the clock profile.
        kind: the kind of request.
        received_at: when the request was received (aware).
        calendar: the profile's calendar; built with :func:`calendar_for` when None.

    Returns:
        That day, or None where the period cannot be extended.

    Raises:
        InvalidData: ``received_at`` is naive.
        ConfigError: the calendar does not cover the period.
    """
    clock = profile.clock_for(kind)
    received_on = day_of_receipt(profile, received_at)
    if clock.extension is None:
        return None
    calendar = _calendar(profile, calendar)
    return min(due_date(clock.respond, received_on, calendar),
               due_date(clock.extension.notify_by, received_on, calendar))


def extended_due(profile: ClockProfile, kind: str, received_at: dt.datetime, *,
                 requested_at: dt.datetime,
                 calendar: HolidayCalendar | None = None) -> dt.date:
    """The due day after an extension, counted from receipt.

    GDPR: three months from receipt under the same rules (Art. 12(3) "two
    further months"; Reg. 1182/71 Art. 3), not two months added to a first due
    day that was moved off a weekend. CCPA: 90 calendar days from receipt. That
    an extension is taken only once is the caller's to enforce (the request's
    state); this function only computes the date.

    Args:
        profile: the clock profile.
        kind: the kind of request.
        received_at: when the request was received (aware).
        requested_at: when the extension is taken and the requester told (aware).
        calendar: the profile's calendar; built with :func:`calendar_for` when None.

    Returns:
        The extended due day.

    Raises:
        InvalidData: a naive datetime; the regime allows no extension of this
            kind; ``requested_at`` is before receipt or after the first period.
        ConfigError: the calendar does not cover the period.
    """
    _aware(requested_at, "requested_at")
    calendar = _calendar(profile, calendar)
    last = extension_notice_by(profile, kind, received_at, calendar=calendar)
    extension = profile.clock_for(kind).extension
    if last is None or extension is None:
        raise InvalidData("the regime allows no extension of this kind of request",
                          field="kind")
    if requested_at < received_at:
        raise InvalidData("an extension cannot be taken before the request was received",
                          field="requested_at")
    if requested_at.astimezone(profile.zone).date() > last:
        raise InvalidData(f"an extension must be taken while the first period runs; "
                          f"it ended on {last.isoformat()}", field="requested_at")
    return due_date(extension.total, day_of_receipt(profile, received_at), calendar)


def is_on_time(profile: ClockProfile, due_on: dt.date, completed_at: dt.datetime) -> bool:
    """Whether a request completed at ``completed_at`` met ``due_on``.

    On time means completed on or before the due day, as a date in the
    controller's zone (the period ends at the end of its last day, Reg. 1182/71
    Art. 3(2)).

    Args:
        profile: the clock profile.
        due_on: the due day (from :func:`respond_by` or :func:`extended_due`).
        completed_at: an aware datetime.

    Returns:
        True when on time.

    Raises:
        InvalidData: ``completed_at`` is naive.
    """
    completed_on = _aware(completed_at, "completed_at").astimezone(profile.zone).date()
    return completed_on <= due_on


# ----------------------------------------------------------------- parsing


def _table(data: Mapping[str, object], key: str, *, required: bool) -> Mapping[str, object]:
    value = data.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{key}: a table is required")
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{key}: must be a table")
    return value


def _only(table: Mapping[str, object], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")


def _text(table: Mapping[str, object], where: str, key: str, *, required: bool) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}.{key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key} must be a non-empty string")
    return value


def _count(table: Mapping[str, object], where: str, key: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be an integer")
    return value


def _deadline(raw: object, name: str) -> tuple[ClockRule, ExtensionRule | None] | None:
    if raw is None:
        return None
    table = _table({name: raw}, name, required=True)
    _only(table, name, {"value", "unit", "extension", "notify_by", "roll_to_business_day"})
    value = _count(table, name, "value")
    unit = table.get("unit")
    roll = table.get("roll_to_business_day", False)
    if value is None or not isinstance(unit, str):
        raise ConfigError(f"{name}: value and unit are required")
    if roll is None:
        roll = False
    if not isinstance(roll, bool):
        raise ConfigError(f"{name}.roll_to_business_day must be true or false")
    try:
        rule = ClockRule(ClockUnit(unit), value, roll_to_business_day=roll)
        extension = _count(table, name, "extension")
        notify_by = _count(table, name, "notify_by")
        if extension is None:
            if notify_by is not None:
                raise ConfigError("notify_by without an extension")
            return rule, None
        # The extended period is the whole period from receipt (value +
        # extension units), counted under the same rules; the notice is due
        # within ``notify_by`` units (default: the first period).
        total = ClockRule(rule.unit, value + extension, roll_to_business_day=roll)
        notice = ClockRule(rule.unit, notify_by or value, roll_to_business_day=roll)
    except ValueError:
        raise ConfigError(f"{name}.unit: unknown unit") from None
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc.message}") from None
    return rule, ExtensionRule(total, notice)
