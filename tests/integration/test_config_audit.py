"""Configuration changes are audited: detected when a process opens the vault.

A snapshot of the configuration (item name -> SHA-256) is kept in the
append-only ``config_snapshots`` table; ``Vault.init`` writes the first
(``config.baseline``) and every open that finds a different one writes
``config.change`` naming exactly the items that differ, never a value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import event, text
from sqlalchemy.exc import SQLAlchemyError
from structlog.testing import capture_logs

from vault import AuditError, Vault, VaultSettings
from vault.audit import config as config_audit
from vault.audit.config import (
    NOT_ITEMS,
    changed_items,
    combined_digest,
    config_items,
    record_config,
)
from vault.audit.log import AuditLog
from vault.store import migrate
from vault.store.engine import make_engine

from ..conftest import PG_URL, POLICIES, PgSchemas

ALL_SETTINGS = {
    "audit_chains", "blind_index_bytes", "dek_cache_size", "policy_refresh_seconds",
    "sqlite_synchronous", "report_usual_share", "report_usual_min_accesses",
    "report_burst_reads", "report_burst_minutes",
    "search_miss_limit", "search_miss_window_seconds",  # audited: they change who may search
    "home", "database_url", "keystore_url", "key_file", "policies", "destroyed_check_seconds",
    "key_provider", "pkcs11_pin",
    "dsar_export_retention_days", "dsar_keystore_backup_days", "dsar_request_log_months",
    "step_up", "step_up_max_age_seconds",  # audited: turning step-up off is a change
}


def _config_entries(v: Vault) -> list[dict[str, Any]]:
    with v.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT actor, tenant, action, decision, fields, reason, subjects, record_ids, "
            "purpose, collection FROM audit_log WHERE action LIKE 'config.%' ORDER BY seq"))
        return [dict(r._mapping) | {"fields": json.loads(r.fields)} for r in rows]


def _snapshots(v: Vault) -> list[tuple[str, dict[str, str]]]:
    with v.engine.connect() as conn:
        return [(str(d), json.loads(i)) for d, i in conn.execute(
            text("SELECT digest, items FROM config_snapshots ORDER BY id"))]


def _changes(v: Vault) -> list[list[str]]:
    return [e["fields"] for e in _config_entries(v) if e["action"] == "config.change"]


@pytest.fixture(autouse=True)
def _default_structlog() -> Iterator[None]:
    """structlog as the library leaves it (a CLI test may have configured a WARNING filter,
    which would hide the info events these tests capture)."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


@pytest.fixture
def own_policies(settings: VaultSettings, tmp_path: Path) -> VaultSettings:
    """The settings with a copy of the bundled policies folder, free to edit."""
    folder = tmp_path / "policies"
    shutil.copytree(POLICIES, folder)
    return settings.model_copy(update={"policies": folder})


# ---------------------------------------------------------------- items


def test_items_cover_every_setting_and_the_files_an_open_loads(
        sqlite_settings: VaultSettings) -> None:
    """Each setting is an item unless named in NOT_ITEMS (so a new setting is audited
    without anyone remembering to); policy.csv is not loaded by open, so not an item."""
    assert set(VaultSettings.model_fields) == ALL_SETTINGS  # a new setting: decide here
    items = config_items(sqlite_settings, POLICIES)
    settings_items = {n.removeprefix("setting:") for n in items if n.startswith("setting:")}
    # key_provider is an item only when set: a vault on the key file sees no change.
    assert settings_items == ALL_SETTINGS - NOT_ITEMS - {"key_provider"}
    assert {"home", "audit_chains", "pkcs11_pin"} == NOT_ITEMS
    on_hsm = sqlite_settings.model_copy(update={
        "key_provider": "pkcs11:token=t;object=o?module-path=/m.so",
        "pkcs11_pin": SecretStr("1234")})
    hsm_items = config_items(on_hsm, POLICIES)
    assert "setting:key_provider" in hsm_items and "setting:pkcs11_pin" not in hsm_items
    assert hashlib.sha256(b"1234").hexdigest() not in hsm_items.values()
    files = {n.removeprefix("policies:") for n in items if n.startswith("policies:")}
    assert files == {"model.conf", "purposes.toml", "jurisdictions.toml", "notices.toml",
                     "retention.toml", "recipients.toml", "collections/customers.toml"}
    assert items["policies:retention.toml"] == hashlib.sha256(
        (POLICIES / "retention.toml").read_bytes()).hexdigest()
    assert list(items) == sorted(items)


