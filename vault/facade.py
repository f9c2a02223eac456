"""The :class:`Vault` facade: the one object a CRM service talks to.

It does two things: bootstrap (``init``, ``open``, ``upgrade`` build the
package-private kernel, :mod:`vault._kernel`) and composition: it builds each
service on the kernel, wires the hooks through which one service's writes
reach another's state (the data path, the consent ledger and subject changes
tell retention), and delegates its data methods to the record service
(:mod:`vault.records`). The layers are drawn in the README ("How it is built").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Self, TypeVar, overload

from vault._kernel import Kernel, bootstrap
from vault.admin import AuditService, KeyService, PolicyService, RoleService
from vault.clock import Clock
from vault.config import VaultSettings
from vault.consent.service import ConsentService
from vault.dsar import DSARService, FulfilServices
from vault.errors import InvalidData
from vault.identity import IdentityService
from vault.records import RecordService
from vault.retention.holds import HoldService
from vault.retention.service import RetentionService
from vault.store.engine import is_sqlite
from vault.subjects import SubjectService
from vault.types import Actor, Record

__all__ = ["Vault"]

T = TypeVar("T")


class _Part(Generic[T]):
    """A read-only attribute of :class:`Vault` taken from its kernel."""

    def __init__(self, get: Callable[[Kernel], T]) -> None:
        self._get = get

    @overload
    def __get__(self, vault: None, owner: type[Vault]) -> Self: ...
    @overload
    def __get__(self, vault: Vault, owner: type[Vault] | None = None) -> T: ...
    def __get__(self, vault: Vault | None, owner: type[Vault] | None = None) -> T | Self:
        return self if vault is None else self._get(vault._kernel)

    def __set__(self, vault: Vault, value: object) -> None:
        raise AttributeError("the parts of an open vault cannot be replaced")

PathLike = str | os.PathLike[str]


class Vault:
    """Encrypted, access-controlled, audited storage of customer PII.

    Build it with :meth:`open` (or :meth:`init` the first time); use it as a
    context manager so engines are disposed. Every data method takes the
    :class:`~vault.types.Actor` asking and the ``purpose`` of use.

    Attributes:
        roles: assign and revoke roles (:class:`~vault.admin.RoleService`).
        keys: key status, rotation, retirement, crypto-shredding.
        audit: verify the audit log, checkpoints, reports.
        policy: check decisions and change rules.
        consent: the consent ledger, receipts, GPC, reports
            (:class:`~vault.consent.service.ConsentService`).
        subjects: a subject's jurisdiction and restriction
            (:class:`~vault.subjects.SubjectService`).
        retention: retention schedule, expiry events, plans, sweeps, reports.
        holds: legal holds (place, lift, list).
        identity: API keys, TOTP enrolments, the codes used
            (:class:`~vault.identity.IdentityService`).
        dsar: data-subject requests (:class:`~vault.dsar.DSARService`).
    """

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self.settings = kernel.settings
        self.retention = RetentionService(kernel)
        self.holds = HoldService(kernel)
        self.roles = RoleService(kernel)
        self.keys = KeyService(kernel)
        self.audit = AuditService(kernel)
        self.policy = PolicyService(kernel)
        self.identity = IdentityService(kernel)
        # Retention keeps every record's expiry in step with the writes of the others.
        self.consent = ConsentService(kernel, hooks=self.retention)
        self.subjects = SubjectService(kernel, hooks=self.retention)
        self._records = RecordService(kernel, hooks=self.retention)
        self.dsar = DSARService(kernel, services=FulfilServices(
            records=self._records, keys=self.keys, consent=self.consent,
            subjects=self.subjects, holds=self.holds))

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def init(
        cls,
        home: PathLike | None = None,
        *,
        database_url: str | None = None,
        keystore_url: str | None = None,
        key_file: PathLike | None = None,
        key_provider: str | None = None,
        policies: PathLike | None = None,
        audit_chains: int | None = None,
        settings: VaultSettings | None = None,
        clock: Clock | None = None,
        first_admin: Actor | None = None,
    ) -> Vault:
        """Create what :meth:`open` needs: the KEK (a key file, or in the HSM or KMS
        ``key_provider`` names), key store, schema, default policy.

        ``first_admin``: the person who sets the vault up (``vault init`` passes its
        operator) gets the ``admin`` role in its tenant, audited as ``roles.assign``,
        so the new vault can be administered by a named actor rather than only by
        whoever holds the key file.

        Raises:
            ConfigError: if the vault is already initialised or settings are wrong.
            InvalidData: ``first_admin`` is not an Actor (nothing is created).
            KeyManagementError: the key provider refuses (KeyProviderUnavailable
                when it cannot be reached).
        """
        if first_admin is not None and not isinstance(first_admin, Actor):
            raise InvalidData("first_admin must be a vault.Actor", field="first_admin")
        cfg = bootstrap.settings_of(home, settings, database_url=database_url,
                                       keystore_url=keystore_url, key_file=key_file,
                                       key_provider=key_provider,
                                       policies=policies, audit_chains=audit_chains)
        vault = cls(bootstrap.init(cfg, clock))
        if first_admin is not None:
            vault.roles.assign(first_admin.id, "admin", tenant=first_admin.tenant)
        return vault

    @classmethod
    def upgrade(
        cls, home: PathLike | None = None, *, database_url: str | None = None,
        keystore_url: str | None = None, key_file: PathLike | None = None,
        key_provider: str | None = None, policies: PathLike | None = None,
        settings: VaultSettings | None = None,
        clock: Clock | None = None,
    ) -> Vault:
        """Migrate an initialised vault's data database to the newest schema, give
        records written before retention existed their expiry, and open it.

        Idempotent: on a vault already at the newest schema it only opens it. The
        upgrade is audited (``vault.upgrade``, with the revisions and the count).

        Raises:
            ConfigError: the vault was never initialised or cannot be reached.
            KeyManagementError: the key file is missing or unsafe.
        """
        cfg = bootstrap.settings_of(home, settings, database_url=database_url,
                                       keystore_url=keystore_url, key_file=key_file,
                                       key_provider=key_provider, policies=policies)
        return cls(bootstrap.upgrade(cfg, clock))

    @classmethod
    def open(
        cls, home: PathLike | None = None, *, database_url: str | None = None,
        keystore_url: str | None = None, key_file: PathLike | None = None,
        key_provider: str | None = None, policies: PathLike | None = None,
        settings: VaultSettings | None = None,
        clock: Clock | None = None,
    ) -> Vault:
        """Open an initialised vault.

        A configuration (settings, policies files) different from the one the
        vault was last opened with is recorded and audited as ``config.change``
        (see :mod:`vault.audit.config`). ``clock``: every time the vault reads
        (audit entries, retention, consent expiry, deadlines) comes from it.

        Raises:
            ConfigError: if it was never initialised or needs migrating.
            KeyManagementError: if the key file is missing or unsafe, or the HSM or
                KMS refuses (KeyProviderUnavailable: token missing, wrong PIN,
                endpoint down; the failed attempt is audited when the data
                database can be reached).
            AuditError: a configuration change could not be recorded (fail closed).
        """
        cfg = bootstrap.settings_of(home, settings, database_url=database_url,
                                       keystore_url=keystore_url, key_file=key_file,
                                       key_provider=key_provider, policies=policies)
        return cls(bootstrap.open_kernel(cfg, clock))

    def close(self) -> None:
        """Dispose of database connections and forget cached data keys."""
        self._kernel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Vault(home={str(self.settings.home)!r})"

    # ------------------------------------------------------------------ writes

    def put(
        self,
        actor: Actor,
        collection: str,
        data: Mapping[str, Any],
        *,
        purpose: str,
        subject_id: str | None = None,
        jurisdiction: str | None = None,
        source: str | None = None,
    ) -> str:
        """Store a new record; every field encrypted under the subject's data key.

        Args:
            actor: who writes.
            collection: a collection declared in ``policies/collections``.
            data: field values; unknown fields are refused (data minimisation).
            purpose: the purpose of use, from the purpose registry.
            subject_id: the data subject; a new one (with a new data key) is
                created when None or when the id is not yet known.
            jurisdiction: the subject's regime (e.g. ``EU``, ``US-CA``, ``CN``),
                recorded when the subject is created. For a subject that already
                exists it must be None or the one recorded (a different one is
                refused: change it with ``subjects.set_jurisdiction``, audited).

        Returns:
            The new record's id.

        Raises:
            InvalidData: bad input, or a jurisdiction other than the one an existing
                subject has (nothing written; audited).
            AccessDenied: the actor may not write one of the fields (audited).
            KeyDestroyed: the subject was crypto-shredded.
            AuditError: the write and its audit entry could not be committed.
        """
        return self._records.put_many(actor, collection, [data], purpose=purpose,
                                      subject_ids=[subject_id], jurisdiction=jurisdiction,
                                      source=source)[0]

    def put_many(
        self,
        actor: Actor,
        collection: str,
        items: Sequence[Mapping[str, Any]],
        *,
        purpose: str,
        subject_ids: Sequence[str | None] | None = None,
        jurisdiction: str | None = None,
        source: str | None = None,
    ) -> list[str]:
        """Store many records in one transaction with one audit entry per chain touched.

        Same rules as :meth:`put`; ``subject_ids`` (if given) pairs each item with a
        subject. Either every record is stored or none is.

        Returns:
            The new record ids, in the order of ``items``.
        """
        return self._records.put_many(actor, collection, items, purpose=purpose,
                                      subject_ids=subject_ids, jurisdiction=jurisdiction,
                                      source=source)

    def update(
        self,
        actor: Actor,
        collection: str,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        purpose: str,
        if_version: int | None = None,
    ) -> None:
        """Change some fields of a record; a value of None removes an optional field.

        ``if_version``: change it only if it is still at this version
        (``Record.version`` of an earlier read), else raise VersionConflict.

        Raises:
            InvalidData, AccessDenied, NotFound, KeyDestroyed, VersionConflict, AuditError.
        """
        self._records.update(actor, collection, record_id, changes, purpose=purpose,
                             if_version=if_version)

    def delete(self, actor: Actor, collection: str, record_id: str, *, purpose: str,
               if_version: int | None = None) -> None:
        """Delete a record and its blind-index entries.

        The actor needs ``delete`` on every field of the collection. ``if_version``
        as in :meth:`update`.

        Raises:
            LegalHoldActive: a legal hold applies to the record's subject (audited).
            VersionConflict: the record is not at ``if_version`` (audited).
        """
        self._records.delete(actor, collection, record_id, purpose=purpose,
                             if_version=if_version)

    # ------------------------------------------------------------------ reads

    def get(
        self,
        actor: Actor,
        collection: str,
        record_id: str,
        *,
        purpose: str,
        fields: Sequence[str] | None = None,
    ) -> Record:
        """Read one record as ``actor`` may see it for ``purpose``.

        Fields the actor may read come in clear, fields it may only read masked
        come masked (and are listed in ``Record.masked``), the rest are absent
        (listed in ``Record.withheld``). The audit entry is committed before the
        record is returned; if it cannot be, nothing is returned.

        Raises:
            AccessDenied: no requested field may be read (audited).
            NotFound, KeyDestroyed, DecryptionError, AuditError.
        """
        return self._records.get_many(actor, collection, [record_id], purpose=purpose,
                                      fields=fields)[0]

    def get_many(
        self,
        actor: Actor,
        collection: str,
        record_ids: Sequence[str],
        *,
        purpose: str,
        fields: Sequence[str] | None = None,
    ) -> list[Record]:
        """Read many records in one transaction, with one audit entry per chain touched.

        Returns:
            Records in the order of ``record_ids``.

        Raises:
            NotFound: if any id is unknown (nothing is returned).
        """
        return self._records.get_many(actor, collection, record_ids, purpose=purpose,
                                      fields=fields)

    def find(self, actor: Actor, collection: str, *, purpose: str, **equals: Any) -> list[Record]:
        """Find records whose searchable fields equal the given values.

        Matching uses blind indexes (keyed HMACs of normalised values): the
        store never decrypts the collection to search it. The actor needs
        ``search`` on each field used and ``read``/``read_masked`` to see results.

        Raises:
            InvalidData: no criteria, a field that is not searchable, a malformed value.
            AccessDenied: search not permitted on a field (audited).
        """
        return self._records.find(actor, collection, purpose=purpose, **equals)

    def subject_records(self, tenant: str, subject_id: str, *,
                        actor: Actor | None = None) -> list[str]:
        """Ids of every record of a subject, oldest first (ids only, no data).

        Authorised (``dsar.process`` when ``actor`` is given) and audited
        (``subjects.records``).
        """
        return self._records.subject_records(tenant, subject_id, actor=actor)

    # ------------------------------------------------------------------ what it is made of

    def pseudonym(self, tenant: str, subject_id: str) -> str:
        """The keyed pseudonym under which the audit log knows this subject."""
        return self._kernel.pseudonym(tenant, subject_id)

    schemas = _Part(lambda k: k.rules.schemas)
    purposes = _Part(lambda k: k.rules.purposes)
    jurisdictions = _Part(lambda k: k.rules.jurisdictions)
    notices = _Part(lambda k: k.rules.notices)
    engine = _Part(lambda k: k.engine)
    keystore = _Part(lambda k: k.keystore)
    policy_engine = _Part(lambda k: k.policy)
    audit_log = _Part(lambda k: k.audit_log)
    #: This vault's id (named in signed audit checkpoints).
    vault_id = _Part(lambda k: k.vault_id)
    clock = _Part(lambda k: k.clock)

    @property
    def is_embedded(self) -> bool:
        return is_sqlite(self._kernel.engine)
