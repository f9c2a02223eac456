"""Configuration changes: detected when a process opens the vault, and audited.

Settings (:class:`~vault.config.VaultSettings`, frozen) and the policies folder
are given when a vault is opened, so a configuration change happens between
two opens. Each open computes :func:`config_items` (item name -> SHA-256 of the
item) and compares their combined digest with the newest row of the
append-only ``config_snapshots`` table (:func:`record_config`): no row yet
writes a snapshot and a ``config.baseline`` audit entry; a different digest
writes a snapshot and a ``config.change`` entry naming the items added,
removed or changed; the same digest writes nothing. A snapshot counts only if
its entry vouches for it: each row records the position of its ``config.*``
entry in the administrative chain, and the entry's reason names the row's
digest. A row inserted by hand (the application role may INSERT) is ignored,
so hiding a change would take an audit entry that records it.

Only item names and digests are stored or logged, never a value: a database
URL has its password removed before it is hashed. (The other settings are
small numbers and names, not secrets: anyone who can read the snapshot table
can recover them from their digests by trial, as they could read the settings.)

Items:

- ``setting:<name>`` for every :class:`~vault.config.VaultSettings` field
  except those in :data:`NOT_ITEMS` (new fields are covered without a change
  here); the locations are hashed in their resolved form
  (``setting:database_url``, ``setting:keystore_url`` without password,
  ``setting:key_file`` and ``setting:policies`` as absolute paths;
  ``setting:key_provider`` only when set; never ``pkcs11_pin``).
- ``policies:<relative path>`` for every file an open loads from the
  policies folder: :data:`POLICY_FILES` and ``collections/*.toml``.
  ``policy.csv`` is not one: it is loaded only by ``Vault.init`` as the
  default policy; after that the database is the source of truth, and changes
  to it are audited as ``policy.*`` entries.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, and_, func, insert, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from vault.audit.chain import ADMIN_CHAIN, AuditEvent, Decision
from vault.audit.log import AuditLog
from vault.config import VaultSettings
from vault.errors import AuditError
from vault.logging import get_logger
from vault.store.engine import is_postgres, is_sqlite, read_only
from vault.store.models import AuditEntryRow, AuditHead, ConfigSnapshotRow
from vault.store.retry import transaction_attempts

__all__ = ["BASELINE", "CHANGE", "NOT_ITEMS", "POLICY_FILES", "changed_items", "combined_digest",
           "config_items", "record_config"]

log = get_logger(__name__)

BASELINE = "config.baseline"
CHANGE = "config.change"

#: Settings that are not items: ``home`` only places the default locations,
#: which are items in their resolved form; ``audit_chains`` is fixed at init
#: (an initialised vault reads it from ``vault_meta``, so changing the setting
#: has no effect).
#: ``pkcs11_pin`` is a secret: never hashed (a short PIN falls to trial at once).
NOT_ITEMS = frozenset({"home", "audit_chains", "pkcs11_pin"})
# ``key_provider`` is an item only when set (a URI without secret, a PIN in it is
# refused), so a vault on the key file sees no change when the setting appears.
_LOCATIONS = ("database_url", "keystore_url", "key_file", "policies", "key_provider")

#: The files an open loads from the policies folder, besides ``collections/*.toml``.
POLICY_FILES = ("model.conf", "purposes.toml", "jurisdictions.toml", "notices.toml",
                "retention.toml", "recipients.toml")

# Any constant: the key of the PostgreSQL advisory lock that serialises the
# openers that found a different configuration (no privilege needed).
_PG_LOCK_KEY = 0x7661756C74636667  # "vaultcfg"

_SNAPSHOTS = cast(Table, ConfigSnapshotRow.__table__)
_ENTRIES = cast(Table, AuditEntryRow.__table__)
_HEADS = cast(Table, AuditHead.__table__)
# The newest snapshot that its audit entry vouches for: the config.* entry at its
# position in the administrative chain, whose reason names its digest. A row
# inserted by hand (the app role may INSERT) without such an entry is ignored, so
# hiding a change takes an audit entry that records it. Snapshots are few.
_VOUCHED = (
    select(_SNAPSHOTS.c.digest, _SNAPSHOTS.c["items"])
    .join(_ENTRIES, and_(_ENTRIES.c.chain == ADMIN_CHAIN,
                         _ENTRIES.c.chain_seq == _SNAPSHOTS.c.audit_position))
    .where(_ENTRIES.c.action.in_((BASELINE, CHANGE)),
           _ENTRIES.c.reason.startswith("cfg:"),
           func.substr(_ENTRIES.c.reason, 5) == func.substr(_SNAPSHOTS.c.digest, 1, 60))
    .order_by(_SNAPSHOTS.c.audit_position.desc(), _SNAPSHOTS.c.id.desc())
    .limit(1))
_NEWEST_DIGEST = _VOUCHED.with_only_columns(_SNAPSHOTS.c.digest)
_ADMIN_LENGTH = select(_HEADS.c.length).where(_HEADS.c.chain == ADMIN_CHAIN)


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def _without_password(url: str) -> str:
    """``url`` with its password (in the authority, or any query parameter whose
    name contains "password", such as libpq's ``sslpassword``) removed."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "unparseable-url"  # the engine refused it already; never hash it as is
    # Built anew: URL.set(password=None) would keep the password.
    bare = URL.create(parsed.drivername, username=parsed.username, host=parsed.host,
                      port=parsed.port, database=parsed.database,
                      query={k: v for k, v in parsed.query.items()
                             if "password" not in k.lower()})  # sslpassword too
    return bare.render_as_string(hide_password=False)


def config_items(settings: VaultSettings, policies_dir: Path) -> dict[str, str]:
    """Item name -> SHA-256 hex of the configuration an open uses (see the module doc)."""
    items: dict[str, str] = {}
    for name in sorted(type(settings).model_fields):
        if name in NOT_ITEMS or name in _LOCATIONS:
            continue
        value: Any = getattr(settings, name)
        items[f"setting:{name}"] = _sha256(json.dumps(value, default=str))
    items["setting:database_url"] = _sha256(_without_password(settings.resolved_database_url))
    items["setting:keystore_url"] = _sha256(_without_password(settings.resolved_keystore_url))
    items["setting:key_file"] = _sha256(str(settings.resolved_key_file.resolve()))
    if settings.key_provider:
        items["setting:key_provider"] = _sha256(settings.key_provider)
    folder = Path(policies_dir).resolve()
    items["setting:policies"] = _sha256(str(folder))
    files = [folder / n for n in POLICY_FILES]
    files += sorted((folder / "collections").glob("*.toml"))
    for path in files:
        if path.is_file():
            items[f"policies:{path.relative_to(folder).as_posix()}"] = _sha256(path.read_bytes())
    return dict(sorted(items.items()))


def combined_digest(items: Mapping[str, str]) -> str:
    """One SHA-256 over the sorted items (name and digest of each)."""
    return _sha256("".join(f"{name}\t{digest}\n" for name, digest in sorted(items.items())))


def changed_items(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The sorted names of the items added, removed or changed from ``before`` to ``after``."""
    return sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))


def _previous(conn: Connection) -> tuple[str, dict[str, str]] | None:
    row = conn.execute(_VOUCHED).first()
    if row is None:
        return None
    digest, stored = row
    try:
        items = json.loads(stored)
    except ValueError:
        items = {}
    if not isinstance(items, dict):
        items = {}
    return str(digest), {str(k): str(v) for k, v in items.items()}


def record_config(engine: Engine, audit: AuditLog, items: Mapping[str, str], *,
                  now: dt.datetime) -> str | None:
    """Snapshot ``items`` and audit it if they differ from the newest snapshot.

    When nothing changed this costs one small query. Otherwise, in one
    transaction that serialises concurrent openers (SQLite's ``BEGIN
    IMMEDIATE``; a PostgreSQL advisory transaction lock), the newest snapshot
    is read again and, if it still differs, a snapshot and its audit entry are
    written: so two processes opening after the same change write one entry.

    Returns:
        The action written (``config.baseline`` or ``config.change``), or None.

    Raises:
        AuditError: the snapshot or its audit entry could not be written
            (the vault must not be opened: fail closed).
    """
    digest = combined_digest(items)
    try:
        with read_only(engine) as conn:
            newest = conn.execute(_NEWEST_DIGEST).scalar()
        if newest == digest:
            return None
        for attempt in transaction_attempts():
            with attempt, engine.begin() as conn:
                written = _write(conn, audit, items, digest, now)
    except AuditError:
        raise
    except SQLAlchemyError as exc:
        log.error("config_snapshot_failed", error_type=type(exc).__name__)
        raise AuditError("the configuration snapshot could not be written") from None
    if written is None:
        return None
    action, names = written
    log.info("config_recorded", action=action, items=names, digest=digest[:16])
    return action


def _write(conn: Connection, audit: AuditLog, items: Mapping[str, str], digest: str,
           now: dt.datetime) -> tuple[str, list[str]] | None:
    if is_postgres(conn.engine):
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif not is_sqlite(conn.engine):  # pragma: no cover - only the two backends are supported
        raise AuditError("configuration snapshots need SQLite or PostgreSQL")
    previous = _previous(conn)
    if previous is not None and previous[0] == digest:
        return None  # another opener recorded the same configuration first
    names = changed_items(previous[1] if previous else {}, items)
    action = BASELINE if previous is None else CHANGE
    audit.append(conn, [AuditEvent(
        tenant="*", actor="system", action=action, decision=Decision.ALLOW,
        fields=tuple(names), reason=f"cfg:{digest[:60]}")])
    # The entry just appended is the administrative chain's last (its head row
    # stays locked until this transaction ends).
    position = conn.execute(_ADMIN_LENGTH).scalar_one()
    conn.execute(insert(_SNAPSHOTS), {
        "recorded_at": now, "digest": digest,
        "items": json.dumps(dict(sorted(items.items())), separators=(",", ":")),
        "audit_position": int(position)})
    return action, names
