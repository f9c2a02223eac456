"""KEKs in a PKCS#11 token (an HSM; tested against SoftHSM2), through python-pkcs11.

Each KEK version is an AES-256 secret-key object in the token, labelled with
the URI's ``object`` and identified by ``CKA_ID`` = the version as 4 bytes
big-endian. It is generated inside the token with ``CKA_SENSITIVE`` true and
``CKA_EXTRACTABLE`` false, so its value never leaves the HSM; since the
versions live in the token, every host using the token sees a rotation at
once (no shared file).

A data key is sealed by the token: ``C_Encrypt`` with ``CKM_AES_GCM``, a fresh
96-bit nonce per wrap made here (never a parameter), and associated data that
binds vault id, tenant, subject and KEK version (:class:`KeyContext`). The
wrapped form is ``0x01 | nonce (12) | ciphertext+tag (48)``.

Threads. python-pkcs11 initialises the module with ``C_Initialize(NULL)``,
which tells it the application will not call it from several threads at
once (SoftHSM2 then takes no locks of its own). So every call into a module
is serialised by one lock per module and process, held for the whole
operation; the provider is thread-safe, and one token operation runs at a
time in a process (a wrap or unwrap takes about 15 microseconds in SoftHSM2;
a network HSM's latency would be paid one call at a time). Sessions are
pooled, one per operation, so no operation state is ever shared. The first
session logs in (PKCS#11 logs in an application, not a session) and stays
open while the provider lives. A
forked child (the audit verifier forks workers) must not use the parent's
library state: the first use in a new process re-initialises the library and
logs in again. Any token failure (removed, module gone, PIN refused, session
lost) drops the pool and raises :class:`KeyProviderUnavailable`; the next
operation tries afresh, so the provider recovers when the token is back.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import (
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
    NoSuchToken,
    PinIncorrect,
    PinLenRange,
    PKCS11Error,
    UserAlreadyLoggedIn,
)
from pkcs11.mechanisms import GCMParams

from vault.crypto._encoding import length_prefixed
from vault.crypto.keys import ContextBoundWrapping, KeyContext
from vault.errors import KeyManagementError, KeyProviderUnavailable

__all__ = ["PKCS11KeyProvider"]

_WRAP_FORMAT = 1
_NONCE = 12
_DEK = 32
_WRAPPED = 1 + _NONCE + _DEK + 16
# SoftHSM2 reports a failed GCM tag as CKR_GENERAL_ERROR; others use these too.
_INTEGRITY = (EncryptedDataInvalid, EncryptedDataLenRange, GeneralError, FunctionFailed)
#: How long the list of KEK versions is trusted before a wrap looks again.
REFRESH_SECONDS = 5.0

# PKCS#11 logs in an application, not a session: while one provider of this
# process is logged in to a token, another's C_Login would not check its PIN.
# So a second provider is let in only with a PIN the token accepted in this
# process (a digest of it, with the module and token; never the PIN itself).
_accepted: set[bytes] = set()
_accepted_lock = threading.Lock()


def _pin_digest(module: str, token: str, pin: str) -> bytes:
    return hashlib.sha256(length_prefixed(module, token, pin)).digest()


# One lock per (process, module): see "Threads" in the module doc. Keyed by the
# process id too, so a child forked while a parent's thread held it starts free.
_module_locks: dict[tuple[int, str], threading.RLock] = {}
_module_locks_guard = threading.Lock()


def _module_lock(module: str) -> threading.RLock:
    key = (os.getpid(), module)
    with _module_locks_guard:
        lock = _module_locks.get(key)
        if lock is None:
            lock = _module_locks[key] = threading.RLock()
        return lock


def _version_id(version: int) -> bytes:
    return struct.pack(">I", version)


class _Pooled:
    """One session and the KEK objects found through it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.keys: dict[int, Any] = {}


