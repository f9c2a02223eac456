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
from vault.audit.erasures import Resurrection, find_resurrections
from vault.crypto.chain import ProviderChain
from vault.crypto.keys import KeyProvider, LocalKeyProvider
from vault.crypto.providers import open_provider, parse_provider_uri
from vault.errors import (
    ConfigError,
    InvalidData,
    KeyManagementError,
    LegalHoldActive,
    ShreddingIncomplete,
    VaultError,
)
from vault.retention.holdrules import ensure_not_held
from vault.store.erasures import mark_erased
from vault.store.tables import BLIND_INDEX, RECORDS
from vault.types import Actor, check_identifier, check_tenant

__all__ = ["KeyService", "KeyStatus", "MigrationResult", "Progress", "ProviderInfo",
           "Resurrection", "RotationResult"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """A key provider the vault uses: its kind, URI (no secret) and KEK versions."""

    kind: str
    uri: str
    versions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """Key-encryption-key versions and how many data keys each protects.

    ``provider`` is the kind of the provider that wraps new keys (``file``,
    ``pkcs11``, ``aws-kms``); ``providers`` lists every provider in use (more
    than one during and after a migration, until the old versions are retired).
    """

    current_version: int
    versions: tuple[int, ...]
    data_keys_by_version: dict[int, int]
    provider: str = "file"
    providers: tuple[ProviderInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """Where the keys went: the new provider's URI, its current KEK version, and
    how many data keys were rewrapped by this call."""

    uri: str
    kind: str
    new_version: int
    rewrapped: int


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
        members = provider.providers() if isinstance(provider, ProviderChain) else [provider]
        return KeyStatus(
            current_version=provider.current_kek_version(),
            versions=tuple(provider.kek_versions()),
            data_keys_by_version=self._k.keystore.count_by_kek_version(),
            provider=provider.kind,
            providers=tuple(ProviderInfo(kind=p.kind, uri=p.describe(),
                                         versions=tuple(p.kek_versions())) for p in members),
        )

    def migrate(self, to: str, *, actor: Actor | None = None,
                progress: Progress | None = None, batch_size: int = 500) -> MigrationResult:
        """Move every data key (and the root keys) to another key provider, online.

        ``to`` is a ``key_provider`` URI (a key file path, ``pkcs11:...``,
        ``aws-kms:...``). Its KEK is created there (or the one the URI names is
        used) with a version above every version the vault has, and recorded in
        the key store, so every process, configured with the old provider or the
        new one, unwraps keys of both sides and wraps new keys under the new one.
        Data keys are then rewrapped in committed batches; data rows are not
        touched. After a crash, the same call finishes the job. Afterwards set
        ``key_provider`` to ``to`` and retire the old KEK versions. Audited
        (``keys.migrate``, at the start and at the end).

        Raises:
            ConfigError: ``to`` is not a provider URI, or is the configured one.
            KeyManagementError: the new provider refuses or cannot be reached
                (audited as an error); nothing is lost, the call can be repeated.
        """
        self._k.authorise(actor, "keys", "keys.rotate", tenant="*", step_up="keys")
        chain = self._k.provider
        if not isinstance(chain, ProviderChain):
            raise KeyManagementError("this vault's provider cannot migrate")
        spec = parse_provider_uri(to)
        first = max(chain.kek_versions(), default=0) + 1
        try:
            target = self._target(to, first)
        except KeyManagementError as exc:
            self._k.audit("keys.migrate", actor=actor, decision=Decision.ERROR,
                          reason=f"to:{spec.kind}:{exc.code}")
            raise
        if target.describe() == chain.configured.describe():
            raise ConfigError("the vault is configured with that provider already")
        self._k.audit("keys.migrate", actor=actor,
                      reason=f"to:{target.kind}:kek:{target.current_kek_version()}")
        try:
            count = self._k.keystore.migrate(target, root_keys=self._k.root_keys,
                                             progress=progress, batch_size=batch_size)
        except KeyManagementError as exc:
            self._k.audit("keys.migrate", actor=actor, decision=Decision.ERROR,
                          reason=f"to:{target.kind}:{exc.code}")
            raise
        version = target.current_kek_version()
        self._k.audit("keys.migrate", actor=actor,
                      reason=f"done:{target.kind}:kek:{version}:rewrapped:{count}")
        return MigrationResult(uri=target.describe(), kind=target.kind, new_version=version,
                               rewrapped=count)

    def _target(self, uri: str, first: int) -> KeyProvider:
        """The migration's new provider: created with KEK version ``first``, or
        opened as it is (a migration resumed)."""
        cfg = self._k.settings
        spec = parse_provider_uri(uri)
        if spec.is_file:
            if spec.path is None:
                raise ConfigError("migrating to a key file needs its path (file:/path)")
            if spec.path.exists():
                return LocalKeyProvider.load(spec.path)  # a migration resumed
            return LocalKeyProvider.create(spec.path, first_version=first,
                                           root_keys=self._k.root_keys)
        return open_provider(spec, key_file=cfg.resolved_key_file, create=True,
                             first_version=first, pin=cfg.pkcs11_pin_value())

    def rotate(
        self, *, actor: Actor | None = None, progress: Progress | None = None,
        resume: bool = False,
    ) -> RotationResult:
        """Create a new KEK version and rewrap every data key under it.

        Data rows are not touched. Rewrapping commits in batches, so after a
        crash ``rotate(resume=True)`` finishes the job without a new version.

        An ``actor`` needs ``keys.rotate`` in its own tenant (the administrator
        role has it in every tenant) and, by default, a second factor. Rotation
        loses nothing (every data key stays readable), so a tenant's administrator
        may start it; retiring and migrating keys, which concern every tenant,
        stay with an actor of tenant ``*`` or the local operator.

        Raises:
            AccessDenied: ``actor`` may not rotate keys (audited).
            StepUpRequired: ``actor`` has proved no second factor (audited).
        """
        self._k.authorise(actor, "keys", "keys.rotate", step_up="keys")
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
        self._k.authorise(actor, "keys", "keys.rotate", tenant="*", step_up="keys")
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

        Misuse: this cannot be undone. A restored older copy of the key store brings
        the wrapped key back; the data path still refuses the subject (its erasure
        marker is in the data database), and :meth:`check_erasures` (and
        ``audit.verify``) name it. Keep the key store's own backups short-lived.
        """
        check_identifier(subject_id, "subject_id")
        check_tenant(tenant)
        self._k.authorise(actor, "keys", "keys.destroy", tenant=tenant, step_up="erase")
        pseudonym = self._k.pseudonym(tenant, subject_id)
        incomplete: ShreddingIncomplete | None = None
        try:
            self._destroy_unless_held(tenant, subject_id, actor=actor, purpose=purpose)
        except ShreddingIncomplete as exc:
            incomplete = exc  # the key is destroyed: finish the erasure, audit an error
        # The index entries (linkable tokens) go, the erasure marker (which a
        # restored key store cannot undo) is written, and so is the audit entry,
        # in one transaction.
        with self._k.engine.begin() as conn:
            ids = select(RECORDS.c.id).where(RECORDS.c.tenant == tenant,
                                             RECORDS.c.subject_id == subject_id)
            conn.execute(delete(BLIND_INDEX).where(BLIND_INDEX.c.record_id.in_(ids)))
            mark_erased(conn, tenant, {subject_id: pseudonym}, action="keys.destroy",
                        now=self._k.clock.now())
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

    def check_erasures(self, *, actor: Actor | None = None,
                       repair: bool = False) -> list[Resurrection]:
        """Subjects the audit log says were crypto-shredded (``keys.destroy``,
        ``retention.shred``) whose data key is live in the key store again, as after
        a restore of an older copy of the key store. Audited (``keys.check_erasures``).

        The log is the authority: a subject is found even when its erasure marker
        was deleted too (``marked`` False). The data path refuses a marked subject
        whatever the key store holds.

        ``repair``: destroy those keys again (tombstones) and write the missing
        markers, audited with the subjects' pseudonyms.

        Returns:
            What was found (before any repair), oldest destruction first.

        Raises:
            AccessDenied: ``actor`` may not destroy keys (``keys.destroy``).
            KeyManagementError: the key store cannot be reached.
            ShreddingIncomplete: on SQLite, the repaired keys are destroyed but the
                key store's WAL could not be emptied (audited as an error).
        """
        if not isinstance(repair, bool):
            raise InvalidData("repair must be True or False", field="repair")
        self._k.authorise(actor, "keys", "keys.destroy", tenant="*",
                          step_up="erase" if repair else None)
        with self._k.read_only() as conn:
            found = find_resurrections(conn, self._k.keystore.live_subjects,
                                       self._k.pseudonym)
        reason = f"resurrected:{len(found)}"
        if not repair or not found:
            self._k.audit("keys.check_erasures", actor=actor, reason=reason,
                          subjects=tuple(dict.fromkeys(r.pseudonym for r in found)))
            return found
        by_tenant: dict[str, list[Resurrection]] = {}
        for r in found:
            by_tenant.setdefault(r.tenant, []).append(r)
        incomplete: ShreddingIncomplete | None = None
        for tenant, items in sorted(by_tenant.items()):
            try:
                self._k.keystore.destroy_many(tenant, [r.subject_id for r in items])
            except ShreddingIncomplete as exc:
                incomplete = exc  # the keys are destroyed: mark and audit an error
        with self._k.engine.begin() as conn:
            now = self._k.clock.now()
            for tenant, items in sorted(by_tenant.items()):
                mark_erased(conn, tenant, {r.subject_id: r.pseudonym for r in items},
                            action=items[0].action or "keys.destroy", now=now)
            self._k.audit_log.append(conn, [self._k.event(
                "keys.check_erasures", actor=actor,
                subjects=tuple(dict.fromkeys(r.pseudonym for r in found)),
                decision=Decision.ALLOW if incomplete is None else Decision.ERROR,
                reason=f"{reason}:repaired" if incomplete is None else incomplete.code)])
        if incomplete is not None:
            raise incomplete
        return found
