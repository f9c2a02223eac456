"""Adversarial tests: leaks, crypto-shredding, key rotation, audit tampering, fail-closed."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from structlog.testing import capture_logs

from vault import AccessDenied, Actor, AuditError, KeyDestroyed, Vault, VaultError, VaultSettings
from vault.crypto.providers import open_provider, parse_provider_uri
from vault.errors import KeyManagementError
from vault.store.engine import is_postgres

from ..helpers import disable_triggers, refuse_audit_inserts
from .test_data_path import CRM, DANA, customer, record_count

CANARIES = {
    "full_name": "Zyxwvut Canaryname",
    "email": "zyxwvut.canary@example.com",
    "phone": "+14155550132",
    "postal_address": "77 Canarystreet, Springfield",
    "national_id": "CANARY998877",
    "support_notes": "canary-note-qwertz",
}


def canary_customer() -> dict[str, object]:
    return customer(**CANARIES, country="US", preferred_language="en")


def needles() -> list[bytes]:
    out = []
    for value in CANARIES.values():
        out.append(value.encode())
        out.append(value.encode("utf-16-le"))
    out.append(b"4155550132")
    return out


def test_no_plaintext_in_any_database_file(sqlite_settings: VaultSettings) -> None:
    """After writes, updates, reads and searches, no file of the vault holds a canary value."""
    with Vault.init(settings=sqlite_settings) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        rid = v.put(CRM, "customers", canary_customer(), purpose="account_management")
        v.put_many(CRM, "customers", [canary_customer() for _ in range(20)],
                   purpose="account_management")
        v.update(CRM, "customers", rid, {"support_notes": "canary-note-qwertz"},
                 purpose="account_management")
        v.get(CRM, "customers", rid, purpose="account_management")
        v.find(CRM, "customers", purpose="account_management", email=CANARIES["email"])
        files = sorted(p for p in Path(sqlite_settings.home).iterdir() if p.is_file())
        names = {p.name for p in files}
        assert {"data.db", "keys.db", "keyfile.json"} <= names
        assert any(n.endswith("-wal") for n in names), "WAL files should be scanned too"
        for path in files:
            content = path.read_bytes()
            for needle in needles():
                assert needle not in content, f"{needle!r} found in {path.name}"


def test_no_plaintext_in_logs_or_errors(vault: Vault, caplog: pytest.LogCaptureFixture) -> None:
    """Neither structlog output, stdlib logging nor any error message carries a value."""
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    with capture_logs() as logs:
        rid = vault.put(CRM, "customers", canary_customer(), purpose="account_management")
        vault.get(CRM, "customers", rid, purpose="account_management")
        attempts = [
            lambda: vault.put(CRM, "customers", {**canary_customer(), "email": "canary@@bad"},
                              purpose="account_management"),
            lambda: vault.put(CRM, "customers", {**canary_customer(), "x_canary": "zyxwvut"},
                              purpose="account_management"),
            lambda: vault.get(Actor("mallory", "acme"), "customers", rid,
                              purpose="account_management"),
            lambda: vault.find(CRM, "customers", purpose="account_management",
                               phone="zyxwvut-canary"),
            lambda: vault.update(CRM, "customers", rid, {"full_name": 7},
                                 purpose="account_management"),
        ]
        for attempt in attempts:
            with pytest.raises(VaultError) as info:
                attempt()
            messages.append(str(info.value))
            messages.append(repr(info.value))
    text_out = repr(logs) + caplog.text + "\n".join(messages)
    assert messages
    for value in [*CANARIES.values(), "zyxwvut", "canary@@bad"]:
        assert value not in text_out


def test_record_repr_hides_values(vault: Vault) -> None:
    """A Record's repr lists field names, never values."""
    rid = vault.put(CRM, "customers", canary_customer(), purpose="account_management")
    rec = vault.get(CRM, "customers", rid, purpose="account_management")
    assert CANARIES["email"] in rec.data.values()
    assert CANARIES["email"] not in repr(rec) and "email" in repr(rec)


@pytest.mark.key_providers
def test_ciphertext_moved_to_another_subject_fails(vault: Vault) -> None:
    """A ciphertext copied onto another subject's record fails (different key and binding)."""
    from vault.errors import DecryptionError

    rid1 = vault.put(CRM, "customers", customer(1), purpose="account_management")
    rid2 = vault.put(CRM, "customers", customer(2), purpose="account_management")
    with vault.engine.begin() as conn:
        conn.execute(text("UPDATE records SET envelopes = (SELECT envelopes FROM records "
                          "WHERE id = :a) WHERE id = :b"), {"a": rid1, "b": rid2})
    with pytest.raises(DecryptionError):
        vault.get(CRM, "customers", rid2, purpose="account_management")


# ------------------------------------------------------------------ crypto-shredding


