"""The key store: one wrapped AES-256 data key (DEK) per data subject.

It lives in its own database, apart from the data. Destroying a subject's
DEK (crypto-shredding) leaves a tombstone row with no key material, so the
subject's ciphertexts are unreadable in the data database and in every copy
of it. The tombstone is *the* definition of an erased subject
(:meth:`KeyStore.is_destroyed`).

Unwrapped DEKs are kept in a bounded LRU cache with a time limit
(``cache_ttl``). Every destruction also increments a one-row destruction
counter in the key store, in the same transaction as the tombstone. A process
reads that counter at most every ``destroyed_check`` seconds (default 5), when
it next uses its cache; if it moved, the cached keys of subjects that now have
a tombstone are dropped. So a destruction made by another process is honoured
within ``destroyed_check`` seconds, and a cached read costs no key-store query.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    any_,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from vault.clock import Clock, SystemClock
from vault.crypto.chain import ProviderChain
from vault.crypto.keys import ROOT_KEY_NAMES, KeyContext, KeyProvider, RootKeys
from vault.errors import (
    CryptoError,
    KeyDestroyed,
    KeyManagementError,
    NotFound,
    ShreddingIncomplete,
)
from vault.store.base import KeyStoreBase, bigint_pk

__all__ = ["DataKey", "DataKeyRow", "DestructionCounterRow", "KeyProviderRow", "KeyStore",
           "RootKeyRow"]

Progress = Callable[[int, int], None]


class DataKeyRow(KeyStoreBase):
    """A subject's wrapped data key, or its tombstone once destroyed."""

    __tablename__ = "data_keys"

    id: Mapped[bigint_pk]
    tenant: Mapped[str] = mapped_column(String(128))
    subject_id: Mapped[str] = mapped_column(String(128))
    kek_version: Mapped[int] = mapped_column(Integer)
    # 40 bytes under the key file (RFC 3394), 61 under a PKCS#11 token, about 200
    # for a KMS ciphertext blob (the length is not part of the SQLite/PostgreSQL type).
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary(1024), nullable=True)
    created_at: Mapped[dt.datetime]
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    __table_args__ = (
        UniqueConstraint("tenant", "subject_id"),
        Index("ix_data_keys_kek_version", "kek_version"),
    )


class DestructionCounterRow(KeyStoreBase):
    """One row (id 1) counting destructions; incremented with every tombstone, so
    another process learns cheaply that something was destroyed since it looked."""

    __tablename__ = "destruction_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)


class RootKeyRow(KeyStoreBase):
    """A root key (blind-index root, pseudonym key, signing seed) wrapped under the
    KEK: a vault on an HSM or KMS has no key file to keep them in."""

    __tablename__ = "root_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    kek_version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary(1024))
    created_at: Mapped[dt.datetime]


class KeyProviderRow(KeyStoreBase):
    """A key provider this vault's keys have been wrapped by (written by a
    migration), so that every process can unwrap keys of either side of it. The
    URI holds no secret; a PKCS#11 PIN comes from the process's own settings."""

    __tablename__ = "key_providers"

    id: Mapped[bigint_pk]
    uri: Mapped[str] = mapped_column(String(2048))
    kind: Mapped[str] = mapped_column(String(16))
    added_at: Mapped[dt.datetime]

    __table_args__ = (UniqueConstraint("uri"),)


_T = cast(Table, DataKeyRow.__table__)
_ROOTS = cast(Table, RootKeyRow.__table__)
_PROVIDERS = cast(Table, KeyProviderRow.__table__)
_COUNTER = cast(Table, DestructionCounterRow.__table__)
_READ_COUNTER = select(_COUNTER.c.value).where(_COUNTER.c.id == 1)
_BUMP_COUNTER = (update(_COUNTER).where(_COUNTER.c.id == 1)
                 .values(value=_COUNTER.c.value + 1))
# Built once: every new subject runs it.
_INSERT_RETURNING = insert(_T).returning(_T.c.id, _T.c.subject_id, _T.c.kek_version)


