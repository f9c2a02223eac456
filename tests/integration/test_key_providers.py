"""Key providers (issue 17) against real parts: a SoftHSM2 token through python-pkcs11,
and moto's KMS in server mode on loopback through boto3.

The data path, rotation, shredding and restore tests of the key file run on these
providers too (modules marked ``key_providers``); this file holds what is
particular to them: the KEK's attributes in the token, no key material on disk,
the binding of a wrapped key to its subject, the failures (token missing, wrong
PIN, KMS endpoint down, wrong encryption context), fork and threads, and the
migration between providers.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text

from vault import Vault, VaultSettings
from vault.crypto.keys import KeyContext, KeyProvider
from vault.crypto.providers import open_provider, parse_provider_uri
from vault.errors import ConfigError, KeyManagementError, KeyProviderUnavailable
from vault.store.models import AuditEntryRow

from ..conftest import POLICIES, ROLE_USERS
from ..keyproviders import PIN, MotoKMS, SoftHSM, start_moto
from .test_data_path import CRM, customer

PURPOSE = "account_management"


def _provider(uri: str, **kw: Any) -> KeyProvider:
    return open_provider(parse_provider_uri(uri), key_file=Path("/nonexistent"), **kw)


def _settings(tmp_path: Path, uri: str | None, **extra: Any) -> VaultSettings:
    return VaultSettings.build(home=tmp_path / "vault", policies=POLICIES,
                               policy_refresh_seconds=0.05, key_provider=uri, **extra)


def _init(settings: VaultSettings) -> Vault:
    v = Vault.init(settings=settings)
    for user, role in ROLE_USERS.items():
        v.roles.assign(user, role, tenant="acme")
    return v


def _entries(v: Vault, action: str) -> list[Any]:
    t = AuditEntryRow.__table__
    with v.engine.connect() as conn:
        return list(conn.execute(select(t).where(t.c.action == action).order_by(t.c.seq)))


def _files_under(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        if path.is_file():
            yield path


@pytest.fixture
def hsm_vault(softhsm: SoftHSM, tmp_path: Path) -> Iterator[Vault]:
    with _init(_settings(tmp_path, softhsm.uri())) as v:
        yield v


@pytest.fixture
def kms_vault(moto_kms: MotoKMS, tmp_path: Path) -> Iterator[Vault]:
    with _init(_settings(tmp_path, moto_kms.uri())) as v:
        yield v


# ---------------------------------------------------------------- PKCS#11: the KEK


def test_the_kek_is_sensitive_unextractable_and_nothing_secret_is_on_disk(
        softhsm: SoftHSM, hsm_vault: Vault, tmp_path: Path) -> None:
    """The KEK was generated in the token, sensitive and never extractable; its value
    cannot be read; a PKCS#11 vault has no key file, and neither its root keys nor
    a data key are in any file of the vault (the key store holds them wrapped)."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass
    from pkcs11.exceptions import AttributeSensitive

    from vault.crypto.pkcs11_provider import PKCS11KeyProvider

    rid = hsm_vault.put(CRM, "customers", customer(1), purpose=PURPOSE)
    assert hsm_vault.get(CRM, "customers", rid, purpose=PURPOSE).data["email"] == (
        "li.wei1@example.cn")
    uri = hsm_vault.keys.status().providers[0].uri
    provider = _provider(uri)
    assert isinstance(provider, PKCS11KeyProvider)
    try:
        assert provider.key_attributes(1) == {
            "sensitive": True, "extractable": False, "always_sensitive": True,
            "never_extractable": True, "token": True, "local": True}
        label = parse_provider_uri(uri).attributes["object"]
        token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token)
        with token.open() as session:  # logged in already by the provider (same process)
            (kek,) = session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                          Attribute.LABEL: label})
            with pytest.raises(AttributeSensitive):
                kek[Attribute.VALUE]
        # What the vault holds on disk: no key file; no unwrapped key in any file.
        home = hsm_vault.settings.home
        assert not hsm_vault.settings.resolved_key_file.exists()
        assert not [p for p in _files_under(home) if "key" in p.name and p.suffix == ".json"]
        roots = hsm_vault.keystore.root_keys()
        with hsm_vault.keystore.engine.connect() as conn:
            row = conn.execute(text("SELECT tenant, subject_id, kek_version, wrapped "
                                    "FROM data_keys")).one()
        dek = provider.unwrap(row.kek_version, row.wrapped, context=KeyContext(
            hsm_vault.vault_id, row.tenant, row.subject_id))
        hsm_vault.close()  # flush the WALs, so every byte is in the files scanned
        secrets_ = [dek, *roots.items().values()]
        for path in _files_under(tmp_path):
            data = path.read_bytes()
            assert not any(s in data for s in secrets_), f"key material in {path.name}"
    finally:
        provider.close()


