"""Verification by an auditor who holds no secret: only the data database URL
(read access suffices), the checkpoint folder and the published public key."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import make_url, select
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from vault.audit.chain import VerifyReport
from vault.audit.checkpoint import load_public_key
from vault.audit.log import AuditLog
from vault.clock import SystemClock
from vault.errors import ConfigError
from vault.store.engine import make_engine, read_only
from vault.store.models import Meta

__all__ = ["verify_database"]


def verify_database(
    database_url: str,
    *,
    checkpoints: str | os.PathLike[str] | None = None,
    public_key: bytes | str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Verify a vault's audit log (and signed checkpoints) with no key file.

    Nothing is written: an auditor may use a read-only database role.
    ``workers`` as for :meth:`vault.audit.log.AuditLog.verify`.

    Raises:
        ConfigError: the database is not a vault, or checkpoints come without a key.
    """
    if checkpoints is not None and public_key is None:
        raise ConfigError("checking checkpoints needs the public key (--public-key FILE)")
    key = None
    if public_key is not None:
        source = public_key if isinstance(public_key, bytes) else Path(os.fspath(public_key))
        key = load_public_key(source)
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigError("the database URL is not a valid SQLAlchemy URL") from None
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(str(file)).is_file():
        raise ConfigError("no data database at the given SQLite path")  # else one is created
    engine = make_engine(database_url)
    try:
        try:
            with read_only(engine) as conn:
                meta = {r.key: r.value for r in conn.execute(select(Meta.key, Meta.value))}
        except SQLAlchemyError:
            raise ConfigError("the database cannot be read as a vault data database") from None
        if "audit_chains" not in meta:
            raise ConfigError("the database is not an initialised vault")
        log = AuditLog(engine, chains=int(meta["audit_chains"]), clock=SystemClock())
        return log.verify(progress=progress,
                          checkpoints=Path(checkpoints) if checkpoints is not None else None,
                          public_key=key,
                          vault_id=meta.get("vault_id") or meta.get("created_at"),
                          workers=workers)
    finally:
        engine.dispose()
