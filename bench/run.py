"""Vault side by side with what CRM developers use today.

    python -m bench [--backend sqlite|postgres|all] [--records 10000] [--repeat 5]
                    [--quick] [--skip-million] [--json PATH] [--pg-url URL]
                    [--only bulk,shapes,cold,decrypt,single,decisions,providers,scale]
                    [--shape-sizes 100,1000] [--provider-records 1000]

Every peer runs in this process, on the same backend and the same Faker
customers (8 PII fields, 2 searchable), interleaved repetition by repetition,
so every figure is a ratio measured side by side; the table gives the median
and the machine's noise (min and max over the repetitions). Vault's results
are checked (decrypted values equal the inputs, find returns the right
record, a shredded subject is unreadable), so a fast wrong answer cannot count.
The shapes of work (batch sizes, a 3-field and an all-field reader, subjects with
one and with many records, a fresh process, the decrypt loop) are in
bench/shapes.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, text

from bench.data import FIELDS, SENSITIVE_FIELDS, customers, scale_customers
from bench.measure import Samples, check, timed
from bench.peers import EncryptedTypePeer, PlainPeer
from bench.policy import build_policies, raw_enforcer
from bench.providers import label as provider_label
from bench.providers import measure as measure_providers
from bench.providers import moto, softhsm
from bench.shapes import READERS, SUBJECT_SHAPES, cold, decrypt_cost, shapes
from vault import Actor, KeyDestroyed, Vault, VaultSettings
from vault.store.engine import make_engine

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
#: The --only names, in the order they run.
GROUPS = ("bulk", "shapes", "cold", "decrypt", "single", "decisions", "providers", "scale")
TENANT = "acme"
PURPOSE = "account_management"
COLLECTION = "customers"
FIND_PROBES = 25  # finds timed at each scale, each for a different record
ERASE_PROBES = 10  # subjects crypto-shredded at each scale
# The 10 fields of one record whose decisions are measured (all but national_id).
DECISION_FIELDS = (
    "full_name", "email", "phone", "postal_address", "birth_date", "country",
    "preferred_language", "marketing_segment", "device_info", "support_notes",
)


# -- backends ------------------------------------------------------------------------------


class Backend:
    """Where one run keeps its databases: a temporary folder, and on PostgreSQL
    fresh schemas (dropped at the end)."""

    def __init__(self, name: str, tmp: Path, pg_url: str, synchronous: str = "FULL") -> None:
        self.name = name
        self.tmp = tmp
        self.pg_url = pg_url
        self.synchronous = synchronous  # SQLite, for Vault's databases and the peers' alike
        self.tag = uuid.uuid4().hex[:8]
        self.schemas: list[str] = []
        self._admin: Engine | None = None

    def _schema_url(self, label: str) -> str:
        name = f"bench_{self.tag}_{label}"
        assert self._admin is not None
        with self._admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        self.schemas.append(name)
        sep = "&" if "?" in self.pg_url else "?"
        return f"{self.pg_url}{sep}options=-csearch_path%3D{name}"

    def __enter__(self) -> Backend:
        if self.name == "postgres":
            self._admin = make_engine(self.pg_url)
        return self

    def __exit__(self, *_: object) -> None:
        if self._admin is not None:
            with self._admin.begin() as conn:
                for name in self.schemas:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            self._admin.dispose()

    def settings(self, label: str, policies: Path) -> dict[str, Any]:
        """Keyword arguments of VaultSettings.build for a new vault named ``label``."""
        values: dict[str, Any] = {"home": str(self.tmp / label), "policies": str(policies),
                                  "sqlite_synchronous": self.synchronous}
        if self.name == "postgres":
            values["database_url"] = self._schema_url(f"{label}_data")
            values["keystore_url"] = self._schema_url(f"{label}_keys")
        return values

    def peer_engine(self) -> Engine:
        if self.name == "postgres":
            return make_engine(self._schema_url("peers"))
        return make_engine(f"sqlite:///{self.tmp / 'peers.db'}",
                           sqlite_synchronous=self.synchronous)


def open_vault(backend: Backend, label: str, policies: Path,
               key_provider: str | None = None) -> tuple[Vault, dict[str, Any]]:
    values = backend.settings(label, policies)
    vault = Vault.init(settings=VaultSettings.build(**values, key_provider=key_provider))
    vault.roles.assign("crm", "crm_service", tenant=TENANT)
    return vault, values


# -- the figures ---------------------------------------------------------------------------


def bulk(vault: Vault, people: list[dict[str, str]], repeat: int,
         engine: Engine) -> dict[str, Any]:
    """put_many / get_many of len(people) customers against the ORM, Core and sqlalchemy-utils."""
    actor = Actor("crm", TENANT)
    plain, enc = PlainPeer(engine), EncryptedTypePeer(engine)
    warm = people[:200]
    vault.get_many(actor, COLLECTION, vault.put_many(actor, COLLECTION, warm, purpose=PURPOSE),
                   purpose=PURPOSE)
    plain.orm_read(plain.orm_insert(warm))
    enc.orm_read(enc.orm_insert(warm))

    puts = {k: Samples() for k in ("vault", "orm", "core", "sqlalchemy_utils")}
    gets = {k: Samples() for k in ("vault", "orm", "core", "sqlalchemy_utils")}
    writers: dict[str, Callable[[], list[str]]] = {
        "vault": lambda: vault.put_many(actor, COLLECTION, people, purpose=PURPOSE),
        "orm": lambda: plain.orm_insert(people),
        "core": lambda: plain.core_insert(people),
        "sqlalchemy_utils": lambda: enc.orm_insert(people),
    }
    ids: dict[str, list[str]] = {}
    readers: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "vault": lambda: [dict(r.data) for r in
                          vault.get_many(actor, COLLECTION, ids["vault"], purpose=PURPOSE)],
        "orm": lambda: plain.orm_read(ids["orm"]),
        "core": lambda: plain.core_read(ids["core"]),
        "sqlalchemy_utils": lambda: enc.orm_read(ids["sqlalchemy_utils"]),
    }
    order = list(writers)
    for rep in range(repeat):
        rotated = order[rep % len(order):] + order[:rep % len(order)]
        for name in rotated:
            seconds, written = timed(writers[name])
            puts[name].add(seconds)
            ids[name] = written
        for name in rotated:
            seconds, read = timed(readers[name])
            gets[name].add(seconds)
            check(read == people, f"{name}: values read back differ from the inputs")
    return {"put_many": {k: s.summary() for k, s in puts.items()},
            "get_many": {k: s.summary() for k, s in gets.items()},
            "records": len(people)}


def single(vault: Vault, people: list[dict[str, str]], repeat: int, engine: Engine,
           ops: int) -> dict[str, Any]:
    """One audited put / get at a time against a plain single-row ORM transaction."""
    actor = Actor("crm", TENANT)
    plain = PlainPeer(engine)
    result: dict[str, Samples] = {k: Samples() for k in
                                  ("vault_put", "orm_put", "vault_get", "orm_get",
                                   "logged_get")}
    sample = people[:ops]
    vault_ids: list[str] = []
    orm_ids: list[str] = []

    def vault_put() -> None:
        vault_ids[:] = [vault.put(actor, COLLECTION, p, purpose=PURPOSE) for p in sample]

    def orm_put() -> None:
        orm_ids[:] = [plain.put_one(p) for p in sample]

    def vault_get() -> list[dict[str, Any]]:
        return [dict(vault.get(actor, COLLECTION, r, purpose=PURPOSE).data) for r in vault_ids]

    def orm_get() -> list[dict[str, Any]]:
        return [plain.get_one(r) for r in orm_ids]

    def logged_get() -> list[dict[str, Any]]:
        return [plain.get_one_logged(r, actor.id) for r in orm_ids]

    for rep in range(repeat):
        pairs: list[tuple[str, Callable[[], Any]]] = [("vault_put", vault_put),
                                                      ("orm_put", orm_put)]
        reads: list[tuple[str, Callable[[], Any]]] = [("vault_get", vault_get),
                                                      ("orm_get", orm_get),
                                                      ("logged_get", logged_get)]
        if rep % 2:
            pairs.reverse()
            reads.reverse()
        for name, fn in pairs + reads:
            seconds, out = timed(fn)
            result[name].add(seconds / len(sample))
            if out is not None:
                check(out == sample, f"{name}: values read back differ from the inputs")
    return {k: s.summary(1e6) for k, s in result.items()} | {"ops": len(sample)}


def decisions(vault: Vault, values: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Vault's compiled decisions for one 10-field record against raw pycasbin enforce,
    and how long a policy change made by another process takes to be enforced here."""
    engine = vault.policy_engine
    raw = raw_enforcer()
    expected = frozenset(f for f in DECISION_FIELDS
                         if raw.enforce("user:crm", TENANT, f"customers.{f}", "read", PURPOSE))
    masked = frozenset(f for f in DECISION_FIELDS if raw.enforce(
        "user:crm", TENANT, f"customers.{f}", "read_masked", PURPOSE)) - expected

    def vault_record() -> tuple[frozenset[str], frozenset[str]]:
        # What a get does: the readable and the maskable field sets.
        readable = engine.allowed_fields("crm", TENANT, COLLECTION, "read", PURPOSE,
                                         DECISION_FIELDS)
        maskable = engine.allowed_fields("crm", TENANT, COLLECTION, "read_masked", PURPOSE,
                                         DECISION_FIELDS) - readable
        return readable, maskable

    engine.refresh(force=True)
    compile_s, got = timed(vault_record)
    check(got == (expected, masked), "Vault's decisions differ from raw pycasbin's")
    vault_s, raw_s = Samples(), Samples()
    loops = 20_000
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            vault_record()
        vault_s.add((time.perf_counter() - start) / loops)
        start = time.perf_counter()
        for _ in range(20):
            for f in DECISION_FIELDS:
                raw.enforce("user:crm", TENANT, f"customers.{f}", "read", PURPOSE)
        raw_s.add((time.perf_counter() - start) / 20)
    out: dict[str, Any] = {
        "rules": len(raw.get_policy()),
        "vault_us": vault_s.summary(1e6), "raw_casbin_us": raw_s.summary(1e6),
        "vault_first_decision_after_change_us": compile_s * 1e6,
    }
    out["propagation_s"] = propagation(vault, values, repeat)
    return out


