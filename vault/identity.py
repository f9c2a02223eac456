"""``v.identity``: credentials of the callers of Vault's services: API keys, TOTP
enrolments of person keys, and the one-time use of TOTP codes.

An API key looks like ``vk_<id>_<secret>``; only a keyed hash of the secret
(HMAC-SHA256 under a key derived from the key file's pseudonym key) is stored,
so a copy of the data database does not let anybody authenticate. A key is of
kind ``service`` or ``person`` and carries the actor, tenant and, where set,
the region and recipient (``Actor.region``/``recipient``) that make its
accesses transfers or provisions: they come from the credential, never from a
request. TOTP secrets (person keys only) are stored encrypted (AES-256-GCM
under a key derived the same way, bound to the key id); every code used is
remembered in the database, so a replay is refused across processes.

Creating, revoking and enrolling need ``policy.admin`` in the key's tenant when
``actor`` is given; every change and every refused authentication is audited.
The CLI's ``vault gateway keys``/``totp`` and the gateway use this one module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn

import pyotp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import (
    BigInteger,
    Column,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from vault._kernel import Kernel
from vault.audit.chain import AuditEvent, Decision
from vault.errors import InvalidData, NotFound
from vault.store.base import UTCDateTime
from vault.types import Actor, SecondFactor, check_identifier, check_tenant

__all__ = ["API_KEYS", "TOTP_ENROLMENTS", "TOTP_USED", "ApiKey", "AuthenticationFailed",
           "IdentityService", "KeyKind"]

_META = MetaData()
#: Tables created by migration 0010 of the data database.
API_KEYS = Table(
    "identity_api_keys", _META,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("region", String(16), nullable=True),
    Column("recipient", String(128), nullable=True),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
)
TOTP_ENROLMENTS = Table(
    "identity_totp", _META,
    Column("key_id", String(32), primary_key=True),
    Column("secret_box", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)
TOTP_USED = Table(
    "identity_totp_used", _META,
    Column("key_id", String(32), primary_key=True),
    Column("counter", BigInteger, primary_key=True),
    Column("used_at", UTCDateTime(), nullable=False),
)

_PREFIX = "vk_"
_HASH_LABEL = b"vault/identity/api-key/v1"
_TOTP_LABEL = b"vault/identity/totp/v1"
_NAME_MAX = 128


class KeyKind(StrEnum):
    SERVICE = "service"
    PERSON = "person"


class AuthenticationFailed(Exception):
    """A credential was refused. ``reason``: ``malformed``, ``unknown``, ``revoked``,
    ``expired``, ``bad_secret``, ``totp_*``. Never says more to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as listed: never its secret or hash."""

    id: str
    name: str
    kind: KeyKind
    actor: str
    tenant: str
    region: str | None
    recipient: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    totp: bool = False

    def as_actor(self) -> Actor:
        return Actor(self.actor, self.tenant, region=self.region, recipient=self.recipient)


def _derive(root: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(root)


class IdentityService:
    """API keys, TOTP enrolments and the codes used, in the data database."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel
        root = kernel.root_keys.pseudonym
        self._hash_key = _derive(root, _HASH_LABEL)
        self._totp_key = AESGCM(_derive(root, _TOTP_LABEL))

    def __repr__(self) -> str:
        return "IdentityService(keys=[secure])"

    # ------------------------------------------------------------------ keys

    def create_key(self, name: str, *, actor_id: str, tenant: str,
                   kind: KeyKind | str = KeyKind.SERVICE, region: str | None = None,
                   recipient: str | None = None, expires_at: dt.datetime | None = None,
                   actor: Actor | None = None) -> tuple[ApiKey, str]:
        """Make an API key; returns it and its one presentation ``vk_<id>_<secret>``
        (shown once: only a keyed hash is kept).

        Raises:
            InvalidData: a bad name, kind, actor, tenant, region or expiry, or a
                name already used.
            AccessDenied: ``actor`` may not administer the tenant's policy (audited).
        """
        check_tenant(tenant)
        self._k.authorise(actor, "policy", "policy.admin", tenant=tenant, step_up="policy")
        try:
            kind = KeyKind(kind)
        except ValueError:
            raise InvalidData("kind must be service or person", field="kind") from None
        check_identifier(name, "name")
        owner = Actor(check_identifier(actor_id, "actor_id"), tenant, region=region,
                      recipient=recipient)
        now = self._k.clock.now()
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            raise InvalidData("expires_at must be an aware time in the future",
                              field="expires_at")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        try:
            with self._k.engine.begin() as conn:
                conn.execute(insert(API_KEYS).values(
                    id=key_id, name=name, kind=kind.value, actor=owner.id,
                    tenant=tenant, region=region, recipient=recipient,
                    secret_hash=self._hash(key_id, secret), created_at=now,
                    expires_at=expires_at, revoked_at=None))
        except IntegrityError:
            raise InvalidData("an API key of this name exists", field="name") from None
        self._k.audit("identity.key_create", actor=actor, tenant=tenant,
                      reason=f"key:{key_id}:{kind.value}:{owner.id}"[:64])
        return self.get_key(key_id), f"{_PREFIX}{key_id}_{secret}"

    def get_key(self, key: str) -> ApiKey:
        """An API key by id or name.

        Raises:
            NotFound: no such key.
        """
        with self._k.read_only() as conn:
            row = conn.execute(select(API_KEYS).where(
                (API_KEYS.c.id == key) | (API_KEYS.c.name == key))).first()
            totp = row is not None and conn.execute(select(TOTP_ENROLMENTS.c.key_id).where(
                TOTP_ENROLMENTS.c.key_id == row.id)).first() is not None
        if row is None:
            raise NotFound("no such API key")
        return _key(row, totp)

    def list_keys(self, *, tenant: str | None = None) -> list[ApiKey]:
        """Every API key (of one tenant), oldest first; never a secret."""
        query = select(API_KEYS).order_by(API_KEYS.c.created_at, API_KEYS.c.id)
        if tenant is not None:
            query = query.where(API_KEYS.c.tenant == check_tenant(tenant))
        with self._k.read_only() as conn:
            rows = conn.execute(query).all()
            enrolled = set(conn.execute(select(TOTP_ENROLMENTS.c.key_id)).scalars())
        return [_key(r, r.id in enrolled) for r in rows]

    def revoke_key(self, key: str, *, actor: Actor | None = None) -> ApiKey:
        """Revoke an API key for good (every process refuses it from its next use)."""
        found = self.get_key(key)
        self._k.authorise(actor, "policy", "policy.admin", tenant=found.tenant,
                          step_up="policy")
        with self._k.engine.begin() as conn:
            conn.execute(update(API_KEYS).where(
                API_KEYS.c.id == found.id, API_KEYS.c.revoked_at.is_(None)).values(
                    revoked_at=self._k.clock.now()))
        self._k.audit("identity.key_revoke", actor=actor, tenant=found.tenant,
                      reason=f"key:{found.id}")
        return self.get_key(found.id)

    def authenticate(self, presented: str) -> ApiKey:
        """The live key that ``presented`` (``vk_<id>_<secret>``) is.

        Every refusal is audited (``identity.authenticate``, with the reason and,
        when the id is known, the key's id).

        Raises:
            AuthenticationFailed: malformed, unknown, revoked, expired, wrong secret.
        """
        key_id, secret = _split(presented)
        if key_id is None or secret is None:
            self._refused("malformed")
        with self._k.read_only() as conn:
            row = conn.execute(select(API_KEYS).where(API_KEYS.c.id == key_id)).first()
        if row is None:
            self._refused("unknown")
        if not hmac.compare_digest(row.secret_hash, self._hash(key_id, secret)):
            self._refused("bad_secret", row)
        if row.revoked_at is not None:
            self._refused("revoked", row)
        if row.expires_at is not None and row.expires_at <= self._k.clock.now():
            self._refused("expired", row)
        return _key(row, False)

    # ------------------------------------------------------------------ TOTP

    def enrol_totp(self, key: str, *, issuer: str = "Vault",
                   actor: Actor | None = None) -> str:
        """Give a person key a new TOTP secret; returns the provisioning URI (shown
        once: put it in an authenticator app). A former enrolment is replaced.

        Raises:
            InvalidData: a service key (services never step up).
        """
        found = self.get_key(key)
        self._k.authorise(actor, "policy", "policy.admin", tenant=found.tenant,
                          step_up="policy")
        if found.kind is not KeyKind.PERSON:
            raise InvalidData("only person keys enrol a second factor", field="kind")
        secret = pyotp.random_base32()
        nonce = secrets.token_bytes(12)
        box = nonce + self._totp_key.encrypt(nonce, secret.encode(), found.id.encode())
        now = self._k.clock.now()
        with self._k.engine.begin() as conn:
            conn.execute(delete(TOTP_ENROLMENTS).where(TOTP_ENROLMENTS.c.key_id == found.id))
            conn.execute(insert(TOTP_ENROLMENTS).values(key_id=found.id, secret_box=box,
                                                        created_at=now))
        self._k.audit("identity.totp_enrol", actor=actor, tenant=found.tenant,
                      reason=f"key:{found.id}")
        return pyotp.TOTP(secret).provisioning_uri(name=found.name, issuer_name=issuer)

    def verify_totp(self, key_id: str, code: str) -> dt.datetime:
        """Check a TOTP code of a person key (this step, or one step either side)
        and remember it, so that the same code is refused afterwards everywhere.

        Returns:
            When the factor was proved (the vault's clock).

        Raises:
            AuthenticationFailed: no enrolment, a wrong code, or a code used before
                (audited).
        """
        with self._k.read_only() as conn:
            row = conn.execute(select(TOTP_ENROLMENTS.c.secret_box).where(
                TOTP_ENROLMENTS.c.key_id == key_id)).first()
            owner = conn.execute(select(API_KEYS).where(API_KEYS.c.id == key_id)).first()
        if row is None or owner is None:
            self._refused("totp_not_enrolled", owner)
        box: bytes = row.secret_box
        totp = pyotp.TOTP(self._totp_key.decrypt(box[:12], box[12:], key_id.encode()).decode())
        now = self._k.clock.now()
        if not (isinstance(code, str) and code.isdigit() and len(code) == 6):
            self._refused("totp_wrong", owner)
        step = totp.timecode(now)
        counter = next((c for c in (step, step - 1, step + 1)
                        if hmac.compare_digest(totp.generate_otp(c), code)), None)
        if counter is None:
            self._refused("totp_wrong", owner)
        try:
            with self._k.engine.begin() as conn:
                conn.execute(insert(TOTP_USED).values(key_id=key_id, counter=counter,
                                                      used_at=now))
                conn.execute(delete(TOTP_USED).where(TOTP_USED.c.key_id == key_id,
                                                     TOTP_USED.c.counter < step - 2))
        except IntegrityError:
            self._refused("totp_replay", owner)
        self._k.audit("identity.totp", actor=Actor(owner.actor, owner.tenant),
                      reason=f"key:{key_id}")
        return now

    def step_up(self, actor: Actor, code: str) -> Actor:
        """``actor`` with a second factor: a TOTP code of its own person key (the
        newest live one enrolled for TOTP, of the same actor and tenant), checked
        and remembered as :meth:`verify_totp` does. The CLI's operators give it with
        ``--otp``; the returned actor passes the library's step-up rule.

        Raises:
            InvalidData: ``actor`` is not an Actor.
            AuthenticationFailed: no enrolled person key, a wrong code, or a code
                used before (audited).
        """
        if not isinstance(actor, Actor):
            raise InvalidData("actor must be a vault.Actor", field="actor")
        now = self._k.clock.now()
        enrolled = [k for k in self.list_keys(tenant=actor.tenant)
                    if k.actor == actor.id and k.kind is KeyKind.PERSON and k.totp
                    and k.revoked_at is None
                    and (k.expires_at is None or k.expires_at > now)]
        if not enrolled:
            self._k.audit_log.write([AuditEvent(
                tenant=actor.tenant, actor=actor.id, action="identity.authenticate",
                decision=Decision.DENY, reason="totp_not_enrolled")])
            raise AuthenticationFailed("totp_not_enrolled")
        newest = max(enrolled, key=lambda k: (k.created_at, k.id))
        at = self.verify_totp(newest.id, code)
        return dataclasses.replace(actor, second_factor=SecondFactor("totp", at))

    # ------------------------------------------------------------------ helpers

    def _hash(self, key_id: str, secret: str) -> str:
        mac = hmac.new(self._hash_key, f"{key_id}\x1f{secret}".encode(), "sha256")
        return mac.hexdigest()

    def _refused(self, reason: str, row: Any = None) -> NoReturn:
        tenant = row.tenant if row is not None else "*"
        self._k.audit_log.write([AuditEvent(
            tenant=tenant, actor=row.actor if row is not None else "anonymous",
            action="identity.authenticate", decision=Decision.DENY,
            reason=(f"{reason}:key:{row.id}" if row is not None else reason)[:64])])
        raise AuthenticationFailed(reason)


def _split(presented: object) -> tuple[str | None, str | None]:
    if not isinstance(presented, str) or not presented.startswith(_PREFIX):
        return None, None
    key_id, sep, secret = presented[len(_PREFIX):].partition("_")
    if not sep or len(key_id) != 16 or not all(c in "0123456789abcdef" for c in key_id) \
            or not 20 <= len(secret) <= 128:
        return None, None
    return key_id, secret


def _key(r: Any, totp: bool) -> ApiKey:
    """An :class:`ApiKey` of a row of :data:`API_KEYS`."""
    return ApiKey(id=r.id, name=r.name, kind=KeyKind(r.kind), actor=r.actor, tenant=r.tenant,
                  region=r.region, recipient=r.recipient, created_at=r.created_at,
                  expires_at=r.expires_at, revoked_at=r.revoked_at, totp=totp)
