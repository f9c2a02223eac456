"""Key-encryption keys (KEKs) and the other long-lived secrets of a vault.

A :class:`KeyProvider` wraps and unwraps data keys under versioned KEKs.
:class:`LocalKeyProvider` keeps them in a JSON key file created by ``vault
init`` with mode 0600; it refuses to load a file that group or others can
read. :class:`~vault.crypto.pkcs11_provider.PKCS11KeyProvider` keeps them in
an HSM and :class:`~vault.crypto.aws_kms.AwsKmsKeyProvider` in AWS KMS; both
implement the same protocol, and :func:`vault.crypto.providers.open_provider`
builds one from a ``key_provider`` URI.

The root keys (:class:`RootKeys`: blind-index root, pseudonym key, checkpoint
signing key) are in the key file of a local vault; a vault on an HSM or KMS
keeps them in the key store, wrapped under the KEK like the data keys.

Every wrap is bound to where the data key belongs (:class:`KeyContext`: vault,
tenant, subject, and the KEK version): the HSM and KMS providers make it the
associated data of AES-GCM or the KMS encryption context, so a wrapped key
copied to another subject's row does not unwrap. The local key file wraps with
AES key wrap (RFC 3394) from ``cryptography``, which has no associated data;
the binding there is the data envelope's (its associated data names the
subject), as before.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

try:  # POSIX advisory locks serialise key-file rewrites across processes
    import fcntl
except ImportError:  # pragma: no cover - Windows: single-process use only
    fcntl = None  # type: ignore[assignment]

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from vault.crypto._encoding import length_prefixed
from vault.errors import KeyManagementError

__all__ = ["ROOT_KEY_NAMES", "ContextBoundWrapping", "KeyContext", "KeyProvider",
           "LocalKeyProvider", "RootKeys"]

_FORMAT = 1
_KEY_BYTES = 32
#: The names of the root keys, as stored (key file fields, key store rows).
ROOT_KEY_NAMES = ("index_root", "pseudonym", "signing")


@dataclass(frozen=True, slots=True)
class KeyContext:
    """Where a wrapped key belongs: bound into its wrap by the HSM and KMS providers.

    ``tenant`` is ``*`` and ``subject_id`` ``root:<name>`` for a root key.
    """

    vault_id: str
    tenant: str
    subject_id: str

    @classmethod
    def root(cls, vault_id: str, name: str) -> KeyContext:
        return cls(vault_id=vault_id, tenant="*", subject_id=f"root:{name}")

    def associated_data(self, kek_version: int) -> bytes:
        """AES-GCM associated data: the fields and the KEK version, length-prefixed."""
        return length_prefixed(b"vault-dek-wrap/1", self.vault_id, self.tenant,
                               self.subject_id, str(kek_version))

    def encryption_context(self, kek_version: int) -> dict[str, str]:
        """The KMS encryption context (logged in CloudTrail: ids only, no PII)."""
        return {"vault": self.vault_id, "tenant": self.tenant, "subject": self.subject_id,
                "kek_version": str(kek_version)}


@dataclass(frozen=True, slots=True)
class RootKeys:
    """The blind-index root key, the pseudonym key and the Ed25519 signing seed.
    Its repr never shows key material."""

    index_root: bytes = field(repr=False)
    pseudonym: bytes = field(repr=False)
    signing: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if any(len(v) != _KEY_BYTES for v in (self.index_root, self.pseudonym, self.signing)):
            raise KeyManagementError("root keys must be 32 bytes each")

    def __repr__(self) -> str:
        return "RootKeys([secret])"

    @classmethod
    def generate(cls) -> RootKeys:
        """Fresh random root keys."""
        signing = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption())
        return cls(index_root=secrets.token_bytes(_KEY_BYTES),
                   pseudonym=secrets.token_bytes(_KEY_BYTES), signing=signing)

    def items(self) -> dict[str, bytes]:
        """Name -> material, in :data:`ROOT_KEY_NAMES` order."""
        return {"index_root": self.index_root, "pseudonym": self.pseudonym,
                "signing": self.signing}

    def signing_key(self) -> Ed25519PrivateKey:
        """The Ed25519 key that signs audit checkpoints and consent receipts."""
        return Ed25519PrivateKey.from_private_bytes(self.signing)


@runtime_checkable
class KeyProvider(Protocol):
    """Where KEKs live. Implementations must be safe to call from several threads.

    KEK versions are numbers unique across every provider a vault has used (a
    migration's new provider starts above the old one's versions), so a data
    key's version names the provider that wrapped it.
    """

    @property
    def kind(self) -> str:
        """``file``, ``pkcs11`` or ``aws-kms``."""
        ...

    def describe(self) -> str:
        """The provider's URI without any secret (no PIN), safe to log and store."""
        ...

    def current_kek_version(self) -> int:
        """The KEK version new data keys are wrapped under."""
        ...

    def kek_versions(self) -> list[int]:
        """Every KEK version still available, oldest first."""
        ...

    def wrap(self, dek: bytes, *, context: KeyContext | None = None) -> tuple[int, bytes]:
        """Wrap a data key under the current KEK, bound to ``context``; returns
        (version, wrapped)."""
        ...

    def unwrap(self, version: int, wrapped: bytes, *,
               context: KeyContext | None = None) -> bytes:
        """Unwrap a data key wrapped for ``context``; raises KeyManagementError if it
        cannot (KeyProviderUnavailable when the provider cannot be reached)."""
        ...

    def rotate(self) -> int:
        """Create a new KEK version, make it current and return it."""
        ...

    def retire(self, version: int) -> None:
        """Forget a KEK version for good (the caller checks nothing depends on it)."""
        ...

    def close(self) -> None:
        """Release sessions and connections (the KEKs stay where they are)."""
        ...


