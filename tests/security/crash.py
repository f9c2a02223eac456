"""Crash-injection driver (matrix row "Crash injection", issue 15), run by
``test_crash_injection.py`` as its own process: ``python -m tests.security.crash
OP SETTINGS_JSON``. It prints one JSON line, the figures and the violations.

The driver opens a vault and, for kill point 1, 2, 3, ..., forks a writer that
runs the operation and SIGKILLs itself at that point: before the Nth SQL
statement or COMMIT on either database (SQLAlchemy ``before_cursor_execute`` and
``commit`` listeners; production code is untouched), or, for a rotation, before
or after the key file is rewritten. The first point the writer outlives is
"after the operation returned"; there the loop stops. After each kill the
driver opens the vault again (the next run) and checks:

- the audit chains verify;
- no canary value in any file of the vault's folder (SQLite: database, WAL,
  SHM, key file) or in any row of either PostgreSQL schema;
- each change and its audit entry are both there or both absent;
- each record is readable, and equal to one written version of it as a whole,
  or absent as a whole (no blind-index rows left behind);
- no destroyed wrapped key in any file of the folder (SQLite) once the next run
  has opened the vault, nor after it closes (PostgreSQL: not looked at);
- an interrupted rotation or sweep completes on the next run.

Put, update, delete and destroy act on a target of their own at each point
(so points do not interfere); a rotation restores the key file and key rows it
started from after each point; a sweep resumes the previous, killed one each
time (each run is killed one statement later) until a run is outlived.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, event, text

from vault import Actor, FixedClock, SecondFactor, Vault, VaultSettings, correlation_id
from vault.crypto.keys import LocalKeyProvider
from vault.store.engine import is_postgres

from .matrix import CRM, PURPOSE, settings_of

# A delete is an erasure: the caller proved a second factor (step-up).
ERASER = Actor(CRM.id, CRM.tenant,
               second_factor=SecondFactor("totp", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))

CANARY = "Crashcanary"
TAG = "crash"


class Killer:
    """Counts the steps of a write; SIGKILLs this process at step ``at``."""

    def __init__(self) -> None:
        self.count = 0
        self.at: int | None = None
        self.note: Path | None = None

    def step(self, what: str) -> None:
        self.count += 1
        if self.at is not None and self.count >= self.at:
            if self.note is not None:
                self.note.write_text(what[:60], encoding="utf-8")
            os.kill(os.getpid(), signal.SIGKILL)

    def listen(self, engine: Engine, name: str) -> None:
        def before(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
            self.step(f"{name}: {' '.join(statement.split()[:4])}")

        def commit(_c: Any) -> None:
            self.step(f"{name}: COMMIT")

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "commit", commit)


KILLER = Killer()


def _patch_key_file_writes() -> None:
    """Steps before and after the key file is rewritten by a rotation (not SQL)."""
    original = LocalKeyProvider.rotate

    def rotate(self: LocalKeyProvider) -> int:
        KILLER.step("key file: before rewrite")
        version = original(self)
        KILLER.step("key file: after rewrite")
        return version

    LocalKeyProvider.rotate = rotate  # type: ignore[method-assign]


@dataclass
class Report:
    op: str
    backend: str
    points: int = 0  # kill points at which the writer died
    outlived_at: int | None = None  # the first point the writer outlived
    steps_killed: dict[str, int] = field(default_factory=dict)  # what came next, how often
    consistent_changes: int = 0  # points whose change and entry were both there
    consistent_absent: int = 0  # points with neither
    keys_in_files_after_kill: int = 0  # destroyed keys seen before the next run
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Driver:
    def __init__(self, op: str, settings: VaultSettings, work: Path) -> None:
        self.op = op
        self.settings = settings
        self.work = work
        self.report = Report(op, "postgresql" if settings.database_url else "sqlite")
        self.destroyed_keys: dict[str, bytes] = {}  # subject -> wrapped key before destroy

    # ------------------------------------------------------------ forking

    def fork_and_kill(self, v: Vault, at: int, op: Callable[[], object]) -> bool:
        """Run ``op`` in a forked writer killed at step ``at``; True if it was killed."""
        for engine in (v.engine, v.keystore.engine):
            engine.dispose()
        note = self.work / "killed_before.txt"
        note.unlink(missing_ok=True)
        pid = os.fork()
        if pid == 0:  # the writer
            code = 0
            try:
                KILLER.count, KILLER.at, KILLER.note = 0, at, note
                op()
            except BaseException:  # an error is not a crash: reported as such
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            self.report.points += 1
            what = note.read_text(encoding="utf-8") if note.exists() else "?"
            self.report.steps_killed[what] = self.report.steps_killed.get(what, 0) + 1
            return True
        if os.WEXITSTATUS(status) != 0:
            self.violation(f"point {at}: the writer failed without being killed")
        self.report.outlived_at = at
        return False

    def violation(self, what: str) -> None:
        if len(self.report.violations) < 50:
            self.report.violations.append(what)

    # ------------------------------------------------------------ checks

    def files(self) -> list[Path]:
        return [p for p in Path(self.settings.home).rglob("*") if p.is_file()]

    def common_checks(self, nv: Vault, point: int) -> None:
        self.report.checks += 1
        report = nv.audit_log.verify()
        if not report.ok:
            self.violation(f"point {point}: audit verify failed: {report.findings[:2]}")
        if self.report.backend == "sqlite":
            for path in self.files():
                if CANARY.encode() in path.read_bytes():
                    self.violation(f"point {point}: plaintext in {path.name}")
        else:
            for engine in (nv.engine, nv.keystore.engine):
                with engine.connect() as conn:
                    tables = conn.execute(text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    )).scalars().all()
                    for table in tables:
                        hits = conn.execute(text(
                            f'SELECT COUNT(*) FROM "{table}" t WHERE t::text LIKE :c '
                            f"OR position(convert_to(:c2, 'UTF8') in "
                            f"convert_to(t::text, 'UTF8')) > 0"),
                            {"c": f"%{CANARY}%", "c2": CANARY}).scalar_one()
                        if hits:
                            self.violation(f"point {point}: plaintext in table {table}")

    def keys_in_files(self, subjects: list[str]) -> list[str]:
        """Those of these destroyed subjects whose old wrapped key is still in a file
        of the folder (SQLite; PostgreSQL keeps dead tuples, see SECURITY.md)."""
        if self.report.backend != "sqlite" or not subjects:
            return []
        blobs = [p.read_bytes() for p in self.files()]
        return [s for s in subjects if any(self.destroyed_keys[s] in b for b in blobs)]

    def entries(self, nv: Vault, tag: str) -> list[Any]:
        with nv.engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT action, decision, record_ids, subjects, reason FROM audit_log "
                "WHERE request_id = :t ORDER BY seq"), {"t": tag}))

    def record_count(self, nv: Vault) -> int:
        with nv.engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM records")).scalar_one())

    def index_rows(self, nv: Vault, rid: str) -> int:
        with nv.engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM blind_index WHERE record_id = :r"),
                                    {"r": rid}).scalar_one())

    def wrapped_key(self, v: Vault, subject: str) -> bytes | None:
        with v.keystore.engine.connect() as conn:
            value = conn.execute(text("SELECT wrapped FROM data_keys WHERE tenant = 'acme' "
                                      "AND subject_id = :s"), {"s": subject}).scalar_one_or_none()
        return None if value is None else bytes(value)

    def named(self, nv: Vault, *actions: str) -> set[str]:
        """Every subject pseudonym named by an allowed or error entry of ``actions``."""
        with nv.engine.connect() as conn:
            return {p for (value,) in conn.execute(text(
                "SELECT subjects FROM audit_log WHERE action IN :a AND decision IN "
                "('allow', 'error')").bindparams(bindparam("a", expanding=True)),
                {"a": list(actions)}) for p in json.loads(value)}

    def tally(self, changed: bool) -> None:
        if changed:
            self.report.consistent_changes += 1
        else:
            self.report.consistent_absent += 1

    def next_run(self, point: int, check: Callable[[Vault], None]) -> None:
        """Open the vault as the next process would, check, close it; then look for
        destroyed keys in the files."""
        # Candidates as the killed writer left the files (some keys are live).
        as_left = self.keys_in_files(list(self.destroyed_keys))
        with Vault.open(settings=self.settings) as nv:
            destroyed = [s for s in self.destroyed_keys if nv.keystore.is_destroyed("acme", s)]
            self.report.keys_in_files_after_kill += len(set(as_left) & set(destroyed))
            for subject in self.keys_in_files(destroyed):
                self.violation(f"point {point}: destroyed key of {subject} in a file "
                               "once the next run has opened the vault")
            self.common_checks(nv, point)
            check(nv)
        for subject in self.keys_in_files(destroyed):
            self.violation(f"point {point}: destroyed key of {subject} in a file "
                           "after the next run")

    # ------------------------------------------------------------ operations

    def person(self, k: int, version: str = "v1") -> dict[str, Any]:
        return {"full_name": f"{CANARY} {self.op} {k} {version}",
                "email": f"{self.op}.{k}@example.com", "country": "DE",
                "support_notes": f"{CANARY} note {k} {version}",
                "device_info": {"k": k, "version": version}}

    def same(self, got: dict[str, Any], want: dict[str, Any]) -> bool:
        return all(got.get(name) == value for name, value in want.items())

    def loop(self, v: Vault, prepare: Callable[[int], Callable[[], object]],
             check: Callable[[Vault, int], None], limit: int = 400) -> None:
        for at in range(1, limit + 1):
            op = prepare(at)
            killed = self.fork_and_kill(v, at, op)
            self.next_run(at, lambda nv, at=at: check(nv, at))
            if not killed:
                return
        self.violation(f"the writer was still killed at point {limit}")

    def run_put(self, v: Vault) -> None:
        def prepare(k: int) -> Callable[[], object]:
            self.count_before = self.record_count(v)

            def op() -> object:
                with correlation_id(f"{TAG}.{k}"):
                    return v.put(CRM, "customers", self.person(k), purpose=PURPOSE)
            return op

        def check(nv: Vault, k: int) -> None:
            written = {r[2].strip('[]"') for r in self.entries(nv, f"{TAG}.{k}")
                       if r[0] == "write" and r[1] == "allow"}
            found = [r.id for r in nv.find(CRM, "customers", purpose=PURPOSE,
                                           email=f"put.{k}@example.com")]
            rows = self.record_count(nv) - self.count_before
            if set(found) != written or rows != len(found) or len(found) > 1:
                self.violation(f"point {k}: records {found} (rows +{rows}) but audited "
                               f"writes {sorted(written)}")
                return
            if found and not self.same(nv.get(CRM, "customers", found[0],
                                              purpose=PURPOSE).data, self.person(k)):
                self.violation(f"point {k}: the record is not the one written")
            self.tally(bool(found))

        self.loop(v, prepare, check)

    def _target(self, v: Vault, k: int) -> str:
        return v.put(CRM, "customers", self.person(k), purpose=PURPOSE)

    def run_update(self, v: Vault) -> None:
        targets: dict[int, str] = {}

        def prepare(k: int) -> Callable[[], object]:
            targets[k] = rid = self._target(v, k)
            new = self.person(k, "v2")

            def op() -> object:
                with correlation_id(f"{TAG}.{k}"):
                    v.update(CRM, "customers", rid, {"full_name": new["full_name"],
                                                     "support_notes": new["support_notes"]},
                             purpose=PURPOSE)
                return None
            return op

        def check(nv: Vault, k: int) -> None:
            audited = any(r[0] == "update" and r[1] == "allow"
                          for r in self.entries(nv, f"{TAG}.{k}"))
            data = nv.get(CRM, "customers", targets[k], purpose=PURPOSE).data
            old, new = self.person(k), self.person(k) | {
                "full_name": self.person(k, "v2")["full_name"],
                "support_notes": self.person(k, "v2")["support_notes"]}
            state = "new" if self.same(data, new) else "old" if self.same(data, old) else "torn"
            if state == "torn" or (state == "new") != audited:
                self.violation(f"point {k}: record {state}, update audited: {audited}")
                return
            self.tally(audited)

        self.loop(v, prepare, check)

    def run_delete(self, v: Vault) -> None:
        targets: dict[int, str] = {}

        def prepare(k: int) -> Callable[[], object]:
            targets[k] = rid = self._target(v, k)

            def op() -> object:
                with correlation_id(f"{TAG}.{k}"):
                    v.delete(ERASER, "customers", rid, purpose=PURPOSE)
                return None
            return op

        def check(nv: Vault, k: int) -> None:
            rid = targets[k]
            audited = any(r[0] == "delete" and r[1] == "allow"
                          for r in self.entries(nv, f"{TAG}.{k}"))
            with nv.engine.connect() as conn:
                present = conn.execute(text("SELECT COUNT(*) FROM records WHERE id = :r"),
                                       {"r": rid}).scalar_one() == 1
            if present == audited:
                self.violation(f"point {k}: record present: {present}, delete audited: "
                               f"{audited}")
                return
            if present and not self.same(nv.get(CRM, "customers", rid, purpose=PURPOSE).data,
                                         self.person(k)):
                self.violation(f"point {k}: the record is not whole")
            if not present and self.index_rows(nv, rid):
                self.violation(f"point {k}: blind-index rows of a deleted record remain")
            self.tally(audited)

        self.loop(v, prepare, check)

    def run_destroy(self, v: Vault) -> None:
        targets: dict[int, tuple[str, str]] = {}

        def prepare(k: int) -> Callable[[], object]:
            subject = f"crash-subject-{k}"
            rid = v.put(CRM, "customers", self.person(k), purpose=PURPOSE, subject_id=subject)
            targets[k] = (subject, rid)
            wrapped = self.wrapped_key(v, subject)
            assert wrapped is not None
            self.destroyed_keys[subject] = wrapped  # looked for once its tombstone is there

            def op() -> object:
                with correlation_id(f"{TAG}.{k}"):
                    v.keys.destroy(subject, tenant="acme")
                return None
            return op

        def check(nv: Vault, k: int) -> None:
            subject, rid = targets[k]
            tombstone = nv.keystore.is_destroyed("acme", subject)
            # Its own entry, or the one the next open writes for a shredding a
            # crash cut in two (reason "recovered").
            audited = nv.pseudonym("acme", subject) in self.named(nv, "keys.destroy")
            with nv.engine.connect() as conn:
                marked = conn.execute(text("SELECT COUNT(*) FROM erased_subjects WHERE "
                                           "subject_id = :s"), {"s": subject}).scalar_one() > 0
            readable = True
            try:
                nv.get(CRM, "customers", rid, purpose=PURPOSE)
            except Exception:
                readable = False
            if not (tombstone == audited == marked == (not readable)):
                self.violation(f"point {k}: key destroyed: {tombstone}, audited: {audited}, "
                               f"marked erased: {marked}, readable: {readable}")
                return
            if tombstone and self.index_rows(nv, rid):
                self.violation(f"point {k}: blind-index rows of a shredded subject remain")
            self.tally(tombstone)

        self.loop(v, prepare, check)

    def run_rotate(self, v: Vault) -> None:
        key_file = Path(self.settings.resolved_key_file)
        ids = [self._target(v, k) for k in range(6)]
        pristine_file = key_file.read_bytes()
        with v.keystore.engine.connect() as conn:
            pristine_rows = [tuple(r) for r in conn.execute(text(
                "SELECT id, kek_version, wrapped FROM data_keys"))]
        base = v.keys.status()
        self.report.extra["keys"] = len(pristine_rows)
        completed = 0
        unaudited: list[int] = []

        def prepare(k: int) -> Callable[[], object]:
            def op() -> object:
                with correlation_id(f"{TAG}.{k}"):
                    return v.keys.rotate()
            return op

        def check(nv: Vault, k: int) -> None:
            nonlocal completed
            for rid, n in zip(ids, range(6), strict=True):
                if not self.same(nv.get(CRM, "customers", rid, purpose=PURPOSE).data,
                                 self.person(n)):
                    self.violation(f"point {k}: record {n} unreadable mid-rotation")
            status = nv.keys.status()
            rotated = status.current_version > base.current_version
            logged = any(r[0] == "keys.rotate" for r in self.entries(nv, f"{TAG}.{k}"))
            if logged and not rotated:
                self.violation(f"point {k}: keys.rotate audited without a new KEK")
            if rotated and not logged:
                # The key file was rewritten, the entry not yet committed: the new
                # version is recorded by the resumed run's keys.rewrap (checked below).
                unaudited.append(k)
            self.tally(rotated)
            if rotated:  # the next run completes the interrupted rotation
                with correlation_id(f"{TAG}.{k}.resume"):
                    result = nv.keys.rotate(resume=True)
                status = nv.keys.status()
                stale = {ver: n for ver, n in status.data_keys_by_version.items()
                         if ver != status.current_version and n}
                done = any(r[0] == "keys.rewrap" for r in self.entries(nv, f"{TAG}.{k}.resume"))
                status = nv.keys.status()
                kek = f"kek:{status.current_version}"
                recorded = any(r[0] in ("keys.rotate", "keys.rewrap") and (r[4] or "").startswith(
                    f"{kek}") for r in [*self.entries(nv, f"{TAG}.{k}"),
                                        *self.entries(nv, f"{TAG}.{k}.resume")])
                if not recorded:
                    self.violation(f"point {k}: the log does not name {kek} after resuming")
                if stale or not done or result.new_version != status.current_version:
                    self.violation(f"point {k}: resumed rotation left {stale}, audited {done}")
                else:
                    completed += 1
                nv.keystore.clear_cache()
                for rid, n in zip(ids, range(6), strict=True):
                    if not self.same(nv.get(CRM, "customers", rid, purpose=PURPOSE).data,
                                     self.person(n)):
                        self.violation(f"point {k}: record {n} unreadable after resuming")
            # Back to where the rotation started, for the next point.
            key_file.write_bytes(pristine_file)
            with nv.keystore.engine.begin() as conn:
                for key_id, version, wrapped in pristine_rows:
                    conn.execute(text("UPDATE data_keys SET kek_version = :v, wrapped = :w "
                                      "WHERE id = :i"), {"v": version, "w": wrapped, "i": key_id})
            nv.keystore.clear_cache()
            v.keystore.clear_cache()

        self.loop(v, prepare, check)
        self.report.extra["rotations_completed_on_the_next_run"] = completed
        self.report.extra["new_kek_without_keys_rotate_entry_until_resumed"] = len(unaudited)

    def run_sweep(self, v: Vault, clock: FixedClock) -> None:
        expired = v.put_many(CRM, "customers", [self.person(k) | {"email": f"old.{k}@x.com"}
                                                for k in range(24)],
                             purpose=PURPOSE, subject_ids=[f"old-{k}" for k in range(24)],
                             jurisdiction="DE")
        # The sweeper shreds these subjects: remember their wrapped keys.
        for k in range(24):
            wrapped = self.wrapped_key(v, f"old-{k}")
            assert wrapped is not None
            self.destroyed_keys[f"old-{k}"] = wrapped
        clock.set(dt.datetime.now(dt.UTC))
        fresh = v.put_many(CRM, "customers", [self.person(100 + k) for k in range(3)],
                           purpose=PURPOSE, jurisdiction="CN")
        self.report.extra["expired"] = len(expired)

        def prepare(k: int) -> Callable[[], object]:
            def op() -> object:
                return v.retention.sweep(batch_size=3)
            return op

        def listed(nv: Vault, action: str, column: str) -> list[str]:
            with nv.engine.connect() as conn:
                return [x for (value,) in conn.execute(text(
                    f"SELECT {column} FROM audit_log WHERE action = :a"), {"a": action})
                        for x in json.loads(value)]

        def check(nv: Vault, k: int) -> None:
            with nv.engine.connect() as conn:
                left = set(conn.execute(text("SELECT id FROM records")).scalars())
                marked = set(conn.execute(text("SELECT subject_id FROM erased_subjects"))
                             .scalars())
            deleted = listed(nv, "retention.sweep", "record_ids")
            if sorted(deleted) != sorted(set(deleted)):
                self.violation(f"point {k}: a record named by two sweep entries")
            gone = set(expired) - left
            if gone != set(deleted) or not set(fresh) <= left:
                self.violation(f"point {k}: {len(gone)} expired records gone, "
                               f"{len(set(deleted))} named by sweep entries")
            shred_entries = self.named(nv, "retention.shred", "keys.destroy")
            for n in range(24):
                subject = f"old-{n}"
                tomb = nv.keystore.is_destroyed("acme", subject)
                logged = nv.pseudonym("acme", subject) in shred_entries
                if tomb != logged or tomb != (subject in marked):
                    self.violation(f"point {k}: {subject} key destroyed: {tomb}, shred "
                                   f"audited: {logged}, marked: {subject in marked}")
            kept = [rid for rid in expired if rid in left]
            for rid in kept:
                if self.index_rows(nv, rid) == 0:
                    self.violation(f"point {k}: a kept record lost its index rows")
            for record in nv.get_many(CRM, "customers", kept, purpose=PURPOSE):
                n = expired.index(record.id)
                if not self.same(record.data, self.person(n) | {"email": f"old.{n}@x.com"}):
                    self.violation(f"point {k}: kept record {n} is not whole")
            self.report.extra["records_left_at_last_point"] = len(left & set(expired))
            self.tally(bool(gone))

        self.loop(v, prepare, check)
        # The next run (no kill) finishes whatever the last killed one left.
        with Vault.open(settings=self.settings) as nv:
            report = nv.retention.sweep(batch_size=3)
            with nv.engine.connect() as conn:
                left = set(conn.execute(text("SELECT id FROM records")).scalars())
                statuses = [s for (s,) in conn.execute(text(
                    "SELECT status FROM retention_runs ORDER BY started_at"))]
            if left != set(fresh):
                self.violation(f"the final sweep left {len(left - set(fresh))} expired records")
            if not all(nv.keystore.is_destroyed("acme", f"old-{n}") for n in range(24)):
                self.violation("the final sweep left a subject unshredded")
            self.report.extra["final_sweep_interrupted_runs"] = len(report.interrupted_runs)
            self.report.extra["run_statuses"] = {s: statuses.count(s) for s in set(statuses)}
            if not nv.audit.verify().ok:
                self.violation("audit verify failed after the final sweep")


def main() -> None:
    op, raw = sys.argv[1], json.loads(sys.argv[2])
    work = Path(raw["work"])
    settings = settings_of(raw["home"], raw.get("database_url"), raw.get("keystore_url"))
    _patch_key_file_writes()
    driver = Driver(op, settings, work)
    clock = FixedClock(dt.datetime(2010, 1, 1, tzinfo=dt.UTC)) if op == "sweep" else None
    with Vault.init(settings=settings, clock=clock) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        for engine, name in ((v.engine, "data"), (v.keystore.engine, "keys")):
            KILLER.listen(engine, name)
        if op == "sweep":
            assert clock is not None
            driver.run_sweep(v, clock)
        else:
            getattr(driver, f"run_{op}")(v)
    if is_postgres(v.engine):
        driver.report.extra["note"] = "PostgreSQL files are not scanned (see SECURITY.md)"
    print(json.dumps(asdict(driver.report)), flush=True)


if __name__ == "__main__":
    main()
