"""Jurisdiction profiles, notices and the pure consent decision."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from vault.consent import (
    ConsentScope,
    ConsentState,
    ConsentStatus,
    Refusal,
    SubjectFacts,
    Use,
    decide,
    load_notices,
    text_hash,
)
from vault.errors import ConfigError
from vault.jurisdiction import ConsentModel, load_jurisdictions
from vault.policy.purposes import LawfulBasis, load_purposes

POLICIES = Path(__file__).resolve().parents[2] / "policies"
PURPOSES = load_purposes(POLICIES / "purposes.toml")
REGISTRY = load_jurisdictions(POLICIES / "jurisdictions.toml", PURPOSES)
NOTICES = load_notices(POLICIES / "notices.toml", PURPOSES)
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("code", "regime"), [
    ("EU", "gdpr"), ("EEA", "gdpr"), ("DE", "gdpr"), ("FR", "gdpr"), ("NO", "gdpr"),
    ("US-CA", "ccpa"), ("CN", "pipl"), ("US", "default"), ("US-NY", "default"),
    ("BR", "default"), (None, "default"), ("GB", "default"),
])
def test_regime_for(code: str | None, regime: str) -> None:
    """EU/EEA codes -> gdpr, US-CA -> ccpa, CN -> pipl, anything else -> default."""
    assert REGISTRY.regime_for(code) == regime


def test_shipped_profiles_carry_the_figures_of_the_law() -> None:
    """Clocks and record retention as in JURISDICTIONS.md."""
    gdpr, ccpa, pipl = (REGISTRY.profile(r) for r in ("gdpr", "ccpa", "pipl"))
    assert (gdpr.respond.value, gdpr.respond.unit, gdpr.respond.extension) == (
        1, "calendar_month", 2)
    assert ccpa.acknowledge is not None and ccpa.acknowledge.value == 10
    assert (ccpa.respond.value, ccpa.respond.extension) == (45, 45)
    assert ccpa.request_log_retention is not None and ccpa.request_log_retention.months == 24
    assert pipl.request_log_retention is not None and pipl.request_log_retention.months == 36
    assert (pipl.respond.value, pipl.respond.unit) == (15, "working_day")
    assert gdpr.request_log_retention is None
    assert "restrict" in gdpr.rights and "opt_out_sale_sharing" in ccpa.rights


def test_unverified_figures_are_settings_of_the_profile(tmp_path: Path) -> None:
    """Every figure JURISDICTIONS.md marks ◐ or ✖ is a setting: the CCPA opt-out and
    limit-SPI clocks, the CCPA lookback, and rectification clocks set apart."""
    ccpa, gdpr, pipl = (REGISTRY.profile(r) for r in ("ccpa", "gdpr", "pipl"))
    assert ccpa.opt_out_sale_sharing is not None
    assert (ccpa.opt_out_sale_sharing.value, ccpa.opt_out_sale_sharing.unit) == (
        15, "business_day")
    assert ccpa.limit_sensitive is not None and ccpa.limit_sensitive.value == 15
    assert ccpa.lookback is not None
    assert (ccpa.lookback.months, ccpa.lookback.extended_if_collected_after) == (
        12, dt.date(2022, 1, 1))
    assert ccpa.reask_after_months == 12
    assert gdpr.deadline_for("rectify").unit == "calendar_month"
    assert pipl.deadline_for("correct") == pipl.respond
    assert pipl.deadline_for("access") == pipl.respond
    changed = load_jurisdictions(_write(
        tmp_path, 'opt_out_sale_sharing = { value = 15, unit = "business_day" }',
        'opt_out_sale_sharing = { value = 10, unit = "business_day" }'), PURPOSES)
    assert changed.profile("ccpa").opt_out_sale_sharing.value == 10  # type: ignore[union-attr]
    changed = load_jurisdictions(_write(
        tmp_path, 'respond_by_right = { correct = { value = 15, unit = "working_day" } }',
        'respond_by_right = { correct = { value = 30, unit = "working_day" } }'), PURPOSES)
    assert changed.profile("pipl").deadline_for("correct").value == 30
    assert changed.profile("pipl").deadline_for("access").value == 15


@pytest.mark.parametrize(("regime", "purpose", "model"), [
    ("gdpr", "marketing", ConsentModel.OPT_IN), ("pipl", "marketing", ConsentModel.OPT_IN),
    ("ccpa", "marketing", ConsentModel.OPT_OUT), ("ccpa", "sale", ConsentModel.OPT_OUT),
    ("gdpr", "sale", ConsentModel.OPT_IN), ("default", "marketing", ConsentModel.OPT_IN),
    ("gdpr", "account_management", ConsentModel.NOTICE_ONLY),
    ("ccpa", "account_management", ConsentModel.NOTICE_ONLY),
])
def test_consent_model_per_purpose(regime: str, purpose: str, model: ConsentModel) -> None:
    """The consent model follows the lawful basis and the profile."""
    p = PURPOSES.get(purpose)
    assert REGISTRY.profile(regime).consent_model(purpose, p.basis_in(regime)) is model


def test_undeclared_basis_fails_closed() -> None:
    """A purpose with no basis for a regime and no default is consent-based."""
    from vault.policy.purposes import Purpose

    assert Purpose(name="x", description="x").basis_in("gdpr") is LawfulBasis.CONSENT


@pytest.mark.parametrize(("residency", "destination", "cross", "allowed", "mechanism"), [
    ("DE", "FR", False, True, None),
    ("EU", "DE", False, True, None),
    ("DE", "JP", True, True, "adequacy"),
    ("DE", "US", True, False, None),
    ("US-CA", "US", False, True, None),
    ("US-CA", "CN", True, True, "none"),
    ("CN", "US", True, False, None),
    (None, "US", True, False, None),
])
def test_transfer(residency: str | None, destination: str, cross: bool, allowed: bool,
                  mechanism: str | None) -> None:
    """Same area, adequacy, free regime and refusal without a mechanism."""
    decision = REGISTRY.transfer(residency, destination)
    assert (decision.cross_border, decision.allowed, decision.mechanism) == (
        cross, allowed, mechanism)


def _write(tmp_path: Path, old: str, new: str) -> Path:
    text = (POLICIES / "jurisdictions.toml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "jurisdictions.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(("old", "new", "message"), [
    ('default_consent_model = "opt_in"', 'default_consent_model = "maybe"',
     "default_consent_model"),
    ('title = "GDPR (EU/EEA)"', 'title = "GDPR"\nsurprise = 1', "surprise"),
    ('rule = "free"', 'rule = "anything"', "rule"),
    ('jurisdictions = ["CN"]', 'jurisdictions = ["DE"]', "claimed"),
    ('purposes = ["sale", "sharing"]', 'purposes = ["selling"]', "selling"),
    ('respond = { value = 15, unit = "working_day" }',
     'respond = { value = 0, unit = "working_day" }', "respond"),
    ('respond_by_right = { correct = {', 'respond_by_right = { erase = {', "erase"),
    ('lookback = { months = 12,', 'lookback = { months = 0,', "lookback"),
])
def test_invalid_profiles_are_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    """Bad values, unknown keys, double claims, a missing default or an unknown purpose."""
    with pytest.raises(ConfigError, match=message):
        load_jurisdictions(_write(tmp_path, old, new), PURPOSES)


def test_a_default_regime_is_required() -> None:
    """Without a default profile the registry refuses to build (no regime for unknowns)."""
    from vault.jurisdiction import JurisdictionRegistry

    with pytest.raises(ConfigError, match="default"):
        JurisdictionRegistry([REGISTRY.profile("gdpr")])


def test_arrangement_mechanism_must_be_allowed(tmp_path: Path) -> None:
    """An arrangement naming a mechanism the regime does not allow is refused."""
    path = _write(tmp_path, 'mechanisms = []\nadequate = []\narrangements = []',
                  'mechanisms = []\nadequate = []\narrangements = [{ destinations = ["US"], '
                  'mechanism = "scc", reference = "x" }]')
    with pytest.raises(ConfigError, match="mechanism"):
        load_jurisdictions(path, PURPOSES)


def test_notice_hash_must_match_text(tmp_path: Path) -> None:
    """A notice whose declared hash disagrees with its text is refused."""
    path = tmp_path / "notices.toml"
    path.write_text('[[notices.n]]\nversion = 1\npublished = 2026-01-01\npurposes = ["marketing"]'
                    '\ncategories = ["contact"]\ntext = "hello"\ntext_sha256 = "' + "0" * 64
                    + '"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="does not match"):
        load_notices(path, PURPOSES)
    assert NOTICES.get("marketing", 1).text_sha256 == text_hash(
        NOTICES.get("marketing", 1).text or "")


def _state(scope: ConsentScope, status: ConsentStatus, notice: str = "marketing",
           version: int = 1, expires: dt.datetime | None = None) -> ConsentState:
    return ConsentState("t", "s", "marketing", scope, status, "gdpr", notice, version, expires,
                        "e", 1, NOW)


EMAIL = ("email", "personal", "contact")
NATIONAL_ID = ("national_id", "sensitive", "identity")


@pytest.mark.parametrize(("jurisdiction", "states", "fields", "refusal"), [
    ("DE", {}, (EMAIL,), Refusal.CONSENT_REQUIRED),
    ("DE", {ConsentScope.GENERAL: _state(ConsentScope.GENERAL, ConsentStatus.GRANTED)},
     (EMAIL,), None),
    ("DE", {ConsentScope.GENERAL: _state(ConsentScope.GENERAL, ConsentStatus.GRANTED,
                                         expires=NOW)}, (EMAIL,), Refusal.CONSENT_REQUIRED),
    ("DE", {ConsentScope.GENERAL: _state(ConsentScope.GENERAL, ConsentStatus.GRANTED)},
     (EMAIL, ("country", "internal", "location")), Refusal.RECONSENT_REQUIRED),
    ("CN", {ConsentScope.GENERAL: _state(ConsentScope.GENERAL, ConsentStatus.GRANTED)},
     (EMAIL, NATIONAL_ID), Refusal.SEPARATE_CONSENT_REQUIRED),
    ("US-CA", {}, (EMAIL, NATIONAL_ID), None),
    ("US-CA", {ConsentScope.GENERAL: _state(ConsentScope.GENERAL, ConsentStatus.WITHDRAWN)},
     (EMAIL,), Refusal.OPTED_OUT),
])
def test_decide_marketing(jurisdiction: str, states: dict[ConsentScope, ConsentState],
                          fields: tuple[tuple[str, str, str], ...],
                          refusal: Refusal | None) -> None:
    """The pure decision for marketing across regimes, expiry, re-consent and SPI."""
    use = Use(purpose=PURPOSES.get("marketing"),
              categories=frozenset(f[2] for f in fields), fields=fields)
    verdict = decide(SubjectFacts("s", jurisdiction, False, states), use,
                     jurisdictions=REGISTRY, notices=NOTICES, now=NOW)
    assert verdict.refusal == refusal
    assert verdict.allowed is (refusal is None)


def test_restriction_comes_first() -> None:
    """A restricted subject is refused even where no consent is needed."""
    use = Use(purpose=PURPOSES.get("account_management"), categories=frozenset({"contact"}),
              fields=(EMAIL,))
    facts = SubjectFacts("s", "DE", True, {})
    verdict = decide(facts, use, jurisdictions=REGISTRY, notices=NOTICES, now=NOW)
    assert verdict.refusal is Refusal.RESTRICTED
    dsar = Use(purpose=PURPOSES.get("dsar_fulfilment"), categories=frozenset({"contact"}),
               fields=(EMAIL,))
    assert decide(facts, dsar, jurisdictions=REGISTRY, notices=NOTICES, now=NOW).allowed
