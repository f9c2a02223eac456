"""The policy engine: Casbin behind one class, with a decision cache.

This is the only module of Vault that imports ``casbin``. It decides whether an
actor, in a tenant, may perform an action on ``collection.field`` objects (or an
administrative object) for a purpose, with the model in ``policies/model.conf``
(RBAC with domains; the domain is the tenant; deny overrides allow; default
deny) and the rules stored in the data database.

Decisions are cached per (actor, tenant, collection, action, purpose, fields),
because a raw Casbin ``enforce`` costs about half a millisecond. The cache
belongs to a policy version: a change made through an engine bumps the stored
version and clears that engine's cache at once; every other engine on the same
database reads the version at most once per ``refresh_interval`` (one cheap
query) and reloads when it moved, so a change reaches every process within that
interval.

Failing closed: an exception inside Casbin, or a policy that cannot be read,
is a denial (an empty set, False), logged as an event that names the error
type only. Casbin's own loggers are muted, because Casbin logs every request
with its subject and object.

Misuse to avoid:

- Do not reach around this class to the enforcer: ``enable_enforce(False)``
  would allow everything, and Casbin's logging configuration is process-wide.
- A decision is only as fresh as ``refresh_interval``: a rule revoked in
  another process can still be honoured here for up to that long.
- An unknown purpose or action is simply denied here; check purposes against
  the :class:`~vault.policy.purposes.PurposeRegistry` first to give the caller
  a clear error.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import casbin
from sqlalchemy import Engine

from vault.clock import Clock, SystemClock
from vault.errors import (
    ConfigError,
    InvalidData,
    PolicyError,
    UnknownRole,
    VaultError,
)
from vault.logging import get_logger
from vault.policy.adapter import SQLAlchemyCasbinAdapter
from vault.store.base import Base
from vault.types import check_tenant

__all__ = ["ADMIN_ACTIONS", "ALLOW", "DATA_ACTIONS", "DENY", "WILDCARD", "check_rule",
           "CasbinPolicyEngine"]

log = get_logger(__name__)

ALLOW: Final = "allow"
DENY: Final = "deny"
#: In a rule: every tenant (domain), every purpose, or (``collection.*``) every object.
WILDCARD: Final = "*"
#: Actions on ``collection.field`` objects.
DATA_ACTIONS: Final = frozenset({"read", "read_masked", "write", "delete", "search", "export"})
#: Administrative objects and the action each one takes.
ADMIN_ACTIONS: Final = {
    "audit": "audit.read",
    "dsar": "dsar.process",
    "consent": "consent.manage",
    "keys": "keys.rotate",
    "policy": "policy.admin",
}

# Users are stored in Casbin as "user:<id>". Role names cannot contain ":", so
# an actor whose id equals a role name cannot match that role's rules by
# Casbin's "a name always has itself as a role" shortcut.
_USER_PREFIX: Final = "user:"

_ACTOR_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@:/+=-]{0,199}")
_ROLE_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_OBJECT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?:\.[A-Za-z_][A-Za-z0-9_]{0,63})?")
_RULE_OBJECT_RE: Final = re.compile(
    r"\*|[A-Za-z_][A-Za-z0-9_]{0,63}(?:\.(?:\*|[A-Za-z_][A-Za-z0-9_]{0,63}))?"
)
_ACTION_RE: Final = re.compile(r"[a-z][a-z_]{0,31}(?:\.[a-z][a-z_]{0,31})?")
_PURPOSE_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

_EXPECTED_TOKENS: Final = {
    ("r", "r"): ["r_sub", "r_dom", "r_obj", "r_act", "r_purp"],
    ("p", "p"): ["p_sub", "p_dom", "p_obj", "p_act", "p_purp", "p_eft"],
}
_MAX_CACHE: Final = 65_536

# pycasbin parses its matcher with ``ast.parse`` on every ``enforce``, and
# CPython 3.11's AST construction is not thread-safe (python/cpython#106905:
# "SystemError: AST constructor recursion depth mismatch"). Every enforcer of
# the process (one per open Vault) takes this lock around ``enforce``. It is
# only reached on a decision-cache miss, so it costs nothing in steady state.
_ENFORCE_LOCK = threading.Lock()


def _enforce(enforcer: Any, *request: str) -> bool:
    """One raw Casbin decision, serialised across the process; a SystemError
    raised by a parse racing with code outside Vault is retried once."""
    with _ENFORCE_LOCK:
        try:
            return bool(enforcer.enforce(*request))
        except SystemError:
            return bool(enforcer.enforce(*request))
_NOTHING: Final[frozenset[str]] = frozenset()

_FieldKey = tuple[str, str, str, str, str, tuple[str, ...]]
_ObjectKey = tuple[str, str, str, str, str]
_K = TypeVar("_K")
_D = TypeVar("_D")


class CasbinPolicyEngine:
    """Policy decisions and policy administration on Casbin, cached and fail-closed.

    Args:
        engine: the data database, holding ``casbin_rule`` and ``policy_state``.
        model_path: the Casbin model (``policies/model.conf``).
        clock: stamps ``policy_state.updated_at``; the refresh timer itself
            uses the monotonic clock.
        refresh_interval: seconds between two checks of the stored policy
            version, i.e. how stale a decision may be after another process
            changed the policy.

    Raises:
        ConfigError: the model file is missing or is not the Vault model.

    Thread-safe. Building the engine touches no database; the policy is
    loaded on first use (call :meth:`create_schema` and :meth:`load_defaults`
    on a new database).
    """

    def __init__(
        self,
        engine: Engine,
        model_path: Path,
        *,
        clock: Clock | None = None,
        refresh_interval: float = 0.5,
    ) -> None:
        if not refresh_interval >= 0:
            raise ConfigError("refresh_interval must be a number of seconds >= 0")
        self._db = engine
        self._interval = float(refresh_interval)
        self._adapter = SQLAlchemyCasbinAdapter(engine, clock or SystemClock())
        self._enforcer = _build_enforcer(Path(model_path))
        # Attached after construction so that building the engine reads nothing.
        self._enforcer.set_adapter(self._adapter)
        self._lock = threading.RLock()
        self._version: int | None = None  # None: nothing loaded yet
        self._next_check = 0.0  # monotonic time of the next version check
        self._field_cache: dict[_FieldKey, frozenset[str]] = {}
        self._object_cache: dict[_ObjectKey, bool] = {}
        self._members: frozenset[tuple[str, str]] | None = None

    def __repr__(self) -> str:
        return f"CasbinPolicyEngine(version={self._version!r})"

    # -- set-up ---------------------------------------------------------------

    def create_schema(self) -> None:
        """Create ``casbin_rule`` and ``policy_state`` if missing (idempotent).

        Raises:
            PolicyError: the database refused.
        """
        tables = [Base.metadata.tables["casbin_rule"], Base.metadata.tables["policy_state"]]
        try:
            Base.metadata.create_all(self._db, tables=tables, checkfirst=True)
            self._adapter.ensure_state()
        except Exception as exc:
            log.warning("policy_schema_failed", error_type=type(exc).__name__)
            raise PolicyError("the policy tables could not be created") from None

    def load_defaults(self, policy_csv: Path, *, replace: bool = False) -> int:
        """Import a policy file (``policies/policy.csv``) into the database.

        ``p`` lines are role rules, ``g`` lines (``g, user, role, tenant``) role
        assignments. Without ``replace`` nothing happens when the database
        already holds role rules; with it, every stored role rule is replaced
        by the file's (role assignments are kept, and the file's are added).
        The whole file is checked before anything is written, and the import
        is one transaction.

        Returns:
            The number of rules written.

        Raises:
            ConfigError: the file is unreadable or a line is malformed; the
                message names the file and the line, not the line's values.
            PolicyError: the database refused.
        """
        rules = _parse_policy_csv(Path(policy_csv))
        with self._lock:
            try:
                written = self._adapter.replace_rules(
                    rules,
                    replace_ptypes=("p",) if replace else (),
                    only_if_none_of=None if replace else "p",
                )
            except Exception as exc:
                log.warning("policy_write_failed", error_type=type(exc).__name__)
                self._recover_locked()
                raise PolicyError("the default policy could not be stored") from None
            if written:
                self._recover_locked()
        log.info("policy_defaults_loaded", rules=written, replaced=replace)
        return written

    # -- decisions ------------------------------------------------------------

    @property
    def version(self) -> int:
        """The stored policy version this engine serves (checked as often as decisions).

        Raises:
            PolicyError: the policy could not be read.
        """
        with self._lock:
            self._sync_due_or_raise()
            return self._version or 0

    def allowed_fields(
        self,
        actor_id: str,
        tenant: str,
        collection: str,
        action: str,
        purpose: str,
        fields: Sequence[str],
    ) -> frozenset[str]:
        """The subset of ``fields`` of ``collection`` that ``actor_id`` may ``action``.

        Args:
            actor_id: who asks (a user or service id, not a role).
            tenant: the tenant the actor works in.
            collection: e.g. ``customers``.
            action: read, read_masked, write, delete, search or export.
            purpose: the purpose of use; an unknown purpose gets nothing.
            fields: field names (a tuple is cheapest: it is the cache key).

        Returns:
            The permitted fields; empty on any policy failure (fail closed).

        Raises:
            InvalidTenant: ``tenant`` is malformed (``*`` included).
            InvalidData: the actor, a name or ``fields`` is malformed.
        """
        if type(fields) is not tuple:
            if isinstance(fields, str):
                raise InvalidData("fields must be a sequence of field names", field="fields")
            fields = tuple(fields)
        key = (actor_id, tenant, collection, action, purpose, fields)
        if time.monotonic() < self._next_check:
            try:
                hit = self._field_cache.get(key)
            except TypeError:  # unhashable input: the checks below reject it
                hit = None
            if hit is not None:
                return hit
        return self._decide_fields(key)

    def is_allowed(self, actor_id: str, tenant: str, obj: str, action: str, purpose: str) -> bool:
        """May ``actor_id`` perform ``action`` on ``obj`` for ``purpose`` in ``tenant``?

        Args:
            obj: ``collection.field`` or an administrative object (``audit``,
                ``dsar``, ``consent``, ``keys``, ``policy``).

        Returns:
            The decision; False on any policy failure (fail closed).

        Raises:
            InvalidTenant: ``tenant`` is malformed (``*`` included).
            InvalidData: the actor or a name is malformed.
        """
        key = (actor_id, tenant, obj, action, purpose)
        if time.monotonic() < self._next_check:
            try:
                hit = self._object_cache.get(key)
            except TypeError:
                hit = None
            if hit is not None:
                return hit
        return self._decide_object(key)

    # -- roles ----------------------------------------------------------------

    def roles_for(self, user: str, tenant: str) -> list[str]:
        """The roles ``user`` holds in ``tenant``, sorted.

        Raises:
            InvalidTenant, InvalidData: malformed input.
            PolicyError: the policy could not be read.
        """
        subject = _user_key(user)
        _check_tenant(tenant)
        with self._lock:
            self._sync_due_or_raise()
            return sorted(
                {
                    rule[1]
                    for rule in self._grouping_rules()
                    if rule[0] == subject and rule[2] == tenant
                }
            )

    def known_roles(self) -> frozenset[str]:
        """Every role some rule of the policy is written for.

        Raises:
            PolicyError: the policy could not be read.
        """
        with self._lock:
            self._sync_due_or_raise()
            return self._known_roles_locked()

    def assign_role(self, user: str, role: str, *, tenant: str) -> bool:
        """Give ``user`` the ``role`` in ``tenant``.

        Returns:
            False if the user already had it.

        Raises:
            UnknownRole: no rule of the policy is written for ``role``.
            InvalidTenant, InvalidData: malformed input (tenant ``*`` included:
                assignments are always to one tenant).
            PolicyError: the change could not be stored.
        """
        rule = [_user_key(user), _check_role(role), _check_tenant(tenant)]

        def change() -> bool:
            if role not in self._known_roles_locked():
                raise UnknownRole(f"the policy defines no role {role!r}", field="role")
            return bool(self._enforcer.add_named_grouping_policy("g", rule))

        return self._change(change)

    def revoke_role(self, user: str, role: str, *, tenant: str) -> bool:
        """Take ``role`` in ``tenant`` away from ``user``; False if not held.

        Raises:
            InvalidTenant, InvalidData: malformed input.
            PolicyError: the change could not be stored.
        """
        rule = [_user_key(user), _check_role(role), _check_tenant(tenant)]
        return self._change(lambda: bool(self._enforcer.remove_named_grouping_policy("g", rule)))

    def list_assignments(self, *, tenant: str | None = None) -> list[tuple[str, str, str]]:
        """Role assignments as sorted ``(user, role, tenant)``, optionally of one tenant.

        Raises:
            InvalidTenant: ``tenant`` is malformed.
            PolicyError: the policy could not be read.
        """
        if tenant is not None:
            _check_tenant(tenant)
        with self._lock:
            self._sync_due_or_raise()
            return sorted(
                {
                    (rule[0][len(_USER_PREFIX) :], rule[1], rule[2])
                    for rule in self._grouping_rules()
                    if rule[0].startswith(_USER_PREFIX) and tenant in (None, rule[2])
                }
            )

    # -- rules ----------------------------------------------------------------

    def add_rule(
        self,
        role: str,
        tenant: str,
        obj: str,
        action: str,
        purpose: str,
        effect: str = ALLOW,
    ) -> bool:
        """Add a rule for ``role``; it applies in this process at once.

        Args:
            role: the role the rule is written for.
            tenant: a tenant, or ``*`` for every tenant.
            obj: ``collection.field``, ``collection.*``, ``*`` or an
                administrative object.
            action: a data or administrative action.
            purpose: a purpose, or ``*`` for any.
            effect: ``allow`` or ``deny`` (a deny overrides every allow).

        Returns:
            False if the rule existed already.

        Raises:
            InvalidTenant, InvalidData: a malformed value.
            PolicyError: the change could not be stored.
        """
        rule = check_rule(role, tenant, obj, action, purpose, effect)
        return self._change(lambda: bool(self._enforcer.add_named_policy("p", rule)))

    def remove_rule(
        self, role: str, tenant: str, obj: str, action: str, purpose: str, effect: str = ALLOW
    ) -> bool:
        """Remove a rule (same arguments as :meth:`add_rule`); False if absent.

        Raises:
            InvalidTenant, InvalidData: a malformed value.
            PolicyError: the change could not be stored.
        """
        rule = check_rule(role, tenant, obj, action, purpose, effect)
        return self._change(lambda: bool(self._enforcer.remove_named_policy("p", rule)))

    def rules(self) -> list[tuple[str, ...]]:
        """Every role rule, sorted, as ``(role, tenant, object, action, purpose, effect)``.

        Raises:
            PolicyError: the policy could not be read.
        """
        with self._lock:
            self._sync_due_or_raise()
            return sorted(tuple(rule) for rule in self._enforcer.get_named_policy("p"))

    def refresh(self, *, force: bool = False) -> None:
        """Check the stored version now and reload if it moved (always, with ``force``).

        Raises:
            PolicyError: the policy could not be read.
        """
        with self._lock:
            try:
                self._sync_locked(force=force)
            except Exception as exc:
                log.warning("policy_refresh_failed", error_type=type(exc).__name__)
                raise PolicyError("the policy could not be loaded") from None

    # -- internals ------------------------------------------------------------

    def _decide_fields(self, key: _FieldKey) -> frozenset[str]:
        actor_id, tenant, collection, action, purpose, fields = key
        subject = self._check_request(actor_id, tenant, action, purpose)
        _check_name(collection, "collection")
        for name in fields:
            _check_name(name, "field")

        def decide() -> frozenset[str]:
            if (subject, tenant) not in self._memberships():
                return _NOTHING
            enforcer = self._enforcer
            return frozenset(
                name
                for name in fields
                if _enforce(enforcer, subject, tenant, f"{collection}.{name}", action, purpose)
            )

        return self._cached(lambda: self._field_cache, key, decide, _NOTHING)

    def _decide_object(self, key: _ObjectKey) -> bool:
        actor_id, tenant, obj, action, purpose = key
        subject = self._check_request(actor_id, tenant, action, purpose)
        if not isinstance(obj, str) or not _OBJECT_RE.fullmatch(obj):
            raise InvalidData("the object is malformed", field="object")

        def decide() -> bool:
            return (subject, tenant) in self._memberships() and _enforce(
                self._enforcer, subject, tenant, obj, action, purpose)

        return self._cached(lambda: self._object_cache, key, decide, False)

    def _cached(self, cache_of: Callable[[], dict[_K, _D]], key: _K, decide: Callable[[], _D],
                refused: _D) -> _D:
        """The decision of ``key``: cached, or ``decide()``d and cached, under the lock;
        ``refused`` while the policy cannot be refreshed or the engine fails. The
        cache is taken after the refresh (which starts new caches)."""
        with self._lock:
            if not self._sync_due_quietly():
                return refused
            cache = cache_of()
            hit = cache.get(key)
            if hit is not None:
                return hit
            try:
                allowed = decide()
            except Exception as exc:
                log.warning("policy_engine_error", error_type=type(exc).__name__)
                return refused
            if len(cache) >= _MAX_CACHE:
                cache.clear()
            cache[key] = allowed
            return allowed

    @staticmethod
    def _check_request(actor_id: str, tenant: str, action: str, purpose: str) -> str:
        subject = _user_key(actor_id)
        _check_tenant(tenant)
        if not isinstance(action, str) or not _ACTION_RE.fullmatch(action):
            raise InvalidData("the action is malformed", field="action")
        if not isinstance(purpose, str) or not _PURPOSE_RE.fullmatch(purpose):
            raise InvalidData("the purpose is malformed", field="purpose")
        return subject

    def _memberships(self) -> frozenset[tuple[str, str]]:
        """(user, tenant) pairs with at least one role; caller holds the lock.

        A request from a user without a role in the tenant cannot match any
        rule, so it is denied without asking Casbin: only ever a denial.
        """
        if self._members is None:
            self._members = frozenset(
                (rule[0], rule[2]) for rule in self._grouping_rules() if len(rule) >= 3
            )
        return self._members

    def _grouping_rules(self) -> list[list[str]]:
        rules: list[list[str]] = self._enforcer.get_named_grouping_policy("g")
        return rules

    def _known_roles_locked(self) -> frozenset[str]:
        return frozenset(self._enforcer.get_all_named_subjects("p"))

    def _invalidate_locked(self) -> None:
        # New dicts rather than clear(): a lock-free reader holding the old
        # one finishes its lookup, and no new entry can land in it.
        self._field_cache = {}
        self._object_cache = {}
        self._members = None

    def _sync_locked(self, *, force: bool) -> None:
        """Load the stored policy if its version moved (or if ``force``). Raises on failure."""
        if (
            not force
            and self._version is not None
            and self._adapter.read_version() == self._version
        ):
            self._next_check = time.monotonic() + self._interval
            return
        self._enforcer.load_policy()
        self._version = self._adapter.loaded_version
        self._invalidate_locked()
        self._next_check = time.monotonic() + self._interval
        log.debug("policy_loaded", version=self._version)

    def _sync_due_quietly(self) -> bool:
        """Check the version if due; False (deny) if the policy cannot be read."""
        if self._version is not None and time.monotonic() < self._next_check:
            return True
        try:
            self._sync_locked(force=False)
        except Exception as exc:
            log.warning("policy_refresh_failed", error_type=type(exc).__name__)
            return False
        return True

    def _sync_due_or_raise(self) -> None:
        if not self._sync_due_quietly():
            raise PolicyError("the policy could not be loaded")

    def _recover_locked(self) -> None:
        """Reload after a write; if even that fails, deny until a reload works."""
        try:
            self._sync_locked(force=True)
        except Exception as exc:
            log.warning("policy_refresh_failed", error_type=type(exc).__name__)
            self._version = None
            self._next_check = 0.0
            self._invalidate_locked()

    def _change(self, change: Callable[[], bool]) -> bool:
        """Apply one change through Casbin (which stores it through the adapter)."""
        with self._lock:
            try:
                # Writes start from the stored policy, not a stale copy.
                self._sync_locked(force=False)
                before = self._version
                changed = change()
            except VaultError:
                raise
            except Exception as exc:
                log.warning("policy_write_failed", error_type=type(exc).__name__)
                self._recover_locked()
                raise PolicyError("the policy could not be changed") from None
            if changed:
                written = self._adapter.written_version
                if before is not None and written == before + 1:
                    # Nobody else wrote in between: memory and database agree.
                    self._version = written
                    self._invalidate_locked()
                    self._next_check = time.monotonic() + self._interval
                else:
                    self._recover_locked()
            return changed


# -- Casbin set-up -------------------------------------------------------------------


class _DropAll(logging.Filter):
    """Drops every record: Casbin's log lines carry subjects and objects."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


