"""The consent decision for one data subject and one use: pure, no I/O.

The facade gathers, for every subject a call touches, its jurisdiction, its
restriction flag and its consent states for the purpose (one query for the
whole batch), then asks :func:`decide` per subject. The order of the checks
is the order a DPO would ask:

1. restriction (GDPR Art. 18, PIPL Art. 44): only ``restricted_use`` purposes;
2. the purpose's lawful basis in the subject's regime and the consent model:
   opt-in needs a current grant whose notice covers the purpose and the data
   categories used; opt-out is allowed until the subject withdraws or refuses
   (CCPA sale and sharing, GPC);
3. sensitive fields: a separate (or explicit) consent where the profile asks;
4. providing to another handler: a separate consent where the profile asks;
5. a destination outside the subject's area: a transfer mechanism (or a
   refusal under localisation) and a separate consent where the profile asks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

from vault.consent.model import ConsentScope, ConsentState, ConsentStatus
from vault.consent.notices import NoticeRegistry
from vault.jurisdiction import (
    ConsentModel,
    JurisdictionRegistry,
    SeparateConsentKind,
)
from vault.policy.purposes import LawfulBasis, Purpose

__all__ = ["Refusal", "SubjectFacts", "Use", "Verdict", "decide"]


class Refusal(StrEnum):
    """Why a use was refused: the audit reason and the error's ``reason``."""

    RESTRICTED = "subject_restricted"
    CONSENT_REQUIRED = "consent_required"
    RECONSENT_REQUIRED = "reconsent_required"
    OPTED_OUT = "opted_out"
    SEPARATE_CONSENT_REQUIRED = "separate_consent_required"
    TRANSFER_REFUSED = "transfer_refused"
    LOCALISATION = "localisation_required"


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """What the decision needs to know of one subject."""

    subject_id: str
    jurisdiction: str | None
    restricted: bool
    states: Mapping[ConsentScope, ConsentState]


@dataclass(frozen=True, slots=True)
class Use:
    """What the caller wants to do.

    Attributes:
        purpose: the registered purpose.
        categories: data categories of the fields used.
        sensitive_fields: (field, classification, category) of the fields used
            that may be sensitive; the profile decides which are.
        region: where the data goes (the actor's region), or None for "here".
        recipient: another handler the data is provided to, or None.
    """

    purpose: Purpose
    categories: frozenset[str]
    fields: tuple[tuple[str, str, str], ...]
    region: str | None = None
    recipient: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one subject.

    Attributes:
        allowed: whether the use may go ahead.
        regime: the subject's regime.
        refusal: why not (None when allowed).
        scope: the consent scope missing, when a consent is missing.
        mechanism: the transfer mechanism relied on, when data crosses a border.
        fields: the sensitive fields that needed a separate consent.
    """

    allowed: bool
    regime: str
    refusal: Refusal | None = None
    scope: ConsentScope | None = None
    mechanism: str | None = None
    fields: tuple[str, ...] = ()


def _covered(state: ConsentState | None, notices: NoticeRegistry, purpose: str,
             scope: ConsentScope, categories: Collection[str], now: dt.datetime
             ) -> tuple[bool, bool]:
    """(current grant?, covered by its notice?)"""
    if state is None or state.status_at(now) is not ConsentStatus.GRANTED:
        return False, False
    notice = notices.find(state.notice_id, state.notice_version)
    return True, notice is not None and notice.covers(purpose, scope, categories)


def decide(facts: SubjectFacts, use: Use, *, jurisdictions: JurisdictionRegistry,
           notices: NoticeRegistry, now: dt.datetime) -> Verdict:
    """Decide whether ``use`` of this subject's data is allowed."""
    regime = jurisdictions.regime_for(facts.jurisdiction)
    profile = jurisdictions.profile(regime)
    purpose = use.purpose
    if facts.restricted and not purpose.restricted_use:
        return Verdict(False, regime, Refusal.RESTRICTED)
    basis = purpose.basis_in(regime)
    model = profile.consent_model(purpose.name, basis)
    general = facts.states.get(ConsentScope.GENERAL)
    if model is ConsentModel.OPT_IN:
        granted, covered = _covered(general, notices, purpose.name, ConsentScope.GENERAL,
                                    use.categories, now)
        if not covered:
            return Verdict(False, regime,
                           Refusal.RECONSENT_REQUIRED if granted else Refusal.CONSENT_REQUIRED,
                           ConsentScope.GENERAL)
    elif model is ConsentModel.OPT_OUT and general is not None and general.status in (
            ConsentStatus.WITHDRAWN, ConsentStatus.REFUSED):
        return Verdict(False, regime, Refusal.OPTED_OUT, ConsentScope.GENERAL)
    elif (basis is LawfulBasis.LEGITIMATE_INTERESTS and general is not None
          and general.status in (ConsentStatus.WITHDRAWN, ConsentStatus.REFUSED)):
        # GDPR Art. 21(1)/(2): an objection recorded in the ledger (a withdrawal
        # event for a legitimate-interest purpose) stops that purpose.
        return Verdict(False, regime, Refusal.OPTED_OUT, ConsentScope.GENERAL)

    separate = profile.separate_consent

    def missing(scope: ConsentScope, categories: Collection[str]) -> Refusal | None:
        granted, covered = _covered(facts.states.get(scope), notices, purpose.name, scope,
                                    categories, now)
        if covered:
            return None
        return Refusal.RECONSENT_REQUIRED if granted else Refusal.SEPARATE_CONSENT_REQUIRED

    sensitive = tuple(name for name, classification, category in use.fields
                      if profile.is_sensitive(classification, category))
    if (sensitive and profile.sensitive.consent != "none"
            and separate.needed(SeparateConsentKind.SENSITIVE, basis)):
        refusal = missing(ConsentScope.SENSITIVE, use.categories)
        if refusal is not None:
            return Verdict(False, regime, refusal, ConsentScope.SENSITIVE, fields=sensitive)
    if use.recipient is not None and separate.needed(
            SeparateConsentKind.PROVIDE_TO_THIRD_PARTY, basis):
        refusal = missing(ConsentScope.PROVIDE_TO_THIRD_PARTY, use.categories)
        if refusal is not None:
            return Verdict(False, regime, refusal, ConsentScope.PROVIDE_TO_THIRD_PARTY)
    mechanism = None
    if use.region is not None:
        transfer = jurisdictions.transfer(facts.jurisdiction, use.region)
        if transfer.cross_border:
            if not transfer.allowed:
                refusal = (Refusal.LOCALISATION if transfer.reason == "localisation"
                           else Refusal.TRANSFER_REFUSED)
                return Verdict(False, regime, refusal)
            if separate.needed(SeparateConsentKind.CROSS_BORDER, basis):
                refusal = missing(ConsentScope.CROSS_BORDER, use.categories)
                if refusal is not None:
                    return Verdict(False, regime, refusal, ConsentScope.CROSS_BORDER)
            mechanism = transfer.mechanism
    return Verdict(True, regime, mechanism=mechanism)
