"""The ``key_provider`` setting: a URI naming where the KEKs live, and the factory.

Accepted forms:

- a path, ``file:`` or ``file:/abs/path``: the local key file (the default;
  ``file:`` alone means the ``key_file`` setting);
- an RFC 7512 PKCS#11 URI, ``pkcs11:token=<label>;object=<label>`` with the
  query attribute ``module-path=<library>`` and optionally
  ``pin-source=file:<path>``; without a pin source the PIN is the
  ``pkcs11_pin`` setting (``VAULT_PKCS11_PIN``). ``pin-value`` is refused: a
  URI is stored and logged (configuration snapshots, ``vault keys status``),
  a PIN must not be;
- ``aws-kms:<key ARN, alias ARN, alias/name or key id>``; region, credentials
  and endpoint come from boto3's standard configuration (``AWS_REGION``,
  ``AWS_ENDPOINT_URL``, profiles, instance roles...).

The PKCS#11 and KMS providers import their client libraries (python-pkcs11,
boto3: the ``hsm`` and ``kms`` extras) only when such a URI is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from vault.crypto.keys import KeyProvider, LocalKeyProvider
from vault.errors import ConfigError, KeyManagementError

__all__ = ["ProviderSpec", "open_provider", "parse_provider_uri"]

_PKCS11_PATH = {"token", "object", "serial", "manufacturer", "model", "type", "id"}
_PKCS11_QUERY = {"module-path", "pin-source", "module-name"}


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A parsed ``key_provider`` URI. ``uri`` holds no secret (a PIN is refused)."""

    kind: str
    uri: str
    path: Path | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    key_id: str | None = None

    def __repr__(self) -> str:
        return f"ProviderSpec(kind={self.kind!r}, uri={self.uri!r})"

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


def parse_provider_uri(value: str | None) -> ProviderSpec:
    """Parse a ``key_provider`` value (None or empty: the local key file).

    Raises:
        ConfigError: not a form Vault knows, or a PKCS#11 URI carrying a PIN.
            The message never quotes the value.
    """
    text = (value or "").strip()
    if not text or text == "file:":
        return ProviderSpec(kind="file", uri="file:")
    if text.startswith("pkcs11:"):
        return _parse_pkcs11(text)
    if text.startswith("aws-kms:"):
        key = text[len("aws-kms:"):]
        if not key or any(c.isspace() for c in key):
            raise ConfigError("key_provider: aws-kms: needs a key ARN, alias or key id")
        return ProviderSpec(kind="aws-kms", uri=text, key_id=key)
    if text.startswith("file:"):
        rest = text[len("file:"):]
        rest = rest[2:] if rest.startswith("//") else rest
        return ProviderSpec(kind="file", uri=f"file:{rest}", path=Path(unquote(rest)))
    if ":" in text.split("/")[0] and not (len(text) > 1 and text[1] == ":"):
        raise ConfigError("key_provider: unknown scheme (use a path, file:, pkcs11: or aws-kms:)")
    return ProviderSpec(kind="file", uri=f"file:{text}", path=Path(text))


def _parse_pkcs11(text: str) -> ProviderSpec:
    body = text[len("pkcs11:"):]
    path_part, _, query = body.partition("?")
    attributes: dict[str, str] = {}
    for item in (p for p in path_part.split(";") if p):
        name, sep, raw = item.partition("=")
        if not sep or name not in _PKCS11_PATH:
            raise ConfigError("key_provider: a pkcs11: path attribute is malformed or unknown")
        attributes[name] = unquote(raw)
    for item in (p for p in query.split("&") if p):
        name, sep, raw = item.partition("=")
        if name == "pin-value":
            raise ConfigError("key_provider: a PIN must not be written in the URI; use "
                              "pin-source=file:<path> or VAULT_PKCS11_PIN")
        if not sep or name not in _PKCS11_QUERY:
            raise ConfigError("key_provider: a pkcs11: query attribute is malformed or unknown")
        attributes[name] = unquote(raw)
    if "token" not in attributes or "object" not in attributes:
        raise ConfigError("key_provider: a pkcs11: URI needs token= and object=")
    if "module-path" not in attributes:
        raise ConfigError("key_provider: a pkcs11: URI needs module-path=<PKCS#11 library>")
    return ProviderSpec(kind="pkcs11", uri=text, attributes=attributes)


def _pin_of(spec: ProviderSpec, pin: str | None) -> str:
    source = spec.attributes.get("pin-source")
    if source is not None:
        where = source[len("file:"):] if source.startswith("file:") else source
        where = where[2:] if where.startswith("//") else where
        try:
            return Path(where).read_text(encoding="utf-8").strip()
        except OSError:
            raise ConfigError("key_provider: the pin-source file cannot be read") from None
    if pin:
        return pin
    raise ConfigError("key_provider: the PKCS#11 PIN is missing: set VAULT_PKCS11_PIN "
                      "or pin-source=file:<path>")


def open_provider(spec: ProviderSpec, *, key_file: Path, create: bool = False,
                  first_version: int = 1, pin: str | None = None) -> KeyProvider:
    """The provider a spec names, its KEK created when ``create`` and none exists yet.

    Args:
        spec: from :func:`parse_provider_uri`.
        key_file: the key file a bare ``file:`` means.
        create: make the KEK (a new key file; a key in the token; a KMS key) if the
            provider has none; otherwise it must exist.
        first_version: the version number of a KEK created now (a migration's new
            provider starts above the old one's versions).
        pin: the PKCS#11 PIN when the URI has no ``pin-source``.

    Raises:
        ConfigError: the URI is incomplete or its client library is not installed.
        KeyManagementError: the provider refuses (KeyProviderUnavailable when it
            cannot be reached).
    """
    if spec.kind == "file":
        path = spec.path or key_file
        if create and not path.exists():
            return LocalKeyProvider.create(path, first_version=first_version)
        return LocalKeyProvider.load(path)
    if spec.kind == "pkcs11":
        try:
            from vault.crypto.pkcs11_provider import PKCS11KeyProvider
        except ImportError:
            raise ConfigError("key_provider pkcs11: needs python-pkcs11 "
                              "(pip install 'vault[hsm]')") from None
        attrs = spec.attributes
        return PKCS11KeyProvider.open(
            module_path=attrs["module-path"], token_label=attrs["token"],
            object_label=attrs["object"], pin=_pin_of(spec, pin), uri=spec.uri,
            create=create, first_version=first_version)
    if spec.kind == "aws-kms":
        try:
            from vault.crypto.aws_kms import AwsKmsKeyProvider
        except ImportError:
            raise ConfigError("key_provider aws-kms: needs boto3 "
                              "(pip install 'vault[kms]')") from None
        assert spec.key_id is not None
        return AwsKmsKeyProvider.open(spec.key_id, uri=spec.uri, create=create,
                                      first_version=first_version)
    raise KeyManagementError("unknown key provider")  # pragma: no cover - parse refuses


def file_uri(path: str | os.PathLike[str]) -> str:
    """The ``file:`` URI of a key file."""
    return f"file:{Path(path).resolve()}"