class _Batch:
    """Batched destruction for one dialect, built once. The id list is bound as one
    value (a JSON array read with ``json_each`` on SQLite, an array compared with
    ``= ANY`` on PostgreSQL), so no per-id placeholder is rendered or processed."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        if dialect == "postgresql":
            ids = _T.c.subject_id == any_(bindparam("ids", type_=ARRAY(String)))
        elif dialect == "sqlite":
            each = func.json_each(bindparam("ids", type_=String)).table_valued("value")
            ids = _T.c.subject_id.in_(select(each.c.value))
        else:
            ids = _T.c.subject_id.in_(bindparam("ids", expanding=True))
        self.destroy = (update(_T).where(_T.c.tenant == bindparam("t"), ids,
                                         _T.c.wrapped.is_not(None))
                        .values(wrapped=None, destroyed_at=bindparam("now")))
        self.present = select(_T.c.subject_id).where(_T.c.tenant == bindparam("t"), ids)

    def ids(self, items: list[str]) -> object:
        return json.dumps(items) if self.dialect == "sqlite" else items


@functools.cache
def _batch(dialect: str) -> _Batch:
    return _Batch(dialect)


@dataclass(frozen=True, slots=True)
class DataKey:
    """An unwrapped data key. Its repr never shows key material."""

    tenant: str
    subject_id: str
    key_id: int
    kek_version: int
    aead: AESGCM = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id}, kek_version={self.kek_version}, material=[secret])"


class KeyStore:
    """Creates, caches, rewraps and destroys per-subject data keys."""

    def __init__(
        self,
        engine: Engine,
        provider: KeyProvider,
        *,
        cache_size: int = 10_000,
        cache_ttl: float = 300.0,
        clock: Clock | None = None,
        checkpoint_attempts: int = 5,
        checkpoint_wait: float = 0.1,
        destroyed_check: float = 5.0,
        vault_id: str = "",
        open_provider: Callable[[str], KeyProvider] | None = None,
    ) -> None:
        """A key store on ``engine``; no connection is made yet.

        Args:
            engine: the key store's database (apart from the data database).
            provider: the KEKs that wrap the data keys.
            cache_size: unwrapped data keys kept in memory.
            cache_ttl: seconds a cached key is kept at most.
            clock: every time read, including the two below.
            checkpoint_attempts / checkpoint_wait: see :meth:`checkpoint`.
            destroyed_check: at most this many seconds pass between two looks at
                the destruction counter while the cache is used; a key destroyed
                by another process can be served from the cache for that long.
                0 looks at every cache use (one small query per read).
            vault_id: bound into every wrap (with tenant, subject, KEK version) by
                the HSM and KMS providers.
            open_provider: opens a provider from a URI of the ``key_providers``
                table (a migration's other side) when a key's KEK version belongs
                to none of the providers known yet.

        Raises:
            KeyManagementError: a parameter is out of range.
        """
        if cache_size < 1:
            raise KeyManagementError("cache_size must be at least 1")
        if destroyed_check < 0:
            raise KeyManagementError("destroyed_check must not be negative")
        if checkpoint_attempts < 1 or checkpoint_wait <= 0:
            raise KeyManagementError("checkpoint_attempts and checkpoint_wait must be positive")
        self._checkpoint_attempts = checkpoint_attempts
        self._checkpoint_wait = checkpoint_wait
        self._engine = engine
        self._provider = provider
        self._vault_id = vault_id
        self._open_provider = open_provider
        self._providers_read_at: float | None = None
        self._cache_size = cache_size
        self._cache_ttl = dt.timedelta(seconds=cache_ttl)
        self._clock = clock or SystemClock()
        self._cache: OrderedDict[tuple[str, str], tuple[DataKey, dt.datetime]] = OrderedDict()
        self._lock = threading.Lock()
        # Bumped by every destroy() and by every destruction noticed in another
        # process: a key unwrapped from a row read before that destruction is
        # returned to that one caller but never cached, so the destroyed key
        # cannot be served afterwards.
        self._epoch = 0
        self._destroyed_check = dt.timedelta(seconds=destroyed_check)
        # The destruction counter as last read, and when (None: not yet read).
        self._counter_seen: int | None = None
        self._counter_read_at: dt.datetime | None = None
        self._counter_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyStore(url={self._engine.url.render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> Engine:
        """The key store's database engine."""
        return self._engine

    def create_schema(self) -> None:
        """Create the key store's tables (and the destruction counter's row) if they
        do not exist. Idempotent: an opened vault calls it too, so a key store made
        before the counter existed gets it.

        Raises:
            KeyManagementError: the schema is missing and cannot be created (for
                instance by a PostgreSQL role without CREATE; run `vault upgrade`).
        """
        try:
            KeyStoreBase.metadata.create_all(self._engine)
            with self._engine.begin() as conn:
                if conn.execute(_READ_COUNTER).first() is None:
                    conn.execute(insert(_COUNTER), [{"id": 1, "value": 0}])
        except IntegrityError:
            pass  # another process inserted the counter row meanwhile
        except SQLAlchemyError:
            raise KeyManagementError(
                "the key store's schema cannot be created or checked; "
                "run `vault upgrade` as the database owner") from None

    # ------------------------------------------------------------------ destructions elsewhere

    def _notice_destructions(self) -> None:
        """Drop cached keys of subjects destroyed by another process (or connection),
        looking at the destruction counter at most every ``destroyed_check``.

        Raises:
            KeyManagementError: the key store cannot be reached (fail closed: no
                cached key is served when it is not known to be still live).
        """
        read_at = self._counter_read_at
        if read_at is not None and self._clock.now() - read_at < self._destroyed_check:
            return
        with self._counter_lock:
            # The time is taken before the counter is read: a destruction committed
            # after that read is seen at the next look, within the window.
            now = self._clock.now()
            read_at = self._counter_read_at
            if read_at is not None and now - read_at < self._destroyed_check:
                return  # another thread has just looked
            try:
                with self._engine.connect().execution_options(
                        sqlite_begin="deferred") as conn:
                    value = conn.execute(_READ_COUNTER).scalar()
                    conn.rollback()
            except SQLAlchemyError:
                raise KeyManagementError("the key store cannot be reached") from None
            counter = int(value or 0)
            if self._counter_seen is None or counter != self._counter_seen:
                with self._lock:
                    self._epoch += 1  # rows read before now are not cached
                self._forget_destroyed()
            self._counter_seen = counter
            self._counter_read_at = now

    def _forget_destroyed(self) -> None:
        """Drop from the cache every key whose subject has a tombstone."""
        with self._lock:
            cached: dict[str, list[str]] = {}
            for tenant, sid in self._cache:
                cached.setdefault(tenant, []).append(sid)
        if not cached:
            return
        gone: list[tuple[str, str]] = []
        try:
            with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                for tenant, sids in cached.items():
                    for start in range(0, len(sids), 500):
                        gone.extend((tenant, sid) for sid in self._destroyed_among(
                            conn, tenant, sids[start:start + 500]))
                conn.rollback()
        except SQLAlchemyError:
            raise KeyManagementError("the key store cannot be reached") from None
        with self._lock:
            for key in gone:
                self._cache.pop(key, None)

    @staticmethod
    def _destroyed_among(conn: Connection, tenant: str, subject_ids: Sequence[str]) -> set[str]:
        """Which of these subjects are erased: they have a tombstone (a key row
        without key material). The one definition used everywhere."""
        return set(conn.execute(
            select(_T.c.subject_id).where(_T.c.tenant == tenant,
                                          _T.c.subject_id.in_(list(subject_ids)),
                                          _T.c.wrapped.is_(None))).scalars())

    # ------------------------------------------------------------------ cache

    def _cached(self, tenant: str, subject_id: str) -> DataKey | None:
        self._notice_destructions()
        with self._lock:
            hit = self._cache.get((tenant, subject_id))
            if hit is None:
                return None
            key, loaded = hit
            if self._clock.now() - loaded > self._cache_ttl:
                del self._cache[(tenant, subject_id)]
                return None
            self._cache.move_to_end((tenant, subject_id))
            return key

    def _cached_many(self, tenant: str,
                     subject_ids: Sequence[str]) -> tuple[dict[str, DataKey], list[str]]:
        """Cached keys of several subjects (one lock, one clock read), and the rest."""
        self._notice_destructions()
        found: dict[str, DataKey] = {}
        missing: list[str] = []
        cache = self._cache
        with self._lock:
            oldest = self._clock.now() - self._cache_ttl
            for sid in dict.fromkeys(subject_ids):
                hit = cache.get((tenant, sid))
                if hit is None:
                    missing.append(sid)
                elif hit[1] < oldest:
                    del cache[(tenant, sid)]
                    missing.append(sid)
                else:
                    cache.move_to_end((tenant, sid))
                    found[sid] = hit[0]
        return found, missing

    def _epoch_now(self) -> int:
        with self._lock:
            return self._epoch

    def _remember(self, key: DataKey, epoch: int) -> None:
        with self._lock:
            if epoch != self._epoch:
                return  # a destroy() ran since the row was read: don't cache
            self._cache[(key.tenant, key.subject_id)] = (key, self._clock.now())
            self._cache.move_to_end((key.tenant, key.subject_id))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _remember_many(self, keys: Sequence[DataKey], epoch: int) -> None:
        with self._lock:
            if epoch != self._epoch:
                return  # a destroy() ran since these keys were read or made: don't cache
            now = self._clock.now()
            cache = self._cache
            for key in keys:
                cache[(key.tenant, key.subject_id)] = (key, now)
                cache.move_to_end((key.tenant, key.subject_id))
            while len(cache) > self._cache_size:
                cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget every unwrapped data key held in memory."""
        with self._lock:
            self._cache.clear()

    def context(self, tenant: str, subject_id: str) -> KeyContext:
        """What a subject's wrapped key is bound to."""
        return KeyContext(vault_id=self._vault_id, tenant=tenant, subject_id=subject_id)

    def _unwrap_rows(self, rows: Sequence[object], epoch: int) -> dict[str, DataKey]:
        """Unwrap live rows (one provider call per batch where the provider can);
        a tombstone raises KeyDestroyed before anything is unwrapped."""
        if not rows:
            return {}
        for row in rows:
            if row.wrapped is None:  # type: ignore[attr-defined]
                raise KeyDestroyed("the data subject's key was destroyed (crypto-shredded)")
        items = [(int(row.kek_version), bytes(row.wrapped),  # type: ignore[attr-defined]
                  self.context(row.tenant, row.subject_id))  # type: ignore[attr-defined]
                 for row in rows]
        self._know_versions({v for v, _, _ in items})
        many = getattr(self._provider, "unwrap_many", None)
        materials: list[bytes] = (many(items) if many is not None else
                                  [self._provider.unwrap(v, w, context=c) for v, w, c in items])
        keys: dict[str, DataKey] = {}
        for row, material in zip(rows, materials, strict=True):
            key = DataKey(
                tenant=row.tenant,  # type: ignore[attr-defined]
                subject_id=row.subject_id,  # type: ignore[attr-defined]
                key_id=row.id,  # type: ignore[attr-defined]
                kek_version=row.kek_version,  # type: ignore[attr-defined]
                aead=AESGCM(material),
            )
            keys[key.subject_id] = key
        self._remember_many(list(keys.values()), epoch)
        return keys

    # ------------------------------------------------------------------ providers

    def _know_versions(self, versions: set[int]) -> None:
        """Make sure the provider chain knows these KEK versions: one a migration
        (in another process) has put on a provider this process has not opened yet
        is found in ``key_providers`` and that provider opened. Looks at most once
        a second; a version still unknown fails later, at the unwrap."""
        chain = self._provider
        if not isinstance(chain, ProviderChain) or self._open_provider is None:
            return
        if all(chain.owner(v) is not None for v in versions):
            return
        now = time.monotonic()
        if self._providers_read_at is not None and now - self._providers_read_at < 1.0:
            return
        self._providers_read_at = now
        self.refresh_providers()

    def refresh_providers(self) -> int:
        """Open every provider of ``key_providers`` the chain does not hold yet.

        Returns:
            How many were added.

        Raises:
            KeyManagementError: one cannot be opened (KeyProviderUnavailable when
                it cannot be reached).
        """
        chain = self._provider
        if not isinstance(chain, ProviderChain) or self._open_provider is None:
            return 0
        known = chain.uris()
        added = 0
        for uri in self.registered_providers():
            if uri not in known:
                chain.add(self._open_provider(uri))
                added += 1
        return added

    def registered_providers(self) -> list[str]:
        """The URIs of ``key_providers``, oldest first.

        Raises:
            KeyManagementError: the key store cannot be reached.
        """
        try:
            with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                uris = list(conn.execute(select(_PROVIDERS.c.uri).order_by(_PROVIDERS.c.id))
                            .scalars())
                conn.rollback()
        except SQLAlchemyError:
            raise KeyManagementError("the key store cannot be reached") from None
        return uris

    def register_provider(self, provider: KeyProvider) -> None:
        """Record a provider in ``key_providers`` (idempotent)."""
        uri = provider.describe()
        if uri in self.registered_providers():
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(_PROVIDERS), [{"uri": uri, "kind": provider.kind,
                                                   "added_at": self._clock.now()}])
        except IntegrityError:
            pass  # another process recorded it meanwhile

    # ------------------------------------------------------------------ root keys

    def store_root_keys(self, keys: RootKeys) -> None:
        """Wrap the root keys under the current KEK and keep them here (replacing
        any stored before).

        Raises:
            KeyManagementError: the provider refuses.
        """
        names = list(keys.items())
        contexts = [KeyContext.root(self._vault_id, name) for name in names]
        wrapped = self._wrap_batch(list(keys.items().values()), contexts)
        now = self._clock.now()
        with self._engine.begin() as conn:
            for name, (version, blob) in zip(names, wrapped, strict=True):
                done = conn.execute(update(_ROOTS).where(_ROOTS.c.name == name).values(
                    kek_version=version, wrapped=blob)).rowcount
                if not done:
                    conn.execute(insert(_ROOTS), [{"name": name, "kek_version": version,
                                                   "wrapped": blob, "created_at": now}])

    def has_root_keys(self) -> bool:
        with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
            found = conn.execute(select(func.count()).select_from(_ROOTS)).scalar()
            conn.rollback()
        return bool(found)

    def root_keys(self) -> RootKeys:
        """The root keys kept here, unwrapped.

        Raises:
            KeyManagementError: missing, or the provider refuses to unwrap them.
        """
        try:
            with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                rows = {r.name: r for r in conn.execute(select(_ROOTS))}
                conn.rollback()
        except SQLAlchemyError:
            raise KeyManagementError("the key store cannot be reached") from None
        if set(rows) != set(ROOT_KEY_NAMES):
            raise KeyManagementError("the key store holds no root keys: a vault on an HSM "
                                     "or KMS is made by `vault init --key-provider URI`")
        items = [(int(rows[n].kek_version), bytes(rows[n].wrapped),
                  KeyContext.root(self._vault_id, n)) for n in ROOT_KEY_NAMES]
        self._know_versions({v for v, _, _ in items})
        material = [self._provider.unwrap(v, w, context=c) for v, w, c in items]
        return RootKeys(**dict(zip(ROOT_KEY_NAMES, material, strict=True)))

    def _rewrap_root_keys(self) -> int:
        if not self.has_root_keys():
            return 0
        current = self._provider.current_kek_version()
        with self._engine.connect() as conn:
            stale = conn.execute(select(func.count()).select_from(_ROOTS).where(
                _ROOTS.c.kek_version != current)).scalar()
            conn.rollback()
        if not stale:
            return 0
        self.store_root_keys(self.root_keys())
        return int(stale)

    def _wrap_batch(self, deks: list[bytes],
                    contexts: list[KeyContext]) -> list[tuple[int, bytes]]:
        wrap_many = getattr(self._provider, "wrap_many", None)
        if wrap_many is not None:
            result: list[tuple[int, bytes]] = wrap_many(deks, contexts=contexts)
            return result
        return [self._provider.wrap(d, context=c) for d, c in zip(deks, contexts, strict=True)]

    # ------------------------------------------------------------------ keys

    def create_keys(self, tenant: str, subject_ids: Iterable[str]) -> list[DataKey]:
        """Create a fresh data key for each subject that has none yet.

        A subject whose key another writer created concurrently gets that key.

        Raises:
            KeyDestroyed: a subject was crypto-shredded; its id cannot be reused.
            KeyManagementError: the key store cannot be reached or written.
        """
        wanted = list(dict.fromkeys(subject_ids))
        if not wanted:
            return []
        self._notice_destructions()  # the new keys are cached: count from here
        now = self._clock.now()
        epoch = self._epoch_now()
        rows = []
        material: dict[str, bytes] = {}
        contexts = [self.context(tenant, sid) for sid in wanted]
        generate = getattr(self._provider, "generate_many", None)
        made = generate(contexts) if generate is not None else None
        if made is not None:  # the provider makes the keys (KMS GenerateDataKey)
            wrapped_all = []
            for sid, (plain, version, wrapped) in zip(wanted, made, strict=True):
                material[sid] = plain
                wrapped_all.append((version, wrapped))
        else:
            for sid in wanted:
                material[sid] = secrets.token_bytes(32)
            wrapped_all = self._wrap_batch(list(material.values()), contexts)
        for sid, (version, wrapped) in zip(wanted, wrapped_all, strict=True):
            rows.append({"tenant": tenant, "subject_id": sid, "kek_version": version,
                         "wrapped": wrapped, "created_at": now})
        try:
            with self._engine.begin() as conn:
                inserted = conn.execute(
                    # Rows are matched back by subject id: no need to ask for them in order.
                    _INSERT_RETURNING,
                    rows,
                ).all()
        except IntegrityError:
            # Another writer created some of them: insert one by one, keep what is there.
            for row in rows:
                try:
                    with self._engine.begin() as conn:
                        conn.execute(insert(_T), [row])
                except IntegrityError:
                    continue
            keys = self.get_keys(tenant, wanted)
            return [keys[sid] for sid in wanted]
        except SQLAlchemyError:
            raise KeyManagementError("the key store cannot be reached or written") from None
        by_subject = {}
        for made in inserted:
            by_subject[made.subject_id] = DataKey(
                tenant=tenant, subject_id=made.subject_id, key_id=made.id,
                kek_version=made.kek_version, aead=AESGCM(material[made.subject_id]))
        created = [by_subject[sid] for sid in wanted]
        self._remember_many(created, epoch)
        return created

    def existing(self, tenant: str, subject_ids: Sequence[str]) -> dict[str, bool]:
        """Which of these subjects have a key row: subject id -> destroyed?"""
        found: dict[str, bool] = {}
        for start in range(0, len(subject_ids), 500):
            chunk = list(subject_ids[start:start + 500])
            with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                for row in conn.execute(
                    select(_T.c.subject_id, _T.c.wrapped.is_(None).label("destroyed"))
                    .where(_T.c.tenant == tenant, _T.c.subject_id.in_(chunk))
                ):
                    found[row.subject_id] = bool(row.destroyed)
                conn.rollback()
        return found

    def get_key(self, tenant: str, subject_id: str) -> DataKey:
        """The subject's unwrapped data key.

        Raises:
            NotFound: the subject has no key.
            KeyDestroyed: the key was destroyed.
        """
        return self.get_keys(tenant, [subject_id])[subject_id]

    def get_keys(self, tenant: str, subject_ids: Sequence[str], *,
                 missing_ok: bool = False) -> dict[str, DataKey]:
        """Unwrapped data keys of several subjects, loaded in batches.

        ``missing_ok``: a subject whose key is missing, destroyed or cannot be
        unwrapped is left out of the result instead of raising.

        Raises:
            NotFound: a subject has no key.
            KeyDestroyed: a subject's key was destroyed.
            KeyManagementError: a key cannot be unwrapped (KeyProviderUnavailable when
                the HSM or KMS cannot be reached): never left out, even with
                ``missing_ok`` (fail closed).
        """
        found, missing = self._cached_many(tenant, subject_ids)
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            epoch = self._epoch_now()
            try:
                with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                    rows = conn.execute(
                        select(_T).where(_T.c.tenant == tenant, _T.c.subject_id.in_(chunk))
                    ).all()
                    conn.rollback()
            except SQLAlchemyError:
                raise KeyManagementError("the key store cannot be reached") from None
            by_subject = {row.subject_id: row for row in rows}
            live = []
            for sid in chunk:
                row = by_subject.get(sid)
                if row is None:
                    if missing_ok:
                        continue
                    raise NotFound("the data subject has no data key")
                if row.wrapped is None:
                    if missing_ok:
                        continue
                    raise KeyDestroyed("the data subject's key was destroyed (crypto-shredded)")
                live.append(row)
            try:
                found.update(self._unwrap_rows(live, epoch))
            except CryptoError:
                if not missing_ok:
                    raise
        return found

    def live_subjects(self, tenants: Sequence[str], *,
                      batch_size: int = 5000) -> Iterable[tuple[str, str]]:
        """(tenant, subject id) of every subject of these tenants that has a live data
        key (key material, not a tombstone), read in batches by row id.

        Raises:
            KeyManagementError: the key store cannot be reached.
        """
        wanted = list(dict.fromkeys(tenants))
        if not wanted:
            return iter(())
        return self._subjects(_T.c.tenant.in_(wanted), _T.c.wrapped.is_not(None),
                              batch_size=batch_size)

    def destroyed_subjects(self, *, batch_size: int = 5000) -> Iterable[tuple[str, str]]:
        """(tenant, subject id) of every tombstone, read in batches by row id.

        Raises:
            KeyManagementError: the key store cannot be reached.
        """
        return self._subjects(_T.c.wrapped.is_(None), batch_size=batch_size)

    def _subjects(self, *where: ColumnElement[bool],
                  batch_size: int) -> Iterator[tuple[str, str]]:
        last_id = 0
        while True:
            try:
                with self._engine.connect().execution_options(
                        sqlite_begin="deferred") as conn:
                    rows = conn.execute(
                        select(_T.c.id, _T.c.tenant, _T.c.subject_id)
                        .where(_T.c.id > last_id, *where)
                        .order_by(_T.c.id).limit(batch_size)).all()
                    conn.rollback()
            except SQLAlchemyError:
                raise KeyManagementError("the key store cannot be reached") from None
            if not rows:
                return
            for row in rows:
                yield row.tenant, row.subject_id
            last_id = rows[-1].id

    def is_destroyed(self, tenant: str, subject_id: str) -> bool:
        """Whether the subject is erased: its key row is a tombstone. This is the
        definition of an erased subject; it always asks the database.

        Raises:
            KeyManagementError: the key store cannot be reached (fail closed).
        """
        try:
            with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                destroyed = self._destroyed_among(conn, tenant, [subject_id])
                conn.rollback()
        except SQLAlchemyError:
            raise KeyManagementError("the key store cannot be reached") from None
        return bool(destroyed)

    def destroy(self, tenant: str, subject_id: str) -> bool:
        """Destroy the subject's data key, leaving a tombstone. Idempotent.

        Returns True if key material was destroyed now, False if there was none.

        Raises:
            ShreddingIncomplete: the key is destroyed, but the SQLite WAL still
                holds its old bytes (see :meth:`checkpoint`).
        """
        with self._lock:
            self._epoch += 1
            self._cache.pop((tenant, subject_id), None)
        now = self._clock.now()
        with self._engine.begin() as conn:
            result = conn.execute(
                update(_T)
                .where(_T.c.tenant == tenant, _T.c.subject_id == subject_id,
                       _T.c.wrapped.is_not(None))
                .values(wrapped=None, destroyed_at=now)
            )
            destroyed = result.rowcount > 0
            if not destroyed:
                exists = conn.execute(
                    select(_T.c.id).where(_T.c.tenant == tenant, _T.c.subject_id == subject_id)
                ).first()
                if exists is None:
                    conn.execute(insert(_T), [{
                        "tenant": tenant, "subject_id": subject_id,
                        "kek_version": self._provider.current_kek_version(),
                        "wrapped": None, "created_at": now, "destroyed_at": now,
                    }])
            self._count_destruction(conn)
        try:
            # Push the change out of the WAL so no copy of the old page lingers there.
            self.checkpoint()
        finally:
            with self._lock:
                self._epoch += 1
                self._cache.pop((tenant, subject_id), None)
        return destroyed

    def destroy_many(self, tenant: str, subject_ids: Sequence[str], *,
                     checkpoint: bool = True) -> int:
        """Destroy several subjects' data keys in one transaction (and one WAL
        checkpoint on SQLite); subjects without a key row get a tombstone. Idempotent.

        ``checkpoint=False`` leaves the WAL checkpoint to a later :meth:`checkpoint`
        (a caller destroying keys in many batches calls it once at the end).

        Returns:
            How many keys held material that is now destroyed.

        Raises:
            ShreddingIncomplete: the keys are destroyed, but the SQLite WAL still
                holds their old bytes (see :meth:`checkpoint`).
        """
        wanted = list(dict.fromkeys(subject_ids))
        if not wanted:
            return 0
        with self._lock:
            for sid in wanted:
                self._cache.pop((tenant, sid), None)
        now = self._clock.now()
        destroyed = 0
        batch = _batch(self._engine.dialect.name)
        with self._engine.begin() as conn:
            for start in range(0, len(wanted), 2000):
                chunk = wanted[start:start + 2000]
                ids = batch.ids(chunk)
                done = conn.execute(batch.destroy, {"t": tenant, "ids": ids,
                                                    "now": now}).rowcount
                destroyed += done
                if done == len(chunk):
                    continue  # every subject had a live key: all are tombstones now
                present = set(conn.execute(batch.present, {"t": tenant, "ids": ids}).scalars())
                absent = [sid for sid in chunk if sid not in present]
                if absent:
                    conn.execute(insert(_T), [{
                        "tenant": tenant, "subject_id": sid,
                        "kek_version": self._provider.current_kek_version(),
                        "wrapped": None, "created_at": now, "destroyed_at": now,
                    } for sid in absent])
            self._count_destruction(conn)
        try:
            if checkpoint:
                self.checkpoint()
        finally:
            with self._lock:
                for sid in wanted:
                    self._cache.pop((tenant, sid), None)
        return destroyed

    @staticmethod
    def _count_destruction(conn: Connection) -> None:
        """Increment the destruction counter in the transaction that writes tombstones,
        so other processes notice them (see :meth:`_notice_destructions`)."""
        if conn.execute(_BUMP_COUNTER).rowcount == 0:
            conn.execute(insert(_COUNTER), [{"id": 1, "value": 1}])

    def checkpoint(self, *, attempts: int | None = None) -> None:
        """SQLite: copy the WAL into the key file and empty the WAL, so destroyed key
        material no longer lingers there (no-op on other databases).

        SQLite does not raise when a checkpoint cannot finish: it reports "busy" in
        its result row, for instance while another connection (in any process) holds
        a read transaction that still uses the WAL. That result is checked; a busy
        checkpoint is retried ``checkpoint_attempts`` (or ``attempts``) times, each
        waiting at most
        ``checkpoint_wait`` seconds for the readers (instead of the engine's 30 s
        busy timeout) and as long again between attempts.

        Raises:
            ShreddingIncomplete: the WAL could not be emptied. Keys destroyed
                before the call stay destroyed (their tombstones are committed), but
                their old wrapped bytes may remain in the WAL file until the next
                successful checkpoint: call this again once the readers are gone.
        """
        if self._engine.dialect.name != "sqlite":
            return
        wait_ms = max(1, int(self._checkpoint_wait * 1000))
        for attempt in range(attempts or self._checkpoint_attempts):
            if attempt:
                time.sleep(self._checkpoint_wait)
            with self._engine.connect().execution_options(sqlite_begin="none") as conn:
                usual = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
                conn.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
                try:
                    # (busy, frames in the WAL, frames checkpointed); busy=0 means done.
                    result = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={int(usual or 0)}")
            if result is None or int(result[0]) == 0:
                return
        raise ShreddingIncomplete(
            "the data key is destroyed in the key store, but its WAL could not be "
            "checkpointed (another connection holds a read transaction): the old "
            "wrapped key may remain in the key store's -wal file until the next "
            "checkpoint; end that reader and run the checkpoint again"
        )

    # ------------------------------------------------------------------ rotation

    def destroyed_count(self) -> int:
        """How many tombstones (destroyed data keys) the key store holds.

        Raises:
            KeyManagementError: the key store cannot be reached.
        """
        try:
            with self._engine.connect().execution_options(sqlite_begin="deferred") as conn:
                count = conn.execute(select(func.count()).select_from(_T)
                                     .where(_T.c.wrapped.is_(None))).scalar_one()
                conn.rollback()
        except SQLAlchemyError:
            raise KeyManagementError("the key store cannot be reached") from None
        return int(count)

    def count_by_kek_version(self) -> dict[int, int]:
        """Live (not destroyed) data keys per KEK version."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_T.c.kek_version, func.count())
                .where(_T.c.wrapped.is_not(None))
                .group_by(_T.c.kek_version)
            ).all()
            conn.rollback()
        return {int(v): int(n) for v, n in rows}

    def rewrap(self, *, batch_size: int = 500, progress: Progress | None = None) -> int:
        """Rewrap every live data key not under the current KEK. Data rows are untouched.

        Each batch commits on its own, so after a crash calling this again
        finishes the job. The root keys kept here (a vault on an HSM or KMS) are
        rewrapped first. Returns the number of data keys rewrapped.
        """
        self._rewrap_root_keys()
        current = self._provider.current_kek_version()
        total = sum(n for v, n in self.count_by_kek_version().items() if v != current)
        done = 0
        last_id = 0
        if progress:
            progress(0, total)
        while True:
            with self._engine.begin() as conn:
                rows = conn.execute(
                    select(_T.c.id, _T.c.tenant, _T.c.subject_id, _T.c.kek_version,
                           _T.c.wrapped)
                    .where(_T.c.kek_version != current, _T.c.wrapped.is_not(None),
                           _T.c.id > last_id)
                    .order_by(_T.c.id)
                    .limit(batch_size)
                ).all()
                if not rows:
                    break
                contexts = [self.context(r.tenant, r.subject_id) for r in rows]
                self._know_versions({int(r.kek_version) for r in rows})
                unwrap_many = getattr(self._provider, "unwrap_many", None)
                items = [(int(r.kek_version), bytes(r.wrapped), c)
                         for r, c in zip(rows, contexts, strict=True)]
                materials = (unwrap_many(items) if unwrap_many is not None else
                             [self._provider.unwrap(v, w, context=c) for v, w, c in items])
                rewrapped = self._wrap_batch(materials, contexts)
                for row, (version, wrapped) in zip(rows, rewrapped, strict=True):
                    conn.execute(
                        update(_T)
                        .where(_T.c.id == row.id, _T.c.kek_version == row.kek_version,
                               _T.c.wrapped.is_not(None))
                        .values(kek_version=version, wrapped=wrapped)
                    )
                last_id = rows[-1].id
            done += len(rows)
            if progress:
                progress(min(done, total), total)
        self.clear_cache()
        return done

    def migrate(self, target: KeyProvider, *, root_keys: RootKeys | None,
                batch_size: int = 500, progress: Progress | None = None) -> int:
        """Rewrap every data key (and the root keys kept here) from the providers
        this store knows to ``target``, online and resumable.

        ``target`` is recorded in ``key_providers`` (with the configured provider)
        first, so every process, whichever provider it is configured with, can
        unwrap keys on both sides, and wraps new keys under ``target``, whose KEK
        versions are above all others. Batches commit one by one; calling this
        again after a crash finishes the job. Data rows are untouched.

        Args:
            root_keys: stored here wrapped under ``target`` (None when the target is
                a key file, which holds them itself).

        Returns:
            The number of data keys rewrapped.

        Raises:
            KeyManagementError: the store's provider is not a chain, or ``target``'s
                KEK versions are not all above the others'.
        """
        chain = self._provider
        if not isinstance(chain, ProviderChain):
            raise KeyManagementError("this key store cannot migrate (no provider chain)")
        uri = target.describe()
        resuming = uri in self.registered_providers() or uri in chain.uris()
        if not resuming:
            theirs = target.kek_versions()
            ours = chain.kek_versions()
            if ours and (not theirs or min(theirs) <= max(ours)):
                raise KeyManagementError(
                    "the new provider's KEK versions must all be above the vault's "
                    f"(highest {max(ours)}); it already holds versions {theirs}")
        for provider in chain.providers():
            self.register_provider(provider)
        self.register_provider(target)
        chain.add(target)
        if root_keys is not None and target.kind != "file":
            self.store_root_keys(root_keys)
        return self.rewrap(batch_size=batch_size, progress=progress)

    def retire(self, version: int) -> None:
        """Retire a KEK version once no live data key depends on it.

        Raises:
            KeyManagementError: keys still wrapped under it, or it is current.
        """
        if version == self._provider.current_kek_version():
            raise KeyManagementError(
                f"KEK version {version} is current; run `vault keys rotate` before retiring it"
            )
        remaining = self.count_by_kek_version().get(version, 0)
        if remaining:
            raise KeyManagementError(
                f"KEK version {version} still wraps {remaining} data key(s); "
                "run `vault keys rotate --resume` first"
            )
        self._provider.retire(version)