class PKCS11KeyProvider(ContextBoundWrapping):
    """KEKs as non-extractable AES keys in a PKCS#11 token; data keys sealed by the token.

    Misuse: whoever holds the PIN and reaches the token can unwrap every data
    key; keep the PIN in a ``pin-source`` file readable by the service only, or
    in ``VAULT_PKCS11_PIN`` of the service's environment.
    """

    kind = "pkcs11"
    label = "PKCS#11"
    no_kek = "the PKCS#11 token holds no KEK"

    def __init__(self, *, module_path: str, token_label: str, object_label: str, pin: str,
                 uri: str, pool_size: int = 8) -> None:
        self._module_path = module_path
        self._token_label = token_label
        self._label = object_label
        self._pin = pin
        self._uri = uri
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._lib: Any = None
        self._token: Any = None
        self._login: Any = None  # the session that logged in; kept open
        self._idle: list[_Pooled] = []
        self._versions: list[int] = []
        self._listed_at = 0.0

    def __repr__(self) -> str:
        return f"PKCS11KeyProvider(uri={self._uri!r}, keks={self._versions}, pin=[secure])"

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, *, module_path: str, token_label: str, object_label: str, pin: str,
             uri: str, create: bool = False, first_version: int = 1) -> PKCS11KeyProvider:
        """Log in to the token and find the KEKs (generating version ``first_version``
        when ``create`` and there is none).

        Raises:
            KeyProviderUnavailable: the module, the token or the login fails.
            KeyManagementError: no KEK with that label and ``create`` is false.
        """
        provider = cls(module_path=module_path, token_label=token_label,
                       object_label=object_label, pin=pin, uri=uri)
        try:
            versions = provider._list_versions()
            if not versions:
                if not create:
                    raise KeyManagementError(
                        "the PKCS#11 token holds no KEK with the URI's object label; "
                        "run `vault init --key-provider URI` to create one")
                provider._generate(first_version)
                versions = provider._list_versions()
        except BaseException:
            provider.close()
            raise
        if not versions:  # pragma: no cover - the token refused silently
            raise KeyProviderUnavailable("the PKCS#11 token did not keep the new KEK")
        return provider

    def _ensure_process(self) -> None:
        """After a fork: forget the parent's sessions and initialise the library again.
        Caller holds ``_lock``."""
        pid = os.getpid()
        if pid == self._pid:
            return
        self._pid = pid
        self._idle.clear()
        self._login = None
        self._token = None
        if self._lib is not None:
            try:
                self._lib.reinitialize()
            except PKCS11Error:
                self._lib = None

    def _connect(self) -> Any:
        """The token, logged in. Caller holds ``_lock``."""
        self._ensure_process()
        if self._token is not None and self._login is not None:
            return self._token
        try:
            if self._lib is None:
                self._lib = pkcs11.lib(self._module_path)
            token = self._find_token(self._lib)
        except NoSuchToken:
            raise KeyProviderUnavailable("the PKCS#11 token named in the URI is not present"
                                         ) from None
        except (PKCS11Error, RuntimeError, OSError) as exc:
            raise KeyProviderUnavailable(
                f"the PKCS#11 module cannot be used ({type(exc).__name__})") from None
        digest = _pin_digest(self._module_path, self._token_label, self._pin)
        try:
            login = token.open(user_pin=self._pin)
        except UserAlreadyLoggedIn:
            # Another provider of this process is logged in: its login is ours too,
            # so let this one in only with a PIN the token has accepted here.
            with _accepted_lock:
                known = digest in _accepted
            if not known:
                raise KeyProviderUnavailable(
                    "the PKCS#11 token is logged in by another part of this process "
                    "with another PIN") from None
            login = token.open()
        except (PinIncorrect, PinLenRange):
            raise KeyProviderUnavailable("the PKCS#11 token refused the PIN") from None
        except PKCS11Error as exc:
            raise KeyProviderUnavailable(
                f"the PKCS#11 token cannot be logged in to ({type(exc).__name__})") from None
        with _accepted_lock:
            _accepted.add(digest)
        self._token, self._login = token, login
        return token

    def _find_token(self, lib: Any) -> Any:
        """The token with the URI's label; a slot that fails (a token being pulled
        out) is passed over rather than failing the others."""
        for slot in lib.get_slots(token_present=True):
            try:
                token = slot.get_token()
                if token.label == self._token_label:
                    return token
            except PKCS11Error:
                continue
        raise NoSuchToken

    def _drop(self) -> None:
        """Forget every session (the token failed); the next use reconnects."""
        with _module_lock(self._module_path), self._lock:
            pooled, self._idle = self._idle, []
            login, self._login, self._token = self._login, None, None
        for item in pooled:
            self._close_quietly(item.session)
        if login is not None:
            self._close_quietly(login)

    @staticmethod
    def _close_quietly(session: Any) -> None:
        with suppress(PKCS11Error):
            session.close()

    @contextmanager
    def _session(self) -> Iterator[_Pooled]:
        """A pooled session for one operation, holding the module's lock throughout;
        a PKCS#11 failure drops the pool."""
        with _module_lock(self._module_path), self._session_unlocked() as item:
            yield item

    @contextmanager
    def _session_unlocked(self) -> Iterator[_Pooled]:
        with self._lock:
            token = self._connect()
            item = self._idle.pop() if self._idle else None
            pid = self._pid
        try:
            if item is None:
                item = _Pooled(token.open(rw=True))
            yield item
        except KeyManagementError:
            if item is not None:
                self._give_back(item, pid)
            raise
        except PKCS11Error as exc:
            self._drop()
            if item is not None:
                self._close_quietly(item.session)
            raise KeyProviderUnavailable(
                f"the PKCS#11 token failed ({type(exc).__name__})") from None
        else:
            self._give_back(item, pid)

    def _give_back(self, item: _Pooled, pid: int) -> None:
        with self._lock:
            if pid == self._pid and self._login is not None and len(
                    self._idle) < self._pool_size:
                self._idle.append(item)
                return
        self._close_quietly(item.session)

    # ------------------------------------------------------------------ KEK objects

    def _list_versions(self) -> list[int]:
        with self._session() as item:
            found = []
            for obj in item.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                 Attribute.LABEL: self._label}):
                ident = bytes(obj[Attribute.ID])
                if len(ident) == 4:
                    found.append(struct.unpack(">I", ident)[0])
        versions = sorted(set(found))
        with self._lock:
            self._versions = versions
            self._listed_at = time.monotonic()
        return versions

    def _generate(self, version: int) -> Any:
        with self._session() as item:
            return item.session.generate_key(
                KeyType.AES, 256, label=self._label, id=_version_id(version), store=True,
                template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                    Attribute.SIGN: False,
                    Attribute.VERIFY: False,
                    Attribute.DERIVE: False,
                    Attribute.MODIFIABLE: False,
                })

    def _key(self, item: _Pooled, version: int) -> Any:
        key = item.keys.get(version)
        if key is None:
            found = list(item.session.get_objects({
                Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self._label,
                Attribute.ID: _version_id(version)}))
            if len(found) != 1:
                raise KeyManagementError(f"KEK version {version} is not available (retired?)")
            key = item.keys[version] = found[0]
        return key

    def key_attributes(self, version: int) -> dict[str, bool]:
        """The KEK object's security attributes (no value: it cannot be read)."""
        names = {"sensitive": Attribute.SENSITIVE, "extractable": Attribute.EXTRACTABLE,
                 "always_sensitive": Attribute.ALWAYS_SENSITIVE,
                 "never_extractable": Attribute.NEVER_EXTRACTABLE, "token": Attribute.TOKEN,
                 "local": Attribute.LOCAL}
        with self._session() as item:
            key = self._key(item, version)
            return {name: bool(key[attr]) for name, attr in names.items()}

    # ------------------------------------------------------------------ KeyProvider

    def describe(self) -> str:
        return self._uri

    def kek_versions(self) -> list[int]:
        return list(self._fresh_versions())

    def _fresh_versions(self) -> list[int]:
        with self._lock:
            stale = time.monotonic() - self._listed_at > REFRESH_SECONDS or not self._versions
            versions = self._versions
        return self._list_versions() if stale else versions

    def wrap_many(self, deks: Sequence[bytes], *,
                  contexts: Sequence[KeyContext] | None = None) -> list[tuple[int, bytes]]:
        """Wrap several data keys under the current KEK with one session."""
        contexts = self.batch_contexts(deks, contexts)
        version = self.current_kek_version()
        out = []
        with self._session() as item:
            key = self._key(item, version)
            for dek, context in zip(deks, contexts, strict=True):
                nonce = secrets.token_bytes(_NONCE)
                sealed = key.encrypt(dek, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(
                    nonce, context.associated_data(version), 128))
                out.append((version, bytes([_WRAP_FORMAT]) + nonce + bytes(sealed)))
        return out

    def unwrap(self, version: int, wrapped: bytes, *,
               context: KeyContext | None = None) -> bytes:
        if context is None:
            raise KeyManagementError("the PKCS#11 provider unwraps only with a key context")
        if len(wrapped) != _WRAPPED or wrapped[0] != _WRAP_FORMAT:
            raise KeyManagementError("a wrapped data key failed its integrity check")
        if version not in self._versions:
            self._list_versions()  # perhaps made by another host's rotation
        nonce, sealed = wrapped[1:1 + _NONCE], wrapped[1 + _NONCE:]
        with self._session() as item:
            key = self._key(item, version)
            try:
                dek = key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(
                    nonce, context.associated_data(version), 128))
            except _INTEGRITY:
                raise KeyManagementError(
                    "a wrapped data key failed its integrity check") from None
        if len(dek) != _DEK:
            raise KeyManagementError("a wrapped data key failed its integrity check")
        return bytes(dek)

    def rotate(self) -> int:
        versions = self._list_versions()
        version = (versions[-1] if versions else 0) + 1
        mine = self._generate(version)
        with self._session() as item:
            made = list(item.session.get_objects({
                Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self._label,
                Attribute.ID: _version_id(version)}))
            if len(made) != 1:  # another host rotated at the same moment: keep theirs
                mine.destroy()
                self._list_versions()
                raise KeyManagementError(
                    f"another process created KEK version {version} at the same time; "
                    "run the rotation again")
        self._list_versions()
        return version

    def retire(self, version: int) -> None:
        versions = self._list_versions()
        if version not in versions:
            raise KeyManagementError(f"KEK version {version} does not exist")
        with self._session() as item:
            for obj in item.session.get_objects({
                    Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self._label,
                    Attribute.ID: _version_id(version)}):
                obj.destroy()
        with self._lock:
            for pooled in self._idle:
                pooled.keys.pop(version, None)
        self._list_versions()

    def close(self) -> None:
        """Close every session (logging out); the KEKs stay in the token."""
        self._drop()
