"""Jurisdiction profiles: which regime governs a data subject, and what it asks.

Profiles are data, in ``policies/jurisdictions.toml`` (one ``[regimes.<name>]``
table per regime: ``gdpr``, ``ccpa``, ``pipl`` and a conservative
``default``), validated with pydantic when a vault opens. A subject's
jurisdiction code (``EU``, ``DE``, ``US-CA``, ``CN``...) is mapped to a regime
by :meth:`JurisdictionRegistry.regime_for`; a code no profile claims (or no
code at all) gets ``default``.

Everything here is pure: no database, no clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from vault._toml import problems, read_toml
from vault.errors import ConfigError
from vault.policy.purposes import LawfulBasis, PurposeRegistry

__all__ = [
    "DEFAULT_REGIME",
    "ConsentModel",
    "DSARRules",
    "CrossBorderRule",
    "JurisdictionProfile",
    "JurisdictionRegistry",
    "RequestKind",
    "RequestLimit",
    "SeparateConsentKind",
    "TransferDecision",
    "VerificationTier",
    "load_jurisdictions",
]

DEFAULT_REGIME = "default"

Code = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,3}(-[A-Z0-9]{1,3})?$")]
RegimeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class ConsentModel(StrEnum):
    """How consent works for a consent-based purpose in one regime."""

    OPT_IN = "opt_in"      # nothing until the subject grants
    OPT_OUT = "opt_out"    # allowed until the subject opts out (CCPA sale/sharing)
    NOTICE_ONLY = "notice_only"  # the purpose does not rest on consent here


class CrossBorderRule(StrEnum):
    FREE = "free"            # no transfer rule (CCPA)
    MECHANISM = "mechanism"  # a recognised mechanism must be in place (GDPR Ch. V, PIPL Art. 38)
    LOCALISE = "localise"    # data stays in the country (PIPL Art. 40 for CIIOs)


class SeparateConsentKind(StrEnum):
    """Kinds of processing that may need a consent of their own (PIPL's 单独同意)."""

    SENSITIVE = "sensitive"
    PROVIDE_TO_THIRD_PARTY = "provide_to_third_party"
    CROSS_BORDER = "cross_border"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Deadline(_Strict):
    """A request clock: ``value`` ``unit``s, optionally extendable."""

    value: int = Field(ge=1)
    unit: Literal["calendar_day", "business_day", "working_day", "calendar_month"]
    extension: int | None = Field(default=None, ge=1)
    notify_by: int | None = Field(default=None, ge=1)
    # A due day that is not a business day moves to the next one (GDPR: Regulation
    # 1182/71 Art. 3(4)). Off unless the profile says so: CCPA's 45 days do not roll.
    roll_to_business_day: bool = False


class ClockSettings(_Strict):
    """Where a regime's request clocks run (read by :mod:`vault.dsar.clocks`).

    ``time_zone`` (an IANA name) makes the day of receipt a date; the holiday
    calendar is the ``holidays`` package's ``holiday_country`` (ISO 3166-1
    alpha-2, None = weekends only), ``holiday_subdivision`` and
    ``holiday_categories``; ``announced_yearly`` marks a calendar fixed by a
    yearly announcement (China's State Council notice), whose years are covered
    only once the package carries that announcement.
    """

    time_zone: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    holiday_country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    holiday_subdivision: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,10}$")] | None = None
    holiday_categories: tuple[Name, ...] = ("public",)
    announced_yearly: bool = False


class Period(_Strict):
    value: int = Field(ge=1)
    unit: Literal["months", "years"]

    @property
    def months(self) -> int:
        return self.value * (12 if self.unit == "years" else 1)


class Lookback(_Strict):
    """How far back a request to know reaches (CCPA §1798.130(a)(2)(B) ◐): ``months``,
    and all data collected on or after ``extended_if_collected_after`` (the
    subject may ask for more than ``months`` of it unless disproportionate)."""

    months: int = Field(ge=1)
    extended_if_collected_after: dt.date | None = None


class SensitiveRule(_Strict):
    classifications: tuple[Name, ...] = ("sensitive",)
    categories: tuple[Name, ...] = ()
    consent: Literal["none", "explicit", "separate"] = "separate"


