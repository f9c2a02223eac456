"""Administrative services reached from the facade: roles, keys, audit, policy.

Each is audited on the administrative chain (crypto-shredding on the
subject's own chain). When an ``actor`` is given the policy decides whether
it may act; when it is omitted, the caller is the local operator who holds
the key file, recorded as ``system``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization

from vault.audit.chain import Decision, VerifyReport
from vault.audit.checkpoint import (
    has_checkpoints,
    key_fingerprint,
    load_public_key,
    write_checkpoint,
)
from vault.audit.report import (
    AuditReport,
    ReportFilters,
    ReportThresholds,
    ReportView,
)
from vault.audit.report import report as build_report
from vault.errors import (
    AccessDenied,
    AuditError,
    ConfigError,
    InvalidData,
    LegalHoldActive,
    VaultError,
)
from vault.types import Actor, check_identifier

if TYPE_CHECKING:
    from vault.facade import Vault

__all__ = [
    "AuditService",
    "KeyService",
    "KeyStatus",
    "PolicyService",
    "RoleAssignment",
    "RoleService",
    "RotationResult",
]

Progress = Callable[[int, int], None]
ADMIN_PURPOSE = "security"


@dataclass(frozen=True, slots=True)
class RoleAssignment:
    user: str
    role: str
    tenant: str


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


class _Service:
    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    def _authorise(self, actor: Actor | None, obj: str, action: str, *, tenant: str) -> None:
        if actor is None:
            return
        if not isinstance(actor, Actor):
            raise InvalidData("actor must be a vault.Actor", field="actor")
        allowed = actor.tenant in (tenant, "*") and self._vault.policy_engine.is_allowed(
            actor.id, actor.tenant, obj, action, ADMIN_PURPOSE
        )
        if not allowed:
            self._vault._audit_admin(action, actor=actor, decision=Decision.DENY,
                                     reason="access_denied", purpose=ADMIN_PURPOSE)
            raise AccessDenied(f"{action} denied")


class RoleService(_Service):
    """Assign, revoke and list roles per tenant (Casbin grouping rules)."""

    def assign(self, user: str, role: str, *, tenant: str, actor: Actor | None = None) -> bool:
        """Give ``user`` the ``role`` in ``tenant``.

        Returns:
            False if the user already had the role.

        Raises:
            UnknownRole: the policy defines no such role.
            AccessDenied: ``actor`` may not administer the policy.
        """
        check_identifier(user, "user")
        self._authorise(actor, "policy", "policy.admin", tenant=tenant)
        changed = self._vault.policy_engine.assign_role(user, role, tenant=tenant)
        self._vault._audit_admin("roles.assign", actor=actor, tenant=tenant,
                                 reason=f"{role}:{user}" if changed else f"unchanged:{role}:{user}")
        return changed

    def revoke(self, user: str, role: str, *, tenant: str, actor: Actor | None = None) -> bool:
        """Take ``role`` in ``tenant`` away from ``user``; False if it was not held."""
        check_identifier(user, "user")
        self._authorise(actor, "policy", "policy.admin", tenant=tenant)
        changed = self._vault.policy_engine.revoke_role(user, role, tenant=tenant)
        self._vault._audit_admin("roles.revoke", actor=actor, tenant=tenant,
                                 reason=f"{role}:{user}" if changed else f"unchanged:{role}:{user}")
        return changed

    def list(self, *, tenant: str | None = None, user: str | None = None) -> list[RoleAssignment]:
        """Role assignments, optionally of one tenant or one user."""
        return [
            RoleAssignment(u, r, t)
            for u, r, t in self._vault.policy_engine.list_assignments(tenant=tenant)
            if user is None or u == user
        ]

    def known(self) -> frozenset[str]:
        """Names of the roles the policy defines."""
        return self._vault.policy_engine.known_roles()


class KeyService(_Service):
    """Key status, KEK rotation and retirement, and crypto-shredding."""

    def status(self) -> KeyStatus:
        provider = self._vault._provider
        return KeyStatus(
            current_version=provider.current_kek_version(),
            versions=tuple(provider.kek_versions()),
            data_keys_by_version=self._vault.keystore.count_by_kek_version(),
        )

    def rotate(
        self, *, actor: Actor | None = None, progress: Progress | None = None,
        resume: bool = False,
    ) -> RotationResult:
        """Create a new KEK version and rewrap every data key under it.

        Data rows are not touched. Rewrapping commits in batches, so after a
        crash ``rotate(resume=True)`` finishes the job without a new version.
        """
        self._authorise(actor, "keys", "keys.rotate", tenant="*")
        provider = self._vault._provider
        version = provider.current_kek_version() if resume else provider.rotate()
        if not resume:
            self._vault._audit_admin("keys.rotate", actor=actor, reason=f"kek:{version}")
        count = self._vault.keystore.rewrap(progress=progress)
        self._vault._audit_admin("keys.rewrap", actor=actor,
                                 reason=f"kek:{version}:rewrapped:{count}")
        return RotationResult(new_version=version, rewrapped=count)

    def retire(self, version: int, *, actor: Actor | None = None) -> None:
        """Delete KEK ``version`` for good.

        Raises:
            KeyManagementError: it is current, unknown, or data keys still use it.
        """
        self._authorise(actor, "keys", "keys.rotate", tenant="*")
        try:
            self._vault.keystore.retire(version)
        except VaultError as exc:
            self._vault._audit_admin("keys.retire", actor=actor, decision=Decision.DENY,
                                     reason=exc.code)
            raise
        self._vault._audit_admin("keys.retire", actor=actor, reason=f"kek:{version}")

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

        Misuse: this cannot be undone. Keep the key store's own backups short-lived,
        or a restored key store would bring the key back.
        """
        check_identifier(subject_id, "subject_id")
        self._authorise(actor, "keys", "keys.destroy", tenant=tenant)
        pseudonym = self._vault.pseudonym(tenant, subject_id)
        self._destroy_unless_held(tenant, subject_id, actor=actor, purpose=purpose)
        # The index entries go, and the audit entry is written, in one transaction.
        self._vault._forget_index(tenant, subject_id, audit=self._vault._admin_event(
            "keys.destroy", actor=actor, tenant=tenant, subjects=(pseudonym,), purpose=purpose))

    def _destroy_unless_held(self, tenant: str, subject_id: str, *, actor: Actor | None,
                             purpose: str) -> None:
        """Destroy the key inside a data-database transaction that checked (and, on
        PostgreSQL, locked) the legal holds, so a hold placed meanwhile waits."""
        from vault.retention.holds import ensure_not_held

        try:
            with self._vault.engine.begin() as conn:
                ensure_not_held(conn, tenant, subject_id, self._vault.clock.now())
                self._vault.keystore.destroy(tenant, subject_id)
        except LegalHoldActive as exc:
            self._vault._audit_admin("keys.destroy", actor=actor, tenant=tenant,
                                     decision=Decision.DENY, reason=exc.code,
                                     subjects=(self._vault.pseudonym(tenant, subject_id),),
                                     purpose=purpose)
            raise


