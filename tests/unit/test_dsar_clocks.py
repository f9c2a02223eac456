"""Statutory clocks of data-subject requests (vault.dsar.clocks).

Every expected date below was counted by hand on a calendar, with the public
holidays of the place: Berlin (Christmas, Good Friday/Easter Monday, Labour
Day, 8 March, the one-off 8 May 2025), US federal + California (Thanksgiving
and the day after, Cesar Chavez Day, Christmas, New Year), and the State
Council's notices for 2024 and 2025 (National Day and Spring Festival weeks
with their adjusted working weekends). None is computed by the code under test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from vault import dsar
from vault.errors import ConfigError, InvalidData
from vault.jurisdiction import load_jurisdictions

POLICIES = Path(__file__).resolve().parents[2] / "policies"
REGISTRY = load_jurisdictions(POLICIES / "jurisdictions.toml")
GDPR, CCPA, PIPL, DEFAULT = (dsar.clock_profile(REGISTRY.profile(name))
                             for name in ("gdpr", "ccpa", "pipl", "default"))
# One calendar per profile, kept across tests as a caller should keep it.
CAL = {id(p): dsar.calendar_for(p) for p in (GDPR, CCPA, PIPL, DEFAULT)}

BERLIN = ZoneInfo("Europe/Berlin")
LA = ZoneInfo("America/Los_Angeles")
SHANGHAI = ZoneInfo("Asia/Shanghai")
D = dt.date.fromisoformat


def at(day: str, zone: ZoneInfo, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(D(day), dt.time(hour, minute), tzinfo=zone)


def cal(profile: dsar.ClockProfile) -> dsar.HolidayCalendar:
    return CAL.get(id(profile)) or dsar.calendar_for(profile)


# ----------------------------------------------------------------- GDPR


@pytest.mark.parametrize(("received", "due"), [
    ("2025-01-15", "2025-02-17"),  # 15 Feb 2025 is a Saturday -> Monday 17th
    ("2025-07-17", "2025-08-18"),  # 17 Aug 2025 is a Sunday -> Monday 18th
    ("2025-01-31", "2025-02-28"),  # no 31 Feb: the month's last day (Fri)
    ("2024-01-31", "2024-02-29"),  # leap year: 29 Feb 2024 (Thu)
    ("2024-01-30", "2024-02-29"),  # no 30 Feb in a leap year either
    ("2025-03-31", "2025-04-30"),  # April has 30 days (Wed)
    ("2025-04-30", "2025-05-30"),  # the same day number, not "the month's end" (Fri)
    ("2024-12-31", "2025-01-31"),  # across the year (Fri)
    ("2024-11-25", "2024-12-27"),  # 25 and 26 Dec are holidays -> Fri 27th
    ("2024-12-01", "2025-01-02"),  # New Year's Day (Wed) -> Thu 2 Jan
    ("2025-03-21", "2025-04-22"),  # Easter Monday 21 Apr 2025 -> Tue 22nd
    ("2025-03-18", "2025-04-22"),  # Good Friday, weekend, Easter Monday -> Tue 22nd
    ("2024-02-08", "2024-03-11"),  # 8 March is a holiday in Berlin (Fri) -> Mon 11th
    ("2025-04-08", "2025-05-09"),  # 8 May 2025, a one-off Berlin holiday -> Fri 9th
    ("2025-02-01", "2025-03-03"),  # received on a Saturday; 1 Mar is a Saturday too
])
def test_gdpr_one_calendar_month(received: str, due: str) -> None:
    """GDPR: the same date next month (or its last day), moved off weekends and holidays."""
    assert dsar.respond_by(GDPR, "access", at(received, BERLIN), calendar=cal(GDPR)) == D(due)


def test_gdpr_roll_follows_the_subdivision() -> None:
    """Without Berlin's 8 March, the German nationwide calendar leaves Friday the due day."""
    national = dataclasses.replace(GDPR, holiday_subdivision=None)
    assert dsar.respond_by(national, "access", at("2024-02-08", BERLIN)) == D("2024-03-08")


