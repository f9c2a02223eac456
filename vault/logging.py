"""Logging helpers: Vault logs through structlog and never configures it.

Two tools keep personal data out of logs:

* :class:`Sensitive` wraps a value so that ``str()``/``repr()`` show ``[secure]``;
  the value is reachable only through :meth:`Sensitive.reveal`.
* :class:`RedactingProcessor` is a structlog processor for the application's
  own pipeline (put it before the renderer): it masks event keys that name
  secrets or personal data, and any :class:`Sensitive` value.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Generic, TypeVar

__all__ = ["REDACTED", "RedactingProcessor", "Sensitive"]

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
