"""The HTML audit report opens in a real browser (headless Chromium) without errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vault import Actor, Vault, VaultSettings
from vault.audit.report import render

from .test_data_path import customer

pytestmark = pytest.mark.slow


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    reason = "headless Chromium not installed (Debian package `chromium`)"
    if os.environ.get("VAULT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; VAULT_REQUIRE_BROWSER=1 demands it")
    pytest.skip(reason)


def test_html_report_renders_in_chromium(sqlite_settings: VaultSettings, tmp_path: Path) -> None:
    browser = _chromium()
    with Vault.init(settings=sqlite_settings) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.roles.assign("sam", "support_agent", tenant="acme")
        crm = Actor("crm", "acme")
        ids = [vault.put(crm, "customers", customer(n), purpose="account_management")
               for n in range(4)]
        for rid in ids:
            vault.get(Actor("sam", "acme"), "customers", rid, purpose="customer_support")
        for rid in ids[:2]:
            with pytest.raises(Exception, match="denied"):
                vault.get(Actor("sam", "acme"), "customers", rid, purpose="customer_support",
                          fields=["national_id"])
        rep = vault.audit.report("entries", tenant="acme")
    page = tmp_path / "report.html"
    page.write_text(render(rep, "html"), encoding="utf-8")
    shot = tmp_path / "report.png"
    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", "--no-first-run", "--enable-logging=stderr", "--v=0",
              f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=90, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console_errors = [line for line in dom.stderr.splitlines()
                      if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)]
    assert console_errors == []
    html = dom.stdout
    assert re.search(r'id="total-entries">(\d+)<', html).group(1) == str(rep.total_entries)
    assert re.search(r'id="total-denials">(\d+)<', html).group(1) == "2"
    assert html.count("<svg") == 2
    assert html.count("<tr>") == len(rep.rows) + 1
    snap = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1000,1400",
                           page.as_uri()], capture_output=True, text=True, timeout=90,
                          check=False)
    assert snap.returncode == 0, snap.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, Path(os.environ.get("VAULT_REPORT_SCREENSHOT", tmp_path / "keep.png")))