@pytest.mark.parametrize(("received", "first_due", "extended"), [
    # 1 Mar 2025 is a Saturday, so the first period ends Mon 3 Mar. Three months
    # from receipt: 1 May 2025 (Labour Day, Thu) -> Fri 2 May. Two months added
    # to the moved date would give 3 May (Sat) -> 5 May: wrong.
    ("2025-02-01", "2025-03-03", "2025-05-02"),
    # 31 Jan + 3 months = 30 Apr; 28 Feb + 2 months would be 28 Apr.
    ("2025-01-31", "2025-02-28", "2025-04-30"),
    # 30 Nov (Sat) -> 30 Dec (Mon); + 3 months: no 30 Feb -> 28 Feb 2025 (Fri).
    ("2024-11-30", "2024-12-30", "2025-02-28"),
    # 31 Jan 2024 + 3 months = 30 Apr 2024 (Tue); leap February in between.
    ("2024-01-31", "2024-02-29", "2024-04-30"),
])
def test_gdpr_extension_counts_three_months_from_receipt(received: str, first_due: str,
                                                         extended: str) -> None:
    """GDPR Art. 12(3): extended = three months from receipt, not from the moved date."""
    received_at = at(received, BERLIN)
    assert dsar.respond_by(GDPR, "access", received_at) == D(first_due)
    assert dsar.extension_notice_by(GDPR, "access", received_at) == D(first_due)
    assert dsar.extended_due(GDPR, "access", received_at,
                             requested_at=at(first_due, BERLIN, 9)) == D(extended)


@pytest.mark.parametrize(("requested_at", "allowed"), [
    (at("2025-02-10", BERLIN), True),
    (at("2025-03-03", BERLIN, 23, 59), True),                   # last minute of the period
    (dt.datetime(2025, 3, 3, 22, 59, tzinfo=dt.UTC), True),     # 23:59 in Berlin
    (dt.datetime(2025, 3, 3, 23, 30, tzinfo=dt.UTC), False),    # already 4 Mar in Berlin
    (at("2025-03-04", BERLIN, 9), False),
])
def test_gdpr_extension_only_while_the_first_period_runs(requested_at: dt.datetime,
                                                         allowed: bool) -> None:
    """An extension taken after the first period ended (in the controller's zone) is refused."""
    received_at = at("2025-02-01", BERLIN)
    if allowed:
        assert dsar.extended_due(GDPR, "access", received_at,
                                 requested_at=requested_at) == D("2025-05-02")
    else:
        with pytest.raises(InvalidData, match="first period") as info:
            dsar.extended_due(GDPR, "access", received_at, requested_at=requested_at)
        assert info.value.field == "requested_at"


def test_extension_before_receipt_is_refused() -> None:
    """An extension cannot predate the request."""
    with pytest.raises(InvalidData, match="before the request"):
        dsar.extended_due(GDPR, "access", at("2025-02-01", BERLIN),
                          requested_at=at("2025-01-31", BERLIN))


def test_rectification_clock_is_set_apart_with_the_same_figures() -> None:
    """GDPR rectify has its own (to be confirmed) clock with the same month and roll."""
    assert dsar.respond_by(GDPR, "rectify", at("2025-01-15", BERLIN)) == D("2025-02-17")
    assert dsar.extended_due(GDPR, "rectify", at("2025-02-01", BERLIN),
                             requested_at=at("2025-02-02", BERLIN)) == D("2025-05-02")


def test_gdpr_has_no_acknowledgement_clock() -> None:
    """GDPR sets no acknowledgement deadline (Art. 12(3) 'without undue delay')."""
    assert dsar.acknowledge_by(GDPR, "access", at("2025-01-15", BERLIN)) is None


# ----------------------------------------------------------------- CCPA/CPRA


@pytest.mark.parametrize(("received", "due"), [
    ("2024-02-14", "2024-03-30"),  # leap Feb: day 45 is Sat 30 Mar, and it stays there
    ("2025-01-01", "2025-02-15"),  # Sat 15 Feb 2025: no roll
    ("2024-11-20", "2025-01-04"),  # across Thanksgiving, Christmas, the year: Sat 4 Jan
    ("2025-06-02", "2025-07-17"),  # a plain Thursday
])
def test_ccpa_45_calendar_days_do_not_roll(received: str, due: str) -> None:
    """CCPA §7021(b): 45 calendar days from the day after receipt, weekend or not."""
    assert dsar.respond_by(CCPA, "know", at(received, LA), calendar=cal(CCPA)) == D(due)