@pytest.mark.key_providers
def test_crypto_shredding_survives_restored_data_backup(sqlite_settings: VaultSettings,
                                                        tmp_path: Path) -> None:
    """Destroying a subject's key makes its data unreadable even from an older data backup."""
    with Vault.init(settings=sqlite_settings) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        v.roles.assign("dana", "dpo", tenant="acme")
        gone = v.put(CRM, "customers", customer(1), purpose="account_management")
        kept = v.put(CRM, "customers", customer(2), purpose="account_management")
        subject = v.get(CRM, "customers", gone, purpose="account_management").subject_id
        with v.engine.connect().execution_options(sqlite_begin="none") as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    backup = tmp_path / "data-backup.db"
    shutil.copy(Path(sqlite_settings.home) / "data.db", backup)

    with Vault.open(settings=sqlite_settings) as v:
        v.keys.destroy(subject, tenant="acme")
        with pytest.raises(KeyDestroyed):
            v.get(DANA, "customers", gone, purpose="dsar_fulfilment")
        assert v.find(CRM, "customers", purpose="account_management",
                      email="li.wei1@example.cn") == []

    data = Path(sqlite_settings.home) / "data.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{data}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, data)  # the restored backup still has the subject's ciphertexts

    with Vault.open(settings=sqlite_settings) as v:
        with pytest.raises(KeyDestroyed):
            v.get(DANA, "customers", gone, purpose="dsar_fulfilment")
        # The restored blind index still points at the record, but nothing comes back.
        assert v.find(CRM, "customers", purpose="account_management",
                      email="li.wei1@example.cn") == []
        assert v.get(CRM, "customers", kept, purpose="account_management").data["email"] == (
            "li.wei2@example.cn")
        with pytest.raises(KeyDestroyed):
            v.put(CRM, "customers", customer(3), purpose="account_management",
                  subject_id=subject)


@pytest.mark.key_providers
def test_crypto_shredding_on_backend(vault: Vault) -> None:
    """On either backend, a destroyed key makes every record of the subject unreadable."""
    rid = vault.put(CRM, "customers", customer(1), purpose="account_management")
    subject = vault.get(CRM, "customers", rid, purpose="account_management").subject_id
    rid2 = vault.put(CRM, "customers", customer(2), purpose="account_management",
                     subject_id=subject)
    vault.keys.destroy(subject, tenant="acme")
    vault.keystore.clear_cache()
    for r in (rid, rid2):
        with pytest.raises(KeyDestroyed):
            vault.get(CRM, "customers", r, purpose="account_management")
    with pytest.raises(KeyDestroyed):
        vault.get_many(CRM, "customers", [rid, rid2], purpose="account_management")


# ------------------------------------------------------------------ key rotation


@pytest.mark.key_providers
def test_rotation_keeps_records_readable_and_retire_then_succeeds(vault: Vault) -> None:
    """After rotating the KEK every record reads back; the old version can then be retired."""
    ids = vault.put_many(CRM, "customers", [customer(n) for n in range(30)],
                         purpose="account_management")
    with vault.engine.connect() as conn:
        before = conn.execute(text("SELECT id, envelopes FROM records ORDER BY id")).all()
    status = vault.keys.status()
    assert status.current_version == 1 and status.data_keys_by_version == {1: 30}
    with pytest.raises(KeyManagementError):
        vault.keys.retire(1)  # current version
    result = vault.keys.rotate()
    assert result.new_version == 2 and result.rewrapped == 30
    with vault.engine.connect() as conn:
        after = conn.execute(text("SELECT id, envelopes FROM records ORDER BY id")).all()
    assert [tuple(r) for r in before] == [tuple(r) for r in after], "data rows untouched"
    vault.keystore.clear_cache()
    records = vault.get_many(CRM, "customers", ids, purpose="account_management")
    assert [r.data["email"] for r in records] == [f"li.wei{n}@example.cn" for n in range(30)]
    vault.keys.retire(1)
    assert vault.keys.status().versions == (2,)
    vault.keystore.clear_cache()
    assert vault.get(CRM, "customers", ids[0], purpose="account_management").data["email"] == (
        "li.wei0@example.cn")


@pytest.mark.key_providers
def test_retire_refused_while_keys_depend_on_version(vault: Vault) -> None:
    """A KEK version still wrapping data keys cannot be retired."""
    vault.put(CRM, "customers", customer(), purpose="account_management")
    vault.keys.rotate()
    third = open_provider(parse_provider_uri(vault.settings.key_provider),
                          key_file=vault.settings.resolved_key_file)
    third.rotate()  # a third version, as another process would make it: nothing rewrapped
    third.close()
    with pytest.raises(KeyManagementError):
        vault.keys.retire(2)


# ------------------------------------------------------------------ audit tampering