def test_url_passwords_are_removed_before_hashing(sqlite_settings: VaultSettings) -> None:
    """A password in the authority or in the query is not part of the item, so a
    rotated database password is no configuration change; host and database are."""
    def item(url: str) -> str:
        s = sqlite_settings.model_copy(update={"database_url": url})
        return config_items(s, POLICIES)["setting:database_url"]

    bare = item("postgresql://app@db.example:5432/crm")
    assert bare == hashlib.sha256(b"postgresql://app@db.example:5432/crm").hexdigest()
    assert item("postgresql://app:s3cret@db.example:5432/crm") == bare
    assert item("postgresql://app:other@db.example:5432/crm") == bare
    assert item("postgresql://app@db.example:5432/crm?password=s3cret") == bare
    assert item("postgresql://app@db.example:5432/crm?PASSWORD=s3cret") == bare
    assert item("postgresql://app@db.example:5432/crm?sslpassword=keypass") == bare
    assert item("postgresql://app@db.example:5432/other") != bare
    assert item("postgresql://app@db2.example:5432/crm") != bare


def test_changed_items_and_digest() -> None:
    before = {"a": "1", "b": "2", "c": "3"}
    after = {"a": "1", "b": "9", "d": "4"}
    assert changed_items(before, after) == ["b", "c", "d"]
    assert changed_items(after, after) == []
    assert combined_digest(before) == combined_digest(dict(reversed(before.items())))
    assert combined_digest(before) != combined_digest(after)
    # Name and digest are both bound: moving a digest to another name is a change.
    assert combined_digest({"a": "1", "b": "2"}) != combined_digest({"a": "2", "b": "1"})


# ---------------------------------------------------------------- init and open


def test_init_writes_one_baseline_and_an_unchanged_open_nothing(settings: VaultSettings) -> None:
    with Vault.init(settings=settings) as v:
        items = config_items(settings, settings.resolved_policies)
        digest = combined_digest(items)
        entries = _config_entries(v)
        assert entries == [{
            "actor": "system", "tenant": "*", "action": "config.baseline", "decision": "allow",
            "fields": sorted(items), "reason": f"cfg:{digest[:60]}", "subjects": "[]",
            "record_ids": "[]", "purpose": None, "collection": None}]
        assert _snapshots(v) == [(digest, items)]
    for _ in range(3):
        with Vault.open(settings=settings) as v:
            assert len(_config_entries(v)) == 1
            assert len(_snapshots(v)) == 1
            assert v.audit_log.verify().ok


