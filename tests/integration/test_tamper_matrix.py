"""The tampering matrix (issue 15): raw-SQL changes to every place an insider with
write access to the databases can reach, each detected or refused; untouched
data stays readable and verifies (no false positive).

* **Audit log:** every column of every row changed, one at a time (and on SQLite
  each column's storage class changed too): ``verify`` must report damage for
  100% of them; after each is undone the log verifies again.
* **Records:** one field's envelope moved to another field, record or subject;
  a record's envelopes and seal moved to another record; a record moved to
  another subject; its version changed: each read raises DecryptionError and
  is audited, and every other record still reads.
* **Key store:** two subjects' wrapped data keys swapped: neither can be read.
* **Blind index:** a token moved to another record, or replaced by the token
  of another value: ``find`` never returns a record whose value differs.

Each matrix prints its figures (``pytest -s``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import IntegrityError

from vault import DecryptionError, Vault
from vault.crypto.framing import decode_envelopes, encode_envelopes
from vault.errors import KeyManagementError
from vault.store.engine import is_postgres
from vault.store.models import AuditEntryRow, RecordRow

from ..helpers import disable_triggers
from .test_data_path import CRM, customer

PURPOSE = "account_management"
AUDIT = AuditEntryRow.__table__
# The columns verify binds; ``seq`` is the primary key (a changed seq is a
# renumbered entry; see test_audit_format2 for its own cases).
_INT_COLUMNS = ("chain", "chain_seq", "format")
_COLUMNS = [column.name for column in AUDIT.c]


@pytest.fixture
def filled(vault: Vault) -> tuple[Vault, dict[str, str]]:
    """A vault with three subjects' records, read, updated, searched and refused."""
    ids = {
        "a": vault.put(CRM, "customers", customer(1), purpose=PURPOSE, subject_id="s-a"),
        "a2": vault.put(CRM, "customers", customer(2), purpose=PURPOSE, subject_id="s-a"),
        "b": vault.put(CRM, "customers", customer(3), purpose=PURPOSE, subject_id="s-b"),
        "c": vault.put(CRM, "customers", customer(4), purpose=PURPOSE, subject_id="s-c"),
    }
    vault.update(CRM, "customers", ids["b"], {"email": "b.new@example.com"}, purpose=PURPOSE)
    vault.get_many(CRM, "customers", list(ids.values()), purpose=PURPOSE)
    vault.find(CRM, "customers", purpose=PURPOSE, email="kim1@example.com")
    return vault, ids


