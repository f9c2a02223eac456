"""Build the example audit report shown in the README.

    python docs/make_report_example.py            # writes docs/audit-report-example.html
    python docs/make_report_example.py --png      # and a screenshot (needs chromium)

A throw-away vault in a temporary folder, on a fixed clock that walks through
two weeks of November 2026: a CRM service writes and reads customers, a
support agent and a sales rep read them, a marketing user tries fields and
purposes the policy does not grant them (denied, and audited), and on one day
an analyst reads far more than usual. The report is the ``denials`` view over
the whole log, as a compliance officer would run it with

    vault audit report --view denials --format html --out denials.html

Nothing here is faked: every entry is written by the real data path, and the
page is :func:`vault.audit.report.to_html` of the real report. The page is this
script's output, not kept in the tree (git ignores it): run the script to see it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from vault import AccessDenied, Actor, FixedClock, Vault
from vault.audit.report import render

HERE = Path(__file__).resolve().parent
START = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
TENANT = "acme"
ROLES = {"crm": "crm_service", "sally": "sales_rep", "sam": "support_agent",
         "maya": "marketing", "andy": "analyst", "colin": "compliance_officer"}
NAMES = ["Ana Souza", "Li Wei", "Jonas Berg", "Maria Rossi", "Omar Haddad", "Zoe Martin",
         "Kenji Sato", "Eva Novak", "Liam Walsh", "Sofia Lund"]


def build(home: Path) -> tuple[Vault, FixedClock]:
    clock = FixedClock(START)
    vault = Vault.init(home, clock=clock)
    for user, role in ROLES.items():
        vault.roles.assign(user, role, tenant=TENANT)
    return vault, clock


def activity(vault: Vault, clock: FixedClock) -> None:
    rng = random.Random(7)
    crm, sally, sam, maya, andy = (Actor(u, TENANT) for u in ("crm", "sally", "sam", "maya",
                                                             "andy"))
    ids: list[str] = []
    for day in range(14):
        clock.set(START + dt.timedelta(days=day))
        for i in range(rng.randint(3, 8)):
            name = rng.choice(NAMES)
            n = len(ids)
            ids.append(vault.put(crm, "customers", {
                "full_name": name, "email": f"customer{n}@example.com",
                "phone": f"+4930{1000000 + n}", "country": "DE"},
                purpose="account_management", jurisdiction="DE"))
            clock.set(clock.now() + dt.timedelta(minutes=7 + i))
        for _ in range(rng.randint(4, 12)):
            vault.get(sam, "customers", rng.choice(ids), purpose="customer_support")
            clock.set(clock.now() + dt.timedelta(minutes=3))
        for _ in range(rng.randint(2, 6)):
            vault.get(sally, "customers", rng.choice(ids), purpose="account_management")
        # marketing tries what the policy does not grant: refused and audited
        for _ in range(rng.randint(0, 3)):
            with contextlib.suppress(AccessDenied):
                vault.get(maya, "customers", rng.choice(ids), purpose="customer_support",
                          fields=["phone"])
        if day % 4 == 1:
            with contextlib.suppress(AccessDenied):
                vault.get(sally, "customers", rng.choice(ids), purpose="marketing",
                          fields=["national_id"])
        if day == 9:  # an unusual day for the analyst
            vault.get_many(andy, "customers", ids, purpose="analytics")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", action="store_true", help="also take a screenshot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vault, clock = build(Path(tmp) / "vault")
        try:
            activity(vault, clock)
            clock.set(START + dt.timedelta(days=14, hours=2))
            rep = vault.audit.report("denials", actor=Actor("colin", TENANT))
            page = HERE / "audit-report-example.html"
            page.write_text(render(rep, "html"), encoding="utf-8")
            print(f"wrote {page} ({rep.total_entries} entries, {rep.total_denials} denied)")
        finally:
            vault.close()
    if args.png:
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            raise SystemExit("chromium is not installed (apt-get install chromium)")
        png = HERE / "audit-report-example.png"
        subprocess.run([browser,  # noqa: S603 (our own arguments) "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--screenshot={png}", "--window-size=1100,1000",
                        page.as_uri()], check=True, capture_output=True, timeout=120)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
