"""Bootstrap: create, upgrade or open a vault's databases and build its :class:`Kernel`.

``init`` validates every policies file before it creates anything, so a broken
file leaves no half-made vault. ``open`` refuses a vault that was never
initialised or needs migrating. ``upgrade`` migrates the data database, gives
records written before retention existed their expiry and opens the vault.
Each records the configuration it ran with (:mod:`vault.audit.config`).

SQLite database files (data and key store, with their ``-wal``/``-shm``) are
created 0600; ``init`` and ``open`` refuse one that group or others may read or
write, as the key file is refused (:func:`vault.store.engine.check_private_files`).
``upgrade`` tightens such files to 0600 instead and audits it, because it is
the operator's step that brings an existing vault up to date.

The KEKs come from the provider the ``key_provider`` setting names (the key
file by default; a PKCS#11 token; AWS KMS), seen through a
:class:`~vault.crypto.chain.ProviderChain` that also holds the providers a
migration recorded in the key store. A vault on an HSM or KMS has no key
file: its root keys are created by ``init`` in the key store, wrapped under
the KEK, and unwrapped by every open.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from vault._kernel import seals
from vault._kernel.kernel import Kernel, Rules
from vault.audit.chain import AuditEvent, Decision
from vault.audit.config import config_items, record_config
from vault.audit.log import AuditLog
from vault.clock import Clock, SystemClock
from vault.config import VaultSettings
from vault.crypto.blind_index import BlindIndexer
from vault.crypto.chain import ProviderChain
from vault.crypto.envelope import AESGCMFieldCipher
from vault.crypto.keys import KeyProvider, LocalKeyProvider, RootKeys
from vault.crypto.keystore import KeyStore
from vault.crypto.providers import ProviderSpec, open_provider, parse_provider_uri
from vault.crypto.pseudonym import Pseudonymizer
from vault.errors import ConfigError, KeyManagementError, ShreddingIncomplete, VaultError
from vault.logging import get_logger
from vault.policy.engine import CasbinPolicyEngine
from vault.retention import expiry
from vault.store import migrate
from vault.store.engine import check_private_files, make_engine
from vault.store.erasures import backfill_markers, erased_among, mark_erased
from vault.store.tables import BLIND_INDEX, ERASED_SUBJECTS, META, RECORDS
from vault.types import actor_id

__all__ = ["init", "open_kernel", "provider_opener", "settings_of", "upgrade"]

log = get_logger(__name__)


def settings_of(
    home: str | os.PathLike[str] | None,
    settings: VaultSettings | None,
    **values: Any,
) -> VaultSettings:
    """The settings of a call to ``Vault.init``/``open``/``upgrade``: ``settings`` as
    given, or built from ``home`` and the individual options (not both).

    Raises:
        ConfigError: both were given, or a value is wrong.
    """
    if settings is not None:
        if home is not None or any(v is not None for v in values.values()):
            raise ConfigError("pass either settings= or individual options, not both")
        return settings
    if isinstance(values.get("key_provider"), os.PathLike):
        values["key_provider"] = os.fspath(values["key_provider"])
    for name in ("key_file", "policies"):
        if name in values:
            values[name] = Path(values[name]) if values[name] else None
    return VaultSettings.build(home=Path(home) if home is not None else None, **values)


def _check_files(cfg: VaultSettings, *, tighten: bool = False) -> list[str]:
    """Refuse (or, with ``tighten``, make 0600) SQLite database files that group or
    others may access; returns the names of the files tightened."""
    return [path.name for url in (cfg.resolved_database_url, cfg.resolved_keystore_url)
            for path in check_private_files(url, tighten=tighten)]


def _check_separation(cfg: VaultSettings) -> None:
    if cfg.resolved_database_url == cfg.resolved_keystore_url:
        raise ConfigError(
            "the key store must be a different database from the data database, "
            "or crypto-shredding would not survive a restored data backup"
        )


def _spec(cfg: VaultSettings) -> ProviderSpec:
    return parse_provider_uri(cfg.key_provider)


def _key_path(cfg: VaultSettings, spec: ProviderSpec) -> Path:
    return spec.path or cfg.resolved_key_file


def provider_opener(cfg: VaultSettings) -> Callable[[str], KeyProvider]:
    """Opens a provider from a URI (of the key store's ``key_providers`` or given to
    ``keys migrate``) with this process's PIN and key-file settings."""

    def opener(uri: str) -> KeyProvider:
        return open_provider(parse_provider_uri(uri), key_file=cfg.resolved_key_file,
                             pin=cfg.pkcs11_pin_value())

    return opener


def _open_configured(cfg: VaultSettings) -> KeyProvider:
    """The provider the settings name; it must exist (refused before anything else)."""
    spec = _spec(cfg)
    return open_provider(spec, key_file=_key_path(cfg, spec), pin=cfg.pkcs11_pin_value())


