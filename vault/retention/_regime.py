"""The regime names a retention schedule may use.

Which regime a subject's jurisdiction falls under is decided in one place,
the jurisdiction profiles (:meth:`vault.jurisdiction.JurisdictionRegistry.regime_for`,
reached as ``Vault.jurisdictions``); the retention code receives that
function and never keeps a mapping of its own.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["DEFAULT_REGIME", "REGIMES", "RegimeOf"]

DEFAULT_REGIME = "default"

#: Regimes a retention schedule may name (the profiles in ``policies/jurisdictions.toml``).
REGIMES = frozenset({"ccpa", "default", "gdpr", "pipl"})

#: Maps a subject's jurisdiction code (or None) to its regime.
RegimeOf = Callable[[str | None], str]