def _stamp_of(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _read_content(target: Path) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """Read and check a key file: it must exist, be private to its owner and be a JSON object.

    Raises:
        KeyManagementError: missing, unsafe permissions, or malformed.
    """
    try:
        info = target.stat()
    except FileNotFoundError:
        raise KeyManagementError(
            f"no key file at {target}: run `vault init` or set VAULT_KEY_FILE"
        ) from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyManagementError(
            f"key file {target} is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod 600 {target}`"
        )
    try:
        content = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise KeyManagementError(f"key file {target} cannot be read as JSON") from None
    if not isinstance(content, dict):
        raise KeyManagementError(f"key file {target} is not a JSON object")
    return content, (info.st_ino, info.st_mtime_ns, info.st_size)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str, size: int = _KEY_BYTES) -> bytes:
    try:
        data = base64.b64decode(str(text), validate=True)
    except (ValueError, TypeError):
        raise KeyManagementError(f"key file: {what} is not valid base64") from None
    if len(data) != size:
        raise KeyManagementError(f"key file: {what} must be {size} bytes")
    return data


class ContextBoundWrapping:
    """What the providers that bind every wrap to its key context (the HSM and the
    KMS ones) share: :meth:`wrap` as a batch of one, the check of a batch, and the
    current KEK version as the newest of :meth:`kek_versions` (oldest first)."""

    #: The provider as its errors name it, and what it says when it holds no KEK.
    label = "key"
    no_kek = "the key provider holds no KEK"

    def kek_versions(self) -> list[int]:
        raise NotImplementedError

    def wrap_many(self, deks: Sequence[bytes], *,
                  contexts: Sequence[KeyContext] | None = None) -> list[tuple[int, bytes]]:
        raise NotImplementedError

    def current_kek_version(self) -> int:
        versions = self.kek_versions()
        if not versions:
            raise KeyManagementError(self.no_kek)
        return versions[-1]

    def wrap(self, dek: bytes, *, context: KeyContext | None = None) -> tuple[int, bytes]:
        return self.wrap_many([dek], contexts=[context] if context else None)[0]

    def batch_contexts(self, deks: Sequence[bytes],
                       contexts: Sequence[KeyContext] | None) -> Sequence[KeyContext]:
        """``contexts``, one for each data key of ``deks``.

        Raises:
            KeyManagementError: a data key without a context, or not 32 bytes.
        """
        if contexts is None or len(contexts) != len(deks):
            raise KeyManagementError(f"the {self.label} provider wraps only with a key context")
        if any(len(dek) != _KEY_BYTES for dek in deks):
            raise KeyManagementError("data keys must be 32 bytes")
        return contexts