_CASBIN_LOGGERS: Final = ("casbin", "casbin.enforcer", "casbin.policy", "casbin.role")
_DROP_ALL: Final = _DropAll()


def _mute_casbin_loggers() -> None:
    """Silence Casbin's own loggers, and only those.

    ``enable_log=False`` makes Casbin disable these loggers, but any later
    ``logging.config.dictConfig`` in the application re-enables existing
    loggers; the filter still drops their records then.
    """
    for name in _CASBIN_LOGGERS:
        logger = logging.getLogger(name)
        logger.disabled = True
        logger.addFilter(_DROP_ALL)  # no-op if already there


def _muted_logger() -> logging.Logger:
    # Not registered with logging's manager, so no configuration can turn it
    # back on; Casbin then does not even format its request log line.
    logger = logging.Logger("vault.policy.casbin", logging.CRITICAL + 1)
    logger.disabled = True
    logger.propagate = False
    return logger


def _build_enforcer(model_path: Path) -> Any:
    _mute_casbin_loggers()
    if not model_path.is_file():
        raise ConfigError(f"{model_path}: the Casbin model file is missing")
    try:
        model = casbin.Enforcer.new_model(path=str(model_path))
        # No adapter yet: Casbin would load (and print) the policy right away.
        enforcer = casbin.Enforcer(model, None, enable_log=False)
    except Exception as exc:
        raise ConfigError(
            f"{model_path}: not a valid Casbin model ({type(exc).__name__})"
        ) from None
    _mute_casbin_loggers()
    enforcer.logger = _muted_logger()
    try:
        for (sec, ptype), tokens in _EXPECTED_TOKENS.items():
            if list(enforcer.model[sec][ptype].tokens) != tokens:
                raise ConfigError(
                    f"{model_path}: [{sec}] must define {sec} = "
                    + ", ".join(t.split("_", 1)[1] for t in tokens)
                )
        if "g" not in enforcer.model["g"] or "m" not in enforcer.model["m"]:
            raise ConfigError(f"{model_path}: the model needs a role definition and a matcher")
    except (KeyError, TypeError, AttributeError):
        raise ConfigError(f"{model_path}: the model lacks a required section") from None
    return enforcer