class SeparateConsentRule(_Strict):
    sensitive: tuple[LawfulBasis, ...] = ()
    provide_to_third_party: tuple[LawfulBasis, ...] = ()
    cross_border: tuple[LawfulBasis, ...] = ()

    def needed(self, kind: SeparateConsentKind, basis: LawfulBasis) -> bool:
        bases: tuple[LawfulBasis, ...] = getattr(self, kind.value)
        return basis in bases


class Arrangement(_Strict):
    """A transfer mechanism this deployment has in place for some destinations."""

    destinations: tuple[Code | Literal["*"], ...] = Field(min_length=1)
    mechanism: Name
    reference: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class CrossBorder(_Strict):
    rule: CrossBorderRule
    mechanisms: tuple[Name, ...] = ()
    adequate: tuple[Code, ...] = ()
    arrangements: tuple[Arrangement, ...] = ()


class GPCRule(_Strict):
    honour: bool = True
    purposes: tuple[Name, ...] = ("sale", "sharing")


class RequestKind(StrEnum):
    """The kinds of data-subject request Vault knows; a profile maps its rights
    (their statutory names: CCPA ``know``/``delete``, PIPL ``copy``...) onto these."""

    ACCESS = "access"
    PORTABILITY = "portability"
    RECTIFICATION = "rectification"
    ERASURE = "erasure"
    RESTRICTION = "restriction"
    OBJECTION = "objection"
    OPT_OUT_SALE_SHARING = "opt_out_sale_sharing"
    LIMIT_SENSITIVE = "limit_sensitive"
    WITHDRAW_CONSENT = "withdraw_consent"
    AUTOMATED_DECISION_REVIEW = "automated_decision_review"
    EXPLANATION = "explanation"


class VerificationTier(_Strict):
    """How sure the controller must be of the requester before acting.

    Attributes:
        points: data points that must match the subject's records (keyed digests,
            compared in constant time); 0 = no verification (CCPA opt-out, §7026).
        declaration: a signed declaration is also needed (CCPA §7062(b)).
        accept_as_known: the DPO may accept the requester as known, with a
            reason (GDPR Art. 12(6): verify only on reasonable doubt).
    """

    points: int = Field(default=0, ge=0, le=10)
    declaration: bool = False
    accept_as_known: bool = False


class RequestLimit(_Strict):
    """At most ``count`` requests of ``kinds`` per subject in ``months`` (CCPA
    §1798.130(a)(7): two requests to know in 12 months)."""

    kinds: tuple[RequestKind, ...] = Field(min_length=1)
    count: int = Field(ge=1)
    months: int = Field(ge=1)


class DSARRules(_Strict):
    """A regime's data-subject requests, as data (``[regimes.<name>.dsar]``).

    Attributes:
        kinds: a right of the profile's ``rights`` -> the kind of request it is.
        courtesy: kinds the regime does not grant that are accepted anyway.
        verification: tiers keyed by right name, kind or ``default``.
        max_failed_verifications: failed attempts after which the request is rejected.
        limits: per-subject request limits.
    """

    kinds: dict[Name, RequestKind] = Field(min_length=1)
    courtesy: tuple[RequestKind, ...] = ()
    verification: dict[Name, VerificationTier] = Field(default_factory=dict)
    max_failed_verifications: int = Field(default=3, ge=1, le=100)
    limits: tuple[RequestLimit, ...] = ()

    def tier(self, right: str, kind: str) -> VerificationTier:
        """The verification tier of a request made under ``right`` (of ``kind``)."""
        for key in (right, kind, "default"):
            if key in self.verification:
                return self.verification[key]
        return VerificationTier(points=2)