def test_ccpa_roll_when_the_profile_says_so() -> None:
    """With roll_to_business_day in the profile, Sat 30 Mar 2024 moves past Cesar Chavez Day."""
    data = REGISTRY.profile("ccpa").model_dump()
    data["respond"] = {**data["respond"], "roll_to_business_day": True}
    rolled = dsar.ClockProfile.from_mapping(data)
    # Sat 30, Sun 31 Mar; Mon 1 Apr 2024 is Cesar Chavez Day (observed) -> Tue 2 Apr.
    assert dsar.respond_by(rolled, "know", at("2024-02-14", LA)) == D("2024-04-02")


@pytest.mark.parametrize(("requested", "allowed"), [
    ("2024-03-30", True),   # day 45
    ("2024-03-31", False),  # day 46
])
def test_ccpa_extension_to_90_days_with_notice_inside_the_first_45(requested: str,
                                                                   allowed: bool) -> None:
    """CCPA: once by 45 more days, 90 from receipt (14 May 2024), noticed within the first 45."""
    received_at = at("2024-02-14", LA)
    assert dsar.extension_notice_by(CCPA, "know", received_at) == D("2024-03-30")
    if allowed:
        assert dsar.extended_due(CCPA, "know", received_at,
                                 requested_at=at(requested, LA, 17)) == D("2024-05-14")
    else:
        with pytest.raises(InvalidData, match="first period"):
            dsar.extended_due(CCPA, "know", received_at, requested_at=at(requested, LA, 9))


@pytest.mark.parametrize(("kind", "received", "due"), [
    # Ack, 10 BD: 21,22,25,26,27 Nov; 28 (Thanksgiving) and 29 (Day After) off;
    # 2,3,4,5,6 Dec.
    ("acknowledge", "2024-11-20", "2024-12-06"),
    # Ack, 10 BD: 25-28 Mar; Mon 31 Mar 2025 Cesar Chavez Day off; 1-4, 7, 8 Apr.
    ("acknowledge", "2025-03-24", "2025-04-08"),
    # Opt-out, 15 BD: 21-27 Nov (5), 2-6 Dec (10), 9-13 Dec (15).
    ("opt_out_sale_sharing", "2024-11-20", "2024-12-13"),
    # Limit, 15 BD: 17-20 (4), 23, 24 (6), 26, 27 (8), 30, 31 (10), Jan 1 off,
    # 2, 3 (12), 6, 7, 8 (15).
    ("limit_sensitive", "2024-12-16", "2025-01-08"),
])
def test_ccpa_business_days_skip_federal_and_california_holidays(kind: str, received: str,
                                                                 due: str) -> None:
    """Business days are Monday to Friday less US federal and California holidays."""
    received_at = at(received, LA)
    if kind == "acknowledge":
        assert dsar.acknowledge_by(CCPA, "know", received_at, calendar=cal(CCPA)) == D(due)
    else:
        assert dsar.respond_by(CCPA, kind, received_at, calendar=cal(CCPA)) == D(due)


@pytest.mark.parametrize(("received", "due"), [
    ("2024-11-20", "2024-12-05"),  # the Day After Thanksgiving is not federal
    ("2025-03-24", "2025-04-07"),  # nor is Cesar Chavez Day
])
def test_business_days_follow_the_subdivision(received: str, due: str) -> None:
    """Without the California subdivision, the state holidays count as business days."""
    federal = dataclasses.replace(CCPA, holiday_subdivision=None)
    assert dsar.acknowledge_by(federal, "know", at(received, LA)) == D(due)


def test_opt_out_and_limit_have_no_acknowledgement() -> None:
    """CCPA §7021(a) confirms receipt of requests to know, delete and correct only."""
    received_at = at("2024-11-20", LA)
    assert dsar.acknowledge_by(CCPA, "opt_out_sale_sharing", received_at) is None
    assert dsar.acknowledge_by(CCPA, "limit_sensitive", received_at) is None
    assert dsar.extension_notice_by(CCPA, "opt_out_sale_sharing", received_at) is None
    with pytest.raises(InvalidData, match="no extension"):
        dsar.extended_due(CCPA, "opt_out_sale_sharing", received_at, requested_at=received_at)


def test_day_of_receipt_is_a_date_in_los_angeles() -> None:
    """06:30 UTC on 21 Nov 2024 is still 20 Nov in California."""
    received_at = dt.datetime(2024, 11, 21, 6, 30, tzinfo=dt.UTC)
    assert dsar.day_of_receipt(CCPA, received_at) == D("2024-11-20")
    assert dsar.acknowledge_by(CCPA, "know", received_at) == D("2024-12-06")


