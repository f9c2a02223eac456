"""The retention schedule and its expiry arithmetic: pure, table-driven, per regime."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from vault.errors import ConfigError
from vault.retention import Period, add_period, load_schedule
from vault.retention.expiry import decide, summarise
from vault.retention.schedule import Action, SubjectEvents, category_expiry, record_expiries
from vault.schema import load_schemas

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SCHEDULE = load_schedule(POLICIES / "retention.toml", load_schemas(POLICIES))
CUSTOMERS = load_schemas(POLICIES).get("customers")


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "period"), [
    ("P6Y", Period(6, 0, 0)), ("P13M", Period(0, 13, 0)), ("P30D", Period(0, 0, 30)),
    ("P1Y6M", Period(1, 6, 0)), ("P0D", Period(0, 0, 0)), ("P1Y2M3D", Period(1, 2, 3)),
])
def test_period_parse(text: str, period: Period) -> None:
    """ISO 8601 periods parse into years, months and days and print back."""
    assert Period.parse(text) == period
    assert Period.parse(str(period)) == period


@pytest.mark.parametrize("text", ["P", "6Y", "P1W", "PT1H", "P-1D", "P1.5Y", "p1y", ""])
def test_period_parse_refuses(text: str) -> None:
    """Weeks, times, fractions, negatives and junk are refused."""
    with pytest.raises(ValueError, match="ISO 8601"):
        Period.parse(text)


@pytest.mark.parametrize(("start", "period", "expected"), [
    (utc(2020, 1, 31), Period(months=1), utc(2020, 2, 29)),     # leap year clamp
    (utc(2021, 1, 31), Period(months=1), utc(2021, 2, 28)),
    (utc(2020, 2, 29), Period(years=1), utc(2021, 2, 28)),
    (utc(2020, 2, 29), Period(years=4), utc(2024, 2, 29)),
    (utc(2020, 11, 15, 8, 30), Period(months=13), utc(2021, 12, 15, 8, 30)),
    (utc(2020, 12, 31), Period(months=2, days=1), utc(2021, 3, 1)),
    (utc(2020, 3, 1), Period(days=0), utc(2020, 3, 1)),
    (utc(2019, 6, 30), Period(years=6), utc(2025, 6, 30)),
])
def test_add_period_is_calendar_arithmetic(start: dt.datetime, period: Period,
                                           expected: dt.datetime) -> None:
    """Months and years move the calendar date, clamping to the month's end."""
    assert add_period(start, period) == expected


CREATED = utc(2020, 3, 15)

# (regime, category, events beyond `created`, expected expiry or None, expected action)
CASES = [
    # identity: 6 years after contract end or last interaction (shred); PIPL 3 years.
    ("gdpr", "identity", {}, utc(2026, 3, 15), Action.SHRED),
    ("gdpr", "identity", {"contract_end": utc(2021, 1, 1),
                          "last_interaction": utc(2022, 1, 1)}, utc(2027, 1, 1), Action.SHRED),
    # the earliest rule wins: no interaction recorded since creation
    ("gdpr", "identity", {"contract_end": utc(2021, 1, 1)}, utc(2026, 3, 15), Action.SHRED),
    ("gdpr", "identity", {"contract_end": utc(2021, 1, 1),
                          "last_interaction": utc(2020, 6, 1)}, utc(2026, 6, 1), Action.SHRED),
    ("ccpa", "identity", {}, utc(2026, 3, 15), Action.SHRED),
    ("default", "identity", {"last_interaction": utc(2022, 5, 5)}, utc(2028, 5, 5),
     Action.SHRED),
    ("pipl", "identity", {}, utc(2023, 3, 15), Action.SHRED),
    ("pipl", "identity", {"contract_end": utc(2020, 4, 1)}, utc(2023, 3, 15), Action.SHRED),
    # contact and location: 3 years; PIPL 1 year.
    ("gdpr", "contact", {}, utc(2023, 3, 15), Action.DELETE),
    ("ccpa", "contact", {"contract_end": utc(2020, 4, 1)}, utc(2023, 3, 15), Action.DELETE),
    ("pipl", "contact", {}, utc(2021, 3, 15), Action.DELETE),
    ("pipl", "location", {"contract_end": utc(2020, 5, 1)}, utc(2021, 3, 15), Action.DELETE),
    ("default", "location", {"last_interaction": utc(2024, 1, 1)}, utc(2027, 1, 1),
     Action.DELETE),
    # demographic: 1 year after contract end, or 2 years without interaction.
    ("gdpr", "demographic", {}, utc(2022, 3, 15), Action.DELETE),
    ("gdpr", "demographic", {"contract_end": utc(2020, 6, 30)}, utc(2021, 6, 30),
     Action.DELETE),
    # preference: anonymised 3 years after the last interaction.
    ("pipl", "preference", {}, utc(2023, 3, 15), Action.ANONYMISE),
    ("ccpa", "preference", {"last_interaction": utc(2021, 7, 1)}, utc(2024, 7, 1),
     Action.ANONYMISE),
    # marketing: at consent withdrawal (P0D), else 2 years without interaction.
    ("gdpr", "marketing", {"consent_withdrawn": utc(2020, 9, 9)}, utc(2020, 9, 9),
     Action.DELETE),
    ("ccpa", "marketing", {}, utc(2022, 3, 15), Action.DELETE),
    ("pipl", "marketing", {"consent_withdrawn": utc(2024, 1, 1)}, utc(2022, 3, 15),
     Action.DELETE),
    # technical: 13 months from creation; PIPL 6 months; events do not move it.
    ("gdpr", "technical", {"last_interaction": utc(2025, 1, 1)}, utc(2021, 4, 15),
     Action.DELETE),
    ("default", "technical", {}, utc(2021, 4, 15), Action.DELETE),
    ("pipl", "technical", {}, utc(2020, 9, 15), Action.DELETE),
    # support: 3 years after the last interaction; PIPL 1 year.
    ("gdpr", "support", {"last_interaction": utc(2022, 2, 2)}, utc(2025, 2, 2), Action.DELETE),
    ("pipl", "support", {}, utc(2021, 3, 15), Action.DELETE),
]


