"""A restored older key store does not resurrect shredded subjects (issue 15, weakness 14).

Crypto-shredding writes, in the data database and in the transaction of its
audit entry (``keys.destroy``, or ``retention.shred`` for the sweeper), an
erasure marker (``erased_subjects``). The key store can be rolled back to a
copy taken before the destruction (a restored backup); the marker and the log
cannot be rolled back with it. So:

* the data path refuses (KeyDestroyed, audited) reads and writes of a marked
  subject even when its key is live again, and ``find`` leaves it out;
* ``v.keys.check_erasures()`` and ``v.audit.verify()`` name every subject the
  log says was destroyed whose key is live in the key store again, from the
  log itself (a deleted marker does not hide it), and ``repair=True`` marks it
  and destroys the key again.

On SQLite the key store is restored by copying ``keys.db`` back; on PostgreSQL
by writing the saved wrapped key back into its row with raw SQL.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from vault import Actor, FixedClock, KeyDestroyed, Vault, VaultSettings
from vault.store.models import AuditEntryRow

from ..conftest import ROLE_USERS
from .test_data_path import CRM, customer

# On the key file, a SoftHSM2 token and moto's KMS alike (tests/conftest.py).
pytestmark = pytest.mark.key_providers

T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
DPO = Actor("dana", "acme")
PURPOSE = "account_management"


class KeyStoreBackup:
    """A copy of the key store (SQLite: the files; PostgreSQL: the subjects' rows).

    ``take`` and ``restore`` close the vault they are given (on SQLite before the
    files are copied) and return a vault opened again on the same folder."""

    def __init__(self, settings: VaultSettings, clock: FixedClock) -> None:
        self.settings, self.clock = settings, clock
        self.sqlite = settings.keystore_url is None
        self.rows: list[Any] = []

    def files(self) -> list[Path]:
        db = self.settings.home / "keys.db"
        return [db, db.with_name("keys.db-wal"), db.with_name("keys.db-shm")]

    def take(self, v: Vault, subjects: list[str]) -> Vault:
        """Take the copy; the vault to go on with."""
        if self.sqlite:
            v.close()
            saved = self.settings.home / "saved"
            saved.mkdir(exist_ok=True)
            for f in self.files():
                if f.exists():
                    shutil.copy2(f, saved / f.name)
        else:
            with v.keystore.engine.connect() as conn:
                self.rows = list(conn.execute(text(
                    "SELECT tenant, subject_id, kek_version, wrapped FROM data_keys "
                    "WHERE subject_id = ANY(:s)"), {"s": subjects}))
                conn.rollback()
        v.close()
        return reopen(self.settings, self.clock)

    def restore(self, v: Vault) -> Vault:
        """Put the copy back; the vault to go on with."""
        if self.sqlite:
            v.close()
            saved = self.settings.home / "saved"
            for f in self.files():
                f.unlink(missing_ok=True)
                if (saved / f.name).exists():
                    shutil.copy2(saved / f.name, f)
        else:
            with v.keystore.engine.begin() as conn:
                for row in self.rows:
                    conn.execute(text(
                        "UPDATE data_keys SET wrapped = :w, kek_version = :k, "
                        "destroyed_at = NULL WHERE tenant = :t AND subject_id = :s"),
                        {"w": row.wrapped, "k": row.kek_version, "t": row.tenant,
                         "s": row.subject_id})
        v.close()
        return reopen(self.settings, self.clock)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def home(settings: VaultSettings, clock: FixedClock) -> VaultSettings:
    v = Vault.init(settings=settings, clock=clock)
    for user, role in ROLE_USERS.items():
        v.roles.assign(user, role, tenant="acme")
    v.close()
    return settings


def reopen(settings: VaultSettings, clock: FixedClock) -> Vault:
    return Vault.open(settings=settings, clock=clock)


def entries(v: Vault, action: str) -> list[Any]:
    t = AuditEntryRow.__table__
    with v.engine.connect() as conn:
        return list(conn.execute(select(t).where(t.c.action == action).order_by(t.c.seq)))


def restored_after_destroy(settings: VaultSettings, clock: FixedClock,
                           ) -> tuple[Vault, str, str, str]:
    """A vault whose key store was restored to a copy taken before a keys.destroy:
    (vault, the erased subject's record, the erased subject, a live subject's record)."""
    v = reopen(settings, clock)
    rid = v.put(CRM, "customers", customer(1), purpose=PURPOSE, subject_id="s-gone")
    kept = v.put(CRM, "customers", customer(2), purpose=PURPOSE, subject_id="s-kept")
    backup = KeyStoreBackup(settings, clock)
    v = backup.take(v, ["s-gone"])
    v.keys.destroy("s-gone", tenant="acme")
    assert v.keystore.is_destroyed("acme", "s-gone")
    v = backup.restore(v)
    # The restore worked: the key store alone would serve the subject again.
    assert not v.keystore.is_destroyed("acme", "s-gone")
    assert v.keystore.get_key("acme", "s-gone") is not None
    return v, rid, "s-gone", kept


def test_a_restored_key_store_does_not_serve_a_destroyed_subject(
        home: VaultSettings, clock: FixedClock) -> None:
    """Reads, updates and writes of the destroyed subject raise KeyDestroyed (each
    refusal audited); find leaves it out; other subjects are served as before."""
    v, rid, subject, kept = restored_after_destroy(home, clock)
    try:
        with pytest.raises(KeyDestroyed):
            v.get(CRM, "customers", rid, purpose=PURPOSE)
        with pytest.raises(KeyDestroyed):
            v.get_many(CRM, "customers", [kept, rid], purpose=PURPOSE)
        with pytest.raises(KeyDestroyed):
            v.update(CRM, "customers", rid, {"support_notes": "back"}, purpose=PURPOSE)
        with pytest.raises(KeyDestroyed):
            v.put(CRM, "customers", customer(3), purpose=PURPOSE, subject_id=subject)
        assert v.find(CRM, "customers", purpose=PURPOSE, email="li.wei1@example.cn") == []
        assert v.get(CRM, "customers", kept, purpose=PURPOSE).data["email"] == (
            "li.wei2@example.cn")
        pseudonym = v.pseudonym("acme", subject)
        refused = [e for e in entries(v, "read") + entries(v, "update") + entries(v, "write")
                   if e.decision != "allow" and pseudonym in e.subjects]
        assert len(refused) >= 3, "every refusal must be audited naming the subject"
        assert v.audit_log.verify().ok
    finally:
        v.close()


def test_the_check_and_verify_name_the_resurrected_subject(
        home: VaultSettings, clock: FixedClock) -> None:
    """check_erasures reports the subject (from the log); verify fails with
    resurrected_key; repair destroys the key again and the check is clean."""
    v, _rid, subject, _kept = restored_after_destroy(home, clock)
    try:
        found = v.keys.check_erasures()
        assert [(f.tenant, f.subject_id, f.action, f.marked) for f in found] == [
            ("acme", subject, "keys.destroy", True)]
        assert found[0].pseudonym == v.pseudonym("acme", subject)
        assert found[0].audit_seq == entries(v, "keys.destroy")[-1].seq
        report = v.audit.verify()
        assert not report.ok
        assert report.reason == "resurrected_key"
        assert [f.seq for f in report.findings] == [found[0].audit_seq]
        assert subject not in report.detail  # pseudonyms only
        repaired = v.keys.check_erasures(repair=True)
        assert [f.subject_id for f in repaired] == [subject]
        assert v.keystore.is_destroyed("acme", subject)
        assert v.keys.check_erasures() == []
        assert v.audit.verify().ok
        assert [e.reason for e in entries(v, "keys.check_erasures")] == [
            "resurrected:1", "resurrected:1:repaired", "resurrected:0"]
    finally:
        v.close()


def test_a_deleted_marker_does_not_hide_the_resurrection(
        home: VaultSettings, clock: FixedClock) -> None:
    """The log is the authority: with the marker deleted too (an insider with write
    access to both databases), the check still finds the subject, reports it as not
    marked, and repair marks it so that the data path refuses it again."""
    v, rid, subject, _kept = restored_after_destroy(home, clock)
    try:
        with v.engine.begin() as conn:
            conn.execute(text("DELETE FROM erased_subjects"))
        found = v.keys.check_erasures()
        assert [(f.subject_id, f.marked) for f in found] == [(subject, False)]
        assert not v.audit.verify().ok
        v.keys.check_erasures(repair=True)
        with v.engine.connect() as conn:
            assert conn.execute(text("SELECT subject_id FROM erased_subjects")).scalars(
                ).all() == [subject]
        with pytest.raises(KeyDestroyed):
            v.get(CRM, "customers", rid, purpose=PURPOSE)
    finally:
        v.close()


def test_no_finding_without_a_restore(home: VaultSettings, clock: FixedClock) -> None:
    """0 false positives: destroyed subjects whose tombstone is in place, a refused
    (held) destruction, and live subjects."""
    with reopen(home, clock) as v:
        v.put(CRM, "customers", customer(1), purpose=PURPOSE, subject_id="s-1")
        v.put(CRM, "customers", customer(2), purpose=PURPOSE, subject_id="s-2")
        v.put(CRM, "customers", customer(3), purpose=PURPOSE, subject_id="s-3")
        v.keys.destroy("s-1", tenant="acme")
        v.keys.destroy("never-seen", tenant="acme")
        v.holds.place(tenant="acme", subject_id="s-2", reason="case-1", actor=DPO)
        with pytest.raises(Exception, match="hold"):
            v.keys.destroy("s-2", tenant="acme")
        assert v.keys.check_erasures() == []
        assert v.audit.verify().ok
        assert v.get(CRM, "customers", v.subject_records("acme", "s-2")[0],
                     purpose=PURPOSE).data


def test_a_sweeper_shred_is_not_undone_by_a_restore(
        home: VaultSettings, clock: FixedClock) -> None:
    """The retention sweeper marks what it shreds: after a restore, a write for the
    shredded subject is refused and the check names it (action retention.shred)."""
    v = reopen(home, clock)
    v.put(CRM, "customers", {"full_name": "Ana"}, purpose=PURPOSE, subject_id="s-old",
          jurisdiction="US")
    backup = KeyStoreBackup(home, clock)
    v = backup.take(v, ["s-old"])
    clock.set(T0.replace(year=2030))
    assert v.retention.sweep().subjects_shredded == 1
    v = backup.restore(v)
    try:
        assert not v.keystore.is_destroyed("acme", "s-old")  # restored
        with pytest.raises(KeyDestroyed):
            v.put(CRM, "customers", {"full_name": "Ana"}, purpose=PURPOSE,
                  subject_id="s-old", jurisdiction="US")
        found = v.keys.check_erasures()
        assert [(f.subject_id, f.action, f.marked) for f in found] == [
            ("s-old", "retention.shred", True)]
        assert found[0].audit_seq == entries(v, "retention.shred")[-1].seq
    finally:
        v.close()


def test_the_cli_exits_3_on_a_resurrected_key(sqlite_settings: VaultSettings,
                                              clock: FixedClock) -> None:
    """`vault audit verify` and `vault keys check-erasures` exit 3 naming the kind;
    `--repair` destroys the key again, after which both exit 0."""
    from typer.testing import CliRunner

    from vault.cli import app

    from ..conftest import POLICIES

    with Vault.init(settings=sqlite_settings, clock=clock) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
    v, _rid, subject, _kept = restored_after_destroy(sqlite_settings, clock)
    pseudonym = v.pseudonym("acme", subject)
    v.close()
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(sqlite_settings.home),
           "COLUMNS": "200"}
    if sqlite_settings.key_provider:
        env["VAULT_KEY_PROVIDER"] = sqlite_settings.key_provider
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.output

    code, output = run("audit", "verify")
    assert code == 3 and "resurrected_key" in output, output
    assert subject not in output
    code, output = run("keys", "check-erasures")
    assert code == 3 and pseudonym[:16] in output, output
    code, output = run("keys", "check-erasures", "--repair")
    assert code == 0 and "destroyed again" in output, output
    assert run("keys", "check-erasures")[0] == 0
    assert run("audit", "verify")[0] == 0


def test_upgrade_marks_subjects_shredded_before_markers_existed(
        home: VaultSettings, clock: FixedClock) -> None:
    """A subject shredded before migration 0009 (simulated: its marker deleted) is
    marked by `Vault.upgrade` from the key store's tombstone, audited, so that a
    later restore of an older key store cannot bring it back."""
    with reopen(home, clock) as v:
        rid = v.put(CRM, "customers", customer(1), purpose=PURPOSE, subject_id="s-legacy")
        v.keys.destroy("s-legacy", tenant="acme")
        with v.engine.begin() as conn:
            conn.execute(text("DELETE FROM erased_subjects"))
    with Vault.upgrade(settings=home, clock=clock) as v:
        with v.engine.connect() as conn:
            rows = conn.execute(text("SELECT subject_id, action FROM erased_subjects")).all()
        assert [tuple(r) for r in rows] == [("s-legacy", "vault.upgrade")]
        assert [e.reason for e in entries(v, "vault.upgrade")][-1] == "erased_marked:1"
        # The marker alone refuses the subject (the key store is not asked first).
        with pytest.raises(KeyDestroyed):
            v.get(CRM, "customers", rid, purpose=PURPOSE)
    with Vault.upgrade(settings=home, clock=clock) as v:  # idempotent: nothing more
        assert [e.reason for e in entries(v, "vault.upgrade")][-1] == "erased_marked:1"
        assert len([e for e in entries(v, "vault.upgrade")
                    if e.reason == "erased_marked:1"]) == 1