# ----------------------------------------------------------------- PIPL


@pytest.mark.parametrize(("received", "due"), [
    # National Day 2024: 1-7 Oct off; Sun 29 Sep and Sat 12 Oct are working days.
    # 24-27 Sep (4), Sun 29 (5), 30 (6), 8-11 Oct (10), Sat 12 (11), 14-17 (15).
    ("2024-09-23", "2024-10-17"),
    # Spring Festival 2025: 28 Jan - 4 Feb off; Sun 26 Jan and Sat 8 Feb work.
    # 21-24 Jan (4), Sun 26 (5), 27 (6), 5-7 Feb (9), Sat 8 (10), 10-14 (15).
    ("2025-01-20", "2025-02-14"),
    # National Day + Mid-Autumn 2025: 1-8 Oct off; Sun 28 Sep and Sat 11 Oct work.
    # 23-26 Sep (4), Sun 28 (5), 29, 30 (7), 9, 10 (9), Sat 11 (10), 13-17 (15).
    ("2025-09-22", "2025-10-17"),
    # A month without holidays: three plain weeks.
    ("2024-11-04", "2024-11-25"),
])
def test_pipl_15_working_days_on_the_prc_calendar(received: str, due: str) -> None:
    """PIPL default: 15 working days, statutory holidays off and adjusted weekends on."""
    assert dsar.respond_by(PIPL, "copy", at(received, SHANGHAI), calendar=cal(PIPL)) == D(due)


@pytest.mark.parametrize(("day", "holiday", "adjusted"), [
    ("2024-09-29", False, True),   # Sunday worked (2024 notice)
    ("2024-10-12", False, True),   # Saturday worked
    ("2024-10-04", True, False),   # Friday off, in lieu of 29 Sep
    ("2024-10-07", True, False),   # Monday off, in lieu of 12 Oct
    ("2024-10-05", False, False),  # an ordinary Saturday of the holiday week
])
def test_prc_calendar_matches_the_state_council_notice(day: str, holiday: bool,
                                                       adjusted: bool) -> None:
    """The holidays package carries the 2024 arrangement as the State Council published it."""
    calendar = cal(PIPL)
    assert calendar.is_holiday(D(day)) is holiday
    assert calendar.is_adjusted_working_day(D(day)) is adjusted


def test_receipt_late_utc_is_the_next_day_in_shanghai() -> None:
    """23:30 UTC on 22 Sep 2024 is 07:30 on 23 Sep in Shanghai: the clock counts from the 23rd."""
    received_at = dt.datetime(2024, 9, 22, 23, 30, tzinfo=dt.UTC)
    assert dsar.day_of_receipt(PIPL, received_at) == D("2024-09-23")
    # Counting from 22 Sep (the UTC date) would end on 16 Oct.
    assert dsar.respond_by(PIPL, "copy", received_at) == D("2024-10-17")


def test_pipl_has_no_extension() -> None:
    """The PIPL profile grants no extension: asking for one is refused."""
    with pytest.raises(InvalidData, match="no extension") as info:
        dsar.extended_due(PIPL, "copy", at("2024-09-23", SHANGHAI),
                          requested_at=at("2024-09-24", SHANGHAI))
    assert info.value.field == "kind"


@pytest.mark.parametrize(("completed_at", "on_time"), [
    (at("2024-10-17", SHANGHAI, 23, 59), True),
    (dt.datetime(2024, 10, 17, 15, 59, tzinfo=dt.UTC), True),   # 23:59 in Shanghai
    (dt.datetime(2024, 10, 17, 16, 30, tzinfo=dt.UTC), False),  # 00:30 on the 18th there
    (at("2024-10-18", SHANGHAI, 0, 0), False),
    (at("2024-09-30", SHANGHAI), True),
])
def test_on_time_is_judged_by_the_date_in_the_controller_zone(completed_at: dt.datetime,
                                                              on_time: bool) -> None:
    """Completed on or before the due day, as a date in the profile's zone, is on time."""
    assert dsar.is_on_time(PIPL, D("2024-10-17"), completed_at) is on_time


# ----------------------------------------------------------------- coverage


