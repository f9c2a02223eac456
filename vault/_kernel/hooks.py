"""The effects one service has on another, as small protocols the facade wires.

Services never import each other. When a write in one must change the state
another keeps (a record inserted needs its retention expiry; a withdrawn
consent under PIPL queues deletion), the first calls a hook inside its own
transaction, and the facade passes the service that implements it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection

from vault.schema import CollectionSchema
from vault.types import Actor

__all__ = ["ConsentHooks", "RecordHooks", "SubjectHooks"]


class RecordHooks(Protocol):
    """What the data path tells others, inside its write transaction."""

    def records_inserted(self, conn: Connection, tenant: str, schema: CollectionSchema,
                         record_rows: Sequence[Mapping[str, Any]],
                         values: Sequence[Mapping[str, Any]], new_subjects: Iterable[str],
                         jurisdiction: str | None) -> None:
        """Records were inserted (``record_rows``: id, subject_id, created_at; ``values``:
        their validated fields); ``new_subjects`` were created with ``jurisdiction``."""

    def records_updated(self, conn: Connection, tenant: str,
                        record_ids: Sequence[str]) -> None:
        """Fields of these records came or went."""


class SubjectHooks(Protocol):
    """What a change to a subject tells others, inside its transaction."""

    def subject_changed(self, conn: Connection, tenant: str, subject_id: str) -> None:
        """The subject's jurisdiction changed (another regime may apply)."""


class ConsentHooks(Protocol):
    """What the consent ledger tells others, inside the transaction of the events."""

    def consent_withdrawn(self, conn: Connection, tenant: str, subject_id: str, purpose: str,
                          at: dt.datetime, actor: Actor | None) -> None:
        """A withdrawal ended a consent under a profile with ``erase_on_withdrawal``
        (PIPL Art. 47(1)(3)): the data held only on consent must go."""

    def consent_regranted(self, conn: Connection, tenant: str, subject_id: str, purpose: str,
                          actor: Actor | None) -> None:
        """A grant gave back every consent that an earlier withdrawal ended."""