# -- input checks --------------------------------------------------------------------


def _user_key(actor_id: object) -> str:
    if not isinstance(actor_id, str) or not _ACTOR_RE.fullmatch(actor_id):
        # Never echoed: an actor id may be an e-mail address.
        raise InvalidData("the actor id is malformed", field="actor")
    return _USER_PREFIX + actor_id


def _check_tenant(tenant: object) -> str:
    return check_tenant(tenant)


def _check_role(role: object) -> str:
    if not isinstance(role, str) or not _ROLE_RE.fullmatch(role):
        raise InvalidData("the role name is malformed", field="role")
    return role


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidData(f"a {what} name is malformed", field=what)
    return name


def check_rule(
    role: str, tenant: str, obj: str, action: str, purpose: str, effect: str
) -> list[str]:
    _check_role(role)
    if tenant != WILDCARD:
        _check_tenant(tenant)
    if not isinstance(obj, str) or not _RULE_OBJECT_RE.fullmatch(obj):
        raise InvalidData("the object is malformed", field="object")
    if not isinstance(action, str) or not _ACTION_RE.fullmatch(action):
        raise InvalidData("the action is malformed", field="action")
    if purpose != WILDCARD and (not isinstance(purpose, str) or not _PURPOSE_RE.fullmatch(purpose)):
        raise InvalidData("the purpose is malformed", field="purpose")
    if effect not in (ALLOW, DENY):
        raise InvalidData("the effect must be 'allow' or 'deny'", field="effect")
    return [role, tenant, obj, action, purpose, effect]


