"""``v.keys``: key status, KEK rotation and retirement, and crypto-shredding.

Each action is audited on the administrative chain (crypto-shredding on the
subject's own chain). When an ``actor`` is given the policy decides whether it
may act; when it is omitted, the caller is the local operator (``system``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select

from vault._kernel import Kernel
from vault.audit.chain import Decision
from vault.errors import InvalidData, LegalHoldActive, ShreddingIncomplete, VaultError
from vault.retention.holdrules import ensure_not_held
from vault.store.tables import BLIND_INDEX, RECORDS
from vault.types import Actor, check_identifier, check_tenant

__all__ = ["KeyService", "KeyStatus", "Progress", "RotationResult"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """Key-encryption-key versions and how many data keys each protects."""

    current_version: int
    versions: tuple[int, ...]
    data_keys_by_version: dict[int, int]


@dataclass(frozen=True, slots=True)
class RotationResult:
    new_version: int
    rewrapped: int


class KeyService:
    """Key status, KEK rotation and retirement, and crypto-shredding."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel

    def status(self) -> KeyStatus:
        provider = self._k.provider
        return KeyStatus(
            current_version=provider.current_kek_version(),
            versions=tuple(provider.kek_versions()),
            data_keys_by_version=self._k.keystore.count_by_kek_version(),
        )

    def rotate(
        self, *, actor: Actor | None = None, progress: Progress | None = None,
        resume: bool = False,
    ) -> RotationResult:
        """Create a new KEK version and rewrap every data key under it.

        Data rows are not touched. Rewrapping commits in batches, so after a
        crash ``rotate(resume=True)`` finishes the job without a new version.
        """
        self._k.authorise(actor, "keys", "keys.rotate", tenant="*")
        provider = self._k.provider
        version = provider.current_kek_version() if resume else provider.rotate()
        if not resume:
            self._k.audit("keys.rotate", actor=actor, reason=f"kek:{version}")
        count = self._k.keystore.rewrap(progress=progress)
        self._k.audit("keys.rewrap", actor=actor,
                                 reason=f"kek:{version}:rewrapped:{count}")
        return RotationResult(new_version=version, rewrapped=count)

    def retire(self, version: int, *, actor: Actor | None = None) -> None:
        """Delete KEK ``version`` for good.

        Raises:
            KeyManagementError: it is current, unknown, or data keys still use it.
        """
        if isinstance(version, bool) or not isinstance(version, int) or not (
                1 <= version < 2**31):
            raise InvalidData("version must be a KEK version number", field="version")
        self._k.authorise(actor, "keys", "keys.rotate", tenant="*")
        try:
            self._k.keystore.retire(version)
        except VaultError as exc:
            self._k.audit("keys.retire", actor=actor, decision=Decision.DENY,
                                     reason=exc.code)
            raise
        self._k.audit("keys.retire", actor=actor, reason=f"kek:{version}")

    def destroy(self, subject_id: str, *, tenant: str, actor: Actor | None = None,
                purpose: str = "dsar_fulfilment") -> None:
        """Crypto-shred a data subject: destroy its data key.

        Every field of every record of the subject becomes unreadable, in this
        database and in every backup of it, because the key store (a separate
        database) no longer holds the key. Blind-index entries of the subject
        are removed too. Reads afterwards raise :class:`~vault.errors.KeyDestroyed`.

        Raises:
            LegalHoldActive: a legal hold applies to the subject or its tenant
                (audited; nothing is destroyed).
            ShreddingIncomplete: on SQLite, the key is destroyed and the index
                entries removed, but the key store's WAL could not be emptied, so
                the old wrapped key may remain in ``keys.db-wal`` until the next
                checkpoint (audited with decision ERROR).

        Misuse: this cannot be undone. Keep the key store's own backups short-lived,
        or a restored key store would bring the key back.
        """
        check_identifier(subject_id, "subject_id")
        check_tenant(tenant)
        self._k.authorise(actor, "keys", "keys.destroy", tenant=tenant)
        pseudonym = self._k.pseudonym(tenant, subject_id)
        incomplete: ShreddingIncomplete | None = None
        try:
            self._destroy_unless_held(tenant, subject_id, actor=actor, purpose=purpose)
        except ShreddingIncomplete as exc:
            incomplete = exc  # the key is destroyed: finish the erasure, audit an error
        # The index entries (linkable tokens) go, and the audit entry is written,
        # in one transaction.
        with self._k.engine.begin() as conn:
            ids = select(RECORDS.c.id).where(RECORDS.c.tenant == tenant,
                                             RECORDS.c.subject_id == subject_id)
            conn.execute(delete(BLIND_INDEX).where(BLIND_INDEX.c.record_id.in_(ids)))
            self._k.audit_log.append(conn, [self._k.event(
                "keys.destroy", actor=actor, tenant=tenant, subjects=(pseudonym,),
                purpose=purpose,
                decision=Decision.ALLOW if incomplete is None else Decision.ERROR,
                reason=None if incomplete is None else incomplete.code)])
        if incomplete is not None:
            raise incomplete

    def _destroy_unless_held(self, tenant: str, subject_id: str, *, actor: Actor | None,
                             purpose: str) -> None:
        """Destroy the key inside a data-database transaction that checked (and, on
        PostgreSQL, locked) the legal holds, so a hold placed meanwhile waits."""
        try:
            with self._k.engine.begin() as conn:
                ensure_not_held(conn, tenant, subject_id, self._k.clock.now())
                self._k.keystore.destroy(tenant, subject_id)
        except LegalHoldActive as exc:
            self._k.audit("keys.destroy", actor=actor, tenant=tenant,
                                     decision=Decision.DENY, reason=exc.code,
                                     subjects=(self._k.pseudonym(tenant, subject_id),),
                                     purpose=purpose)
            raise
