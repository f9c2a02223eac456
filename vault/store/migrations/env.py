"""Alembic environment: Vault runs migrations programmatically on a given connection."""

from __future__ import annotations

from alembic import context

import vault.consent.tables  # registers the consent tables on Base.metadata
import vault.retention.tables  # registers the retention tables on Base.metadata
import vault.store.models  # noqa: F401  (registers the tables on Base.metadata)
from vault.store.base import Base

config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
