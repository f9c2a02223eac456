"""Reading the policy files in ``policies/`` (TOML), with errors that name the file.

One place for the reading and the error wording, so every policy file fails the
same way: a :class:`~vault.errors.ConfigError` naming the file and the problem
(line and column for bad TOML), never a value from it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from vault.errors import ConfigError

__all__ = ["load_model", "problems", "read_toml"]

M = TypeVar("M", bound=BaseModel)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed contents of the TOML file at ``path``.

    Args:
        what: how error messages call the file, e.g. ``"the purposes file"``.

    Raises:
        ConfigError: the file cannot be read or is not valid TOML.
    """
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message gives line and column, not the offending text.
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def problems(exc: ValidationError, *, most: int = 5) -> str:
    """The first ``most`` validation errors, as ``key.path: message`` (never the input)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)[:most]
    )


def load_model(path: Path, model: type[M], *, what: str, kind: str) -> M:
    """The TOML file at ``path``, validated as ``model``.

    Args:
        what: how read errors call the file, e.g. ``"the purposes file"``.
        kind: how validation errors call its contents, e.g. ``"purposes"``.

    Raises:
        ConfigError: unreadable, not TOML, or invalid (naming the keys).
    """
    raw = read_toml(path, what)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid {kind}: {problems(exc)}") from None
