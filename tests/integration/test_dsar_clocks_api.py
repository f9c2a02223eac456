"""The statutory clocks through ``v.dsar.submit`` and ``v.dsar.extend``: month ends,
leap years, weekends, holidays, the PRC's adjusted working days, time zones,
extensions inside and outside the first period; and every kind in every regime.

Expected dates are worked out by hand from the calendars (the comments say how).
The clock arithmetic itself is tested in tests/unit/test_dsar_clocks.py; these
tests show the request path stores what the profile and the clocks say.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import POLICIES, fresh_pg_schemas
from vault import Actor, ConfigError, FixedClock, InvalidData, Vault, VaultSettings
from vault.dsar import RequestKind, RequestState
from vault.errors import InvalidTransition, RightNotGranted

DANA = Actor("dana", "acme")
D = dt.date
UTC = dt.UTC


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def clocked(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vault, FixedClock]]:
    """One vault per backend for the table (requests are independent of each other)."""
    with _clocked_vault(request.param, tmp_path_factory) as pair:
        yield pair


@contextlib.contextmanager
def _clocked_vault(backend: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[Vault, FixedClock]]:
    clock = FixedClock(dt.datetime(2026, 1, 5, 12, tzinfo=UTC))
    home = Path(tmp_path_factory.mktemp("dsar-clocks")) / "v"
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if backend == "postgres":
            schemas = stack.enter_context(fresh_pg_schemas())
            urls = {"database_url": schemas.url(schemas.names[0]),
                    "keystore_url": schemas.url(schemas.names[1])}
        v = Vault.init(settings=VaultSettings.build(home=home, policies=POLICIES, **urls),
                       clock=clock)
        v.roles.assign("dana", "dpo", tenant="acme")
        try:
            yield v, clock
            assert v.audit_log.verify().ok
        finally:
            v.close()


def _submit(clocked: tuple[Vault, FixedClock], kind: str, jurisdiction: str,
            received: dt.datetime):
    v, clock = clocked
    clock.set(received)
    return v.dsar.submit(DANA, kind, tenant="acme", jurisdiction=jurisdiction)


RESPOND_CASES = [
    # GDPR (Berlin): one calendar month, rolled off weekends and Berlin's holidays.
    pytest.param("access", "DE", dt.datetime(2026, 1, 31, 10, tzinfo=UTC), D(2026, 3, 2),
                 id="gdpr-31jan-to-28feb-saturday-rolls-to-monday"),
    pytest.param("access", "DE", dt.datetime(2024, 1, 31, 10, tzinfo=UTC), D(2024, 2, 29),
                 id="gdpr-leap-year-29feb"),
    pytest.param("access", "FR", dt.datetime(2023, 1, 31, 10, tzinfo=UTC), D(2023, 2, 28),
                 id="gdpr-non-leap-28feb-tuesday"),
    pytest.param("erase", "DE", dt.datetime(2026, 3, 3, 10, tzinfo=UTC), D(2026, 4, 7),
                 id="gdpr-good-friday-and-easter-monday"),
    pytest.param("access", "DE", dt.datetime(2026, 2, 8, 10, tzinfo=UTC), D(2026, 3, 9),
                 id="gdpr-8-march-sunday-and-berlin-holiday"),
    pytest.param("port", "DE", dt.datetime(2026, 4, 1, 10, tzinfo=UTC), D(2026, 5, 4),
                 id="gdpr-1-may-friday"),
    pytest.param("access", "DE", dt.datetime(2026, 3, 2, 23, 30, tzinfo=UTC), D(2026, 4, 7),
                 id="gdpr-receipt-day-is-berlin-date"),
    pytest.param("rectify", "DE", dt.datetime(2026, 3, 15, 10, tzinfo=UTC), D(2026, 4, 15),
                 id="gdpr-rectify-own-clock"),
    # CCPA (Los Angeles): 45 calendar days, not rolled.
    pytest.param("know", "US-CA", dt.datetime(2026, 1, 5, 18, tzinfo=UTC), D(2026, 2, 19),
                 id="ccpa-45-days"),
    pytest.param("delete", "US-CA", dt.datetime(2026, 1, 7, 18, tzinfo=UTC), D(2026, 2, 21),
                 id="ccpa-45-days-saturday-not-rolled"),
    pytest.param("access", "US-CA", dt.datetime(2026, 1, 6, 5, tzinfo=UTC), D(2026, 2, 19),
                 id="ccpa-receipt-day-is-los-angeles-date"),
    # 15 business days: Jan 6-9, 12-16, 20-23 (19 is MLK Day), 26, 27.
    pytest.param("opt_out_sale_sharing", "US-CA", dt.datetime(2026, 1, 5, 18, tzinfo=UTC),
                 D(2026, 1, 27), id="ccpa-opt-out-15-business-days"),
    pytest.param("limit_sensitive", "US-CA", dt.datetime(2026, 1, 5, 18, tzinfo=UTC),
                 D(2026, 1, 27), id="ccpa-limit-15-business-days"),
    # PIPL (Shanghai): 15 working days; Spring Festival Feb 16-20 and 23 off,
    # Saturdays Feb 14 and Feb 28 worked: Feb 10-14 (5), 24-28 (10), Mar 2-6 (15).
    pytest.param("copy", "CN", dt.datetime(2026, 2, 9, 2, tzinfo=UTC), D(2026, 3, 6),
                 id="pipl-spring-festival-and-adjusted-saturdays"),
    pytest.param("access", "CN", dt.datetime(2026, 2, 8, 17, tzinfo=UTC), D(2026, 3, 6),
                 id="pipl-receipt-day-is-shanghai-date"),
    # Golden Week Oct 1-7 off, Saturday Oct 10 worked: Sep 29-30 (2), Oct 8-10 (5),
    # 12-16 (10), 19-23 (15).
    pytest.param("delete", "CN", dt.datetime(2026, 9, 28, 2, tzinfo=UTC), D(2026, 10, 23),
                 id="pipl-golden-week"),
    # Default profile: 15 weekdays, no holidays.
    pytest.param("access", "BR", dt.datetime(2026, 1, 5, 12, tzinfo=UTC), D(2026, 1, 26),
                 id="default-15-weekdays"),
]


@pytest.mark.parametrize(("kind", "jurisdiction", "received", "due"), RESPOND_CASES)
def test_due_date_at_submission(clocked: tuple[Vault, FixedClock], kind: str,
                                jurisdiction: str, received: dt.datetime, due: dt.date) -> None:
    """submit stores the due day the regime's clock gives for the day of receipt."""
    request = _submit(clocked, kind, jurisdiction, received)
    assert request.due_on == due
    assert request.first_due_on == due
    assert not request.extended


