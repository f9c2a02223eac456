"""Fulfilling a verified request, through the services below the DSAR layer.

Nothing here touches a ciphertext itself: reads and rectifications go through
the data path (:class:`~vault.records.RecordService`, authorised, consent-gated
and audited as the DPO's ``dsar_fulfilment`` accesses), crypto-shredding
through ``keys.destroy`` (which writes the erasure marker that survives a
restored copy of the data database), objections and opt-outs through the
consent ledger, restriction through ``subjects.restrict``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select

from vault._kernel import Kernel
from vault._toml import problems, read_toml
from vault.admin.keys import KeyService
from vault.consent.model import ConsentMethod, ConsentScope
from vault.consent.service import ConsentService
from vault.crypto.framing import decode_envelopes
from vault.dsar.bundle import (
    CERTIFICATE_FORMAT,
    BundleWriter,
    csv_bytes,
    json_bytes,
    sign_document,
)
from vault.dsar.model import DSARRequest, RequestKind, RequestState
from vault.errors import ConfigError, InvalidData, ShreddingIncomplete
from vault.policy.purposes import LawfulBasis
from vault.records import RecordService
from vault.retention.holds import HoldService
from vault.store.tables import AUDIT_LOG, RECORDS, RETENTION
from vault.subjects import SubjectService
from vault.types import Actor

__all__ = ["FulfilServices", "Fulfiller", "Outcome", "Progress", "Recipient", "load_recipients"]

PURPOSE = "dsar_fulfilment"
#: Records read (decrypted) per data-path call of an export.
_READ_BATCH = 500
#: Called with (records done, records in all) while an export reads.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class FulfilServices:
    """The services a request is fulfilled with (wired by the facade)."""

    records: RecordService
    keys: KeyService
    consent: ConsentService
    subjects: SubjectService
    holds: HoldService


@dataclass(frozen=True, slots=True)
class Outcome:
    """What fulfilment did: the state to close in (None: stays in progress), the
    result to keep with the request (no PII), and the history's reason code."""

    final: RequestState | None
    result: Mapping[str, Any]
    reason: str


