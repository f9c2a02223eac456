"""The shapes of work a CRM gives Vault, so that no single shape is tuned.

- :func:`shapes` (``--only shapes``): ``put_many`` and ``get_many`` in batches of
  100, 1,000 and ``--records`` (10,000), each against the plain ORM peer on the
  same backend; subjects with one record each and subjects with 10 records
  each; read by a role that may read 3 fields (full name, e-mail, phone) and by
  one that reads all 8, the sensitive ``national_id`` included.
- :func:`cold` (``--only cold``): ``get_many`` in a fresh process, so that every
  data key is unwrapped from the key store (the key file's KEK) on the way,
  against the plain ORM read in a fresh process.
- :func:`decrypt_cost` (``--only decrypt``): the Python work per decrypted field
  beside the AES-GCM call itself: Vault's per-record view (seal check, framing,
  associated data, decode, ``Record``) against the bare ``AESGCM.decrypt``
  calls of the same fields, with the same inputs.

Every value read back is compared with what was written; a difference fails the run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Engine

from bench.data import CONTACT_FIELDS, FIELDS, SENSITIVE_FIELDS
from bench.measure import Samples, check, timed
from bench.peers import PlainPeer
from vault import Actor, SecondFactor, Vault
from vault.crypto.envelope import HEADER_BYTES, AESGCMFieldCipher, RecordContext
from vault.crypto.framing import decode_envelopes
from vault.records.sealing import Sealer, visible_fields
from vault.records.service import load_rows

__all__ = ["READERS", "SUBJECT_SHAPES", "cold", "decrypt_cost", "reader", "shapes"]

TENANT = "acme"
COLLECTION = "customers"
WRITER = ("crm", "account_management")
#: reader label -> (actor id, role, purpose, the fields it reads)
READERS = {
    "3 fields": ("bench-contacts", "bench_contacts", "account_management", CONTACT_FIELDS),
    "all 8 (sensitive incl.)": ("bench-full", "bench_full", "legal_obligation",
                                SENSITIVE_FIELDS),
}
#: subject shape label -> records per subject
SUBJECT_SHAPES = {"1 record/subject": 1, "10 records/subject": 10}


def reader(actor_id: str) -> Actor:
    """A reader who proved a second factor (step-up): the all-8 reader reads the
    sensitive ``national_id``, which the default step-up rule leaves out otherwise."""
    return Actor(actor_id, TENANT, second_factor=SecondFactor("totp", dt.datetime.now(dt.UTC)))


def _subject_ids(count: int, per_subject: int) -> list[str | None] | None:
    if per_subject == 1:
        return None  # a new subject per record, ids made by Vault
    tag = uuid.uuid4().hex[:12]
    return [f"s{tag}{n // per_subject:06d}" for n in range(count)]


def shapes(vault: Vault, engine: Engine, people: list[dict[str, str]], sizes: list[int],
           repeat: int) -> dict[str, Any]:
    """Every (batch size, subject shape) put_many and every reader's get_many of it,
    each interleaved with the plain ORM peer's; ``people`` carry SENSITIVE_FIELDS."""
    writer = Actor(WRITER[0], TENANT)
    for actor_id, role, _purpose, _fields in READERS.values():
        vault.roles.assign(actor_id, role, tenant=TENANT)
    plain = PlainPeer(engine)
    warm = people[:50]
    ids = vault.put_many(writer, COLLECTION, warm, purpose=WRITER[1])
    for actor_id, _role, purpose, fields in READERS.values():
        vault.get_many(reader(actor_id), COLLECTION, ids, purpose=purpose)
        plain.orm_read(plain.orm_insert(warm), fields)
    out: dict[str, Any] = {}
    for size in sizes:
        batch = people[:size]
        expected = {label: [{f: p[f] for f in r[3]} for p in batch]
                    for label, r in READERS.items()}
        for shape, per_subject in SUBJECT_SHAPES.items():
            puts = {k: Samples() for k in ("vault", "orm")}
            gets = {label: {k: Samples() for k in ("vault", "orm")} for label in READERS}
            for rep in range(repeat):
                order = ["vault", "orm"] if rep % 2 == 0 else ["orm", "vault"]
                written: dict[str, list[str]] = {}
                for who in order:
                    if who == "vault":
                        subjects = _subject_ids(size, per_subject)
                        seconds, written[who] = timed(lambda s=subjects, b=batch: vault.put_many(
                            writer, COLLECTION, b, purpose=WRITER[1], subject_ids=s))
                    else:
                        seconds, written[who] = timed(lambda b=batch: plain.orm_insert(b))
                    puts[who].add(seconds)
                for label, (actor_id, _role, purpose, fields) in READERS.items():
                    who_reads = reader(actor_id)
                    for who in order:
                        if who == "vault":
                            seconds, read = timed(lambda r=who_reads, p=purpose, w=written: [
                                dict(x.data) for x in vault.get_many(
                                    r, COLLECTION, w["vault"], purpose=p)])
                        else:
                            seconds, read = timed(lambda f=fields, w=written: plain.orm_read(
                                w["orm"], f))
                        gets[label][who].add(seconds)
                        check(read == expected[label],
                              f"{who}, {size:,} records, {shape}, {label}: values read "
                              "back differ from the inputs")
            out.setdefault(str(size), {})[shape] = {
                "put_many": {k: s.summary() for k, s in puts.items()},
                "get_many": {label: {k: s.summary() for k, s in g.items()}
                             for label, g in gets.items()},
            }
            put_x = puts["orm"].median / puts["vault"].median
            print(f"  {size:>6,} records, {shape}: put_many {put_x:.2f}x the ORM; get_many "
                  + ", ".join(f"{label} {g['orm'].median / g['vault'].median:.2f}x"
                              for label, g in gets.items()), flush=True)
    return out