def _keystore(cfg: VaultSettings, engine: Engine, chain: ProviderChain, clock: Clock, *,
              vault_id: str) -> KeyStore:
    return KeyStore(engine, chain, cache_size=cfg.dek_cache_size, clock=clock,
                    destroyed_check=cfg.destroyed_check_seconds, vault_id=vault_id,
                    open_provider=provider_opener(cfg))


def init(cfg: VaultSettings, clock: Clock | None = None) -> Kernel:
    """The kernel of :meth:`Vault.init <vault.Vault.init>`: KEK (key file, or in the
    HSM or KMS), key store (with the root keys when there is no key file), schema,
    default policy and the first configuration snapshot (``vault.init``)."""
    _check_separation(cfg)
    spec = _spec(cfg)
    if cfg.database_url is None or cfg.keystore_url is None or (
            spec.is_file and cfg.key_file is None and spec.path is None):
        cfg.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_files(cfg)
    key_path = _key_path(cfg, spec)
    if spec.is_file and key_path.exists():
        raise ConfigError(f"a key file already exists at {key_path}; this vault is initialised")
    # Validate policies before creating anything, so a broken file leaves no half-made vault.
    policies_dir = cfg.resolved_policies
    rules = Rules.load(policies_dir)
    data_engine = make_engine(cfg.resolved_database_url,
                              sqlite_synchronous=cfg.sqlite_synchronous)
    with data_engine.connect() as conn:
        if migrate.current_revision(data_engine) is not None or conn.dialect.has_table(
            conn, "vault_meta"
        ):
            data_engine.dispose()
            raise ConfigError("the data database is already initialised")
    try:
        if spec.is_file:
            provider: KeyProvider = LocalKeyProvider.create(key_path)
        else:  # the KEK is made in the token or KMS, or the one the URI names is used
            provider = open_provider(spec, key_file=key_path, create=True,
                                     pin=cfg.pkcs11_pin_value())
    except BaseException:
        data_engine.dispose()
        raise
    migrate.upgrade(data_engine)
    keystore_engine = make_engine(cfg.resolved_keystore_url,
                                  sqlite_synchronous=cfg.sqlite_synchronous)
    clk = clock or SystemClock()
    vault_id = uuid.uuid4().hex
    chain = ProviderChain(provider)
    keystore = _keystore(cfg, keystore_engine, chain, clk, vault_id=vault_id)
    keystore.create_schema()
    if isinstance(provider, LocalKeyProvider):
        root_keys = provider.root_keys()
    else:
        root_keys = RootKeys.generate()
        keystore.store_root_keys(root_keys)
    audit_log = AuditLog(data_engine, chains=cfg.audit_chains, clock=clk)
    with data_engine.begin() as conn:
        conn.execute(
            insert(META),
            [
                {"key": "audit_chains", "value": str(cfg.audit_chains)},
                {"key": "created_at", "value": clk.now().isoformat()},
                {"key": "format", "value": "1"},
                {"key": "vault_id", "value": vault_id},
            ],
        )
        # A new vault seals every record it writes: no seal is ever pending.
        conn.execute(update(META).where(META.c.key == seals.SEALS_KEY).values(value=seals.DONE))
        audit_log.create_heads(conn)
    policy = CasbinPolicyEngine(
        data_engine, policies_dir / "model.conf", clock=clk,
        refresh_interval=cfg.policy_refresh_seconds,
    )
    loaded = policy.load_defaults(policies_dir / "policy.csv")
    kernel = _assemble(cfg, rules, data_engine, keystore_engine, chain, policy, clk,
                       vault_id=vault_id, chains=cfg.audit_chains, keystore=keystore,
                       root_keys=root_keys)
    try:
        with data_engine.begin() as conn:  # no record yet: no expiry to recompute
            expiry.store_fingerprint(conn, _fingerprint(rules), clk.now())
        kernel.audit("vault.init", reason=f"rules:{loaded}:keys:{provider.kind}")
        _record_config(kernel)
    except BaseException:
        kernel.close()
        raise
    return kernel