def test_an_unchanged_configuration_costs_one_query_and_no_lock(settings: VaultSettings) -> None:
    """Vaults are opened often: with nothing changed, one SELECT, no write lock taken."""
    with Vault.init(settings=settings) as v:
        items = config_items(settings, settings.resolved_policies)
        seen: list[str] = []

        def spy(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            seen.append(statement)

        event.listen(v.engine, "before_cursor_execute", spy)
        try:
            assert record_config(v.engine, v.audit_log, items, now=v.clock.now()) is None
        finally:
            event.remove(v.engine, "before_cursor_execute", spy)
        work = [s for s in seen if s.strip().upper() not in ("BEGIN", "ROLLBACK")]
        assert len(work) == 1 and "config_snapshots" in work[0], seen
        assert not any("IMMEDIATE" in s or "advisory" in s for s in seen), seen


def test_a_changed_setting_is_one_change_naming_it(settings: VaultSettings) -> None:
    """A raised burst threshold hides bursts from compliance officers: it is audited,
    once, naming only that setting; changing it back is a change again."""
    Vault.init(settings=settings).close()
    raised = settings.model_copy(update={"report_burst_reads": 10_000})
    for _ in range(2):
        with Vault.open(settings=raised) as v:
            assert _changes(v) == [["setting:report_burst_reads"]]
    with Vault.open(settings=settings) as v:
        assert _changes(v) == [["setting:report_burst_reads"]] * 2
        snaps = _snapshots(v)
        assert snaps[0][0] == snaps[2][0]  # back to the baseline's digest
        assert snaps[1][0] == combined_digest(config_items(raised, raised.resolved_policies))
        assert _config_entries(v)[-1]["reason"] == f"cfg:{snaps[2][0][:60]}"
        assert v.audit_log.verify().ok


def test_a_hand_inserted_snapshot_does_not_hide_a_change(settings: VaultSettings) -> None:
    """The app role may INSERT into config_snapshots. A row with the new
    configuration's digest, inserted by hand before the changed open (pointing at
    no entry, at an older config entry, or at the newest entry with another digest)
    is vouched for by no config.* entry, so the open still records the change."""
    Vault.init(settings=settings).close()
    raised = settings.model_copy(update={"report_burst_reads": 10_000})
    new_digest = combined_digest(config_items(raised, raised.resolved_policies))
    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.begin() as conn:
            baseline_at = conn.execute(text(
                "SELECT chain_seq FROM audit_log WHERE action = 'config.baseline'")).scalar_one()
            for forged_at in (999_999, baseline_at, 0):
                conn.execute(text(
                    "INSERT INTO config_snapshots (recorded_at, digest, items, audit_position) "
                    "VALUES (:t, :d, '{}', :p)"),
                    {"t": dt.datetime(2030, 1, 1), "d": new_digest, "p": forged_at})
    finally:
        engine.dispose()
    with Vault.open(settings=raised) as v:
        assert _changes(v) == [["setting:report_burst_reads"]]
        assert _config_entries(v)[-1]["reason"] == f"cfg:{new_digest[:60]}"
        assert v.audit_log.verify().ok
    with Vault.open(settings=raised) as v:  # now vouched for: nothing more
        assert len(_changes(v)) == 1


def test_an_edited_policies_file_is_one_change_naming_it(own_policies: VaultSettings) -> None:
    settings = own_policies
    folder = settings.resolved_policies
    Vault.init(settings=settings).close()
    retention = folder / "retention.toml"
    original = retention.read_bytes()
    retention.write_bytes(original + b"\n# shortened by someone\n")
    with Vault.open(settings=settings) as v:
        assert _changes(v) == [["policies:retention.toml"]]
    collection = folder / "collections" / "customers.toml"
    collection.write_bytes(collection.read_bytes() + b"\n# edited\n")
    retention.write_bytes(original)
    with Vault.open(settings=settings) as v:
        assert _changes(v)[-1] == ["policies:collections/customers.toml",
                                   "policies:retention.toml"]
    (folder / "policy.csv").write_text("p, nobody, *, *, *, *, allow\n")  # read at init only
    with Vault.open(settings=settings) as v:
        assert len(_changes(v)) == 2
        assert v.audit_log.verify().ok


def test_concurrent_openers_after_a_change_write_one_entry(
        settings: VaultSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six openers with separate engines all find the old snapshot (they are held
    together after that first read, so every one of them goes on to write): one
    snapshot, one entry."""
    Vault.init(settings=settings).close()
    changed = settings.model_copy(update={"report_burst_minutes": 60})
    openers = 6
    after_first_read = threading.Barrier(openers)
    real_attempts = config_audit.transaction_attempts

    def held_attempts(*args: Any, **kwargs: Any) -> Iterator[Any]:
        after_first_read.wait(timeout=20)  # nobody holds a lock here
        yield from real_attempts(*args, **kwargs)

    monkeypatch.setattr(config_audit, "transaction_attempts", held_attempts)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Vault.open(settings=changed).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(openers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    monkeypatch.undo()
    with Vault.open(settings=changed) as v:
        assert _changes(v) == [["setting:report_burst_minutes"]]
        assert len(_snapshots(v)) == 2
        assert v.audit_log.verify().ok


def test_open_fails_closed_when_the_entry_cannot_be_written(
        settings: VaultSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """No entry, no open; and no snapshot either, so the next open records the change."""
    Vault.init(settings=settings).close()
    changed = settings.model_copy(update={"dek_cache_size": 5})

    def broken(self: AuditLog, conn: Any, events: Any) -> None:
        raise AuditError("the audit entry could not be written")

    with monkeypatch.context() as patch:
        patch.setattr(AuditLog, "append", broken)
        with pytest.raises(AuditError):
            Vault.open(settings=changed)
    with Vault.open(settings=changed) as v:
        assert _changes(v) == [["setting:dek_cache_size"]]
        assert len(_snapshots(v)) == 2


def test_snapshots_are_append_only(settings: VaultSettings) -> None:
    with Vault.init(settings=settings) as v:
        before = _snapshots(v)
        statements = ["UPDATE config_snapshots SET digest = 'x'", "DELETE FROM config_snapshots"]
        if not v.is_embedded:
            statements.append("TRUNCATE config_snapshots")
        for statement in statements:
            with pytest.raises(SQLAlchemyError, match="append-only"), v.engine.begin() as conn:
                conn.execute(text(statement))
        assert _snapshots(v) == before
        if not v.is_embedded:
            with v.engine.connect() as conn:
                enabled = dict(conn.execute(text(
                    "SELECT tgname, tgenabled FROM pg_trigger "
                    "WHERE tgrelid = 'config_snapshots'::regclass AND NOT tgisinternal")).all())
            assert enabled == {"config_snapshots_no_update_delete": "A",
                               "config_snapshots_no_truncate": "A"}


def test_the_entries_show_in_the_privileged_report(settings: VaultSettings) -> None:
    Vault.init(settings=settings).close()
    with Vault.open(settings=settings.model_copy(update={"report_burst_reads": 7})) as v:
        rows = [r for r in v.audit.report("privileged").rows
                if str(r["action"]).startswith("config.")]
        assert [(r["action"], r["actor"], r["tenant"]) for r in rows] == [
            ("config.baseline", "system", "*"), ("config.change", "system", "*")]
        assert rows[1]["fields"] == "setting:report_burst_reads"
        assert str(rows[1]["reason"]).startswith("cfg:")


@pytest.mark.postgres
def test_the_database_password_is_never_kept_or_logged(pg_schemas: PgSchemas,
                                                        tmp_path: Path) -> None:
    """The test server trusts local connections, so any password opens it: a changed
    password alone is no configuration change, and no password reaches the snapshot,
    the audit log or the logs."""
    assert "@" in PG_URL and ":" not in PG_URL.split("//", 1)[1].split("@", 1)[0]

    def with_password(url: str, password: str) -> str:
        return url.replace("//postgres@", f"//postgres:{password}@", 1)

    def settings_with(password: str) -> VaultSettings:
        return VaultSettings.build(
            home=tmp_path / "v", policies=POLICIES,
            database_url=with_password(pg_schemas.url(pg_schemas.names[0]), password),
            keystore_url=with_password(pg_schemas.url(pg_schemas.names[1]), password))

    first, second = "Pw-Canary-4711", "Pw-Canary-0815"
    with capture_logs() as logs:
        Vault.init(settings=settings_with(first)).close()
        with Vault.open(settings=settings_with(second)) as v:
            assert _changes(v) == []
            with v.engine.connect() as conn:
                dumped = repr(conn.execute(text("SELECT * FROM config_snapshots")).all())
                dumped += repr(conn.execute(text("SELECT * FROM audit_log")).all())
            items = _snapshots(v)[0][1]
    bare = VaultSettings.build(home=tmp_path / "v", policies=POLICIES,
                               database_url=pg_schemas.url(pg_schemas.names[0]),
                               keystore_url=pg_schemas.url(pg_schemas.names[1]))
    assert items == config_items(bare, POLICIES)  # hashed as if there were no password
    assert any(e["event"] == "config_recorded" for e in logs)  # the capture works
    for canary in (first, second):
        assert canary not in dumped and canary not in repr(logs)


# ---------------------------------------------------------------- upgrade


@pytest.fixture
def at_0004(settings: VaultSettings) -> VaultSettings:
    with Vault.init(settings=settings) as v:
        migrate.downgrade(v.engine, "0004")  # what the previous release left behind
        with v.engine.connect() as conn:
            assert not conn.dialect.has_table(conn, "config_snapshots")
    return settings


def test_upgrade_adds_the_snapshots_and_records_a_baseline(at_0004: VaultSettings) -> None:
    """The vault.init baseline stays in the log; the first open after the upgrade writes
    a new baseline, since the snapshot table is new."""
    with Vault.upgrade(settings=at_0004) as v:
        assert migrate.current_revision(v.engine) == migrate.head_revision()
        assert [e["action"] for e in _config_entries(v)] == ["config.baseline"] * 2
        assert len(_snapshots(v)) == 1
        with pytest.raises(SQLAlchemyError, match="append-only"), v.engine.begin() as conn:
            conn.execute(text("DELETE FROM config_snapshots"))
        assert v.audit_log.verify().ok
    with Vault.open(settings=at_0004) as v:
        assert len(_config_entries(v)) == 2


def test_the_snapshot_module_names_only_items(settings: VaultSettings) -> None:
    """The log event names the items and a digest prefix, nothing else."""
    Vault.init(settings=settings).close()
    with capture_logs() as logs:
        Vault.open(settings=settings.model_copy(update={"blind_index_bytes": 16})).close()
    events = [e for e in logs if e["event"] == "config_recorded"]
    assert events == [{"event": "config_recorded", "log_level": "info",
                       "action": config_audit.CHANGE, "items": ["setting:blind_index_bytes"],
                       "digest": events[0]["digest"]}]
    assert len(events[0]["digest"]) == 16
