"""What a key provider costs: ``put_many`` of new subjects and a cold ``get_many``,
with the key file, a SoftHSM2 token (PKCS#11) and moto's KMS server (aws-kms).

Every record of the batch is a new subject, so ``put_many`` makes and wraps one
data key per record (the key file: AES key wrap in process; PKCS#11: one
``C_Encrypt`` in the token per key, under one lock per module; KMS: one
``GenerateDataKey`` HTTP call per key, 8 at a time). The cold ``get_many``
empties the data-key cache first, so every key is unwrapped again (PKCS#11
``C_Decrypt``; KMS ``Decrypt``, 8 at a time). A warm ``get_many`` (cache hit) costs
the same with every provider and is not repeated here: see the bulk figures.

SoftHSM2 runs in process and moto on loopback, so these figures are the
provider's *software* cost; a network HSM or the real AWS KMS adds its round
trip (typically 1-10 ms per KMS call within a region) to each call.
Providers that are not installed are left out, with the reason printed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vault import Actor, Vault, VaultSettings

TENANT = "acme"
PURPOSE = "account_management"
COLLECTION = "customers"
PIN = "135792468"
MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
           "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")


# The PKCS#11 library reads SOFTHSM2_CONF once, when the process first initialises
# it: every backend of one run uses the same token, made once, in a folder that
# lives as long as the process.
_TOKEN: list[str] = []


@contextmanager
def softhsm(folder: Path) -> Iterator[str | None]:
    """A SoftHSM2 token (made on first use, in a folder of its own for the process;
    ``folder`` is kept for the signature); yields a URI prefix (None when not
    installed)."""
    util = shutil.which("softhsm2-util")
    module = next((m for m in MODULES if Path(m).is_file()), None)
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        module = None
    if util is None or module is None:
        print("  pkcs11: skipped (softhsm2 or python-pkcs11 missing)", flush=True)
        yield None
        return
    if not _TOKEN:
        home = Path(tempfile.mkdtemp(prefix="bench-softhsm-"))
        (home / "tokens").mkdir()
        conf = home / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {home / 'tokens'}\n"
                        "objectstore.backend = file\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        subprocess.run([util, "--init-token", "--free", "--label", "bench", "--pin", PIN,
                        "--so-pin", PIN], check=True, capture_output=True)
        (home / "pin").write_text(PIN)
        _TOKEN.append(f"pkcs11:token=bench;object={{label}}?module-path={module}"
                      f"&pin-source=file:{home / 'pin'}")
    yield _TOKEN[0]


@contextmanager
def moto() -> Iterator[str | None]:
    """moto's KMS server on a loopback port, boto3 pointed at it; yields a URI prefix."""
    try:
        import boto3  # noqa: F401
        import moto as _moto  # noqa: F401
    except ImportError:
        print("  aws-kms: skipped (boto3 or moto missing)", flush=True)
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    command = [str(server)] if server.exists() else [sys.executable, "-m", "moto.server"]
    process = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_DEFAULT_REGION")
    saved = {n: os.environ.get(n) for n in names}
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1"})
        yield "aws-kms:alias/{label}"
    finally:
        process.terminate()
        process.wait(10)
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def measure(open_vault: Callable[[str | None], tuple[Vault, dict[str, Any]]],
            uris: dict[str, str | None], people: list[dict[str, str]], repeat: int,
            timed: Callable[[Callable[[], Any]], tuple[float, Any]],
            samples: Callable[[], Any]) -> dict[str, Any]:
    """put_many of new subjects and cold get_many, per provider, interleaved."""
    actor = Actor("crm", TENANT)
    vaults = {kind: open_vault(uri)[0] for kind, uri in uris.items()}
    puts = {kind: samples() for kind in vaults}
    gets = {kind: samples() for kind in vaults}
    try:
        for v in vaults.values():  # warm: connections, the token's login, KMS aliases
            v.get_many(actor, COLLECTION, v.put_many(actor, COLLECTION, people[:20],
                                                     purpose=PURPOSE), purpose=PURPOSE)
        order = list(vaults)
        for rep in range(repeat):
            for kind in order[rep % len(order):] + order[:rep % len(order)]:
                v = vaults[kind]
                seconds, ids = timed(lambda v=v: v.put_many(actor, COLLECTION, people,
                                                            purpose=PURPOSE))
                puts[kind].add(seconds)
                v.keystore.clear_cache()
                seconds, got = timed(lambda v=v, ids=ids: v.get_many(
                    actor, COLLECTION, ids, purpose=PURPOSE))
                gets[kind].add(seconds)
                if [dict(r.data) for r in got] != people:
                    raise SystemExit(f"WRONG RESULT: {kind}: values read back differ")
    finally:
        for v in vaults.values():
            v.close()
    return {"records": len(people),
            "put_many": {k: s.summary() for k, s in puts.items()},
            "cold_get_many": {k: s.summary() for k, s in gets.items()}}


def label() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def settings_with(values: dict[str, Any], uri: str | None) -> VaultSettings:
    return VaultSettings.build(**values, key_provider=uri)
