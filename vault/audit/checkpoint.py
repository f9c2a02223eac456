"""Signed checkpoints of the audit log, verifiable without any secret.

A checkpoint records, for every chain, its length and head hash, with the
time, the vault's id, the fingerprint of the signing key and the hash of the
previous checkpoint (so checkpoints form a chain of their own). It is signed
with the vault's Ed25519 key, which lives in the key file, never in the data
database, and written as one JSON file to a folder outside the database::

    {"body": {...canonical fields...}, "signature": "<base64 Ed25519>"}

Anyone holding the public key (``vault keys export-public-key``) can check
that every checkpoint is authentic and that the current log still contains
each checkpointed head: a chain cut back below a checkpoint is a
``truncated_chain``; a chain rewritten consistently (hashes recomputed) after
a checkpoint no longer has the checkpointed hash at that position, a
``rewritten_after_checkpoint``. A checkpoint whose body or signature was
changed, or that another key signed, is a ``bad_signature``; one missing from
the middle of the folder (each names the digest of the one before) is a
``checkpoint_chain_broken``.

Limits: entries appended after the newest checkpoint are only as trustworthy
as the database until the next checkpoint, so schedule ``vault audit
checkpoint`` (cron, systemd timer) as often as that gap matters; and deleting
the newest checkpoint files goes unnoticed unless copies are kept where the
attacker cannot reach (another host, write-once storage).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from vault.audit.chain import ChainHead, Damage, Finding
from vault.errors import AuditError, ConfigError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "canonical",
    "has_checkpoints",
    "key_fingerprint",
    "load_checkpoints",
    "load_public_key",
    "verify_checkpoints",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "vault.checkpoint.v1"
_PREFIX = "checkpoint-"


def canonical(body: Mapping[str, Any]) -> bytes:
    """The signed bytes: JSON with sorted keys, no whitespace, ASCII only."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def load_public_key(pem: bytes | str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM bytes or a PEM file.

    Raises:
        ConfigError: unreadable, not PEM, or not an Ed25519 key.
    """
    if isinstance(pem, Path):
        try:
            data = pem.read_bytes()
        except OSError:
            raise ConfigError(f"cannot read public key file {pem}") from None
    else:
        data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigError("the public key is not a PEM-encoded public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("the public key is not an Ed25519 key")
    return key


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed checkpoint as read from its file."""

    body: Mapping[str, Any]
    signature: bytes
    path: Path

    @property
    def sequence(self) -> int:
        return int(self.body["sequence"])

    @property
    def chains(self) -> dict[int, tuple[int, str]]:
        return {int(c["chain"]): (int(c["length"]), str(c["head"])) for c in self.body["chains"]}

    def digest(self) -> str:
        """SHA-256 of the canonical body; the next checkpoint's ``previous``."""
        return hashlib.sha256(canonical(self.body)).hexdigest()


def _parse(path: Path) -> Checkpoint:
    data = json.loads(path.read_text(encoding="utf-8"))
    body, signature = data["body"], base64.b64decode(data["signature"], validate=True)
    if body.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("unknown checkpoint format")
    for item in body["chains"]:
        int(item["chain"]), int(item["length"]), str(item["head"])
    int(body["sequence"])
    return Checkpoint(body=body, signature=signature, path=path)


def has_checkpoints(folder: Path) -> bool:
    """True if ``folder`` exists and holds at least one checkpoint file."""
    return folder.is_dir() and any(folder.glob(f"{_PREFIX}*.json"))


