"""The gateway's settings: one frozen object, explicit or from ``VAULT_GATEWAY_*``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vault.config import STEP_UP_ACTIONS, check_step_up_actions
from vault.errors import ConfigError

__all__ = ["GatewaySettings"]

# Asymmetric algorithms only: a verifier that accepts HS256 with a public key as the
# secret lets anybody who has the public key sign tokens (key confusion).
_ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                 "ES256", "ES384", "ES512", "EdDSA"})
# The actions that need a verified second factor when no policy says otherwise.
DEFAULT_STEP_UP = STEP_UP_ACTIONS


class GatewaySettings(BaseSettings):
    """How the gateway authenticates callers and bounds requests.

    Attributes:
        jwt_issuer: the ``iss`` every bearer token must carry.
        jwt_audience: the ``aud`` every bearer token must carry.
        jwks_file: a JWKS (JSON Web Key Set) file with the issuer's public keys.
        jwt_algorithms: the algorithms accepted (asymmetric only; ``none`` and the
            HMAC family are refused when the settings are built).
        jwt_leeway_seconds: clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        tenant_claim: the claim naming the caller's tenant (the ``sub`` is the actor).
        region_claim / recipient_claim: claims that set ``Actor.region``/``recipient``.
        step_up_secret: the HMAC key of step-up tokens; every replica needs the same
            one (at least 32 characters). Without it step-up is off and the actions
            that need it are refused.
        step_up_seconds: lifetime of a step-up token.
        step_up_max_auth_age_seconds: how old a JWT's ``auth_time`` may be to step up.
        step_up: the actions that need a second factor in the checks the gateway
            makes itself (``policy`` for a policy check, ``export`` for a DSAR
            download, ``export``/``erase`` before processing a DSAR). Whatever it
            says, the library's own rule (``VaultSettings.step_up``, the same six
            by default) decides reads of sensitive fields, record deletion, key,
            role and policy administration and DSAR exports and erasure: the
            gateway passes the stepped-up caller's factor on to it.
        max_body_bytes: requests with a larger body are refused (413).
        max_batch: items of one batch create or get.
        page_size / max_page_size: default and largest page of a list endpoint.
        rate_limit_per_minute: requests per credential and minute (0: no limit).
        search_rate_limit_per_minute: searches per credential and minute (stricter).
        cors_origins: origins allowed to call from a browser (none by default).
        hsts: send ``Strict-Transport-Security`` (on when serving TLS).
        checkpoint_dir: where ``POST /v1/audit/checkpoints`` writes (off when unset).
    """

    model_config = SettingsConfigDict(env_prefix="VAULT_GATEWAY_", frozen=True, extra="forbid")

    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwks_file: Path | None = None
    jwt_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    tenant_claim: str = "tenant"
    region_claim: str = "vault_region"
    recipient_claim: str = "vault_recipient"
    step_up_secret: SecretStr | None = None
    step_up_seconds: int = Field(default=600, ge=30, le=3600)
    step_up_max_auth_age_seconds: int = Field(default=600, ge=30, le=3600)
    step_up: Annotated[tuple[str, ...], AfterValidator(check_step_up_actions)] = DEFAULT_STEP_UP
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch: int = Field(default=100, ge=1, le=1000)
    page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=500, ge=1)
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    search_rate_limit_per_minute: int = Field(default=120, ge=0)
    cors_origins: tuple[str, ...] = ()
    hsts: bool = False
    checkpoint_dir: Path | None = None

    @field_validator("jwt_algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in _ALLOWED_ALGORITHMS]
        if bad or not value:
            raise ValueError("only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are accepted")
        return value

    @field_validator("step_up_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value


    @classmethod
    def from_env(cls, **overrides: object) -> GatewaySettings:
        """From ``VAULT_GATEWAY_*`` variables with explicit overrides, or ConfigError."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**clean)  # type: ignore[arg-type]
        except ValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                     for e in exc.errors(include_input=False, include_url=False)]
            raise ConfigError("invalid gateway settings: " + "; ".join(parts)) from None

    def needs_step_up(self, action: str) -> bool:
        return action in self.step_up

    def __repr__(self) -> str:
        return (f"GatewaySettings(jwt_issuer={self.jwt_issuer!r}, "
                f"jwt_audience={self.jwt_audience!r}, step_up_secret=[secure])")

    __str__ = __repr__
