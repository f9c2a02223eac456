"""Configuration: one frozen settings object, built explicitly or from ``VAULT_*``.

Nothing in the library reads the environment on its own: :meth:`VaultSettings.from_env`
is called by the CLI and the gateway, and a library user passes settings (or
keyword arguments to :meth:`vault.Vault.open`) explicitly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from vault.errors import ConfigError

__all__ = ["DEFAULT_HOME", "STEP_UP_ACTIONS", "VaultSettings", "bundled_policies",
           "check_step_up_actions"]

DEFAULT_HOME = Path(".vault")
#: The kinds of action that can be made to need a verified second factor (step-up):
#: reading ``sensitive`` fields, exports (data-subject access and portability),
#: erasure (deleting records, destroying a subject's key, erasure requests), and
#: key, role and policy administration. All of them need it by default.
STEP_UP_ACTIONS = ("read_sensitive", "export", "erase", "keys", "roles", "policy")


def check_step_up_actions(value: tuple[str, ...]) -> tuple[str, ...]:
    """``value`` if every name is one of :data:`STEP_UP_ACTIONS`, else ValueError
    (a settings validator turns it into a ConfigError)."""
    unknown = sorted(set(value) - set(STEP_UP_ACTIONS))
    if unknown:
        raise ValueError(f"unknown step-up actions: {', '.join(unknown)}")
    return value


def bundled_policies() -> Path:
    """The ``policies/`` folder shipped with Vault (the repository's, or the installed copy)."""
    here = Path(__file__).resolve().parent
    installed = Path(sys.prefix) / "share" / "vault" / "policies"
    for candidate in (here.parent / "policies", installed):
        if (candidate / "model.conf").is_file():
            return candidate
    raise ConfigError("no policies folder found; pass policies= or set VAULT_POLICIES")


# The (backend, driver) pairs Vault runs on; "" is SQLAlchemy's default driver.
_DRIVERS = {("sqlite", ""), ("sqlite", "pysqlite"), ("postgresql", ""),
            ("postgresql", "psycopg"), ("postgresql", "psycopg2")}


class VaultSettings(BaseSettings):
    """Where a vault lives and how it behaves.

    The embedded default needs only ``home``: the data database
    (``home/data.db``), the key store (``home/keys.db``, a *separate* database so
    that crypto-shredding survives a restored data backup) and the key file
    (``home/keyfile.json``, mode 0600) are placed inside it.

    Attributes:
        home: folder of the embedded default.
        database_url: SQLAlchemy URL of the data database.
        keystore_url: SQLAlchemy URL of the key store (must differ from the data database).
        key_file: path of the local key file holding the key-encryption keys.
        key_provider: where the KEKs live, a URI (see
            :mod:`vault.crypto.providers`): unset, a path or ``file:`` for the key
            file (the default); ``pkcs11:token=...;object=...?module-path=...``
            for an HSM; ``aws-kms:<key ARN or alias>`` for AWS KMS. A PIN in the
            URI (``pin-value``) is refused.
        pkcs11_pin: the PKCS#11 user PIN when the URI has no ``pin-source``
            (``VAULT_PKCS11_PIN``); never printed, hashed or stored.
        policies: folder with ``model.conf``, ``policy.csv``, ``purposes.toml``
            and ``collections/``.
        audit_chains: number of audit hash chains for subjects (fixed at init).
        blind_index_bytes: bytes of each blind-index HMAC kept (8..32).
        dek_cache_size: unwrapped data keys kept in memory.
        destroyed_check_seconds: the longest time (default 5 s) for which a
            process may still serve, from its cache, the data key of a subject
            erased (crypto-shredded) by another process: the cache looks at the
            key store's destruction counter at most this often and then drops
            the keys of subjects that have a tombstone. Once it has looked,
            reads and writes of the erased subject raise ``KeyDestroyed``. The
            process that destroys a key stops serving it at once. 0 looks at
            every cache use (one small key-store query per read and write).
        policy_refresh_seconds: how often a process checks for policy changes
            made by another process.
        sqlite_synchronous: ``FULL`` (default): every SQLite commit (data,
            audit entry, key store) is synced to disk before the call returns.
            ``NORMAL``: faster commits that survive an application crash but
            not an OS crash or power loss (the last commits can be lost). No
            effect on PostgreSQL.
        report_usual_share: in audit reports, a purpose below this share of an
            actor's allowed accesses is "unusual" for that actor.
        report_usual_min_accesses: actors with fewer accesses are not judged.
        report_burst_reads / report_burst_minutes: more reads than this by one
            actor within that many minutes is a burst.
        search_miss_limit: searches by one actor that matched nothing, within
            ``search_miss_window_seconds``, after which its searches are refused
            (audited, ``search_miss_limit``) until the window has passed; 0 (the
            default) sets no limit. Misses are counted from the audit log, so the
            limit holds across processes.
        step_up: the kinds of action (of :data:`STEP_UP_ACTIONS`) that an actor may
            do only with a verified second factor (``Actor.second_factor``);
            without one they are refused (``StepUpRequired``, audited) and
            sensitive fields are left out of reads. The local operator
            (``actor=None``) is exempt. ``()`` turns step-up off.
        step_up_max_age_seconds: how long ago the second factor may have been
            proved (``SecondFactor.at``, by the vault's clock) for it to count;
            None (the default) leaves its freshness to whoever builds the actor
            (the gateway's step-up tokens expire after ``step_up_seconds``, the
            CLI asks for a code per command). The time is audited either way.
    """

    model_config = SettingsConfigDict(env_prefix="VAULT_", frozen=True, extra="forbid")

    home: Path = DEFAULT_HOME
    database_url: str | None = None
    keystore_url: str | None = None
    key_file: Path | None = None
    key_provider: str | None = None
    pkcs11_pin: SecretStr | None = None
    policies: Path | None = None
    audit_chains: int = Field(default=16, ge=1, le=1024)
    blind_index_bytes: int = Field(default=32, ge=8, le=32)
    dek_cache_size: int = Field(default=10_000, ge=1)
    destroyed_check_seconds: float = Field(default=5.0, ge=0, le=300)
    policy_refresh_seconds: float = Field(default=0.5, gt=0, le=60)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    report_usual_share: float = Field(default=0.05, gt=0, lt=1)
    report_usual_min_accesses: int = Field(default=20, ge=1)
    report_burst_reads: int = Field(default=100, ge=1)
    report_burst_minutes: int = Field(default=5, ge=1)
    search_miss_limit: int = Field(default=0, ge=0)
    search_miss_window_seconds: int = Field(default=3600, ge=1)
    step_up: Annotated[tuple[str, ...], AfterValidator(check_step_up_actions)] = STEP_UP_ACTIONS
    step_up_max_age_seconds: int | None = Field(default=None, ge=30, le=86_400)
    # Data-subject requests (vault.dsar): how long an export bundle may be kept,
    # and how long the key store's own backups are kept (an erasure certificate
    # names the day after which no key-store backup holds the subject's key).
    dsar_export_retention_days: int = Field(default=30, ge=1, le=3650)
    dsar_keystore_backup_days: int = Field(default=35, ge=0, le=3650)
    # How long a closed request is kept where the regime's profile sets no
    # request_log_retention (GDPR: accountability, no fixed figure).
    dsar_request_log_months: int = Field(default=36, ge=1, le=1200)

    @field_validator("database_url", "keystore_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        # The message never quotes the URL: it may carry a password.
        if value is None:
            return None
        if not value.strip():
            raise ValueError("must not be empty")
        try:
            url = make_url(value)
            url.port  # noqa: B018 (parsing the port is the check)
        except (ArgumentError, ValueError):
            raise ValueError("is not a database URL") from None
        backend, driver = url.get_backend_name(), url.get_driver_name()
        if (backend, driver) not in _DRIVERS:
            raise ValueError("must be a sqlite:/// or postgresql:// URL "
                             "(drivers: pysqlite, psycopg)")
        return value

    @field_validator("key_provider")
    @classmethod
    def _key_provider(cls, value: str | None) -> str | None:
        # Parsed in full when the vault opens (vault.crypto.providers); here only
        # what must never reach a snapshot: a PIN. The message never quotes it.
        if value is None or not value.strip():
            return None
        if value.startswith("pkcs11:") and "pin-value" in value:
            raise ValueError("a PIN must not be written in the URI; use pin-source or "
                             "VAULT_PKCS11_PIN")
        return value.strip()

    def pkcs11_pin_value(self) -> str | None:
        """The PKCS#11 PIN, for the provider only."""
        return self.pkcs11_pin.get_secret_value() if self.pkcs11_pin else None

    @classmethod
    def build(cls, **values: Any) -> VaultSettings:
        """Build settings from explicit values only (no environment), or raise ConfigError."""
        clean = {k: v for k, v in values.items() if v is not None}
        try:
            # Validated without consulting the environment: an explicit build
            # must not change meaning because some VAULT_ variable is set.
            return _ExplicitSettings(**clean).as_settings()
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @classmethod
    def from_env(cls, **overrides: Any) -> VaultSettings:
        """Build settings from ``VAULT_*`` variables, with explicit overrides on top."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**clean)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    # Resolved locations -------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'data.db').resolve()}"

    @property
    def resolved_keystore_url(self) -> str:
        return self.keystore_url or f"sqlite:///{(self.home / 'keys.db').resolve()}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or (self.home / "keyfile.json")

    @property
    def resolved_policies(self) -> Path:
        return self.policies or bundled_policies()

    def __repr__(self) -> str:
        # URLs can carry passwords: never print them.
        return (
            f"VaultSettings(home={str(self.home)!r}, database_url=[secure], "
            f"keystore_url=[secure], key_file={str(self.resolved_key_file)!r}, "
            f"key_provider={(self.key_provider or 'file:').split(':')[0]!r})"
        )

    __str__ = __repr__


class _ExplicitSettings(VaultSettings):
    """The same fields, validated from explicit values only."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *_: Any,
                                   **__: Any) -> tuple[Any, ...]:
        return (init_settings,)

    def as_settings(self) -> VaultSettings:
        return VaultSettings.model_construct(**self.model_dump())


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)
