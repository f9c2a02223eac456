"""Crypto-shredding on SQLite checks that the key store's WAL was emptied (issue 15, weakness 9).

A destroyed wrapped key stays in ``keys.db-wal`` until a checkpoint copies the
tombstone into ``keys.db`` and truncates the WAL. Another connection holding a
read snapshot makes ``wal_checkpoint(TRUNCATE)`` fail, and SQLite reports that
in its result row instead of raising: these tests hold such a reader and expect
a typed error and an ERROR audit entry instead of a silent success.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from vault import Actor, FixedClock, KeyDestroyed, Vault, VaultSettings
from vault.errors import KeyManagementError
from vault.retention.tables import RetentionRunRow
from vault.store.models import AuditEntryRow, BlindIndexRow, RecordRow

from .test_data_path import CRM, DANA, customer

T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_AUDIT = AuditEntryRow.__table__


@contextmanager
def snapshot_reader(keys_db: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to ``keys.db`` holding an open read transaction."""
    reader = sqlite3.connect(keys_db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM data_keys").fetchone()
        yield reader
    finally:
        reader.close()  # closing ends the read transaction


def wrapped_key(keys_db: Path, subject: str) -> bytes:
    """The subject's wrapped data key as stored now (read before destroying it)."""
    with sqlite3.connect(keys_db) as conn:
        row = conn.execute("SELECT wrapped FROM data_keys WHERE subject_id = ?",
                           (subject,)).fetchone()
    assert row is not None and isinstance(row[0], bytes) and len(row[0]) == 40
    return bytes(row[0])


def key_files_holding(home: Path, needle: bytes) -> list[str]:
    return [p.name for p in sorted(home.glob("keys.db*")) if needle in p.read_bytes()]


def entries(v: Vault, action: str) -> list[Any]:
    with v.engine.connect() as conn:
        return list(conn.execute(select(_AUDIT).where(_AUDIT.c.action == action)
                                 .order_by(_AUDIT.c.seq)))


def test_destroy_with_a_reader_on_the_key_store_is_an_audited_error(
        sqlite_settings: VaultSettings) -> None:
    """A checkpoint blocked by a reader raises a typed KeyManagementError, the key is
    destroyed all the same, the outcome is audited as ERROR; once the reader is gone
    a later checkpoint leaves the wrapped key in neither keys.db nor keys.db-wal."""
    with Vault.init(settings=sqlite_settings) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        v.roles.assign("dana", "dpo", tenant="acme")
        rid = v.put(CRM, "customers", customer(1), purpose="account_management")
        subject = v.get(CRM, "customers", rid, purpose="account_management").subject_id
        home = Path(sqlite_settings.home)
        keys_db = home / "keys.db"
        wrapped = wrapped_key(keys_db, subject)
        assert key_files_holding(home, wrapped)  # precondition: the bytes are on disk

        with snapshot_reader(keys_db), pytest.raises(KeyManagementError) as info:
            v.keys.destroy(subject, tenant="acme")
        assert info.value.code == "shredding_incomplete"
        assert "WAL" in info.value.message and "checkpoint" in info.value.message

        # Destroyed in the database all the same: the tombstone is the erasure.
        assert v.keystore.is_destroyed("acme", subject)
        with pytest.raises(KeyDestroyed):
            v.get(DANA, "customers", rid, purpose="dsar_fulfilment")
        with v.engine.connect() as conn:
            records = select(RecordRow.__table__.c.id).where(
                RecordRow.__table__.c.subject_id == subject)
            tokens = conn.execute(select(BlindIndexRow.__table__).where(
                BlindIndexRow.__table__.c.record_id.in_(records))).all()
        assert tokens == []
        destroyed = entries(v, "keys.destroy")
        assert [e.decision for e in destroyed] == ["error"]
        assert destroyed[0].reason == "shredding_incomplete"
        assert destroyed[0].subjects == f'["{v.pseudonym("acme", subject)}"]'

        v.keystore.checkpoint()  # the reader is gone: this one succeeds
        assert key_files_holding(home, wrapped) == []
        assert v.audit_log.verify().ok


def test_keystore_destroy_many_and_checkpoint_report_a_blocked_checkpoint(
        sqlite_settings: VaultSettings) -> None:
    """KeyStore.destroy_many and KeyStore.checkpoint raise instead of ignoring the
    busy flag of SQLite's checkpoint result; retried after the reader ends, it passes."""
    with Vault.init(settings=sqlite_settings) as v:
        ks = v.keystore
        ks.create_keys("acme", ["s1", "s2"])
        home = Path(sqlite_settings.home)
        keys_db = home / "keys.db"
        wrapped = [wrapped_key(keys_db, s) for s in ("s1", "s2")]
        with snapshot_reader(keys_db):
            with pytest.raises(KeyManagementError) as info:
                ks.destroy_many("acme", ["s1", "s2"])
            assert info.value.code == "shredding_incomplete"
            assert ks.is_destroyed("acme", "s1") and ks.is_destroyed("acme", "s2")
            with pytest.raises(KeyManagementError):
                ks.checkpoint()
        ks.checkpoint()
        for blob in wrapped:
            assert key_files_holding(home, blob) == []


def test_sweep_with_a_reader_on_the_key_store_is_recorded_as_failed(
        sqlite_settings: VaultSettings) -> None:
    """A sweep that shredded subjects but could not empty the key store's WAL ends as
    a failed run with an ERROR entry and raises, instead of reporting success."""
    clock = FixedClock(T0)
    with Vault.init(settings=sqlite_settings, clock=clock) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        v.put(Actor("crm", "acme"), "customers", {"full_name": "Z"},
              purpose="account_management", subject_id="s-z", jurisdiction="US")
        home = Path(sqlite_settings.home)
        keys_db = home / "keys.db"
        wrapped = wrapped_key(keys_db, "s-z")
        clock.set(T0.replace(year=2026) + dt.timedelta(days=1))
        with snapshot_reader(keys_db), pytest.raises(KeyManagementError) as info:
            v.retention.sweep()
        assert info.value.code == "shredding_incomplete"
        assert v.keystore.is_destroyed("acme", "s-z")
        ends = entries(v, "retention.sweep_end")
        assert [e.decision for e in ends] == ["error"]
        assert ends[0].reason.endswith(":shredding_incomplete")
        with v.engine.connect() as conn:
            status = conn.execute(select(RetentionRunRow.__table__.c.status)).scalar_one()
        assert status == "failed"
        v.keystore.checkpoint()
        assert key_files_holding(home, wrapped) == []
        assert v.audit_log.verify().ok