def upgrade(cfg: VaultSettings, clock: Clock | None = None) -> Kernel:
    """The kernel of :meth:`Vault.upgrade <vault.Vault.upgrade>` (migrate, backfill
    expiries, make SQLite database files 0600, open; idempotent and audited)."""
    _check_separation(cfg)
    _open_configured(cfg).close()  # refuse before touching anything
    tightened = _check_files(cfg, tighten=True)
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
    # Not the crash recovery of open: tombstones without markers are, here, the
    # subjects shredded before markers existed, which get theirs below.
    kernel = open_kernel(cfg, clock, recover_erasures=False)
    try:
        rules = kernel.rules
        added = expiry.backfill(kernel.engine, rules.schedule, rules.schemas,
                                regime_for=rules.jurisdictions.regime_for)
        if before != migrate.head_revision() or added:
            kernel.audit("vault.upgrade",
                         reason=f"{before}>{migrate.head_revision()}:expiry:{added}")
        if tightened:
            kernel.audit("vault.upgrade", reason=f"file_mode_600:{','.join(tightened)}")
        # Subjects shredded before erasure markers existed get theirs now, from the
        # key store's tombstones (before an older key store could be restored).
        marked = backfill_markers(kernel.engine, kernel.keystore.destroyed_subjects(),
                                  kernel.pseudonym, kernel.clock.now())
        if marked:
            kernel.audit("vault.upgrade", reason=f"erased_marked:{marked}")
        # Records written before seals get theirs, once (vault._kernel.seals).
        sealed = seals.seal_pending(kernel)
        if sealed is not None:
            kernel.audit("vault.upgrade", reason=f"records_sealed:{sealed}")
    except BaseException:
        kernel.close()
        raise
    return kernel


def open_kernel(cfg: VaultSettings, clock: Clock | None = None, *,
                recover_erasures: bool = True) -> Kernel:
    """The kernel of :meth:`Vault.open <vault.Vault.open>`; a configuration change
    is recorded and audited before it is returned (fail closed)."""
    _check_separation(cfg)
    try:
        provider = _open_configured(cfg)
    except KeyManagementError as exc:
        _audit_refused_open(cfg, exc, clock or SystemClock())
        raise
    try:
        _check_files(cfg)
    except BaseException:
        provider.close()
        raise
    data_engine = make_engine(cfg.resolved_database_url,
                              sqlite_synchronous=cfg.sqlite_synchronous)
    problem: str | None = None
    try:
        revision = migrate.current_revision(data_engine)
    except SQLAlchemyError:
        problem = "the data database cannot be reached"
    else:
        if revision is None:
            problem = "this vault is not initialised: run `vault init` first"
        elif revision != migrate.head_revision():
            problem = "the data database needs migrating: run `vault upgrade`"
    if problem is not None:
        data_engine.dispose()
        provider.close()
        raise ConfigError(problem)
    clk = clock or SystemClock()
    policies_dir = cfg.resolved_policies
    try:
        rules = Rules.load(policies_dir)
    except BaseException:
        data_engine.dispose()
        provider.close()
        raise
    policy = CasbinPolicyEngine(
        data_engine, policies_dir / "model.conf", clock=clk,
        refresh_interval=cfg.policy_refresh_seconds,
    )
    keystore_engine = make_engine(cfg.resolved_keystore_url,
                                  sqlite_synchronous=cfg.sqlite_synchronous)
    with data_engine.connect() as conn:
        meta = {row.key: row.value for row in conn.execute(select(META.c.key, META.c.value))}
    vault_id = meta.get("vault_id") or meta.get("created_at", "unknown")
    chain = ProviderChain(provider)
    keystore = _keystore(cfg, keystore_engine, chain, clk, vault_id=vault_id)
    try:
        keystore.create_schema()  # a key store older than its destruction counter (or roots)
        _join_migration(keystore)
        root_keys = (provider.root_keys() if isinstance(provider, LocalKeyProvider)
                     else keystore.root_keys())
    except BaseException:
        keystore_engine.dispose()
        data_engine.dispose()
        chain.close()
        raise
    kernel = _assemble(
        cfg, rules, data_engine, keystore_engine, chain, policy, clk,
        vault_id=vault_id, chains=int(meta.get("audit_chains", cfg.audit_chains)),
        keystore=keystore, root_keys=root_keys)
    try:
        _record_config(kernel)
        if recover_erasures:
            _recover_unrecorded_erasures(kernel)
    except BaseException:
        kernel.close()
        raise
    return kernel


