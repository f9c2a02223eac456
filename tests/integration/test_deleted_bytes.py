"""After an API deletion or rectification on SQLite, the old ciphertext is in no
file of the data database, WAL included, while the subject's data key is still
live (issue "Security hardening", weakness 10). A copy of the folder taken right
after the call cannot restore the deleted or replaced value."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from tests.helpers import stepped_up
from vault import Vault, VaultSettings
from vault.crypto.framing import decode_envelopes

from .test_data_path import CRM, customer

PURPOSE = "account_management"


@pytest.fixture
def sqlite_vault(sqlite_settings: VaultSettings) -> Vault:
    v = Vault.init(settings=sqlite_settings)
    v.roles.assign("crm", "crm_service", tenant="acme")
    return v


def _envelopes(vault: Vault, rid: str) -> dict[str, bytes]:
    with vault.engine.connect() as conn:
        raw = conn.execute(text("SELECT envelopes FROM records WHERE id = :i"), {"i": rid})
        return decode_envelopes(raw.scalar_one())


def _files(vault: Vault) -> bytes:
    folder = Path(vault.settings.resolved_database_url.removeprefix("sqlite:///")).parent
    return b"".join(p.read_bytes() for p in sorted(folder.glob("data.db*")))


def test_a_deleted_records_ciphertext_is_in_no_file(sqlite_vault: Vault) -> None:
    """delete(): none of the record's envelopes remains in data.db or data.db-wal."""
    v = sqlite_vault
    keep = v.put(CRM, "customers", customer(1), purpose=PURPOSE, subject_id="s-1")
    rid = v.put(CRM, "customers", customer(2), purpose=PURPOSE, subject_id="s-1")
    gone = _envelopes(v, rid)
    v.delete(stepped_up(CRM), "customers", rid, purpose=PURPOSE)  # an erasure: step-up
    files = _files(v)
    assert [name for name, env in gone.items() if env[-24:] in files] == []
    assert v.get(CRM, "customers", keep, purpose=PURPOSE).data  # the subject's key is live
    v.close()


@pytest.mark.parametrize("change", [{"support_notes": None}, {"support_notes": "Rectified."},
                                    {"email": "new.address@example.cn"}])
def test_a_rectified_fields_old_ciphertext_is_in_no_file(sqlite_vault: Vault,
                                                          change: dict[str, object]) -> None:
    """update(): the replaced or removed field's old envelope is gone from every file."""
    v = sqlite_vault
    rid = v.put(CRM, "customers", customer(3), purpose=PURPOSE)
    (name,) = change
    old = _envelopes(v, rid)[name]
    v.update(CRM, "customers", rid, change, purpose=PURPOSE)
    assert old[-24:] not in _files(v)
    v.close()
