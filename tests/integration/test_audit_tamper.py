"""The tamper matrix: every kind of damage done through raw SQL, with the
append-only triggers disabled, is detected and named with its place, on both
backends; untouched logs verify; forged checkpoints are caught."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from typer.testing import CliRunner

from vault import Actor, Vault, VaultSettings
from vault.audit import verify_database
from vault.audit.chain import HASH_FORMAT, SEP, format_ts, payload
from vault.audit.checkpoint import write_checkpoint
from vault.cli import app

from ..conftest import POLICIES
from .test_data_path import customer
from .test_security import _disable_audit_triggers

CRM = Actor("crm", "acme")
PURPOSE = "account_management"


@pytest.fixture
def busy(settings: VaultSettings, tmp_path: Path) -> Iterator[tuple[Vault, Path]]:
    """A vault with activity over several chains and one signed checkpoint."""
    vault = Vault.init(settings=settings.model_copy(update={"audit_chains": 3}))
    vault.roles.assign("crm", "crm_service", tenant="acme")
    for n in range(12):
        rid = vault.put(CRM, "customers", customer(n), purpose=PURPOSE)
        vault.get(CRM, "customers", rid, purpose=PURPOSE)
    for _ in range(3):  # one chain strictly longer than the others
        vault.get(CRM, "customers", rid, purpose=PURPOSE)
    folder = tmp_path / "checkpoints"
    vault.audit.checkpoint(folder)
    try:
        yield vault, folder
    finally:
        vault.close()


def rows(vault: Vault, sql: str, **params: Any) -> list[Any]:
    with vault.engine.connect() as conn:
        return list(conn.execute(text(sql), params).mappings())


def longest_chain(vault: Vault) -> tuple[int, int]:
    found = rows(vault, "SELECT chain, COUNT(*) AS n FROM audit_log WHERE chain > 0 "
                        "GROUP BY chain ORDER BY n DESC, chain")
    return int(found[0]["chain"]), int(found[0]["n"])


def entry(vault: Vault, chain: int, position: int) -> dict[str, Any]:
    return dict(rows(vault, "SELECT * FROM audit_log WHERE chain = :c AND chain_seq = :p",
                     c=chain, p=position)[0])


def execute(vault: Vault, sql: str, **params: Any) -> None:
    with vault.engine.begin() as conn:
        conn.execute(text(sql), params)


def rehash(vault: Vault, row: dict[str, Any], chain: int, position: int, prev: str) -> str:
    ts = row["ts"]
    if isinstance(ts, str):  # SQLite gives the stored text back through raw SQL
        ts = dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC)
    stamp = format_ts(ts)
    body = payload(stamp, row["request_id"], row["tenant"], row["actor"], row["action"],
                   row["collection"], row["record_ids"], row["subjects"], row["fields"],
                   row["purpose"], row["decision"], row["reason"], prev)
    return hashlib.sha256(SEP.join((HASH_FORMAT, str(chain), str(position), body)).encode()
                          ).hexdigest()


def check(vault: Vault, folder: Path | None = None) -> Any:
    return vault.audit_log.verify(
        checkpoints=folder,
        public_key=vault._provider.signing_key().public_key() if folder else None,
        vault_id=vault.vault_id)


# ------------------------------------------------------------------ no false positives


def test_untouched_log_with_several_checkpoints_verifies(busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    rid = vault.put(CRM, "customers", customer(99), purpose=PURPOSE)
    vault.audit.checkpoint(folder)
    vault.get(CRM, "customers", rid, purpose=PURPOSE)
    vault.audit.checkpoint(folder)
    report = check(vault, folder)
    assert report.ok, report.findings
    assert report.checkpoints == 3
    assert report.findings == ()


# ------------------------------------------------------------------ entries


def test_modified_entry(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    chain, _n = longest_chain(vault)
    target = entry(vault, chain, 2)
    _disable_audit_triggers(vault)
    execute(vault, "UPDATE audit_log SET actor = 'mallory' WHERE seq = :s", s=target["seq"])
    report = check(vault)
    assert (report.reason, report.first_bad_seq, report.chain) == (
        "modified_entry", target["seq"], chain)


@pytest.mark.parametrize("where", ["middle", "tail"])
def test_deleted_entry(busy: tuple[Vault, Path], where: str) -> None:
    vault, _ = busy
    chain, n = longest_chain(vault)
    position = 2 if where == "middle" else n
    target = entry(vault, chain, position)
    _disable_audit_triggers(vault)
    execute(vault, "DELETE FROM audit_log WHERE seq = :s", s=target["seq"])
    report = check(vault)
    assert report.reason == "deleted_entry"
    assert (report.findings[0].chain, report.findings[0].position) == (chain, position)


def test_inserted_entry(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    chain, n = longest_chain(vault)
    last = entry(vault, chain, n)
    forged = {**last, "seq": last["seq"] + 10_000, "chain_seq": n + 1, "actor": "mallory",
              "prev_hash": last["hash"]}
    forged["hash"] = rehash(vault, forged, chain, n + 1, last["hash"])
    columns = ", ".join(forged)
    execute(vault, f"INSERT INTO audit_log ({columns}) VALUES ("
                   + ", ".join(f":{k}" for k in forged) + ")", **forged)
    report = check(vault)
    assert report.reason == "inserted_entry"
    assert (report.findings[0].chain, report.findings[0].position) == (chain, n + 1)


def test_reordered_entries(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    chain, _n = longest_chain(vault)
    a, b = entry(vault, chain, 2), entry(vault, chain, 3)
    _disable_audit_triggers(vault)
    execute(vault, "UPDATE audit_log SET chain_seq = -1 WHERE seq = :s", s=a["seq"])
    execute(vault, "UPDATE audit_log SET chain_seq = 2 WHERE seq = :s", s=b["seq"])
    execute(vault, "UPDATE audit_log SET chain_seq = 3 WHERE seq = :s", s=a["seq"])
    report = check(vault)
    assert report.reason == "reordered_entries"
    assert {f.seq for f in report.findings if f.kind.value == "reordered_entries"} == {
        a["seq"], b["seq"]}


def test_entry_moved_between_chains(busy: tuple[Vault, Path]) -> None:
    vault, _ = busy
    chain, n = longest_chain(vault)
    shortest = rows(vault, "SELECT chain, COUNT(*) AS n FROM audit_log WHERE chain > 0 "
                           "GROUP BY chain ORDER BY n, chain")[0]
    assert int(shortest["n"]) < n
    target = entry(vault, chain, n)
    _disable_audit_triggers(vault)
    execute(vault, "UPDATE audit_log SET chain = :c WHERE seq = :s",
            c=int(shortest["chain"]), s=target["seq"])
    report = check(vault)
    assert (report.reason, report.first_bad_seq) == ("moved_entry", target["seq"])
    assert f"from chain {chain}" in report.detail


# ------------------------------------------------------------------ what only checkpoints see


def _cut_tail_consistently(vault: Vault, chain: int, n: int) -> None:
    tail = entry(vault, chain, n)
    _disable_audit_triggers(vault)
    execute(vault, "DELETE FROM audit_log WHERE seq = :s", s=tail["seq"])
    execute(vault, "UPDATE audit_heads SET length = :n, head_hash = :h WHERE chain = :c",
            n=n - 1, h=tail["prev_hash"], c=chain)


def test_truncated_chain_is_caught_by_a_checkpoint(busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    chain, n = longest_chain(vault)
    _cut_tail_consistently(vault, chain, n)
    assert check(vault).ok  # heads rewritten too: the chain alone cannot tell
    report = check(vault, folder)
    assert report.reason == "truncated_chain"
    assert report.chain == chain


def test_chain_rewritten_after_checkpoint(busy: tuple[Vault, Path]) -> None:
    vault, folder = busy
    chain, n = longest_chain(vault)
    _disable_audit_triggers(vault)
    prev = "0" * 64
    for position in range(1, n + 1):
        row = entry(vault, chain, position)
        if position == 1:
            row["actor"] = "mallory"
        new_hash = rehash(vault, row, chain, position, prev)
        execute(vault, "UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h "
                       "WHERE seq = :s", a=row["actor"], p=prev, h=new_hash, s=row["seq"])
        prev = new_hash
    execute(vault, "UPDATE audit_heads SET head_hash = :h WHERE chain = :c", h=prev, c=chain)
    assert check(vault).ok  # consistent rewrite: only the signed checkpoint knows
    report = check(vault, folder)
    assert report.reason == "rewritten_after_checkpoint"
    assert (report.chain, report.findings[0].position) == (chain, n)


# ------------------------------------------------------------------ checkpoints themselves


def test_forged_and_missing_checkpoints(busy: tuple[Vault, Path], tmp_path: Path) -> None:
    vault, folder = busy
    vault.audit.checkpoint(folder)
    vault.audit.checkpoint(folder)
    files = sorted(folder.glob("checkpoint-*.json"))
    assert len(files) == 3

    altered = tmp_path / "altered"
    shutil.copytree(folder, altered)
    doc = json.loads(files[1].read_text())
    doc["body"]["chains"][1]["length"] += 1
    (altered / files[1].name).write_text(json.dumps(doc))
    assert check(vault, altered).reason == "bad_checkpoint"

    resigned = tmp_path / "resigned"
    shutil.copytree(folder, resigned)
    doc = json.loads(files[2].read_text())
    doc["signature"] = base64.b64encode(
        Ed25519PrivateKey.generate().sign(b"anything")).decode()
    (resigned / files[2].name).write_text(json.dumps(doc))
    assert check(vault, resigned).reason == "bad_checkpoint"

    other_key = tmp_path / "other-key"
    heads = {h.chain: h for h in vault.audit_log.verify().heads}
    write_checkpoint(other_key, heads=heads, signing_key=Ed25519PrivateKey.generate(),
                     vault_id=vault.vault_id, now=vault.clock.now())
    assert "signature" in check(vault, other_key).detail

    gap = tmp_path / "gap"
    shutil.copytree(folder, gap)
    (gap / files[1].name).unlink()
    report = check(vault, gap)
    assert report.reason == "bad_checkpoint"
    assert "missing or replaced" in report.detail

    (altered / "checkpoint-999999-broken.json").write_text("{")
    assert any("malformed" in f.detail for f in check(vault, altered).findings)


# ------------------------------------------------------------------ the CLI, no secrets


def test_cli_checkpoint_and_secretless_verify(sqlite_settings: VaultSettings,
                                              tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(sqlite_settings.home),
           "COLUMNS": "200"}
    assert runner.invoke(app, ["init"], env=env).exit_code == 0
    assert runner.invoke(app, ["demo", "--customers", "8"], env=env).exit_code == 0
    folder, pem = tmp_path / "cps", tmp_path / "vault.pub.pem"
    result = runner.invoke(app, ["audit", "checkpoint", "--out", str(folder)], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["keys", "export-public-key", "--out", str(pem)], env=env)
    assert result.exit_code == 0, result.output
    serialization.load_pem_public_key(pem.read_bytes())
    # The auditor's machine: no key file at all.
    (Path(sqlite_settings.home) / "keyfile.json").rename(tmp_path / "elsewhere.json")
    url = f"sqlite:///{Path(sqlite_settings.home) / 'data.db'}"
    args = ["audit", "verify", "--database-url", url, "--checkpoints", str(folder),
            "--public-key", str(pem)]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "1 signed checkpoints hold" in result.output
    assert verify_database(url, checkpoints=folder, public_key=pem).ok
    with Vault.open(settings=sqlite_settings.model_copy(
            update={"key_file": tmp_path / "elsewhere.json"})) as vault:
        chain, n = longest_chain(vault)
        _cut_tail_consistently(vault, chain, n)
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 3
    assert "truncated_chain" in result.output
