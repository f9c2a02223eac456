"""Who is calling: bearer JWTs verified against a pinned JWKS, and step-up tokens.

A JWT's ``sub`` is the actor (the Casbin subject; its roles come from the role
store) and a configured claim its tenant; nothing the client sends besides the
signed token can choose another actor or tenant. Step-up tokens are short-lived
HMAC-signed tokens the gateway issues itself after a second factor; every
replica must share their key (``VAULT_GATEWAY_STEP_UP_SECRET``).

Misuse: the JWKS is read once, when the app is built; rotate the issuer's keys by
publishing the new key before signing with it, and restart the gateway.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from jwt.exceptions import InvalidTokenError, PyJWKError

from vault.clock import Clock
from vault.errors import ConfigError, InvalidData
from vault.gateway._settings import GatewaySettings
from vault.types import Actor, check_identifier

__all__ = ["SECOND_FACTORS", "AuthFailure", "JWTVerifier", "Principal", "StepUpTokens"]

# RFC 8176 methods that are a factor besides a password.
SECOND_FACTORS = ("mfa", "otp", "hwk", "swk", "sc", "fpt", "face", "iris", "retina", "vbm",
                  "sms", "tel")
_STEP_UP_AUDIENCE = "vault:step-up"
_STEP_UP_ISSUER = "vault-gateway"


class AuthFailure(Exception):
    """A credential was refused; ``reason`` is a short code for the audit entry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller.

    Attributes:
        actor: the library's actor (id, tenant, region, recipient from the credential).
        credential_id: the credential's id, recorded in every audit entry.
        kind: ``person`` or ``service`` (a service never satisfies step-up).
        amr / auth_time: the JWT's authentication methods and time, if given.
        factor / factor_at: the second factor proved (from a step-up token).
    """

    actor: Actor
    credential_id: str
    kind: Literal["person", "service"]
    amr: tuple[str, ...] = ()
    auth_time: dt.datetime | None = None
    factor: str | None = None
    factor_at: dt.datetime | None = None

    @property
    def stepped_up(self) -> bool:
        return self.factor is not None


def _utc(seconds: object) -> dt.datetime | None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


class JWTVerifier:
    """Verifies bearer JWTs: signature by a JWKS key, pinned algorithms, issuer,
    audience, ``exp``/``nbf``/``iat`` against the vault's clock with a small leeway."""

    def __init__(self, settings: GatewaySettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._keys: dict[str, tuple[jwt.PyJWK, object]] = {}
        self.enabled = settings.jwks_file is not None
        if settings.jwks_file is None:
            return
        if not settings.jwt_issuer or not settings.jwt_audience:
            raise ConfigError("a JWKS file needs VAULT_GATEWAY_JWT_ISSUER and "
                              "VAULT_GATEWAY_JWT_AUDIENCE")
        try:
            data = json.loads(settings.jwks_file.read_text())
            raw_keys = [k for k in data["keys"] if isinstance(k, dict)]
            keys = [(raw, jwt.PyJWK(raw)) for raw in raw_keys]
        except (OSError, ValueError, KeyError, TypeError, PyJWKError):
            raise ConfigError("the JWKS file cannot be read or holds no usable key") from None
        for raw, key in keys:
            if not isinstance(raw.get("kid"), str) or raw.get("kty") == "oct":
                raise ConfigError("every key of the JWKS file needs a kid and must be public")
            self._keys[raw["kid"]] = (key, raw.get("alg"))
        if not self._keys:
            raise ConfigError("the JWKS file holds no key")

    def verify(self, token: str) -> Principal:
        """The principal of a valid token.

        Raises:
            AuthFailure: with a reason code; the token's content is never echoed.
        """
        cfg = self._settings
        if not self.enabled:
            raise AuthFailure("jwt_disabled")
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError:
            raise AuthFailure("malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in cfg.jwt_algorithms:
            raise AuthFailure("algorithm")
        found = self._keys.get(kid) if isinstance(kid, str) else None
        if found is None:
            raise AuthFailure("unknown_key")
        key, key_alg = found
        # The key's own algorithm, when the JWKS names one, must be the header's.
        if key_alg is not None and key_alg != alg:
            raise AuthFailure("algorithm")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[alg], audience=cfg.jwt_audience,
                issuer=cfg.jwt_issuer,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": ["exp", "sub", "iss", "aud"]})
        except jwt.InvalidAudienceError:
            raise AuthFailure("wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise AuthFailure("wrong_issuer") from None
        except jwt.MissingRequiredClaimError:
            raise AuthFailure("missing_claim") from None
        except jwt.InvalidSignatureError:
            raise AuthFailure("bad_signature") from None
        except (InvalidTokenError, ValueError, TypeError):
            raise AuthFailure("invalid") from None
        self._check_times(claims)
        return self._principal(claims)

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self._clock.now()
        leeway = dt.timedelta(seconds=self._settings.jwt_leeway_seconds)
        exp = _utc(claims.get("exp"))
        if exp is None:
            raise AuthFailure("invalid")
        if now > exp + leeway:
            raise AuthFailure("expired")
        for name in ("nbf", "iat"):
            if name in claims:
                when = _utc(claims[name])
                if when is None:
                    raise AuthFailure("invalid")
                if when - leeway > now:
                    raise AuthFailure("not_yet_valid")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        cfg = self._settings
        try:
            sub = check_identifier(claims.get("sub"), "sub")
            tenant = claims.get(cfg.tenant_claim)
            actor = Actor(sub, tenant if tenant is not None else "",
                          region=claims.get(cfg.region_claim),
                          recipient=claims.get(cfg.recipient_claim))
        except InvalidData:
            raise AuthFailure("claims") from None
        amr = claims.get("amr", [])
        amr_t = tuple(m for m in amr if isinstance(m, str)) if isinstance(amr, list) else ()
        kind: Literal["person", "service"] = (
            "service" if claims.get("vault_kind") == "service" else "person")
        # The token's id names the credential in the audit log; without one, a
        # digest of issuer and subject (stable, and no claim value verbatim).
        jti = claims.get("jti")
        ident = jti if isinstance(jti, str) and jti else f"{claims['iss']}|{sub}"
        credential = "jwt:" + hashlib.sha256(ident.encode()).hexdigest()[:32]
        return Principal(actor=actor, credential_id=credential, kind=kind, amr=amr_t,
                         auth_time=_utc(claims.get("auth_time")))


class StepUpTokens:
    """Issues and checks step-up tokens bound to one principal's actor, tenant and
    credential; HS256 under the gateway's step-up secret, ``exp`` by the clock."""

    def __init__(self, settings: GatewaySettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self.enabled = settings.step_up_secret is not None

    def _secret(self) -> bytes:
        assert self._settings.step_up_secret is not None
        return self._settings.step_up_secret.get_secret_value().encode()

    def issue(self, who: Principal, factor: str) -> tuple[str, dt.datetime]:
        now = self._clock.now()
        expires = now + dt.timedelta(seconds=self._settings.step_up_seconds)
        token = jwt.encode({
            "iss": _STEP_UP_ISSUER, "aud": _STEP_UP_AUDIENCE, "sub": who.actor.id,
            "ten": who.actor.tenant, "cid": who.credential_id, "fac": factor,
            "fat": int(now.timestamp()), "exp": int(expires.timestamp()),
            "jti": secrets.token_hex(8)}, self._secret(), algorithm="HS256")
        return token, expires

    def apply(self, who: Principal, token: str) -> Principal:
        """``who`` with the factor of ``token``, or AuthFailure."""
        if not self.enabled:
            raise AuthFailure("step_up_disabled")
        try:
            claims = jwt.decode(token, self._secret(), algorithms=["HS256"],
                                audience=_STEP_UP_AUDIENCE, issuer=_STEP_UP_ISSUER,
                                options={"verify_exp": False,
                                         "require": ["exp", "sub", "ten", "cid", "fac"]})
        except (InvalidTokenError, ValueError, TypeError):
            raise AuthFailure("step_up_invalid") from None
        exp, at = _utc(claims.get("exp")), _utc(claims.get("fat"))
        if exp is None or at is None or self._clock.now() > exp:
            raise AuthFailure("step_up_expired")
        if (claims["sub"], claims["ten"], claims["cid"]) != (
                who.actor.id, who.actor.tenant, who.credential_id):
            raise AuthFailure("step_up_other_credential")
        factor = claims["fac"]
        if not isinstance(factor, str) or who.kind != "person":
            raise AuthFailure("step_up_invalid")
        return Principal(actor=who.actor, credential_id=who.credential_id, kind=who.kind,
                         amr=who.amr, auth_time=who.auth_time, factor=factor, factor_at=at)

    def factor_of_jwt(self, who: Principal) -> str:
        """The second factor a person's JWT proves (``amr``, recent ``auth_time``).

        Raises:
            AuthFailure: a service, no second factor, or an authentication too old.
        """
        if who.kind != "person":
            raise AuthFailure("step_up_service")
        methods = [m for m in who.amr if m in SECOND_FACTORS]
        if not methods:
            raise AuthFailure("step_up_no_factor")
        age = dt.timedelta(seconds=self._settings.step_up_max_auth_age_seconds)
        if who.auth_time is None or self._clock.now() - who.auth_time > age:
            raise AuthFailure("step_up_stale")
        return "jwt:" + methods[0]