class LocalKeyProvider:
    """KEKs and root keys in a local JSON file (mode 0600), rewritten atomically.

    Misuse: the key file is the only copy of the KEKs. Back it up apart from
    the databases; losing it makes every record unreadable.
    """

    kind = "file"

    def __init__(self, path: Path, content: dict[str, Any]) -> None:
        self._path = path
        self._lock = threading.RLock()
        self._stamp: tuple[int, int, int] | None = None
        self._parse(content)

    def __repr__(self) -> str:
        return f"LocalKeyProvider(path={str(self._path)!r}, keks={self.kek_versions()})"

    # ------------------------------------------------------------------ file

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, first_version: int = 1,
               root_keys: RootKeys | None = None) -> LocalKeyProvider:
        """Create a new key file with KEK ``first_version`` and fresh root keys (or
        ``root_keys``, when a vault migrates to a key file).

        Raises:
            KeyManagementError: the file already exists or cannot be written.
        """
        target = Path(path)
        if target.exists():
            raise KeyManagementError(f"a key file already exists at {target}")
        roots = root_keys or RootKeys.generate()
        content = {
            "format": _FORMAT,
            "current_kek": first_version,
            "keks": {str(first_version): _b64(secrets.token_bytes(_KEY_BYTES))},
            **{name: _b64(value) for name, value in roots.items().items()},
        }
        provider = cls(target, content)
        provider._write(content)
        return provider

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        """Load a key file, refusing one that group or others may read.

        Raises:
            KeyManagementError: missing, unsafe permissions, or malformed.
        """
        target = Path(path)
        content, stamp = _read_content(target)
        provider = cls(target, content)
        provider._stamp = stamp
        return provider

    def _parse(self, content: dict[str, Any]) -> None:
        if content.get("format") != _FORMAT:
            raise KeyManagementError("key file: unsupported format")
        raw_keks = content.get("keks")
        if not isinstance(raw_keks, dict) or not raw_keks:
            raise KeyManagementError("key file: no key-encryption keys")
        keks: dict[int, bytes] = {}
        for version, value in raw_keks.items():
            try:
                number = int(version)
            except ValueError:
                raise KeyManagementError("key file: KEK versions must be integers") from None
            keks[number] = _unb64(value, f"KEK {number}")
        current = content.get("current_kek")
        if not isinstance(current, int) or current not in keks:
            raise KeyManagementError("key file: current_kek names no KEK")
        self._keks = keks
        self._current = current
        self._index_root = _unb64(content.get("index_root"), "index_root")
        self._pseudonym = _unb64(content.get("pseudonym"), "pseudonym")
        self._signing_seed = _unb64(content.get("signing"), "signing")
        self._signing = Ed25519PrivateKey.from_private_bytes(self._signing_seed)
        self._content = content

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Hold an exclusive lock on ``<key file>.lock`` for a read-modify-write.

        Another process (a server, ``vault keys rotate``) may rewrite the key
        file; without the lock two rotations from stale snapshots would each
        write a *different* KEK under the same version number.
        """
        if fcntl is None:  # pragma: no cover
            yield
            return
        lock_path = self._path.with_name(self._path.name + ".lock")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _reload(self) -> None:
        """Re-read the key file if another process changed it. Caller holds ``_lock``."""
        try:
            stamp = _stamp_of(self._path)
        except OSError:
            return  # vanished or unreadable: keep what we have; writes will fail loudly
        if stamp == self._stamp:
            return
        content, stamp = _read_content(self._path)
        self._parse(content)
        self._stamp = stamp

    def _write(self, content: dict[str, Any]) -> None:
        """Write the key file atomically (temp file, fsync, rename) with mode 0600."""
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".keyfile-", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(content, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise KeyManagementError(
                f"cannot write key file {self._path}: {exc.strerror}"
            ) from None
        if hasattr(os, "O_DIRECTORY"):
            dir_fd = os.open(directory, os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._stamp = _stamp_of(self._path)

    # ------------------------------------------------------------------ KeyProvider

    def describe(self) -> str:
        return f"file:{self._path.resolve()}"

    def close(self) -> None:
        """Nothing to release: the file is read when needed."""

    def current_kek_version(self) -> int:
        with self._lock:
            return self._current

    def kek_versions(self) -> list[int]:
        with self._lock:
            return sorted(self._keks)

    def wrap(self, dek: bytes, *, context: KeyContext | None = None) -> tuple[int, bytes]:
        # ``context`` is not bound: RFC 3394 has no associated data (see the module doc).
        if len(dek) != _KEY_BYTES:
            raise KeyManagementError("data keys must be 32 bytes")
        with self._lock:
            # A cheap stat: wrap under the KEK that is current *now*, never
            # under one another process has since rotated away or retired.
            self._reload()
            version = self._current
            kek = self._keks[version]
        return version, aes_key_wrap(kek, dek)

    def wrap_many(self, deks: Sequence[bytes], *,
                  contexts: Sequence[KeyContext] | None = None) -> list[tuple[int, bytes]]:
        """:meth:`wrap` for a batch: one look at the key file for all of them, so
        every key of the batch is wrapped under the KEK that is current now."""
        if any(len(dek) != _KEY_BYTES for dek in deks):
            raise KeyManagementError("data keys must be 32 bytes")
        with self._lock:
            self._reload()
            version = self._current
            kek = self._keks[version]
        return [(version, aes_key_wrap(kek, dek)) for dek in deks]

    def unwrap(self, version: int, wrapped: bytes, *,
               context: KeyContext | None = None) -> bytes:
        with self._lock:
            kek = self._keks.get(version)
            if kek is None:  # perhaps created by another process's rotation
                self._reload()
                kek = self._keks.get(version)
        if kek is None:
            raise KeyManagementError(f"KEK version {version} is not available (retired?)")
        try:
            return aes_key_unwrap(kek, wrapped)
        except (InvalidUnwrap, ValueError):
            raise KeyManagementError("a wrapped data key failed its integrity check") from None

    def rotate(self) -> int:
        with self._lock, self._file_lock():
            self._reload()
            version = max(self._keks) + 1
            content = dict(self._content)
            keks = dict(content["keks"])
            keks[str(version)] = _b64(secrets.token_bytes(_KEY_BYTES))
            content["keks"] = keks
            content["current_kek"] = version
            self._write(content)
            self._parse(content)
            return version

    def retire(self, version: int) -> None:
        with self._lock, self._file_lock():
            self._reload()
            if version not in self._keks:
                raise KeyManagementError(f"KEK version {version} does not exist")
            if version == self._current:
                raise KeyManagementError(
                    f"KEK version {version} is current; rotate before retiring it"
                )
            content = dict(self._content)
            content["keks"] = {k: v for k, v in content["keks"].items() if int(k) != version}
            self._write(content)
            self._parse(content)

    def index_root_key(self) -> bytes:
        return self._index_root

    def pseudonym_key(self) -> bytes:
        return self._pseudonym

    def signing_key(self) -> Ed25519PrivateKey:
        return self._signing

    def root_keys(self) -> RootKeys:
        """The root keys held in the key file."""
        return RootKeys(index_root=self._index_root, pseudonym=self._pseudonym,
                        signing=self._signing_seed)

    def public_key_pem(self) -> bytes:
        """The checkpoint verification key, safe to publish."""
        return self._signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
