"""The HTML audit report opens in a real browser (headless Chromium) without errors.

Needs Debian's ``chromium`` (``.ci/run`` installs it). Without it the test is
skipped, unless ``VAULT_REQUIRE_BROWSER=1`` (as in CI), which makes it fail.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vault import AccessDenied, Actor, Vault, VaultSettings
from vault.audit import AuditEvent, Decision
from vault.audit.report import to_html
from vault.clock import FixedClock

from .test_data_path import customer

pytestmark = pytest.mark.slow

START = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    reason = "headless Chromium not installed (Debian package `chromium`)"
    if os.environ.get("VAULT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; VAULT_REQUIRE_BROWSER=1 demands it")
    pytest.skip(reason)


def _text(dom: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert found, f"no element #{element_id} in the rendered page"
    return found.group(1)


def test_html_report_renders_in_chromium(sqlite_settings: VaultSettings, tmp_path: Path) -> None:
    """Chromium loads the page with no console error, and shows the report's numbers."""
    browser = _chromium()
    clock = FixedClock(START)
    with Vault.init(settings=sqlite_settings, clock=clock) as vault:
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.roles.assign("sam", "support_agent", tenant="acme")
        crm, sam = Actor("crm", "acme"), Actor("sam", "acme")
        ids = [vault.put(crm, "customers", customer(n), purpose="account_management")
               for n in range(4)]
        clock.advance(dt.timedelta(days=1))
        for rid in ids:
            vault.get(sam, "customers", rid, purpose="customer_support")
        for rid in ids[:2]:
            with pytest.raises(AccessDenied):
                vault.get(sam, "customers", rid, purpose="customer_support",
                          fields=["national_id"])
        # A hostile entry: were it not escaped, the page would load an image (and the
        # Content-Security-Policy would log a console error) or run a script.
        vault.audit_log.write([AuditEvent(
            tenant="acme", actor="<img src=x onerror=alert(1)>", action="read",
            decision=Decision.DENY, collection="customers", fields=("<b>f</b>",),
            reason="<script>alert(1)</script>")])
        rep = vault.audit.report("entries", tenant="acme")
    assert (rep.total_entries, rep.total_denials) == (2 + 4 + 4 + 2 + 1, 3)
    page = tmp_path / "report.html"
    page.write_text(to_html(rep), encoding="utf-8")

    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
              "--disable-extensions", "--enable-logging=stderr", "--v=0",
              f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=60, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines()
               if "CONSOLE" in line or "Uncaught" in line or "Content Security Policy" in line
               or "Refused to" in line]
    assert console == [], console
    html = dom.stdout
    assert _text(html, "total-entries") == "13"
    assert _text(html, "total-denials") == "3"
    assert _text(html, "total-allowed") == "10"
    assert _text(html, "row-count") == "13"
    assert _text(html, "time-from") == "(start of the log)"
    assert _text(html, "generated-at") == "2026-11-03T09:00:00+00:00"
    assert html.count("<svg") == 2
    assert len(re.findall(r'<rect class="allowed"', html)) == 2  # two days
    assert html.count("<tr>") == len(rep.rows) + 1 + 2 + 1  # rows, and the per-field table
    assert "<img" not in html and "<script" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html

    shot = tmp_path / "report.png"
    snap = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1100,1600",
                           "--hide-scrollbars", page.as_uri()], capture_output=True, text=True,
                          timeout=60, check=False)
    assert snap.returncode == 0, snap.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1100, 1600)
    assert len(data) > 20_000  # a blank page compresses to a few kB
    keep = os.environ.get("VAULT_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
