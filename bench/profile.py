"""Where Vault's time goes: pyinstrument profiles of the benchmark's operations.

    python -m bench.profile [put_many|get_many|put|get] [--records 10000] [--postgres URL]
                            [--cprofile]

Needs pyinstrument (``pip install -e '.[bench]'``), or ``--cprofile`` for the
standard library's deterministic profiler (functions by own time). Builds a vault with the
benchmark's 600-rule policy in a temporary folder (or in fresh schemas of the
PostgreSQL server given with ``--postgres``), warms it up, then profiles one
``put_many``/``get_many`` of ``--records`` customers, or 300 single ``put``/``get``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import text

from bench.data import customers
from bench.policy import build_policies
from vault import Actor, Vault, VaultSettings
from vault.store.engine import make_engine

PURPOSE = "account_management"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("operation", choices=("put_many", "get_many", "put", "get"))
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL to profile on")
    parser.add_argument("--cprofile", action="store_true",
                        help="cProfile, functions sorted by their own time")
    args = parser.parse_args()
    if args.cprofile:
        profiler_class: Any = _CProfiler
    else:
        from pyinstrument import Profiler  # only this tool needs it
        profiler_class = Profiler

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    people = customers(args.records)
    schemas: list[str] = []
    admin = make_engine(args.postgres) if args.postgres else None
    extra: dict[str, Any] = {}
    if admin is not None:
        tag = uuid.uuid4().hex[:8]
        with admin.begin() as conn:
            for label in ("data", "keys"):
                schemas.append(f"prof_{tag}_{label}")
                conn.execute(text(f'CREATE SCHEMA "{schemas[-1]}"'))
        sep = "&" if "?" in args.postgres else "?"
        extra = {"database_url": f"{args.postgres}{sep}options=-csearch_path%3D{schemas[0]}",
                 "keystore_url": f"{args.postgres}{sep}options=-csearch_path%3D{schemas[1]}"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            policies = build_policies(Path(tmp) / "policies")
            settings = VaultSettings.build(home=Path(tmp) / "vault", policies=policies, **extra)
            with Vault.init(settings=settings) as vault:
                vault.roles.assign("crm", "crm_service", tenant="acme")
                profile(vault, Actor("crm", "acme"), people, args.operation, profiler_class)
    finally:
        if admin is not None:
            with admin.begin() as conn:
                for name in schemas:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            admin.dispose()


class _CProfiler:
    """cProfile behind pyinstrument's start/stop/output_text."""

    def __init__(self, interval: float = 0.0) -> None:
        self._profile = cProfile.Profile()

    def start(self) -> None:
        self._profile.enable()

    def stop(self) -> None:
        self._profile.disable()

    def output_text(self, **_: Any) -> str:
        out = io.StringIO()
        pstats.Stats(self._profile, stream=out).sort_stats("tottime").print_stats(30)
        return out.getvalue()


def profile(vault: Vault, actor: Actor, people: list[dict[str, str]], operation: str,
            profiler_class: Any) -> None:
    # Warm up: compiled decisions, statement caches, keys.
    warm = vault.put_many(actor, "customers", people[:100], purpose=PURPOSE)
    vault.get_many(actor, "customers", warm, purpose=PURPOSE)
    profiler = profiler_class(interval=0.0005)
    ops = len(people)
    if operation == "put_many":
        profiler.start()
        start = time.perf_counter()
        vault.put_many(actor, "customers", people, purpose=PURPOSE)
    elif operation == "get_many":
        ids = vault.put_many(actor, "customers", people, purpose=PURPOSE)
        vault.get_many(actor, "customers", ids, purpose=PURPOSE)
        profiler.start()
        start = time.perf_counter()
        vault.get_many(actor, "customers", ids, purpose=PURPOSE)
    elif operation == "put":
        ops = min(300, len(people))
        profiler.start()
        start = time.perf_counter()
        for person in people[:ops]:
            vault.put(actor, "customers", person, purpose=PURPOSE)
    else:
        ops = min(300, len(people))
        ids = [vault.put(actor, "customers", p, purpose=PURPOSE) for p in people[:ops]]
        vault.get(actor, "customers", ids[0], purpose=PURPOSE)
        profiler.start()
        start = time.perf_counter()
        for rid in ids:
            vault.get(actor, "customers", rid, purpose=PURPOSE)
    elapsed = time.perf_counter() - start
    profiler.stop()
    print(f"{operation}: {elapsed:.3f} s, {elapsed / ops * 1e6:.0f} us per record "
          "(under the profiler)")
    print(profiler.output_text(unicode=False, color=False))


if __name__ == "__main__":
    main()