def test_a_wrapped_key_is_bound_to_vault_tenant_subject_and_version(
        softhsm: SoftHSM) -> None:
    """AES-GCM in the token with the context as associated data: any other vault,
    tenant, subject or KEK version, and any altered byte, is refused."""
    provider = _provider(softhsm.uri(), create=True, pin=None)
    try:
        dek = secrets.token_bytes(32)
        ctx = KeyContext("v1", "acme", "s1")
        version, wrapped = provider.wrap(dek, context=ctx)
        assert len(wrapped) == 61 and dek not in wrapped
        assert provider.unwrap(version, wrapped, context=ctx) == dek
        assert provider.wrap(dek, context=ctx)[1] != wrapped  # a fresh nonce each time
        for other in (KeyContext("v2", "acme", "s1"), KeyContext("v1", "other", "s1"),
                      KeyContext("v1", "acme", "s2")):
            with pytest.raises(KeyManagementError, match="integrity"):
                provider.unwrap(version, wrapped, context=other)
        for i in range(len(wrapped)):
            damaged = bytearray(wrapped)
            damaged[i] ^= 1
            with pytest.raises(KeyManagementError):
                provider.unwrap(version, bytes(damaged), context=ctx)
        assert provider.rotate() == version + 1
        with pytest.raises(KeyManagementError):  # sealed under v1, claimed to be v2
            provider.unwrap(version + 1, wrapped, context=ctx)
        with pytest.raises(KeyManagementError, match="key context"):
            provider.wrap(dek)
    finally:
        provider.close()


def _unwrap_in_child(uri: str, version: int, wrapped: bytes, conn: Any) -> None:
    provider = _PROVIDER_FOR_CHILD[0]
    assert provider.describe() == uri
    try:
        conn.send(provider.unwrap(version, wrapped, context=KeyContext("v", "t", "s")))
    except Exception as exc:  # report it to the parent instead of dying silently
        conn.send(repr(exc))
    conn.close()


_PROVIDER_FOR_CHILD: list[KeyProvider] = []


def test_a_forked_child_initialises_the_library_again(softhsm: SoftHSM) -> None:
    """The provider made in the parent unwraps in a forked child (which re-initialises
    the PKCS#11 library and logs in again), and still in the parent afterwards."""
    provider = _provider(softhsm.uri(), create=True)
    try:
        dek = secrets.token_bytes(32)
        version, wrapped = provider.wrap(dek, context=KeyContext("v", "t", "s"))
        _PROVIDER_FOR_CHILD[:] = [provider]
        ctx = multiprocessing.get_context("fork")
        here, there = ctx.Pipe()
        child = ctx.Process(target=_unwrap_in_child,
                            args=(provider.describe(), version, wrapped, there))
        child.start()
        got = here.recv() if here.poll(30) else "no answer"
        child.join(30)
        assert got == dek
        assert provider.unwrap(version, wrapped, context=KeyContext("v", "t", "s")) == dek
    finally:
        _PROVIDER_FOR_CHILD.clear()
        provider.close()


