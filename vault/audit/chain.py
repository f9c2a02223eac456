"""Pure hash-chain logic of the audit log: hashing, chain choice, verification.

No I/O here: :mod:`vault.audit.log` feeds rows in. Each entry's hash covers
the previous entry's hash and the entry's columns, so a modified, deleted,
inserted, reordered or moved entry breaks the chain at a named place.

Entry formats (the ``format`` column of each row):

* **Format 2** (written since migration 0007) binds every column: the hash
  input is the UTF-8 encoding of these values joined by U+001F (no value may
  hold a control character, see :func:`clean_text`)::

      vault.audit.f2, chain, chain_seq, seq, ts, request_id, tenant, actor,
      action, collection, record_ids, subjects, fields, purpose, decision,
      reason, context, prev_hash

  ``ts`` is :func:`format_ts` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, UTC), an absent
  ``collection``/``purpose``/``reason`` is U+001E, ``context`` is
  :func:`encode_context` (canonical JSON, ``{}`` when empty). The format
  itself is bound by the tag: a row relabelled format 1 is hashed as format 1.
* **Format 1** (every entry written before 0007) leaves ``seq`` out (and has no
  context): ``vault.audit.v2, chain, chain_seq, ts, request_id, ..., reason,
  prev_hash``. Such entries keep verifying by these rules; a format-1 entry
  after a format-2 entry in the same chain is damage (the switch point is per
  chain, one way), and a format-1 row must hold the empty context.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = [
    "ADMIN_CHAIN",
    "GENESIS_HASH",
    "AuditEvent",
    "ChainHead",
    "Decision",
    "Damage",
    "Finding",
    "ROW_COLUMNS",
    "ROW_COLUMNS_V2",
    "TEXT_COLUMNS",
    "VerifyReport",
    "chain_for",
    "decode_list",
    "encode_context",
    "encode_list",
    "entry_hash",
    "entry_hash_v2",
    "format_ts",
    "payload",
    "hash_text",
    "hash_text_v2",
    "verify_rows",
    "verify_texts",
]

GENESIS_HASH = "0" * 64
HASH_FORMAT = "vault.audit.v2"
"""The tag of entry format 1 (named before formats were numbered)."""
HASH_FORMAT_2 = "vault.audit.f2"
"""The tag of entry format 2."""
FORMAT_1 = 1
FORMAT_2 = 2
CURRENT_FORMAT = FORMAT_2
EMPTY_CONTEXT = "{}"
CONTEXT_KEYS = frozenset({
    "credential_id", "factor", "factor_at", "host", "on_behalf_of", "operator", "os_user",
    "version",
})
"""The keys an entry's context may hold: ids and names of the machinery around a
call (and ``version``, the record version an update wrote), never personal data
about a data subject. (The request's correlation id
is the ``request_id`` column, bound in both formats, so it is not repeated here.)"""
CONTEXT_VALUE_MAX = 128
SEP = "\x1f"  # unit separator: no column may contain a control character
NONE_MARK = "\x1e"  # an absent value
ADMIN_CHAIN = 0
"""Administrative events (roles, policy, keys, init) have their own chain;
subject chains are numbered 1..N."""

ROW_COLUMNS = (
    "seq", "chain", "chain_seq", "ts", "request_id", "tenant", "actor", "action", "collection",
    "record_ids", "subjects", "fields", "purpose", "decision", "reason", "prev_hash", "hash",
)
"""The order of the values of each row given to :func:`verify_rows`."""

ROW_COLUMNS_V2 = (*ROW_COLUMNS, "format", "context")
"""Rows given to :func:`verify_rows` may also carry their format and context
(rows of :data:`ROW_COLUMNS` alone are format 1)."""

TEXT_COLUMNS = ("seq", "chain", "chain_seq", "text", "subjects", "prev_hash", "hash")
"""The order of the values of each row given to :func:`verify_texts`: ``text`` is
the entry's hash input as UTF-8 bytes (see :func:`hash_text`), assembled by the
database so that the driver hands over one value instead of fifteen."""

_SEP_B = SEP.encode()
_SEPARATORS = {HASH_FORMAT.encode(): 15, HASH_FORMAT_2.encode(): 17}
"""Separators in a written entry's hash input, by tag."""
# The byte at which the two tags differ ("vault.audit.v2" / "vault.audit.f2").
_TAG_BYTE = 12
_FORMAT_1_BYTE = HASH_FORMAT.encode()[_TAG_BYTE]

