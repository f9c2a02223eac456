"""Pure hash-chain logic of the audit log: hashing, chain choice, verification.

No I/O here: :mod:`vault.audit.log` feeds rows in. Each entry's hash covers
every column of the entry (including its chain number and position) and the
previous entry's hash, so a modified, deleted, inserted, reordered or moved
entry breaks the chain at a named place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "ADMIN_CHAIN",
    "GENESIS_HASH",
    "AuditEvent",
    "ChainHead",
    "Decision",
    "Damage",
    "Finding",
    "VerifyReport",
    "chain_for",
    "encode_list",
    "entry_hash",
    "format_ts",
    "payload",
    "verify_rows",
]

GENESIS_HASH = "0" * 64
HASH_FORMAT = "vault.audit.v2"
SEP = "\x1f"  # unit separator: no column may contain a control character
NONE_MARK = "\x1e"  # an absent value
ADMIN_CHAIN = 0
"""Administrative events (roles, policy, keys, init) have their own chain;
subject chains are numbered 1..N."""


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ERROR = "error"


class Damage(StrEnum):
    """The kinds of damage ``verify`` names."""

    MODIFIED = "modified_entry"  # an entry's content no longer matches its hash
    DELETED = "deleted_entry"  # a position missing in the middle, or a tail short of the head
    INSERTED = "inserted_entry"  # an entry that no chain head or link accounts for
    REORDERED = "reordered_entries"  # entries in a chain appear out of their written order
    MOVED = "moved_entry"  # an entry that verifies only under another chain
    TRUNCATED = "truncated_chain"  # a chain is shorter than a signed checkpoint says
    REWRITTEN = "rewritten_after_checkpoint"  # a chain no longer contains a checkpointed head
    HEAD_MISMATCH = "head_mismatch"  # the recorded head disagrees with the recomputed chain
    UNKNOWN_CHAIN = "unknown_chain"
    BAD_CHECKPOINT = "bad_checkpoint"  # signature, key or link of a checkpoint is wrong


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of damage and where it is."""

    kind: Damage
    chain: int | None
    position: int | None  # chain_seq
    seq: int | None  # global sequence number of the entry, when there is one
    detail: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened, before it is placed in a chain.

    Only ids, field names, pseudonyms and outcomes: never a value.
    """

    tenant: str
    actor: str
    action: str
    decision: Decision
    collection: str | None = None
    record_ids: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    purpose: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ChainHead:
    chain: int
    length: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of walking every audit chain (and checkpoints, if given).

    Attributes:
        ok: True when every chain (and checkpoint) verified.
        entries: entries checked.
        chains: chains checked.
        first_bad_seq: global sequence number of the entry of the main finding, if any.
        chain: the chain of the main finding.
        reason: the :class:`Damage` value of the main finding.
        detail: a sentence for people.
        findings: every finding (up to 100), most specific first.
        checkpoints: signed checkpoints checked.
    """

    ok: bool
    entries: int
    chains: int
    first_bad_seq: int | None = None
    chain: int | None = None
    reason: str | None = None
    detail: str = ""
    heads: tuple[ChainHead, ...] = field(default=())
    findings: tuple[Finding, ...] = field(default=())
    checkpoints: int = 0

    @classmethod
    def from_findings(cls, findings: Sequence[Finding], *, entries: int, chains: int,
                      heads: tuple[ChainHead, ...] = (), checkpoints: int = 0) -> VerifyReport:
        if not findings:
            return cls(True, entries, chains, heads=heads, checkpoints=checkpoints)
        ordered = sorted(findings, key=lambda f: (_PRIORITY.get(f.kind, 9),
                                                  f.seq if f.seq is not None else 1 << 62))
        main = ordered[0]
        return cls(False, entries, chains, main.seq, main.chain, main.kind.value, main.detail,
                   heads, tuple(ordered[:100]), checkpoints)


# A moved entry also leaves a gap in its old chain and an intruder in the new
# one; a reordering also breaks links. Report the explanation first.
_PRIORITY = {
    Damage.BAD_CHECKPOINT: 0,
    Damage.MOVED: 1,
    Damage.REORDERED: 2,
    Damage.MODIFIED: 3,
    Damage.REWRITTEN: 4,
    Damage.TRUNCATED: 4,
    Damage.DELETED: 5,
    Damage.INSERTED: 6,
    Damage.HEAD_MISMATCH: 7,
    Damage.UNKNOWN_CHAIN: 8,
}


