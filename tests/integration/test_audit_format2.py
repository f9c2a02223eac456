"""Audit entry format 2 (issue 15, weaknesses 6 and 7): every column of an entry is
bound into its hash (``seq``, the canonical ``ts`` and the ``context`` included), a
column of another storage class on SQLite is named as damage with its place and
neither hides an entry from reports nor breaks them, and a log of format-1 entries
still verifies after the upgrade. Every change is made through raw SQL with the
append-only triggers out of the way, as an insider with write access would."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from vault import AccessDenied, Actor, ConfigError, Vault, VaultSettings
from vault.audit import VerifyReport
from vault.audit.chain import AuditEvent, Decision, encode_context
from vault.audit.report import ReportFilters, ReportView, render, rich_table
from vault.audit.report import report as run_report
from vault.store import migrate

from ..conftest import ROLE_USERS
from ..helpers import disable_triggers
from .test_audit_tamper import (
    chains_by_length,
    check,
    checkpointed,
    entry,
    execute,
    is_postgres,
    rehash,
    rows,
    set_head,
    vault_with_customers,
)
from .test_data_path import customer

CRM = Actor("crm", "acme")
PURPOSE = "account_management"


@pytest.fixture
def made(settings: VaultSettings, tmp_path: Path) -> Iterator[tuple[Vault, Path]]:
    """A vault with reads, writes, a denial and an entry with a context, and one
    signed checkpoint (not the ``vault`` fixture, which asserts the log verifies)."""
    vault, rid = vault_with_customers(settings, 8)
    with pytest.raises(AccessDenied):  # a deny entry
        vault.get(Actor("maya", "acme"), "customers", rid, purpose="sales_outreach")
    vault.audit_log.write([AuditEvent(
        tenant="acme", actor="ops", action="keys.rotate", decision=Decision.ALLOW,
        context={"operator": "ops-7", "host": "vault-1", "os_user": "svc"})])
    yield from checkpointed(vault, tmp_path)


def no_triggers(engine: Engine) -> None:
    """What an insider with DDL rights does first (as often as needed)."""
    disable_triggers(engine, again=True)


def places(report: VerifyReport) -> list[tuple[str, int | None, int | None, int | None]]:
    return [(f.kind.value, f.chain, f.position, f.seq) for f in report.findings]


def a_row(engine: Engine, where: str = "chain > 0") -> dict[str, Any]:
    """A subject-chain entry in the middle of the log, with every nullable column set."""
    found = rows(engine, f"SELECT * FROM audit_log WHERE {where} AND collection IS NOT NULL "
                         "AND purpose IS NOT NULL ORDER BY seq")
    return dict(found[len(found) // 2])


def both_ways(vault: Vault, folder: Path) -> list[VerifyReport]:
    """Verification without and with the signed checkpoint, serial and by two workers."""
    return [check(vault), check(vault, folder),
            vault.audit_log.verify(workers=2)]


# ------------------------------------------------------------------ weakness 6: storage classes

SQLITE_COLUMNS = ["ts", "request_id", "tenant", "actor", "action", "collection", "record_ids",
                  "subjects", "fields", "purpose", "decision", "reason", "prev_hash", "hash"]


@pytest.mark.parametrize("column", SQLITE_COLUMNS)
def test_column_cast_to_blob_is_named_with_its_place(made: tuple[Vault, Path],
                                                     column: str) -> None:
    """A column cast to BLOB (same bytes, so printf hashed it as before) is named."""
    vault, folder = made
    if is_postgres(vault.engine):
        pytest.skip("PostgreSQL columns hold only their own type")
    target = a_row(vault.engine) if column != "reason" else dict(rows(
        vault.engine, "SELECT * FROM audit_log WHERE reason IS NOT NULL ORDER BY seq")[-1])
    no_triggers(vault.engine)
    execute(vault.engine, f"UPDATE audit_log SET {column} = CAST({column} AS BLOB) "
                          "WHERE seq = :s", s=target["seq"])
    assert rows(vault.engine, f"SELECT typeof({column}) AS t FROM audit_log WHERE seq = :s",
                s=target["seq"])[0]["t"] == "blob"
    for report in both_ways(vault, folder):
        assert not report.ok
        assert ("modified_entry", target["chain"], target["chain_seq"], target["seq"]) in (
            places(report)), places(report)
        mine = [f for f in report.findings if f.seq == target["seq"]]
        assert any(f"its {column} holds a blob value" in f.detail for f in mine), mine


@pytest.mark.parametrize("column", ["chain", "chain_seq"])
def test_position_cast_to_blob_is_named(made: tuple[Vault, Path], column: str) -> None:
    """The chain and position columns cast to BLOB are named too."""
    vault, folder = made
    if is_postgres(vault.engine):
        pytest.skip("PostgreSQL columns hold only their own type")
    target = a_row(vault.engine)
    no_triggers(vault.engine)
    execute(vault.engine, f"UPDATE audit_log SET {column} = CAST({column} AS BLOB) "
                          "WHERE seq = :s", s=target["seq"])
    for report in (check(vault), check(vault, folder)):
        mine = [f for f in report.findings if f.seq == target["seq"]]
        assert mine and "holds a blob value" in mine[0].detail, report.findings


@pytest.mark.parametrize(("column", "value"), [("format", "CAST(format AS BLOB)"),
                                               ("format", "3"),
                                               ("context", "CAST(context AS BLOB)")])
def test_check_constraints_refuse_and_verify_still_names(made: tuple[Vault, Path], column: str,
                                                        value: str) -> None:
    """The CHECK constraints of 0007 refuse a bad format or context; an insider who
    switches them off (ignore_check_constraints) is still caught by verify."""
    vault, folder = made
    if is_postgres(vault.engine) and "BLOB" in value:
        pytest.skip("PostgreSQL columns hold only their own type")
    target = a_row(vault.engine)
    no_triggers(vault.engine)
    statement = f"UPDATE audit_log SET {column} = {value} WHERE seq = {int(target['seq'])}"
    with pytest.raises(Exception, match=r"(?i)check"):
        execute(vault.engine, statement)
    if is_postgres(vault.engine):
        with vault.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_log DROP CONSTRAINT ck_audit_log_format"))
            conn.execute(text(statement))
    else:
        with vault.engine.connect().execution_options(sqlite_begin=None) as conn:
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
            conn.exec_driver_sql(statement)
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = OFF")
    for report in both_ways(vault, folder):
        assert ("modified_entry", target["chain"], target["chain_seq"], target["seq"]) in (
            places(report)), places(report)


def test_rebuilt_table_without_its_types_is_damage(made: tuple[Vault, Path]) -> None:
    """A table rebuilt without the declared types (so a number could pass for text)
    makes verify fail, naming the columns."""
    vault, _ = made
    if is_postgres(vault.engine):
        pytest.skip("a SQLite table rebuild")
    no_triggers(vault.engine)
    execute(vault.engine, "ALTER TABLE audit_log RENAME TO audit_log_old")
    execute(vault.engine, "CREATE TABLE audit_log AS SELECT * FROM audit_log_old")
    report = check(vault)
    assert not report.ok
    assert any("the audit_log table was rebuilt" in f.detail and "tenant" in f.detail
               for f in report.findings), report.findings


def test_reports_list_blob_rows_apart_and_do_not_crash(made: tuple[Vault, Path]) -> None:
    """Entries whose decision, tenant, actor, action or ts was cast to BLOB are listed
    as altered in every view (not silently dropped) and every output renders."""
    vault, _ = made
    if is_postgres(vault.engine):
        pytest.skip("PostgreSQL columns hold only their own type")
    denied = rows(vault.engine, "SELECT seq FROM audit_log WHERE decision = 'deny' "
                                "AND tenant = 'acme' ORDER BY seq DESC LIMIT 1")[0]["seq"]
    reads = [r["seq"] for r in rows(vault.engine, "SELECT seq FROM audit_log WHERE "
                                                  "action = 'read' ORDER BY seq LIMIT 5")]
    acme = rows(vault.engine, "SELECT count(*) AS n FROM audit_log WHERE tenant = 'acme'")[0]["n"]
    no_triggers(vault.engine)
    execute(vault.engine, "UPDATE audit_log SET decision = CAST(decision AS BLOB) "
                          "WHERE seq = :s", s=denied)
    for seq, column in zip(reads, ("tenant", "actor", "action", "ts"), strict=False):
        execute(vault.engine, f"UPDATE audit_log SET {column} = CAST({column} AS BLOB) "
                              "WHERE seq = :s", s=seq)
    # A time re-formatted to sort apart ("T" sorts after " "): listed apart too.
    execute(vault.engine, "UPDATE audit_log SET ts = replace(ts, ' ', 'T') WHERE seq = :s",
            s=reads[4])
    for view in ReportView:
        filters = ReportFilters(tenant="acme", subject="subject-x" if
                                view is ReportView.SUBJECT_ACCESS else None)
        rep = run_report(vault.engine, filters, view=view, pseudonym=vault.pseudonym)
        for fmt in ("csv", "json", "html"):
            render(rep, fmt)
        rich_table(rep)
        if view is ReportView.ENTRIES:
            altered = {r["seq"]: r["altered"] for r in rep.altered}
            assert set(altered) == {denied, *reads}, altered
            assert altered[denied] == "decision:blob" and altered[reads[3]] == "ts:blob"
            assert altered[reads[0]] == "tenant:blob" and altered[reads[4]] == "ts:form"
            assert json.loads(render(rep, "json"))["altered_entries"] == rep.altered
            assert 'id="altered"' in render(rep, "html")
            assert rep.total_entries == acme - 6  # left out of the figures, listed apart
        if view is ReportView.DENIALS:
            assert denied in {r["seq"] for r in rep.altered}
    other = run_report(vault.engine, ReportFilters(tenant="globex"), view=ReportView.ENTRIES)
    assert other.altered == []  # another tenant's report does not list acme's entries


# ------------------------------------------------------------------ weakness 7: every column bound


def test_rewritten_seq_is_detected(made: tuple[Vault, Path]) -> None:
    """An entry's global sequence number rewritten (to sort it elsewhere) breaks its hash."""
    vault, folder = made
    target = a_row(vault.engine)
    top = rows(vault.engine, "SELECT max(seq) AS m FROM audit_log")[0]["m"]
    no_triggers(vault.engine)
    execute(vault.engine, "UPDATE audit_log SET seq = :n WHERE seq = :s", n=top + 100,
            s=target["seq"])
    for report in both_ways(vault, folder):
        assert ("modified_entry", target["chain"], target["chain_seq"], top + 100) in (
            places(report)), places(report)