class AuditService(_Service):
    """Verification, signed checkpoints and the checkpoint public key."""

    def verify(
        self,
        *,
        actor: Actor | None = None,
        progress: Progress | None = None,
        checkpoints: str | os.PathLike[str] | None = None,
        public_key: bytes | str | os.PathLike[str] | None = None,
        workers: int | None = None,
    ) -> VerifyReport:
        """Recompute every chain and compare it with the recorded heads and,
        with ``checkpoints`` (a folder), with every signed checkpoint in it.

        ``workers``: processes that walk the chains at once (1: this process;
        None: one per core for a large log, see :mod:`vault.audit.parallel`).

        ``public_key`` (PEM bytes, a PEM file, or PEM text) defaults to this
        vault's own key; an auditor passes the published one. Reading the log
        is itself audited (``audit.verify``, after the walk).

        Returns:
            A :class:`~vault.audit.chain.VerifyReport`; ``ok`` is False and
            ``reason``/``findings`` name the kind and place of any damage.

        Raises:
            ConfigError: the public key or the checkpoint folder cannot be read.
            AccessDenied: ``actor`` may not read the audit trail.
        """
        self._authorise(actor, "audit", "audit.read", tenant=actor.tenant if actor else "*")
        key = (load_public_key(_pem_source(public_key)) if public_key is not None
               else self._vault._provider.signing_key().public_key())
        report = self._vault.audit_log.verify(
            progress=progress, checkpoints=Path(checkpoints) if checkpoints else None,
            public_key=key, vault_id=self._vault.vault_id, workers=workers)
        self._vault._audit_admin(
            "audit.verify", actor=actor, decision=Decision.ALLOW,
            reason=(f"ok:checkpoints:{report.checkpoints}" if report.ok
                    else f"damage:{report.reason}"),
        )
        return report

    def checkpoint(self, out_dir: str | os.PathLike[str], *, actor: Actor | None = None) -> Path:
        """Verify the log (and the checkpoints already in ``out_dir``), then write a
        signed checkpoint of every chain's head and length to ``out_dir``.

        ``out_dir`` should be outside the database's reach (another disk, a
        write-once bucket, a mail to the auditor); run this on a schedule.

        Returns:
            The path of the new checkpoint file.

        Raises:
            AuditError: the log or an earlier checkpoint does not verify (nothing
                is signed), or the folder cannot be written.
            AccessDenied: ``actor`` may not read the audit trail.
        """
        self._authorise(actor, "audit", "audit.read", tenant=actor.tenant if actor else "*")
        folder = Path(out_dir)
        signing_key = self._vault._provider.signing_key()
        earlier = has_checkpoints(folder)
        report = self._vault.audit_log.verify(
            checkpoints=folder if earlier else None,
            public_key=signing_key.public_key() if earlier else None,
            vault_id=self._vault.vault_id)
        if not report.ok:
            self._vault._audit_admin("audit.checkpoint", actor=actor, decision=Decision.ERROR,
                                     reason=f"damage:{report.reason}")
            raise AuditError(f"the audit log or an earlier checkpoint does not verify "
                             f"({report.reason}: {report.detail}); refusing to sign a "
                             "checkpoint")
        path = write_checkpoint(
            folder, heads={h.chain: h for h in report.heads}, signing_key=signing_key,
            vault_id=self._vault.vault_id, now=self._vault.clock.now())
        self._vault._audit_admin("audit.checkpoint", actor=actor,
                                 reason=f"checkpoint:{path.name}"[:64])
        return path

    def export_public_key(self, path: str | os.PathLike[str] | None = None, *,
                          actor: Actor | None = None) -> bytes:
        """The Ed25519 public key that verifies checkpoints, as PEM (safe to publish);
        also written to ``path`` if given.

        Raises:
            ConfigError: ``path`` cannot be written.
            AccessDenied: ``actor`` may not read the audit trail.
        """
        self._authorise(actor, "audit", "audit.read", tenant=actor.tenant if actor else "*")
        public = self._vault._provider.signing_key().public_key()
        pem = public.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        if path is not None:
            try:
                Path(path).write_bytes(pem)
            except OSError as exc:
                raise ConfigError(f"cannot write the public key to {os.fspath(path)}: "
                                  f"{exc.strerror}") from None
        self._vault._audit_admin("keys.export_public", actor=actor,
                                 reason=f"key:{key_fingerprint(public)}")
        return pem

    def report(
        self,
        view: ReportView | str = ReportView.ENTRIES,
        *,
        actor: Actor | None = None,
        thresholds: ReportThresholds | None = None,
        **filters: Any,
    ) -> AuditReport:
        """Run an audit report (see :mod:`vault.audit.report`); reading the log is audited.

        ``filters``: since, until, tenant, actor_id, subject (a subject id: it is
        turned into its pseudonym), action, decision, purpose, collection.

        Raises:
            InvalidData: a bad filter or view.
        """
        self._authorise(actor, "audit", "audit.read", tenant=actor.tenant if actor else "*")
        if "actor_id" in filters:
            filters["actor"] = filters.pop("actor_id")
        parsed = ReportFilters.parse(**filters)
        cfg = self._vault.settings
        thresholds = thresholds or ReportThresholds(
            usual_share=cfg.report_usual_share,
            usual_min_accesses=cfg.report_usual_min_accesses,
            burst_reads=cfg.report_burst_reads, burst_minutes=cfg.report_burst_minutes)
        result = build_report(self._vault.engine, parsed, view=view,
                              pseudonym=self._vault.pseudonym, thresholds=thresholds,
                              now=self._vault.clock.now())
        # Whose access history was looked at is itself worth knowing: the
        # subject's pseudonym (never the id) goes into the entry.
        looked_up = (() if parsed.subject is None or parsed.tenant is None
                     else (self._vault.pseudonym(parsed.tenant, parsed.subject),))
        self._vault._audit_admin("audit.report", actor=actor, reason=f"view:{result.view.value}",
                                 subjects=looked_up)
        return result

    def count(self) -> int:
        """Number of entries in the log."""
        return self._vault.audit_log.count()


