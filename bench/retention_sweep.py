"""How fast the retention sweeper removes expired records on SQLite.

    python -m bench.retention_sweep [--records 100000] [--per-subject 1] [--batch 1000]
                                    [--no-shred] [--anonymise] [--profile tottime]

Builds a vault in a temporary folder with the default schedule
(``policies/retention.toml``), writes ``--records`` customers through the
real ``put_many`` path with the clock ten years in the past (subjects in the
``default`` regime, ``--per-subject`` records each), moves the clock to now,
and times one ``sweep()``: every record has expired in every category, so
each one is deleted (ciphertexts and blind indexes, in batches, one audit
entry per batch) and every subject is crypto-shredded (``identity`` is a
``shred`` category). Then it checks that nothing is left and that the audit
log verifies. ``--anonymise`` adds ``preferred_language`` (an ``anonymise``
category), so every record is re-encrypted and unlinked instead. ``--no-shred``
runs the same schedule with ``shred`` replaced by ``delete`` (no key store work).
Goal (retention issue): at least 20,000 expired records per second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from vault import Actor, FixedClock, Vault, VaultSettings
from vault.store.models import RecordRow

POLICIES = Path(__file__).resolve().parents[1] / "policies"
GOAL = 20_000


def build(vault: Vault, clock: FixedClock, records: int, per_subject: int,
          anonymise: bool) -> None:
    crm = Actor("crm", "acme")
    vault.roles.assign("crm", "crm_service", tenant="acme")
    made = 0
    while made < records:
        n = min(10_000, records - made)
        items = []
        subjects: list[str | None] = []
        for i in range(made, made + n):
            item = {"full_name": "Bench Customer", "email": f"c{i}@example.com",
                    "phone": "+14155550123", "country": "US", "marketing_segment": "regular",
                    "device_info": {"os": "bench"}, "support_notes": "bench note"}
            if anonymise:
                item["preferred_language"] = "en"
            items.append(item)
            subjects.append(f"s{i // per_subject}")
        vault.put_many(crm, "customers", items, purpose="account_management",
                       subject_ids=subjects, jurisdiction="US")
        made += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--per-subject", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--anonymise", action="store_true")
    parser.add_argument("--policies", type=Path, default=POLICIES, help="policies folder")
    parser.add_argument("--no-shred", action="store_true",
                        help="the schedule with every shred action turned into delete")
    parser.add_argument("--profile", choices=("cumulative", "tottime"),
                        help="cProfile the sweep, sorted so")
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC)
    clock = FixedClock(now - dt.timedelta(days=3660))
    with tempfile.TemporaryDirectory() as tmp:
        policies = args.policies
        if args.no_shred:
            policies = Path(tmp) / "policies"
            shutil.copytree(args.policies, policies)
            schedule = policies / "retention.toml"
            schedule.write_text(schedule.read_text(encoding="utf-8").replace(
                'action = "shred"', 'action = "delete"'), encoding="utf-8")
        settings = VaultSettings.build(home=Path(tmp) / "vault", policies=policies)
        with Vault.init(settings=settings, clock=clock) as vault:
            start = time.perf_counter()
            build(vault, clock, args.records, args.per_subject, args.anonymise)
            built = time.perf_counter() - start
            clock.set(now)
            start = time.perf_counter()
            cpu = time.process_time()
            if args.profile:
                import cProfile
                import pstats

                with cProfile.Profile() as prof:
                    report = vault.retention.sweep(batch_size=args.batch)
                pstats.Stats(prof).sort_stats(args.profile).print_stats(25)
            else:
                report = vault.retention.sweep(batch_size=args.batch)
            took = time.perf_counter() - start
            cpu = time.process_time() - cpu
            with vault.engine.connect() as conn:
                left = conn.execute(select(func.count()).select_from(RecordRow)).scalar_one()
            ok = vault.audit.verify().ok
            rate = report.records_processed / took
            print(f"built {args.records:,} records in {built:.1f} s")
            print(f"swept {report.records_processed:,} records "
                  f"(deleted {report.records_deleted:,}, anonymised "
                  f"{report.records_anonymised:,}; {report.subjects_shredded:,} subjects "
                  f"shredded) in {report.batches} batches of {args.batch} in {took:.2f} s: "
                  f"{rate:,.0f} records/s (goal {GOAL:,}: "
                  f"{'met' if rate >= GOAL else 'NOT met'})")
            print(f"CPU time of this process: {cpu:.2f} s "
                  f"({report.records_processed / cpu:,.0f} records per CPU-second)")
            print(f"records left with personal data: {left if not args.anonymise else 'n/a'}; "
                  f"audit log verifies: {ok}")


if __name__ == "__main__":
    main()
