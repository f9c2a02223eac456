"""KeyStore: destructions by another process reach the cache within ``destroyed_check``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from vault.clock import FixedClock
from vault.crypto.keystore import KeyStore
from vault.errors import KeyDestroyed, KeyManagementError
from vault.store.engine import make_engine

from ..helpers import (
    PausingProvider,
    key_stores,
    new_key_file,
    on_select,
    start_paused_in_unwrap,
)

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class Statements:
    """The SELECTs sent through an engine."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[str] = []
        on_select(engine, self.seen.append)


@pytest.fixture
def provider(tmp_path: Path) -> PausingProvider:
    return new_key_file(PausingProvider, tmp_path)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def new_store(tmp_path: Path, provider: PausingProvider) -> Iterator[Any]:
    """Factory: a KeyStore on one key database, with its own engine and cache."""
    with key_stores(f"sqlite:///{tmp_path / 'keys.db'}", provider) as make:
        yield make


def test_destroy_many_elsewhere_is_noticed_after_the_window(new_store: Any,
                                                            clock: FixedClock) -> None:
    """Within the window the cache answers without a query; after it the destroyed
    subjects raise and the others are still served from the cache."""
    reader: KeyStore = new_store(clock=clock, destroyed_check=5)
    writer: KeyStore = new_store(clock=clock)
    reader.create_keys("acme", ["s1", "s2", "s3"])
    assert writer.destroy_many("acme", ["s1", "s3"]) == 2
    seen = Statements(reader.engine)
    clock.advance(dt.timedelta(seconds=4))
    assert reader.get_keys("acme", ["s1", "s2", "s3"]).keys() == {"s1", "s2", "s3"}
    assert seen.seen == []
    clock.advance(dt.timedelta(seconds=1))
    with pytest.raises(KeyDestroyed):
        reader.get_key("acme", "s1")
    assert len(seen.seen) == 3  # the counter, the tombstones among the cached, s1's row
    assert reader.get_key("acme", "s2").subject_id == "s2"
    assert len(seen.seen) == 3  # s2 stayed cached
    with pytest.raises(KeyDestroyed):
        reader.get_key("acme", "s3")


def test_no_change_costs_one_small_query_per_window(new_store: Any, clock: FixedClock) -> None:
    """When nothing was destroyed, a look at the counter is the only query."""
    reader: KeyStore = new_store(clock=clock, destroyed_check=5)
    reader.create_keys("acme", ["s1"])
    seen = Statements(reader.engine)
    for _ in range(3):
        clock.advance(dt.timedelta(seconds=5))
        for _ in range(10):
            reader.get_key("acme", "s1")
    assert len(seen.seen) == 3
    assert all("destruction_counter" in statement for statement in seen.seen)


def test_a_zero_window_looks_at_every_read(new_store: Any, clock: FixedClock) -> None:
    reader: KeyStore = new_store(clock=clock, destroyed_check=0)
    writer: KeyStore = new_store(clock=clock)
    reader.create_keys("acme", ["s1"])
    writer.destroy("acme", "s1")
    with pytest.raises(KeyDestroyed):
        reader.get_key("acme", "s1")


def test_a_load_racing_a_noticed_destruction_is_not_cached(
        new_store: Any, provider: PausingProvider, clock: FixedClock) -> None:
    """A row read before another process destroyed the key, noticed by a second thread
    while the first unwraps, is returned to the first caller but never cached."""
    reader: KeyStore = new_store(clock=clock, destroyed_check=5)
    writer: KeyStore = new_store(clock=clock)
    reader.create_keys("acme", ["s1", "s2"])
    reader.clear_cache()
    loader, resume = start_paused_in_unwrap(provider, lambda: reader.get_key("acme", "s1"),
                                            "loader")
    writer.destroy("acme", "s1")
    clock.advance(dt.timedelta(seconds=5))
    reader.get_key("acme", "s2")  # this thread notices the destruction
    resume.set()
    loader.join(timeout=10)
    assert not loader.is_alive()
    with pytest.raises(KeyDestroyed):
        reader.get_key("acme", "s1")


def test_an_unreadable_counter_fails_closed(new_store: Any, clock: FixedClock) -> None:
    """When the check is due and the key store cannot answer, no cached key is served."""
    reader: KeyStore = new_store(clock=clock, destroyed_check=5)
    reader.create_keys("acme", ["s1"])
    with reader.engine.begin() as conn:
        conn.execute(text("DROP TABLE destruction_counter"))
    assert reader.get_key("acme", "s1")  # within the window: the cache answers
    clock.advance(dt.timedelta(seconds=5))
    with pytest.raises(KeyManagementError, match="cannot be reached"):
        reader.get_key("acme", "s1")


def test_create_schema_adds_the_counter_to_an_older_key_store(new_store: Any,
                                                              clock: FixedClock) -> None:
    """A key store made before the counter existed gets it from create_schema
    (called by every open), and destructions are counted from then on."""
    old: KeyStore = new_store(clock=clock)
    old.create_keys("acme", ["s1"])
    with old.engine.begin() as conn:
        conn.execute(text("DROP TABLE destruction_counter"))
    reader: KeyStore = new_store(clock=clock, destroyed_check=5)  # create_schema again
    reader.get_key("acme", "s1")
    old.destroy("acme", "s1")
    clock.advance(dt.timedelta(seconds=5))
    with pytest.raises(KeyDestroyed):
        reader.get_key("acme", "s1")


def test_a_negative_window_is_refused(tmp_path: Path, provider: PausingProvider) -> None:
    with pytest.raises(KeyManagementError):
        KeyStore(make_engine(f"sqlite:///{tmp_path / 'k.db'}"), provider, destroyed_check=-1)
