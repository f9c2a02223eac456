"""Several key providers seen as one: the configured provider and those a migration
recorded in the key store.

KEK versions are unique across the providers of a vault (a migration's new
provider starts above the old one's versions), so a data key's version names
its provider: :class:`ProviderChain` unwraps with the provider that owns the
version and wraps with the provider that owns the highest version, the
current one. A migration adds its new provider with versions above all
others, so from then on every process that knows it wraps there; the old
provider keeps unwrapping the keys not yet rewrapped. That is what makes a
migration online.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from vault.crypto.keys import KeyContext, KeyProvider
from vault.errors import KeyManagementError

__all__ = ["ProviderChain"]


class ProviderChain:
    """The configured provider first, then the others (a migration's source or target)."""

    def __init__(self, configured: KeyProvider, others: Sequence[KeyProvider] = ()) -> None:
        self._lock = threading.Lock()
        self._providers: list[KeyProvider] = [configured]
        for other in others:
            self.add(other)

    def __repr__(self) -> str:
        return f"ProviderChain({', '.join(p.describe() for p in self.providers())})"

    @property
    def configured(self) -> KeyProvider:
        """The provider the settings name."""
        return self._providers[0]

    @property
    def kind(self) -> str:
        return self.writer().kind

    def describe(self) -> str:
        return self.writer().describe()

    def providers(self) -> list[KeyProvider]:
        with self._lock:
            return list(self._providers)

    def uris(self) -> set[str]:
        return {p.describe() for p in self.providers()}

    def add(self, provider: KeyProvider) -> None:
        """Add a provider (ignored when one with the same URI is there already).

        Raises:
            KeyManagementError: its KEK versions overlap another provider's.
        """
        with self._lock:
            if any(p.describe() == provider.describe() for p in self._providers):
                return
            theirs = set(provider.kek_versions())
            for p in self._providers:
                if theirs & set(p.kek_versions()):
                    raise KeyManagementError(
                        "two key providers hold the same KEK version numbers")
            self._providers.append(provider)

    def owner(self, version: int) -> KeyProvider | None:
        """The provider that holds KEK ``version``, if any."""
        providers = self.providers()
        if len(providers) == 1:  # the usual case: no migration ever
            return providers[0] if version in providers[0].kek_versions() else None
        for provider in providers:
            if version in provider.kek_versions():
                return provider
        return None

    def writer(self) -> KeyProvider:
        """The provider of the current (highest) KEK version."""
        providers = self.providers()
        if len(providers) == 1:
            return providers[0]
        best: tuple[int, KeyProvider] | None = None
        for provider in providers:
            versions = provider.kek_versions()
            if versions and (best is None or versions[-1] > best[0]):
                best = (versions[-1], provider)
        if best is None:
            raise KeyManagementError("no key provider holds a KEK")
        return best[1]

    def _owner(self, version: int) -> KeyProvider:
        owner = self.owner(version)
        if owner is None:
            raise KeyManagementError(f"KEK version {version} is not available (retired?)")
        return owner

    # ------------------------------------------------------------------ KeyProvider

    def current_kek_version(self) -> int:
        return self.writer().current_kek_version()

    def kek_versions(self) -> list[int]:
        return sorted({v for p in self.providers() for v in p.kek_versions()})

    def wrap(self, dek: bytes, *, context: KeyContext | None = None) -> tuple[int, bytes]:
        return self.writer().wrap(dek, context=context)

    def wrap_many(self, deks: Sequence[bytes], *,
                  contexts: Sequence[KeyContext] | None = None) -> list[tuple[int, bytes]]:
        writer = self.writer()
        many = getattr(writer, "wrap_many", None)
        if many is not None:
            result: list[tuple[int, bytes]] = many(deks, contexts=contexts)
            return result
        ctx: Sequence[KeyContext | None] = contexts if contexts is not None else [None] * len(
            deks)
        return [writer.wrap(d, context=c) for d, c in zip(deks, ctx, strict=True)]

    def generate_many(self, contexts: Sequence[KeyContext]
                      ) -> list[tuple[bytes, int, bytes]] | None:
        """New data keys made by the writer itself (KMS ``GenerateDataKey``), or None
        when it does not make them."""
        many = getattr(self.writer(), "generate_many", None)
        if many is None:
            return None
        result: list[tuple[bytes, int, bytes]] = many(contexts)
        return result

    def unwrap(self, version: int, wrapped: bytes, *,
               context: KeyContext | None = None) -> bytes:
        return self._owner(version).unwrap(version, wrapped, context=context)

    def unwrap_many(self, items: Sequence[tuple[int, bytes, KeyContext]]) -> list[bytes]:
        """Unwrap several keys, each batch of one provider in one call where it can."""
        out: list[bytes | None] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        owners: dict[int, KeyProvider] = {}
        for i, (version, _, _) in enumerate(items):
            owner = self._owner(version)
            owners[id(owner)] = owner
            groups.setdefault(id(owner), []).append(i)
        for key, positions in groups.items():
            owner = owners[key]
            many = getattr(owner, "unwrap_many", None)
            chunk = [items[i] for i in positions]
            if many is not None:
                done: list[bytes] = many(chunk)
            else:
                done = [owner.unwrap(v, w, context=c) for v, w, c in chunk]
            for i, material in zip(positions, done, strict=True):
                out[i] = material
        return [m for m in out if m is not None]

    def rotate(self) -> int:
        return self.writer().rotate()

    def retire(self, version: int) -> None:
        self._owner(version).retire(version)

    def close(self) -> None:
        for provider in self.providers():
            provider.close()
