"""How fast `vault audit verify` checks a large audit log on SQLite.

    python -m bench.audit_verify [--entries 500000] [--chains 16]

Builds a vault in a temporary folder, appends ``--entries`` audit entries
through the real append path (AuditLog.append, in batches of 10,000, spread
over every chain by random subject pseudonyms), then times a full
``verify()`` (every hash recomputed, every link and head checked), as
``vault audit verify`` runs it by default (one worker process per core, see
vault/audit/parallel.py), and walked in one process (``workers=1``) beside it.
Goal (issue #3): at least 200,000 entries per second.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from vault import Vault, VaultSettings
from vault.audit.chain import AuditEvent, Decision

POLICIES = Path(__file__).resolve().parents[1] / "policies"
GOAL = 200_000


def build(vault: Vault, entries: int, batch: int = 10_000) -> None:
    made = 0
    while made < entries:
        n = min(batch, entries - made)
        events = [
            AuditEvent(tenant="acme", actor="crm", action="read", decision=Decision.ALLOW,
                       collection="customers", record_ids=(secrets.token_hex(16),),
                       subjects=(secrets.token_hex(16),),
                       fields=("email", "full_name", "phone"), purpose="account_management")
            for _ in range(n)
        ]
        with vault.engine.begin() as conn:
            vault.audit_log.append(conn, events)
        made += n


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("--entries", 500_000), ("--chains", 16), ("--repeat", 3)):
        parser.add_argument(name, type=int, default=default)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    with tempfile.TemporaryDirectory() as tmp:
        settings = VaultSettings.build(home=Path(tmp), policies=POLICIES,
                                       audit_chains=args.chains)
        with Vault.init(settings=settings) as vault:
            start = time.perf_counter()
            build(vault, args.entries)
            built = time.perf_counter() - start
            total = vault.audit_log.count()
            rates: dict[int | None, list[float]] = {None: [], 1: []}
            for _ in range(args.repeat):  # interleaved, so both see the same machine
                for workers in rates:
                    start = time.perf_counter()
                    report = vault.audit_log.verify(workers=workers)
                    elapsed = time.perf_counter() - start
                    if not report.ok or report.entries != total:
                        raise SystemExit(f"verification failed: {report.reason} "
                                         f"{report.detail}")
                    rates[workers].append(total / elapsed)
    print(f"audit log: {total:,} entries in {args.chains} chains (+ admin chain), "
          f"appended at {total / built:,.0f} entries/s; {os.cpu_count()} cores")
    for workers, runs in rates.items():
        median = statistics.median(runs)
        label = "default (a worker per core)" if workers is None else "one process"
        verdict = f"goal {GOAL:,}/s: {'met' if median >= GOAL else 'NOT met'}"
        print(f"verify, {label}: median {median:,.0f} entries/s (min {min(runs):,.0f}, "
              f"max {max(runs):,.0f}; {args.repeat} runs)"
              + (f" -- {verdict}" if workers is None else ""))


if __name__ == "__main__":
    main()