def load_checkpoints(folder: Path) -> tuple[list[Checkpoint], list[Finding]]:
    """Every checkpoint file in ``folder``, by sequence, and findings for unreadable ones.

    Raises:
        ConfigError: the folder does not exist.
    """
    if not folder.is_dir():
        raise ConfigError(f"no checkpoint folder at {folder}")
    found: list[Checkpoint] = []
    problems: list[Finding] = []
    for path in sorted(folder.glob(f"{_PREFIX}*.json")):
        try:
            found.append(_parse(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            problems.append(Finding(Damage.BAD_CHECKPOINT, None, None, None,
                                    f"checkpoint file {path.name} is malformed"))
    found.sort(key=lambda c: c.sequence)
    return found, problems


def write_checkpoint(
    folder: Path,
    *,
    heads: Mapping[int, ChainHead],
    signing_key: Ed25519PrivateKey,
    vault_id: str,
    now: dt.datetime,
) -> Path:
    """Sign the given (verified) chain heads and write the next checkpoint file.

    The file is written to a temporary name, synced, then linked to its final
    name ``checkpoint-<number>-<UTC time>.json``, which never replaces an
    existing file.

    Raises:
        AuditError: the folder holds malformed checkpoints or cannot be written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditError(f"cannot create the checkpoint folder {folder}: {exc.strerror}") from None
    existing, problems = load_checkpoints(folder)
    if problems:
        raise AuditError(f"the checkpoint folder is damaged: {problems[0].detail}")
    previous = existing[-1] if existing else None
    sequence = previous.sequence + 1 if previous else 1
    body = {
        "format": CHECKPOINT_FORMAT,
        "vault_id": vault_id,
        "sequence": sequence,
        "created_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "previous": previous.digest() if previous else None,
        "key_id": key_fingerprint(signing_key.public_key()),
        "entries": sum(h.length for h in heads.values()),
        "chains": [{"chain": c, "length": heads[c].length, "head": heads[c].head_hash}
                   for c in sorted(heads)],
    }
    document = {"body": body,
                "signature": base64.b64encode(signing_key.sign(canonical(body))).decode()}
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = folder / f"{_PREFIX}{sequence:06d}-{stamp}.json"
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, target)  # fails if the file exists: a checkpoint is never overwritten
    except FileExistsError:
        raise AuditError(f"checkpoint {target.name} already exists") from None
    except OSError as exc:
        raise AuditError(f"cannot write checkpoint to {folder}: {exc.strerror}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    rivals = [p for p in folder.glob(f"{_PREFIX}{sequence:06d}-*.json") if p != target]
    if rivals:  # another writer took the same number at the same time: keep the chain linear
        target.unlink(missing_ok=True)
        raise AuditError(f"another checkpoint number {sequence} was written at the same time; "
                         "try again")
    _sync_folder(folder)
    return target


def _sync_folder(folder: Path) -> None:
    """Make the new directory entry durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def verify_checkpoints(
    checkpoints: Sequence[Checkpoint],
    public_key: Ed25519PublicKey,
    *,
    vault_id: str | None,
    lengths: Mapping[int, int],
    hash_at: Callable[[int, int], str | None],
) -> list[Finding]:
    """Check signatures, the chain of checkpoints, and that each is a prefix of the log.

    Args:
        checkpoints: as returned by :func:`load_checkpoints` (by sequence).
        public_key: the vault's published checkpoint key.
        vault_id: the id of the vault whose log is checked (None: not compared).
        lengths: the highest position present in each chain of the current log.
        hash_at: the hash of the entry at (chain, position), or None if absent.

    Returns:
        ``bad_signature`` (forged, altered, or signed by another key),
        ``checkpoint_chain_broken`` (a checkpoint missing, replaced or
        reordered), ``bad_checkpoint`` (another vault or key id),
        ``truncated_chain`` and ``rewritten_after_checkpoint`` findings.
    """
    findings: list[Finding] = []
    fingerprint = key_fingerprint(public_key)
    previous: Checkpoint | None = None
    previous_ok = True
    for cp in checkpoints:
        name = cp.path.name
        try:
            public_key.verify(cp.signature, canonical(cp.body))
        except InvalidSignature:
            findings.append(Finding(Damage.BAD_SIGNATURE, None, None, None,
                                    f"checkpoint {name}: the signature does not verify with "
                                    "this public key (forged, altered or signed by another key)"))
            previous, previous_ok = cp, False
            continue
        if cp.body.get("key_id") != fingerprint:
            findings.append(Finding(Damage.BAD_CHECKPOINT, None, None, None,
                                    f"checkpoint {name} names another signing key"))
        if vault_id is not None and cp.body.get("vault_id") != vault_id:
            findings.append(Finding(Damage.BAD_CHECKPOINT, None, None, None,
                                    f"checkpoint {name} belongs to another vault"))
        expected_seq = previous.sequence + 1 if previous else 1
        expected_prev = previous.digest() if previous else None
        # After a bad signature the link is not judged again: that damage is named.
        if previous_ok and (cp.sequence != expected_seq
                            or cp.body.get("previous") != expected_prev):
            findings.append(Finding(Damage.CHECKPOINT_GAP, None, None, None,
                                    f"checkpoint {name} (number {cp.sequence}) does not follow "
                                    f"checkpoint {expected_seq - 1}: a checkpoint is missing, "
                                    "replaced or out of order"))
        for chain, (length, head) in sorted(cp.chains.items()):
            if length == 0:
                continue
            present = lengths.get(chain, 0)
            if present < length:
                findings.append(Finding(Damage.TRUNCATED, chain, present + 1, None,
                                        f"chain {chain} has {present} entries, checkpoint "
                                        f"{cp.sequence} signed {length}"))
            elif hash_at(chain, length) != head:
                findings.append(Finding(Damage.REWRITTEN, chain, length, None,
                                        f"chain {chain} no longer holds the head signed by "
                                        f"checkpoint {cp.sequence} at position {length}"))
        previous, previous_ok = cp, True
    unique: dict[tuple[Damage, int | None, int | None, str], Finding] = {}
    for f in findings:  # every later checkpoint sees the same truncation again
        key = (f.kind, f.chain, f.position, f.detail if f.chain is None else "")
        unique.setdefault(key, f)
    return list(unique.values())