@pytest.mark.parametrize(("profile", "received_at", "year"), [
    (PIPL, at("2026-12-20", SHANGHAI), "2027"),   # the count runs into unannounced 2027
    (PIPL, at("2027-03-01", SHANGHAI), "2027"),
    (PIPL, at("1949-06-01", SHANGHAI), "1949"),   # before the package's range
    (GDPR, at("2101-01-15", BERLIN), "2101"),     # after the package's range for DE
    (CCPA, at("2150-06-01", LA), "2150"),         # calendar days still need a covered year
])
def test_a_year_the_calendar_does_not_cover_is_an_error(profile: dsar.ClockProfile,
                                                        received_at: dt.datetime,
                                                        year: str) -> None:
    """A due date in a year the holiday calendar does not cover is a ConfigError, never a guess."""
    with pytest.raises(ConfigError, match=year):
        dsar.respond_by(profile, "access", received_at)


@pytest.mark.parametrize(("calendar", "day"), [
    (dsar.HolidaysPackageCalendar("CN", announced_yearly=True), "2027-10-01"),
    (dsar.HolidaysPackageCalendar("DE", subdivision="BE"), "2101-12-25"),
    (dsar.HolidaysPackageCalendar("US", subdivision="CA"), "1776-07-04"),
])
def test_calendar_refuses_a_year_it_does_not_cover(calendar: dsar.HolidaysPackageCalendar,
                                                   day: str) -> None:
    """A day of an uncovered year raises instead of answering 'no holiday'."""
    assert not calendar.covers(D(day).year)
    with pytest.raises(ConfigError, match=day[:4]):
        calendar.is_holiday(D(day))
    with pytest.raises(ConfigError, match=day[:4]):
        calendar.is_adjusted_working_day(D(day) + dt.timedelta(days=1))


def test_announced_yearly_is_what_refuses_an_unpublished_prc_year() -> None:
    """By rule the package would compute 2027 for China; only announced_yearly refuses it."""
    assert dsar.HolidaysPackageCalendar("CN").covers(2027)
    assert not dsar.HolidaysPackageCalendar("CN", announced_yearly=True).covers(2027)
    assert dsar.HolidaysPackageCalendar("CN", announced_yearly=True).covers(2026)


def test_the_last_announced_prc_year_is_covered() -> None:
    """2026's notice is in the package: a request late in 2026 that ends in 2026 has a date."""
    # No PRC holiday in December: 2-4 Dec (3), 7-11 (8), 14-18 (13), 21, 22 (15).
    assert dsar.respond_by(PIPL, "copy", at("2026-12-01", SHANGHAI)) == D("2026-12-22")


# ----------------------------------------------------------------- default, seam


def test_default_profile_counts_weekdays_only() -> None:
    """The default regime has no holiday calendar: 15 weekdays, New Year's Day included."""
    # 23-27 Dec (5), 30, 31 (7), 1-3 Jan (10), 6-10 Jan (15).
    assert isinstance(dsar.calendar_for(DEFAULT), dsar.WeekendsOnlyCalendar)
    received_at = dt.datetime(2024, 12, 20, 12, tzinfo=dt.UTC)
    assert dsar.respond_by(DEFAULT, "access", received_at) == D("2025-01-10")


class _FakeCalendar:
    """A test calendar: the given holidays, and the given weekend days worked."""

    def __init__(self, holidays: set[dt.date], worked: set[dt.date]) -> None:
        self.holidays, self.worked = holidays, worked

    def covers(self, year: int) -> bool:
        return year == 2030

    def is_holiday(self, day: dt.date) -> bool:
        return day in self.holidays

    def is_adjusted_working_day(self, day: dt.date) -> bool:
        return day in self.worked


