"""The tamper matrix: every kind of damage done through raw SQL, with the
append-only triggers disabled, is detected and named with its place, on both
backends; untouched logs verify; forged or missing checkpoints are caught;
the CLI verifies with no secret and exits 3 on damage."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from vault import Actor, Vault, VaultSettings
from vault.audit import VerifyReport, verify_database
from vault.audit import log as audit_log_module
from vault.audit.chain import HASH_FORMAT, SEP, entry_hash_v2, format_ts, payload
from vault.audit.checkpoint import key_fingerprint, write_checkpoint
from vault.cli import app
from vault.crypto.keys import LocalKeyProvider
from vault.errors import AccessDenied, AuditError, ConfigError
from vault.store.engine import make_engine

from ..conftest import POLICIES, ROLE_USERS
from ..helpers import disable_triggers
from .test_data_path import customer

CRM = Actor("crm", "acme")
PURPOSE = "account_management"
CUSTOMERS = 12


@pytest.fixture(autouse=True, params=["serial", "parallel"])
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case twice: walked in this process, and by two forked workers that
    each take a range of chains (vault.audit.parallel), whatever the log's size."""
    if request.param == "parallel":
        monkeypatch.setattr(audit_log_module, "workers_for",
                            lambda requested, entries: 2 if requested is None else requested)
    return str(request.param)


@pytest.fixture
def busy(settings: VaultSettings, tmp_path: Path) -> Iterator[tuple[Vault, Path]]:
    """A vault with reads and writes over several chains and one signed checkpoint.

    Not the ``vault`` fixture: that one asserts at teardown that the log verifies.
    """
    vault, rid = vault_with_customers(settings, CUSTOMERS)
    for _ in range(3):  # one chain strictly longer than the others
        vault.get(CRM, "customers", rid, purpose=PURPOSE)
    yield from checkpointed(vault, tmp_path)


def vault_with_customers(settings: VaultSettings, count: int) -> tuple[Vault, str]:
    """A vault over three chains with the role users assigned in ``acme`` and
    ``count`` customers each written and read once; and the last one's record id."""
    vault = Vault.init(settings=settings.model_copy(update={"audit_chains": 3}))
    for user, role in ROLE_USERS.items():
        vault.roles.assign(user, role, tenant="acme")
    rid = ""
    for n in range(count):
        rid = vault.put(CRM, "customers", customer(n), purpose=PURPOSE)
        vault.get(CRM, "customers", rid, purpose=PURPOSE)
    return vault, rid


def checkpointed(vault: Vault, tmp_path: Path) -> Iterator[tuple[Vault, Path]]:
    """For a fixture: sign a checkpoint of ``vault``, yield it with the checkpoint
    folder, and close it afterwards."""
    folder = tmp_path / "checkpoints"
    vault.audit.checkpoint(folder)
    try:
        yield vault, folder
    finally:
        vault.close()


# ------------------------------------------------------------------ raw SQL helpers


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).mappings())


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def chains_by_length(engine: Engine) -> list[tuple[int, int]]:
    """Subject chains, longest first."""
    found = rows(engine, "SELECT chain, COUNT(*) AS n FROM audit_log WHERE chain > 0 "
                         "GROUP BY chain ORDER BY n DESC, chain")
    return [(int(r["chain"]), int(r["n"])) for r in found]


def entry(engine: Engine, chain: int, position: int) -> dict[str, Any]:
    return dict(rows(engine, "SELECT * FROM audit_log WHERE chain = :c AND chain_seq = :p",
                     c=chain, p=position)[0])


def second_entry_unguarded(vault: Vault) -> tuple[int, dict[str, Any]]:
    """The longest chain and its second entry, with the audit log's triggers taken away."""
    chain, _n = chains_by_length(vault.engine)[0]
    target = entry(vault.engine, chain, 2)
    disable_triggers(vault.engine)
    return chain, target