def test_swapped_seqs_are_detected(made: tuple[Vault, Path]) -> None:
    """Two entries' sequence numbers swapped (each value still present) are caught."""
    vault, _ = made
    a, b = (r["seq"] for r in rows(vault.engine, "SELECT seq FROM audit_log WHERE chain = 0 "
                                                 "ORDER BY seq LIMIT 2"))
    no_triggers(vault.engine)
    execute(vault.engine, "UPDATE audit_log SET seq = -1 WHERE seq = :a", a=a)
    execute(vault.engine, "UPDATE audit_log SET seq = :a WHERE seq = :b", a=a, b=b)
    execute(vault.engine, "UPDATE audit_log SET seq = :b WHERE seq = -1", b=b)
    assert {f.seq for f in check(vault).findings} >= {a, b}


@pytest.mark.parametrize("how", ["same_instant", "shifted"])
def test_reformatted_or_shifted_ts_is_detected(made: tuple[Vault, Path], how: str) -> None:
    """A timestamp re-written as other text for the same instant (SQLite stores text;
    "T" sorts it out of a day's window) or shifted by a microsecond is caught."""
    vault, folder = made
    target = a_row(vault.engine)
    no_triggers(vault.engine)
    if how == "same_instant":
        if is_postgres(vault.engine):
            pytest.skip("PostgreSQL stores the instant, not a text")
        execute(vault.engine, "UPDATE audit_log SET ts = replace(ts, ' ', 'T') WHERE seq = :s",
                s=target["seq"])
    elif is_postgres(vault.engine):
        execute(vault.engine, "UPDATE audit_log SET ts = ts + interval '1 microsecond' "
                              "WHERE seq = :s", s=target["seq"])
    else:
        stamp = dt.datetime.fromisoformat(str(target["ts"])) + dt.timedelta(microseconds=1)
        execute(vault.engine, "UPDATE audit_log SET ts = :t WHERE seq = :s",
                t=stamp.strftime("%Y-%m-%d %H:%M:%S.%f"), s=target["seq"])
    for report in both_ways(vault, folder):
        assert ("modified_entry", target["chain"], target["chain_seq"], target["seq"]) in (
            places(report)), places(report)


