"""The :class:`Vault` facade: the one object a CRM service talks to.

Every data method follows the same path (see DESIGN.md): validate against the
collection schema, decide with the policy (default deny), check consent,
restriction and cross-border rules for every subject touched
(:meth:`Vault._consent_gate`), touch the store,
encrypt or decrypt with the subject's own data key, and append the audit
entry in the same transaction. A denial is audited too, in a transaction of
its own, before the error is raised.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import os
import re
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, Self, cast

import structlog
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from vault.admin import AuditService, KeyService, PolicyService, RoleService
from vault.audit.chain import AuditEvent, Decision, chain_for
from vault.audit.config import config_items, record_config
from vault.audit.log import AuditLog
from vault.clock import Clock, SystemClock
from vault.config import VaultSettings
from vault.consent.decision import Refusal, SubjectFacts, Use, Verdict
from vault.consent.notices import NoticeRegistry, load_notices
from vault.consent.service import ConsentService
from vault.crypto.blind_index import BlindIndexer
from vault.crypto.envelope import AESGCMFieldCipher, FieldContext, RecordContext
from vault.crypto.keys import KeyProvider, LocalKeyProvider
from vault.crypto.keystore import DataKey, KeyStore
from vault.crypto.masking import mask
from vault.crypto.pseudonym import Pseudonymizer
from vault.errors import (
    AccessDenied,
    AuditError,
    ConfigError,
    ConsentRequired,
    DecryptionError,
    InvalidData,
    KeyDestroyed,
    LegalHoldActive,
    NotFound,
    SubjectRestricted,
    TransferRefused,
    UnknownField,
    VaultError,
)
from vault.jurisdiction import JurisdictionRegistry, load_jurisdictions
from vault.policy.engine import CasbinPolicyEngine
from vault.policy.purposes import PurposeRegistry, load_purposes
from vault.retention.holds import HoldService, ensure_not_held
from vault.retention.schedule import Event as RetentionEvent
from vault.retention.schedule import load_schedule
from vault.retention.service import RetentionService
from vault.schema import CollectionSchema, FieldSpec, SchemaRegistry, load_schemas
from vault.store import migrate
from vault.store.bulk import BulkInsert
from vault.store.codec import decode_envelopes, encode_envelopes
from vault.store.engine import is_sqlite, make_engine
from vault.store.models import BlindIndexRow, Meta, RecordRow, SubjectRow
from vault.store.retry import transaction_attempts
from vault.subjects import SubjectService
from vault.types import Actor, Record, check_identifier
from vault.validation import index_form, normalize_for_index, validate_record

__all__ = ["Vault"]

log = structlog.get_logger(__name__)

_RECORDS = cast(Table, RecordRow.__table__)
_SUBJECTS = cast(Table, SubjectRow.__table__)
_BLIND = cast(Table, BlindIndexRow.__table__)
_META = cast(Table, Meta.__table__)

_JURISDICTION = re.compile(r"[A-Z]{2,3}(-[A-Z0-9]{1,3})?")  # as jurisdiction.Code
_IN_CHUNK = 500

# Statements of the hot paths, built once (building one costs more than
# running it from SQLAlchemy's compiled cache).
# Rows are looked up by primary key alone, and their tenant and collection
# checked here: with "tenant = ? AND collection = ?" in the WHERE clause a
# planner with stale statistics scans the whole (tenant, collection) index.
_SELECT_ROWS = select(
    _RECORDS.c.id, _RECORDS.c.subject_id, _RECORDS.c.envelopes, _RECORDS.c.tenant,
    _RECORDS.c.collection,
    # The subject's restriction flag and jurisdiction come with its records, so
    # the consent gate of a read needs no statement of its own in the common case.
    _SUBJECTS.c.restricted_at, _SUBJECTS.c.jurisdiction,
).select_from(_RECORDS.outerjoin(_SUBJECTS, and_(
    _SUBJECTS.c.tenant == _RECORDS.c.tenant, _SUBJECTS.c.subject_id == _RECORDS.c.subject_id,
))).where(_RECORDS.c.id.in_(bindparam("in_ids", expanding=True)))
# The rows of a batch write, as tuples in one executemany each (vault.store.bulk).
_BULK_SUBJECTS = BulkInsert(_SUBJECTS, ("tenant", "subject_id", "pseudonym", "jurisdiction",
                                        "created_at"))
_BULK_RECORDS = BulkInsert(_RECORDS, ("id", "tenant", "collection", "subject_id", "envelopes",
                                      "created_at", "updated_at", "version"))
_BULK_BLIND = BulkInsert(_BLIND, ("tenant", "collection", "field", "digest", "record_id"))
SYSTEM_ACTOR = "system"
_CONSENT_REFUSALS = (ConsentRequired, SubjectRestricted, TransferRefused)


# Ids: a random per-process prefix, a per-process sequence, then random bits (32 hex
# digits, unguessable). Ids made together sort together, so the rows written by one
# batch sit on neighbouring pages of the id-keyed b-trees instead of one page each:
# batched writes and retention sweeps touch (and, with secure_delete, rewrite) far
# fewer pages. They carry no time.
_ID_PREFIX = secrets.token_hex(4)
_ID_SEQUENCE = itertools.count(secrets.randbelow(1 << 32))


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_SEQUENCE) & 0xFFFFFFFFFFFF:012x}{secrets.token_hex(6)}"


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encode_value(value: Any) -> bytes:
    """Plaintext of one field: ``s`` + UTF-8 for text (most fields), ``j`` + JSON otherwise."""
    if type(value) is str:
        return b"s" + value.encode("utf-8")
    return b"j" + _JSON.encode(value).encode("utf-8")


def _decode_value(raw: bytes) -> Any:
    tag, body = raw[:1], raw[1:]
    try:
        if tag == b"s":
            return body.decode("utf-8")
        if tag == b"j":
            return json.loads(body)
    except ValueError:
        pass
    raise DecryptionError()


_NO_NAMES: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=256)
def _visible(requested: tuple[str, ...], readable: frozenset[str],
             maskable: frozenset[str]) -> tuple[str, ...]:
    """The requested fields that are decrypted: readable or maskable (once per read)."""
    return tuple(n for n in requested if n in readable or n in maskable)


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Vault:
    """Encrypted, access-controlled, audited storage of customer PII.

    Build it with :meth:`open` (or :meth:`init` the first time); use it as a
    context manager so engines are disposed. Every data method takes the
    :class:`~vault.types.Actor` asking and the ``purpose`` of use.

    Attributes:
        roles: assign and revoke roles (:class:`~vault.admin.RoleService`).
        keys: key status, rotation, retirement, crypto-shredding.
        audit: verify the audit log.
        policy: check decisions and change rules.
        consent: the consent ledger, receipts, GPC, reports
            (:class:`~vault.consent.service.ConsentService`).
        subjects: a subject's jurisdiction and restriction
            (:class:`~vault.subjects.SubjectService`).
        retention: retention schedule, expiry events, plans, sweeps, reports.
        holds: legal holds (place, lift, list).
    """

    def __init__(
        self,
        *,
        settings: VaultSettings,
        data_engine: Engine,
        keystore: KeyStore,
        provider: KeyProvider,
        policy: CasbinPolicyEngine,
        schemas: SchemaRegistry,
        purposes: PurposeRegistry,
        audit_log: AuditLog,
        clock: Clock,
        keystore_engine: Engine | None = None,
    ) -> None:
        self.settings = settings
        self._keystore_engine = keystore_engine
        self._engine = data_engine
        self._keystore = keystore
        self._provider = provider
        self._policy = policy
        self._schemas = schemas
        self._purposes = purposes
        self._audit = audit_log
        self._clock = clock
        self._vault_id = "unknown"
        self._cipher = AESGCMFieldCipher()
        self._indexer = BlindIndexer(
            provider.index_root_key(), truncate_to=settings.blind_index_bytes
        )
        self._pseudonyms = Pseudonymizer(provider.pseudonym_key())
        self.roles = RoleService(self)
        self.keys = KeyService(self)
        self.audit = AuditService(self)
        self.policy = PolicyService(self)
        self._jurisdictions, self._notices = self._load_consent_policies(
            settings.resolved_policies, purposes)
        self.consent = ConsentService(self)
        self.subjects = SubjectService(self)
        self.retention = RetentionService(self)
        self.holds = HoldService(self)

    # ------------------------------------------------------------------ life cycle

    @staticmethod
    def _settings(
        home: str | os.PathLike[str] | None,
        settings: VaultSettings | None,
        **values: Any,
    ) -> VaultSettings:
        if settings is not None:
            if home is not None or any(v is not None for v in values.values()):
                raise ConfigError("pass either settings= or individual options, not both")
            return settings
        return VaultSettings.build(home=Path(home) if home is not None else None, **values)

    @classmethod
    def init(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        keystore_url: str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        policies: str | os.PathLike[str] | None = None,
        audit_chains: int | None = None,
        settings: VaultSettings | None = None,
        clock: Clock | None = None,
    ) -> Vault:
        """Create what :meth:`open` needs: key file, key store, schema, default policy.

        Raises:
            ConfigError: if the vault is already initialised or settings are wrong.
        """
        cfg = cls._settings(
            home, settings, database_url=database_url, keystore_url=keystore_url,
            key_file=Path(key_file) if key_file else None,
            policies=Path(policies) if policies else None, audit_chains=audit_chains,
        )
        cls._check_separation(cfg)
        if cfg.database_url is None or cfg.keystore_url is None or cfg.key_file is None:
            cfg.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path = cfg.resolved_key_file
        if key_path.exists():
            raise ConfigError(f"a key file already exists at {key_path}; this vault is initialised")
        # Validate policies before creating anything, so a broken file leaves no half-made vault.
        policies_dir = cfg.resolved_policies
        load_schemas(policies_dir)
        cls._load_consent_policies(policies_dir, load_purposes(policies_dir / "purposes.toml"))
        load_schedule(policies_dir / "retention.toml", load_schemas(policies_dir))
        data_engine = make_engine(cfg.resolved_database_url,
                                  sqlite_synchronous=cfg.sqlite_synchronous)
        with data_engine.connect() as conn:
            if migrate.current_revision(data_engine) is not None or conn.dialect.has_table(
                conn, "vault_meta"
            ):
                data_engine.dispose()
                raise ConfigError("the data database is already initialised")
        provider = LocalKeyProvider.create(key_path)
        migrate.upgrade(data_engine)
        keystore_engine = make_engine(cfg.resolved_keystore_url,
                                      sqlite_synchronous=cfg.sqlite_synchronous)
        keystore = KeyStore(keystore_engine, provider, cache_size=cfg.dek_cache_size, clock=clock)
        keystore.create_schema()
        clk = clock or SystemClock()
        audit_log = AuditLog(data_engine, chains=cfg.audit_chains, clock=clk)
        with data_engine.begin() as conn:
            conn.execute(
                insert(_META),
                [
                    {"key": "audit_chains", "value": str(cfg.audit_chains)},
                    {"key": "created_at", "value": clk.now().isoformat()},
                    {"key": "format", "value": "1"},
                    {"key": "vault_id", "value": uuid.uuid4().hex},
                ],
            )
            audit_log.create_heads(conn)
        policy = CasbinPolicyEngine(
            data_engine, policies_dir / "model.conf", clock=clk,
            refresh_interval=cfg.policy_refresh_seconds,
        )
        loaded = policy.load_defaults(policies_dir / "policy.csv")
        vault = cls._assemble(cfg, data_engine, keystore_engine, provider, policy, clk,
                              keystore=keystore)
        with data_engine.begin() as conn:  # no record yet: no expiry to recompute
            vault.retention._store_fingerprint(conn, vault.retention.fingerprint())
        try:
            vault._audit_admin("vault.init", reason=f"rules:{loaded}")
            vault._record_config()
        except BaseException:
            vault.close()
            raise
        return vault

    @classmethod
    def upgrade(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        keystore_url: str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        policies: str | os.PathLike[str] | None = None,
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
        cfg = cls._settings(
            home, settings, database_url=database_url, keystore_url=keystore_url,
            key_file=Path(key_file) if key_file else None,
            policies=Path(policies) if policies else None,
        )
        cls._check_separation(cfg)
        LocalKeyProvider.load(cfg.resolved_key_file)  # refuse before touching anything
        data_engine = make_engine(cfg.resolved_database_url)
        try:
            before = migrate.current_revision(data_engine)
            if before is None:
                raise ConfigError("this vault is not initialised: run `vault init` first")
            if before != migrate.head_revision():
                migrate.upgrade(data_engine)
        except SQLAlchemyError:
            raise ConfigError("the data database cannot be migrated or reached") from None
        finally:
            data_engine.dispose()
        vault = cls.open(settings=cfg, clock=clock)
        try:
            added = vault.retention._backfill()
            if before != migrate.head_revision() or added:
                vault._audit_admin("vault.upgrade",
                                   reason=f"{before}>{migrate.head_revision()}:expiry:{added}")
        except BaseException:
            vault.close()
            raise
        return vault

    @classmethod
    def open(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        keystore_url: str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        policies: str | os.PathLike[str] | None = None,
        settings: VaultSettings | None = None,
        clock: Clock | None = None,
    ) -> Vault:
        """Open an initialised vault.

        A configuration (settings, policies files) different from the one the
        vault was last opened with is recorded and audited as ``config.change``
        (see :mod:`vault.audit.config`).

        Raises:
            ConfigError: if it was never initialised or needs migrating.
            KeyManagementError: if the key file is missing or unsafe.
            AuditError: a configuration change could not be recorded (fail closed).
        """
        cfg = cls._settings(
            home, settings, database_url=database_url, keystore_url=keystore_url,
            key_file=Path(key_file) if key_file else None,
            policies=Path(policies) if policies else None,
        )
        cls._check_separation(cfg)
        provider = LocalKeyProvider.load(cfg.resolved_key_file)
        data_engine = make_engine(cfg.resolved_database_url,
                                  sqlite_synchronous=cfg.sqlite_synchronous)
        try:
            revision = migrate.current_revision(data_engine)
        except SQLAlchemyError:
            data_engine.dispose()
            raise ConfigError("the data database cannot be reached") from None
        if revision is None:
            data_engine.dispose()
            raise ConfigError("this vault is not initialised: run `vault init` first")
        if revision != migrate.head_revision():
            data_engine.dispose()
            raise ConfigError("the data database needs migrating: run `vault upgrade`")
        clk = clock or SystemClock()
        policies_dir = cfg.resolved_policies
        policy = CasbinPolicyEngine(
            data_engine, policies_dir / "model.conf", clock=clk,
            refresh_interval=cfg.policy_refresh_seconds,
        )
        keystore_engine = make_engine(cfg.resolved_keystore_url,
                                      sqlite_synchronous=cfg.sqlite_synchronous)
        vault = cls._assemble(cfg, data_engine, keystore_engine, provider, policy, clk)
        try:
            vault._record_config()
        except BaseException:
            vault.close()
            raise
        return vault

    @classmethod
    def _assemble(
        cls,
        cfg: VaultSettings,
        data_engine: Engine,
        keystore_engine: Engine,
        provider: KeyProvider,
        policy: CasbinPolicyEngine,
        clock: Clock,
        *,
        keystore: KeyStore | None = None,
    ) -> Vault:
        with data_engine.connect() as conn:
            meta = {row.key: row.value for row in conn.execute(select(_META.c.key, _META.c.value))}
        chains = int(meta.get("audit_chains", cfg.audit_chains))
        policies_dir = cfg.resolved_policies
        vault = cls(
            settings=cfg,
            data_engine=data_engine,
            keystore=keystore
            or KeyStore(keystore_engine, provider, cache_size=cfg.dek_cache_size, clock=clock),
            provider=provider,
            policy=policy,
            schemas=load_schemas(policies_dir),
            purposes=load_purposes(policies_dir / "purposes.toml"),
            audit_log=AuditLog(data_engine, chains=chains, clock=clock),
            clock=clock,
            keystore_engine=keystore_engine,
        )
        vault._vault_id = meta.get("vault_id") or meta.get("created_at", "unknown")
        return vault

    def _record_config(self) -> None:
        """Snapshot the configuration this process opened with and audit a change
        (``config.baseline`` / ``config.change``, see :mod:`vault.audit.config`).

        Raises:
            AuditError: the snapshot or its entry could not be written (fail closed).
        """
        items = config_items(self.settings, self.settings.resolved_policies)
        record_config(self._engine, self._audit, items, now=self._clock.now())

    @staticmethod
    def _check_separation(cfg: VaultSettings) -> None:
        if cfg.resolved_database_url == cfg.resolved_keystore_url:
            raise ConfigError(
                "the key store must be a different database from the data database, "
                "or crypto-shredding would not survive a restored data backup"
            )

    def close(self) -> None:
        """Dispose of database connections and forget cached data keys."""
        self._keystore.clear_cache()
        if self._keystore_engine is not None:
            self._keystore_engine.dispose()
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Vault(home={str(self.settings.home)!r})"

    # ------------------------------------------------------------------ internals

    @property
    def schemas(self) -> SchemaRegistry:
        return self._schemas

    @property
    def purposes(self) -> PurposeRegistry:
        return self._purposes

    def pseudonym(self, tenant: str, subject_id: str) -> str:
        """The keyed pseudonym under which the audit log knows this subject."""
        return self._pseudonyms.pseudonym(tenant, subject_id)

    def _audit_admin(
        self,
        action: str,
        *,
        actor: Actor | None = None,
        tenant: str = "*",
        decision: Decision = Decision.ALLOW,
        reason: str | None = None,
        subjects: tuple[str, ...] = (),
        purpose: str | None = None,
    ) -> None:
        self._audit.write([AuditEvent(
            tenant=actor.tenant if actor else tenant,
            actor=actor.id if actor else SYSTEM_ACTOR,
            action=action, decision=decision, reason=reason[:64] if reason else None,
            subjects=subjects,
            purpose=purpose,
        )])

    def _admin_event(
        self,
        action: str,
        *,
        actor: Actor | None = None,
        tenant: str = "*",
        subjects: tuple[str, ...] = (),
        purpose: str | None = None,
    ) -> AuditEvent:
        """The allowed administrative event :meth:`_audit_admin` would write, for a
        caller that appends it inside its own transaction."""
        return AuditEvent(
            tenant=actor.tenant if actor else tenant,
            actor=actor.id if actor else SYSTEM_ACTOR,
            action=action, decision=Decision.ALLOW, subjects=subjects, purpose=purpose,
        )

    def _refuse(
        self,
        exc: VaultError,
        actor: Actor,
        action: str,
        *,
        collection: str | None,
        purpose: str | None,
        fields: Sequence[str] = (),
        record_ids: Sequence[str] = (),
        subjects: Sequence[str] = (),
        decision: Decision = Decision.DENY,
    ) -> NoReturn:
        """Audit a refusal in its own transaction, then raise ``exc``.

        A refusal that names records is attributed to their subjects too, so
        that a subject's access report lists denied attempts on its data.
        """
        if record_ids and not subjects and collection is not None:
            subjects = self._pseudonyms_of(actor.tenant, collection, record_ids[:50])
        self._audit.write([AuditEvent(
            tenant=actor.tenant, actor=actor.id, action=action, decision=decision,
            collection=collection, record_ids=tuple(record_ids), subjects=tuple(subjects),
            fields=tuple(fields), purpose=purpose,
            reason=getattr(exc, "reason", None) or exc.code,
        )])
        raise exc

    def _pseudonyms_of(self, tenant: str, collection: str,
                       record_ids: Sequence[str]) -> tuple[str, ...]:
        try:
            with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                found = conn.execute(
                    select(_RECORDS.c.subject_id).where(
                        _RECORDS.c.tenant == tenant, _RECORDS.c.collection == collection,
                        _RECORDS.c.id.in_([r for r in record_ids if isinstance(r, str)]))
                ).scalars().all()
                conn.rollback()
        except SQLAlchemyError:
            return ()
        return tuple(sorted({self.pseudonym(tenant, sid) for sid in found}))

    def _begin(
        self,
        actor: object,
        action: str,
        collection: object,
        purpose: object,
    ) -> tuple[Actor, CollectionSchema, str]:
        """Check the actor, collection and purpose; audit and raise on a bad one."""
        if not isinstance(actor, Actor):
            raise InvalidData("actor must be a vault.Actor", field="actor")
        coll_name = collection if isinstance(collection, str) else None
        purp = purpose if isinstance(purpose, str) else None
        try:
            if coll_name is None:
                raise InvalidData("collection must be a string", field="collection")
            schema = self._schemas.get(coll_name)
        except InvalidData as exc:
            known = coll_name if coll_name in self._schemas else None
            self._refuse(exc, actor, action, collection=known,
                         purpose=purp if purp in self._purposes else None)
        try:
            if purp is None:
                raise InvalidData("purpose must be a string", field="purpose")
            self._purposes.get(purp)
        except InvalidData as exc:
            self._refuse(exc, actor, action, collection=schema.name, purpose=None)
        return actor, schema, purp

    def _validate(
        self,
        actor: Actor,
        schema: CollectionSchema,
        data: object,
        *,
        action: str,
        purpose: str,
        partial: bool,
        record_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        try:
            if not isinstance(data, Mapping):
                raise InvalidData("data must be a mapping of field names to values")
            region = data.get("country")
            return validate_record(
                schema, data, partial=partial,
                default_region=region.upper() if isinstance(region, str) and len(region) == 2
                else None,
            )
        except InvalidData as exc:
            fields = [exc.field] if exc.field is not None and exc.field in schema.fields else []
            self._refuse(exc, actor, action, collection=schema.name, purpose=purpose,
                         fields=fields, record_ids=record_ids)

    def _require(
        self,
        actor: Actor,
        schema: CollectionSchema,
        action: str,
        purpose: str,
        fields: Sequence[str],
        *,
        audit_action: str | None = None,
        record_ids: Sequence[str] = (),
        subjects: Sequence[str] = (),
    ) -> None:
        """Raise AccessDenied (audited) unless ``action`` is allowed on every field."""
        allowed = self._policy.allowed_fields(
            actor.id, actor.tenant, schema.name, action, purpose, tuple(fields)
        )
        denied = sorted(set(fields) - allowed)
        if denied:
            self._refuse(
                AccessDenied(f"{action} denied on {schema.name}: {', '.join(denied)}"),
                actor, audit_action or action, collection=schema.name, purpose=purpose,
                fields=denied, record_ids=record_ids, subjects=subjects,
            )

    def _context(self, tenant: str, schema: CollectionSchema, record_id: str,
                 field: str, subject_id: str) -> FieldContext:
        return FieldContext(tenant=tenant, collection=schema.name, record_id=record_id,
                            field=field, subject_id=subject_id)

    def _encrypt_fields(
        self, key: DataKey, tenant: str, schema: CollectionSchema, record_id: str,
        subject_id: str, values: Mapping[str, Any],
    ) -> dict[str, bytes]:
        record = RecordContext(tenant, schema.name, record_id, subject_id)
        return self._cipher.encrypt_fields(key, {
            name: _encode_value(value) for name, value in values.items() if value is not None
        }, record)

    def _index_tuples(
        self, out: list[tuple[Any, ...]], tenant: str, schema: CollectionSchema, record_id: str,
        values: Mapping[str, Any],
    ) -> None:
        """Append the blind-index rows of one record's searchable ``values`` to ``out``,
        as ``_BULK_BLIND`` tuples."""
        for name in schema.searchable_fields:
            value = values.get(name)
            if value is None:
                continue
            digest = self._indexer.digest(tenant, schema.name, name,
                                          index_form(schema.fields[name], value))
            out.append((tenant, schema.name, name, digest, record_id))

    def _subject_keys(
        self, tenant: str, subject_ids: Sequence[str], *, create: Sequence[str] = ()
    ) -> dict[str, DataKey]:
        keys: dict[str, DataKey] = {}
        if create:
            for key in self._keystore.create_keys(tenant, create):
                keys[key.subject_id] = key
        existing = [s for s in subject_ids if s not in keys]
        if existing:
            keys.update(self._keystore.get_keys(tenant, existing))
        return keys

    def _view(
        self,
        key: DataKey,
        tenant: str,
        schema: CollectionSchema,
        row: Any,
        readable: frozenset[str],
        maskable: frozenset[str],
        requested: Sequence[str],
        visible: tuple[tuple[str, ...], frozenset[str]] | None = None,
    ) -> Record:
        """The record as the actor sees it. ``visible``: :func:`_visible` of the
        request and the same as a set, when the caller computed them once for many rows."""
        if visible is None:
            shown = _visible(tuple(requested), readable, maskable)
            visible = (shown, frozenset(shown))
        record = RecordContext(tenant, schema.name, row.id, row.subject_id)
        plain, stored = self._cipher.decrypt_framed(key, row.envelopes, record, visible[1])
        if len(plain) == stored and not maskable:
            # Every stored field is requested and readable: the common case (in the
            # order requested, as below).
            try:
                data = {name: raw[1:].decode("utf-8") if raw[:1] == b"s" else _decode_value(raw)
                        for name in visible[0] if (raw := plain.get(name)) is not None}
            except ValueError:
                raise DecryptionError() from None
            return Record(id=row.id, subject_id=row.subject_id, collection=schema.name,
                          data=data, masked=_NO_NAMES, withheld=_NO_NAMES)
        envelopes = decode_envelopes(row.envelopes)
        data = {}
        masked: set[str] = set()
        withheld: set[str] = set()
        for name in requested:
            if name not in envelopes:
                continue
            if name in readable:
                data[name] = _decode_value(plain[name])
            elif name in maskable:
                data[name] = mask(schema.fields[name].mask, _decode_value(plain[name]))
                masked.add(name)
            else:
                withheld.add(name)
        return Record(id=row.id, subject_id=row.subject_id, collection=schema.name, data=data,
                      masked=frozenset(masked), withheld=frozenset(withheld))

    def _read_decisions(
        self, actor: Actor, schema: CollectionSchema, purpose: str, requested: Sequence[str],
        *, action: str, record_ids: Sequence[str] = (),
    ) -> tuple[frozenset[str], frozenset[str]]:
        fields = tuple(requested)
        readable = self._policy.allowed_fields(
            actor.id, actor.tenant, schema.name, "read", purpose, fields)
        maskable = self._policy.allowed_fields(
            actor.id, actor.tenant, schema.name, "read_masked", purpose, fields) - readable
        if not readable and not maskable:
            self._refuse(
                AccessDenied(f"read denied on every requested field of {schema.name}"),
                actor, action, collection=schema.name, purpose=purpose, fields=fields,
                record_ids=record_ids,
            )
        return readable, maskable

    def _requested(
        self, actor: Actor, schema: CollectionSchema, purpose: str,
        fields: Sequence[str] | None, *, action: str, record_ids: Sequence[str] = (),
    ) -> tuple[str, ...]:
        if fields is None:
            return schema.field_names
        if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
            self._refuse(InvalidData("fields must be a sequence of field names", field="fields"),
                         actor, action, collection=schema.name, purpose=purpose,
                         record_ids=record_ids)
        for name in fields:
            if name not in schema.fields:
                self._refuse(
                    UnknownField(f"collection {schema.name} has no such field", field=None),
                    actor, action, collection=schema.name, purpose=purpose,
                    record_ids=record_ids)
        return tuple(dict.fromkeys(fields))

    @staticmethod
    def _disclosed(records: Sequence[Record]) -> tuple[str, ...]:
        names: set[str] = set()
        for record in records:
            names.update(n for n in record.data if n not in record.masked)
            names.update(f"{n}~masked" for n in record.masked)
        return tuple(sorted(names))

    def _commit_read(
        self, actor: Actor, schema: CollectionSchema, purpose: str, action: str,
        records: Sequence[Record], conn: Connection,
    ) -> None:
        self._audit.append(conn, self._read_events(actor, schema, purpose, action, records))

    def _read_events(
        self, actor: Actor, schema: CollectionSchema, purpose: str, action: str,
        records: Sequence[Record],
    ) -> list[AuditEvent]:
        """The audit entries of a read: the same as one event per subject merged by
        :meth:`_group_events`, built in one pass (this runs once per record read)."""
        by_subject: dict[str, list[Record]] = {}
        for record in records:
            by_subject.setdefault(record.subject_id, []).append(record)
        tenant = actor.tenant
        chains = self._audit.chains
        groups: dict[int, tuple[list[str], list[str], set[str]]] = {}
        shown: dict[tuple[tuple[str, ...], frozenset[str]], tuple[str, ...]] = {}
        for subject, recs in by_subject.items():
            pseudonym = self.pseudonym(tenant, subject)
            chain = chain_for((pseudonym,), chains) if len(by_subject) > 1 else 0
            ids, subjects, fields = groups.setdefault(chain, ([], [], set()))
            subjects.append(pseudonym)
            for record in recs:
                ids.append(record.id)
                if not record.masked:  # what _disclosed gives: the names read
                    fields.update(record.data)
                    continue
                shape = (tuple(record.data), record.masked)
                names = shown.get(shape)
                if names is None:
                    names = shown[shape] = self._disclosed([record])
                fields.update(names)
        return [
            AuditEvent(
                tenant=tenant, actor=actor.id, action=action, decision=Decision.ALLOW,
                collection=schema.name, record_ids=tuple(ids),
                subjects=tuple(dict.fromkeys(subjects)), fields=tuple(sorted(fields)),
                purpose=purpose,
            )
            for ids, subjects, fields in groups.values()
        ]

    def _group_events(self, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        """Merge per-subject events of a batch into one entry per audit chain."""
        if len(events) <= 1:
            return list(events)
        groups: dict[int, list[AuditEvent]] = {}
        for event in events:
            groups.setdefault(chain_for(event.subjects, self._audit.chains), []).append(event)
        merged = []
        for group in groups.values():
            first = group[0]
            merged.append(AuditEvent(
                tenant=first.tenant, actor=first.actor, action=first.action,
                decision=first.decision, collection=first.collection,
                record_ids=tuple(r for e in group for r in e.record_ids),
                subjects=tuple(dict.fromkeys(s for e in group for s in e.subjects)),
                fields=tuple(sorted({f for e in group for f in e.fields})),
                purpose=first.purpose, reason=first.reason,
            ))
        return merged

    def _transaction_failed(self, exc: SQLAlchemyError) -> NoReturn:
        log.error("vault_transaction_failed", error_type=type(exc).__name__)
        raise AuditError("the operation and its audit entry could not be committed") from None

    def _load_rows(self, conn: Connection, tenant: str, collection: str,
                   record_ids: Sequence[str]) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for chunk in _chunks(record_ids):
            for row in conn.execute(_SELECT_ROWS, {"in_ids": list(chunk)}):
                if row.tenant == tenant and row.collection == collection:
                    rows[row.id] = row
        return rows

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
        return self.put_many(actor, collection, [data], purpose=purpose,
                             subject_ids=[subject_id], jurisdiction=jurisdiction)[0]

    def put_many(
        self,
        actor: Actor,
        collection: str,
        items: Sequence[Mapping[str, Any]],
        *,
        purpose: str,
        subject_ids: Sequence[str | None] | None = None,
        jurisdiction: str | None = None,
    ) -> list[str]:
        """Store many records in one transaction with one audit entry per chain touched.

        Same rules as :meth:`put`; ``subject_ids`` (if given) pairs each item with a
        subject. Either every record is stored or none is.

        Returns:
            The new record ids, in the order of ``items``.
        """
        actor, schema, purpose = self._begin(actor, "write", collection, purpose)
        if isinstance(items, Mapping) or not isinstance(items, Sequence):
            self._refuse(InvalidData("items must be a sequence of mappings"), actor, "write",
                         collection=schema.name, purpose=purpose)
        if subject_ids is None:
            subject_ids = [None] * len(items)
        if len(subject_ids) != len(items):
            self._refuse(InvalidData("subject_ids must pair one-to-one with items"), actor,
                         "write", collection=schema.name, purpose=purpose)
        if jurisdiction is not None and (
            not isinstance(jurisdiction, str) or not _JURISDICTION.fullmatch(jurisdiction)
        ):
            self._refuse(InvalidData("jurisdiction must look like EU, US-CA or CN",
                                     field="jurisdiction"),
                         actor, "write", collection=schema.name, purpose=purpose)
        for sid in subject_ids:
            if sid is not None:
                try:
                    check_identifier(sid, "subject_id")
                except InvalidData as exc:
                    self._refuse(exc, actor, "write", collection=schema.name, purpose=purpose)
        values = [
            self._validate(actor, schema, item, action="write", purpose=purpose, partial=False)
            for item in items
        ]
        written = sorted({name for v in values for name, x in v.items() if x is not None})
        self._require(actor, schema, "write", purpose, written)
        if not items:
            return []

        tenant = actor.tenant
        now = self._clock.now()
        given = sorted({s for s in subject_ids if s is not None})
        known: set[str] = set()
        if given:
            with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                for chunk in _chunks(given):
                    for sid, stored in conn.execute(
                        select(_SUBJECTS.c.subject_id, _SUBJECTS.c.jurisdiction)
                        .where(_SUBJECTS.c.tenant == tenant, _SUBJECTS.c.subject_id.in_(chunk))
                    ):
                        known.add(sid)
                        if jurisdiction is not None and stored != jurisdiction:
                            # Recorded at creation; a different one here is a
                            # conflict, not a change (set_jurisdiction is audited).
                            # The message does not say which one: a writer may not
                            # read a subject's jurisdiction (subjects.get needs
                            # consent.manage). The refusal is the subject's business.
                            conn.rollback()
                            self._refuse(InvalidData(
                                f"a subject of this write already has another jurisdiction "
                                f"than {jurisdiction}; change it with "
                                "subjects.set_jurisdiction", field="jurisdiction"),
                                actor, "write", collection=schema.name, purpose=purpose,
                                subjects=(self.pseudonym(tenant, sid),))
                conn.rollback()
        subjects = [s if s is not None else _new_id() for s in subject_ids]
        new_subjects = list(dict.fromkeys(s for s in subjects if s not in known))
        gate_events = self._gate_write(actor, schema, purpose, subjects, written,
                                       {s: jurisdiction for s in new_subjects})
        try:
            keys = self._subject_keys(tenant, subjects, create=self._creatable(
                tenant, new_subjects, set(given)))
        except KeyDestroyed as exc:
            self._refuse(exc, actor, "write", collection=schema.name, purpose=purpose,
                         fields=written)

        record_rows: list[dict[str, Any]] = []
        index_rows: list[tuple[Any, ...]] = []
        # One pseudonym per subject, used by the subject rows and the audit entries.
        pseudonyms = {s: self.pseudonym(tenant, s) for s in dict.fromkeys(subjects)}
        # The audit entries, grouped by chain as _group_events would merge one event
        # per record, without building those 10,000 events first.
        chains = self._audit.chains
        groups: dict[int, tuple[list[str], list[str], set[str]]] = {}
        for subject, value in zip(subjects, values, strict=True):
            record_id = _new_id()
            plaintexts = {name: _encode_value(x) for name, x in value.items() if x is not None}
            record_rows.append({
                "id": record_id, "tenant": tenant, "collection": schema.name,
                "subject_id": subject,
                "envelopes": self._cipher.encrypt_framed(
                    keys[subject], plaintexts,
                    RecordContext(tenant, schema.name, record_id, subject)),
                "created_at": now, "updated_at": now, "version": 1,
            })
            self._index_tuples(index_rows, tenant, schema, record_id, value)
            pseudonym = pseudonyms[subject]
            ids, named, fields = groups.setdefault(chain_for((pseudonym,), chains),
                                                   ([], [], set()))
            ids.append(record_id)
            named.append(pseudonym)
            fields.update(plaintexts)
        events = [
            AuditEvent(tenant=tenant, actor=actor.id, action="write", decision=Decision.ALLOW,
                       collection=schema.name, record_ids=tuple(ids),
                       subjects=tuple(dict.fromkeys(named)), fields=tuple(sorted(fields)),
                       purpose=purpose)
            for ids, named, fields in groups.values()
        ]
        try:
            for attempt in transaction_attempts():
                with attempt, self._engine.begin() as conn:
                    if new_subjects:
                        _BULK_SUBJECTS.execute(conn, [
                            (tenant, s, pseudonyms[s], jurisdiction, now) for s in new_subjects
                        ])
                    _BULK_RECORDS.execute(conn, [
                        (r["id"], tenant, schema.name, r["subject_id"], r["envelopes"], now, now, 1)
                        for r in record_rows
                    ])
                    self.retention._on_insert(conn, tenant, schema, record_rows, values,
                                              new_subjects, jurisdiction)
                    _BULK_BLIND.execute(conn, index_rows)
                    self._audit.append(conn, events)
                    self._audit.append(conn, gate_events)
        except SQLAlchemyError as exc:
            self._transaction_failed(exc)
        return [row["id"] for row in record_rows]

    def _creatable(self, tenant: str, new_subjects: Sequence[str],
                   given: set[str]) -> list[str]:
        """New subjects that need a data key.

        Only caller-supplied subject ids can already have one (from a write
        interrupted between the key store and the data database); generated
        ids are fresh. A destroyed key raises KeyDestroyed: the id is burnt.
        """
        maybe = [s for s in new_subjects if s in given]
        present = self._keystore.existing(tenant, maybe) if maybe else {}
        if any(present.values()):
            raise KeyDestroyed("the data subject's key was destroyed (crypto-shredded)")
        return [s for s in new_subjects if s not in present]

    def update(
        self,
        actor: Actor,
        collection: str,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        purpose: str,
    ) -> None:
        """Change some fields of a record; a value of None removes an optional field.

        Raises:
            InvalidData, AccessDenied, NotFound, KeyDestroyed, AuditError.
        """
        actor, schema, purpose = self._begin(actor, "update", collection, purpose)
        rid = self._record_id(actor, schema, purpose, record_id, "update")
        values = self._validate(actor, schema, changes, action="update", purpose=purpose,
                                partial=True, record_ids=[rid])
        if not values:
            self._refuse(InvalidData("no changes given"), actor, "update",
                         collection=schema.name, purpose=purpose, record_ids=[rid])
        self._require(actor, schema, "write", purpose, sorted(values), audit_action="update",
                      record_ids=[rid])
        tenant = actor.tenant
        try:
            for attempt in transaction_attempts():
                with attempt, self._engine.begin() as conn:
                    row = self._load_rows(conn, tenant, schema.name, [rid]).get(rid)
                    if row is None:
                        raise NotFound(f"no record {rid} in {schema.name}")
                    refused, gate_events = self._consent_gate(
                        conn, actor, schema, purpose, [row.subject_id], sorted(values))
                    if refused:
                        raise self._consent_error(purpose, refused)
                    pseudonym = self.pseudonym(tenant, row.subject_id)
                    key = self._keystore.get_key(tenant, row.subject_id)
                    envelopes = decode_envelopes(row.envelopes)
                    envelopes.update(self._encrypt_fields(key, tenant, schema, rid,
                                                          row.subject_id, values))
                    for name, value in values.items():
                        if value is None:
                            envelopes.pop(name, None)
                    conn.execute(
                        update(_RECORDS).where(_RECORDS.c.id == rid).values(
                            envelopes=encode_envelopes(envelopes), updated_at=self._clock.now(),
                            version=_RECORDS.c.version + 1)
                    )
                    self.retention._on_update(conn, tenant, [rid])
                    touched = [n for n in values if n in schema.searchable_fields]
                    if touched:
                        conn.execute(delete(_BLIND).where(_BLIND.c.record_id == rid,
                                                          _BLIND.c.field.in_(touched)))
                        rows: list[tuple[Any, ...]] = []
                        self._index_tuples(rows, tenant, schema, rid,
                                           {n: values[n] for n in touched})
                        _BULK_BLIND.execute(conn, rows)
                    self._audit.append(conn, [AuditEvent(
                        tenant=tenant, actor=actor.id, action="update", decision=Decision.ALLOW,
                        collection=schema.name, record_ids=(rid,), subjects=(pseudonym,),
                        fields=tuple(sorted(values)), purpose=purpose,
                    )])
                    self._audit.append(conn, gate_events)
        except _CONSENT_REFUSALS as exc:
            self._refuse(exc, actor, "update", collection=schema.name, purpose=purpose,
                         record_ids=[rid])
        except (NotFound, KeyDestroyed, DecryptionError) as exc:
            self._refuse(exc, actor, "update", collection=schema.name, purpose=purpose,
                         record_ids=[rid], decision=Decision.ERROR)
        except SQLAlchemyError as exc:
            self._transaction_failed(exc)

    def delete(self, actor: Actor, collection: str, record_id: str, *, purpose: str) -> None:
        """Delete a record and its blind-index entries.

        The actor needs ``delete`` on every field of the collection.
        """
        actor, schema, purpose = self._begin(actor, "delete", collection, purpose)
        rid = self._record_id(actor, schema, purpose, record_id, "delete")
        self._require(actor, schema, "delete", purpose, schema.field_names, record_ids=[rid])
        tenant = actor.tenant
        try:
            for attempt in transaction_attempts():
                with attempt, self._engine.begin() as conn:
                    row = self._load_rows(conn, tenant, schema.name, [rid]).get(rid)
                    if row is None:
                        raise NotFound(f"no record {rid} in {schema.name}")
                    ensure_not_held(conn, tenant, row.subject_id, self._clock.now())
                    conn.execute(delete(_BLIND).where(_BLIND.c.record_id == rid))
                    conn.execute(delete(_RECORDS).where(_RECORDS.c.id == rid))
                    self._audit.append(conn, [AuditEvent(
                        tenant=tenant, actor=actor.id, action="delete", decision=Decision.ALLOW,
                        collection=schema.name, record_ids=(rid,),
                        subjects=(self.pseudonym(tenant, row.subject_id),),
                        fields=tuple(sorted(decode_envelopes(row.envelopes))), purpose=purpose,
                    )])
        except (NotFound, LegalHoldActive) as exc:
            self._refuse(exc, actor, "delete", collection=schema.name, purpose=purpose,
                         record_ids=[rid], decision=Decision.ERROR)
        except SQLAlchemyError as exc:
            self._transaction_failed(exc)

    def _record_id(self, actor: Actor, schema: CollectionSchema, purpose: str,
                   record_id: object, action: str) -> str:
        try:
            return check_identifier(record_id, "record_id")
        except InvalidData as exc:
            self._refuse(exc, actor, action, collection=schema.name, purpose=purpose)

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
        actor, schema, purpose = self._begin(actor, "read", collection, purpose)
        rid = self._record_id(actor, schema, purpose, record_id, "read")
        return self._read(actor, schema, purpose, [rid], fields, action="read")[0]

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
        actor, schema, purpose = self._begin(actor, "read", collection, purpose)
        if isinstance(record_ids, str) or not isinstance(record_ids, Sequence):
            self._refuse(InvalidData("record_ids must be a sequence of ids"), actor, "read",
                         collection=schema.name, purpose=purpose)
        ids = [self._record_id(actor, schema, purpose, r, "read") for r in record_ids]
        if not ids:
            return []
        return self._read(actor, schema, purpose, ids, fields, action="read")

    def _read(
        self,
        actor: Actor,
        schema: CollectionSchema,
        purpose: str,
        ids: Sequence[str],
        fields: Sequence[str] | None,
        *,
        action: str,
        must_exist: bool = True,
        verify: Mapping[str, str] | None = None,
    ) -> list[Record]:
        requested = self._requested(actor, schema, purpose, fields, action=action,
                                    record_ids=ids)
        readable, maskable = self._read_decisions(actor, schema, purpose, requested,
                                                  action=action, record_ids=ids)
        tenant = actor.tenant
        unique_ids = list(dict.fromkeys(ids))
        rows: dict[str, Any] = {}
        refused: dict[str, Verdict] = {}
        try:
            for attempt in transaction_attempts():
                with attempt, self._engine.begin() as conn:
                    rows = self._load_rows(conn, tenant, schema.name, unique_ids)
                    missing = [r for r in unique_ids if r not in rows]
                    if missing and must_exist:
                        raise NotFound(f"{len(missing)} record(s) not found in {schema.name}: "
                                       f"{', '.join(missing[:5])}")
                    subject_ids = list(dict.fromkeys(row.subject_id for row in rows.values()))
                    refused, gate_events = self._consent_gate(
                        conn, actor, schema, purpose, subject_ids,
                        [f for f in requested if f in readable or f in maskable],
                        loaded=rows)
                    if refused and must_exist:
                        raise self._consent_error(purpose, refused)
                    if refused:  # find: the refused subjects' records are withheld
                        gate_events += self._withheld_events(actor, schema, purpose, action,
                                                             rows, refused)
                        subject_ids = [s for s in subject_ids if s not in refused]
                    try:
                        keys = self._keystore.get_keys(tenant, subject_ids)
                    except KeyDestroyed:
                        if must_exist:
                            raise
                        keys = self._live_keys(tenant, subject_ids)
                    records: dict[str, Record] = {}
                    shown = _visible(tuple(requested), readable, maskable)
                    visible = (shown, frozenset(shown))
                    for rid in unique_ids:
                        row = rows.get(rid)
                        if row is None or row.subject_id not in keys:
                            continue
                        if verify and not self._matches(keys[row.subject_id], tenant, schema, row,
                                                        verify):
                            continue
                        records[rid] = self._view(keys[row.subject_id], tenant, schema, row,
                                                  readable, maskable, requested, visible)
                    result = [records[r] for r in ids if r in records]
                    self._commit_read(actor, schema, purpose, action, list(records.values()), conn)
                    self._audit.append(conn, gate_events)
        except _CONSENT_REFUSALS as exc:
            self._refuse(exc, actor, action, collection=schema.name, purpose=purpose,
                         record_ids=list(unique_ids[:50]),
                         subjects=[self.pseudonym(tenant, s) for s in list(refused)[:50]])
        except (NotFound, KeyDestroyed, DecryptionError) as exc:
            subjects = []
            if isinstance(exc, KeyDestroyed | DecryptionError):
                subjects = [self.pseudonym(tenant, r.subject_id) for r in rows.values()][:50]
            self._refuse(exc, actor, action, collection=schema.name, purpose=purpose,
                         record_ids=list(unique_ids[:50]), subjects=subjects,
                         decision=Decision.ERROR)
        except SQLAlchemyError as exc:
            self._transaction_failed(exc)
        return result

    def _live_keys(self, tenant: str, subject_ids: Sequence[str]) -> dict[str, DataKey]:
        keys = {}
        for sid in subject_ids:
            try:
                keys[sid] = self._keystore.get_key(tenant, sid)
            except (KeyDestroyed, NotFound):
                continue
        return keys

    def _matches(self, key: DataKey, tenant: str, schema: CollectionSchema, row: Any,
                 wanted: Mapping[str, str]) -> bool:
        """Re-check a blind-index hit on the decrypted value (truncated digests collide)."""
        envelopes = decode_envelopes(row.envelopes)
        for name, normalized in wanted.items():
            env = envelopes.get(name)
            if env is None:
                return False
            value = _decode_value(self._cipher.decrypt(
                key, env, self._context(tenant, schema, row.id, name, row.subject_id)))
            if index_form(schema.fields[name], value) != normalized:
                return False
        return True

    def find(self, actor: Actor, collection: str, *, purpose: str, **equals: Any) -> list[Record]:
        """Find records whose searchable fields equal the given values.

        Matching uses blind indexes (keyed HMACs of normalised values): the
        store never decrypts the collection to search it. The actor needs
        ``search`` on each field used and ``read``/``read_masked`` to see results.

        Raises:
            InvalidData: no criteria, a field that is not searchable, a malformed value.
            AccessDenied: search not permitted on a field (audited).
        """
        actor, schema, purpose = self._begin(actor, "search", collection, purpose)
        if not equals:
            self._refuse(InvalidData("find needs at least one field=value criterion"), actor,
                         "search", collection=schema.name, purpose=purpose)
        wanted: dict[str, str] = {}
        for name, value in equals.items():
            try:
                spec: FieldSpec = schema.field(name)
                if not spec.searchable:
                    raise InvalidData(f"field {name} is not searchable", field=name)
                wanted[name] = normalize_for_index(spec, value)
            except InvalidData as exc:
                fields = [name] if name in schema.fields else []
                self._refuse(exc, actor, "search", collection=schema.name, purpose=purpose,
                             fields=fields)
        self._require(actor, schema, "search", purpose, sorted(wanted))
        tenant = actor.tenant
        with self._engine.connect() as conn:
            ids: set[str] | None = None
            for name, normalized in wanted.items():
                digest = self._indexer.digest(tenant, schema.name, name, normalized)
                hits = set(conn.execute(
                    select(_BLIND.c.record_id).where(
                        _BLIND.c.tenant == tenant, _BLIND.c.collection == schema.name,
                        _BLIND.c.field == name, _BLIND.c.digest == digest)
                ).scalars())
                ids = hits if ids is None else ids & hits
            conn.rollback()
        return self._read(actor, schema, purpose, sorted(ids or ()), None, action="search",
                          must_exist=False, verify=wanted)

    # ------------------------------------------------------------------ consent

    @staticmethod
    def _load_consent_policies(
        policies_dir: Path, purposes: PurposeRegistry,
    ) -> tuple[JurisdictionRegistry, NoticeRegistry]:
        """Jurisdiction profiles and notices, cross-checked against the purposes."""
        return (load_jurisdictions(policies_dir / "jurisdictions.toml", purposes),
                load_notices(policies_dir / "notices.toml", purposes))

    @property
    def jurisdictions(self) -> JurisdictionRegistry:
        return self._jurisdictions

    @property
    def notices(self) -> NoticeRegistry:
        return self._notices

    def _consent_gate(
        self, conn: Connection | None, actor: Actor, schema: CollectionSchema, purpose: str,
        subject_ids: Sequence[str], fields: Sequence[str], *,
        new_subjects: Mapping[str, str | None] | None = None,
        loaded: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Verdict], list[AuditEvent]]:
        """Consent, restriction and cross-border checks for every subject a call touches.

        The one place the data path asks the consent layer: one batched lookup
        of the subjects' jurisdictions, restriction flags and consent states for
        ``purpose`` (per 500 subjects), then the pure per-subject decision of
        :func:`vault.consent.decide` for the ``fields`` used. Subjects in
        ``new_subjects`` (being created by this write, with their jurisdiction)
        have no consent yet. ``loaded``: the record rows read in ``conn`` (with
        their subjects' ``restricted_at`` and ``jurisdiction``) of every subject
        in ``subject_ids``, so that a use decided by restriction alone reads nothing more.

        Returns:
            The refused subjects with their verdicts, and audit events naming the
            transfer mechanism relied on for allowed cross-border access (to be
            appended in the caller's transaction).
        """
        specs = [schema.fields[f] for f in fields]
        use = Use(purpose=self._purposes.get(purpose),
                  categories=frozenset(spec.category for spec in specs),
                  fields=tuple((spec.name, spec.classification.value, spec.category)
                               for spec in specs),
                  region=actor.region, recipient=actor.recipient)
        new = new_subjects or {}
        existing = [s for s in dict.fromkeys(subject_ids) if s not in new]
        uniform = self.consent.depends_only_on_restriction(use)
        facts: dict[str, SubjectFacts] = {}
        if existing:
            if uniform and loaded is not None:
                facts = self._restricted_of(loaded, existing)
            elif conn is None:  # fail closed: stored subjects are never judged unread
                raise AssertionError("the consent gate needs a connection for stored subjects")
            else:
                facts = self.consent.subject_facts(conn, actor.tenant, existing, purpose,
                                                   restricted_only=uniform)
        for sid in existing:
            # Not found: unrestricted when only restriction matters, else the default regime.
            facts.setdefault(sid, SubjectFacts(sid, None, False, {}))
        # New subjects have no consent state and no restriction: decide_many gives
        # them one shared verdict per jurisdiction, so one of each is enough.
        firsts: dict[str | None, str] = {}
        for sid, code in new.items():
            if firsts.setdefault(code, sid) == sid:
                facts[sid] = SubjectFacts(sid, code, False, {})
        decided = self.consent.decide_many(facts, use)
        # In the order of one fact per subject: the stored subjects, then the new ones.
        verdicts = {sid: v for sid, v in decided.items() if sid not in new}
        for sid, code in new.items():
            verdicts[sid] = decided[firsts[code]]
        refused = {sid: v for sid, v in verdicts.items() if not v.allowed}
        transfers = [
            AuditEvent(tenant=actor.tenant, actor=actor.id, action="transfer",
                       decision=Decision.ALLOW, collection=schema.name,
                       subjects=(self.pseudonym(actor.tenant, sid),), fields=tuple(fields),
                       purpose=purpose, reason=f"{v.mechanism}:to:{actor.region}"[:64])
            for sid, v in verdicts.items() if v.allowed and v.mechanism is not None
        ]
        return refused, self._group_events(transfers)

    @staticmethod
    def _restricted_of(loaded: Mapping[str, Any],
                       subject_ids: Sequence[str]) -> dict[str, SubjectFacts]:
        """The restricted subjects among the loaded rows' (what
        ``subject_facts(..., restricted_only=True)`` would read)."""
        wanted = set(subject_ids)
        facts: dict[str, SubjectFacts] = {}
        for row in loaded.values():
            if row.restricted_at is not None and row.subject_id in wanted:
                facts[row.subject_id] = SubjectFacts(row.subject_id, row.jurisdiction, True, {})
        missing = wanted.difference(row.subject_id for row in loaded.values())
        if missing:  # fail closed: every subject judged must have come with its rows
            raise AssertionError("the consent gate was given rows missing some subjects")
        return facts

    def _gate_write(
        self, actor: Actor, schema: CollectionSchema, purpose: str, subjects: Sequence[str],
        fields: Sequence[str], new_subjects: Mapping[str, str | None],
    ) -> list[AuditEvent]:
        """:meth:`_consent_gate` before a write: refuse the whole batch (audited) if
        any subject is refused; otherwise return the transfer audit events."""
        if all(s in new_subjects for s in subjects):
            # Only subjects this write creates: nothing stored to look up.
            refused, events = self._consent_gate(None, actor, schema, purpose, subjects,
                                                 fields, new_subjects=new_subjects)
        else:
            with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                refused, events = self._consent_gate(conn, actor, schema, purpose, subjects,
                                                     fields, new_subjects=new_subjects)
                conn.rollback()
        if refused:
            self._refuse(self._consent_error(purpose, refused), actor, "write",
                         collection=schema.name, purpose=purpose, fields=fields,
                         subjects=[self.pseudonym(actor.tenant, s) for s in list(refused)[:50]])
        return events

    def _withheld_events(
        self, actor: Actor, schema: CollectionSchema, purpose: str, action: str,
        rows: Mapping[str, Any], refused: Mapping[str, Verdict],
    ) -> list[AuditEvent]:
        """Denial entries for search hits withheld because their subject was refused."""
        events = [
            AuditEvent(tenant=actor.tenant, actor=actor.id, action=action,
                       decision=Decision.DENY, collection=schema.name, record_ids=(rid,),
                       subjects=(self.pseudonym(actor.tenant, row.subject_id),),
                       purpose=purpose,
                       reason=(refused[row.subject_id].refusal or Refusal.CONSENT_REQUIRED).value)
            for rid, row in rows.items() if row.subject_id in refused
        ]
        return self._group_events(events)

    @staticmethod
    def _consent_error(purpose: str, refused: Mapping[str, Verdict]) -> VaultError:
        """One error for a refused batch: the most fundamental refusal wins."""
        order = list(Refusal)
        verdict = min(refused.values(),
                      key=lambda v: order.index(v.refusal) if v.refusal else len(order))
        refusal = verdict.refusal or Refusal.CONSENT_REQUIRED
        scope = verdict.scope.value if verdict.scope else None
        reason = f"{refusal.value}:{scope}" if scope else refusal.value
        count = len(refused)
        message = (f"{purpose} refused for {count} subject(s) under {verdict.regime}: "
                   f"{refusal.value}" + (f" ({scope} consent)" if scope else ""))
        if refusal is Refusal.RESTRICTED:
            return SubjectRestricted(message, reason=reason, purpose=purpose, subjects=count)
        if refusal in (Refusal.TRANSFER_REFUSED, Refusal.LOCALISATION):
            return TransferRefused(message, reason=reason, purpose=purpose, subjects=count)
        return ConsentRequired(message, reason=reason, purpose=purpose, scope=scope,
                               subjects=count)

    def _on_consent_withdrawn(self, conn: Connection, tenant: str, subject_id: str,
                              purpose: str, at: dt.datetime, actor: Actor | None) -> None:
        """Called in the transaction that records a withdrawal of consent to
        ``purpose``, when the subject's profile sets ``erase_on_withdrawal`` (PIPL
        Art. 47(1)(3)): the withdrawal and the deletion it queues commit together.

        Queues proactive deletion: the withdrawal is recorded as the subject's
        ``consent_withdrawn`` retention event, which makes the categories whose
        rules run from it (e.g. ``marketing``, deleted at once) expire, and the
        next retention sweep deletes them (legal holds still apply). Idempotent.
        """
        self.retention._apply_event(conn, tenant, subject_id, RetentionEvent.CONSENT_WITHDRAWN,
                                    at.astimezone(dt.UTC), actor, "retention.event")

    def _on_consent_granted(self, conn: Connection, tenant: str, subject_id: str,
                            purpose: str, actor: Actor | None) -> None:
        """Called in the transaction that records a general consent under a profile
        with ``erase_on_withdrawal``, once no general consent of the subject is left
        withdrawn: the deletion an earlier withdrawal queued is called off (the
        ``consent_withdrawn`` event is cleared)."""
        self.retention._apply_event(conn, tenant, subject_id, RetentionEvent.CONSENT_WITHDRAWN,
                                    None, actor, "retention.event_clear")

    # ------------------------------------------------------------------ subjects

    def subject_records(self, tenant: str, subject_id: str) -> list[str]:
        """Ids of every record of a subject (ids only; no data, no audit)."""
        with self._engine.connect() as conn:
            return list(conn.execute(
                select(_RECORDS.c.id).where(_RECORDS.c.tenant == tenant,
                                            _RECORDS.c.subject_id == subject_id)
                .order_by(_RECORDS.c.created_at)
            ).scalars())

    def _forget_index(self, tenant: str, subject_id: str, *,
                      audit: AuditEvent | None = None) -> None:
        """Remove the blind-index entries of a subject (they are linkable tokens),
        and append ``audit`` in the same transaction (one commit, not two)."""
        with self._engine.begin() as conn:
            ids = select(_RECORDS.c.id).where(_RECORDS.c.tenant == tenant,
                                              _RECORDS.c.subject_id == subject_id)
            conn.execute(delete(_BLIND).where(_BLIND.c.record_id.in_(ids)))
            if audit is not None:
                self._audit.append(conn, [audit])

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def keystore(self) -> KeyStore:
        return self._keystore

    @property
    def policy_engine(self) -> CasbinPolicyEngine:
        return self._policy

    @property
    def audit_log(self) -> AuditLog:
        return self._audit

    @property
    def vault_id(self) -> str:
        """This vault's id (named in signed audit checkpoints)."""
        return self._vault_id

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def is_embedded(self) -> bool:
        return is_sqlite(self._engine)

    def _now(self) -> dt.datetime:
        return self._clock.now()