def _recover_unrecorded_erasures(kernel: Kernel) -> None:
    """Finish crypto-shreddings that a crash cut in two.

    A shredding (``keys.destroy``, the sweeper's ``retention.shred``) commits the
    tombstone in the key store first, then, in the data database, removes the
    subject's blind-index rows, writes its erasure marker and its audit entry. A
    process killed in between leaves a destroyed key that the log does not record
    and index rows that still link the subject's records
    (``tests/security/test_crash_injection.py``). Every open compares two counts;
    if the key store holds more tombstones than the data database holds markers,
    the subjects without a marker get one, lose their index rows and are audited
    (``keys.destroy``, reason ``recovered``), in one transaction.

    On SQLite, an open that finds the key store's WAL not empty also checkpoints
    it (one short attempt), as a shredding killed before its own checkpoint would
    have done, so that destroyed keys' old bytes leave ``keys.db`` and
    ``keys.db-wal``. If readers keep it busy, a warning is logged and a later
    checkpoint does it.
    """
    _mark_cut_shreddings(kernel)
    engine = kernel.keystore.engine
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return
    wal = Path(f"{engine.url.database}-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return
    try:
        kernel.keystore.checkpoint(attempts=1)
    except ShreddingIncomplete:
        log.warning("key_store_checkpoint_busy_at_open")


def _mark_cut_shreddings(kernel: Kernel) -> None:
    with kernel.read_only() as conn:
        marked = int(conn.execute(select(func.count()).select_from(ERASED_SUBJECTS))
                     .scalar_one())
    if kernel.keystore.destroyed_count() <= marked:
        return
    tombstones: dict[str, list[str]] = {}
    for tenant, subject_id in kernel.keystore.destroyed_subjects():
        tombstones.setdefault(tenant, []).append(subject_id)
    now = kernel.clock.now()
    events = []
    with kernel.engine.begin() as conn:
        for tenant, subject_ids in sorted(tombstones.items()):
            present = erased_among(conn, tenant, subject_ids)
            missing = [s for s in subject_ids if s not in present]
            for start in range(0, len(missing), 500):
                chunk = missing[start:start + 500]
                records = select(RECORDS.c.id).where(RECORDS.c.tenant == tenant,
                                                     RECORDS.c.subject_id.in_(chunk))
                conn.execute(delete(BLIND_INDEX).where(BLIND_INDEX.c.record_id.in_(records)))
                pseudonyms = {s: kernel.pseudonym(tenant, s) for s in chunk}
                mark_erased(conn, tenant, pseudonyms, action="keys.destroy", now=now)
                events += [kernel.event("keys.destroy", tenant=tenant, subjects=(p,),
                                        reason="recovered") for p in pseudonyms.values()]
        if events:
            kernel.audit_log.append(conn, kernel.group_by_chain(events))
            log.warning("unrecorded_erasures_recovered", subjects=len(events))


def _audit_refused_open(cfg: VaultSettings, exc: KeyManagementError, clock: Clock) -> None:
    """Audit an open the key provider refused (token missing, wrong PIN, KMS down)
    in the data database, when it can be reached and is initialised; best effort:
    the error is raised whatever happens here."""
    try:
        engine = make_engine(cfg.resolved_database_url)
    except VaultError:
        return
    try:
        if migrate.current_revision(engine) != migrate.head_revision():
            return
        with engine.connect() as conn:
            chains = conn.execute(select(META.c.value).where(
                META.c.key == "audit_chains")).scalar()
        AuditLog(engine, chains=int(chains or cfg.audit_chains), clock=clock).write([
            AuditEvent(tenant="*", actor=actor_id(None), action="vault.open",
                       decision=Decision.ERROR, reason=f"keys:{exc.code}")])
    except (SQLAlchemyError, VaultError, ValueError):
        log.warning("refused_open_not_audited", error=exc.code)
    finally:
        engine.dispose()


def _join_migration(keystore: KeyStore) -> None:
    """Open the providers a migration recorded, so that keys already moved (or not
    yet moved) unwrap here. One that cannot be opened now is logged, not fatal:
    a key under it fails closed when it is needed."""
    try:
        keystore.refresh_providers()
    except VaultError as exc:
        log.warning("key_provider_unavailable", error=exc.code)


def _assemble(
    cfg: VaultSettings,
    rules: Rules,
    data_engine: Engine,
    keystore_engine: Engine,
    provider: KeyProvider,
    policy: CasbinPolicyEngine,
    clock: Clock,
    *,
    vault_id: str,
    chains: int,
    keystore: KeyStore,
    root_keys: RootKeys,
) -> Kernel:
    return Kernel(
        settings=cfg,
        vault_id=vault_id,
        engine=data_engine,
        keystore_engine=keystore_engine,
        keystore=keystore,
        provider=provider,
        root_keys=root_keys,
        cipher=AESGCMFieldCipher(),
        indexer=BlindIndexer(root_keys.index_root, truncate_to=cfg.blind_index_bytes),
        pseudonyms=Pseudonymizer(root_keys.pseudonym),
        policy=policy,
        rules=rules,
        audit_log=AuditLog(data_engine, chains=chains, clock=clock),
        clock=clock,
    )


def _fingerprint(rules: Rules) -> str:
    return expiry.fingerprint(rules.schedule, rules.schemas, rules.jurisdictions)


def _record_config(kernel: Kernel) -> None:
    """Snapshot the configuration this process opened with and audit a change
    (``config.baseline`` / ``config.change``, see :mod:`vault.audit.config`).

    Raises:
        AuditError: the snapshot or its entry could not be written (fail closed).
    """
    cfg = kernel.settings
    items = config_items(cfg, cfg.resolved_policies)
    record_config(kernel.engine, kernel.audit_log, items, now=kernel.clock.now())
