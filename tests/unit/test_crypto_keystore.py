"""KeyStore: per-subject data keys, crypto-shredding, rewrap after rotation, the cache."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from vault.clock import FixedClock
from vault.crypto.envelope import AESGCMFieldCipher, FieldContext
from vault.crypto.keys import KeyContext
from vault.crypto.keystore import DataKey, KeyStore
from vault.errors import KeyDestroyed, KeyManagementError, NotFound
from vault.store.engine import make_engine

from ..helpers import (
    PausingProvider,
    key_stores,
    new_key_file,
    on_select,
    start_paused_in_unwrap,
)

CIPHER = AESGCMFieldCipher()
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class FlakyProvider(PausingProvider):
    """Fails every wrap after ``fail_after`` successful ones (a crash mid-rewrap)."""

    fail_after: int | None = None
    wraps = 0

    def wrap(self, dek: bytes, *, context: KeyContext | None = None) -> tuple[int, bytes]:
        if self.fail_after is not None and self.wraps >= self.fail_after:
            raise RuntimeError("simulated crash while rewrapping")
        self.wraps += 1
        return super().wrap(dek, context=context)

    def wrap_many(self, deks: Sequence[bytes], *,
                  contexts: Sequence[KeyContext] | None = None) -> list[tuple[int, bytes]]:
        return [self.wrap(dek) for dek in deks]


@pytest.fixture
def provider(tmp_path: Path) -> FlakyProvider:
    return new_key_file(FlakyProvider, tmp_path)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture
def new_store(db_url: str, provider: FlakyProvider) -> Iterator[Any]:
    """Factory: a KeyStore on the shared key database, with its own engine and cache."""
    with key_stores(db_url, provider) as make:
        yield make


@pytest.fixture
def store(new_store: Any) -> KeyStore:
    ks: KeyStore = new_store()
    return ks


def _ctx(subject: str) -> FieldContext:
    return FieldContext("acme", "customers", f"rec-{subject}", "email", subject)


def _same_material(a: DataKey, b: DataKey) -> bool:
    envelope = CIPHER.encrypt(a, b"probe", _ctx(a.subject_id))
    try:
        return CIPHER.decrypt(b, envelope, _ctx(a.subject_id)) == b"probe"
    except Exception:
        return False


def _raw(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        rows = conn.execute(text(sql), params).all()
        conn.rollback()
    return list(rows)


class SelectCounter:
    """Counts SELECTs on data_keys issued through an engine."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        on_select(engine, self._seen)

    def _seen(self, statement: str) -> None:
        if "data_keys" in statement:
            self.count += 1


# ---------------------------------------------------------------- create / get


def test_create_then_get(store: KeyStore, new_store: Any, provider: FlakyProvider) -> None:
    made = store.create_keys("acme", ["s1", "s2", "s1"])
    assert [k.subject_id for k in made] == ["s1", "s2"]
    assert len({k.key_id for k in made}) == 2
    assert all(k.tenant == "acme" and k.kek_version == 1 for k in made)
    fresh = new_store()  # a cold cache: unwraps from the database
    for key in made:
        loaded = fresh.get_key("acme", key.subject_id)
        assert (loaded.key_id, loaded.kek_version) == (key.key_id, 1)
        assert _same_material(key, loaded)
    assert not _same_material(made[0], made[1])
    assert store.create_keys("acme", []) == []
    rows = _raw(store.engine, "SELECT subject_id, kek_version, length(wrapped) FROM data_keys "
                              "ORDER BY id")
    assert [tuple(r) for r in rows] == [("s1", 1, 40), ("s2", 1, 40)]


def test_create_keys_for_an_existing_subject_returns_the_stored_key(store: KeyStore,
                                                                    new_store: Any) -> None:
    first = store.create_keys("acme", ["s1"])[0]
    other = new_store()
    again = other.create_keys("acme", ["s1", "s2"])
    assert again[0].key_id == first.key_id
    assert _same_material(first, again[0])
    assert again[1].subject_id == "s2"
    assert len(_raw(store.engine, "SELECT id FROM data_keys")) == 2


def test_same_subject_in_two_tenants_gets_two_keys(store: KeyStore) -> None:
    a = store.create_keys("acme", ["s1"])[0]
    b = store.create_keys("beta", ["s1"])[0]
    assert a.key_id != b.key_id
    assert not _same_material(a, b)
    assert store.destroy("beta", "s1") is True
    assert store.get_key("acme", "s1").key_id == a.key_id
    with pytest.raises(NotFound):
        store.get_key("gamma", "s1")


def test_get_missing_subject_is_not_found(store: KeyStore) -> None:
    store.create_keys("acme", ["s1"])
    with pytest.raises(NotFound):
        store.get_key("acme", "nobody")
    with pytest.raises(NotFound):
        store.get_keys("acme", ["s1", "nobody"])


