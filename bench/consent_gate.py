"""Cost of the consent gate on a 10,000-record get_many (embedded SQLite).

Run: python -m bench.consent_gate
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from vault import Actor, Vault, VaultSettings
from vault._kernel import open_kernel
from vault.records.gate import DataGate
from vault.records.service import load_rows

POLICIES = Path(__file__).resolve().parents[1] / "policies"
N = 10_000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vault = Vault.init(settings=VaultSettings.build(home=Path(tmp) / "v", policies=POLICIES))
        vault.roles.assign("crm", "crm_service", tenant="acme")
        vault.roles.assign("maya", "marketing", tenant="acme")
        crm = Actor("crm", "acme")
        records = [{"full_name": f"N {i}", "email": f"n{i}@example.com",
                    "marketing_segment": "vip"} for i in range(N)]
        ids = vault.put_many(crm, "customers", records, purpose="account_management",
                             jurisdiction="US-CA")
        schema = vault.schemas.get("customers")
        # The gate alone, as the data path runs it, on a kernel of the same vault.
        kernel = open_kernel(vault.settings)
        gate_of = DataGate(kernel)
        fields = ["full_name", "email", "marketing_segment"]
        for label, actor, purpose in (("account_management (no consent needed)", crm,
                                       "account_management"),
                                      ("marketing (CCPA opt-out: states looked up)",
                                       Actor("maya", "acme"), "marketing")):
            total = gate = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                vault.get_many(actor, "customers", ids, purpose=purpose)
                total = min(total, time.perf_counter() - start)
            with kernel.read_only() as conn:
                rows = load_rows(conn, "acme", "customers", ids)
                subjects = list(dict.fromkeys(r.subject_id for r in rows.values()))
                for _ in range(3):
                    start = time.perf_counter()
                    gate_of.check(conn, actor, schema, purpose, subjects, fields)
                    gate = min(gate, time.perf_counter() - start)
            print(f"get_many {N:,} for {label}: {total * 1000:.0f} ms, "
                  f"of which the consent gate {gate * 1000:.0f} ms")
        kernel.close()
        vault.close()


if __name__ == "__main__":
    main()