class Recipient(BaseModel):
    """A downstream system told of rectifications, erasures and restrictions
    (GDPR Art. 19, CCPA §7022(b)); ``policies/recipients.toml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: str = Field(min_length=1, max_length=200)
    role: str = Field(pattern=r"^(processor|service_provider|contractor|third_party|controller)$")
    collections: tuple[str, ...] = ()
    notify_on: tuple[RequestKind, ...] = (RequestKind.RECTIFICATION, RequestKind.ERASURE,
                                          RequestKind.RESTRICTION)


def load_recipients(path: Path) -> tuple[Recipient, ...]:
    """The recipient registry, or none when the file does not exist.

    Raises:
        ConfigError: the file is invalid (naming the key, never a value).
    """
    if not path.exists():
        return ()
    raw = read_toml(path, "the recipients file")
    table = raw.get("recipients", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: recipients must be a table")
    try:
        return tuple(Recipient.model_validate({"name": name, **body})
                     for name, body in table.items())
    except (ValidationError, TypeError) as exc:
        detail = problems(exc) if isinstance(exc, ValidationError) else "not a table"
        raise ConfigError(f"{path}: invalid recipients: {detail}") from None


def _write_private(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path.name} cannot be written ({type(exc).__name__})") from None
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class Fulfiller:
    """Runs the fulfilment of each kind of request."""

    def __init__(self, kernel: Kernel, services: FulfilServices) -> None:
        self._k = kernel
        self._s = services
        self.recipients = load_recipients(kernel.settings.resolved_policies / "recipients.toml")

    def run(self, actor: Actor | None, request: DSARRequest, *, out: Path | None,
            exemptions: Mapping[str, str] | None,
            changes: Mapping[str, Mapping[str, Any]] | None,
            progress: Progress | None = None) -> Outcome:
        kind = request.kind
        if kind in (RequestKind.ACCESS, RequestKind.PORTABILITY):
            return self._export(self._actor(actor), request, out, progress)
        if kind is RequestKind.ERASURE:
            return self._erase(self._actor(actor), request, out, exemptions or {})
        if kind is RequestKind.RECTIFICATION:
            return self._rectify(self._actor(actor), request, changes)
        if kind is RequestKind.RESTRICTION:
            subject = self._subject(request)
            self._s.subjects.restrict(subject, tenant=request.tenant, reason="dsar_restriction",
                                      actor=actor)
            return Outcome(RequestState.COMPLETED,
                           {"restricted": True, "recipients": self._notify(request)},
                           "restricted")
        if kind in (RequestKind.OBJECTION, RequestKind.OPT_OUT_SALE_SHARING,
                    RequestKind.LIMIT_SENSITIVE, RequestKind.WITHDRAW_CONSENT):
            return self._ledger(actor, request, exemptions or {})
        if kind is RequestKind.EXPLANATION:
            return self._explain(request, out)
        # automated_decision_review: a person reviews the decision, then complete().
        return Outcome(None, {}, "awaiting_review")

    # ------------------------------------------------------------------ kinds

    def _export(self, actor: Actor, request: DSARRequest, out: Path | None,
                progress: Progress | None) -> Outcome:
        if out is None:
            raise InvalidData("an export needs a folder (out)", field="out")
        k, tenant, subject = self._k, request.tenant, self._subject(request)
        pseudonym = k.pseudonym(tenant, subject)
        by_collection = self._records_of(tenant, subject)
        writer = BundleWriter(out / f"dsar-{request.id}")
        everything: dict[str, list[dict[str, Any]]] = {}
        categories: dict[str, dict[str, dict[str, str]]] = {}
        total, done = sum(len(rows) for rows in by_collection.values()), 0
        for collection, rows in sorted(by_collection.items()):
            schema = k.rules.schemas.get(collection)
            records = []
            for start in range(0, len(rows), _READ_BATCH):
                batch = [r[0] for r in rows[start:start + _READ_BATCH]]
                records += self._s.records.get_many(actor, collection, batch, purpose=PURPOSE)
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            created = {rid: (at, source) for rid, at, source in rows}
            items = [{"record_id": r.id, "created_at": created[r.id][0].isoformat(),
                      "source": created[r.id][1], **r.data} for r in records]
            everything[collection] = items
            writer.add(f"{collection}.csv", csv_bytes(
                ["record_id", "created_at", "source", *schema.field_names], items))
            present = sorted({f for r in records for f in r.data})
            categories[collection] = {
                f: {"category": schema.fields[f].category,
                    "classification": schema.fields[f].classification.value}
                for f in present}
        writer.add("records.json", json_bytes(everything))
        writer.add("categories.json", json_bytes(categories))
        history = self._s.consent.history(subject, tenant=tenant, actor=actor)
        writer.add("consent.json", json_bytes([
            {key: value for key, value in dataclasses.asdict(e).items()
             if key not in ("tenant", "subject_id", "receipt", "signature")}
            for e in history]))
        writer.add("access_log.json", json_bytes(self._access_log(tenant, pseudonym)))
        writer.add("retention.json", json_bytes(self._retention(tenant, subject)))
        writer.add("recipients.json", json_bytes([
            {"name": r.name, "title": r.title, "role": r.role, "collections": r.collections}
            for r in self.recipients]))
        now = k.clock.now()
        manifest = writer.seal(k.root_keys.signing_key(), {
            "request_id": request.id, "tenant": tenant, "subject": pseudonym,
            "kind": request.kind.value, "regime": request.regime,
            "created_at": now.isoformat()})
        delete_after = (now + dt.timedelta(days=k.settings.dsar_export_retention_days)).date()
        return Outcome(RequestState.COMPLETED, {
            "export": str(writer.folder), "files": len(manifest["files"]),
            "records": sum(len(v) for v in everything.values()),
            "manifest_sha256": hashlib.sha256(
                (writer.folder / "manifest.json").read_bytes()).hexdigest(),
            "delete_export_after": delete_after.isoformat()}, f"export:{len(manifest['files'])}")

    def _erase(self, actor: Actor, request: DSARRequest, out: Path | None,
               exemptions: Mapping[str, str]) -> Outcome:
        k, tenant, subject = self._k, request.tenant, self._subject(request)
        exempt = self._exemptions(exemptions)
        pseudonym = k.pseudonym(tenant, subject)
        start = self._audit_head()
        holds = [h.id for h in self._s.holds.list(tenant=tenant, subject_id=subject)]
        kept: list[dict[str, Any]] = []
        deleted: dict[str, int] = {}
        key_destroyed = wal_pending = False
        successor: str | None = None
        by_collection = self._records_envelopes(tenant, subject)
        if holds:
            kept.append({"scope": "*", "reason": "legal_hold", "holds": holds})
        else:
            for collection, rows in sorted(by_collection.items()):
                schema = k.rules.schemas.get(collection)
                if collection in exempt:
                    kept.append({"scope": collection, "reason": exempt[collection],
                                 "records": len(rows)})
                    continue
                field_codes = {f: exempt[f"{collection}.{f}"] for f in schema.field_names
                               if f"{collection}.{f}" in exempt}
                for record_id, present in rows:
                    if field_codes:
                        gone = {f: None for f in present
                                if f not in field_codes and not schema.fields[f].required}
                        if gone:
                            self._s.records.update(actor, collection, record_id, gone,
                                                   purpose=PURPOSE)
                        continue
                    self._s.records.delete(actor, collection, record_id, purpose=PURPOSE)
                    deleted[collection] = deleted.get(collection, 0) + 1
                for f, code in sorted(field_codes.items()):
                    kept.append({"scope": f"{collection}.{f}", "reason": code})
                if field_codes:
                    for f in schema.required_fields:
                        if f not in field_codes:
                            kept.append({"scope": f"{collection}.{f}",
                                         "reason": "required_with_kept_fields"})
            if kept:
                # What is kept moves under a fresh data key (a successor subject,
                # restricted to storage and security: PIPL Art. 47 ¶2, GDPR Art.
                # 18(1)(c)) before the old key goes, so the erased fields cannot come
                # back from a backup of the data database.
                successor = self._s.records.reseal_subject(actor, tenant, subject,
                                                           reason="dsar_erasure_exempt")
            try:
                self._s.keys.destroy(subject, tenant=tenant, actor=actor, purpose=PURPOSE)
            except ShreddingIncomplete:
                wal_pending = True  # the key is gone; its old bytes may be in the WAL
            key_destroyed = True
        now = k.clock.now()
        backups = (now + dt.timedelta(days=k.settings.dsar_keystore_backup_days)).date()
        certificate = sign_document(k.root_keys.signing_key(), {
            "format": CERTIFICATE_FORMAT, "request_id": request.id, "tenant": tenant,
            "subject": pseudonym, "regime": request.regime, "erased_at": now.isoformat(),
            "destroyed": {"records": deleted, "data_key": key_destroyed,
                          "blind_index": key_destroyed or bool(deleted),
                          "erasure_marker": key_destroyed},
            "kept": kept, "kept_under_new_key": successor is not None,
            "successor": k.pseudonym(tenant, successor) if successor else None,
            "audit_positions": self._positions(start, tenant, pseudonym),
            "no_key_store_backup_after": backups.isoformat() if key_destroyed else None,
            "key_store_wal_pending": wal_pending,
        })
        result: dict[str, Any] = {"certificate": certificate,
                                  "recipients": self._notify(request),
                                  "successor_subject_id": successor}
        if out is not None:
            path = out / f"erasure-certificate-{request.id}.json"
            try:
                _write_private(path, json_bytes(certificate))
                result["certificate_file"] = str(path)
            except ConfigError as exc:
                # The erasure is done: close the request (the certificate is kept
                # on it) rather than leave it half-finished for a file.
                result["certificate_file_error"] = exc.message
        final = RequestState.PARTIALLY_COMPLETED if kept else RequestState.COMPLETED
        return Outcome(final, result, "kept:" + ",".join(sorted({e["reason"] for e in kept}))
                       if kept else "erased")

    def _rectify(self, actor: Actor, request: DSARRequest,
                 changes: Mapping[str, Mapping[str, Any]] | None) -> Outcome:
        if not changes or not isinstance(changes, Mapping):
            raise InvalidData("a rectification needs changes: record id -> field -> value",
                              field="changes")
        tenant, subject = request.tenant, self._subject(request)
        mine = {row[0]: coll for coll, rows in self._records_of(tenant, subject).items()
                for row in rows}
        for record_id in changes:
            if record_id not in mine:
                raise InvalidData("changes name a record that is not the subject's",
                                  field="changes")
        done: dict[str, list[str]] = {}
        for record_id, fields in changes.items():
            self._s.records.update(actor, mine[record_id], record_id, fields, purpose=PURPOSE)
            done[record_id] = sorted(fields)
        return Outcome(RequestState.COMPLETED,
                       {"rectified": done, "recipients": self._notify(request)},
                       f"rectified:{len(done)}")

    def _ledger(self, actor: Actor | None, request: DSARRequest,
                exemptions: Mapping[str, str]) -> Outcome:
        k, tenant, subject = self._k, request.tenant, self._subject(request)
        profile = k.rules.jurisdictions.profile(request.regime)
        purposes = list(request.details.get("purposes", ()))
        scope = ConsentScope.GENERAL
        if request.kind is RequestKind.OPT_OUT_SALE_SHARING and not purposes:
            purposes = list(profile.gpc.purposes)
        elif request.kind is RequestKind.LIMIT_SENSITIVE:
            scope = ConsentScope.SENSITIVE
            purposes = purposes or [p.name for p in k.rules.purposes
                                    if p.basis_in(request.regime) is LawfulBasis.CONSENT]
        elif request.kind is RequestKind.OBJECTION and not purposes:
            purposes = [p.name for p in k.rules.purposes if not p.restricted_use
                        and p.basis_in(request.regime) is LawfulBasis.LEGITIMATE_INTERESTS]
        elif request.kind is RequestKind.WITHDRAW_CONSENT and not purposes:
            purposes = [p.name for p in k.rules.purposes
                        if p.basis_in(request.regime) is LawfulBasis.CONSENT]
        kept = {p: _code(c) for p, c in exemptions.items()}
        for name in kept:
            k.rules.purposes.get(name)
        recorded = []
        method = ConsentMethod.AGENT if request.agent else ConsentMethod.API
        for purpose in purposes:
            if purpose in kept:
                continue  # compelling legitimate grounds recorded (GDPR Art. 21(1))
            self._s.consent.withdraw(subject, purpose, tenant=tenant, scope=scope,
                                     method=method, source="dsar", evidence=request.id,
                                     actor=actor)
            recorded.append(purpose)
        return Outcome(RequestState.COMPLETED,
                       {"withdrawn": recorded, "scope": scope.value, "kept": kept},
                       f"withdrawn:{len(recorded)}")

    def _explain(self, request: DSARRequest, out: Path | None) -> Outcome:
        k = self._k
        profile = k.rules.jurisdictions.profile(request.regime)
        statement = {
            "request_id": request.id, "regime": request.regime, "title": profile.title,
            "rights": list(profile.rights),
            "purposes": [{"purpose": p.name, "description": p.description,
                          "lawful_basis": p.basis_in(request.regime).value,
                          "consent_model": profile.consent_model(
                              p.name, p.basis_in(request.regime)).value,
                          "while_restricted": p.restricted_use} for p in k.rules.purposes],
            "collections": {s.name: {f.name: {"category": f.category,
                                              "classification": f.classification.value}
                                     for f in s.fields.values()} for s in k.rules.schemas},
            "retention": {category: [rule.model_dump(mode="json") for rule in
                                     k.rules.schedule.rules(category, request.regime)]
                          for category in k.rules.schedule.categories},
            "recipients": [{"name": r.name, "title": r.title, "role": r.role}
                           for r in self.recipients],
        }
        result: dict[str, Any] = {"explanation": "statement"}
        if out is not None:
            path = out / f"explanation-{request.id}.json"
            _write_private(path, json_bytes(statement))
            result["explanation_file"] = str(path)
        return Outcome(RequestState.COMPLETED, result, "explained")

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _actor(actor: Actor | None) -> Actor:
        if not isinstance(actor, Actor):
            raise InvalidData("this request reads or changes the subject's data: it needs the "
                              "DPO as actor", field="actor")
        return actor

    @staticmethod
    def _subject(request: DSARRequest) -> str:
        if request.subject_id is None:  # pragma: no cover - process() refuses first
            raise InvalidData("the request has no verified subject", field="subject_id")
        return request.subject_id

    def _exemptions(self, exemptions: Mapping[str, str]) -> dict[str, str]:
        if not isinstance(exemptions, Mapping):
            raise InvalidData("exemptions must map collection[.field] to a reason code",
                              field="exemptions")
        out = {}
        for scope, code in exemptions.items():
            collection, _, field = str(scope).partition(".")
            schema = self._k.rules.schemas.get(collection)
            if field:
                schema.field(field)
            out[str(scope)] = _code(code)
        return out

    def _records_of(self, tenant: str, subject: str
                    ) -> dict[str, list[tuple[str, dt.datetime, str | None]]]:
        """Each record's id, creation time and source, by collection, oldest first."""
        with self._k.read_only() as conn:
            rows = conn.execute(select(RECORDS.c.id, RECORDS.c.collection, RECORDS.c.created_at,
                                       RECORDS.c.source)
                                .where(RECORDS.c.tenant == tenant,
                                       RECORDS.c.subject_id == subject)
                                .order_by(RECORDS.c.created_at, RECORDS.c.id)).all()
        grouped: dict[str, list[tuple[str, dt.datetime, str | None]]] = {}
        for row in rows:
            grouped.setdefault(row.collection, []).append((row.id, row.created_at, row.source))
        return grouped

    def _records_envelopes(self, tenant: str, subject: str
                           ) -> dict[str, list[tuple[str, list[str]]]]:
        """Each record's id and the names of the fields it holds (names are framing,
        not data: nothing is decrypted)."""
        with self._k.read_only() as conn:
            rows = conn.execute(select(RECORDS.c.id, RECORDS.c.collection, RECORDS.c.envelopes)
                                .where(RECORDS.c.tenant == tenant,
                                       RECORDS.c.subject_id == subject)
                                .order_by(RECORDS.c.created_at, RECORDS.c.id)).all()
        grouped: dict[str, list[tuple[str, list[str]]]] = {}
        for row in rows:
            grouped.setdefault(row.collection, []).append(
                (row.id, sorted(decode_envelopes(row.envelopes))))
        return grouped

    def _access_log(self, tenant: str, pseudonym: str) -> list[dict[str, Any]]:
        """Who accessed the subject's data and why: actors resolved to their roles
        (never to another person's identity)."""
        with self._k.read_only() as conn:
            rows = conn.execute(select(
                AUDIT_LOG.c.seq, AUDIT_LOG.c.ts, AUDIT_LOG.c.actor, AUDIT_LOG.c.action,
                AUDIT_LOG.c.collection, AUDIT_LOG.c.fields, AUDIT_LOG.c.purpose,
                AUDIT_LOG.c.decision, AUDIT_LOG.c.subjects,
            ).where(AUDIT_LOG.c.tenant == tenant,
                    AUDIT_LOG.c.subjects.contains(pseudonym)).order_by(AUDIT_LOG.c.seq)).all()
        roles: dict[str, list[str]] = {}
        entries = []
        for row in rows:
            if pseudonym not in json.loads(row.subjects or "[]"):
                continue
            if row.actor not in roles:
                roles[row.actor] = (sorted(self._k.policy.roles_for(row.actor, tenant))
                                    or ["vault" if row.actor == "system" else "unknown"])
            entries.append({"time": row.ts.isoformat(), "by_roles": roles[row.actor],
                            "action": row.action, "collection": row.collection,
                            "fields": json.loads(row.fields or "[]"), "purpose": row.purpose,
                            "decision": row.decision})
        return entries

    def _retention(self, tenant: str, subject: str) -> list[dict[str, Any]]:
        with self._k.read_only() as conn:
            rows = conn.execute(select(RETENTION).where(
                RETENTION.c.tenant == tenant, RETENTION.c.subject_id == subject)).mappings().all()
        return [{"record_id": r["record_id"], "collection": r["collection"],
                 "category": r["category"], "action": r["action"],
                 "expires_at": r["expires_at"].isoformat() if r["expires_at"] else None}
                for r in rows]

    def _audit_head(self) -> int:
        with self._k.read_only() as conn:
            return int(conn.execute(select(func.coalesce(func.max(AUDIT_LOG.c.seq), 0))
                                    ).scalar_one())

    def _positions(self, start: int, tenant: str, pseudonym: str) -> list[int]:
        with self._k.read_only() as conn:
            rows = conn.execute(select(AUDIT_LOG.c.seq, AUDIT_LOG.c.subjects).where(
                AUDIT_LOG.c.seq > start, AUDIT_LOG.c.tenant == tenant,
                AUDIT_LOG.c.subjects.contains(pseudonym)).order_by(AUDIT_LOG.c.seq)).all()
        return [int(r.seq) for r in rows if pseudonym in json.loads(r.subjects or "[]")]

    def _notify(self, request: DSARRequest) -> list[str]:
        """Recipients to tell of this request's outcome (GDPR Art. 19, CCPA §7022)."""
        return [r.name for r in self.recipients if request.kind in r.notify_on]


_CODE = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")


def _code(value: object) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise InvalidData("an exemption's reason must be a short code", field="exemptions")
    return value