@pytest.mark.parametrize(("rule", "due"), [
    # Mon 7 Jan 2030 received. 8 Jan is a holiday; Sat 12 Jan is worked.
    (dsar.ClockRule(dsar.ClockUnit.BUSINESS_DAY, 3), "2030-01-11"),   # 9, 10, 11
    (dsar.ClockRule(dsar.ClockUnit.WORKING_DAY, 4), "2030-01-12"),    # 9, 10, 11, Sat 12
    (dsar.ClockRule(dsar.ClockUnit.CALENDAR_DAY, 1), "2030-01-08"),   # a holiday, but no roll
    (dsar.ClockRule(dsar.ClockUnit.CALENDAR_DAY, 1, roll_to_business_day=True), "2030-01-09"),
    # Sat 12 Jan -> Mon 14th
    (dsar.ClockRule(dsar.ClockUnit.CALENDAR_DAY, 5, roll_to_business_day=True), "2030-01-14"),
])
def test_due_date_uses_the_calendar_it_is_given(rule: dsar.ClockRule, due: str) -> None:
    """The HolidayCalendar protocol is the seam: a fake calendar drives every unit."""
    fake = _FakeCalendar({D("2030-01-08")}, {D("2030-01-12")})
    assert dsar.due_date(rule, D("2030-01-07"), fake) == D(due)


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("call", [
    lambda t: dsar.respond_by(GDPR, "access", t),
    lambda t: dsar.acknowledge_by(CCPA, "know", t),
    lambda t: dsar.day_of_receipt(PIPL, t),
    lambda t: dsar.is_on_time(PIPL, D("2024-10-17"), t),
    lambda t: dsar.extended_due(GDPR, "access", at("2025-02-01", BERLIN), requested_at=t),
    lambda t: dsar.extended_due(GDPR, "access", t, requested_at=at("2025-02-02", BERLIN)),
])
def test_naive_datetime_is_invalid_data(call: object) -> None:
    """A naive datetime names no instant, so it is refused with InvalidData."""
    assert callable(call)
    with pytest.raises(InvalidData, match="timezone-aware"):
        call(dt.datetime(2025, 2, 1, 12, 0))


@pytest.mark.parametrize(("change", "message"), [
    ({"clock": {"time_zone": "Mars/Olympus_Mons"}}, "time_zone"),
    ({"clock": {"time_zone": "UTC", "holiday_subdivision": "CA"}}, "holiday_country"),
    ({"clock": {"time_zone": "UTC", "surprise": 1}}, "surprise"),
    ({"clock": None}, "clock"),
    ({"respond": None}, "respond"),
    ({"respond": {"value": 15, "unit": "fortnight"}}, "unit"),
    ({"respond": {"value": 0, "unit": "calendar_day"}}, "count"),
    ({"respond": {"value": True, "unit": "calendar_day"}}, "integer"),
    ({"respond": {"value": 15, "unit": "business_day", "roll_to_business_day": True}},
     "roll_to_business_day"),
    ({"respond": {"value": 1, "unit": "calendar_month", "notify_by": 1}}, "extension"),
    ({"acknowledge": {"value": 10, "unit": "business_day", "extension": 5}}, "acknowledge"),
])
def test_invalid_clock_data_is_a_config_error(change: dict[str, object], message: str) -> None:
    """Bad clock data in a profile is refused with a ConfigError naming the key."""
    data = {**REGISTRY.profile("ccpa").model_dump(), **change}
    with pytest.raises(ConfigError, match=message):
        dsar.ClockProfile.from_mapping(data)


@pytest.mark.parametrize(("country", "subdivision", "categories"), [
    ("XX", None, ("public",)),
    ("DE", "ZZ", ("public",)),
    ("CN", None, ("no_such_category",)),
])
def test_unknown_place_is_a_config_error(country: str, subdivision: str | None,
                                         categories: tuple[str, ...]) -> None:
    """A country, subdivision or category the holidays package lacks is a ConfigError."""
    with pytest.raises(ConfigError, match="not available"):
        dsar.HolidaysPackageCalendar(country, subdivision=subdivision, categories=categories)


def test_profile_without_clock_settings_is_refused() -> None:
    """A jurisdiction profile with no clock table has no clocks."""
    bare = REGISTRY.profile("ccpa").model_copy(update={"clock": None})
    with pytest.raises(ConfigError, match="no clock settings"):
        dsar.clock_profile(bare)


def test_clock_profile_is_frozen() -> None:
    """A clock profile and its overrides cannot be changed after it is built."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        CCPA.time_zone = "UTC"  # type: ignore[misc]
    with pytest.raises(TypeError):
        CCPA.overrides["know"] = CCPA.clock_for("know")  # type: ignore[index]


def test_package_exports_exactly_all() -> None:
    """vault.dsar's public names are exactly its sorted __all__."""
    public = {name for name in dir(dsar)
              if not name.startswith("_") and name != "annotations"
              and not isinstance(getattr(dsar, name), types.ModuleType)}
    assert public == set(dsar.__all__)
    assert list(dsar.__all__) == sorted(dsar.__all__)