class JurisdictionProfile(_Strict):
    """One regime's profile, as validated from ``jurisdictions.toml``."""

    name: RegimeName
    title: Annotated[str, StringConstraints(min_length=1)]
    jurisdictions: tuple[Code, ...] = ()
    rights: tuple[Name, ...] = Field(min_length=1)
    acknowledge: Deadline | None = None
    respond: Deadline
    # Clocks of particular requests where they differ from ``respond`` (figures
    # JURISDICTIONS.md marks ◐/✖): keyed by a right of ``rights``.
    respond_by_right: dict[Name, Deadline] = Field(default_factory=dict)
    opt_out_sale_sharing: Deadline | None = None
    limit_sensitive: Deadline | None = None
    lookback: Lookback | None = None
    request_log_retention: Period | None = None
    default_consent_model: Literal[ConsentModel.OPT_IN, ConsentModel.OPT_OUT]
    consent_models: dict[Name, Literal[ConsentModel.OPT_IN, ConsentModel.OPT_OUT]] = Field(
        default_factory=dict)
    reask_after_months: int = Field(default=0, ge=0)
    sensitive: SensitiveRule
    separate_consent: SeparateConsentRule
    cross_border: CrossBorder
    gpc: GPCRule = GPCRule()
    erase_on_withdrawal: bool = False
    clock: ClockSettings | None = None
    dsar: DSARRules | None = None

    @model_validator(mode="after")
    def _overrides_name_rights(self) -> JurisdictionProfile:
        for right in self.respond_by_right:
            if right not in self.rights:
                raise ValueError(f"respond_by_right names {right!r}, which is not among "
                                 "the rights")
        for right in (self.dsar.kinds if self.dsar else {}):
            if right not in self.rights:
                raise ValueError(f"dsar.kinds names {right!r}, which is not among the rights")
        return self

    def granted_kinds(self) -> frozenset[RequestKind]:
        """The kinds of request this regime grants (its rights, mapped)."""
        return frozenset(self.dsar.kinds.values()) if self.dsar else frozenset()

    def right_for(self, kind: RequestKind) -> str | None:
        """The profile's name of the right a request of ``kind`` exercises: the right
        spelled like the kind, else the first right mapped to it; None if not granted."""
        if self.dsar is None:
            return None
        rights = [r for r in self.rights if self.dsar.kinds.get(r) is kind]
        if kind.value in rights:
            return kind.value
        return rights[0] if rights else None

    def deadline_for(self, right: str) -> Deadline:
        """The response clock of a request exercising ``right``."""
        return self.respond_by_right.get(right, self.respond)

    def consent_model(self, purpose: str, basis: LawfulBasis) -> ConsentModel:
        """The consent model of ``purpose`` whose lawful basis here is ``basis``."""
        if basis is not LawfulBasis.CONSENT:
            return ConsentModel.NOTICE_ONLY
        return ConsentModel(self.consent_models.get(purpose, self.default_consent_model))

    def is_sensitive(self, classification: str, category: str) -> bool:
        return (classification in self.sensitive.classifications
                or category in self.sensitive.categories)


@dataclass(frozen=True, slots=True)
class TransferDecision:
    """Whether data of a subject resident in one place may go to ``destination``.

    Attributes:
        cross_border: False when both places are in the same area (no transfer).
        allowed: whether a mechanism covers it.
        mechanism: the mechanism relied on (``adequacy``, ``scc``...), or None.
        reference: the arrangement's reference (contract id...), or None.
        reason: a stable code for the audit log when refused.
    """

    cross_border: bool
    allowed: bool
    mechanism: str | None = None
    reference: str | None = None
    reason: str | None = None


class _File(_Strict):
    regimes: dict[RegimeName, dict[str, object]] = Field(min_length=1)