# -- a fresh process ------------------------------------------------------------------


def cold(vault: Vault, values: dict[str, Any], engine: Engine, people: list[dict[str, str]],
         repeat: int, folder: Path) -> dict[str, Any]:
    """get_many of len(people) records (one subject each) in a fresh process, against
    the plain ORM read in a fresh process. Each child opens its vault or engine and
    reads one record that is not measured (decisions compiled, statements cached,
    connections open: what any process has done after its first request), then
    times the read of the batch, whose every data key it must unwrap."""
    writer = Actor(WRITER[0], TENANT)
    plain = PlainPeer(engine)
    vault_ids = vault.put_many(writer, COLLECTION, [*people, people[0]], purpose=WRITER[1])
    orm_ids = plain.orm_insert([*people, people[0]])
    job = folder / f"cold-{uuid.uuid4().hex[:8]}.json"
    job.write_text(json.dumps({
        "settings": values, "peer_url": engine.url.render_as_string(hide_password=False),
        "vault_ids": vault_ids[:-1], "vault_warm": vault_ids[-1],
        "orm_ids": orm_ids[:-1], "orm_warm": orm_ids[-1], "expected": people,
        "purpose": WRITER[1], "actor": WRITER[0],
    }))
    samples = {k: Samples() for k in ("vault", "orm")}
    for rep in range(repeat):
        for who in (("vault", "orm") if rep % 2 == 0 else ("orm", "vault")):
            done = subprocess.run([sys.executable, "-m", "bench.cold_child", str(job), who],
                                  capture_output=True, text=True,
                                  cwd=Path(__file__).resolve().parents[1])
            if done.returncode != 0:
                sys.stderr.write(done.stdout + done.stderr)
                check(False, f"the fresh-process {who} read failed (see above)")
            samples[who].add(float(done.stdout.strip().splitlines()[-1]))
    job.unlink()
    return {"records": len(people), **{k: s.summary() for k, s in samples.items()}}


# -- Python work per decrypted field --------------------------------------------------


