"""KEKs in AWS KMS, through boto3 (tested against moto's KMS emulation, not AWS itself).

Region, credentials and endpoint come from boto3's standard configuration
(``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``, profiles,
instance and task roles); nothing of it is in Vault's settings.

Versions. With an **alias** (``aws-kms:alias/vault-kek`` or an alias ARN)
each KEK version N is its own symmetric KMS key, named by the alias
``alias/vault-kek/vN``; ``alias/vault-kek`` points at the current one. Vault's
rotation creates a new key and its alias, so every host sees it at its next
look at the aliases (at most every :data:`REFRESH_SECONDS`). With a **fixed
key** (a key ARN or id) there is one version (tagged ``vault:kek-version``);
rotate it with KMS's own automatic rotation, which is transparent because a
KMS ciphertext names its backing key: Vault's ``keys rotate`` refuses.

Wrapping. New data keys come from ``GenerateDataKey``; rewraps use
``Encrypt``; unwraps ``Decrypt`` naming the version's key. Each call carries an
encryption context binding vault id, tenant, subject and KEK version
(:class:`KeyContext`): a wrapped key put in another subject's row does not
decrypt. KMS has no batch call, so batches run on a small thread pool; the
data-key cache keeps KMS off the hot path of repeated reads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from vault.crypto.keys import ContextBoundWrapping, KeyContext
from vault.errors import ConfigError, KeyManagementError, KeyProviderUnavailable

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = ["AwsKmsKeyProvider"]

#: How long the list of KEK versions is trusted before a wrap looks again.
REFRESH_SECONDS = 5.0
_VERSION_TAG = "vault:kek-version"
_INTEGRITY_CODES = {"InvalidCiphertextException", "IncorrectKeyException"}
_WORKERS = 8
T = TypeVar("T")


def _client() -> KMSClient:
    try:
        return boto3.session.Session().client("kms", config=Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=2, read_timeout=10))
    except NoRegionError:
        raise ConfigError("aws-kms: no AWS region configured (set AWS_REGION)") from None


class AwsKmsKeyProvider(ContextBoundWrapping):
    """KEKs as AWS KMS keys; data keys generated and wrapped by KMS under an
    encryption context.

    Misuse: any principal allowed ``kms:Decrypt`` on these keys (with the
    matching encryption context) can unwrap every data key; grant it to the
    service's role only, and require the context keys in the key policy.
    """

    kind = "aws-kms"
    label = "KMS"
    no_kek = "the KMS alias names no KEK version"

    def __init__(self, key_id: str, *, uri: str) -> None:
        self._key_id = key_id
        self._uri = uri
        self._alias = self._alias_of(key_id)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._kms: KMSClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._keys: dict[int, str] = {}  # version -> key id (or alias) to call
        self._listed_at = 0.0

    def __repr__(self) -> str:
        return f"AwsKmsKeyProvider(uri={self._uri!r}, keks={sorted(self._keys)})"

    @staticmethod
    def _alias_of(key_id: str) -> str | None:
        if key_id.startswith("alias/"):
            return key_id
        if key_id.startswith("arn:") and ":alias/" in key_id:
            return "alias/" + key_id.split(":alias/", 1)[1]
        return None

    # ------------------------------------------------------------------ plumbing

    def _client(self) -> KMSClient:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: never share the parent's pool
                self._pid, self._kms, self._pool = os.getpid(), None, None
            if self._kms is None:
                self._kms = _client()
            return self._kms

    def _call(self, fn: Callable[[KMSClient], T]) -> T:
        """Run one KMS call, translating its failures (never their text)."""
        try:
            return fn(self._client())
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _INTEGRITY_CODES:
                raise KeyManagementError(
                    "a wrapped data key failed its integrity check") from None
            if code == "NotFoundException":
                raise KeyManagementError("the KMS key or alias does not exist") from None
            raise KeyProviderUnavailable(f"AWS KMS refused the call ({code or 'error'})"
                                         ) from None
        except BotoCoreError as exc:
            raise KeyProviderUnavailable(
                f"AWS KMS cannot be reached ({type(exc).__name__})") from None

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=_WORKERS,
                                                thread_name_prefix="vault-kms")
            pool = self._pool
        return list(pool.map(fn, items))

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, key_id: str, *, uri: str, create: bool = False,
             first_version: int = 1) -> AwsKmsKeyProvider:
        """Find the KEK versions (creating version ``first_version`` when ``create``
        and there is none).

        Raises:
            KeyProviderUnavailable: KMS cannot be reached or refuses.
            KeyManagementError: no such key or alias and ``create`` is false.
        """
        provider = cls(key_id, uri=uri)
        if not provider._list_versions():
            if not create:
                raise KeyManagementError("the KMS alias names no KEK version; run "
                                         "`vault init --key-provider URI` to create one")
            provider._create_version(first_version)
            provider._list_versions()
        return provider

    def _list_versions(self) -> dict[int, str]:
        if self._alias is None:
            tags = self._call(lambda kms: kms.list_resource_tags(KeyId=self._key_id))
            version = next((int(t["TagValue"]) for t in tags.get("Tags", [])
                            if t["TagKey"] == _VERSION_TAG and t["TagValue"].isdigit()), 1)
            found = {version: self._key_id}
        else:
            prefix = self._alias + "/v"
            found = {}

            def aliases(kms: KMSClient) -> list[Any]:
                out: list[Any] = []
                for page in kms.get_paginator("list_aliases").paginate():
                    out.extend(page.get("Aliases", []))
                return out

            for alias in self._call(aliases):
                name = alias.get("AliasName", "")
                if name.startswith(prefix) and name[len(prefix):].isdigit():
                    found[int(name[len(prefix):])] = name
        with self._lock:
            self._keys = found
            self._listed_at = time.monotonic()
        return found

    def _create_version(self, version: int) -> None:
        if self._alias is None:
            self._call(lambda kms: kms.tag_resource(KeyId=self._key_id, Tags=[
                {"TagKey": _VERSION_TAG, "TagValue": str(version)}]))
            return
        base = self._alias

        def target_of_base(kms: KMSClient) -> str | None:
            for page in kms.get_paginator("list_aliases").paginate():
                for alias in page.get("Aliases", []):
                    if alias.get("AliasName") == base:
                        return alias.get("TargetKeyId")
            return None

        existing = self._call(target_of_base)
        if existing is not None and version == 1 and not self._keys:
            key = existing  # an operator's key behind the alias becomes version 1
        else:
            key = self._call(lambda kms: kms.create_key(
                Description=f"Vault KEK {base} v{version}", KeyUsage="ENCRYPT_DECRYPT",
                KeySpec="SYMMETRIC_DEFAULT",
                Tags=[{"TagKey": _VERSION_TAG, "TagValue": str(version)}]))["KeyMetadata"]["KeyId"]
        self._call(lambda kms: kms.create_alias(AliasName=f"{base}/v{version}", TargetKeyId=key))
        if existing is None:
            self._call(lambda kms: kms.create_alias(AliasName=base, TargetKeyId=key))
        else:
            self._call(lambda kms: kms.update_alias(AliasName=base, TargetKeyId=key))

    def _fresh(self) -> dict[int, str]:
        with self._lock:
            stale = time.monotonic() - self._listed_at > REFRESH_SECONDS or not self._keys
            keys = self._keys
        return self._list_versions() if stale else keys

    # ------------------------------------------------------------------ KeyProvider

    def describe(self) -> str:
        return self._uri

    def kek_versions(self) -> list[int]:
        return sorted(self._fresh())

    def _key_for(self, version: int) -> str:
        key = self._keys.get(version)
        if key is None:
            key = self._list_versions().get(version)
        if key is None:
            raise KeyManagementError(f"KEK version {version} is not available (retired?)")
        return key

    def wrap_many(self, deks: Sequence[bytes], *,
                  contexts: Sequence[KeyContext] | None = None) -> list[tuple[int, bytes]]:
        """``Encrypt`` each data key under the current KEK (in parallel for a batch)."""
        contexts = self.batch_contexts(deks, contexts)
        version = self.current_kek_version()
        key = self._key_for(version)

        def one(pair: tuple[bytes, KeyContext]) -> tuple[int, bytes]:
            dek, context = pair
            blob = self._call(lambda kms: kms.encrypt(
                KeyId=key, Plaintext=dek,
                EncryptionContext=context.encryption_context(version)))["CiphertextBlob"]
            return version, bytes(blob)

        return self._map(one, list(zip(deks, contexts, strict=True)))

    def generate_many(self, contexts: Sequence[KeyContext]) -> list[tuple[bytes, int, bytes]]:
        """New data keys from ``GenerateDataKey``: (material, version, wrapped) each."""
        version = self.current_kek_version()
        key = self._key_for(version)

        def one(context: KeyContext) -> tuple[bytes, int, bytes]:
            made = self._call(lambda kms: kms.generate_data_key(
                KeyId=key, KeySpec="AES_256",
                EncryptionContext=context.encryption_context(version)))
            plain = bytes(made["Plaintext"])
            if len(plain) != 32:
                raise KeyManagementError("AWS KMS returned a data key of the wrong size")
            return plain, version, bytes(made["CiphertextBlob"])

        return self._map(one, list(contexts))

    def unwrap(self, version: int, wrapped: bytes, *,
               context: KeyContext | None = None) -> bytes:
        if context is None:
            raise KeyManagementError("the KMS provider unwraps only with a key context")
        return self.unwrap_many([(version, wrapped, context)])[0]

    def unwrap_many(self, items: Sequence[tuple[int, bytes, KeyContext]]) -> list[bytes]:
        """``Decrypt`` several wrapped keys (in parallel), naming each version's key."""

        def one(item: tuple[int, bytes, KeyContext]) -> bytes:
            version, wrapped, context = item
            key = self._key_for(version)
            plain = bytes(self._call(lambda kms: kms.decrypt(
                CiphertextBlob=wrapped, KeyId=key,
                EncryptionContext=context.encryption_context(version)))["Plaintext"])
            if len(plain) != 32:
                raise KeyManagementError("a wrapped data key failed its integrity check")
            return plain

        return self._map(one, list(items))

    def rotate(self) -> int:
        if self._alias is None:
            raise KeyManagementError(
                "this vault uses a fixed KMS key: enable KMS automatic key rotation "
                "(transparent to Vault), or name an alias so that Vault can rotate")
        keys = self._list_versions()
        version = max(keys, default=0) + 1
        self._create_version(version)
        self._list_versions()
        return version

    def retire(self, version: int) -> None:
        """Delete version ``version``'s alias and schedule its KMS key for deletion
        (30 days, KMS's longest window: ``CancelKeyDeletion`` undoes a mistake)."""
        keys = self._list_versions()
        if version not in keys:
            raise KeyManagementError(f"KEK version {version} does not exist")
        if self._alias is None:
            raise KeyManagementError("a fixed KMS key is retired in KMS, not by Vault")
        alias = keys[version]
        target = self._call(lambda kms: kms.describe_key(KeyId=alias))["KeyMetadata"]["KeyId"]
        self._call(lambda kms: kms.delete_alias(AliasName=alias))
        self._call(lambda kms: kms.schedule_key_deletion(KeyId=target, PendingWindowInDays=30))
        self._list_versions()

    def close(self) -> None:
        with self._lock:
            pool, self._pool, self._kms = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=False)
