"""Correlation ids: every audit entry carries the id of the request it belongs to."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["correlation_id", "current_request_id", "new_request_id"]

_REQUEST_ID: ContextVar[str | None] = ContextVar("vault_request_id", default=None)


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