def _parse_policy_csv(path: Path) -> list[tuple[str, list[str]]]:
    """Parse and check a policy file; ConfigError names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the policy file ({type(exc).__name__})") from None
    rules: list[tuple[str, list[str]]] = []
    assignments: list[tuple[int, str]] = []
    roles: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, *values = (token.strip() for token in line.split(","))
        where = f"{path}:{lineno}"
        if kind == "p":
            if len(values) != 6:
                raise ConfigError(
                    f"{where}: a 'p' rule needs 6 values "
                    f"(role, tenant, object, action, purpose, effect), found {len(values)}"
                )
            try:
                rules.append(("p", check_rule(*values)))
            except VaultError as exc:
                raise ConfigError(f"{where}: {exc.message}") from None
            roles.add(values[0])
        elif kind == "g":
            if len(values) != 3:
                raise ConfigError(
                    f"{where}: a 'g' rule needs 3 values (user, role, tenant), found {len(values)}"
                )
            try:
                user, role, tenant = _user_key(values[0]), _check_role(values[1]), values[2]
                _check_tenant(tenant)
            except VaultError as exc:
                raise ConfigError(f"{where}: {exc.message}") from None
            rules.append(("g", [user, role, tenant]))
            assignments.append((lineno, role))
        else:
            raise ConfigError(f"{where}: a rule must start with 'p' or 'g'")
    for lineno, role in assignments:
        if role not in roles:
            raise ConfigError(f"{path}:{lineno}: the role is not defined by any 'p' rule")
    if not roles:
        raise ConfigError(f"{path}: the policy file defines no rules")
    return rules