def propagation(vault: Vault, values: dict[str, Any], repeat: int) -> dict[str, float]:
    """Seconds from another process's committed rule change to its enforcement here."""
    engine = vault.policy_engine
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.policy_child", json.dumps(values)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.stdin is not None
    assert child.stdout is not None
    samples = Samples()
    try:
        check(child.stdout.readline().strip() == "ready", "the policy child did not start")
        for n in range(max(repeat, 3) * 2):
            deny = n % 2 == 0
            child.stdin.write("add\n" if deny else "remove\n")
            child.stdin.flush()
            while True:
                allowed = engine.allowed_fields("crm", TENANT, COLLECTION, "read", PURPOSE,
                                                DECISION_FIELDS)
                if ("support_notes" not in allowed) == deny:
                    seen = time.time()
                    break
                time.sleep(0.0005)
            committed = float(child.stdout.readline())
            samples.add(seen - committed)
        child.stdin.write("stop\n")
        child.stdin.flush()
    finally:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            raise
    return samples.summary()


def scale(backend: Backend, people: list[dict[str, str]], sizes: list[int], repeat: int,
          policies: Path) -> dict[str, Any]:
    """find by a blind-indexed field and crypto-shredding at growing record counts."""
    vault, _ = open_vault(backend, "scale", policies)
    actor = Actor("crm", TENANT)
    out: dict[str, Any] = {}
    stored = 0
    batch = 10_000
    rng = random.Random(5)
    with vault:
        for size in sizes:
            start = time.perf_counter()
            sample_ids: list[tuple[int, str]] = []
            while stored < size:
                n = min(batch, size - stored)
                chunk = scale_customers(people, stored, n)
                ids = vault.put_many(actor, COLLECTION, chunk, purpose=PURPOSE)
                for pick in rng.sample(range(n), min(n, FIND_PROBES + ERASE_PROBES)):
                    sample_ids.append((stored + pick, ids[pick]))
                stored += n
            build_s = time.perf_counter() - start
            settle(vault)
            probes = rng.sample(sample_ids, min(len(sample_ids), FIND_PROBES + ERASE_PROBES))
            finds, erases = Samples(), Samples()
            for n, rid in probes[:FIND_PROBES]:
                email = scale_customers(people, n, 1)[0]["email"]
                seconds, found = timed(lambda e=email: vault.find(
                    actor, COLLECTION, purpose=PURPOSE, email=e.upper()))
                finds.add(seconds)
                check([r.id for r in found] == [rid] and found[0].data["email"] == email,
                      "find did not return exactly the stored record")
            for _n, rid in probes[FIND_PROBES:]:
                subject = vault.get(actor, COLLECTION, rid, purpose=PURPOSE).subject_id
                seconds, _ = timed(lambda s=subject: vault.keys.destroy(s, tenant=TENANT))
                erases.add(seconds)
                try:
                    vault.get(actor, COLLECTION, rid, purpose=PURPOSE)
                except KeyDestroyed:
                    pass
                else:
                    check(False, "a crypto-shredded record could still be read")
            out[str(size)] = {
                "records": stored, "build_s": build_s,
                "find_us": finds.summary(1e6), "erase_ms": erases.summary(1e3),
                "index_used": index_used(vault),
            }
            print(f"  [{backend.name}] {stored:,} records: built in {build_s:.0f} s, find "
                  f"{finds.median * 1e6:.0f} us, erase {erases.median * 1e3:.1f} ms", flush=True)
    return out


