"""The consent gate's lookups: the facts of many subjects, and shared decisions.

The data path asks, for every subject a call touches, whether the purpose is
allowed: :meth:`ConsentGate.subject_facts` reads the subjects' jurisdictions,
restriction flags and consent states in one batched query, and
:meth:`ConsentGate.decide_many` applies the pure :func:`~vault.consent.decide`
once per kind of subject rather than once per subject.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select

from vault.consent import model
from vault.consent.decision import SubjectFacts, Use, Verdict, decide
from vault.consent.notices import NoticeRegistry
from vault.jurisdiction import ConsentModel, JurisdictionRegistry, SeparateConsentKind
from vault.policy.purposes import LawfulBasis
from vault.store.tables import CONSENT_STATE as _STATE
from vault.store.tables import SUBJECTS as _SUBJECTS

__all__ = ["ConsentGate", "event_from", "state_from"]

_CHUNK = 500
# Built once: every data call on existing subjects runs it.
_RESTRICTED_SUBJECTS = select(_SUBJECTS.c.subject_id, _SUBJECTS.c.jurisdiction).where(
    _SUBJECTS.c.tenant == bindparam("r_tenant"),
    _SUBJECTS.c.subject_id.in_(bindparam("r_ids", expanding=True)),
    _SUBJECTS.c.restricted_at.is_not(None))


def event_from(row: Any) -> model.ConsentEvent:
    return model.ConsentEvent(
        event_id=row.event_id, seq=int(row.seq), tenant=row.tenant, subject_id=row.subject_id,
        purpose=row.purpose, scope=model.ConsentScope(row.scope), kind=model.EventKind(row.kind),
        regime=row.regime, jurisdiction=row.jurisdiction, method=model.ConsentMethod(row.method),
        notice_id=row.notice_id,
        notice_version=None if row.notice_version is None else int(row.notice_version),
        notice_hash=row.notice_hash, occurred_at=row.occurred_at, expires_at=row.expires_at,
        source=row.source, evidence=row.evidence, conflict=row.conflict, actor=row.actor)


def state_from(row: Any) -> model.ConsentState:
    return model.ConsentState(
        tenant=row.tenant, subject_id=row.subject_id, purpose=row.purpose,
        scope=model.ConsentScope(row.scope), status=model.ConsentStatus(row.status),
        regime=row.regime,
        notice_id=row.notice_id,
        notice_version=None if row.notice_version is None else int(row.notice_version),
        expires_at=row.expires_at, event_id=row.event_id, event_seq=int(row.event_seq),
        updated_at=row.updated_at)



class ConsentGate:
    """Batched consent facts and decisions under one vault's profiles and notices."""

    def __init__(self, jurisdictions: JurisdictionRegistry, notices: NoticeRegistry) -> None:
        self._jurisdictions = jurisdictions
        self._notices = notices
        # (purpose, fields) -> whether only restriction matters (see below).
        self._uniform_memo: dict[tuple[str, tuple[tuple[str, str, str], ...]], bool] = {}

    def depends_only_on_restriction(self, use: Use) -> bool:
        """Whether ``use`` is allowed in every regime for any unrestricted subject,
        whatever its consents (a notice-only purpose, no sensitive field needing a
        separate consent, no recipient, no region). Then only restricted subjects
        need looking up: the common case of account management stays cheap.

        Memoised per (purpose, fields): the profiles are loaded once, and every
        data call asks it."""
        if use.region is not None or use.recipient is not None:
            return False
        memo = self._uniform_memo
        key = (use.purpose.name, use.fields)
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._uniform(use)
        return found

    def _uniform(self, use: Use) -> bool:
        jurisdictions = self._jurisdictions
        for regime in jurisdictions.regimes:
            profile = jurisdictions.profile(regime)
            basis = use.purpose.basis_in(regime)
            if profile.consent_model(use.purpose.name, basis) is not ConsentModel.NOTICE_ONLY:
                return False
            if basis is LawfulBasis.LEGITIMATE_INTERESTS:
                return False  # an objection in the ledger stops it (GDPR Art. 21)
            if (profile.sensitive.consent != "none"
                    and profile.separate_consent.needed(SeparateConsentKind.SENSITIVE, basis)
                    and any(profile.is_sensitive(c, cat) for _, c, cat in use.fields)):
                return False
        return True

    def subject_facts(self, conn: Connection, tenant: str, subject_ids: Sequence[str],
                      purpose: str, *, restricted_only: bool = False
                      ) -> dict[str, SubjectFacts]:
        """Jurisdiction, restriction and consent states of many subjects for one
        purpose: one query (per 500 subjects) joining subjects and states. With
        ``restricted_only``, only the restricted subjects (without states)."""
        if restricted_only:
            found: dict[str, SubjectFacts] = {}
            for start in range(0, len(subject_ids), _CHUNK):
                chunk = list(subject_ids[start:start + _CHUNK])
                for sid, code in conn.execute(_RESTRICTED_SUBJECTS,
                                              {"r_tenant": tenant, "r_ids": chunk}):
                    found[sid] = SubjectFacts(sid, code, True, {})
            return found
        names = [c.name for c in _STATE.c]
        jurisdictions: dict[str, str | None] = {}
        restricted: set[str] = set()
        states: dict[str, dict[model.ConsentScope, model.ConsentState]] = {}
        for start in range(0, len(subject_ids), _CHUNK):
            chunk = list(subject_ids[start:start + _CHUNK])
            joined = _SUBJECTS.outerjoin(_STATE, and_(
                _STATE.c.tenant == _SUBJECTS.c.tenant,
                _STATE.c.subject_id == _SUBJECTS.c.subject_id,
                _STATE.c.purpose == purpose))
            result = conn.execute(
                select(_SUBJECTS.c.subject_id, _SUBJECTS.c.jurisdiction,
                       _SUBJECTS.c.restricted_at, *_STATE.c)
                .select_from(joined)
                .where(_SUBJECTS.c.tenant == tenant, _SUBJECTS.c.subject_id.in_(chunk)))
            for sid, jurisdiction, restricted_at, *state in result:
                jurisdictions[sid] = jurisdiction
                if restricted_at is not None:
                    restricted.add(sid)
                if state[0] is not None:
                    row = state_from(SimpleNamespace(**dict(zip(names, state, strict=True))))
                    states.setdefault(sid, {})[row.scope] = row
        return {sid: SubjectFacts(sid, code, sid in restricted, states.get(sid, {}))
                for sid, code in jurisdictions.items()}

    def decide_many(self, facts: Mapping[str, SubjectFacts], use: Use, *,
                    now: dt.datetime) -> dict[str, Verdict]:
        """A verdict per subject (pure, given the facts). Subjects with no consent
        state share one decision per (jurisdiction, restriction): a batch of
        10,000 customers costs a handful of decisions, not 10,000."""
        jurisdictions, notices = self._jurisdictions, self._notices
        shared: dict[tuple[str | None, bool], Verdict] = {}
        verdicts: dict[str, Verdict] = {}
        for sid, f in facts.items():
            if f.states:
                verdicts[sid] = decide(f, use, jurisdictions=jurisdictions, notices=notices,
                                       now=now)
                continue
            key = (f.jurisdiction, f.restricted)
            verdict = shared.get(key)
            if verdict is None:
                verdict = shared[key] = decide(f, use, jurisdictions=jurisdictions,
                                               notices=notices, now=now)
            verdicts[sid] = verdict
        return verdicts

