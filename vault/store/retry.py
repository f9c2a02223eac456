"""Bounded retry of transactions that lost a race.

Appending to the audit log locks the chain heads it touches (``SELECT ... FOR
UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so writers queue
instead of forking a chain. What can still happen under load is a deadlock or
serialisation failure on PostgreSQL, a busy timeout on SQLite, or the
(chain, prev_hash) uniqueness backstop firing. Those transactions were rolled
back entirely, so running them again is safe. Usage::

    for attempt in transaction_attempts():
        with attempt, engine.begin() as conn:
            ...
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from types import TracebackType

from sqlalchemy.exc import DBAPIError

from vault.errors import AuditError
from vault.logging import get_logger

__all__ = ["is_retryable", "transaction_attempts"]

log = get_logger(__name__)

_RETRY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_AUDIT_CONSTRAINTS = ("audit_log", "audit_heads")


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost race that a fresh transaction may win (also when
    the audit log reported it as an :class:`~vault.errors.AuditError`)."""
    if isinstance(exc, AuditError):
        return exc.retryable
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _RETRY_SQLSTATES:
        return True
    if sqlstate == "23505":  # unique_violation: retry only the audit backstop
        diag = getattr(orig, "diag", None)
        constraint = getattr(diag, "constraint_name", None) or ""
        return any(name in constraint for name in _AUDIT_CONSTRAINTS)
    message = str(orig)
    if "database is locked" in message or "database table is locked" in message:
        return True
    return message.startswith("UNIQUE constraint failed: audit_log.")


class _Attempt:
    def __init__(self, number: int, last: bool) -> None:
        self.number = number
        self.last = last
        self.failed = False

    def __enter__(self) -> _Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or self.last or not is_retryable(exc):
            return False
        self.failed = True
        log.info("transaction_retry", attempt=self.number, error_type=type(exc).__name__)
        return True


def transaction_attempts(max_attempts: int = 5, base_delay: float = 0.005) -> Iterator[_Attempt]:
    """Yield up to ``max_attempts`` attempts, with jittered exponential back-off."""
    for number in range(1, max_attempts + 1):
        attempt = _Attempt(number, number == max_attempts)
        yield attempt
        if not attempt.failed:
            return
        time.sleep(base_delay * (2 ** (number - 1)) * (0.5 + random.random()))