def test_sessions_are_pooled_for_many_threads(softhsm: SoftHSM) -> None:
    """Eight threads wrapping and unwrapping at once each get a session of their own."""
    provider = _provider(softhsm.uri(), create=True)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(40):
                ctx = KeyContext("v", "t", f"s{n}-{i}")
                dek = secrets.token_bytes(32)
                version, wrapped = provider.wrap(dek, context=ctx)
                assert provider.unwrap(version, wrapped, context=ctx) == dek
        except BaseException as exc:  # collected: an assertion in a thread is lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
    finally:
        provider.close()


# ---------------------------------------------------------------- failures


def _last_error(v: Vault, action: str) -> Any:
    rows = [r for r in _entries(v, action) if r.decision == "error"]
    assert rows, f"no {action} error audited"
    return rows[-1]


def test_a_token_taken_away_fails_closed_and_is_audited(softhsm: SoftHSM,
                                                        tmp_path: Path) -> None:
    """Once the token is gone, a read that needs a new unwrap raises
    KeyProviderUnavailable (typed), returns nothing and is audited; a key unwrapped
    before keeps serving from the cache until its TTL, as documented; a write of a
    new subject (which needs a wrap) is refused and audited too."""
    v = _init(_settings(tmp_path, softhsm.uri(token=softhsm.spare)))
    try:
        cold = v.put(CRM, "customers", customer(1), purpose=PURPOSE)
        warm = v.put(CRM, "customers", customer(2), purpose=PURPOSE)
        v.keystore.clear_cache()
        v.get(CRM, "customers", warm, purpose=PURPOSE)  # its key is cached now
        softhsm.take_away(softhsm.spare)
        with pytest.raises(KeyManagementError) as caught:
            v.get(CRM, "customers", cold, purpose=PURPOSE)
        assert isinstance(caught.value, KeyProviderUnavailable)
        assert PIN not in str(caught.value)
        entry = _last_error(v, "read")
        assert entry.reason == "key_provider_unavailable" and cold in entry.record_ids
        # The cached key still serves (until the cache TTL, 300 s by default).
        assert v.get(CRM, "customers", warm, purpose=PURPOSE).data["email"] == (
            "li.wei2@example.cn")
        with pytest.raises(KeyManagementError):
            v.put(CRM, "customers", customer(3), purpose=PURPOSE)
        assert _last_error(v, "write").reason in ("key_provider_unavailable",
                                                  "key_management_error")
    finally:
        v.close()


def test_a_token_missing_at_open_is_refused_and_audited(softhsm: SoftHSM,
                                                        tmp_path: Path) -> None:
    """A URI naming a token that is not there: KeyProviderUnavailable, no vault, and
    the refused open is in the audit log."""
    settings = _settings(tmp_path, softhsm.uri())
    _init(settings).close()
    missing = settings.model_copy(update={"key_provider": softhsm.uri(
        parse_provider_uri(settings.key_provider).attributes["object"],
        token="no-such-token")})
    with pytest.raises(KeyProviderUnavailable, match="not present"):
        Vault.open(settings=missing)
    with Vault.open(settings=settings) as v:
        assert _last_error(v, "vault.open").reason == "keys:key_provider_unavailable"


def test_a_wrong_pin_is_refused_and_audited(softhsm: SoftHSM, tmp_path: Path) -> None:
    """The PIN from VAULT_PKCS11_PIN (the pkcs11_pin setting): a wrong one is refused
    with KeyProviderUnavailable (never echoed), the attempt audited; the right one opens."""
    uri = softhsm.uri().split("&pin-source=")[0]
    good = _settings(tmp_path, uri, pkcs11_pin=PIN)
    assert "86421357" not in repr(good) and isinstance(good.pkcs11_pin, SecretStr)
    _init(good).close()
    bad = good.model_copy(update={"pkcs11_pin": SecretStr("11112222")})
    with pytest.raises(KeyProviderUnavailable, match="PIN") as caught:
        Vault.open(settings=bad)
    assert "11112222" not in str(caught.value)
    with Vault.open(settings=good) as v:
        assert _last_error(v, "vault.open").reason == "keys:key_provider_unavailable"
    with pytest.raises(ConfigError, match="PIN"):
        VaultSettings.build(home=tmp_path, key_provider=uri + "&pin-value=1234")


