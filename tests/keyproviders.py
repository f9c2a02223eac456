"""Real key providers for tests: a SoftHSM2 token and moto's KMS in server mode.

Neither is a mock of Vault's code: SoftHSM2 is a PKCS#11 implementation loaded
by python-pkcs11 as an HSM's module would be, and ``moto_server`` is a KMS
emulation reached over HTTP on loopback by boto3, as AWS would be.

- :class:`SoftHSM` makes one token per test session in a temporary folder
  (``SOFTHSM2_CONF`` points at a config of its own, set before the module is
  first loaded); each vault gets its own KEK object label in it.
- :class:`MotoKMS` runs ``moto_server`` on 127.0.0.1 (a free port), points
  boto3's standard configuration at it (``AWS_ENDPOINT_URL``, test
  credentials, a region) for the session, and stops it at the end.

Without softhsm2-util, the SoftHSM2 module or python-pkcs11 the PKCS#11 tests
skip, saying which is missing; with ``VAULT_REQUIRE_HSM=1`` (as in CI) they
fail instead. The same for moto/boto3 and ``VAULT_REQUIRE_KMS=1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_HSM = os.environ.get("VAULT_REQUIRE_HSM") == "1"
REQUIRE_KMS = os.environ.get("VAULT_REQUIRE_KMS") == "1"
PIN = "86421357"
SO_PIN = "97531246"
MODULE_CANDIDATES = (
    os.environ.get("VAULT_TEST_PKCS11_MODULE", ""),
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def _skip_or_fail(reason: str, required: bool, variable: str) -> None:
    if required:
        pytest.fail(f"{reason}; {variable}=1 demands it")
    pytest.skip(reason)


@dataclass
class SoftHSM:
    """A SoftHSM2 token made for this test session."""

    folder: Path
    module: str
    token: str
    pin_file: Path
    #: A second token, for a test that takes it away (SoftHSM2 sees only the
    #: tokens that existed when the module was initialised).
    spare: str

    def uri(self, object_label: str | None = None, *, token: str | None = None,
            pin_file: Path | None = None) -> str:
        """A ``key_provider`` URI for a new KEK label (or the one given)."""
        label = object_label or f"kek-{uuid.uuid4().hex[:12]}"  # a KEK per vault
        return (f"pkcs11:token={token or self.token};object={label}"
                f"?module-path={self.module}&pin-source=file:{pin_file or self.pin_file}")


    def take_away(self, token: str) -> None:
        """Delete a token's files, as if it were pulled out: SoftHSM2 invalidates its
        objects at once (the token folder holds one folder per token)."""
        for folder in (self.folder / "tokens").iterdir():
            info = folder / "token.object"
            if info.exists() and token.encode() in info.read_bytes():
                shutil.rmtree(folder)


def find_module() -> str | None:
    return next((m for m in MODULE_CANDIDATES if m and Path(m).is_file()), None)


def start_softhsm(folder: Path) -> SoftHSM:
    """Make a token in ``folder`` (skips or fails when SoftHSM2 is not installed)."""
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        _skip_or_fail("python-pkcs11 is not installed (pip install 'vault[hsm]')",
                      REQUIRE_HSM, "VAULT_REQUIRE_HSM")
    util = shutil.which("softhsm2-util")
    module = find_module()
    if util is None or module is None:
        _skip_or_fail("SoftHSM2 is not installed (apt-get install softhsm2): "
                      f"softhsm2-util {'found' if util else 'missing'}, "
                      f"module {'found' if module else 'missing'}",
                      REQUIRE_HSM, "VAULT_REQUIRE_HSM")
    assert util is not None and module is not None
    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label = f"vault-test-{uuid.uuid4().hex[:8]}"
    for name in (label, f"{label}-spare"):
        subprocess.run([util, "--init-token", "--free", "--label", name, "--pin", PIN,
                        "--so-pin", SO_PIN], check=True, capture_output=True)
    pin_file = folder / "pin"
    pin_file.write_text(PIN)
    pin_file.chmod(0o600)
    return SoftHSM(folder=folder, module=module, token=label, pin_file=pin_file,
                   spare=f"{label}-spare")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoKMS:
    """``moto_server`` on loopback with boto3 pointed at it."""

    endpoint: str
    process: subprocess.Popen[bytes]

    def uri(self, alias: str | None = None) -> str:
        return f"aws-kms:alias/{alias or 'vault-' + uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "AWS_DEFAULT_REGION", "AWS_REGION")


def start_moto(*, configure_env: bool = True) -> MotoKMS:
    """Start ``moto_server`` on a free loopback port (skips or fails without moto);
    ``configure_env``: point boto3's standard configuration at it."""
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
    except ImportError:
        _skip_or_fail("boto3 and moto[server] are not installed (pip install 'vault[dev]')",
                      REQUIRE_KMS, "VAULT_REQUIRE_KMS")
    server = Path(sys.executable).with_name("moto_server")
    command = [str(server)] if server.exists() else [sys.executable, "-m", "moto.server"]
    port = _free_port()
    process = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail("moto_server exited at start")
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("moto_server did not answer within 30 s")
    endpoint = f"http://127.0.0.1:{port}"
    if not configure_env:
        return MotoKMS(endpoint=endpoint, process=process)
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_REGION": "us-east-1"})
    return MotoKMS(endpoint=endpoint, process=process)