FINDINGS_LIMIT = 1000
"""Findings kept by one verification; the walk goes on to the end regardless."""
DIAGNOSE_LIMIT = 100
"""Damaged entries searched for where they were written (each search costs up to
``2 * REPOSITION_WINDOW`` hashes); later ones are named by a cheap check only."""
REPOSITION_WINDOW = 2000


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
    MOVED = "moved_entry"  # an entry standing in a chain its hash or subjects do not name
    TRUNCATED = "truncated_chain"  # a chain is shorter than a signed checkpoint says
    REWRITTEN = "rewritten_after_checkpoint"  # a chain no longer contains a checkpointed head
    HEAD_MISMATCH = "head_mismatch"  # the recorded head disagrees with the recomputed chain
    UNKNOWN_CHAIN = "unknown_chain"  # entries in a chain that does not exist or has no head
    BAD_SIGNATURE = "bad_signature"  # a checkpoint's signature does not verify (forged/altered)
    CHECKPOINT_GAP = "checkpoint_chain_broken"  # a checkpoint missing, replaced or out of order
    BAD_CHECKPOINT = "bad_checkpoint"  # a checkpoint is malformed, of another vault or key
    # A subject the log says was crypto-shredded has a live data key again (a key
    # store restored from an older copy); see vault.audit.erasures.
    RESURRECTED_KEY = "resurrected_key"
    # A record at an older version than the log records (a row rolled back to an
    # older copy), or at one the log never recorded; see vault.audit.versions.
    ROLLED_BACK = "record_rolled_back"
    UNAUDITED_CHANGE = "record_unaudited_change"


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
    ``context`` (format 2) names the machinery around the call (keys in
    :data:`CONTEXT_KEYS`; see :func:`encode_context`): never personal data.
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
    context: Mapping[str, str | int | bool] = field(
        default_factory=lambda: MappingProxyType({}), hash=False, compare=True)


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
    Damage.BAD_SIGNATURE: 0,
    Damage.CHECKPOINT_GAP: 0,
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
    Damage.RESURRECTED_KEY: 8,
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


def decode_list(text: object) -> list[str]:
    """The strings of a stored list column (``record_ids``, ``subjects``, ``fields``);
    nothing from a damaged one (verify's chain walk names that entry)."""
    if not isinstance(text, str | bytes):
        return []
    try:
        items = json.loads(text)
    except ValueError:
        return []
    return [item for item in items if isinstance(item, str)] if isinstance(items, list) else []


def encode_context(context: Mapping[str, str | int | bool]) -> str:
    """The canonical text of an entry's context: a JSON object with sorted keys,
    no whitespace, ASCII only (so it holds no control character), ``{}`` if empty.

    Raises:
        ValueError: a key outside :data:`CONTEXT_KEYS`, or a value that is not a
            string (at most :data:`CONTEXT_VALUE_MAX` characters), int or bool.
            Messages name the key, never the value.
    """
    if not context:
        return EMPTY_CONTEXT
    clean: dict[str, str | int | bool] = {}
    for key, value in context.items():
        if key not in CONTEXT_KEYS:
            raise ValueError(f"unknown audit context key {key!r}" if isinstance(key, str)
                             else "audit context keys are strings")
        if isinstance(value, str):
            if len(value) > CONTEXT_VALUE_MAX:
                raise ValueError(f"audit context value of {key} is too long")
            clean[key] = clean_text(value)
        elif isinstance(value, bool | int):
            clean[key] = value
        else:
            raise ValueError(f"audit context value of {key} must be a string, int or bool")
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash_v2(
    *,
    seq: int,
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
    context: str,
    prev_hash: str,
) -> str:
    """SHA-256 of a format-2 entry (see the module docstring): every column bound,
    ``seq``, ``ts`` (as :func:`format_ts` gives it) and ``context`` (as
    :func:`encode_context` gives it) included."""
    parts = (
        HASH_FORMAT_2, str(chain), str(chain_seq), str(seq), ts, request_id, tenant, actor,
        action, collection if collection is not None else NONE_MARK, record_ids, subjects,
        fields, purpose if purpose is not None else NONE_MARK, decision,
        reason if reason is not None else NONE_MARK, context, prev_hash,
    )
    return hashlib.sha256(SEP.join(parts).encode("utf-8")).hexdigest()