def test_audit_log_refuses_update_and_delete(vault: Vault) -> None:
    """Raw SQL UPDATE and DELETE on the audit log are refused by the database."""
    vault.put(CRM, "customers", customer(), purpose="account_management")
    for statement in ("UPDATE audit_log SET actor = 'someone-else'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), vault.engine.begin() as conn:
            conn.execute(text(statement))
    if is_postgres(vault.engine):
        with pytest.raises(DBAPIError, match="append-only"), vault.engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_log"))
    assert vault.audit.verify().ok


def test_audit_triggers_fire_in_replica_mode_too(vault: Vault) -> None:
    """PostgreSQL: the triggers are ENABLE ALWAYS, so a session that switches to
    ``session_replication_role = replica`` (which silences ordinary triggers, as
    logical replication and some restore tools do) still cannot UPDATE, DELETE or
    TRUNCATE the audit log."""
    if not is_postgres(vault.engine):
        pytest.skip("session_replication_role is a PostgreSQL setting")
    vault.put(CRM, "customers", customer(), purpose="account_management")
    before = vault.audit_log.count()
    for statement in ("UPDATE audit_log SET actor = 'someone-else'", "DELETE FROM audit_log",
                      "TRUNCATE audit_log"):
        with vault.engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            with pytest.raises(DBAPIError, match="append-only"):
                conn.execute(text(statement))
    with vault.engine.connect() as conn:
        modes = dict(conn.execute(text(
            "SELECT tgname, tgenabled FROM pg_trigger "
            "WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal")).all())
    assert modes == {"audit_log_no_update_delete": "A", "audit_log_no_truncate": "A"}
    assert vault.audit_log.count() == before


def test_verify_detects_altered_audit_row(vault: Vault) -> None:
    """Changing one audit column through raw SQL makes verify fail at that entry."""
    vault.put(CRM, "customers", customer(), purpose="account_management")
    assert vault.audit.verify().ok
    disable_triggers(vault.engine)
    with vault.engine.begin() as conn:
        seq = conn.execute(text("SELECT seq FROM audit_log WHERE action = 'write'")).scalar_one()
        conn.execute(text("UPDATE audit_log SET purpose = 'marketing' WHERE seq = :s"), {"s": seq})
    report = vault.audit_log.verify()
    assert not report.ok
    assert report.first_bad_seq == seq
    assert report.reason == "modified_entry"
    # Repair so the fixture's end-of-test verification holds.
    with vault.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET purpose = 'account_management' WHERE seq = :s"),
                     {"s": seq})
    assert vault.audit_log.verify().ok


def test_verify_detects_deleted_tail_entry(vault: Vault) -> None:
    """Deleting the newest entry of a chain is detected against the chain head."""
    vault.put(CRM, "customers", customer(), purpose="account_management")
    disable_triggers(vault.engine)
    with vault.engine.begin() as conn:
        row = conn.execute(text("SELECT * FROM audit_log WHERE action = 'write'")).mappings().one()
        conn.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": row["seq"]})
    report = vault.audit_log.verify()
    assert not report.ok
    assert report.reason == "deleted_entry"
    with vault.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO audit_log (" + ", ".join(row.keys()) + ") VALUES (" +
            ", ".join(f":{k}" for k in row) + ")"), dict(row))
    assert vault.audit_log.verify().ok


# ------------------------------------------------------------------ fail closed


def test_failed_audit_write_returns_and_writes_nothing(vault: Vault) -> None:
    """When the audit entry cannot be written, 100% of reads and writes are refused."""
    ids = vault.put_many(CRM, "customers", [customer(n) for n in range(5)],
                         purpose="account_management")
    repair = refuse_audit_inserts(vault.engine, "vault_test_fail", "audit disk full")
    try:
        for rid in ids:
            with pytest.raises(AuditError):
                vault.get(CRM, "customers", rid, purpose="account_management")
        with pytest.raises(AuditError):
            vault.get_many(CRM, "customers", ids, purpose="account_management")
        with pytest.raises(AuditError):
            vault.find(CRM, "customers", purpose="account_management",
                       email="li.wei1@example.cn")
        for n in range(5):
            with pytest.raises(AuditError):
                vault.put(CRM, "customers", customer(10 + n), purpose="account_management")
        with pytest.raises(AuditError):
            vault.update(CRM, "customers", ids[0], {"support_notes": "x"},
                         purpose="account_management")
        with pytest.raises(AuditError):
            vault.delete(CRM, "customers", ids[0], purpose="account_management")
        # Denials cannot be audited either: still refused, never allowed.
        with pytest.raises(AuditError):
            vault.get(Actor("mallory", "acme"), "customers", ids[0],
                      purpose="account_management")
    finally:
        repair()
    assert record_count(vault) == 5
    got = vault.get(CRM, "customers", ids[0], purpose="account_management")
    assert got.data["support_notes"] == "Asked about invoices."


def test_denied_is_not_silently_allowed(vault: Vault) -> None:
    """A policy-denied read raises and returns no data object at all."""
    rid = vault.put(CRM, "customers", customer(), purpose="account_management")
    with pytest.raises(AccessDenied):
        vault.get(Actor("colin", "acme"), "customers", rid, purpose="security")
