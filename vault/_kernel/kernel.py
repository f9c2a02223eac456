"""The :class:`Kernel`: everything an open vault holds, built once, never changed.

Services receive the kernel and nothing else of the vault: settings, engines,
key store and provider, the cipher, the blind indexer, the pseudonymiser, the
policy engine, the rules loaded from ``policies/`` and the one clock that every
part of the vault reads (the audit log, the key store and the policy engine
were built with this same clock).

The audit helpers here are the one place where an administrative entry is
built: the local operator's id, the length limit of a reason, and the
grouping of per-subject events into one entry per chain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from sqlalchemy import Connection, Engine

from vault.audit.chain import AuditEvent, Decision, chain_for
from vault.audit.log import AuditLog
from vault.clock import Clock
from vault.config import VaultSettings
from vault.consent.notices import NoticeRegistry, load_notices
from vault.crypto.blind_index import BlindIndexer
from vault.crypto.envelope import AESGCMFieldCipher
from vault.crypto.keys import KeyProvider, RootKeys
from vault.crypto.keystore import KeyStore
from vault.crypto.pseudonym import Pseudonymizer
from vault.errors import AccessDenied, InvalidData, StepUpRequired
from vault.jurisdiction import JurisdictionRegistry, load_jurisdictions
from vault.policy.engine import CasbinPolicyEngine
from vault.policy.purposes import PurposeRegistry, load_purposes
from vault.retention.schedule import RetentionSchedule, load_schedule
from vault.schema import Classification, CollectionSchema, SchemaRegistry, load_schemas
from vault.store.engine import read_only
from vault.types import Actor, actor_id

__all__ = ["ADMIN_PURPOSE", "NAMED_LIMIT", "REASON_LIMIT", "EventFields", "Kernel", "Rules",
           "factor_context"]

#: The purpose under which administrative actions are decided.
ADMIN_PURPOSE = "security"
#: Characters of an audit entry's reason (the column is 64 wide).
REASON_LIMIT = 64
#: Record ids or subject pseudonyms a refusal names at most (the rest are counted
#: in the error, not listed in the entry).
NAMED_LIMIT = 50
#: Seconds a second factor's time may lie ahead of the vault's clock (clock skew).
_FACTOR_SKEW = 60


def factor_context(actor: Actor | None) -> Mapping[str, str]:
    """The audit context naming ``actor``'s second factor and when it was proved
    (empty without one): every entry of a stepped-up actor's call carries it."""
    factor = actor.second_factor if actor is not None else None
    if factor is None:
        return {}
    return {"factor": factor.method, "factor_at": factor.at.isoformat()}


class EventFields(TypedDict, total=False):
    """What :meth:`Kernel.event` takes besides the action."""

    actor: Actor | None
    tenant: str
    decision: Decision
    reason: str | None
    subjects: Sequence[str]
    purpose: str | None
    collection: str | None
    record_ids: Sequence[str]
    fields: Sequence[str]