def _mutations(row: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(column, how, bound values) of each change to one audit row's columns."""
    for column in _COLUMNS:
        if column == "seq":
            continue
        value = row._mapping[column]
        if column in _INT_COLUMNS:
            yield column, "+1", {"v": int(value) + 1}
        elif column == "ts":
            yield column, "shifted", {"v": value.replace(microsecond=(value.microsecond + 1)
                                                          % 1_000_000)}
        elif value is None:
            yield column, "set", {"v": "x"}
        else:
            text_value = str(value)
            flipped = ("0" if text_value[-1:] != "0" else "1")
            yield column, "changed", {"v": text_value[:-1] + flipped}
            if column in ("collection", "purpose", "reason"):
                yield column, "nulled", {"v": None}


def _undo(conn: Connection, row: Any) -> None:
    values = dict(row._mapping)
    seq = values.pop("seq")
    conn.execute(AUDIT.update().where(AUDIT.c.seq == seq).values(**values))


def test_every_column_of_every_audit_row_changed_is_detected(
        filled: tuple[Vault, dict[str, str]]) -> None:
    vault, _ = filled
    assert vault.audit.verify().ok
    disable_triggers(vault.engine)
    with vault.engine.connect() as conn:
        rows = conn.execute(select(AUDIT).order_by(AUDIT.c.seq)).all()
    tried = missed = refused = 0
    misses: list[str] = []
    for row in rows:
        for column, how, bound in _mutations(row):
            tried += 1
            try:
                with vault.engine.begin() as conn:
                    conn.execute(text(f"UPDATE audit_log SET {column} = :v WHERE seq = :seq"),
                                 {**bound, "seq": row.seq})
            except IntegrityError:  # the database's own constraints refused it
                refused += 1
                continue
            report = vault.audit_log.verify()
            if report.ok:
                missed += 1
                misses.append(f"seq {row.seq} {column} {how}")
            with vault.engine.begin() as conn:
                _undo(conn, row)
    if not is_postgres(vault.engine):  # storage-class changes: SQLite only
        for row in rows[:: max(1, len(rows) // 8)]:
            for column in _COLUMNS:
                if column == "seq" or row._mapping[column] is None:
                    continue
                tried += 1
                try:
                    with vault.engine.begin() as conn:
                        conn.execute(text(f"UPDATE audit_log SET {column} = "
                                          f"CAST({column} AS BLOB) WHERE seq = :seq"),
                                     {"seq": row.seq})
                except IntegrityError:  # a CHECK constraint on the storage class
                    refused += 1
                    continue
                if vault.audit_log.verify().ok:
                    missed += 1
                    misses.append(f"seq {row.seq} {column} as blob")
                with vault.engine.begin() as conn:
                    _undo(conn, row)
    print(f"\naudit tamper matrix ({vault.engine.dialect.name}): {len(rows)} rows, "
          f"{tried} changes: {refused} refused by the database, "
          f"{tried - refused - missed} detected by verify, {missed} missed")
    assert misses == []
    assert tried > 15 * len(rows)
    assert vault.audit_log.verify().ok  # every change undone: no false positive


# ---------------------------------------------------------------- records


def _envelopes(engine: Engine, rid: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    with engine.connect() as conn:
        row = conn.execute(select(RecordRow.__table__).where(RecordRow.id == rid)).one()
    return decode_envelopes(bytes(row.envelopes)), dict(row._mapping)


def _set(engine: Engine, rid: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(RecordRow.__table__.update().where(RecordRow.id == rid).values(**values))


def _field_from(source: str, field: str, target_field: str) -> Callable[
        [Engine, dict[str, str]], str]:
    def tamper(engine: Engine, ids: dict[str, str]) -> str:
        src, _ = _envelopes(engine, ids[source])
        envs, _ = _envelopes(engine, ids["a"])
        envs[target_field] = src[field]
        _set(engine, ids["a"], envelopes=encode_envelopes(envs))
        return ids["a"]
    return tamper


def _whole_row_of_b(engine: Engine, ids: dict[str, str]) -> str:
    _, row_b = _envelopes(engine, ids["b"])
    _set(engine, ids["a"], envelopes=row_b["envelopes"], seal=row_b["seal"],
         version=row_b["version"])
    return ids["a"]


def _moved_to_subject_b(engine: Engine, ids: dict[str, str]) -> str:
    _set(engine, ids["a"], subject_id="s-b")
    return ids["a"]


def _version_changed(engine: Engine, ids: dict[str, str]) -> str:
    _, row = _envelopes(engine, ids["a"])
    _set(engine, ids["a"], version=row["version"] + 5)
    return ids["a"]


RECORD_TAMPERING: dict[str, Callable[[Engine, dict[str, str]], str]] = {
    "field envelope moved to another field of the record": _field_from("a", "email", "phone"),
    "field envelope from another record of the subject": _field_from("a2", "email", "email"),
    "field envelope from another subject's record": _field_from("b", "email", "email"),
    "envelopes, seal and version of another record": _whole_row_of_b,
    "record moved to another subject": _moved_to_subject_b,
    "version changed": _version_changed,
}


@pytest.mark.parametrize("how", sorted(RECORD_TAMPERING))
def test_record_tampering_is_refused_and_nothing_else_breaks(
        filled: tuple[Vault, dict[str, str]], how: str) -> None:
    vault, ids = filled
    _, original = _envelopes(vault.engine, ids["a"])
    target = RECORD_TAMPERING[how](vault.engine, ids)
    with pytest.raises(DecryptionError) as caught:
        vault.get(CRM, "customers", target, purpose=PURPOSE)
    assert "kim" not in str(caught.value).lower()
    for fields in (["email"], ["full_name"]):  # whichever field is asked for
        with pytest.raises(DecryptionError):
            vault.get(CRM, "customers", target, purpose=PURPOSE, fields=fields)
    others = [rid for key, rid in ids.items() if key != "a"]
    assert len(vault.get_many(CRM, "customers", others, purpose=PURPOSE)) == len(others)
    with vault.engine.connect() as conn:
        errors = conn.execute(select(AUDIT.c.record_ids).where(
            AUDIT.c.action == "read", AUDIT.c.decision == "error")).scalars().all()
    assert len(errors) == 3 and all(target in e for e in errors)
    _set(vault.engine, ids["a"], **{k: v for k, v in original.items() if k != "id"})
    assert vault.get(CRM, "customers", ids["a"], purpose=PURPOSE).data["email"]


def test_swapped_wrapped_keys_are_refused(filled: tuple[Vault, dict[str, str]]) -> None:
    vault, ids = filled
    ks = vault.keystore.engine
    with ks.begin() as conn:
        wrapped = dict(conn.execute(text(
            "SELECT subject_id, wrapped FROM data_keys WHERE subject_id IN ('s-a', 's-b')")).all())
        for sid, other in (("s-a", "s-b"), ("s-b", "s-a")):
            conn.execute(text("UPDATE data_keys SET wrapped = :w WHERE subject_id = :s"),
                         {"w": wrapped[other], "s": sid})
    with Vault.open(settings=vault.settings) as fresh:  # no data key cached
        for key in ("a", "b"):
            with pytest.raises((DecryptionError, KeyManagementError)):
                fresh.get(CRM, "customers", ids[key], purpose=PURPOSE)
        assert fresh.get(CRM, "customers", ids["c"], purpose=PURPOSE).data["email"]
    with ks.begin() as conn:
        for sid, blob in wrapped.items():
            conn.execute(text("UPDATE data_keys SET wrapped = :w WHERE subject_id = :s"),
                         {"w": blob, "s": sid})


def test_replaced_blind_index_rows_never_return_a_wrong_record(
        filled: tuple[Vault, dict[str, str]]) -> None:
    vault, ids = filled
    find = vault.find
    with vault.engine.begin() as conn:
        # Every token of record a now points at record c; c's e-mail token at b.
        conn.execute(text("UPDATE blind_index SET record_id = :c WHERE record_id = :a"),
                     {"a": ids["a"], "c": ids["c"]})
        conn.execute(text("UPDATE blind_index SET record_id = :b WHERE record_id = :c "
                          "AND field = 'email' AND digest NOT IN (SELECT digest FROM "
                          "blind_index WHERE record_id = :b)"), {"b": ids["b"], "c": ids["c"]})
    for n, email in ((1, "kim1@example.com"), (4, "kim4@example.com"),
                     (3, "b.new@example.com")):
        for record in find(CRM, "customers", purpose=PURPOSE, email=email):
            assert record.data["email"] == email, f"find({email}) returned record of {n}"
    print("\nblind-index tampering: 3 searches, 0 wrong records returned")
