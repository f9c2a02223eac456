"""The purposes of processing: every access to personal data names one.

Purposes are data, kept in ``policies/purposes.toml``::

    [purposes.account_management]
    description = "Run the customer's account."

A purpose id is not personal data, so errors may name it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from vault.errors import ConfigError, UnknownPurpose

__all__ = ["Purpose", "PurposeRegistry", "load_purposes"]

PurposeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class Purpose(BaseModel):
    """One purpose of processing.

    Attributes:
        name: the id callers pass as ``purpose=`` (lower-case snake case).
        description: what the data is used for, in plain words.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: PurposeName
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _PurposeEntry(BaseModel):
    """One ``[purposes.<name>]`` table as written in the file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _PurposesFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    purposes: dict[PurposeName, _PurposeEntry] = Field(min_length=1)


class PurposeRegistry:
    """The known purposes, by name. Immutable once built."""

    __slots__ = ("_purposes",)

    def __init__(self, purposes: Iterable[Purpose]) -> None:
        by_name: dict[str, Purpose] = {}
        for purpose in purposes:
            if purpose.name in by_name:
                raise ConfigError(f"purpose {purpose.name!r} is defined twice")
            by_name[purpose.name] = purpose
        self._purposes: Mapping[str, Purpose] = MappingProxyType(by_name)

    def get(self, name: str) -> Purpose:
        """Return the purpose called ``name``.

        Raises:
            UnknownPurpose: no such purpose is registered.
        """
        purpose = self._purposes.get(name) if isinstance(name, str) else None
        if purpose is None:
            shown = repr(name) if isinstance(name, str) and _is_id(name) else "given"
            raise UnknownPurpose(f"the {shown} purpose is not registered", field="purpose")
        return purpose

    @property
    def names(self) -> frozenset[str]:
        """Every registered purpose name."""
        return frozenset(self._purposes)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._purposes

    def __iter__(self) -> Iterator[Purpose]:
        return iter(self._purposes.values())

    def __len__(self) -> int:
        return len(self._purposes)

    def __repr__(self) -> str:
        return f"PurposeRegistry({sorted(self._purposes)!r})"


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
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the purposes file ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message gives line and column, not the offending text.
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        parsed = _PurposesFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"{path}: invalid purposes: {problems}") from None
    return PurposeRegistry(
        [
            Purpose(name=name, description=entry.description)
            for name, entry in parsed.purposes.items()
        ]
    )