def entry_hash(
    *, chain: int, chain_seq: int, ts: str, request_id: str, tenant: str, actor: str,
    action: str, collection: str | None, record_ids: str, subjects: str, fields: str,
    purpose: str | None, decision: str, reason: str | None, prev_hash: str,
) -> str:
    """SHA-256 of a format-1 entry: its columns but ``seq``, joined by the unit
    separator (U+001F). New entries are format 2 (:func:`entry_hash_v2`).

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


def subject_chain(subjects: str, chains: int) -> int | None:
    """The chain :func:`chain_for` gives the subjects of a stored entry (its JSON
    ``subjects`` column), or None if the column is not a list of pseudonyms."""
    try:
        items = json.loads(subjects)
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return None
        return chain_for(items, chains)
    except (ValueError, TypeError):
        return None


def hash_text(chain: int, chain_seq: int, ts: str, request_id: str, tenant: str, actor: str,
              action: str, collection: str | None, record_ids: str, subjects: str,
              fields: str, purpose: str | None, decision: str, reason: str | None,
              prev_hash: str) -> bytes:
    """An entry's hash input (what :func:`entry_hash` hashes) as verification
    rebuilds it from stored values: a stored ``NONE_MARK`` in a nullable column
    is not taken for an absent value (it becomes U+FFFD, which fails the hash), so
    NULL cannot be swapped for that text unnoticed. The SQL of
    :meth:`vault.audit.log.AuditLog.verify` builds the same bytes."""
    def present(value: str | None) -> str:
        return NONE_MARK if value is None else value.replace(NONE_MARK, "\ufffd")

    return SEP.join((
        HASH_FORMAT, str(chain), str(chain_seq), ts, request_id, tenant, actor, action,
        present(collection), record_ids, subjects, fields, present(purpose), decision,
        present(reason), prev_hash)).encode("utf-8")


def hash_text_v2(seq: int, chain: int, chain_seq: int, ts: str, request_id: str, tenant: str,
                 actor: str, action: str, collection: str | None, record_ids: str,
                 subjects: str, fields: str, purpose: str | None, decision: str,
                 reason: str | None, context: str, prev_hash: str) -> bytes:
    """:func:`hash_text` for a format-2 entry (what :func:`entry_hash_v2` hashes)."""
    def present(value: str | None) -> str:
        return NONE_MARK if value is None else value.replace(NONE_MARK, "\ufffd")

    return SEP.join((
        HASH_FORMAT_2, str(chain), str(chain_seq), str(seq), ts, request_id, tenant, actor,
        action, present(collection), record_ids, subjects, fields, present(purpose), decision,
        present(reason), context, prev_hash)).encode("utf-8")


def _malformed(words: bytes, seq: int, chain: int, pos: int) -> Finding:
    """The finding for a row the database found malformed (see :func:`verify_texts`)."""
    said: list[str] = []
    for word in words.decode("ascii", "replace").split():
        column, _, kind = word.partition(":")
        if column == "format":
            said.append("its format is unknown")
        elif column == "context":
            said.append("it is of format 1 but holds a context")
        elif kind == "form":
            said.append(f"its {column} is not in canonical form")
        else:
            said.append(f"its {column} holds a {kind or 'wrong-typed'} value")
    what = ", ".join(said) or "a column holds a value of the wrong type"
    return Finding(Damage.MODIFIED, chain, pos, seq,
                   f"entry {seq} (chain {chain}, position {pos}): {what}; the entry was "
                   "altered or forged")


def _hash_at(text: bytes, chain: int, position: int) -> str:
    """The hash the entry of ``text`` would have at (``chain``, ``position``): chain
    and position come right after the tag in both formats."""
    tag, _chain, _position, body = text.split(_SEP_B, 3)
    return hashlib.sha256(_SEP_B.join((tag, str(chain).encode(), str(position).encode(),
                                       body))).hexdigest()


def _written_in(row: Sequence[Any], chains: int, heads: Mapping[int, ChainHead]
                ) -> tuple[int, int] | None:
    """Where (chain, position) an entry whose hash fails was written, if it can be found.

    ``row`` holds :data:`TEXT_COLUMNS`. Tries, in order: the chain its subjects
    name and every other chain at its present position (a moved entry keeps its
    position), the chain its subjects name at any position (a moved entry
    renumbered to fit its new chain), and positions near its present one in its
    own chain (reordering, renumbering).
    """
    text = bytes(row[3])
    tag = text.split(_SEP_B, 1)[0]
    if text.count(_SEP_B) != _SEPARATORS.get(tag):
        return None  # not an entry's text at all
    body = text.split(_SEP_B, 3)[3]
    own, chain, pos = str(row[6]), int(row[1]), int(row[2])
    sha256 = hashlib.sha256

    def matches(c: int, p: int) -> bool:
        return sha256(_SEP_B.join((tag, str(c).encode(), str(p).encode(), body))
                      ).hexdigest() == own

    expected = subject_chain(row[4], chains)
    order = [expected] if expected is not None else []
    order += [c for c in range(chains + 1) if c != expected]
    for candidate in order:
        if candidate != chain and matches(candidate, pos):
            return candidate, pos
    if expected is not None and expected != chain:
        head = heads.get(expected)
        limit = min(head.length if head else 0, 2 * REPOSITION_WINDOW)
        for candidate_pos in range(1, limit + 1):
            if candidate_pos != pos and matches(expected, candidate_pos):
                return expected, candidate_pos
    for delta in range(1, REPOSITION_WINDOW + 1):
        for candidate_pos in (pos - delta, pos + delta):
            if candidate_pos >= 1 and matches(chain, candidate_pos):
                return chain, candidate_pos
    return None


@dataclass(slots=True)
class _Bad:
    """An entry whose hash does not verify where it stands."""

    seq: int
    chain: int
    pos: int
    before: int | None  # seq of the entry just before it in its chain
    written: tuple[int, int] | None = None  # (chain, position) its hash verifies under
    searched: bool = False


def _explain(bad: list[_Bad], findings: list[Finding]) -> None:
    """Name the damage of the entries whose hash fails.

    An entry written in another chain was moved. Within one chain, entries whose
    written positions form a cycle were reordered; a run of entries all shifted by
    the same offset was renumbered to hide inserted (offset > 0) or deleted
    (offset < 0) entries before them. The rest were modified.
    """
    by_chain: dict[int, dict[int, _Bad]] = {}
    for b in bad:
        if b.written is not None and b.written[0] != b.chain:
            findings.append(Finding(
                Damage.MOVED, b.chain, b.pos, b.seq,
                f"entry {b.seq} was moved from chain {b.written[0]} (position {b.written[1]}) "
                f"to chain {b.chain} (position {b.pos})"))
        else:
            by_chain.setdefault(b.chain, {})[b.pos] = b
    for chain, at in by_chain.items():
        _explain_chain(chain, at, findings)


def _explain_chain(chain: int, at: dict[int, _Bad], findings: list[Finding]) -> None:
    shifted = {p: b.written[1] for p, b in at.items() if b.written is not None}
    cycle: set[int] = set()
    for start in shifted:
        path, p = [start], shifted[start]
        while p in shifted and p != start and len(path) <= len(shifted):
            path.append(p)
            p = shifted[p]
        if p == start:
            cycle.update(path)
    explained: set[int] = set(cycle)
    runs: list[list[_Bad]] = []
    for p in sorted(shifted):
        b = at[p]
        if p in cycle:
            findings.append(Finding(
                Damage.REORDERED, chain, p, b.seq,
                f"chain {chain}: entry {b.seq} was written at position {shifted[p]} and now "
                f"stands at {p}"))
            continue
        explained.add(p)
        last = runs[-1][-1] if runs else None
        if last is None or p != last.pos + 1 or p - shifted[p] != last.pos - shifted[last.pos]:
            runs.append([])
        runs[-1].append(b)
    for run in runs:
        first = run[0]
        offset = first.pos - shifted[first.pos]
        span = (f"{len(run)} entr{'y' if len(run) == 1 else 'ies'} from position {first.pos} "
                "renumbered")
        if offset > 0:
            where = first.pos - offset
            explained.update(range(where, first.pos))  # inserted entries that fail too
            findings.append(Finding(
                Damage.INSERTED, chain, where, at[where].seq if where in at else first.before,
                f"chain {chain}: {offset} entr{'y' if offset == 1 else 'ies'} inserted at "
                f"position {where}; {span} to make room"))
        else:
            findings.append(Finding(
                Damage.DELETED, chain, first.pos, first.seq,
                f"chain {chain}: {-offset} entr{'y' if offset == -1 else 'ies'} deleted at "
                f"position {first.pos}; {span} to close the gap"))
    for p in sorted(at):
        if p not in explained:
            b = at[p]
            note = "" if b.searched else " (not searched for further)"
            findings.append(Finding(
                Damage.MODIFIED, chain, p, b.seq,
                f"entry {b.seq} (chain {chain}, position {p}) does not match its hash" + note))


def verify_rows(
    rows: Iterable[Sequence[Any]],
    heads: Mapping[int, ChainHead],
    *,
    chains: int,
    all_heads: Mapping[int, ChainHead] | None = None,
) -> VerifyReport:
    """:func:`verify_texts` for rows of :data:`ROW_COLUMNS` (format 1) or
    :data:`ROW_COLUMNS_V2` (``ts`` already formatted by :func:`format_ts`): each
    entry's hash input is built here, by the rules of its format."""
    def texts() -> Iterator[tuple[Any, ...]]:
        for row in rows:
            fmt = row[17] if len(row) > 17 else FORMAT_1
            if fmt == FORMAT_2:
                text = hash_text_v2(*row[0:15], row[18], row[15])  # type: ignore[call-arg]
            elif fmt == FORMAT_1 and (len(row) <= 18 or row[18] == EMPTY_CONTEXT):
                text = hash_text(*row[1:16])
            else:
                text = _MALFORMED_PY + b" format" if fmt not in (FORMAT_1, FORMAT_2) else (
                    _MALFORMED_PY + b" context")
            yield (row[0], row[1], row[2], text, row[10], row[15], row[16])

    return verify_texts(texts(), heads, chains=chains, all_heads=all_heads,
                        malformed=_MALFORMED_PY)


