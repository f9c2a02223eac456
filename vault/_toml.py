"""Reading the policy files in ``policies/`` (TOML), with errors that name the file.

One place for the reading and the error wording, so every policy file fails the
same way: a :class:`~vault.errors.ConfigError` naming the file and the problem
(line and column for bad TOML), never a value from it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from vault.errors import ConfigError

__all__ = ["read_toml"]


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