def test_a_kms_endpoint_down_fails_closed_and_is_audited(
        moto_kms: MotoKMS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KMS that stops answering: the next read that needs an unwrap raises
    KeyProviderUnavailable, returns nothing and is audited; so does an open."""
    own = start_moto(configure_env=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", own.endpoint)
    try:
        settings = _settings(tmp_path, own.uri())
        v = _init(settings)
        rid = v.put(CRM, "customers", customer(1), purpose=PURPOSE)
        v.keystore.clear_cache()
    finally:
        own.stop()
    try:
        with pytest.raises(KeyProviderUnavailable, match="cannot be reached"):
            v.get(CRM, "customers", rid, purpose=PURPOSE)
        assert _last_error(v, "read").reason == "key_provider_unavailable"
    finally:
        v.close()
    with pytest.raises(KeyProviderUnavailable):
        Vault.open(settings=settings)


@pytest.mark.parametrize("kind", ["pkcs11", "aws-kms"])
def test_a_wrapped_key_under_another_subjects_context_is_refused(
        request: pytest.FixtureRequest, kind: str) -> None:
    """A wrapped data key copied into another subject's row (same KEK) does not
    unwrap: the binding (GCM associated data, KMS encryption context) refuses it;
    KeyManagementError, nothing returned, audited."""
    v: Vault = request.getfixturevalue("hsm_vault" if kind == "pkcs11" else "kms_vault")
    rid_a = v.put(CRM, "customers", customer(1), purpose=PURPOSE, subject_id="s-a")
    rid_b = v.put(CRM, "customers", customer(2), purpose=PURPOSE, subject_id="s-b")
    with v.keystore.engine.begin() as conn:
        conn.execute(text("UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys "
                          "WHERE subject_id = 's-a') WHERE subject_id = 's-b'"))
    v.keystore.clear_cache()
    with pytest.raises(KeyManagementError, match="integrity") as caught:
        v.get(CRM, "customers", rid_b, purpose=PURPOSE)
    assert not isinstance(caught.value, KeyProviderUnavailable)
    entry = _last_error(v, "read")
    assert entry.reason == "key_management_error" and rid_b in entry.record_ids
    assert v.get(CRM, "customers", rid_a, purpose=PURPOSE).data["email"] == (
        "li.wei1@example.cn")


# ---------------------------------------------------------------- KMS


def test_kms_keys_come_from_generate_data_key_under_the_alias(kms_vault: Vault,
                                                              moto_kms: MotoKMS) -> None:
    """A KMS vault: no key file; each version is its own KMS key behind
    alias/<name>/vN; rotation adds one, retirement removes its alias."""
    import boto3

    ids = kms_vault.put_many(CRM, "customers", [customer(n) for n in range(5)],
                             purpose=PURPOSE)
    assert not kms_vault.settings.resolved_key_file.exists()
    status = kms_vault.keys.status()
    assert (status.provider, status.versions, status.data_keys_by_version) == (
        "aws-kms", (1,), {1: 5})
    alias = status.providers[0].uri.removeprefix("aws-kms:")
    kms = boto3.client("kms")
    names = {a["AliasName"] for a in kms.list_aliases()["Aliases"]}
    assert {alias, f"{alias}/v1"} <= names
    assert kms_vault.keys.rotate().rewrapped == 5
    kms_vault.keys.retire(1)
    names = {a["AliasName"] for a in kms.list_aliases()["Aliases"]}
    assert f"{alias}/v2" in names and f"{alias}/v1" not in names
    kms_vault.keystore.clear_cache()
    got = kms_vault.get_many(CRM, "customers", ids, purpose=PURPOSE)
    assert [r.data["email"] for r in got] == [f"li.wei{n}@example.cn" for n in range(5)]


def test_a_fixed_kms_key_arn_serves_one_version_and_refuses_vault_rotation(
        moto_kms: MotoKMS, tmp_path: Path) -> None:
    """``aws-kms:<key ARN>``: the operator's key is version 1 (tagged); Vault's rotation
    refuses and points at KMS's own (transparent) rotation."""
    import boto3

    arn = boto3.client("kms").create_key(Description="operator's key")["KeyMetadata"]["Arn"]
    with _init(_settings(tmp_path, f"aws-kms:{arn}")) as v:
        rid = v.put(CRM, "customers", customer(1), purpose=PURPOSE)
        v.keystore.clear_cache()
        assert v.get(CRM, "customers", rid, purpose=PURPOSE).data["email"] == (
            "li.wei1@example.cn")
        assert v.keys.status().versions == (1,)
        with pytest.raises(KeyManagementError, match="automatic key rotation"):
            v.keys.rotate()


# ---------------------------------------------------------------- migration


class Crash(Exception):
    """Raised from the progress callback: the migration stops half-way."""


def test_migration_file_to_hsm_to_kms_online_and_resumable(
        softhsm: SoftHSM, moto_kms: MotoKMS, tmp_path: Path) -> None:
    """Key file -> PKCS#11 -> KMS: every data key and the root keys are rewrapped,
    data rows untouched; a crash half-way is finished by the same call; a process
    still configured with the old provider reads through the migration; at the end
    the vault opens on the new provider alone (no key file) and the old KEKs retire."""
    settings = _settings(tmp_path, None)
    v = _init(settings)
    ids = v.put_many(CRM, "customers", [customer(n) for n in range(30)], purpose=PURPOSE)
    pseudonym = v.pseudonym("acme", "s-x")
    with v.engine.connect() as conn:
        rows_before = conn.execute(text("SELECT id, envelopes FROM records ORDER BY id")).all()
    other = Vault.open(settings=settings)  # another process, opened before the migration
    hsm_uri = softhsm.uri()
    seen: list[tuple[int, int]] = []

    def crash_after_first_batch(done: int, total: int) -> None:
        seen.append((done, total))
        if done >= 10:
            raise Crash

    v.keystore.clear_cache()
    with pytest.raises(Crash):
        v.keys.migrate(hsm_uri, batch_size=10, progress=crash_after_first_batch)
    assert v.keys.status().data_keys_by_version == {2: 10, 1: 20}
    other.keystore.clear_cache()  # keys of both sides read in the old-config process
    assert len(other.get_many(CRM, "customers", ids, purpose=PURPOSE)) == 30
    result = v.keys.migrate(hsm_uri)  # resumes
    assert (result.kind, result.new_version, result.rewrapped) == ("pkcs11", 2, 20)
    assert v.keys.status().data_keys_by_version == {2: 30}
    new_id = other.put(CRM, "customers", customer(99), purpose=PURPOSE)  # wraps on the HSM
    assert other.keys.status().data_keys_by_version == {2: 31}
    other.close()
    v.close()

    on_hsm = settings.model_copy(update={"key_provider": hsm_uri})
    settings.resolved_key_file.rename(tmp_path / "old-keyfile.json")  # no key file now
    with Vault.open(settings=on_hsm) as h:
        assert h.pseudonym("acme", "s-x") == pseudonym  # the same root keys
        assert len(h.get_many(CRM, "customers", [*ids, new_id], purpose=PURPOSE)) == 31
        kms_uri = moto_kms.uri()
        moved = h.keys.migrate(kms_uri)
        assert (moved.kind, moved.new_version, moved.rewrapped) == ("aws-kms", 3, 31)
        h.keys.retire(2)  # the HSM's KEK: nothing depends on it any more
        assert [p.kind for p in h.keys.status().providers] == ["pkcs11", "aws-kms"]
        assert h.keys.status().versions == (3,)
        reasons = [r.reason for r in _entries(h, "keys.migrate")]
        assert reasons[-2:] == ["to:aws-kms:kek:3", "done:aws-kms:kek:3:rewrapped:31"]
    on_kms = settings.model_copy(update={"key_provider": kms_uri})
    with Vault.open(settings=on_kms) as k:
        k.keystore.clear_cache()
        assert len(k.get_many(CRM, "customers", [*ids, new_id], purpose=PURPOSE)) == 31
        with k.engine.connect() as conn:
            rows_after = conn.execute(text(
                "SELECT id, envelopes FROM records WHERE id != :n ORDER BY id"),
                {"n": new_id}).all()
        assert [tuple(r) for r in rows_after] == [tuple(r) for r in rows_before]
        assert k.audit_log.verify().ok
    assert seen and seen[0] == (0, 30)


def test_status_names_the_provider_without_secrets(softhsm: SoftHSM, tmp_path: Path) -> None:
    """`keys status` shows the kind and the URI, never the PIN (given by setting)."""
    uri = softhsm.uri().split("&pin-source=")[0]
    with _init(_settings(tmp_path, uri, pkcs11_pin=PIN)) as v:
        status = v.keys.status()
        assert status.provider == "pkcs11" and status.versions == (1,)
        assert status.providers[0].uri == uri
        assert PIN not in repr(status) and PIN not in repr(v.keystore)
        assert PIN not in repr(v.settings)


def test_unknown_provider_uris_are_refused_without_echo(tmp_path: Path) -> None:
    """A typo in the scheme, a pkcs11: URI without module-path, an empty aws-kms:."""
    for bad in ("hsm:thing", "pkcs11:token=a;object=b", "aws-kms:", "pkcs11:object=b"):
        with pytest.raises(ConfigError) as caught:
            parse_provider_uri(bad)
        assert bad.partition(":")[2] not in str(caught.value) or bad == "aws-kms:"
    assert parse_provider_uri(None).is_file
    assert parse_provider_uri(str(tmp_path / "k.json")).path == tmp_path / "k.json"
    assert os.fspath(parse_provider_uri(f"file://{tmp_path}/k.json").path or "") == (
        f"{tmp_path}/k.json")


# ---------------------------------------------------------------- command line


def test_cli_init_status_and_migrate(softhsm: SoftHSM, moto_kms: MotoKMS,
                                     tmp_path: Path) -> None:
    """`vault init --key-provider URI` makes the KEK in the token (no key file);
    `vault keys status` names the provider and versions, no PIN; `vault keys migrate
    --to URI` moves the keys to KMS with a progress bar and says what to set next."""
    from typer.testing import CliRunner

    from vault.cli import app

    uri = softhsm.uri().split("&pin-source=")[0]
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(tmp_path / "vault"),
           "VAULT_PKCS11_PIN": PIN, "COLUMNS": "250"}
    runner = CliRunner()

    def run(*args: str, **more: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env={**env, **more})
        return result.exit_code, result.output

    code, output = run("init", "--key-provider", uri)
    assert code == 0 and "no key file" in output and "pkcs11" in output, output
    assert not (tmp_path / "vault" / "keyfile.json").exists()
    with Vault.open(settings=_settings(tmp_path, uri, pkcs11_pin=PIN)) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        v.put_many(CRM, "customers", [customer(n) for n in range(3)], purpose=PURPOSE)
    code, output = run("keys", "status", VAULT_KEY_PROVIDER=uri)
    assert code == 0 and "provider: pkcs11" in output and uri in output, output
    assert PIN not in output
    kms_uri = moto_kms.uri()
    code, output = run("keys", "migrate", "--to", kms_uri, VAULT_KEY_PROVIDER=uri)
    assert code == 0, output
    assert "3 data keys rewrapped under aws-kms KEK version 2" in output
    assert f"VAULT_KEY_PROVIDER={kms_uri}" in output
    code, output = run("keys", "status", VAULT_KEY_PROVIDER=kms_uri)
    assert code == 0 and "provider: aws-kms" in output, output
    code, output = run("keys", "retire", "1", "--yes", VAULT_KEY_PROVIDER=kms_uri)
    assert code == 0, output
    code, output = run("keys", "status", VAULT_KEY_PROVIDER="pkcs11:token=x;object=y")
    assert code == 1 and "module-path" in output and PIN not in output
