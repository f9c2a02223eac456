"""Keyed pseudonyms: how the audit log names data subjects without PII.

The pseudonym is HMAC-SHA256 over (tenant, subject id) under a key from the
key file. It is stable, so every access to a subject can be found in the log,
and it cannot be reversed or recomputed without the key. Erasing a subject
never needs to touch the log.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac

from vault.crypto._encoding import length_prefixed
from vault.errors import ConfigError

__all__ = ["Pseudonymizer"]

_LABEL = b"vault/pseudonym/v1"
_CACHE_SIZE = 100_000


class Pseudonymizer:
    """Turns (tenant, subject id) into a 32-hex-digit pseudonym."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ConfigError("the pseudonym key must be at least 32 bytes")
        self._key = key
        # Keyed once; each pseudonym is computed on a copy (same MAC, no re-keying).
        self._keyed = hmac.HMAC(key, hashes.SHA256())
        # Pseudonyms are deterministic: batched reads and writes ask for the
        # same subjects again and again. Bounded, and cleared when full.
        self._cache: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return "Pseudonymizer(key=[secret])"

    def pseudonym(self, tenant: str, subject_id: str) -> str:
        cached = self._cache.get((tenant, subject_id))
        if cached is not None:
            return cached
        mac = self._keyed.copy()
        mac.update(length_prefixed(_LABEL, tenant, subject_id))
        value = mac.finalize()[:16].hex()
        if len(self._cache) >= _CACHE_SIZE:
            self._cache = {}
        self._cache[(tenant, subject_id)] = value
        return value
