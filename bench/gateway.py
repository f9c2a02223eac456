"""The gateway under load, beside a bare FastAPI + SQLAlchemy endpoint.

    python -m bench.gateway [--backend sqlite|postgres|all] [--records 2000]
                            [--requests 2000] [--seconds 20] [--clients 1,8,32]

Starts ``vault serve --workers 2`` and the bare peer (``bench.gateway_bare``,
uvicorn with 2 workers, the same rows in plaintext) on loopback ports; this
process is the load generator (threads, one keep-alive client each), bounded by
``--requests`` and ``--seconds`` per step. Prints requests per second and
p50/p99 latency of single-record GET, find by e-mail and a single update
(PATCH on the gateway, PUT on the peer) at each client count, and the ratios.
Goals (issue 14, PostgreSQL, 2 workers, 32 clients): audited GET at least 0.6x
the bare throughput, p99 at most 3x the bare p99.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from bench.gateway_bare import META, ROWS
from vault import Actor, Vault, VaultSettings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
H = {"X-Purpose": "account_management"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(argv: list[str], env: dict[str, str], url: str) -> Iterator[None]:
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO), **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"{argv[:4]} did not start") from None
                time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(20)


def _drive(make: Callable[[httpx.Client, int], httpx.Response], base: str, clients: int,
           requests: int, seconds: float) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 in ms."""
    latencies: list[float] = []
    lock = threading.Lock()
    count = [0]
    stop = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            while time.monotonic() < stop:
                with lock:
                    if count[0] >= requests:
                        return
                    count[0] += 1
                    n = count[0]
                t0 = time.perf_counter()
                r = make(c, n)
                dt_ms = (time.perf_counter() - t0) * 1000
                if r.status_code >= 400:
                    raise SystemExit(f"request failed: {r.status_code} {r.text[:200]}")
                with lock:
                    latencies.append(dt_ms)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, q[49], q[98]


def run_backend(name: str, args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="vault-bench-gw-"))
    env: dict[str, str] = {"VAULT_HOME": str(folder / "vault"),
                           "VAULT_POLICIES": str(REPO / "policies"),
                           "VAULT_GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
                           "VAULT_GATEWAY_SEARCH_RATE_LIMIT_PER_MINUTE": "0"}
    bare_url = f"sqlite:///{folder / 'bare.db'}"
    schemas: list[str] = []
    if name == "postgres":
        tag = uuid.uuid4().hex[:8]
        schemas = [f"bgw_{tag}_data", f"bgw_{tag}_keys", f"bgw_{tag}_bare"]
        admin = create_engine(args.pg_url)
        with admin.begin() as conn:
            for s in schemas:
                conn.execute(text(f'CREATE SCHEMA "{s}"'))
        sep = "&" if "?" in args.pg_url else "?"
        url = lambda s: f"{args.pg_url}{sep}options=-csearch_path%3D{s}"  # noqa: E731
        env["VAULT_DATABASE_URL"], env["VAULT_KEYSTORE_URL"] = url(schemas[0]), url(schemas[1])
        bare_url = url(schemas[2]).replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        settings = VaultSettings.build(home=folder / "vault", policies=REPO / "policies",
                                       database_url=env.get("VAULT_DATABASE_URL"),
                                       keystore_url=env.get("VAULT_KEYSTORE_URL"))
        with Vault.init(settings=settings) as v:
            v.roles.assign("crm", "crm_service", tenant="acme")
            _, key = v.identity.create_key("bench", actor_id="crm", tenant="acme")
            people = [{"full_name": f"Person {i}", "email": f"p{i}@example.com",
                       "country": "DE"} for i in range(args.records)]
            ids = v.put_many(Actor("crm", "acme"), "customers", people,
                             purpose="account_management")
        bare = create_engine(bare_url)
        META.create_all(bare)
        with bare.begin() as conn:
            conn.execute(ROWS.insert(), [{"id": i, **p} for i, p in zip(ids, people,
                                                                         strict=True)])
        bare.dispose()
        gw_port, bare_port = _port(), _port()
        gw, peer = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{bare_port}"
        auth = {**H, "Authorization": f"Bearer {key}"}
        with _server([sys.executable, "-c", "from vault.cli import main; main()", "serve",
                      "--port", str(gw_port), "--workers", "2"], env, gw), \
             _server([sys.executable, "-m", "uvicorn", "bench.gateway_bare:app_from_env",
                      "--factory", "--port", str(bare_port), "--workers", "2",
                      "--no-access-log", "--log-level", "warning"],
                     {"BENCH_BARE_URL": bare_url}, peer):
            # /healthz of the peer is a 404, which still says it is up.
            ops: dict[str, tuple[Callable[[httpx.Client, int], httpx.Response],
                                 Callable[[httpx.Client, int], httpx.Response]]] = {
                "GET": (lambda c, n: c.get(f"/v1/collections/customers/records/"
                                           f"{ids[n % len(ids)]}", headers=auth),
                        lambda c, n: c.get(f"/rows/{ids[n % len(ids)]}")),
                "find": (lambda c, n: c.post("/v1/collections/customers/records/search",
                                             json={"criteria": {"email": f"p{n % len(ids)}"
                                                                          "@example.com"}},
                                             headers=auth),
                         lambda c, n: c.post("/rows/search",
                                             json={"email": f"p{n % len(ids)}@example.com"})),
                "update": (lambda c, n: c.patch(f"/v1/collections/customers/records/"
                                                f"{ids[n % len(ids)]}",
                                                json={"data": {"country": "FR"}}, headers=auth),
                           lambda c, n: c.put(f"/rows/{ids[n % len(ids)]}",
                                              json={"country": "FR"})),
            }
            print(f"\n{name}: {args.records} records, 2 workers each")
            print(f"{'op':<7}{'clients':>8}{'gw rps':>10}{'bare rps':>10}{'ratio':>7}"
                  f"{'gw p50':>9}{'gw p99':>9}{'bare p99':>9}{'p99x':>7}")
            for op, (vault_call, bare_call) in ops.items():
                for clients in args.clients:
                    g = _drive(vault_call, gw, clients, args.requests, args.seconds)
                    b = _drive(bare_call, peer, clients, args.requests, args.seconds)
                    print(f"{op:<7}{clients:>8}{g[0]:>10.0f}{b[0]:>10.0f}{g[0] / b[0]:>7.2f}"
                          f"{g[1]:>9.1f}{g[2]:>9.1f}{b[2]:>9.1f}{g[2] / b[2]:>7.2f}")
    finally:
        if schemas:
            admin = create_engine(args.pg_url)
            with admin.begin() as conn:
                for s in schemas:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{s}" CASCADE'))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=2000, help="per step, at most")
    parser.add_argument("--seconds", type=float, default=20, help="per step, at most")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 8, 32])
    parser.add_argument("--pg-url", default=os.environ.get("VAULT_BENCH_POSTGRES_URL",
                                                           DEFAULT_PG))
    args = parser.parse_args(argv)
    for name in ("sqlite", "postgres") if args.backend == "all" else (args.backend,):
        run_backend(name, args)


if __name__ == "__main__":
    main()
