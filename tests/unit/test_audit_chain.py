"""verify_rows on synthetic logs: every kind of damage is named with its place,
and an intact log yields no finding."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from vault.audit.chain import (
    ADMIN_CHAIN,
    DIAGNOSE_LIMIT,
    GENESIS_HASH,
    ROW_COLUMNS,
    ChainHead,
    Damage,
    VerifyReport,
    chain_for,
    entry_hash,
    format_ts,
    subject_chain,
    verify_rows,
)

CHAINS = 3
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)

Row = dict[str, Any]


def pseudonym(chain: int, n: int) -> str:
    """A 32-hex pseudonym that chain_for puts in ``chain`` (1..CHAINS)."""
    return f"{chain - 1:08x}{n:024x}"


def make_row(seq: int, chain: int, position: int, prev: str, *, actor: str = "crm",
             subject: str | None = None) -> Row:
    subjects = "[]" if chain == ADMIN_CHAIN else f'["{subject or pseudonym(chain, seq)}"]'
    row: Row = {
        "seq": seq, "chain": chain, "chain_seq": position,
        "ts": format_ts(T0 + dt.timedelta(seconds=seq)), "request_id": f"req-{seq}",
        "tenant": "acme", "actor": actor,
        "action": "read" if chain else "roles.assign",
        "collection": "customers" if chain else None,
        "record_ids": f'["rec-{seq}"]' if chain else "[]", "subjects": subjects,
        "fields": '["email","phone"]' if chain else "[]",
        "purpose": "account_management" if chain else None, "decision": "allow",
        "reason": None, "prev_hash": prev,
    }
    row["hash"] = rehash(row)
    return row


def rehash(row: Row) -> str:
    return entry_hash(**{k: v for k, v in row.items() if k not in ("seq", "hash")})


def build(per_chain: int = 6) -> list[Row]:
    """Entries interleaved over the admin chain and every subject chain."""
    rows: list[Row] = []
    prev = {c: GENESIS_HASH for c in range(CHAINS + 1)}
    length = dict.fromkeys(range(CHAINS + 1), 0)
    seq = 0
    for _ in range(per_chain):
        for chain in range(CHAINS + 1):
            seq += 1
            length[chain] += 1
            row = make_row(seq, chain, length[chain], prev[chain])
            prev[chain] = row["hash"]
            rows.append(row)
    return rows


def heads_of(rows: list[Row]) -> dict[int, ChainHead]:
    heads = {c: ChainHead(c, 0, GENESIS_HASH) for c in range(CHAINS + 1)}
    for row in sorted(rows, key=lambda r: (r["chain"], r["chain_seq"])):
        heads[row["chain"]] = ChainHead(row["chain"], row["chain_seq"], row["hash"])
    return heads


def verify(rows: list[Row], heads: dict[int, ChainHead]) -> VerifyReport:
    ordered = sorted(rows, key=lambda r: (r["chain"], r["chain_seq"]))
    return verify_rows([tuple(r[c] for c in ROW_COLUMNS) for r in ordered], heads,
                       chains=CHAINS)


def at(rows: list[Row], chain: int, position: int) -> Row:
    return next(r for r in rows if r["chain"] == chain and r["chain_seq"] == position)


def cut_tail(rows: list[Row], heads: dict[int, ChainHead], chain: int) -> Row:
    """Take the last entry (position 6) off ``chain`` and set the chain's head to the
    entry before it, as a consistent truncation would; the entry taken off."""
    tail = at(rows, chain, 6)
    rows.remove(tail)
    heads[chain] = ChainHead(chain, 5, tail["prev_hash"])
    return tail


def kinds(report: VerifyReport) -> set[str]:
    return {f.kind.value for f in report.findings}


@pytest.fixture
def log() -> tuple[list[Row], dict[int, ChainHead]]:
    rows = build()
    return rows, heads_of(rows)


# ------------------------------------------------------------------ intact logs


def test_intact_log_verifies(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    report = verify(rows, heads)
    assert report.ok and report.findings == ()
    assert (report.entries, report.chains) == (len(rows), CHAINS + 1)
    assert report.reason is None and report.first_bad_seq is None


def test_empty_log_with_empty_heads_verifies() -> None:
    heads = {c: ChainHead(c, 0, GENESIS_HASH) for c in range(CHAINS + 1)}
    report = verify_rows([], heads, chains=CHAINS)
    assert report.ok and report.entries == 0


def test_synthetic_rows_sit_in_the_chain_of_their_subjects() -> None:
    for chain in range(1, CHAINS + 1):
        assert chain_for([pseudonym(chain, 5)], CHAINS) == chain
        assert subject_chain(f'["{pseudonym(chain, 5)}"]', CHAINS) == chain
    assert subject_chain("[]", CHAINS) == ADMIN_CHAIN
    assert subject_chain("not json", CHAINS) is None
    assert subject_chain("[1, 2]", CHAINS) is None


def test_absent_value_is_not_an_empty_string() -> None:
    row = make_row(1, 1, 1, GENESIS_HASH)
    fields = {k: v for k, v in row.items() if k not in ("seq", "hash")}
    assert entry_hash(**{**fields, "reason": None}) != entry_hash(**{**fields, "reason": ""})


# ------------------------------------------------------------------ entries


@pytest.mark.parametrize(("column", "value"), [
    ("actor", "mallory"), ("fields", '["email"]'), ("decision", "deny"),
    ("ts", format_ts(T0 + dt.timedelta(days=1))), ("reason", "x"), ("purpose", None),
])
def test_modified_entry(log: tuple[list[Row], dict[int, ChainHead]], column: str,
                        value: Any) -> None:
    rows, heads = log
    target = at(rows, 2, 3)
    target[column] = value
    report = verify(rows, heads)
    assert [(f.kind, f.chain, f.position, f.seq) for f in report.findings] == [
        (Damage.MODIFIED, 2, 3, target["seq"])]
    assert (report.reason, report.first_bad_seq, report.chain) == (
        "modified_entry", target["seq"], 2)


def test_modified_hash_column_is_a_modified_entry(
        log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    target = at(rows, 1, 6)
    target["hash"] = "f" * 64
    report = verify(rows, heads)
    assert report.reason == "modified_entry" and report.first_bad_seq == target["seq"]


@pytest.mark.parametrize("position", [1, 3])
def test_deleted_entry_in_the_middle(log: tuple[list[Row], dict[int, ChainHead]],
                                     position: int) -> None:
    rows, heads = log
    gone = at(rows, 3, position)
    rows.remove(gone)
    report = verify(rows, heads)
    assert kinds(report) == {"deleted_entry"}
    assert (report.findings[0].chain, report.findings[0].position) == (3, position)


def test_deleted_entry_at_the_tail(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    rows.remove(at(rows, 1, 6))
    rows.remove(at(rows, 1, 5))
    report = verify(rows, heads)
    assert [(f.kind, f.chain, f.position) for f in report.findings] == [
        (Damage.DELETED, 1, 5)]
    assert "2 entries deleted from the tail" in report.detail


def test_whole_chain_deleted(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    rows[:] = [r for r in rows if r["chain"] != 2]
    report = verify(rows, heads)
    assert (report.reason, report.chain) == ("deleted_entry", 2)


def test_deleted_entry_hidden_by_renumbering(
        log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    gone = at(rows, 2, 3)
    rows.remove(gone)
    for row in rows:
        if row["chain"] == 2 and row["chain_seq"] > 3:
            row["chain_seq"] -= 1
    report = verify(rows, heads)
    assert kinds(report) == {"deleted_entry"}  # not "modified", not "reordered"
    main = report.findings[0]
    assert (main.chain, main.position, main.seq) == (2, 3, at(rows, 2, 3)["seq"])
    assert "renumbered" in main.detail


def test_inserted_entry_at_the_tail(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    last = at(rows, 1, 6)
    rows.append(make_row(1000, 1, 7, last["hash"], actor="mallory"))
    report = verify(rows, heads)
    assert [(f.kind, f.chain, f.position) for f in report.findings] == [
        (Damage.INSERTED, 1, 7)]


@pytest.mark.parametrize("forged_hash", [True, False])
def test_inserted_entry_in_the_middle(log: tuple[list[Row], dict[int, ChainHead]],
                                      forged_hash: bool) -> None:
    rows, heads = log
    for row in rows:
        if row["chain"] == 1 and row["chain_seq"] >= 3:
            row["chain_seq"] += 1  # make room at position 3
    intruder = make_row(1000, 1, 3, at(rows, 1, 2)["hash"], actor="mallory")
    if not forged_hash:
        intruder["hash"] = "e" * 64
    rows.append(intruder)
    heads[1] = ChainHead(1, 7, heads[1].head_hash)  # the attacker fixed the length too
    report = verify(rows, heads)
    assert kinds(report) == {"inserted_entry"}
    main = report.findings[0]
    assert (report.reason, main.chain, main.position, main.seq) == (
        "inserted_entry", 1, 3, 1000)


def test_reordered_entries(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    a, b = at(rows, 2, 2), at(rows, 2, 3)
    a["chain_seq"], b["chain_seq"] = 3, 2
    report = verify(rows, heads)
    assert kinds(report) == {"reordered_entries"}
    assert {(f.position, f.seq) for f in report.findings} == {(3, a["seq"]), (2, b["seq"])}


def test_rotated_entries_are_reordered(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    a, b, c = at(rows, 3, 2), at(rows, 3, 3), at(rows, 3, 4)
    a["chain_seq"], b["chain_seq"], c["chain_seq"] = 3, 4, 2
    report = verify(rows, heads)
    assert kinds(report) == {"reordered_entries"}
    assert {f.seq for f in report.findings} == {a["seq"], b["seq"], c["seq"]}


def test_entry_moved_between_chains(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    cut_tail(rows, heads, 3)  # free position 6 of chain 3
    moved = at(rows, 1, 6)
    moved["chain"] = 3
    report = verify(rows, heads)
    assert (report.reason, report.first_bad_seq, report.chain) == ("moved_entry", moved["seq"], 3)
    assert "from chain 1" in report.detail
    assert "deleted_entry" in kinds(report)  # chain 1 lost its tail


def test_entry_moved_and_renumbered_to_fit(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    moved = at(rows, 1, 2)
    moved["chain"], moved["chain_seq"] = 2, 7
    report = verify(rows, heads)
    assert (report.reason, report.first_bad_seq) == ("moved_entry", moved["seq"])
    assert "from chain 1 (position 2)" in report.detail


def test_entry_moved_and_rehashed_is_caught_by_its_subjects(
        log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    moved = cut_tail(rows, heads, 1)
    tail = at(rows, 2, 6)
    moved.update(chain=2, chain_seq=7, prev_hash=tail["hash"])
    moved["hash"] = rehash(moved)
    rows.append(moved)
    heads[2] = ChainHead(2, 7, moved["hash"])  # every hash and head consistent
    report = verify(rows, heads)
    assert [(f.kind, f.chain, f.position, f.seq) for f in report.findings] == [
        (Damage.MOVED, 2, 7, moved["seq"])]
    assert "belong to chain 1" in report.detail


def test_head_mismatch(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    heads[2] = ChainHead(2, 6, "a" * 64)
    report = verify(rows, heads)
    assert (report.reason, report.chain) == ("head_mismatch", 2)


def test_entry_in_unknown_chain(log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    rows, heads = log
    rows.append(make_row(1000, CHAINS + 5, 1, GENESIS_HASH))
    assert "unknown_chain" in kinds(verify(rows, heads))


def test_consistent_truncation_needs_a_checkpoint(
        log: tuple[list[Row], dict[int, ChainHead]]) -> None:
    """The limit checkpoints exist for: a tail cut together with its head verifies."""
    rows, heads = log
    cut_tail(rows, heads, 1)
    assert verify(rows, heads).ok


def test_mass_damage_is_bounded_and_the_walk_goes_on() -> None:
    rows = build(per_chain=600)
    heads = heads_of(rows)
    for row in rows:
        if row["chain"] == 1:
            row["actor"] = "mallory"
    report = verify(rows, heads)
    assert report.entries == len(rows)
    assert report.reason == "modified_entry"
    assert len(report.findings) == 100  # the report keeps the first hundred
    assert {(f.kind, f.chain) for f in report.findings} == {(Damage.MODIFIED, 1)}
    assert DIAGNOSE_LIMIT < 600  # so the cheap path was taken for the rest