@dataclass(frozen=True, slots=True)
class Rules:
    """What ``policies/`` says, parsed and cross-checked once."""

    schemas: SchemaRegistry
    purposes: PurposeRegistry
    jurisdictions: JurisdictionRegistry
    notices: NoticeRegistry
    schedule: RetentionSchedule

    @classmethod
    def load(cls, folder: Path) -> Rules:
        """Load and cross-check every policies file of ``folder``.

        Raises:
            ConfigError: a file is missing or wrong (nothing is half-loaded).
        """
        schemas = load_schemas(folder)
        purposes = load_purposes(folder / "purposes.toml")
        return cls(
            schemas=schemas,
            purposes=purposes,
            jurisdictions=load_jurisdictions(folder / "jurisdictions.toml", purposes),
            notices=load_notices(folder / "notices.toml", purposes),
            schedule=load_schedule(folder / "retention.toml", schemas),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Kernel:
    """The parts of one open vault, shared by its services (package-private)."""

    settings: VaultSettings
    vault_id: str
    engine: Engine
    keystore_engine: Engine
    keystore: KeyStore
    provider: KeyProvider
    root_keys: RootKeys
    cipher: AESGCMFieldCipher
    indexer: BlindIndexer
    pseudonyms: Pseudonymizer
    policy: CasbinPolicyEngine
    rules: Rules
    audit_log: AuditLog
    clock: Clock

    # ------------------------------------------------------------------ reads

    def now(self) -> dt.datetime:
        return self.clock.now()

    def pseudonym(self, tenant: str, subject_id: str) -> str:
        """The keyed pseudonym under which the audit log knows this subject."""
        return self.pseudonyms.pseudonym(tenant, subject_id)

    def read_only(self) -> AbstractContextManager[Connection]:
        """A connection to the data database for reading (no write lock on SQLite),
        rolled back at the end; see :func:`vault.store.engine.read_only`."""
        return read_only(self.engine)

    # ------------------------------------------------------------------ authorisation

    def authorise(self, actor: Actor | None, obj: str, action: str, *,
                  tenant: str | None = None, step_up: str | None = None) -> None:
        """Let ``actor`` do the administrative ``action`` on ``obj`` in ``tenant`` (by
        default the actor's own), or audit the refusal and raise AccessDenied.
        ``actor`` None is the local operator. ``step_up``: the kind of action (of
        ``STEP_UP_ACTIONS``) this is, which may need a second factor as well.

        Raises:
            InvalidData: ``actor`` is not an Actor.
            AccessDenied: the policy refuses (audited).
            StepUpRequired: the policy allows, but the settings want a second
                factor for ``step_up`` and the actor has proved none (audited).
        """
        if actor is None:
            return
        if not isinstance(actor, Actor):
            raise InvalidData("actor must be a vault.Actor", field="actor")
        allowed = actor.tenant in (tenant or actor.tenant, "*") and self.policy.is_allowed(
            actor.id, actor.tenant, obj, action, ADMIN_PURPOSE)
        if not allowed:
            self.audit(action, actor=actor, decision=Decision.DENY, reason="access_denied",
                       purpose=ADMIN_PURPOSE)
            raise AccessDenied(f"{action} denied")
        if step_up is not None:
            self.require_step_up(actor, step_up, action=action, purpose=ADMIN_PURPOSE)

    # ------------------------------------------------------------------ step-up

    def step_up_missing(self, actor: Actor | None, step: str) -> StepUpRequired | None:
        """The refusal ``actor`` earns for an action of kind ``step`` (one of
        ``STEP_UP_ACTIONS``) without a second factor; None when the settings do not
        ask for one, the actor proved one (recently enough, when
        ``step_up_max_age_seconds`` is set), or the caller is the local operator."""
        if actor is None or step not in self.settings.step_up:
            return None
        factor, limit = actor.second_factor, self.settings.step_up_max_age_seconds
        if factor is not None:
            if limit is None:
                return None
            age = (self.clock.now() - factor.at).total_seconds()
            if -_FACTOR_SKEW <= age <= limit:
                return None
        return StepUpRequired(
            f"{step} needs a verified second factor: prove one (step-up) and call again "
            "with Actor(second_factor=...)", action=step)

    def require_step_up(self, actor: Actor | None, step: str, *, action: str,
                        tenant: str = "*", purpose: str | None = None,
                        collection: str | None = None,
                        subjects: Sequence[str] = ()) -> None:
        """Refuse (audited as ``action``, reason ``step_up_required``) an action of
        kind ``step`` that needs a second factor ``actor`` has not proved.

        Raises:
            StepUpRequired: see :meth:`step_up_missing`.
        """
        refusal = self.step_up_missing(actor, step)
        if refusal is not None:
            self.audit(action, actor=actor, decision=Decision.DENY, reason=refusal.reason,
                       tenant=tenant, purpose=purpose, collection=collection,
                       subjects=subjects)
            raise refusal

    def sensitive_held(self, actor: Actor | None, schema: CollectionSchema,
                       fields: Collection[str]) -> frozenset[str]:
        """The ``sensitive`` fields among ``fields`` that ``actor`` may not see now
        for want of a second factor (empty when it needs none)."""
        if self.step_up_missing(actor, "read_sensitive") is None:
            return frozenset()
        return frozenset(f for f in fields
                         if schema.fields[f].classification is Classification.SENSITIVE)

    # ------------------------------------------------------------------ audit

    def event(self, action: str, **fields: Unpack[EventFields]) -> AuditEvent:
        """An audit event, attributed to ``actor`` (in its tenant) or to the local
        operator (in ``tenant``, default ``*``); the reason is cut to
        :data:`REASON_LIMIT`; decision ALLOW unless given."""
        actor, reason = fields.get("actor"), fields.get("reason")
        return AuditEvent(
            tenant=actor.tenant if actor else fields.get("tenant", "*"),
            actor=actor_id(actor),
            action=action, decision=fields.get("decision", Decision.ALLOW),
            collection=fields.get("collection"),
            record_ids=tuple(fields.get("record_ids", ())),
            subjects=tuple(fields.get("subjects", ())), fields=tuple(fields.get("fields", ())),
            purpose=fields.get("purpose"), reason=reason[:REASON_LIMIT] if reason else None,
            context=factor_context(actor),
        )

    def audit(self, action: str, **fields: Unpack[EventFields]) -> None:
        """Write :meth:`event` in a transaction of its own."""
        self.audit_log.write([self.event(action, **fields)])

    def group_by_chain(self, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        """Merge the per-subject events of a batch into one entry per audit chain
        (the events share actor, action, decision, purpose and reason)."""
        if len(events) <= 1:
            return list(events)
        groups: dict[int, list[AuditEvent]] = {}
        for event in events:
            groups.setdefault(chain_for(event.subjects, self.audit_log.chains), []).append(event)
        merged = []
        for group in groups.values():
            first = group[0]
            merged.append(AuditEvent(
                tenant=first.tenant, actor=first.actor, action=first.action,
                decision=first.decision, collection=first.collection,
                record_ids=tuple(r for e in group for r in e.record_ids),
                subjects=tuple(dict.fromkeys(s for e in group for s in e.subjects)),
                fields=tuple(sorted({f for e in group for f in e.fields})),
                purpose=first.purpose, reason=first.reason, context=first.context,
            ))
        return merged

    # ------------------------------------------------------------------ life cycle

    def close(self) -> None:
        """Dispose of database connections and forget cached data keys."""
        self.keystore.clear_cache()
        self.keystore_engine.dispose()
        self.engine.dispose()
        self.provider.close()