@pytest.mark.parametrize(("regime", "category", "events", "expires", "action"), CASES)
def test_default_schedule_per_regime(regime: str, category: str, events: dict[str, dt.datetime],
                                     expires: dt.datetime, action: Action) -> None:
    """Each default rule gives the expected expiry and action for its regime."""
    found = category_expiry(SCHEDULE.rules(category, regime),
                            SubjectEvents(created=CREATED, **events), category)
    assert found is not None
    assert (found.expires_at, found.action) == (expires, action)


def test_rules_whose_event_has_not_happened_do_not_run() -> None:
    """A category whose only rule runs from an unrecorded event never expires."""
    schedule = _schedule("""
[[categories.identity.default]]
period = "P1Y"
from = "contract_end"
action = "delete"
""", tmp=None)
    events = SubjectEvents(created=CREATED)
    assert category_expiry(schedule.rules("identity", "gdpr"), events, "identity") is None
    later = SubjectEvents(created=CREATED, contract_end=utc(2030, 1, 1))
    exp = category_expiry(schedule.rules("identity", "gdpr"), later, "identity")
    assert exp is not None and exp.expires_at == utc(2031, 1, 1)


def test_last_interaction_is_never_before_creation() -> None:
    """An interaction recorded before the record existed counts from its creation."""
    events = SubjectEvents(created=CREATED, last_interaction=utc(2019, 1, 1))
    exp = category_expiry(SCHEDULE.rules("support", "gdpr"), events, "support")
    assert exp is not None and exp.expires_at == utc(2023, 3, 15)


def test_record_expiries_covers_only_present_categories() -> None:
    """A record's expiries are those of the categories of the fields it holds."""
    exps = record_expiries(SCHEDULE, CUSTOMERS, ["full_name", "email", "device_info"], "pipl",
                           SubjectEvents(created=CREATED))
    assert set(exps) == {"identity", "contact", "technical"}
    summary = summarise(exps)
    assert summary["category"] == "technical" and summary["expires_at"] == utc(2020, 9, 15)
    assert summary["purge_at"] == utc(2023, 3, 15)        # identity, the last to go
    assert summary["shred_at"] == utc(2023, 3, 15)


def test_summary_has_no_purge_time_with_anonymise_or_open_periods() -> None:
    """A record with an anonymising category, or one whose period has not started,
    is never purged wholesale."""
    with_pref = record_expiries(SCHEDULE, CUSTOMERS, ["full_name", "preferred_language"],
                                "gdpr", SubjectEvents(created=CREATED))
    assert summarise(with_pref)["purge_at"] is None
    schedule = _schedule("""
[[categories.identity.default]]
period = "P1Y"
from = "created"
action = "delete"

[[categories.contact.default]]
period = "P1Y"
from = "contract_end"
action = "delete"
""", tmp=None)
    open_ended = record_expiries(schedule, CUSTOMERS, ["full_name", "email"], "gdpr",
                                 SubjectEvents(created=CREATED))
    summary = summarise(open_ended)
    assert summary["purge_at"] is None and summary["shred_at"] is None
    assert summary["expires_at"] == utc(2021, 3, 15)


NOW = utc(2024, 1, 1)