ACK_CASES = [
    # Jan 6-9, 12-16, 20 (Jan 19 is Martin Luther King Jr. Day).
    pytest.param("know", dt.datetime(2026, 1, 5, 18, tzinfo=UTC), D(2026, 1, 20),
                 id="ccpa-mlk-day"),
    # Feb 10-13, 17-20, 23, 24 (Feb 16 is Presidents' Day).
    pytest.param("delete", dt.datetime(2026, 2, 9, 18, tzinfo=UTC), D(2026, 2, 24),
                 id="ccpa-presidents-day"),
    pytest.param("opt_out_sale_sharing", dt.datetime(2026, 2, 9, 18, tzinfo=UTC), None,
                 id="ccpa-opt-out-has-no-acknowledgement"),
]


@pytest.mark.parametrize(("kind", "received", "ack"), ACK_CASES)
def test_acknowledgement_clock(clocked: tuple[Vault, FixedClock], kind: str,
                               received: dt.datetime, ack: dt.date | None) -> None:
    """CCPA: receipt is confirmed within 10 business days (none for an opt-out)."""
    assert _submit(clocked, kind, "US-CA", received).acknowledge_by == ack


def test_gdpr_has_no_acknowledgement_clock(clocked: tuple[Vault, FixedClock]) -> None:
    request = _submit(clocked, "access", "DE", dt.datetime(2026, 1, 5, 12, tzinfo=UTC))
    assert request.acknowledge_by is None


EXTEND_CASES = [
    # Three months from 31 Jan = 30 Apr (Thursday), not 2 Mar + 2 months = 4 May.
    pytest.param("access", "DE", dt.datetime(2026, 1, 31, 10, tzinfo=UTC),
                 dt.datetime(2026, 2, 20, 9, tzinfo=UTC), D(2026, 4, 30),
                 id="gdpr-three-months-from-receipt"),
    pytest.param("access", "DE", dt.datetime(2026, 1, 31, 10, tzinfo=UTC),
                 dt.datetime(2026, 3, 2, 20, tzinfo=UTC), D(2026, 4, 30),
                 id="gdpr-on-the-last-day-of-the-first-period"),
    # 90 calendar days from 5 Jan = 5 Apr (a Sunday, not rolled).
    pytest.param("know", "US-CA", dt.datetime(2026, 1, 5, 18, tzinfo=UTC),
                 dt.datetime(2026, 2, 19, 20, tzinfo=UTC), D(2026, 4, 5),
                 id="ccpa-90-days-notice-on-day-45"),
]