def test_get_keys_missing_ok_leaves_out_missing_and_destroyed(store: KeyStore,
                                                               new_store: Any) -> None:
    """missing_ok: the keys that can be had come back, a subject without a key or with
    a destroyed one is left out; without it either raises."""
    created = {k.subject_id: k for k in store.create_keys("acme", ["a", "gone", "b"])}
    store.destroy("acme", "gone")
    loaded = new_store().get_keys("acme", ["a", "nobody", "gone", "b"], missing_ok=True)
    assert sorted(loaded) == ["a", "b"]
    assert loaded["a"].key_id == created["a"].key_id
    with pytest.raises(KeyDestroyed):
        new_store().get_keys("acme", ["a", "gone"])


def test_get_keys_in_batches_larger_than_one_chunk(store: KeyStore, new_store: Any) -> None:
    subjects = [f"s{n}" for n in range(1203)]
    made = {k.subject_id: k.key_id for k in store.create_keys("acme", subjects)}
    loaded = new_store().get_keys("acme", subjects)
    assert {sid: k.key_id for sid, k in loaded.items()} == made


def test_concurrent_create_of_the_same_subject_yields_one_key(store: KeyStore,
                                                              new_store: Any) -> None:
    stores = [store] + [new_store() for _ in range(3)]
    results: list[DataKey] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def worker(ks: KeyStore, subjects: list[str]) -> None:
        try:
            barrier.wait()
            keys = ks.create_keys("acme", subjects)
            with lock:
                results.extend(keys)
        except BaseException as exc:  # reported below
            errors.append(exc)

    plans = [["shared"], ["shared", "x"], ["x", "shared"], ["shared"]] * 2
    threads = [threading.Thread(target=worker, args=(stores[i % 4], plan))
               for i, plan in enumerate(plans)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == sum(len(p) for p in plans)
    by_subject: dict[str, set[int]] = {}
    for key in results:
        by_subject.setdefault(key.subject_id, set()).add(key.key_id)
    assert {s: len(ids) for s, ids in by_subject.items()} == {"shared": 1, "x": 1}
    rows = _raw(store.engine, "SELECT subject_id FROM data_keys ORDER BY subject_id")
    assert [r[0] for r in rows] == ["shared", "x"]
    # Every thread was handed the material that is actually stored.
    stored = new_store().get_keys("acme", ["shared", "x"])
    for key in results:
        assert _same_material(key, stored[key.subject_id])


# ---------------------------------------------------------------- destroy (crypto-shredding)


def test_destroy_makes_the_key_unavailable_everywhere(store: KeyStore, new_store: Any) -> None:
    key = store.create_keys("acme", ["s1", "s2"])[0]
    envelope = CIPHER.encrypt(key, b"secret", _ctx("s1"))
    assert store.destroy("acme", "s1") is True
    with pytest.raises(KeyDestroyed):
        store.get_key("acme", "s1")
    with pytest.raises(KeyDestroyed):
        new_store().get_key("acme", "s1")  # fresh cache, reads the tombstone
    with pytest.raises(KeyDestroyed):
        store.get_keys("acme", ["s2", "s1"])
    assert store.get_key("acme", "s2").subject_id == "s2"
    assert store.is_destroyed("acme", "s1") is True
    assert store.is_destroyed("acme", "s2") is False
    assert store.existing("acme", ["s1", "s2", "s3"]) == {"s1": True, "s2": False}
    rows = _raw(store.engine, "SELECT wrapped, destroyed_at FROM data_keys "
                              "WHERE tenant = 'acme' AND subject_id = 's1'")
    assert len(rows) == 1
    assert rows[0][0] is None
    assert rows[0][1] is not None
    assert envelope  # the ciphertext survives, but no key store can open it


def test_destroyed_key_bytes_do_not_linger_in_the_sqlite_files(tmp_path: Path,
                                                               store: KeyStore) -> None:
    store.create_keys("acme", ["s1"])
    wrapped = _raw(store.engine, "SELECT wrapped FROM data_keys")[0][0]
    assert len(wrapped) == 40
    files = sorted(tmp_path.glob("keys.db*"))
    # Precondition, so the check below means something: the bytes are on disk now.
    assert any(wrapped in path.read_bytes() for path in files)
    assert store.destroy("acme", "s1") is True
    for path in tmp_path.glob("keys.db*"):
        assert wrapped not in path.read_bytes(), f"wrapped key still in {path.name}"


def test_destroy_is_idempotent(store: KeyStore) -> None:
    store.create_keys("acme", ["s1"])
    assert store.destroy("acme", "s1") is True
    assert store.destroy("acme", "s1") is False
    assert store.destroy("acme", "s1") is False
    assert len(_raw(store.engine, "SELECT id FROM data_keys")) == 1
    with pytest.raises(KeyDestroyed):
        store.get_key("acme", "s1")


def test_destroying_an_unknown_subject_leaves_a_tombstone(store: KeyStore,
                                                          provider: FlakyProvider) -> None:
    store.create_keys("acme", ["other"])
    provider.rotate()
    assert store.destroy("acme", "ghost") is False
    rows = _raw(store.engine, "SELECT wrapped, kek_version, destroyed_at FROM data_keys "
                              "WHERE subject_id = 'ghost'")
    assert len(rows) == 1
    assert rows[0][0] is None
    assert rows[0][1] == 2
    assert rows[0][2] is not None
    with pytest.raises(KeyDestroyed):
        store.get_key("acme", "ghost")
    with pytest.raises(KeyDestroyed):
        store.create_keys("acme", ["ghost"])
    assert store.destroy("acme", "ghost") is False
    assert len(_raw(store.engine, "SELECT id FROM data_keys WHERE subject_id = 'ghost'")) == 1
    # Tombstones are not live keys.
    assert store.count_by_kek_version() == {1: 1}
    # The subject id is only burnt in that tenant.
    assert store.create_keys("beta", ["ghost"])[0].tenant == "beta"


def test_create_keys_of_a_destroyed_subject_refuses(store: KeyStore, new_store: Any) -> None:
    store.create_keys("acme", ["s1"])
    store.destroy("acme", "s1")
    for ks in (store, new_store()):
        with pytest.raises(KeyDestroyed):
            ks.create_keys("acme", ["s1"])
    rows = _raw(store.engine, "SELECT wrapped FROM data_keys WHERE subject_id = 's1'")
    assert [r[0] for r in rows] == [None]


# ---------------------------------------------------------------- rotation


def test_rewrap_after_rotate_moves_every_key(store: KeyStore, new_store: Any,
                                             provider: FlakyProvider) -> None:
    subjects = [f"s{n}" for n in range(25)]
    keys = {k.subject_id: k for k in store.create_keys("acme", subjects)}
    store.destroy("acme", "s24")
    envelopes = {sid: CIPHER.encrypt(keys[sid], sid.encode(), _ctx(sid)) for sid in subjects[:24]}
    before = {r[0]: r[1] for r in _raw(store.engine, "SELECT subject_id, wrapped FROM data_keys")}
    assert store.count_by_kek_version() == {1: 24}
    assert store.rewrap() == 0  # nothing to do before a rotation

    assert provider.rotate() == 2
    seen: list[tuple[int, int]] = []
    assert store.rewrap(batch_size=7, progress=lambda d, t: seen.append((d, t))) == 24
    assert store.count_by_kek_version() == {2: 24}
    assert seen[0] == (0, 24)
    assert seen[-1] == (24, 24)
    after = {r[0]: r[1] for r in _raw(store.engine, "SELECT subject_id, wrapped FROM data_keys")}
    for sid in subjects[:24]:
        assert after[sid] != before[sid]
    assert after["s24"] is None
    assert store.rewrap() == 0

    store.retire(1)
    assert provider.kek_versions() == [2]
    for ks in (store, new_store()):  # both after rewrap's cache clear and cold
        loaded = ks.get_keys("acme", subjects[:24])
        for sid, envelope in envelopes.items():
            assert loaded[sid].kek_version == 2
            assert loaded[sid].key_id == keys[sid].key_id
            assert CIPHER.decrypt(loaded[sid], envelope, _ctx(sid)) == sid.encode()
    with pytest.raises(KeyDestroyed):
        store.get_key("acme", "s24")


def test_rewrap_resumes_after_a_crash(store: KeyStore, provider: FlakyProvider) -> None:
    subjects = [f"s{n:02d}" for n in range(30)]
    keys = {k.subject_id: k for k in store.create_keys("acme", subjects)}
    envelope = CIPHER.encrypt(keys["s29"], b"last", _ctx("s29"))
    provider.rotate()
    provider.wraps = 0
    provider.fail_after = 13  # batches of 5: two commit, the third dies in the middle
    with pytest.raises(RuntimeError, match="simulated crash"):
        store.rewrap(batch_size=5)
    assert store.count_by_kek_version() == {2: 10, 1: 20}
    with pytest.raises(KeyManagementError, match="still wraps 20"):
        store.retire(1)
    provider.fail_after = None
    assert store.rewrap(batch_size=5) == 20
    assert store.count_by_kek_version() == {2: 30}
    store.retire(1)
    store.clear_cache()
    assert CIPHER.decrypt(store.get_key("acme", "s29"), envelope, _ctx("s29")) == b"last"


def test_retire_is_refused_while_keys_remain_or_when_current(store: KeyStore,
                                                             provider: FlakyProvider) -> None:
    store.create_keys("acme", ["a", "b"])
    with pytest.raises(KeyManagementError, match="current"):
        store.retire(1)
    provider.rotate()
    with pytest.raises(KeyManagementError, match="still wraps 2"):
        store.retire(1)
    assert provider.kek_versions() == [1, 2]  # nothing was retired
    with pytest.raises(KeyManagementError, match="current"):
        store.retire(2)
    store.rewrap()
    store.retire(1)
    assert provider.kek_versions() == [2]


# ---------------------------------------------------------------- the cache


def test_cache_size_must_be_positive(db_url: str, provider: FlakyProvider) -> None:
    with pytest.raises(KeyManagementError):
        KeyStore(make_engine(db_url), provider, cache_size=0)


def test_cached_keys_need_no_query(store: KeyStore) -> None:
    counter = SelectCounter(store.engine)
    store.create_keys("acme", ["s1"])
    counter.count = 0
    for _ in range(5):
        store.get_key("acme", "s1")
    assert counter.count == 0
    store.clear_cache()
    store.get_key("acme", "s1")
    assert counter.count == 1


def test_cache_is_bounded_lru(new_store: Any) -> None:
    store: KeyStore = new_store(cache_size=2)
    counter = SelectCounter(store.engine)
    store.create_keys("acme", ["a", "b"])
    store.get_key("acme", "a")  # "a" is now the most recently used
    store.create_keys("acme", ["c"])  # evicts the least recently used: "b"
    counter.count = 0
    store.get_key("acme", "a")
    store.get_key("acme", "c")
    assert counter.count == 0
    # Destroy everything behind the cache's back: only evicted keys notice.
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE data_keys SET wrapped = NULL"))
    with pytest.raises(KeyDestroyed):
        store.get_key("acme", "b")
    assert counter.count == 1
    assert store.get_key("acme", "a").subject_id == "a"
    assert store.get_key("acme", "c").subject_id == "c"
    assert len(store._cache) <= 2


def test_cache_expires_after_ttl(new_store: Any) -> None:
    clock = FixedClock(T0)
    reader: KeyStore = new_store(cache_ttl=60, clock=clock, destroyed_check=3600)
    writer: KeyStore = new_store()
    reader.create_keys("acme", ["s1"])
    clock.advance(dt.timedelta(seconds=30))
    reader.get_key("acme", "s1")  # a hit does not renew the entry
    assert writer.destroy("acme", "s1") is True  # another process shreds the key
    assert reader.get_key("acme", "s1").subject_id == "s1"  # still within the TTL
    clock.advance(dt.timedelta(seconds=30))
    assert reader.get_key("acme", "s1").subject_id == "s1"  # exactly 60 s: still cached
    clock.advance(dt.timedelta(seconds=1))
    with pytest.raises(KeyDestroyed):
        reader.get_key("acme", "s1")


def test_destroy_evicts_from_its_own_cache_immediately(new_store: Any) -> None:
    store: KeyStore = new_store(cache_ttl=3600, clock=FixedClock(T0))
    store.create_keys("acme", ["s1"])
    store.get_key("acme", "s1")
    store.destroy("acme", "s1")
    with pytest.raises(KeyDestroyed):
        store.get_key("acme", "s1")


def test_unreachable_key_store_is_a_key_management_error(tmp_path: Path,
                                                         provider: FlakyProvider,
                                                         engines: list[Engine]) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema
    engines.append(engine)
    with pytest.raises(KeyManagementError, match="cannot be reached"):
        KeyStore(engine, provider).get_key("acme", "s1")


# ---------------------------------------------------------------- races


def test_a_read_racing_destroy_does_not_resurrect_the_key_in_the_cache(
        store: KeyStore, provider: FlakyProvider) -> None:
    store.create_keys("acme", ["s1"])
    store.clear_cache()
    # the reader has the row (with key material) in hand
    reader, resume = start_paused_in_unwrap(provider, lambda: store.get_key("acme", "s1"),
                                            "reader")
    destroyer = threading.Thread(target=lambda: store.destroy("acme", "s1"))
    destroyer.start()
    destroyer.join(timeout=2)  # a fix may make destroy wait for the reader: allowed
    resume.set()
    reader.join(timeout=10)
    destroyer.join(timeout=10)
    if reader.is_alive() or destroyer.is_alive() or not store.is_destroyed("acme", "s1"):
        pytest.fail("the race was not set up as intended")
    try:
        served: DataKey | None = store.get_key("acme", "s1")
    except KeyDestroyed:
        served = None
    assert served is None, "a destroyed data key was served from the cache"
