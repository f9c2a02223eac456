"""Blind indexes: keyed HMACs of normalised values for equality search.

Each (tenant, collection, field) gets its own HMAC-SHA256 key, derived with
HKDF-SHA256 from the vault's index root key, so equal values in different
fields or tenants produce unrelated tokens.

Leakage, by design: equal values in one field produce equal tokens, so anyone
who reads the blind_index table learns which records share a value (and how
many records share it), though not the value. Truncating tokens
(``blind_index_bytes`` below 32) adds deliberate collisions, which hides some
of that at the cost of false candidates; ``Vault.find`` re-checks every
candidate against the decrypted value, so results stay exact.
"""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.crypto._encoding import length_prefixed
from vault.errors import ConfigError

__all__ = ["VERIFY_PREFIX", "BlindIndexer", "verification_field"]

_INFO = b"vault/blind-index/v1"
#: The ``field`` of a verification-only digest in the blind_index table. A schema
#: field name cannot contain ``:``, so ``find`` (which only looks up schema fields
#: marked searchable) can never query these rows, and the HKDF info differs, so
#: their tokens are unrelated to any searchable field's.
VERIFY_PREFIX = "verify:"


def verification_field(name: str) -> str:
    """The blind_index ``field`` under which ``name``'s verification digest is kept."""
    return VERIFY_PREFIX + name


class BlindIndexer:
    """Computes blind-index tokens; per-field keys are derived once and kept."""

    def __init__(self, root_key: bytes, *, truncate_to: int = 32) -> None:
        if len(root_key) < 32:
            raise ConfigError("the blind-index root key must be at least 32 bytes")
        if not 8 <= truncate_to <= 32:
            raise ConfigError("blind_index_bytes must be between 8 and 32")
        self._root = root_key
        self._size = truncate_to
        self._keys: dict[tuple[str, str, str], bytes] = {}
        # A keyed HMAC per field; each token is computed on a copy (no re-keying).
        self._macs: dict[tuple[str, str, str], hmac.HMAC] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BlindIndexer(truncate_to={self._size}, root=[secret])"

    @property
    def size(self) -> int:
        return self._size

    def field_key(self, tenant: str, collection: str, field: str) -> bytes:
        """The HMAC key of one field, derived with HKDF-SHA256."""
        ident = (tenant, collection, field)
        key = self._keys.get(ident)
        if key is not None:
            return key
        with self._lock:
            key = self._keys.get(ident)
            if key is None:
                key = HKDF(
                    algorithm=hashes.SHA256(), length=32, salt=None,
                    info=_INFO + length_prefixed(tenant, collection, field),
                ).derive(self._root)
                self._keys[ident] = key
        return key

    def digest(self, tenant: str, collection: str, field: str, normalized: str) -> bytes:
        """The token of an already normalised value."""
        ident = (tenant, collection, field)
        keyed = self._macs.get(ident)
        if keyed is None:
            keyed = hmac.HMAC(self.field_key(tenant, collection, field), hashes.SHA256())
            self._macs[ident] = keyed
        mac = keyed.copy()
        mac.update(normalized.encode("utf-8"))
        return mac.finalize()[: self._size]