def decrypt_cost(vault: Vault, people: list[dict[str, str]], repeat: int) -> dict[str, Any]:
    """Per decrypted field: Vault's view of a record (``Sealer.view``: seal check,
    framing, associated data, AES-GCM, decode, ``Record``) against the bare AES-GCM
    calls alone (the same nonces, ciphertexts and associated data, prepared
    beforehand), on records of the 8 benchmark fields read by a role that may read
    them all. The seal's AES-GCM call and SHA-256 are timed apart, as crypto."""
    writer = Actor(WRITER[0], TENANT)
    ids = vault.put_many(writer, COLLECTION, people, purpose=WRITER[1])
    schema = vault.schemas.get(COLLECTION)
    with vault.engine.connect() as conn:
        loaded = load_rows(conn, TENANT, COLLECTION, ids)
    rows = [loaded[i] for i in ids]
    keys = vault.keystore.get_keys(TENANT, list(dict.fromkeys(r.subject_id for r in rows)))
    readable = vault.policy_engine.allowed_fields(
        writer.id, TENANT, COLLECTION, "read", WRITER[1], schema.field_names)
    check(set(FIELDS) <= readable, "the writer may not read every benchmark field")
    maskable: frozenset[str] = frozenset()
    requested = schema.field_names
    visible = visible_fields(requested, readable, maskable)
    # The view Vault's get_many runs per record (the sealer needs only a cipher).
    sealer = Sealer(SimpleNamespace(cipher=AESGCMFieldCipher(), indexer=None))  # type: ignore[arg-type]
    # The bare calls, prepared: per field (aead.decrypt, nonce, ciphertext+tag, AD).
    fields: list[tuple[Any, bytes, bytes, bytes]] = []
    seals: list[tuple[Any, bytes, bytes, bytes]] = []
    framed_all: list[bytes] = []
    for row in rows:
        key = keys[row.subject_id]
        context = RecordContext(TENANT, COLLECTION, row.id, row.subject_id)
        for name, env in decode_envelopes(row.envelopes).items():
            fields.append((key.aead.decrypt, env[10:HEADER_BYTES], env[HEADER_BYTES:],
                           env[:HEADER_BYTES] + context.tail(name)))
        seal = bytes(row.seal)
        framed = bytes(row.envelopes)
        framed_all.append(framed)
        seals.append((key.aead.decrypt, seal[10:HEADER_BYTES], seal[HEADER_BYTES:],
                      context.seal_data(seal[:HEADER_BYTES], row.version, framed)))
    view_s, aes_s, seal_s, sha_s = Samples(), Samples(), Samples(), Samples()
    for _ in range(max(repeat, 3)):
        start = time.perf_counter()
        records = [sealer.view(keys[row.subject_id], TENANT, schema, row, readable, maskable,
                               requested, visible) for row in rows]
        view_s.add(time.perf_counter() - start)
        check([dict(r.data) for r in records] == people,
              "decrypt: values read back differ from the inputs")
        start = time.perf_counter()
        for decrypt, nonce, body, ad in fields:
            decrypt(nonce, body, ad)
        aes_s.add(time.perf_counter() - start)
        start = time.perf_counter()
        for decrypt, nonce, body, ad in seals:
            decrypt(nonce, body, ad)
        seal_s.add(time.perf_counter() - start)
        start = time.perf_counter()
        for framed in framed_all:
            hashlib.sha256(framed).digest()
        sha_s.add(time.perf_counter() - start)
    n = len(fields)
    per = {name: s.median / n * 1e6 for name, s in
           (("view", view_s), ("aes", aes_s), ("seal", seal_s), ("sha256", sha_s))}
    python = per["view"] - per["aes"] - per["seal"] - per["sha256"]
    return {"records": len(rows), "fields": n, "view_us_per_field": per["view"],
            "aes_us_per_field": per["aes"], "seal_aes_us_per_field": per["seal"],
            "seal_sha256_us_per_field": per["sha256"], "python_us_per_field": python,
            "python_over_aes": python / per["aes"],
            "view_s": view_s.summary(), "aes_s": aes_s.summary()}
