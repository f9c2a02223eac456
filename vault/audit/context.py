"""Correlation ids and call context: every audit entry carries the id of the request
it belongs to and, where a caller sets one, the context of the machinery around it
(the credential, the second factor: keys of ``vault.audit.chain.CONTEXT_KEYS``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType

__all__ = ["audit_context", "correlation_id", "current_context", "current_request_id",
           "new_request_id"]

_REQUEST_ID: ContextVar[str | None] = ContextVar("vault_request_id", default=None)
_EMPTY: Mapping[str, str | int | bool] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, str | int | bool]] = ContextVar("vault_audit_context",
                                                                   default=_EMPTY)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str:
    """The caller's correlation id if one is set, else a fresh one."""
    return _REQUEST_ID.get() or new_request_id()


@contextlib.contextmanager
def correlation_id(request_id: str | None = None) -> Iterator[str]:
    """Tag every audit entry written inside the block with ``request_id``.

    The gateway wraps each HTTP request in this; library users may wrap a unit
    of work so that its entries can be found together in reports.
    """
    rid = request_id or new_request_id()
    if len(rid) > 64:
        raise ValueError("correlation ids are at most 64 characters")
    token = _REQUEST_ID.set(rid)
    try:
        yield rid
    finally:
        _REQUEST_ID.reset(token)


def current_context() -> Mapping[str, str | int | bool]:
    """The audit context set by the enclosing :func:`audit_context` blocks."""
    return _CONTEXT.get()


@contextlib.contextmanager
def audit_context(**values: str | int | bool | None) -> Iterator[None]:
    """Add ``values`` (None values are left out) to the context of every audit entry
    written inside the block, on top of an enclosing block's.

    The gateway sets ``credential_id``, ``on_behalf_of``, ``factor`` and ``factor_at``.
    An entry's own context wins over the block's for the same key. Keys outside
    ``CONTEXT_KEYS`` make the audit write fail (closed), so check them in tests.

    Misuse: the context is hashed into the entry: never put personal data of a
    data subject in it, only ids of the machinery.
    """
    merged = {**_CONTEXT.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _CONTEXT.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _CONTEXT.reset(token)