@pytest.mark.parametrize(("kind", "jurisdiction", "received", "notified", "due"), EXTEND_CASES)
def test_extension_inside_the_first_period(
        clocked: tuple[Vault, FixedClock], kind: str, jurisdiction: str,
        received: dt.datetime, notified: dt.datetime, due: dt.date) -> None:
    """extend while the first period runs: the new due day counted from receipt."""
    v, clock = clocked
    request = _submit(clocked, kind, jurisdiction, received)
    clock.set(notified)
    extended = v.dsar.extend(DANA, request.id, tenant="acme", reason="complex_request")
    assert extended.extended and extended.due_on == due
    assert extended.first_due_on == request.due_on
    assert extended.notified_at == notified
    assert extended.history[-1].event == "extended"
    assert extended.history[-1].reason == f"complex_request:due:{due.isoformat()}"


OUTSIDE_CASES = [
    pytest.param("access", "DE", dt.datetime(2026, 1, 31, 10, tzinfo=UTC),
                 dt.datetime(2026, 3, 3, 9, tzinfo=UTC), id="gdpr-day-after-first-period"),
    # 2 Mar 23:30 UTC is already 3 Mar in Berlin.
    pytest.param("access", "DE", dt.datetime(2026, 1, 31, 10, tzinfo=UTC),
                 dt.datetime(2026, 3, 2, 23, 30, tzinfo=UTC), id="gdpr-berlin-midnight"),
    pytest.param("know", "US-CA", dt.datetime(2026, 1, 5, 18, tzinfo=UTC),
                 dt.datetime(2026, 2, 20, 18, tzinfo=UTC), id="ccpa-day-46"),
    pytest.param("copy", "CN", dt.datetime(2026, 2, 9, 2, tzinfo=UTC),
                 dt.datetime(2026, 2, 10, 2, tzinfo=UTC), id="pipl-no-extension"),
    pytest.param("opt_out_sale_sharing", "US-CA", dt.datetime(2026, 1, 5, 18, tzinfo=UTC),
                 dt.datetime(2026, 1, 6, 18, tzinfo=UTC), id="ccpa-opt-out-no-extension"),
]


@pytest.mark.parametrize(("kind", "jurisdiction", "received", "notified"), OUTSIDE_CASES)
def test_extension_outside_the_first_period_is_refused(
        clocked: tuple[Vault, FixedClock], kind: str, jurisdiction: str,
        received: dt.datetime, notified: dt.datetime) -> None:
    """An extension after the first period (or where none exists) is InvalidTransition,
    and nothing changes."""
    v, clock = clocked
    request = _submit(clocked, kind, jurisdiction, received)
    clock.set(notified)
    with pytest.raises(InvalidTransition):
        v.dsar.extend(DANA, request.id, tenant="acme", reason="complex_request")
    after = v.dsar.get(DANA, request.id, tenant="acme")
    assert not after.extended and after.due_on == request.due_on
    assert after.history == request.history


def test_extension_is_taken_once(clocked: tuple[Vault, FixedClock]) -> None:
    v, _ = clocked
    request = _submit(clocked, "access", "DE", dt.datetime(2026, 1, 31, 10, tzinfo=UTC))
    v.dsar.extend(DANA, request.id, tenant="acme", reason="complex_request")
    with pytest.raises(InvalidTransition):
        v.dsar.extend(DANA, request.id, tenant="acme", reason="complex_request")


def test_extension_notified_at_defaults_to_now_and_may_be_given(
        clocked: tuple[Vault, FixedClock]) -> None:
    v, clock = clocked
    request = _submit(clocked, "know", "US-CA", dt.datetime(2026, 1, 5, 18, tzinfo=UTC))
    told = dt.datetime(2026, 1, 20, 17, tzinfo=UTC)
    clock.set(dt.datetime(2026, 1, 21, 9, tzinfo=UTC))
    extended = v.dsar.extend(DANA, request.id, tenant="acme", reason="volume",
                             notified_at=told)
    assert extended.notified_at == told


def test_year_the_calendar_does_not_cover_is_an_error(clocked: tuple[Vault, FixedClock]
                                                      ) -> None:
    """PIPL's calendar is announced yearly: a due date in an unannounced year is refused,
    never guessed, and no request is recorded."""
    v, _ = clocked
    before = len(v.dsar.list(DANA, tenant="acme"))
    with pytest.raises(ConfigError):
        _submit(clocked, "access", "CN", dt.datetime(2031, 6, 1, 2, tzinfo=UTC))
    assert len(v.dsar.list(DANA, tenant="acme")) == before


