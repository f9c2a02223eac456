"""Tables of the policy in the data database.

``casbin_rule`` holds the Casbin rules one per row (the layout Casbin adapters
share); ``policy_state`` holds a single row whose ``version`` goes up with
every change, so that each process can tell cheaply whether its loaded policy
is stale.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from vault.store.base import Base, BigIntPK, UTCDateTime, bigint_pk

__all__ = ["POLICY_STATE_ID", "CasbinRule", "PolicyChangeRow", "PolicyState"]

#: The id of the only row of ``policy_state``.
POLICY_STATE_ID = 1


class CasbinRule(Base):
    """One Casbin rule: ``ptype`` is ``p`` or ``g``, ``v0``..``v5`` its values."""

    __tablename__ = "casbin_rule"

    id: Mapped[bigint_pk]
    ptype: Mapped[str] = mapped_column(String(8))
    v0: Mapped[str | None] = mapped_column(String(255), default="")
    v1: Mapped[str | None] = mapped_column(String(255), default="")
    v2: Mapped[str | None] = mapped_column(String(255), default="")
    v3: Mapped[str | None] = mapped_column(String(255), default="")
    v4: Mapped[str | None] = mapped_column(String(255), default="")
    v5: Mapped[str | None] = mapped_column(String(255), default="")

    def __repr__(self) -> str:
        # Grouping rules name users; keep them out of reprs and tracebacks.
        return f"CasbinRule(id={self.id!r}, ptype={self.ptype!r})"


class PolicyState(Base):
    """The version of the stored policy (a single row, ``id = 1``)."""

    __tablename__ = "policy_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigIntPK)  # as migration 0008: INTEGER on SQLite
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class PolicyChangeRow(Base):
    """A change of a rule that grants a data action, waiting for a second
    administrator (``state`` pending, then approved or rejected; never deleted)."""

    __tablename__ = "policy_changes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    op: Mapped[str] = mapped_column(String(8))
    role: Mapped[str] = mapped_column(String(255))
    tenant: Mapped[str] = mapped_column(String(255))
    obj: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(255))
    effect: Mapped[str] = mapped_column(String(8))
    requested_by: Mapped[str] = mapped_column(String(128))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16))
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