def chain_for(pseudonyms: Sequence[str], chains: int) -> int:
    """The chain an event about these subjects goes to (admin chain if none)."""
    if not pseudonyms:
        return ADMIN_CHAIN
    return 1 + int(pseudonyms[0][:8], 16) % chains


def format_ts(ts: dt.datetime) -> str:
    """Canonical UTC timestamp text used inside the hash (microsecond precision)."""
    if ts.tzinfo is None:
        raise ValueError("audit timestamps must be aware")
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_list(items: Sequence[str]) -> str:
    return json.dumps(list(items), separators=(",", ":"), ensure_ascii=True)


def entry_hash(
    *,
    chain: int,
    chain_seq: int,
    ts: str,
    request_id: str,
    tenant: str,
    actor: str,
    action: str,
    collection: str | None,
    record_ids: str,
    subjects: str,
    fields: str,
    purpose: str | None,
    decision: str,
    reason: str | None,
    prev_hash: str,
) -> str:
    """SHA-256 over every column, joined by the unit separator (U+001F).

    The encoding is unambiguous because no column may contain a control
    character (:func:`clean_text` enforces it on append; ids, timestamps and
    JSON lists cannot hold one) and an absent value is ``\\x1e``, which no
    present value can be.
    """
    parts = (
        HASH_FORMAT, str(chain), str(chain_seq), ts, request_id, tenant, actor, action,
        collection if collection is not None else NONE_MARK, record_ids, subjects, fields,
        purpose if purpose is not None else NONE_MARK, decision,
        reason if reason is not None else NONE_MARK, prev_hash,
    )
    return hashlib.sha256(SEP.join(parts).encode("utf-8")).hexdigest()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_text(value: str) -> str:
    """Replace control characters (which the hash encoding reserves) with U+FFFD."""
    return _CONTROL.sub("\ufffd", value) if _CONTROL.search(value) else value


def payload(ts: str, request_id: str, tenant: str, actor: str, action: str,
            collection: str | None, record_ids: str, subjects: str, fields: str,
            purpose: str | None, decision: str, reason: str | None, prev_hash: str) -> str:
    """The part of an entry's hash input after its chain and position."""
    return SEP.join((
        ts, request_id, tenant, actor, action,
        NONE_MARK if collection is None else collection, record_ids, subjects, fields,
        NONE_MARK if purpose is None else purpose, decision,
        NONE_MARK if reason is None else reason, prev_hash,
    ))


def _moved_from(row: Sequence[Any], chains: int) -> int | None:
    """The chain under which an entry's hash verifies, if not its own."""
    expected: int | None = None
    try:
        subjects = json.loads(row[10])
        if isinstance(subjects, list):
            expected = chain_for(subjects, chains)
    except (ValueError, TypeError):
        expected = None
    body = payload(*row[3:16])
    candidates = [expected] if expected is not None else []
    candidates += [c for c in range(chains + 1) if c != expected]
    for candidate in candidates:
        text = SEP.join((HASH_FORMAT, str(candidate), str(row[2]), body))
        if candidate != row[1] and hashlib.sha256(text.encode()).hexdigest() == row[16]:
            return candidate
    return None


def _repositioned_from(row: Sequence[Any], window: int = 2000) -> int | None:
    """The position in its own chain under which an entry's hash verifies, if another."""
    body = payload(*row[3:16])
    chain, pos = str(row[1]), int(row[2])
    for delta in range(1, window + 1):
        for candidate in (pos - delta, pos + delta):
            if candidate < 1:
                continue
            text = SEP.join((HASH_FORMAT, chain, str(candidate), body))
            if hashlib.sha256(text.encode()).hexdigest() == row[16]:
                return candidate
    return None