def test_received_in_the_past_needs_a_reason(clocked: tuple[Vault, FixedClock]) -> None:
    """A letter opened late: received_at days ago needs a reason, which is recorded."""
    v, clock = clocked
    clock.set(dt.datetime(2026, 2, 20, 9, tzinfo=UTC))
    received = dt.datetime(2026, 2, 2, 9, tzinfo=UTC)
    with pytest.raises(InvalidData):
        v.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE", received_at=received)
    request = v.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE",
                            received_at=received, received_reason="letter_opened_late",
                            channel="post")
    assert request.due_on == D(2026, 3, 2)
    assert "late:letter_opened_late" in (request.history[0].reason or "")
    with pytest.raises(InvalidData):
        v.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE",
                      received_at=dt.datetime(2026, 2, 21, 9, tzinfo=UTC))
    with pytest.raises(InvalidData):
        v.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE",
                      received_at=dt.datetime(2026, 2, 20, 9))  # naive


# ---------------------------------------------------------------- kinds x regimes

GRANTED = {
    # regime (a jurisdiction of it) -> kind -> the right whose clock applies
    "DE": {"access": "access", "portability": "port", "rectification": "rectify",
           "erasure": "erase", "restriction": "restrict", "objection": "object",
           "withdraw_consent": "withdraw_consent",
           "automated_decision_review": "automated_decision_review",
           "opt_out_sale_sharing": "opt_out_sale_sharing"},  # a courtesy
    "US-CA": {"access": "access", "portability": "port", "rectification": "correct",
              "erasure": "delete", "opt_out_sale_sharing": "opt_out_sale_sharing",
              "limit_sensitive": "limit_sensitive",
              "withdraw_consent": "withdraw_consent"},  # a courtesy
    "CN": {"access": "access", "portability": "port", "rectification": "correct",
           "erasure": "delete", "restriction": "restrict", "objection": "refuse",
           "withdraw_consent": "withdraw_consent", "explanation": "explanation",
           "automated_decision_review": "refuse_automated_decision"},
    "BR": {"access": "access", "portability": "port", "rectification": "rectify",
           "erasure": "erase", "restriction": "restrict", "objection": "object",
           "withdraw_consent": "withdraw_consent"},
}
KIND_CASES = [pytest.param(j, k.value, id=f"{j}-{k.value}")
              for j in GRANTED for k in RequestKind]


@pytest.mark.parametrize(("jurisdiction", "kind"), KIND_CASES)
def test_every_kind_in_every_regime(clocked: tuple[Vault, FixedClock], jurisdiction: str,
                                    kind: str) -> None:
    """A kind the regime grants (or accepts as a courtesy) is recorded under the
    profile's name of the right; any other is refused with RightNotGranted."""
    v, clock = clocked
    clock.set(dt.datetime(2026, 6, 1, 12, tzinfo=UTC))
    expected = GRANTED[jurisdiction].get(kind)
    if expected is None:
        with pytest.raises(RightNotGranted) as info:
            v.dsar.submit(DANA, kind, tenant="acme", jurisdiction=jurisdiction)
        assert kind in info.value.message
        return
    request = v.dsar.submit(DANA, kind, tenant="acme", jurisdiction=jurisdiction)
    assert request.kind.value == kind and request.right == expected
    assert request.state in (RequestState.RECEIVED, RequestState.IDENTITY_VERIFIED)


@pytest.mark.parametrize(("right", "jurisdiction", "kind"), [
    ("know", "US-CA", "access"), ("delete", "US-CA", "erasure"),
    ("correct", "US-CA", "rectification"), ("copy", "CN", "access"),
    ("refuse", "CN", "objection"), ("erase", "DE", "erasure"),
])
def test_statutory_right_names_map_onto_kinds(clocked: tuple[Vault, FixedClock], right: str,
                                              jurisdiction: str, kind: str) -> None:
    v, clock = clocked
    clock.set(dt.datetime(2026, 6, 1, 12, tzinfo=UTC))
    request = v.dsar.submit(DANA, right, tenant="acme", jurisdiction=jurisdiction)
    assert (request.kind.value, request.right) == (kind, right)


@pytest.mark.parametrize("kind", ["everything", "", "ACCESS", "non_discrimination"])
def test_unknown_kind_is_invalid_data(clocked: tuple[Vault, FixedClock], kind: str) -> None:
    v, _ = clocked
    with pytest.raises(InvalidData) as info:
        v.dsar.submit(DANA, kind, tenant="acme", jurisdiction="DE")
    assert not isinstance(info.value, RightNotGranted)