def settle(vault: Vault) -> None:
    """After a bulk build, let the databases write out what the build left in
    memory and logs, so the latencies measured next are of a steady state and
    not of a background checkpoint catching up."""
    for engine in (vault.engine, vault.keystore.engine):
        if engine.dialect.name == "sqlite":
            with engine.connect().execution_options(sqlite_begin="none") as conn:
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        else:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("CHECKPOINT"))


def index_used(vault: Vault) -> bool:
    """Whether the database plans the blind-index lookup through its index."""
    sql = ("SELECT record_id FROM blind_index WHERE tenant = 'acme' AND collection = 'customers' "
           "AND field = 'email' AND digest = :d")
    with vault.engine.connect() as conn:
        if vault.engine.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql),
                                                             {"d": b"x" * 32}))
            return "ix_blind_index_lookup" in plan
        plan = " ".join(str(r[0]) for r in conn.execute(text("EXPLAIN " + sql), {"d": b"x" * 32}))
        return "Index" in plan


# -- report --------------------------------------------------------------------------------


def ratio(peer: dict[str, float], vault: dict[str, float]) -> float:
    return peer["median"] / vault["median"]


def noise(s: dict[str, float], unit: str, scale: float = 1.0) -> str:
    return (f"{s['median'] * scale:,.{2 if unit == 's' else 1}f} {unit} "
            f"[{s['min'] * scale:,.{2 if unit == 's' else 1}f}.."
            f"{s['max'] * scale:,.{2 if unit == 's' else 1}f}]")