_MALFORMED_PY = b"\x00malformed"


def verify_texts(
    rows: Iterable[Sequence[Any]],
    heads: Mapping[int, ChainHead],
    *,
    chains: int,
    all_heads: Mapping[int, ChainHead] | None = None,
    malformed: bytes | None = None,
) -> VerifyReport:
    """Verify rows of :data:`TEXT_COLUMNS` ordered by (chain, chain_seq) against the
    recorded chain heads. Walks everything and reports every finding (up to
    :data:`FINDINGS_LIMIT`), the most specific first.

    ``heads`` are the heads of the chains the rows cover (a part of the log when
    it is walked in parts); ``all_heads``, every chain's, help to find where a
    damaged entry was written (default: ``heads``). A ``text`` starting with
    ``malformed`` stands for a row whose columns are not of their types (or
    whose format is unknown, or a format-1 row with a context): the rest of it
    names what is wrong (``" column:type"`` words). The caller makes the prefix
    unpredictable, so no stored hash can match such a text.

    Per entry: the hash of its text (which holds the chain and position it stands
    at) must be its hash; it must link to the entry before it and stand at the next
    position; it must stand in the chain its subjects' first pseudonym chooses
    (so an entry moved to another chain and rehashed there is still caught); it
    must not be of format 1 after an entry of format 2; its ``seq`` must be
    above the ``seq`` of the entries before it (appending assigns it under the
    chain's lock). Per chain: the last entry must be the recorded head. An entry whose hash fails is
    searched for where it was written, to tell a moved, reordered or renumbered
    entry from a modified one.

    Why the text needs no further parsing: a stored entry's hash input holds
    exactly 15 (format 1) or 17 (format 2) separators, because no value may
    contain one (:func:`clean_text`); with its columns joined by that many
    separators, a tampered row that hashes the same cannot hide a separator in a
    value, so every column renders exactly as
    written (an absent value too: see :func:`hash_text`).
    """
    count = 0
    everywhere = heads if all_heads is None else all_heads
    findings: list[Finding] = []
    bad: list[_Bad] = []
    seen: set[int] = set()
    current: int | None = None
    expected_pos = 1
    prev: str | None = GENESIS_HASH  # None after a damaged entry
    last_seq = -1
    before: int | None = None
    offset = 0  # the last shift found in this chain: tried first on the next damaged entry
    searches = 0
    sha256 = hashlib.sha256
    empty_subjects = "[]"
    format_2_seen = False
    format_1_byte = _FORMAT_1_BYTE
    tag_byte = _TAG_BYTE

    def close(chain: int, length: int, last_hash: str | None) -> None:
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
        elif last_hash is not None and head.head_hash != last_hash:
            findings.append(Finding(Damage.HEAD_MISMATCH, chain, length, None,
                                    f"chain {chain}: the recorded head hash is not the last "
                                    "entry's hash"))

    for row in rows:
        seq, chain, pos, text, subjects, prev_hash, own = row
        if chain != current:
            if current is not None:
                close(current, expected_pos - 1, prev)
            current, expected_pos, prev, last_seq, before, offset = (
                chain, 1, GENESIS_HASH, -1, None, 0)
            format_2_seen = False
            seen.add(chain)
            if not 0 <= chain <= chains:
                findings.append(Finding(Damage.UNKNOWN_CHAIN, chain, pos, seq,
                                        f"entry {seq} is in chain {chain}, which does not exist"))
        count += 1
        if sha256(text).hexdigest() != own:
            if malformed is not None and bytes(text[:len(malformed)]) == malformed:
                if len(findings) < FINDINGS_LIMIT:
                    findings.append(_malformed(bytes(text[len(malformed):]), seq, chain, pos))
            elif len(bad) < FINDINGS_LIMIT:
                entry = _Bad(seq, chain, pos, before)
                if offset and _hash_at(text, chain, pos - offset) == own:
                    entry.written, entry.searched = (chain, pos - offset), True
                elif searches < DIAGNOSE_LIMIT:
                    searches += 1
                    entry.written, entry.searched = _written_in(row, chains, everywhere), True
                if entry.written is not None and entry.written[0] == chain:
                    offset = pos - entry.written[1]
                bad.append(entry)
            prev = None
        else:
            if text[tag_byte] == format_1_byte:
                if format_2_seen and len(findings) < FINDINGS_LIMIT:
                    findings.append(Finding(
                        Damage.MODIFIED, chain, pos, seq,
                        f"entry {seq} (chain {chain}, position {pos}) is of format 1 after "
                        "entries of format 2: it was rewritten in the older format"))
            else:
                format_2_seen = True
            # The chain its subjects choose (chain_for, inlined): pseudonyms are hex.
            if subjects == empty_subjects:
                home = 0
            else:
                try:
                    home = 1 + int(subjects[2:10], 16) % chains
                except ValueError:
                    home = subject_chain(subjects, chains)  # type: ignore[assignment]
            if home != chain and len(findings) < FINDINGS_LIMIT:
                where = "no chain" if home is None else f"chain {home}"
                findings.append(Finding(
                    Damage.MOVED, chain, pos, seq,
                    f"entry {seq} stands in chain {chain} but its subjects belong to {where}: "
                    "it was moved there and rehashed"))
            elif (seq <= last_seq and pos == expected_pos
                  and (prev is None or prev_hash == prev) and len(findings) < FINDINGS_LIMIT):
                findings.append(Finding(
                    Damage.MODIFIED, chain, pos, seq,
                    f"entry {seq} (chain {chain}, position {pos}) has a sequence number "
                    "below an earlier entry's in its chain: its seq was rewritten"))
            # After a damaged entry its successor's link is not judged: a reordered
            # predecessor breaks it too, and the damage is already named.
            if ((pos != expected_pos or (prev_hash != prev and prev is not None))
                    and len(findings) < FINDINGS_LIMIT):
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
                                            f"chain {chain}: entry {seq} at position {pos} does "
                                            "not follow the previous entry"))
            prev = own
        expected_pos = pos + 1
        before = seq
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
    _explain(bad, findings)
    return VerifyReport.from_findings(findings, entries=count, chains=len(seen),
                                      heads=tuple(heads[c] for c in sorted(heads)))
