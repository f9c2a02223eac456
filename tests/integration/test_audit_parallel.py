"""Verification in worker processes agrees with the serial walk, on both
backends: the same entries, chains and heads on an untouched log, the same
findings on a log damaged in several parts at once, and the CLI's --workers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from vault import Vault, VaultSettings
from vault.audit import log as audit_log_module
from vault.audit import parallel
from vault.audit.chain import AuditEvent, Decision, VerifyReport
from vault.cli import app

from ..helpers import disable_triggers

pytestmark = pytest.mark.skipif(not parallel.can_fork(), reason="needs fork (Linux)")


@pytest.fixture
def big(settings: VaultSettings) -> Iterator[Vault]:
    """16 subject chains with 40 entries each on average, written in 4 batches."""
    vault = Vault.init(settings=settings)
    for _ in range(4):
        events = [AuditEvent(tenant="acme", actor="crm", action="read", decision=Decision.ALLOW,
                             collection="customers", record_ids=(secrets.token_hex(16),),
                             subjects=(secrets.token_hex(16),), fields=("email",),
                             purpose="account_management") for _ in range(160)]
        with vault.engine.begin() as conn:
            vault.audit_log.append(conn, events)
    try:
        yield vault
    finally:
        vault.close()


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many parts each parallel walk used."""
    used: list[int] = []
    real = audit_log_module.run_parts

    def spy(task: Any, bounds: Any, **kwargs: Any) -> VerifyReport:
        used.append(len(bounds))
        return real(task, bounds, **kwargs)

    monkeypatch.setattr(audit_log_module, "run_parts", spy)
    return used


def summary(report: VerifyReport) -> tuple[Any, ...]:
    return (report.ok, report.entries, report.chains, report.heads,
            [(f.kind, f.chain, f.position, f.seq) for f in report.findings])


def test_workers_agree_with_the_serial_walk(big: Vault, parts: list[int]) -> None:
    serial = big.audit_log.verify(workers=1)
    assert serial.ok and serial.entries == 642 and serial.chains == 17  # + init, baseline
    seen: list[tuple[int, int]] = []
    for workers in (2, 3, 5):
        report = big.audit_log.verify(workers=workers,
                                      progress=lambda done, total: seen.append((done, total)))
        assert summary(report) == summary(serial)
    assert parts == [2, 3, 5]
    assert seen[-1] == (642, 642)
    assert all(done <= total for done, total in seen)


def test_damage_in_several_parts_is_found_by_each_worker(big: Vault, parts: list[int]) -> None:
    engine = big.engine
    disable_triggers(engine)
    with engine.begin() as conn:
        # one modified entry low in chain 2, one deleted in chain 15, a stray chain 99
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' "
                          "WHERE chain = 2 AND chain_seq = 3"))
        conn.execute(text("DELETE FROM audit_log WHERE chain = 15 AND chain_seq = 2"))
        conn.execute(text("UPDATE audit_log SET chain = 99 WHERE chain = 9 AND chain_seq = "
                          "(SELECT MAX(chain_seq) FROM audit_log WHERE chain = 9)"))
    serial = big.audit_log.verify(workers=1)
    parallel_report = big.audit_log.verify(workers=2)
    assert parts == [2]
    assert summary(parallel_report) == summary(serial)
    found = {(f.kind.value, f.chain) for f in serial.findings}
    assert {("modified_entry", 2), ("deleted_entry", 15)} <= found
    assert any(chain == 99 for _kind, chain in found), found


def test_cli_verify_with_workers(settings: VaultSettings, tmp_path: Path) -> None:
    with Vault.init(settings=settings) as vault:
        url = vault.settings.resolved_database_url
        with vault.engine.begin() as conn:
            vault.audit_log.append(conn, [
                AuditEvent(tenant="acme", actor="crm", action="read", decision=Decision.ALLOW,
                           subjects=(secrets.token_hex(16),)) for _ in range(50)])
    runner = CliRunner()
    for workers in ("1", "2"):
        result = runner.invoke(app, ["audit", "verify", "--database-url", url,
                                     "--workers", workers])
        assert result.exit_code == 0, result.output
        assert "audit log verified: 52 entries" in result.output  # + init, baseline
    bad = runner.invoke(app, ["audit", "verify", "--database-url", url, "--workers", "0"])
    assert bad.exit_code == 2
