"""Logging helpers: Vault logs through structlog and never configures it.

Where the logs go is the application's choice, and the library never writes
to stdout (a program's output):

* when the application has configured structlog (``structlog.configure``, or
  ``structlog.testing.capture_logs`` in a test), Vault's events go through the
  application's pipeline, as ``structlog.get_logger(name)`` would;
* otherwise they go to the standard library's ``logging`` under the module's
  name (``vault.audit.log``, ...): with no handler configured Python prints
  WARNING and above on stderr and drops the rest; ``logging.basicConfig`` or a
  handler on the ``vault`` logger sends them wherever the application wants.

Library modules take their logger from :func:`get_logger`, never from
``structlog.get_logger``, whose default (unconfigured) pipeline prints to stdout.

Two tools keep personal data out of logs:

* :class:`Sensitive` wraps a value so that ``str()``/``repr()`` show ``[secure]``;
  the value is reachable only through :meth:`Sensitive.reveal`.
* :class:`RedactingProcessor` is a structlog processor for the application's
  own pipeline (put it before the renderer): it masks event keys that name
  secrets or personal data, and any :class:`Sensitive` value.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Generic, TypeVar

__all__ = ["REDACTED", "RedactingProcessor", "Sensitive", "VaultLogger", "get_logger"]

REDACTED = "[secure]"
T = TypeVar("T")

_DEFAULT_KEYS = frozenset(
    {
        "value", "values", "data", "plaintext", "key", "dek", "kek", "password", "secret",
        "token", "email", "phone", "full_name", "name", "national_id", "address",
        "postal_address", "birth_date", "changes", "equals",
    }
)


class Sensitive(Generic[T]):
    """A value that masks itself in every textual form."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return REDACTED


class RedactingProcessor:
    """structlog processor that masks sensitive keys and :class:`Sensitive` values."""

    def __init__(self, keys: frozenset[str] = _DEFAULT_KEYS) -> None:
        self._keys = keys

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for name, value in list(event_dict.items()):
            if name in self._keys or isinstance(value, Sensitive):
                event_dict[name] = REDACTED
        return event_dict


_REDACT = RedactingProcessor()


class VaultLogger:
    """A library module's logger: the application's structlog pipeline when it has
    one, else the standard library's ``logging`` (stderr at WARNING by default),
    never stdout. Keys are redacted (:class:`RedactingProcessor`) on the
    ``logging`` path; the application's structlog pipeline redacts with its own."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def _emit(self, level: int, method: str, event: str, values: dict[str, Any]) -> None:
        # structlog cannot be configured unless something imported it.
        structlog = sys.modules.get("structlog")
        if structlog is not None and structlog.is_configured():
            getattr(structlog.get_logger(self._name), method)(event, **values)
            return
        std = logging.getLogger(self._name)
        if not std.isEnabledFor(level):
            return
        clean = _REDACT(None, method, dict(values))
        pairs = " ".join(f"{k}={v!r}" for k, v in clean.items())
        std.log(level, "%s%s%s", event, " " if pairs else "", pairs, stacklevel=3)

    def debug(self, event: str, **values: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._emit(logging.INFO, "info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._emit(logging.WARNING, "warning", event, values)

    def error(self, event: str, **values: Any) -> None:
        self._emit(logging.ERROR, "error", event, values)


def get_logger(name: str) -> VaultLogger:
    """The logger of library module ``name`` (see the module docstring)."""
    return VaultLogger(name)
