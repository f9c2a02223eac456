"""A real ``vault serve`` in a subprocess on a free loopback port, for the
end-to-end, TLS and scale-out tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.gateway.conftest import AUDIENCE, ISSUER, STEP_UP_SECRET, Issuer
from vault import VaultSettings

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def server_env(settings: VaultSettings, issuer: Issuer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update({
        "PYTHONPATH": str(REPO), "VAULT_HOME": str(settings.home),
        "VAULT_POLICIES": str(settings.resolved_policies),
        "VAULT_POLICY_REFRESH_SECONDS": str(settings.policy_refresh_seconds),
        "VAULT_GATEWAY_JWKS_FILE": str(issuer.jwks_file),
        "VAULT_GATEWAY_JWT_ISSUER": ISSUER, "VAULT_GATEWAY_JWT_AUDIENCE": AUDIENCE,
        "VAULT_GATEWAY_STEP_UP_SECRET": STEP_UP_SECRET,
    })
    if settings.database_url:
        env["VAULT_DATABASE_URL"] = settings.database_url
    if settings.keystore_url:
        env["VAULT_KEYSTORE_URL"] = settings.keystore_url
    return env


@contextmanager
def vault_serve(settings: VaultSettings, issuer: Issuer, log: Path, *extra: str,
                verify: ssl.SSLContext | bool = False) -> Iterator[Served]:
    """Start ``vault serve`` and wait until /healthz answers; stop it afterwards."""
    port = free_port()
    tls = "--tls-cert" in extra
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from vault.cli import main; main()", "serve",
             "--port", str(port), *extra],
            env=server_env(settings, issuer), stdout=out, stderr=subprocess.STDOUT)
    served = Served(url, log, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"vault serve exited: {served.log_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", verify=verify, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"vault serve never answered: {served.log_text()[-2000:]}")
            time.sleep(0.2)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