def rows(backend: str, r: dict[str, Any]) -> list[tuple[str, ...]]:
    """(figure, Vault, peer, ratio, goal, met) rows for one backend."""
    out: list[tuple[str, ...]] = []
    if "bulk" in r:
        b = r["bulk"]
        n = f"{b['records']:,}"
        for op, peer, label, goal in (
            ("put_many", "orm", "plain ORM insert", 1.0),
            ("put_many", "core", "plain Core insert", None),
            ("put_many", "sqlalchemy_utils", "sqlalchemy-utils", 3.0),
            ("get_many", "orm", "plain ORM read", 0.6 if backend == "sqlite" else 0.7),
            ("get_many", "core", "plain Core read", None),
            ("get_many", "sqlalchemy_utils", "sqlalchemy-utils", 4.0),
        ):
            x = ratio(b[op][peer], b[op]["vault"])
            out.append((f"`{op}` {n} vs {label}", noise(b[op]["vault"], "s"),
                         noise(b[op][peer], "s"), f"{x:.2f}x",
                         f">= {goal}x" if goal else "(info)",
                         ("yes" if x >= goal else "NO") if goal else ""))
    if "shapes" in r:
        for size in sorted(r["shapes"], key=int):
            for shape in SUBJECT_SHAPES:
                sh = r["shapes"][size].get(shape)
                if sh is None:
                    continue
                p = sh["put_many"]
                x = ratio(p["orm"], p["vault"])
                out.append((f"`put_many` {int(size):,}, {shape} vs plain ORM insert",
                            noise(p["vault"], "s"), noise(p["orm"], "s"), f"{x:.2f}x",
                            ">= 1.0x", "yes" if x >= 1.0 else "NO"))
                for label in READERS:
                    g = sh["get_many"][label]
                    x = ratio(g["orm"], g["vault"])
                    goal = 0.6 if backend == "sqlite" else 0.7
                    out.append((f"`get_many` {int(size):,}, {shape}, {label} vs plain ORM read",
                                noise(g["vault"], "s"), noise(g["orm"], "s"), f"{x:.2f}x",
                                f">= {goal}x", "yes" if x >= goal else "NO"))
    if "cold" in r:
        c = r["cold"]
        x = ratio(c["orm"], c["vault"])
        out.append((f"`get_many` {c['records']:,} in a fresh process (every key unwrapped) "
                    "vs plain ORM read in a fresh process", noise(c["vault"], "s"),
                    noise(c["orm"], "s"), f"{x:.2f}x", ">= 0.5x", "yes" if x >= 0.5 else "NO"))
    if "decrypt" in r:
        d = r["decrypt"]
        out.append((f"Python work per decrypted field ({d['fields']:,} fields) beside its "
                    "AES-GCM call", f"{d['python_us_per_field']:.2f} us",
                    f"AES-GCM {d['aes_us_per_field']:.2f} us", f"{d['python_over_aes']:.2f}x",
                    "<= 1x", "yes" if d["python_over_aes"] <= 1 else "NO"))
    if "single" in r:
        s = r["single"]
        goal = backend == "sqlite"  # the goals are set for SQLite (WAL) only
        figures = [("put", "orm_put", "one-row ORM transaction", goal),
                   ("get", "orm_get", "one-row ORM read (no write: info)", False)]
        if "logged_get" in s:  # results of older runs lack it
            figures.append(("get", "logged_get",
                            "ORM read + one-row access-log insert, committed", goal))
        for op, peer, label, has_goal in figures:
            x = ratio(s[peer], s[f"vault_{op}"])
            out.append((f"single audited `{op}` vs {label}",
                        noise(s[f"vault_{op}"], "us"), noise(s[peer], "us"),
                        f"{x:.2f}x", ">= 0.8x" if has_goal else "(info)",
                        ("yes" if x >= 0.8 else "NO") if has_goal else ""))
    if "decisions" in r:
        d = r["decisions"]
        x = ratio(d["raw_casbin_us"], d["vault_us"])
        ok = d["vault_us"]["median"] <= 10 and x >= 1000
        out.append((f"decisions, one 10-field record ({d['rules']} rules) vs raw pycasbin",
                    noise(d["vault_us"], "us"), noise(d["raw_casbin_us"], "us"),
                    f"{x:,.0f}x", "<= 10 us, >= 1000x", "yes" if ok else "NO"))
        p = d["propagation_s"]
        out.append(("policy change by another process enforced after", noise(p, "s"), "",
                    "", "<= 1 s (max)", "yes" if p["max"] <= 1.0 else "NO"))
    if "providers" in r:
        p = r["providers"]
        n = f"{p['records']:,}"
        for op, what in (("put_many", "new subjects"), ("cold_get_many", "keys unwrapped")):
            base = p[op]["file"]
            out.append((f"`{op}` {n} ({what}), key file", noise(base, "s"), "", "", "(info)",
                        ""))
            for kind in ("pkcs11", "aws-kms"):
                if kind in p[op]:
                    x = ratio(base, p[op][kind])
                    out.append((f"`{op}` {n} ({what}), {kind} vs key file",
                                noise(p[op][kind], "s"), noise(base, "s"), f"{x:.2f}x",
                                "(info: provider cost)", ""))
    if "scale" in r:
        sizes = sorted(r["scale"], key=int)
        sc = r["scale"]
        lo, hi = sc[sizes[0]], sc[sizes[-1]]
        for s in sizes:
            out.append((f"erase one subject at {int(s):,} records", noise(sc[s]["erase_ms"], "ms"),
                        "", "", "<= 20 ms", "yes" if sc[s]["erase_ms"]["median"] <= 20 else "NO"))
        if len(sizes) > 1:
            e = hi["erase_ms"]["median"] / lo["erase_ms"]["median"]
            out.append((f"erase at {int(sizes[-1]):,} / at {int(sizes[0]):,}", f"{e:.2f}x", "",
                        "", "within 20%", "yes" if e <= 1.2 else "NO"))
        for s in sizes:
            out.append((f"`find` by e-mail at {int(s):,} records", noise(sc[s]["find_us"], "us"),
                        "", "", "index used", "yes" if sc[s]["index_used"] else "NO"))
        if len(sizes) > 1:
            f = hi["find_us"]["median"] / lo["find_us"]["median"]
            out.append((f"`find` at {int(sizes[-1]):,} / at {int(sizes[0]):,}", f"{f:.2f}x", "",
                        "", "flat (<= 1.5x)", "yes" if f <= 1.5 else "NO"))
    return [(backend, *row) for row in out]