# (fields, regime, events, expected kind, removed, kept, shred)
DECISIONS = [
    # everything expired (pipl: 3 years of identity) -> the record goes, subject shredded
    (["full_name", "email"], "pipl", {}, "delete", {"full_name", "email"}, set(), True),
    # gdpr: technical (13 months) gone, contact (3 years) still pending
    (["email", "device_info"], "gdpr", {"last_interaction": utc(2022, 1, 1)}, "prune",
     {"device_info"}, {"email"}, False),
    # nothing expired yet
    (["email"], "gdpr", {"last_interaction": utc(2023, 6, 1)}, "reschedule", set(),
     {"email"}, False),
    # preference anonymised, identity pending: the language stays, record stays linked
    (["full_name", "preferred_language"], "pipl", {"contract_end": utc(2030, 1, 1),
                                                   "last_interaction": utc(2020, 3, 15)},
     "anonymise", {"full_name"}, {"preferred_language"}, True),
    # marketing withdrawn: only the segment goes
    (["email", "marketing_segment"], "gdpr", {"consent_withdrawn": utc(2023, 12, 31),
                                              "last_interaction": utc(2023, 12, 1)},
     "prune", {"marketing_segment"}, {"email"}, False),
]


@pytest.mark.parametrize(("fields", "regime", "events", "kind", "removed", "kept", "shred"),
                         DECISIONS)
def test_decide(fields: list[str], regime: str, events: dict[str, dt.datetime], kind: str,
                removed: set[str], kept: set[str], shred: bool) -> None:
    """The sweeper's decision per record: delete, prune, anonymise or reschedule."""
    exps = record_expiries(SCHEDULE, CUSTOMERS, fields, regime,
                           SubjectEvents(created=CREATED, **events))
    out = decide(CUSTOMERS, fields, exps, NOW)
    assert (out.kind, set(out.removed), set(out.kept), out.shred) == (kind, removed, kept,
                                                                      shred)


def test_anonymise_keeps_language_while_identity_pending() -> None:
    """An expired anonymising category keeps its internal field on a linked record
    while other categories are pending, and adds no further expiry."""
    fields = ["full_name", "preferred_language"]
    events = SubjectEvents(created=CREATED, last_interaction=utc(2021, 1, 1))
    exps = record_expiries(SCHEDULE, CUSTOMERS, fields, "default", events)
    out = decide(CUSTOMERS, fields, exps, utc(2025, 1, 1))    # preference expired 2024-01-01
    assert out.kind == "reschedule" and out.columns is not None
    assert set(out.kept) == {"full_name", "preferred_language"}
    assert out.columns["category"] == "identity"
    assert out.columns["expires_at"] == utc(2027, 1, 1)


# ---------------------------------------------------------------- validation


def _schedule(body: str, *, tmp: Path | None) -> object:
    import tempfile

    folder = Path(tempfile.mkdtemp()) if tmp is None else tmp
    path = folder / "retention.toml"
    path.write_text(body, encoding="utf-8")
    return load_schedule(path)


@pytest.mark.parametrize(("body", "fragment"), [
    ("[[categories.contact.gdpr]]\nperiod='P1Y'\nfrom='created'\naction='delete'\n",
     "categories.contact: needs rules for the 'default' regime"),
    ("[[categories.contact.default]]\nperiod='P1Y'\nfrom='created'\naction='delete'\n"
     "[[categories.contact.lgpd]]\nperiod='P1Y'\nfrom='created'\naction='delete'\n",
     "unknown regime 'lgpd'"),
    ("[[categories.contact.default]]\nperiod='1 year'\nfrom='created'\naction='delete'\n",
     "period"),
    ("[[categories.contact.default]]\nperiod='P1Y'\nfrom='birthday'\naction='delete'\n",
     "from"),
    ("[[categories.contact.default]]\nperiod='P1Y'\nfrom='created'\naction='archive'\n",
     "action"),
    ("[[categories.contact.default]]\nperiod='P1Y'\nfrom='created'\naction='delete'\n"
     "colour='red'\n", "colour"),
    ("[categories.contact\n", "not valid TOML"),
])
def test_invalid_schedule_names_file_and_setting(tmp_path: Path, body: str,
                                                 fragment: str) -> None:
    """A broken schedule is a ConfigError naming the file and the bad setting."""
    with pytest.raises(ConfigError) as info:
        _schedule(body, tmp=tmp_path)
    assert str(tmp_path / "retention.toml") in info.value.message
    assert fragment in info.value.message


def test_schedule_must_cover_every_category_of_the_schemas(tmp_path: Path) -> None:
    """A category used by a collection but absent from the schedule is refused."""
    text = (POLICIES / "retention.toml").read_text(encoding="utf-8")
    cut = text[:text.index("# ---------------------------------------------------------------- "
                           "support")]
    (tmp_path / "retention.toml").write_text(cut, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"categories\.support: no rules.*support_notes"):
        load_schedule(tmp_path / "retention.toml", load_schemas(POLICIES))
