"""Signed files of data-subject requests: export bundles and erasure certificates.

An export bundle is a folder of files (mode 0600, the folder 0700) and a
``manifest.json`` listing every file with its SHA-256, the request id and the
time, in a canonical form (sorted keys, no whitespace), with an Ed25519
signature over exactly those bytes in ``manifest.sig`` (base64). The key is the
vault's signing key, whose public key ``vault keys export-public-key`` gives.
:func:`verify_bundle` fails when any file is changed, added or removed, or the
manifest or its signature is.

An erasure certificate is one JSON document, signed the same way, holding no
personal data: the request id, the subject's pseudonym, what was destroyed and
what was kept and why.

Misuse: a bundle holds the subject's decrypted data. Write it to a folder only
the DPO can read, hand it over, and delete it (``export_retention``).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vault.audit.checkpoint import canonical, key_fingerprint
from vault.errors import ConfigError, InvalidExport

__all__ = ["BUNDLE_FORMAT", "CERTIFICATE_FORMAT", "BundleWriter", "csv_bytes",
           "json_bytes", "sign_document", "verify_bundle", "verify_document"]

BUNDLE_FORMAT = "vault-dsar-export/1"
CERTIFICATE_FORMAT = "vault-erasure-certificate/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


def json_bytes(value: Any) -> bytes:
    """Readable JSON (indented, UTF-8) for the files of a bundle."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
            + "\n").encode("utf-8")


def csv_bytes(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> bytes:
    """One CSV table; values that are not text are written as JSON."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (v if isinstance(v, str) or v is None
                             else json.dumps(v, ensure_ascii=False, default=str))
                         for k, v in row.items()})
    return buffer.getvalue().encode("utf-8")


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL: never write through a file (or a link) someone put there first.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class BundleWriter:
    """Writes the files of one bundle into a new folder and signs its manifest."""

    def __init__(self, folder: Path) -> None:
        try:
            folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, parents=False, exist_ok=False)
        except FileExistsError:
            raise ConfigError(f"the export folder {folder.name} already exists") from None
        except OSError as exc:
            raise ConfigError(f"the export folder cannot be created ({type(exc).__name__})"
                              ) from None
        self.folder = folder
        self._hashes: dict[str, str] = {}

    def add(self, name: str, data: bytes) -> None:
        """Add one file (a plain name, no folders)."""
        if "/" in name or name in (MANIFEST, SIGNATURE) or name.startswith("."):
            raise ConfigError("a bundle file name must be a plain name")
        _write_private(self.folder / name, data)
        self._hashes[name] = hashlib.sha256(data).hexdigest()

    def seal(self, key: Ed25519PrivateKey, body: Mapping[str, Any]) -> dict[str, Any]:
        """Write the manifest (``body`` plus the file list) and its signature."""
        manifest = {**body, "format": BUNDLE_FORMAT, "files": dict(sorted(self._hashes.items())),
                    "key": key_fingerprint(key.public_key())}
        raw = canonical(manifest)
        _write_private(self.folder / MANIFEST, raw)
        _write_private(self.folder / SIGNATURE, base64.b64encode(key.sign(raw)) + b"\n")
        return manifest


def verify_bundle(folder: Path, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Check a bundle: the manifest's signature, every file's SHA-256, and that the
    folder holds exactly the files listed.

    Returns:
        The manifest.

    Raises:
        InvalidExport: naming the files that differ (names only, never contents).
    """
    try:
        raw = (folder / MANIFEST).read_bytes()
        signature = base64.b64decode((folder / SIGNATURE).read_bytes().strip(), validate=True)
    except (OSError, ValueError):
        raise InvalidExport("the bundle has no readable manifest and signature",
                            problems=("manifest",)) from None
    try:
        public_key.verify(signature, raw)
    except InvalidSignature:
        raise InvalidExport("the manifest's signature does not verify",
                            problems=("signature",)) from None
    manifest = json.loads(raw)
    files: Mapping[str, str] = manifest.get("files", {})
    problems: list[str] = []
    present = {p.name for p in folder.iterdir()} - {MANIFEST, SIGNATURE}
    for name in sorted(present - set(files)):
        problems.append(f"added:{name}")
    for name, digest in sorted(files.items()):
        path = folder / name
        if name not in present:
            problems.append(f"removed:{name}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"changed:{name}")
    if problems:
        raise InvalidExport(f"the bundle does not match its manifest: {', '.join(problems)}",
                            problems=tuple(problems))
    return dict(manifest)


def sign_document(key: Ed25519PrivateKey, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with ``key`` (fingerprint) and ``signature`` (base64 Ed25519 over the
    canonical form of the rest)."""
    unsigned = {**body, "key": key_fingerprint(key.public_key())}
    return {**unsigned, "signature": base64.b64encode(key.sign(canonical(unsigned))).decode()}


def verify_document(document: Mapping[str, Any], public_key: Ed25519PublicKey) -> None:
    """Check a document made by :func:`sign_document`.

    Raises:
        InvalidExport: the signature does not verify.
    """
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    try:
        public_key.verify(base64.b64decode(str(document.get("signature", "")), validate=True),
                          canonical(unsigned))
    except (InvalidSignature, ValueError):
        raise InvalidExport("the document's signature does not verify",
                            problems=("signature",)) from None
