"""A record is sealed as a whole, and its versions are in the audit log (issue 15, weakness 13).

Each field is its own AES-GCM envelope bound to tenant, collection, record id,
field and subject; that alone let an insider with write access to the data
database write back a record's pre-update envelopes (old values return), drop a
field's frame (a record without it) or put an older envelope of one field in
place of the current one, and ``verify`` said nothing. Now every record also
carries a seal (an AES-GCM tag under the subject's data key over the record's
identity, its version and the SHA-256 of all its framed envelopes): each of
those reads raises DecryptionError. A whole row rolled back (envelopes, seal
and version of an older copy together) decrypts, but the audit log knows how
many times the record was changed: ``verify`` reports ``record_rolled_back``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select, text, update

from vault import DecryptionError, Vault
from vault.audit.chain import Damage
from vault.crypto.framing import decode_envelopes, encode_envelopes
from vault.store.models import AuditEntryRow, RecordRow

from .test_data_path import CRM, customer

PURPOSE = "account_management"


def _row(engine: Engine, rid: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(RecordRow.__table__).where(RecordRow.id == rid)).one()
    return dict(row._mapping)


def _write_back(engine: Engine, rid: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(RecordRow.__table__).where(RecordRow.id == rid).values(**values))


def _errors(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(AuditEntryRow.seq).where(
            AuditEntryRow.action == "read", AuditEntryRow.decision == "error")).all())


def test_old_envelopes_written_back_are_refused(vault: Vault) -> None:
    rid = vault.put(CRM, "customers", customer(), purpose=PURPOSE)
    before = _row(vault.engine, rid)
    vault.update(CRM, "customers", rid, {"email": "new@example.com"}, purpose=PURPOSE)
    _write_back(vault.engine, rid, envelopes=before["envelopes"])
    with pytest.raises(DecryptionError):
        vault.get(CRM, "customers", rid, purpose=PURPOSE)
    assert _errors(vault.engine) == 1  # refused, and audited as an error


def test_a_dropped_field_is_refused(vault: Vault) -> None:
    rid = vault.put(CRM, "customers", customer(), purpose=PURPOSE)
    envelopes = decode_envelopes(_row(vault.engine, rid)["envelopes"])
    del envelopes["phone"]
    _write_back(vault.engine, rid, envelopes=encode_envelopes(envelopes))
    with pytest.raises(DecryptionError):
        vault.get(CRM, "customers", rid, purpose=PURPOSE)
    with pytest.raises(DecryptionError):  # also when the dropped field is not asked for
        vault.get(CRM, "customers", rid, purpose=PURPOSE, fields=["email"])


def test_reordered_or_duplicated_frames_are_refused(vault: Vault) -> None:
    rid = vault.put(CRM, "customers", customer(), purpose=PURPOSE)
    envelopes = decode_envelopes(_row(vault.engine, rid)["envelopes"])
    _write_back(vault.engine, rid,
                envelopes=encode_envelopes(dict(reversed(list(envelopes.items())))))
    with pytest.raises(DecryptionError):
        vault.get(CRM, "customers", rid, purpose=PURPOSE)


def test_an_older_envelope_of_one_field_is_refused(vault: Vault) -> None:
    rid = vault.put(CRM, "customers", customer(), purpose=PURPOSE)
    old_email = decode_envelopes(_row(vault.engine, rid)["envelopes"])["email"]
    vault.update(CRM, "customers", rid, {"email": "new@example.com"}, purpose=PURPOSE)
    envelopes = decode_envelopes(_row(vault.engine, rid)["envelopes"])
    envelopes["email"] = old_email
    _write_back(vault.engine, rid, envelopes=encode_envelopes(envelopes))
    with pytest.raises(DecryptionError):
        vault.get(CRM, "customers", rid, purpose=PURPOSE, fields=["full_name"])


def test_a_seal_moved_to_another_record_or_version_is_refused(vault: Vault) -> None:
    a = vault.put(CRM, "customers", customer(1), purpose=PURPOSE)
    b = vault.put(CRM, "customers", customer(2), purpose=PURPOSE, subject_id=None)
    row_a, row_b = _row(vault.engine, a), _row(vault.engine, b)
    _write_back(vault.engine, b, seal=row_a["seal"])
    with pytest.raises(DecryptionError):
        vault.get(CRM, "customers", b, purpose=PURPOSE)
    _write_back(vault.engine, b, seal=row_b["seal"], version=row_b["version"] + 1)
    with pytest.raises(DecryptionError):
        vault.get(CRM, "customers", b, purpose=PURPOSE)
    _write_back(vault.engine, b, seal=None, version=row_b["version"])
    with pytest.raises(DecryptionError):  # an unsealed record is not served
        vault.get(CRM, "customers", b, purpose=PURPOSE)
    _write_back(vault.engine, b, seal=row_b["seal"])
    assert vault.get(CRM, "customers", b, purpose=PURPOSE).data["full_name"]


def test_a_whole_row_rolled_back_is_found_by_verify(vault: Vault) -> None:
    rid = vault.put(CRM, "customers", customer(), purpose=PURPOSE)
    other = vault.put(CRM, "customers", customer(3), purpose=PURPOSE)
    before = _row(vault.engine, rid)
    vault.update(CRM, "customers", rid, {"email": "new@example.com"}, purpose=PURPOSE)
    vault.update(CRM, "customers", other, {"email": "other@example.com"}, purpose=PURPOSE)
    assert vault.audit.verify().ok  # no false positive on untouched data

    current = _row(vault.engine, rid)
    _write_back(vault.engine, rid, envelopes=before["envelopes"], seal=before["seal"],
                version=before["version"], updated_at=before["updated_at"])
    # The old copy is self-consistent, so it decrypts ...
    assert vault.get(CRM, "customers", rid, purpose=PURPOSE).data["email"] != "new@example.com"
    # ... but the log recorded two versions of it.
    report = vault.audit.verify()
    assert not report.ok
    kinds = [f.kind for f in report.findings]
    assert kinds == [Damage.ROLLED_BACK], report.findings
    assert rid in report.findings[0].detail and "version 1" in report.findings[0].detail
    assert "new@example.com" not in str(report)
    _write_back(vault.engine, rid, **{k: v for k, v in current.items() if k != "id"})
    assert vault.audit.verify().ok


def test_a_change_the_log_does_not_know_is_found_by_verify(vault: Vault) -> None:
    rid = vault.put(CRM, "customers", customer(), purpose=PURPOSE)
    with vault.engine.begin() as conn:
        conn.execute(text("UPDATE records SET version = version + 1 WHERE id = :id"),
                     {"id": rid})
    report = vault.audit.verify()
    assert [f.kind for f in report.findings] == [Damage.UNAUDITED_CHANGE]
    with vault.engine.begin() as conn:
        conn.execute(text("UPDATE records SET version = version - 1 WHERE id = :id"),
                     {"id": rid})


def test_update_entries_record_the_version_written(vault: Vault) -> None:
    rid = vault.put(CRM, "customers", customer(), purpose=PURPOSE)
    for n in range(3):
        vault.update(CRM, "customers", rid, {"email": f"e{n}@example.com"}, purpose=PURPOSE)
    with vault.engine.connect() as conn:
        contexts = conn.execute(select(AuditEntryRow.context).where(
            AuditEntryRow.action == "update").order_by(AuditEntryRow.seq)).scalars().all()
    assert contexts == ['{"version":2}', '{"version":3}', '{"version":4}']
    assert _row(vault.engine, rid)["version"] == 4
    assert vault.audit.verify().ok


def test_records_of_an_older_vault_are_sealed_by_upgrade(vault: Vault) -> None:
    """A vault from before seals: ``vault upgrade`` seals its records once; a seal
    removed afterwards is never re-made (that would launder a tampered row)."""
    rid = vault.put(CRM, "customers", customer(), purpose=PURPOSE)
    settings = vault.settings
    with vault.engine.begin() as conn:
        conn.execute(text("UPDATE records SET seal = NULL"))
        conn.execute(text("UPDATE vault_meta SET value = 'pending' WHERE key = 'record_seals'"))
    vault.close()
    with Vault.upgrade(settings=settings) as upgraded:
        assert upgraded.get(CRM, "customers", rid, purpose=PURPOSE).data["email"]
        with upgraded.engine.begin() as conn:
            conn.execute(text("UPDATE records SET seal = NULL"))
    with Vault.upgrade(settings=settings) as again, pytest.raises(DecryptionError):
        again.get(CRM, "customers", rid, purpose=PURPOSE)
