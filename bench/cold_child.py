"""One fresh-process read of bench/shapes.py's ``cold`` figure.

    python -m bench.cold_child JOB.json vault|orm

Opens the vault (or the peer's engine), reads one record that is not measured,
then times the read of the batch and prints its seconds on the last line. Exits
with status 1 (``WRONG RESULT``) if a value read back differs from the input.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import structlog

from bench.measure import check
from bench.peers import PlainPeer
from bench.shapes import reader
from vault import Vault, VaultSettings
from vault.store.engine import make_engine

COLLECTION = "customers"


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    who = sys.argv[2]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if who == "vault":
        with Vault.open(settings=VaultSettings.build(**job["settings"])) as vault:
            actor = reader(job["actor"])
            vault.get_many(actor, COLLECTION, [job["vault_warm"]], purpose=job["purpose"])
            start = time.perf_counter()
            records = vault.get_many(actor, COLLECTION, job["vault_ids"],
                                     purpose=job["purpose"])
            read = [dict(r.data) for r in records]
            seconds = time.perf_counter() - start
    else:
        engine = make_engine(job["peer_url"])
        plain = PlainPeer(engine)
        plain.orm_read([job["orm_warm"]])
        start = time.perf_counter()
        read = plain.orm_read(job["orm_ids"])
        seconds = time.perf_counter() - start
        engine.dispose()
    check(read == job["expected"], f"fresh process, {who}: values read back differ")
    print(seconds)


if __name__ == "__main__":
    main()