def _pem_source(value: bytes | str | os.PathLike[str]) -> bytes | Path:
    if isinstance(value, bytes):
        return value
    text = os.fspath(value)
    return text.encode() if text.lstrip().startswith("-----BEGIN") else Path(text)


class PolicyService(_Service):
    """Policy decisions and rule changes."""

    def check(self, actor: Actor, obj: str, action: str, *, purpose: str) -> bool:
        """Would ``actor`` be allowed ``action`` on ``obj`` (``collection.field``)?"""
        if purpose not in self._vault.purposes:
            self._vault.purposes.get(purpose)
        return self._vault.policy_engine.is_allowed(actor.id, actor.tenant, obj, action, purpose)

    def add_rule(self, role: str, tenant: str, obj: str, action: str, purpose: str,
                 effect: str = "allow", *, actor: Actor | None = None) -> bool:
        """Add a policy rule; every process sees it within the refresh interval."""
        self._authorise(actor, "policy", "policy.admin", tenant=tenant)
        changed = self._vault.policy_engine.add_rule(role, tenant, obj, action, purpose, effect)
        self._vault._audit_admin("policy.change", actor=actor, tenant=tenant,
                                 reason=f"add:{effect}:{role}:{obj}:{action}:{purpose}"[:64])
        return changed

    def remove_rule(self, role: str, tenant: str, obj: str, action: str, purpose: str,
                    effect: str = "allow", *, actor: Actor | None = None) -> bool:
        """Remove a policy rule."""
        self._authorise(actor, "policy", "policy.admin", tenant=tenant)
        changed = self._vault.policy_engine.remove_rule(role, tenant, obj, action, purpose,
                                                        effect)
        self._vault._audit_admin("policy.change", actor=actor, tenant=tenant,
                                 reason=f"remove:{effect}:{role}:{obj}:{action}:{purpose}"[:64])
        return changed