def table(results: dict[str, Any]) -> str:
    head = ("backend", "figure", "Vault median [min..max]", "peer median [min..max]",
            "peer/Vault", "goal", "met")
    body = [row for name, r in results["backends"].items() for row in rows(name, r)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def run_backend(name: str, args: argparse.Namespace, people: list[dict[str, str]],
                policies: Path, shape_people: list[dict[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vault-bench-") as tmp, \
            Backend(name, Path(tmp), args.pg_url, args.sqlite_synchronous) as backend:
        peer_engine = backend.peer_engine()
        vault, values = open_vault(backend, "main", policies)
        with vault, contextlib.closing(_Disposer(peer_engine)):
            if "bulk" in args.only:
                print(f"[{name}] put_many/get_many of {len(people):,} x {args.repeat}",
                      flush=True)
                out["bulk"] = bulk(vault, people, args.repeat, peer_engine)
            if "shapes" in args.only:
                print(f"[{name}] shapes: batches of {', '.join(f'{n:,}' for n in args.shape_sizes)}"
                      f" x {args.repeat}", flush=True)
                out["shapes"] = shapes(vault, peer_engine, shape_people, args.shape_sizes,
                                       args.repeat)
            if "cold" in args.only:
                print(f"[{name}] get_many of {len(people):,} in a fresh process x {args.repeat}",
                      flush=True)
                out["cold"] = cold(vault, values, peer_engine, people, args.repeat,
                                   backend.tmp)
            if "decrypt" in args.only:
                print(f"[{name}] Python work per decrypted field", flush=True)
                out["decrypt"] = decrypt_cost(vault, people[:args.decrypt_records],
                                              args.repeat)
            if "single" in args.only:
                print(f"[{name}] single put/get", flush=True)
                out["single"] = single(vault, people, args.repeat, peer_engine, args.single_ops)
            if "decisions" in args.only:
                print(f"[{name}] policy decisions and propagation", flush=True)
                out["decisions"] = decisions(vault, values, args.repeat)
        if "providers" in args.only:
            print(f"[{name}] key providers: put_many / cold get_many of "
                  f"{args.provider_records:,} x {args.repeat}", flush=True)
            out["providers"] = run_providers(backend, args, people[:args.provider_records],
                                             policies)
        if "scale" in args.only:
            print(f"[{name}] scale: {', '.join(f'{s:,}' for s in args.sizes)} records",
                  flush=True)
            out["scale"] = scale(backend, people, args.sizes, args.repeat, policies)
    return out


def run_providers(backend: Backend, args: argparse.Namespace, people: list[dict[str, str]],
                  policies: Path) -> dict[str, Any]:
    """The key file, SoftHSM2 and moto's KMS side by side (bench/providers.py)."""
    with softhsm(backend.tmp / "softhsm") as hsm, moto() as kms:
        uris: dict[str, str | None] = {"file": None}
        if hsm is not None:
            uris["pkcs11"] = hsm.format(label=provider_label())
        if kms is not None:
            uris["aws-kms"] = kms.format(label=provider_label())
        return measure_providers(
            lambda uri: open_vault(backend, f"kp_{uuid.uuid4().hex[:6]}", policies, uri),
            uris, people, args.repeat, timed, Samples)


class _Disposer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--records", type=int, default=10_000,
                        help="customers per put_many/get_many (default 10,000)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--single-ops", type=int, default=200,
                        help="single puts/gets per repetition (default 200)")
    parser.add_argument("--quick", action="store_true",
                        help="1,000 records, 3 repetitions, scale 1,000 and 10,000")
    parser.add_argument("--skip-million", action="store_true",
                        help="scale figures at 10,000 and 100,000 records instead of 1,000,000")
    parser.add_argument("--scale", type=int, default=None,
                        help="largest record count of the scale figures (overrides the above)")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help="comma-separated figures to run (default: all of "
                             + ",".join(GROUPS) + ")")
    parser.add_argument("--shape-sizes", default="100,1000",
                        help="batch sizes of the shapes besides --records (default 100,1000)")
    parser.add_argument("--decrypt-records", type=int, default=2_000,
                        help="records of the decrypt-loop figure (default 2,000)")
    parser.add_argument("--provider-records", type=int, default=1_000,
                        help="customers per put_many/get_many of the key-provider figures "
                             "(default 1,000: KMS makes one call per key)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results (default bench/results/<time>.json)")
    parser.add_argument("--pg-url", default=os.environ.get("VAULT_BENCH_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--sqlite-synchronous", choices=("FULL", "NORMAL"), default="FULL",
                        help="SQLite synchronous for Vault and the peers alike (default FULL, "
                             "Vault's default)")
    args = parser.parse_args(argv)
    args.only = set(args.only.split(","))
    unknown = args.only - set(GROUPS)
    if unknown:
        parser.error(f"unknown --only name(s): {', '.join(sorted(unknown))}")
    # Vault logs through structlog; the benchmark's output is the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.quick:
        args.records, args.repeat, args.single_ops = 1_000, 3, 50
        args.provider_records = min(args.provider_records, 500)
        args.decrypt_records = min(args.decrypt_records, 1_000)
    args.shape_sizes = sorted({*(int(n) for n in args.shape_sizes.split(",") if n),
                               args.records})
    largest = args.scale or (10_000 if args.quick else
                             100_000 if args.skip_million else 1_000_000)
    args.sizes = [min(args.records, largest), largest] if largest > args.records else [largest]
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]

    started = time.perf_counter()
    print(f"generating {args.records:,} Faker customers", flush=True)
    people = customers(args.records)
    shape_people = (customers(max(args.shape_sizes), seed=8, fields=SENSITIVE_FIELDS)
                    if "shapes" in args.only else [])
    results: dict[str, Any] = {
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "records": args.records, "repeat": args.repeat, "fields": list(FIELDS),
        "sqlite_synchronous": args.sqlite_synchronous,
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="vault-bench-policies-") as ptmp:
        policies = build_policies(Path(ptmp) / "policies")
        for name in backends:
            results["backends"][name] = run_backend(name, args, people, policies,
                                                    shape_people)
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    out = args.json or RESULTS / time.strftime("bench-%Y%m%dT%H%M%SZ.json", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    print(f"\n{results['command']}: {results['elapsed_s']:.0f} s; results in {out}")