class JurisdictionRegistry:
    """The profiles by regime name and the code -> regime map. Immutable."""

    __slots__ = ("_by_code", "_profiles")

    def __init__(self, profiles: Iterable[JurisdictionProfile]) -> None:
        by_name: dict[str, JurisdictionProfile] = {}
        by_code: dict[str, str] = {}
        for profile in profiles:
            if profile.name in by_name:
                raise ConfigError(f"regime {profile.name!r} is defined twice")
            by_name[profile.name] = profile
            for code in profile.jurisdictions:
                if code in by_code:
                    raise ConfigError(f"jurisdiction {code} is claimed by {by_code[code]!r} "
                                      f"and {profile.name!r}")
                by_code[code] = profile.name
        if DEFAULT_REGIME not in by_name:
            raise ConfigError("jurisdictions: a 'default' regime is required")
        self._profiles: Mapping[str, JurisdictionProfile] = by_name
        self._by_code: Mapping[str, str] = by_code

    @property
    def regimes(self) -> tuple[str, ...]:
        return tuple(sorted(self._profiles))

    def regime_for(self, code: str | None) -> str:
        """The regime governing a subject of jurisdiction ``code``.

        ``EU``, ``EEA`` and EU/EEA country codes -> ``gdpr``; ``US-CA`` ->
        ``ccpa``; ``CN`` -> ``pipl``; anything else, or None -> ``default``.
        """
        if code is None:
            return DEFAULT_REGIME
        return self._by_code.get(code, DEFAULT_REGIME)

    def profile(self, regime: str) -> JurisdictionProfile:
        """The profile of ``regime``.

        Raises:
            ConfigError: no such regime.
        """
        try:
            return self._profiles[regime]
        except KeyError:
            raise ConfigError(f"no jurisdiction profile {regime!r}") from None

    def profile_for(self, code: str | None) -> JurisdictionProfile:
        return self._profiles[self.regime_for(code)]

    def same_area(self, residency: str | None, region: str) -> bool:
        """Whether ``region`` is inside the area of a subject resident in ``residency``.

        Regions of the same regime are one area (an EU subject's data in FR and
        DE does not cross a border in law); the default regime has no area, so
        only an identical code is the same place. ``US`` counts as inside
        ``US-CA`` (a US-wide service processing a Californian's data).
        """
        if residency is None:
            return False
        if region == residency or residency.split("-")[0] == region:
            return True
        regime = self.regime_for(residency)
        return regime != DEFAULT_REGIME and self.regime_for(region) == regime

    def transfer(self, residency: str | None, destination: str) -> TransferDecision:
        """Decide a transfer of a subject's data from ``residency`` to ``destination``.

        Pure: uses only the profile of the subject's regime.
        """
        if self.same_area(residency, destination):
            return TransferDecision(cross_border=False, allowed=True)
        rule = self.profile_for(residency).cross_border
        if rule.rule is CrossBorderRule.FREE:
            return TransferDecision(cross_border=True, allowed=True, mechanism="none")
        if rule.rule is CrossBorderRule.LOCALISE:
            return TransferDecision(cross_border=True, allowed=False, reason="localisation")
        if destination in rule.adequate and "adequacy" in rule.mechanisms:
            return TransferDecision(cross_border=True, allowed=True, mechanism="adequacy")
        for arrangement in rule.arrangements:
            if destination in arrangement.destinations or "*" in arrangement.destinations:
                return TransferDecision(cross_border=True, allowed=True,
                                        mechanism=arrangement.mechanism,
                                        reference=arrangement.reference)
        return TransferDecision(cross_border=True, allowed=False, reason="no_transfer_mechanism")

    def __repr__(self) -> str:
        return f"JurisdictionRegistry({sorted(self._profiles)!r})"


def load_jurisdictions(path: Path, purposes: PurposeRegistry | None = None
                       ) -> JurisdictionRegistry:
    """Read and validate the jurisdiction profiles.

    Args:
        path: usually ``policies/jurisdictions.toml``.
        purposes: when given, cross-checked: every purpose named by a profile
            (consent models, GPC) must be registered, every regime a purpose
            names a basis for must exist, and an arrangement's mechanism must be
            one the profile allows.

    Raises:
        ConfigError: naming the file and the bad key, never a value.
    """
    raw = read_toml(path, "the jurisdictions file")
    try:
        parsed = _File.model_validate(raw)
        profiles = [JurisdictionProfile.model_validate({"name": name, **table})
                    for name, table in parsed.regimes.items()]
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid jurisdictions: {problems(exc)}") from None
    registry = JurisdictionRegistry(profiles)
    for profile in profiles:
        for arrangement in profile.cross_border.arrangements:
            if arrangement.mechanism not in profile.cross_border.mechanisms:
                raise ConfigError(f"{path}: regimes.{profile.name}.cross_border: mechanism "
                                  f"{arrangement.mechanism!r} is not among its mechanisms")
    if purposes is not None:
        for profile in profiles:
            named = [*profile.consent_models, *profile.gpc.purposes]
            for purpose in named:
                if purpose not in purposes:
                    raise ConfigError(f"{path}: regimes.{profile.name} names purpose "
                                      f"{purpose!r}, which purposes.toml does not declare")
        for declared in purposes:
            for regime in declared.lawful_basis:
                if regime != "default" and regime not in registry.regimes:
                    raise ConfigError(f"purposes.toml: purposes.{declared.name}.lawful_basis "
                                      f"names unknown regime {regime!r}")
    return registry
