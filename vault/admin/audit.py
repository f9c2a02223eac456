"""``v.audit``: verification, signed checkpoints, the public key, and reports.

Reading the audit trail is itself audited, on the administrative chain. When
an ``actor`` is given the policy decides whether it may read it
(``audit.read``); when it is omitted, the caller is the local operator.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from vault._kernel import ADMIN_PURPOSE, Kernel
from vault.audit.chain import Decision, VerifyReport
from vault.audit.checkpoint import (
    has_checkpoints,
    key_fingerprint,
    load_public_key,
    write_checkpoint,
)
from vault.audit.erasures import find_resurrections, resurrection_findings
from vault.audit.report import (
    ROW_LIMIT,
    AuditReport,
    ReportFilters,
    ReportThresholds,
    ReportView,
    Verification,
    verification_status,
)
from vault.audit.report import report as build_report
from vault.audit.versions import find_version_mismatches, version_findings
from vault.errors import AccessDenied, AuditError, ConfigError
from vault.types import Actor

__all__ = ["AuditService"]

Progress = Callable[[int, int], None]


class AuditService:
    """Verification, signed checkpoints and the checkpoint public key."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel

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
        with ``checkpoints`` (a folder), with every signed checkpoint in it; then
        compare the log's crypto-shreddings with the key store: a subject the log
        says was destroyed whose data key is live again is a ``resurrected_key``
        finding (see ``v.keys.check_erasures``); and compare each record's version
        with the changes the log accounts for: ``record_rolled_back`` (a row
        restored from an older copy) or ``record_unaudited_change``
        (:mod:`vault.audit.versions`).

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
        self._k.authorise(actor, "audit", "audit.read")
        key = (load_public_key(_pem_source(public_key)) if public_key is not None
               else self._k.root_keys.signing_key().public_key())
        report = self._k.audit_log.verify(
            progress=progress, checkpoints=Path(checkpoints) if checkpoints else None,
            public_key=key, vault_id=self._k.vault_id, workers=workers)
        # The log's crypto-shreddings against the key store: a destroyed key that
        # is live again (an older key store restored) is damage too.
        # And each record's version against the changes the log accounts for.
        with self._k.read_only() as conn:
            resurrected = find_resurrections(conn, self._k.keystore.live_subjects,
                                             self._k.pseudonym)
            mismatched = find_version_mismatches(conn)
        if resurrected or mismatched:
            report = VerifyReport.from_findings(
                [*report.findings, *resurrection_findings(resurrected),
                 *version_findings(mismatched)],
                entries=report.entries, chains=report.chains, heads=report.heads,
                checkpoints=report.checkpoints)
        self._k.audit(
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
        self._k.authorise(actor, "audit", "audit.read")
        folder = Path(out_dir)
        signing_key = self._k.root_keys.signing_key()
        earlier = has_checkpoints(folder)
        report = self._k.audit_log.verify(
            checkpoints=folder if earlier else None,
            public_key=signing_key.public_key() if earlier else None,
            vault_id=self._k.vault_id)
        if not report.ok:
            self._k.audit("audit.checkpoint", actor=actor, decision=Decision.ERROR,
                                     reason=f"damage:{report.reason}")
            raise AuditError(f"the audit log or an earlier checkpoint does not verify "
                             f"({report.reason}: {report.detail}); refusing to sign a "
                             "checkpoint")
        path = write_checkpoint(
            folder, heads={h.chain: h for h in report.heads}, signing_key=signing_key,
            vault_id=self._k.vault_id, now=self._k.clock.now())
        self._k.audit("audit.checkpoint", actor=actor,
                                 reason=f"checkpoint:{path.name}")
        return path

    def export_public_key(self, path: str | os.PathLike[str] | None = None, *,
                          actor: Actor | None = None) -> bytes:
        """The Ed25519 public key that verifies checkpoints, as PEM (safe to publish);
        also written to ``path`` if given.

        Raises:
            ConfigError: ``path`` cannot be written.
            AccessDenied: ``actor`` may not read the audit trail.
        """
        self._k.authorise(actor, "audit", "audit.read")
        public = self._k.root_keys.signing_key().public_key()
        pem = public.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        if path is not None:
            try:
                Path(path).write_bytes(pem)
            except OSError as exc:
                raise ConfigError(f"cannot write the public key to {os.fspath(path)}: "
                                  f"{exc.strerror}") from None
        self._k.audit("keys.export_public", actor=actor,
                                 reason=f"key:{key_fingerprint(public)}")
        return pem

    def report(
        self,
        view: ReportView | str = ReportView.ENTRIES,
        *,
        actor: Actor | None = None,
        thresholds: ReportThresholds | None = None,
        limit: int | None = ROW_LIMIT,
        output: str | None = None,
        **filters: Any,
    ) -> AuditReport:
        """Run an audit report (see :mod:`vault.audit.report`); reading the log is audited.

        Args:
            view: entries, subject_access, denials, unusual_purpose, bursts, privileged.
            thresholds: of ``unusual_purpose`` and ``bursts`` (default:
                :meth:`thresholds`, from the settings).
            limit: keep at most this many rows (None: all).
            output: the form the caller renders it to (``table``, ``csv``, ...),
                recorded in the ``audit.report`` entry.
            filters: since, until, tenant, actor_id, subject (a subject id: it is
                turned into its pseudonym), action, decision, purpose, collection.

        A reader is confined to its own tenant: without a ``tenant`` filter the
        report covers the reader's tenant, and another tenant's is refused
        (audited) unless the policy grants the reader ``audit.read_all``. The
        local operator (``actor`` None) reads every tenant.

        Raises:
            InvalidData: a bad filter, view or limit.
            AccessDenied: the actor may not read the audit trail, or not that tenant's.
        """
        self._k.authorise(actor, "audit", "audit.read")
        if "actor_id" in filters:
            filters["actor"] = filters.pop("actor_id")
        if actor is not None and not self._k.policy.is_allowed(
                actor.id, actor.tenant, "audit", "audit.read_all", ADMIN_PURPOSE):
            wanted = filters.get("tenant")
            if wanted is None:
                filters["tenant"] = actor.tenant
            elif wanted != actor.tenant:
                self._k.audit("audit.read", actor=actor, decision=Decision.DENY,
                              reason="other_tenant", purpose=ADMIN_PURPOSE)
                raise AccessDenied("audit.read denied: a report of another tenant needs "
                                   "audit.read_all", reason="other_tenant")
        parsed = ReportFilters.parse(**filters)
        result = build_report(self._k.engine, parsed, view=view,
                              pseudonym=self._k.pseudonym,
                              thresholds=thresholds or self.thresholds(),
                              now=self._k.clock.now(), limit=limit)
        # Whose access history was looked at is itself worth knowing: the
        # subject's pseudonym (never the id) goes into the entry.
        looked_up = (() if parsed.subject is None or parsed.tenant is None
                     else (self._k.pseudonym(parsed.tenant, parsed.subject),))
        reason = f"view:{result.view.value}" + (f":{output}" if output else "")
        self._k.audit("audit.report", actor=actor, reason=reason, subjects=looked_up)
        return result

    def status(self, *, actor: Actor | None = None) -> Verification:
        """The last verification of the log as the log records it (an
        ``audit.verify`` or ``audit.checkpoint`` entry): when, its result, the
        newest signed checkpoint then, and how many entries came after it.
        Every report carries the same (``AuditReport.verification``).

        Raises:
            AccessDenied: ``actor`` may not read the audit trail.
        """
        self._k.authorise(actor, "audit", "audit.read")
        return verification_status(self._k.engine)

    def thresholds(self) -> ReportThresholds:
        """The report thresholds the settings give (``VAULT_REPORT_*``)."""
        cfg = self._k.settings
        return ReportThresholds(
            usual_share=cfg.report_usual_share,
            usual_min_accesses=cfg.report_usual_min_accesses,
            burst_reads=cfg.report_burst_reads, burst_minutes=cfg.report_burst_minutes)

    def count(self) -> int:
        """Number of entries in the log."""
        return self._k.audit_log.count()


def _pem_source(value: bytes | str | os.PathLike[str]) -> bytes | Path:
    if isinstance(value, bytes):
        return value
    text = os.fspath(value)
    return text.encode() if text.lstrip().startswith("-----BEGIN") else Path(text)
