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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

__all__ = [
    "ADMIN_CHAIN",
    "GENESIS_HASH",
    "AuditEvent",
    "ChainHead",
    "Decision",
    "Damage",
    "VerifyReport",
    "chain_for",
    "encode_list",
    "entry_hash",
    "format_ts",
    "verify_rows",
]

GENESIS_HASH = "0" * 64
ADMIN_CHAIN = 0
"""Administrative events (roles, policy, keys, init) have their own chain;
subject chains are numbered 1..N."""


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ERROR = "error"


class Damage(StrEnum):
    """The kind of damage ``verify`` found."""

    MODIFIED = "modified_entry"
    MISSING = "missing_entry"
    INSERTED_OR_REORDERED = "broken_link"
    TRUNCATED = "truncated_chain"
    UNKNOWN_CHAIN = "unknown_chain"


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
    """Outcome of walking every audit chain.

    Attributes:
        ok: True when every chain verified.
        entries: entries checked.
        chains: chains checked.
        first_bad_seq: global sequence number of the first bad entry, if any.
        chain: the chain where damage was found.
        reason: a ``Damage`` value describing the damage, if any.
        detail: a sentence for people.
    """

    ok: bool
    entries: int
    chains: int
    first_bad_seq: int | None = None
    chain: int | None = None
    reason: str | None = None
    detail: str = ""
    heads: tuple[ChainHead, ...] = field(default=())


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
    """SHA-256 over an unambiguous, length-prefixed encoding of every column."""
    parts = (
        "vault.audit.v1", str(chain), str(chain_seq), ts, request_id, tenant, actor, action,
        collection if collection is not None else "\x00", record_ids, subjects, fields,
        purpose if purpose is not None else "\x00", decision,
        reason if reason is not None else "\x00", prev_hash,
    )
    text = "".join(f"{len(p)}:{p}" for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


ROW_COLUMNS = (
    "seq", "chain", "chain_seq", "ts", "request_id", "tenant", "actor", "action", "collection",
    "record_ids", "subjects", "fields", "purpose", "decision", "reason", "prev_hash", "hash",
)


def verify_rows(
    rows: Iterable[Sequence[object]],
    heads: Mapping[int, ChainHead],
    *,
    chains: int,
) -> VerifyReport:
    """Verify rows ordered by (chain, chain_seq) against the recorded chain heads.

    Each row holds the values of :data:`ROW_COLUMNS` in that order, with ``ts``
    already formatted by :func:`format_ts`.
    """
    count = 0
    current_chain: int | None = None
    expected_seq = 1
    prev = GENESIS_HASH
    seen_chains: set[int] = set()

    def bad(seq: int | None, chain: int, reason: Damage, detail: str) -> VerifyReport:
        return VerifyReport(False, count, len(seen_chains), seq, chain, reason.value, detail)

    def close_chain(chain: int, length: int, last_hash: str) -> VerifyReport | None:
        head = heads.get(chain)
        if head is None:
            return bad(None, chain, Damage.UNKNOWN_CHAIN, f"chain {chain} has no recorded head")
        if head.length > length:
            return bad(None, chain, Damage.TRUNCATED,
                       f"chain {chain} ends at entry {length}, its head says {head.length}")
        if head.length < length or head.head_hash != last_hash:
            return bad(None, chain, Damage.INSERTED_OR_REORDERED,
                       f"chain {chain} does not end at its recorded head")
        return None

    for row in rows:
        (seq, chain, chain_seq, ts, request_id, tenant, actor, action, collection, record_ids,
         subjects, fields, purpose, decision, reason, prev_hash, own_hash) = row
        seq, chain, chain_seq = cast(int, seq), cast(int, chain), cast(int, chain_seq)
        if chain != current_chain:
            if current_chain is not None:
                problem = close_chain(current_chain, expected_seq - 1, prev)
                if problem:
                    return problem
            if not 0 <= chain <= chains:
                return bad(seq, chain, Damage.UNKNOWN_CHAIN, f"entry {seq} is in unknown chain")
            current_chain, expected_seq, prev = chain, 1, GENESIS_HASH
            seen_chains.add(chain)
        if chain_seq != expected_seq:
            kind = Damage.MISSING if chain_seq > expected_seq else Damage.INSERTED_OR_REORDERED
            return bad(seq, chain, kind,
                       f"chain {chain}: expected position {expected_seq}, found {chain_seq}")
        recomputed = entry_hash(
            chain=chain, chain_seq=chain_seq, ts=str(ts), request_id=str(request_id),
            tenant=str(tenant), actor=str(actor), action=str(action),
            collection=None if collection is None else str(collection),
            record_ids=str(record_ids), subjects=str(subjects), fields=str(fields),
            purpose=None if purpose is None else str(purpose), decision=str(decision),
            reason=None if reason is None else str(reason), prev_hash=str(prev_hash),
        )
        if recomputed != own_hash:
            return bad(seq, chain, Damage.MODIFIED, f"entry {seq} does not match its hash")
        if prev_hash != prev:
            return bad(seq, chain, Damage.INSERTED_OR_REORDERED,
                       f"entry {seq} does not follow the previous entry of chain {chain}")
        prev = str(own_hash)
        expected_seq += 1
        count += 1
    if current_chain is not None:
        problem = close_chain(current_chain, expected_seq - 1, prev)
        if problem:
            return problem
    for chain, head in heads.items():
        if chain not in seen_chains and head.length > 0:
            seen_chains.add(chain)
            return bad(None, chain, Damage.TRUNCATED,
                       f"chain {chain} is empty, its head says {head.length} entries")
    return VerifyReport(True, count, len(seen_chains), heads=tuple(heads[c] for c in sorted(heads)))
