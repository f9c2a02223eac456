"""PostgreSQL roles: an application role that cannot rewrite the audit log.

The triggers refuse UPDATE, DELETE and TRUNCATE on ``audit_log`` for every
role, but a table owner can disable triggers. Run the application as a role
that owns nothing and holds only the privileges below, and even a compromised
application cannot alter history:

=============  ===============================================================
table          privileges of the application role
=============  ===============================================================
audit_log      SELECT, INSERT (never UPDATE, DELETE, TRUNCATE)
consent_events SELECT, INSERT (the consent ledger is append-only too)
config_snapshots
               SELECT, INSERT (configuration snapshots are append-only too)
audit_heads    SELECT, UPDATE: the row lock (``SELECT ... FOR UPDATE`` needs
               UPDATE) and the chain cursor; a forged head is caught by
               ``verify`` because it must equal the recomputed chain
records, subjects, blind_index, casbin_rule, policy_state, consent_state,
retention, retention_subjects, retention_shred_queue, retention_shred_batches
               SELECT, INSERT, UPDATE, DELETE
legal_holds, retention_runs
               SELECT, INSERT, UPDATE (holds are lifted, never deleted)
retention_fingerprints
               SELECT, INSERT (a recomputation adds a row)
policy_changes SELECT, INSERT, UPDATE (a pending change is decided, never deleted)
gateway_idempotency, gateway_rate_limits, identity_api_keys, identity_totp,
identity_totp_used
               SELECT, INSERT, UPDATE, DELETE (the gateway's shared state, credentials)
erased_subjects
               SELECT, INSERT (an erasure is never undone)
vault_meta, alembic_version
               SELECT
data_keys      SELECT, INSERT, UPDATE (destruction overwrites the key), in
               the key store database
=============  ===============================================================
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

from vault.errors import ConfigError

__all__ = ["grant_app_role", "grant_keystore_role"]

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_DATA_GRANTS = (
    ("SELECT, INSERT", "audit_log"),
    ("SELECT, INSERT", "consent_events"),
    ("SELECT, INSERT", "config_snapshots"),
    ("SELECT, INSERT, UPDATE, DELETE", "consent_state"),
    ("SELECT, UPDATE", "audit_heads"),
    ("SELECT, INSERT, UPDATE, DELETE", "records"),
    ("SELECT, INSERT, UPDATE, DELETE", "subjects"),
    ("SELECT, INSERT, UPDATE, DELETE", "blind_index"),
    ("SELECT, INSERT, UPDATE, DELETE", "gateway_idempotency"),
    ("SELECT, INSERT, UPDATE, DELETE", "gateway_rate_limits"),
    ("SELECT, INSERT, UPDATE, DELETE", "identity_api_keys"),
    ("SELECT, INSERT, UPDATE, DELETE", "identity_totp"),
    ("SELECT, INSERT, UPDATE, DELETE", "identity_totp_used"),
    ("SELECT, INSERT, UPDATE, DELETE", "casbin_rule"),
    ("SELECT, INSERT, UPDATE, DELETE", "policy_state"),
    ("SELECT, INSERT, UPDATE, DELETE", "retention"),
    ("SELECT, INSERT, UPDATE, DELETE", "retention_subjects"),
    ("SELECT, INSERT, UPDATE, DELETE", "retention_shred_queue"),
    ("SELECT, INSERT, UPDATE, DELETE", "retention_shred_batches"),
    ("SELECT, INSERT, UPDATE", "retention_runs"),
    ("SELECT, INSERT", "retention_fingerprints"),
    ("SELECT, INSERT, UPDATE", "policy_changes"),
    ("SELECT, INSERT", "erased_subjects"),
    ("SELECT, INSERT, UPDATE", "legal_holds"),
    ("SELECT", "vault_meta"),
    ("SELECT", "alembic_version"),
)


def _check(engine: Engine, role: str) -> None:
    if engine.dialect.name != "postgresql":
        raise ConfigError("application roles are a PostgreSQL feature; SQLite has no roles")
    if not _ROLE.match(role):
        raise ConfigError("a role name must be lower-case letters, digits and _ (max 63)")


def _ensure_role(conn: object, role: str, password: str | None) -> None:
    exists = conn.execute(  # type: ignore[attr-defined]
        text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).first()
    if exists is None:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN NOINHERIT'))  # type: ignore[attr-defined]
    if password is not None:
        # Role passwords cannot be bound parameters. The password is hashed here
        # (libpq's PQencryptPasswordConn, the server's password_encryption), so
        # only its verifier is sent: the plaintext reaches neither the server's
        # statement log nor an error message. A failure is reported without the
        # statement (SQLAlchemy's message would quote it).
        try:
            pgconn = conn.connection.dbapi_connection.pgconn  # type: ignore[attr-defined]
            verifier = pgconn.encrypt_password(password.encode("utf-8"),
                                               role.encode("utf-8")).decode("ascii")
            literal = "'" + verifier.replace("'", "''") + "'"
            # Not text(): a verifier holds ":name" runs, which it would take for binds.
            conn.exec_driver_sql(  # type: ignore[attr-defined]
                f'ALTER ROLE "{role}" PASSWORD {literal}')
        except Exception:
            raise ConfigError(f"the password of role {role} could not be set (the user "
                              "running this needs CREATEROLE)") from None


def grant_app_role(engine: Engine, role: str, *, password: str | None = None) -> None:
    """Create ``role`` if needed and grant it exactly the data database privileges above.

    Raises:
        ConfigError: not PostgreSQL, or a bad role name.
    """
    _check(engine, role)
    with engine.begin() as conn:
        _ensure_role(conn, role, password)
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        for privileges, table in _DATA_GRANTS:  # exactly these, whatever it had before
            conn.execute(text(f'REVOKE ALL ON "{schema}"."{table}" FROM "{role}"'))
            conn.execute(text(f'GRANT {privileges} ON "{schema}"."{table}" TO "{role}"'))
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"'))


def grant_keystore_role(engine: Engine, role: str, *, password: str | None = None) -> None:
    """Grant ``role`` what it needs in the key store database (no DELETE: tombstones stay)."""
    _check(engine, role)
    with engine.begin() as conn:
        _ensure_role(conn, role, password)
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        conn.execute(text(f'GRANT SELECT, INSERT, UPDATE ON "{schema}"."data_keys", '
                          f'"{schema}"."destruction_counter" TO "{role}"'))
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"'))
