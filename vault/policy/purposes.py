"""The purposes of processing: every access to personal data names one.

Purposes are data, kept in ``policies/purposes.toml``::

    [purposes.account_management]
    description = "Run the customer's account."

Each purpose names its lawful basis per regime (``lawful_basis``, with a
``default`` for regimes not named) and whether it may run while a subject's
processing is restricted (``restricted_use``). A purpose id is not personal
data, so errors may name it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from vault._toml import load_model
from vault.errors import ConfigError, UnknownPurpose
from vault.types import Registry

__all__ = ["LawfulBasis", "Purpose", "PurposeRegistry", "load_purposes"]

PurposeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
RegimeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class LawfulBasis(StrEnum):
    """The legal ground a purpose rests on in one regime."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"
    NOTICE = "notice"


class Purpose(BaseModel):
    """One purpose of processing.

    Attributes:
        name: the id callers pass as ``purpose=`` (lower-case snake case).
        description: what the data is used for, in plain words.
        lawful_basis: regime name (or ``default``) -> basis.
        restricted_use: whether the purpose may run while a subject's
            processing is restricted (storage, legal claims, requests).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: PurposeName
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    lawful_basis: Mapping[RegimeName, LawfulBasis] = Field(default_factory=dict)
    restricted_use: bool = False

    def basis_in(self, regime: str) -> LawfulBasis:
        """The lawful basis in ``regime``: its own entry, else ``default``, else
        consent (fail closed: an undeclared basis needs the subject's consent)."""
        basis = self.lawful_basis.get(regime) or self.lawful_basis.get("default")
        return basis if basis is not None else LawfulBasis.CONSENT


class _PurposeEntry(BaseModel):
    """One ``[purposes.<name>]`` table as written in the file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    lawful_basis: dict[RegimeName, LawfulBasis] = Field(default_factory=dict)
    restricted_use: bool = False


class _PurposesFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    purposes: dict[PurposeName, _PurposeEntry] = Field(min_length=1)


class PurposeRegistry(Registry[Purpose]):
    """The known purposes, by name. Immutable once built."""

    __slots__ = ()

    def __init__(self, purposes: Iterable[Purpose]) -> None:
        by_name: dict[str, Purpose] = {}
        for purpose in purposes:
            if purpose.name in by_name:
                raise ConfigError(f"purpose {purpose.name!r} is defined twice")
            by_name[purpose.name] = purpose
        super().__init__(by_name)

    def get(self, name: str) -> Purpose:
        """Return the purpose called ``name``.

        Raises:
            UnknownPurpose: no such purpose is registered.
        """
        purpose = self._items.get(name) if isinstance(name, str) else None
        if purpose is None:
            shown = repr(name) if isinstance(name, str) and _is_id(name) else "given"
            raise UnknownPurpose(f"the {shown} purpose is not registered; registered "
                                 f"purposes: {', '.join(sorted(self._items))}",
                                 field="purpose")
        return purpose

    @property
    def names(self) -> frozenset[str]:
        """Every registered purpose name."""
        return frozenset(self._items)

    def __repr__(self) -> str:
        return f"PurposeRegistry({sorted(self._items)!r})"


def _is_id(name: str) -> bool:
    # Only echo names that look like ids, so that a value pasted into the
    # wrong argument never ends up in an error message.
    return len(name) <= 64 and name.replace("_", "").isalnum() and name.isascii()


def load_purposes(path: Path) -> PurposeRegistry:
    """Read the purposes from a TOML file.

    Args:
        path: the file, usually ``policies/purposes.toml``.

    Returns:
        The registry of the purposes the file declares.

    Raises:
        ConfigError: the file is missing, is not TOML, or a table is malformed;
            the message names the file and the offending key, never a value.
    """
    parsed = load_model(path, _PurposesFile, what="the purposes file", kind="purposes")
    return PurposeRegistry(
        [
            Purpose(name=name, description=entry.description,
                    lawful_basis=entry.lawful_basis, restricted_use=entry.restricted_use)
            for name, entry in parsed.purposes.items()
        ]
    )