def verify_rows(
    rows: Iterable[Sequence[Any]],
    heads: Mapping[int, ChainHead],
    *,
    chains: int,
) -> VerifyReport:
    """Verify rows ordered by (chain, chain_seq) against the recorded chain heads.

    Each row holds the values of :data:`ROW_COLUMNS` in that order, with ``ts``
    already formatted by :func:`format_ts`. Walks everything and reports every
    finding, the most specific first.
    """
    count = 0
    findings: list[Finding] = []
    seen: set[int] = set()
    current: int | None = None
    expected_pos = 1
    prev = GENESIS_HASH
    last_seq = -1
    sha256 = hashlib.sha256
    join = SEP.join
    mark = NONE_MARK

    def close(chain: int, length: int, last_hash: str) -> None:
        head = heads.get(chain)
        if head is None:
            findings.append(Finding(Damage.UNKNOWN_CHAIN, chain, None, None,
                                    f"chain {chain} has entries but no recorded head"))
        elif head.length > length:
            missing = head.length - length
            findings.append(Finding(
                Damage.DELETED, chain, length + 1, None,
                f"chain {chain} ends at position {length}, its head says {head.length}: "
                f"{missing} entr{'y' if missing == 1 else 'ies'} deleted from the tail"))
        elif head.length < length:
            extra = length - head.length
            findings.append(Finding(
                Damage.INSERTED, chain, head.length + 1, None,
                f"chain {chain} has {extra} entr{'y' if extra == 1 else 'ies'} after its "
                "recorded head"))
        elif head.head_hash != last_hash:
            findings.append(Finding(Damage.HEAD_MISMATCH, chain, length, None,
                                    f"chain {chain}: the recorded head hash is not the last "
                                    "entry's hash"))

    for row in rows:
        (seq, chain, pos, ts, request_id, tenant, actor, action, collection, record_ids,
         subjects, fields, purpose, decision, reason, prev_hash, own) = row
        if chain != current:
            if current is not None:
                close(current, expected_pos - 1, prev)
            current, expected_pos, prev, last_seq = chain, 1, GENESIS_HASH, -1
            seen.add(chain)
            if not 0 <= chain <= chains:
                findings.append(Finding(Damage.UNKNOWN_CHAIN, chain, pos, seq,
                                        f"entry {seq} is in chain {chain}, which does not exist"))
        count += 1
        # The hash: the encoding of entry_hash, inlined because this loop is hot.
        text = join((
            HASH_FORMAT, str(chain), str(pos), ts, request_id, tenant, actor, action,
            mark if collection is None else collection, record_ids, subjects, fields,
            mark if purpose is None else purpose, decision,
            mark if reason is None else reason, prev_hash,
        ))
        if sha256(text.encode()).hexdigest() != own:
            origin = _moved_from(row, chains)
            written_at = None if origin is not None else _repositioned_from(row)
            if origin is not None:
                findings.append(Finding(Damage.MOVED, chain, pos, seq,
                                        f"entry {seq} was moved from chain {origin} to chain "
                                        f"{chain}"))
            elif written_at is not None:
                findings.append(Finding(Damage.REORDERED, chain, pos, seq,
                                        f"chain {chain}: entry {seq} was written at position "
                                        f"{written_at} and now stands at {pos}"))
            else:
                findings.append(Finding(Damage.MODIFIED, chain, pos, seq,
                                        f"entry {seq} (chain {chain}, position {pos}) does not "
                                        "match its hash"))
            if len(findings) > 1000:
                break
        elif pos != expected_pos or prev_hash != prev:
            if seq < last_seq:
                findings.append(Finding(Damage.REORDERED, chain, pos, seq,
                                        f"chain {chain}: entry {seq} at position {pos} was "
                                        "written before the entry preceding it"))
            elif pos > expected_pos:
                findings.append(Finding(Damage.DELETED, chain, expected_pos, seq,
                                        f"chain {chain}: position {expected_pos} is missing "
                                        f"before entry {seq}"))
            else:
                findings.append(Finding(Damage.INSERTED, chain, pos, seq,
                                        f"chain {chain}: entry {seq} at position {pos} does not "
                                        "follow the previous entry"))
            if len(findings) > 1000:
                break
        prev = own
        expected_pos = pos + 1
        if seq > last_seq:
            last_seq = seq
    if current is not None:
        close(current, expected_pos - 1, prev)
    for chain, head in heads.items():
        if chain not in seen and head.length > 0:
            seen.add(chain)
            findings.append(Finding(Damage.DELETED, chain, 1, None,
                                    f"chain {chain} is empty, its head says {head.length} "
                                    "entries"))
    return VerifyReport.from_findings(findings, entries=count, chains=len(seen),
                                      heads=tuple(heads[c] for c in sorted(heads)))