def test_changed_context_is_detected(made: tuple[Vault, Path]) -> None:
    """An entry's context is bound: changing it (here, the host) breaks the hash."""
    vault, folder = made
    target = rows(vault.engine, "SELECT * FROM audit_log WHERE context != '{}'")
    assert [json.loads(r["context"]) for r in target] == [
        {"host": "vault-1", "operator": "ops-7", "os_user": "svc"}]
    assert target[0]["context"] == '{"host":"vault-1","operator":"ops-7","os_user":"svc"}'
    assert target[0]["format"] == 2
    no_triggers(vault.engine)
    execute(vault.engine, "UPDATE audit_log SET context = :c WHERE seq = :s",
            c='{"host":"vault-2","operator":"ops-7","os_user":"svc"}', s=target[0]["seq"])
    for report in both_ways(vault, folder):
        assert ("modified_entry", 0, target[0]["chain_seq"], target[0]["seq"]) in (
            places(report)), places(report)


def test_context_holds_only_known_keys_and_plain_values() -> None:
    """The context is canonical JSON of known keys; anything else is refused by name."""
    assert encode_context({}) == "{}"
    assert encode_context({"os_user": "a\x00b", "factor": "totp", "host": "h"}) == (
        '{"factor":"totp","host":"h","os_user":"a\\ufffdb"}')
    with pytest.raises(ValueError, match="email"):
        encode_context({"email": "ana@example.com"})
    with pytest.raises(ValueError, match="host"):
        encode_context({"host": ["x"]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="host") as info:
        encode_context({"host": "x" * 500})
    assert "xxx" not in str(info.value)
    plain = AuditEvent(tenant="acme", actor="crm", action="read", decision=Decision.ALLOW)
    assert dict(plain.context) == {}


def test_entry_relabelled_as_format_1_is_detected(made: tuple[Vault, Path]) -> None:
    """A format-2 entry rewritten as format 1 (which leaves seq unbound), hash, link and
    head all made consistent, is still caught: format 1 never follows format 2."""
    vault, _ = made
    chain, n = chains_by_length(vault.engine)[0]
    last = entry(vault.engine, chain, n)
    no_triggers(vault.engine)
    forged = rehash({**last, "format": 1}, chain, n, last["prev_hash"])
    execute(vault.engine, "UPDATE audit_log SET format = 1, hash = :h WHERE seq = :s",
            h=forged, s=last["seq"])
    set_head(vault.engine, chain, n, forged)
    report = check(vault)
    assert places(report) == [("modified_entry", chain, n, last["seq"])], places(report)
    assert "format 1 after" in report.detail


# ------------------------------------------------------------------ format 1 keeps verifying


def to_format_1(engine: Engine) -> None:
    """Rewrite the whole log as a release before 0007 wrote it: format 1, no context."""
    no_triggers(engine)
    for (chain,) in [(r["chain"],) for r in rows(engine, "SELECT DISTINCT chain FROM audit_log")]:
        prev = "0" * 64
        entries = rows(engine, "SELECT * FROM audit_log WHERE chain = :c ORDER BY chain_seq",
                       c=chain)
        for row in entries:
            new = rehash({**row, "format": 1}, chain, row["chain_seq"], prev)
            execute(engine, "UPDATE audit_log SET format = 1, context = '{}', prev_hash = :p, "
                            "hash = :h WHERE seq = :s", p=prev, h=new, s=row["seq"])
            prev = new
        set_head(engine, chain, len(entries), prev)


def test_format_1_log_verifies_after_upgrade_and_its_damage_is_still_caught(
        settings: VaultSettings) -> None:
    """A vault at 0006 whose log is all format 1: open() asks for the upgrade; after it
    the old entries verify under their rules, new ones are format 2 in the same chains,
    and a tampered format-1 entry (a changed actor, a seq moved backwards) is caught."""
    with Vault.init(settings=settings) as v:
        for user, role in ROLE_USERS.items():
            v.roles.assign(user, role, tenant="acme")
        ids = [v.put(CRM, "customers", customer(n), purpose=PURPOSE) for n in range(5)]
        to_format_1(v.engine)
        assert v.audit_log.verify().ok
        migrate.downgrade(v.engine, "0006")
        assert migrate.current_revision(v.engine) == "0006"
    with pytest.raises(ConfigError, match="vault upgrade"):
        Vault.open(settings=settings)
    with Vault.upgrade(settings=settings) as v:
        for rid in ids:
            v.get(CRM, "customers", rid, purpose=PURPOSE)
        formats = {r["format"]: r["n"] for r in rows(
            v.engine, "SELECT format, count(*) AS n FROM audit_log GROUP BY format")}
        assert set(formats) == {1, 2} and formats[2] >= len(ids)
        mixed = rows(v.engine, "SELECT chain FROM audit_log GROUP BY chain "
                               "HAVING min(format) = 1 AND max(format) = 2")
        assert mixed, "no chain holds both formats"
        report = v.audit_log.verify()
        assert report.ok, report.findings
        assert v.audit_log.verify(workers=2).ok
        old = rows(v.engine, "SELECT * FROM audit_log WHERE format = 1 AND chain > 0 "
                             "ORDER BY seq")
        target = old[-1]
        no_triggers(v.engine)
        execute(v.engine, "UPDATE audit_log SET actor = 'mallory' WHERE seq = :s",
                s=target["seq"])
        assert ("modified_entry", target["chain"], target["chain_seq"], target["seq"]) in (
            places(v.audit_log.verify()))
        execute(v.engine, "UPDATE audit_log SET actor = :a WHERE seq = :s",
                a=target["actor"], s=target["seq"])
        assert v.audit_log.verify().ok
        # Format 1 does not bind seq; a seq moved below an earlier entry's is still seen.
        follower = rows(v.engine, "SELECT * FROM audit_log WHERE chain = 0 AND chain_seq = 2 "
                                  "AND format = 1")[0]
        execute(v.engine, "UPDATE audit_log SET seq = -5 WHERE seq = :s", s=follower["seq"])
        assert ("modified_entry", follower["chain"], follower["chain_seq"], -5) in (
            places(v.audit_log.verify()))