def rehash(row: dict[str, Any], chain: int, position: int, prev: str) -> str:
    """The hash an attacker computes for a forged or moved entry."""
    ts = row["ts"]
    if isinstance(ts, str):  # SQLite gives the stored text back through raw SQL
        ts = dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC)
    if row.get("format", 1) == 2:
        return entry_hash_v2(
            seq=row["seq"], chain=chain, chain_seq=position, ts=format_ts(ts),
            request_id=row["request_id"], tenant=row["tenant"], actor=row["actor"],
            action=row["action"], collection=row["collection"], record_ids=row["record_ids"],
            subjects=row["subjects"], fields=row["fields"], purpose=row["purpose"],
            decision=row["decision"], reason=row["reason"], context=row["context"],
            prev_hash=prev)
    body = payload(format_ts(ts), row["request_id"], row["tenant"], row["actor"],
                   row["action"], row["collection"], row["record_ids"], row["subjects"],
                   row["fields"], row["purpose"], row["decision"], row["reason"], prev)
    return hashlib.sha256(SEP.join((HASH_FORMAT, str(chain), str(position), body)).encode()
                          ).hexdigest()


def insert(engine: Engine, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    execute(engine, f"INSERT INTO audit_log ({columns}) VALUES ("
            + ", ".join(f":{k}" for k in row) + ")", **row)


def set_head(engine: Engine, chain: int, length: int, head: str) -> None:
    execute(engine, "UPDATE audit_heads SET length = :n, head_hash = :h WHERE chain = :c",
            n=length, h=head, c=chain)


def renumber(engine: Engine, chain: int, start: int, by: int) -> None:
    """Shift positions >= start by ``by``, in two steps so no unique check trips."""
    execute(engine, "UPDATE audit_log SET chain_seq = -chain_seq "
                    "WHERE chain = :c AND chain_seq >= :p", c=chain, p=start)
    execute(engine, "UPDATE audit_log SET chain_seq = -chain_seq + :by "
                    "WHERE chain = :c AND chain_seq < 0", c=chain, by=by)


def signing_key(vault: Vault) -> Ed25519PrivateKey:
    """The vault's checkpoint signing key, from its key file."""
    return LocalKeyProvider.load(vault.settings.resolved_key_file).signing_key()


def check(vault: Vault, folder: Path | None = None) -> VerifyReport:
    return vault.audit_log.verify(
        checkpoints=folder,
        public_key=signing_key(vault).public_key() if folder else None,
        vault_id=vault.vault_id)


def kinds(report: VerifyReport) -> set[str]:
    return {f.kind.value for f in report.findings}


# ------------------------------------------------------------------ no false positives


def test_untouched_log_with_several_checkpoints_verifies(busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    rid = vault.put(CRM, "customers", customer(99), purpose=PURPOSE)
    vault.audit.checkpoint(folder)
    vault.get(CRM, "customers", rid, purpose=PURPOSE)
    vault.audit.checkpoint(folder)
    vault.get(CRM, "customers", rid, purpose=PURPOSE)  # entries after the last checkpoint
    report = check(vault, folder)
    assert report.ok, report.findings
    assert (report.checkpoints, report.findings) == (3, ())
    assert report.entries == vault.audit.count()
    # the admin chain and every subject chain in use (subjects fall on 3 chains at
    # random: with 12 of them, one chain stays empty in about 2% of runs)
    assert report.chains == 1 + len(chains_by_length(vault.engine))
    full = vault.audit.verify(checkpoints=folder)
    assert full.ok and full.checkpoints == 3
    url = vault.settings.resolved_database_url
    assert verify_database(url, checkpoints=folder,
                           public_key=vault.audit.export_public_key()).ok


# ------------------------------------------------------------------ entries


def test_modified_entry(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    chain, target = second_entry_unguarded(vault)
    execute(vault.engine, "UPDATE audit_log SET purpose = 'marketing' WHERE seq = :s",
            s=target["seq"])
    report = check(vault)
    assert (report.reason, report.first_bad_seq, report.chain) == (
        "modified_entry", target["seq"], chain)
    assert [(f.kind.value, f.chain, f.position) for f in report.findings] == [
        ("modified_entry", chain, 2)]


@pytest.mark.parametrize("column", ["collection", "purpose", "reason"])
def test_absent_value_swapped_for_its_mark(busy: tuple[Vault, Path], column: str) -> None:
    """NULL and the text U+001E (the hash's mark for an absent value) are told apart."""
    vault, _ = busy
    target = rows(vault.engine, f"SELECT seq, chain, chain_seq FROM audit_log "
                                f"WHERE {column} IS NULL ORDER BY seq LIMIT 1")
    assert target, f"no entry with {column} absent"
    disable_triggers(vault.engine)
    execute(vault.engine, f"UPDATE audit_log SET {column} = :m WHERE seq = :s",
            m="\x1e", s=target[0]["seq"])
    report = check(vault)
    assert [(f.kind.value, f.seq) for f in report.findings] == [
        ("modified_entry", target[0]["seq"])]


def test_separator_moved_between_columns(busy: tuple[Vault, Path]) -> None:
    """Values that keep the joined text but move a field boundary are caught."""
    vault, _ = busy
    _chain, target = second_entry_unguarded(vault)
    execute(vault.engine, "UPDATE audit_log SET tenant = :t, actor = :a WHERE seq = :s",
            t=target["tenant"] + "\x1f" + target["actor"][:1], a=target["actor"][1:],
            s=target["seq"])
    report = check(vault)
    assert [(f.kind.value, f.seq) for f in report.findings] == [
        ("modified_entry", target["seq"])]


@pytest.mark.parametrize("where", ["first", "middle", "tail"])
def test_deleted_entry(busy: tuple[Vault, Path], where: str) -> None:
    vault, _ = busy
    chain, n = chains_by_length(vault.engine)[0]
    position = {"first": 1, "middle": n // 2, "tail": n}[where]
    target = entry(vault.engine, chain, position)
    disable_triggers(vault.engine)
    execute(vault.engine, "DELETE FROM audit_log WHERE seq = :s", s=target["seq"])
    report = check(vault)
    assert kinds(report) == {"deleted_entry"}
    assert (report.findings[0].chain, report.findings[0].position) == (chain, position)


def test_deleted_entry_hidden_by_renumbering(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    chain, n = chains_by_length(vault.engine)[0]
    target = entry(vault.engine, chain, 3)
    disable_triggers(vault.engine)
    execute(vault.engine, "DELETE FROM audit_log WHERE seq = :s", s=target["seq"])
    renumber(vault.engine, chain, 4, -1)
    set_head(vault.engine, chain, n - 1, entry(vault.engine, chain, n - 1)["hash"])
    report = check(vault)
    assert kinds(report) == {"deleted_entry"}
    assert (report.reason, report.chain, report.findings[0].position) == (
        "deleted_entry", chain, 3)


def test_inserted_entry_at_the_tail(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    chain, n = chains_by_length(vault.engine)[0]
    last = entry(vault.engine, chain, n)
    forged = {**last, "seq": last["seq"] + 10_000, "chain_seq": n + 1, "actor": "mallory",
              "prev_hash": last["hash"]}
    forged["hash"] = rehash(forged, chain, n + 1, last["hash"])
    insert(vault.engine, forged)  # an INSERT needs no trigger disabled
    report = check(vault)
    assert kinds(report) == {"inserted_entry"}
    assert (report.findings[0].chain, report.findings[0].position) == (chain, n + 1)


def test_inserted_entry_in_the_middle(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    chain, n = chains_by_length(vault.engine)[0]
    model = entry(vault.engine, chain, 2)
    disable_triggers(vault.engine)
    renumber(vault.engine, chain, 3, +1)  # make room at position 3
    forged = {**model, "seq": model["seq"] + 10_000, "chain_seq": 3, "actor": "mallory",
              "prev_hash": "ab" * 32}  # (chain, prev_hash) is unique: it cannot link to 2
    forged["hash"] = rehash(forged, chain, 3, forged["prev_hash"])
    insert(vault.engine, forged)
    set_head(vault.engine, chain, n + 1, entry(vault.engine, chain, n + 1)["hash"])
    report = check(vault)
    assert kinds(report) == {"inserted_entry"}  # not "modified" for the renumbered ones
    assert (report.reason, report.first_bad_seq, report.chain) == (
        "inserted_entry", forged["seq"], chain)
    assert report.findings[0].position == 3


def test_reordered_entries(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    chain, _n = chains_by_length(vault.engine)[0]
    a, b = entry(vault.engine, chain, 2), entry(vault.engine, chain, 3)
    disable_triggers(vault.engine)
    execute(vault.engine, "UPDATE audit_log SET chain_seq = -1 WHERE seq = :s", s=a["seq"])
    execute(vault.engine, "UPDATE audit_log SET chain_seq = 2 WHERE seq = :s", s=b["seq"])
    execute(vault.engine, "UPDATE audit_log SET chain_seq = 3 WHERE seq = :s", s=a["seq"])
    report = check(vault)
    assert kinds(report) == {"reordered_entries"}
    assert {(f.seq, f.position) for f in report.findings} == {(a["seq"], 3), (b["seq"], 2)}


def test_entry_moved_between_chains(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    (chain, n), *_, (shortest, m) = chains_by_length(vault.engine)
    assert m < n
    target = entry(vault.engine, chain, n)
    disable_triggers(vault.engine)
    execute(vault.engine, "UPDATE audit_log SET chain = :c WHERE seq = :s",
            c=shortest, s=target["seq"])
    report = check(vault)
    assert (report.reason, report.first_bad_seq, report.chain) == (
        "moved_entry", target["seq"], shortest)
    assert f"from chain {chain}" in report.detail


def test_entry_moved_and_rehashed_into_another_chain(busy: tuple[Vault, Path]) -> None:
    """Every hash and head consistent: the entry's subjects still name its chain."""
    vault, _ = busy
    (chain, n), *_, (other, m) = chains_by_length(vault.engine)
    target = entry(vault.engine, chain, n)
    other_head = entry(vault.engine, other, m)["hash"]
    disable_triggers(vault.engine)
    new_hash = rehash(target, other, m + 1, other_head)
    execute(vault.engine, "UPDATE audit_log SET chain = :c, chain_seq = :p, prev_hash = :ph, "
                          "hash = :h WHERE seq = :s",
            c=other, p=m + 1, ph=other_head, h=new_hash, s=target["seq"])
    set_head(vault.engine, chain, n - 1, target["prev_hash"])
    set_head(vault.engine, other, m + 1, new_hash)
    report = check(vault)
    assert [(f.kind.value, f.chain, f.position, f.seq) for f in report.findings] == [
        ("moved_entry", other, m + 1, target["seq"])]
    assert f"belong to chain {chain}" in report.detail


@pytest.mark.parametrize("column", ["chain", "chain_seq"])
def test_forged_entry_with_a_position_that_is_not_a_number(busy: tuple[Vault, Path],
                                                           column: str) -> None:
    """SQLite keeps text in an integer column: a forged row (a plain INSERT, which no
    trigger refuses) or a head whose chain or position is text is named as damage with
    its place; verification used to stop with a ValueError or TypeError instead."""
    vault, folder = busy
    if is_postgres(vault.engine):
        pytest.skip("PostgreSQL refuses text in a bigint column")
    chain, n = chains_by_length(vault.engine)[0]
    last = entry(vault.engine, chain, n)
    forged = {**last, "seq": last["seq"] + 10_000, "chain_seq": n + 1,
              "prev_hash": "cd" * 32, column: "x"}
    insert(vault.engine, forged)
    for report in (check(vault), check(vault, folder)):
        found = [(f.kind.value, f.chain, f.position, f.seq) for f in report.findings]
        place = (None, n + 1) if column == "chain" else (chain, None)
        assert found == [("modified_entry", *place, forged["seq"])], found
        assert report.entries == vault.audit.count()
    result = CliRunner().invoke(app, ["audit", "verify", "--database-url",
                                      vault.settings.resolved_database_url])
    assert result.exit_code == 3 and "modified_entry" in result.output, result.output
    assert f"entry {forged['seq']}" in result.output
    set_head(vault.engine, 0, 0, "0" * 64)
    execute(vault.engine, "UPDATE audit_heads SET length = 'many' WHERE chain = 0")
    assert ("head_mismatch", 0) in {(f.kind.value, f.chain) for f in check(vault).findings}


# ------------------------------------------------------------------ what only checkpoints see


def cut_tail_consistently(engine: Engine, chain: int, n: int, count: int = 1) -> None:
    disable_triggers(engine)
    for position in range(n, n - count, -1):
        execute(engine, "DELETE FROM audit_log WHERE chain = :c AND chain_seq = :p",
                c=chain, p=position)
    set_head(engine, chain, n - count, entry(engine, chain, n - count)["hash"])


def test_truncated_chain_is_caught_by_a_checkpoint(busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    chain, n = chains_by_length(vault.engine)[0]
    cut_tail_consistently(vault.engine, chain, n, count=2)
    assert check(vault).ok  # heads rewritten too: the chains alone cannot tell
    report = check(vault, folder)
    assert kinds(report) == {"truncated_chain"}
    assert (report.reason, report.chain, report.findings[0].position) == (
        "truncated_chain", chain, n - 1)


def test_truncation_with_stale_heads_names_truncation_first(busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    chain, n = chains_by_length(vault.engine)[0]
    disable_triggers(vault.engine)
    execute(vault.engine, "DELETE FROM audit_log WHERE chain = :c AND chain_seq = :p",
            c=chain, p=n)
    report = check(vault, folder)
    assert report.reason == "truncated_chain"
    assert kinds(report) == {"truncated_chain", "deleted_entry"}


def test_chain_rewritten_after_checkpoint(busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    chain, n = chains_by_length(vault.engine)[0]
    disable_triggers(vault.engine)
    prev = "0" * 64
    for position in range(1, n + 1):
        row = entry(vault.engine, chain, position)
        if position == 1:
            row["actor"] = "mallory"
        new_hash = rehash(row, chain, position, prev)
        execute(vault.engine, "UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h "
                              "WHERE seq = :s", a=row["actor"], p=prev, h=new_hash, s=row["seq"])
        prev = new_hash
    set_head(vault.engine, chain, n, prev)
    assert check(vault).ok  # consistent rewrite: only the signed checkpoint knows
    report = check(vault, folder)
    assert kinds(report) == {"rewritten_after_checkpoint"}
    assert (report.chain, report.findings[0].position) == (chain, n)


def test_refuses_to_sign_a_damaged_log_or_one_an_earlier_checkpoint_contradicts(
        busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    chain, n = chains_by_length(vault.engine)[0]
    cut_tail_consistently(vault.engine, chain, n)
    with pytest.raises(AuditError, match="truncated_chain"):
        vault.audit.checkpoint(folder)
    assert len(list(folder.glob("checkpoint-*.json"))) == 1
    execute(vault.engine, "UPDATE audit_log SET actor = 'x' WHERE chain = :c AND chain_seq = 1",
            c=chain)
    fresh = folder.parent / "fresh"
    with pytest.raises(AuditError, match="modified_entry"):
        vault.audit.checkpoint(fresh)
    assert not fresh.exists()
    refusals = rows(vault.engine, "SELECT decision, reason FROM audit_log "
                                  "WHERE action = 'audit.checkpoint' AND decision = 'error'")
    assert [r["reason"] for r in refusals] == ["damage:truncated_chain", "damage:modified_entry"]


# ------------------------------------------------------------------ checkpoints themselves


def test_forged_checkpoints(busy: tuple[Vault, Path], tmp_path: Path) -> None:
    vault, folder = busy
    vault.audit.checkpoint(folder)
    vault.audit.checkpoint(folder)
    files = sorted(folder.glob("checkpoint-*.json"))
    assert len(files) == 3
    assert check(vault, folder).ok

    altered = tmp_path / "altered"  # body changed, signature kept
    shutil.copytree(folder, altered)
    doc = json.loads(files[1].read_text())
    doc["body"]["chains"][1]["length"] += 1
    (altered / files[1].name).write_text(json.dumps(doc))
    report = check(vault, altered)
    assert kinds(report) == {"bad_signature"}
    assert files[1].name in report.detail

    resigned = tmp_path / "resigned"  # signature replaced
    shutil.copytree(folder, resigned)
    doc = json.loads(files[2].read_text())
    doc["signature"] = base64.b64encode(Ed25519PrivateKey.generate().sign(b"x")).decode()
    (resigned / files[2].name).write_text(json.dumps(doc))
    assert kinds(check(vault, resigned)) == {"bad_signature"}

    other_key = tmp_path / "other-key"  # a well-formed checkpoint signed by another key
    heads = {h.chain: h for h in vault.audit_log.verify().heads}
    write_checkpoint(other_key, heads=heads, signing_key=Ed25519PrivateKey.generate(),
                     vault_id=vault.vault_id, now=vault.clock.now())
    assert check(vault, other_key).reason == "bad_signature"

    other_vault = tmp_path / "other-vault"  # our key, but another vault's checkpoint
    write_checkpoint(other_vault, heads=heads, signing_key=signing_key(vault),
                     vault_id="0" * 32, now=vault.clock.now())
    report = check(vault, other_vault)
    assert report.reason == "bad_checkpoint" and "another vault" in report.detail

    wrong_key = vault.audit_log.verify(checkpoints=folder, vault_id=vault.vault_id,
                                       public_key=Ed25519PrivateKey.generate().public_key())
    assert wrong_key.reason == "bad_signature"
    assert len(wrong_key.findings) == 3


@pytest.mark.parametrize("which", [0, 1])
def test_missing_checkpoint_breaks_the_chain_of_checkpoints(
        busy: tuple[Vault, Path], tmp_path: Path, which: int) -> None:
    vault, folder = busy
    vault.audit.checkpoint(folder)
    vault.audit.checkpoint(folder)
    files = sorted(folder.glob("checkpoint-*.json"))
    gap = tmp_path / "gap"
    shutil.copytree(folder, gap)
    (gap / files[which].name).unlink()
    report = check(vault, gap)
    assert kinds(report) == {"checkpoint_chain_broken"}
    assert files[which + 1].name in report.detail


def test_malformed_and_absent_checkpoints(busy: tuple[Vault, Path], tmp_path: Path) -> None:
    vault, folder = busy
    (folder / "checkpoint-999999-broken.json").write_text("{")
    report = check(vault, folder)
    assert report.reason == "bad_checkpoint" and "malformed" in report.detail
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check(vault, empty).reason == "bad_checkpoint"
    with pytest.raises(ConfigError):
        check(vault, tmp_path / "nowhere")
    with pytest.raises(AuditError, match="malformed"):  # never sign on top of a broken folder
        vault.audit.checkpoint(folder)


def test_checkpoint_file_holds_no_personal_data(busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    (path,) = folder.glob("checkpoint-*.json")
    assert re.fullmatch(r"checkpoint-000001-\d{8}T\d{6}Z\.json", path.name)
    raw = path.read_text()
    for n in range(CUSTOMERS):
        for value in customer(n).values():
            if isinstance(value, str) and len(value) > 3:
                assert value not in raw
    doc = json.loads(raw)
    assert set(doc) == {"body", "signature"}
    body = doc["body"]
    assert set(body) == {"format", "vault_id", "sequence", "created_at", "previous", "key_id",
                         "entries", "chains"}
    assert body["previous"] is None and body["vault_id"] == vault.vault_id
    assert body["key_id"] == key_fingerprint(signing_key(vault).public_key())
    assert [c["chain"] for c in body["chains"]] == [0, 1, 2, 3]
    assert sum(c["length"] for c in body["chains"]) == body["entries"]
    second = vault.audit.checkpoint(folder)
    previous = json.loads(second.read_text())["body"]["previous"]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert previous == hashlib.sha256(canonical).hexdigest()


# ------------------------------------------------------------------ the service


def test_audit_service_is_authorised_and_audited(busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    sales = Actor("sally", "acme")
    with pytest.raises(AccessDenied):
        vault.audit.checkpoint(folder, actor=sales)
    with pytest.raises(AccessDenied):
        vault.audit.export_public_key(actor=sales)
    with pytest.raises(AccessDenied):
        vault.audit.verify(actor=sales, checkpoints=folder)
    officer = Actor("colin", "acme")
    pem = vault.audit.export_public_key(actor=officer)
    assert vault.audit.checkpoint(folder, actor=officer).exists()
    assert vault.audit.verify(actor=officer, checkpoints=folder, public_key=pem).ok
    events = rows(vault.engine, "SELECT action, actor, decision FROM audit_log WHERE chain = 0 "
                                "AND action IN ('audit.checkpoint', 'audit.verify', "
                                "'keys.export_public') ORDER BY seq")
    seen = [(e["action"], e["actor"], e["decision"]) for e in events]
    assert ("keys.export_public", "colin", "allow") in seen
    assert ("audit.checkpoint", "colin", "allow") in seen
    assert ("audit.verify", "colin", "allow") in seen
    denied = rows(vault.engine, "SELECT action FROM audit_log WHERE actor = 'sally' "
                                "AND decision = 'deny'")
    assert [d["action"] for d in denied] == ["audit.read"] * 3


def test_export_public_key_to_a_file(busy: tuple[Vault, Path], tmp_path: Path) -> None:
    vault, _ = busy
    target = tmp_path / "vault.pub.pem"
    pem = vault.audit.export_public_key(target)
    assert target.read_bytes() == pem and b"PRIVATE" not in pem
    key = serialization.load_pem_public_key(pem)
    assert key == signing_key(vault).public_key()
    with pytest.raises(ConfigError):
        vault.audit.export_public_key(tmp_path / "no" / "such" / "dir" / "k.pem")


# ------------------------------------------------------------------ the CLI, no secrets


@pytest.fixture
def cli_env(sqlite_settings: VaultSettings) -> dict[str, str]:
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(sqlite_settings.home),
           "COLUMNS": "200"}
    runner = CliRunner()
    assert runner.invoke(app, ["demo", "--customers", "8"], env=env).exit_code == 0
    return env


def test_cli_checkpoint_export_and_verify(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    folder, pem = tmp_path / "cps", tmp_path / "vault.pub.pem"
    result = runner.invoke(app, ["audit", "checkpoint", "--out", str(folder)], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "checkpoint-000001-" in result.output
    result = runner.invoke(app, ["keys", "export-public-key"], env=cli_env)
    assert result.exit_code == 0 and "BEGIN PUBLIC KEY" in result.output
    result = runner.invoke(app, ["keys", "export-public-key", "--out", str(pem)], env=cli_env)
    assert result.exit_code == 0, result.output
    serialization.load_pem_public_key(pem.read_bytes())
    result = runner.invoke(app, ["audit", "verify", "--checkpoints", str(folder)], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "1 signed checkpoints hold" in result.output
    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    result = runner.invoke(app, ["audit", "verify", "--checkpoints", str(folder),
                                 "--public-key", str(other)], env=cli_env)
    assert result.exit_code == 3 and "bad_signature" in result.output
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key")
    result = runner.invoke(app, ["audit", "verify", "--checkpoints", str(folder),
                                 "--public-key", str(bogus)], env=cli_env)
    assert result.exit_code == 1 and "Traceback" not in result.output
    result = runner.invoke(app, ["audit", "verify", "--checkpoints", str(tmp_path / "none")],
                           env=cli_env)
    assert result.exit_code == 1


def test_cli_verify_needs_no_secret(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    home = Path(cli_env["VAULT_HOME"])
    folder, pem = tmp_path / "cps", tmp_path / "vault.pub.pem"
    assert runner.invoke(app, ["audit", "checkpoint", "--out", str(folder)],
                         env=cli_env).exit_code == 0
    assert runner.invoke(app, ["keys", "export-public-key", "--out", str(pem)],
                         env=cli_env).exit_code == 0
    # The auditor's machine: no key file, no key store.
    (home / "keyfile.json").rename(tmp_path / "elsewhere.json")
    (home / "keys.db").rename(tmp_path / "keys.db")
    url = f"sqlite:///{home / 'data.db'}"
    with_url = ["audit", "verify", "--database-url", url, "--checkpoints", str(folder),
                "--public-key", str(pem)]
    from_home = ["audit", "verify", "--checkpoints", str(folder), "--public-key", str(pem)]
    for args in (with_url, from_home):
        result = runner.invoke(app, args, env=cli_env)
        assert result.exit_code == 0, result.output
        assert "1 signed checkpoints hold" in result.output
    result = runner.invoke(app, ["audit", "verify", "--database-url", url, "--checkpoints",
                                 str(folder)], env=cli_env)
    assert result.exit_code == 1 and "public key" in result.output
    missing = f"sqlite:///{tmp_path / 'absent.db'}"
    result = runner.invoke(app, ["audit", "verify", "--database-url", missing], env=cli_env)
    assert result.exit_code == 1 and not (tmp_path / "absent.db").exists()

    engine = make_engine(url)
    try:
        chain, n = chains_by_length(engine)[0]
        cut_tail_consistently(engine, chain, n)
    finally:
        engine.dispose()
    assert verify_database(url).ok  # without checkpoints the cut is invisible
    for args in (with_url, from_home):
        result = runner.invoke(app, args, env=cli_env)
        assert result.exit_code == 3, result.output
        assert "truncated_chain" in result.output
        assert f"chain {chain}, position {n}" in result.output
