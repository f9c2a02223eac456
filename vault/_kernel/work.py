"""The unit of work of one data call: who asks, what for, and its transaction.

A :class:`Call` is made per library call once the actor, collection and
purpose are known. It runs the call's transaction with the store's bounded
retries, appends the audit events gathered during the attempt before the
commit (so no data leaves without its entry), and refuses: an audited
denial, in a transaction of its own, then the error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError

from vault._kernel.kernel import NAMED_LIMIT, Kernel, factor_context
from vault.audit.chain import AuditEvent, Decision
from vault.audit.context import audit_context
from vault.errors import AuditError, VaultError
from vault.logging import get_logger
from vault.store.retry import transaction_attempts
from vault.store.tables import RECORDS
from vault.types import Actor

__all__ = ["Call", "transaction_failed"]

log = get_logger(__name__)

T = TypeVar("T")


def transaction_failed(exc: SQLAlchemyError) -> NoReturn:
    """The one translation of a store failure during a data call (never its text:
    a driver's message can quote the values of the statement)."""
    log.error("vault_transaction_failed", error_type=type(exc).__name__)
    raise AuditError("the operation and its audit entry could not be committed") from None


@dataclass(slots=True)
class Call:
    """One data call: ``actor`` does ``action`` on ``collection`` for ``purpose``.

    ``collection`` and ``purpose`` are None while they are not known to be valid
    (a refusal of a bad one names neither).
    """

    kernel: Kernel
    actor: Actor
    action: str
    collection: str | None = None
    purpose: str | None = None
    # The batches of audit events of the running attempt, each appended as one
    # (the log orders a batch by chain; batches keep the order they were made in).
    pending: list[Sequence[AuditEvent]] = field(default_factory=list)

    def run(self, body: Callable[[Connection], T]) -> T:
        """Run ``body`` in a write transaction, retried on deadlocks and busy
        databases; the events it :meth:`record`\\ s are appended in the same
        transaction, after ``body`` and before the commit.

        Raises:
            AuditError: the transaction could not be committed.
            VaultError: whatever ``body`` raises (nothing is committed).
        """
        try:
            # A stepped-up actor's entries name its second factor and its time.
            for attempt in transaction_attempts():
                with attempt, self.kernel.engine.begin() as conn, \
                        audit_context(**factor_context(self.actor)):
                    self.pending.clear()
                    result = body(conn)
                    for events in self.pending:
                        self.kernel.audit_log.append(conn, events)
        except SQLAlchemyError as exc:
            transaction_failed(exc)
        return result

    def record(self, events: Sequence[AuditEvent]) -> None:
        """Audit ``events`` (one batch) with the transaction :meth:`run` is in."""
        self.pending.append(events)

    def refuse(
        self,
        exc: VaultError,
        *,
        fields: Sequence[str] = (),
        record_ids: Sequence[str] = (),
        subjects: Sequence[str] = (),
        decision: Decision = Decision.DENY,
    ) -> NoReturn:
        """Audit a refusal in its own transaction, then raise ``exc``.

        A refusal that names records is attributed to their subjects too, so
        that a subject's access report lists denied attempts on its data.
        """
        actor = self.actor
        if record_ids and not subjects and self.collection is not None:
            subjects = self._pseudonyms_of(record_ids[:NAMED_LIMIT])
        self.kernel.audit_log.write([AuditEvent(
            tenant=actor.tenant, actor=actor.id, action=self.action, decision=decision,
            collection=self.collection, record_ids=tuple(record_ids), subjects=tuple(subjects),
            fields=tuple(fields), purpose=self.purpose,
            reason=getattr(exc, "reason", None) or exc.code, context=factor_context(actor),
        )])
        raise exc

    def _pseudonyms_of(self, record_ids: Sequence[str]) -> tuple[str, ...]:
        tenant = self.actor.tenant
        try:
            with self.kernel.read_only() as conn:
                found = conn.execute(
                    select(RECORDS.c.subject_id).where(
                        RECORDS.c.tenant == tenant, RECORDS.c.collection == self.collection,
                        RECORDS.c.id.in_([r for r in record_ids if isinstance(r, str)]))
                ).scalars().all()
        except SQLAlchemyError:
            return ()
        return tuple(sorted({self.kernel.pseudonym(tenant, sid) for sid in found}))
