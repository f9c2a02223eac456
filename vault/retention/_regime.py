"""Which retention regime a subject's jurisdiction falls under.

One function, so that the jurisdiction profiles (``JurisdictionRegistry``)
can replace it in one place. Codes are those of ``Vault.put(jurisdiction=)``:
``EU``, an ISO 3166-1 alpha-2 country, or a subdivision such as ``US-CA``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_REGIME", "REGIMES", "regime_for"]

DEFAULT_REGIME = "default"

#: Regimes a retention schedule may name.
REGIMES = frozenset({"ccpa", "default", "gdpr", "pipl"})

# EU member states and the EEA (Iceland, Liechtenstein, Norway), where the GDPR applies.
_GDPR = frozenset({
    "EU", "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR",
    "HU", "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
    "IS", "LI", "NO",
})


def regime_for(jurisdiction: str | None) -> str:
    """The regime (``gdpr``, ``ccpa``, ``pipl`` or ``default``) of a jurisdiction code.

    An unknown or missing jurisdiction gets the ``default`` rules.
    """
    if not jurisdiction:
        return DEFAULT_REGIME
    code = jurisdiction.upper()
    if code in _GDPR:
        return "gdpr"
    if code == "US-CA":
        return "ccpa"
    if code == "CN":
        return "pipl"
    return DEFAULT_REGIME
