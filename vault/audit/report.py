"""Audit reports for compliance officers: filters, ready-made views, and outputs.

:func:`report` runs one :class:`ReportView` over the audit log, filtered by a
:class:`ReportFilters`, and returns an :class:`AuditReport`. The views answer
the questions an auditor asks:

``entries``
    every entry matching the filters.
``subject_access``
    who accessed one data subject's data, when, for what purpose and with
    what outcome: the recipients of GDPR Art. 15(1)(c). Needs ``subject``
    (and its ``tenant``); denied attempts on the subject's records are listed
    too.
``denials``
    refused calls, one row each: time, actor, action, fields, purpose, the
    reason code (``no_role``, ``purpose_not_allowed``, ``field_not_allowed``,
    ``consent_required``, ``restricted``, ``legal_hold``, ``transfer_refused``,
    ... see :data:`vault.errors.REFUSAL_HINTS`), the subjects' pseudonyms and
    records concerned, and the request id (the per-field and per-actor totals
    come with every report).
``unusual_purpose``
    allowed accesses for a purpose outside the actor's usual ones. An actor's
    *usual* purposes are those that make up at least ``usual_share`` of its
    allowed data accesses over the *baseline*: the report window itself, or,
    with ``usual_baseline_days`` > 0, that many days before the start of the
    window (``since``), so that the accesses judged do not shape their own
    baseline. Actors with fewer than ``usual_min_accesses`` allowed accesses
    in the baseline are not judged. The baseline honours the tenant, actor
    and collection filters only: an actor's habits do not depend on which
    subject, purpose or action the report is about.
``bursts``
    more than ``burst_reads`` records read (``read`` and ``search``, allowed
    or not) by one actor within ``burst_minutes``; overlapping windows are
    merged into one burst.
``privileged``
    role, policy, key and vault administration (``roles.*``, ``policy.*``,
    ``keys.*``, ``vault.*``, ``config.*``, ``audit.checkpoint`` and denied
    ``audit.read`` attempts).

Every count is made by the database (``GROUP BY``); entries are streamed
(``yield_per``) and at most ``limit`` rows are kept. The figures of a report
(totals, per day, denials per actor and per field) describe the entries the
view examines: everything for ``entries`` and ``denials``, data actions for
``subject_access`` and ``unusual_purpose``, reads for ``bursts``, privileged
actions for ``privileged``.

Outputs: :func:`rich_table` for the terminal, :func:`to_csv`, :func:`to_json`
(``schema_version`` 1, below) and :func:`to_html` (one self-contained page:
inline CSS and SVG charts, no scripts, no external assets). The log holds no
personal data (subjects are keyed pseudonyms), and a subject given as a
filter is shown only as its pseudonym: the subject id is never kept in the
report.

JSON schema 1::

    {"schema_version": 1, "view", "title", "generated_at",
     "filters": {name: value},
     "time_range": {"from", "to", "first_entry", "last_entry"},   # ISO 8601 or null
     "thresholds": {"usual_share", "usual_min_accesses", "usual_baseline_days",
                    "burst_reads", "burst_minutes"},
     "totals": {"entries", "allowed", "denials", "errors", "rows", "truncated"},
     "verification": {"state", "ok", "verified_at", "action", "damage",
                      "checkpoints_checked", "checkpoint", "checkpoint_signed_at",
                      "entries_since", "statement"},
     "per_day": [{"day", "allowed", "denied", "errors"}],
     "denials_by_actor": [{"tenant", "actor", "denials"}],
     "denials_by_field": [{"field", "denials"}],
     "columns": [name], "rows": [{column: value}],
     "altered_entries": [{"seq", "time", "tenant", "actor", "action", "decision",
                          "altered"}]}

``altered_entries`` appears only when the log holds entries (SQLite) whose
columns are not of their storage class or form: they are left out of every
figure and listed there instead (see :attr:`AuditReport.altered`).

Misuse: a report reads the whole audit trail, which says who works on which
subject when. Reach it through ``Vault.audit.report`` (or the CLI), which
authorises the caller and audits the report itself; calling :func:`report`
on an engine directly does neither.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import html
import io
import json
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import IO, Any, NamedTuple, cast

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from rich.table import Table
from rich.text import Text
from sqlalchemy import ColumnElement, Connection, Engine, Select, func, or_, select, text
from sqlalchemy import Table as SATable

from vault.audit.chain import Decision
from vault.errors import InvalidData
from vault.store.models import AuditEntryRow
from vault.types import check_identifier

__all__ = [
    "JSON_SCHEMA_VERSION",
    "ROW_LIMIT",
    "ActorCount",
    "CSV_VERIFICATION_COLUMN",
    "AuditReport",
    "DayCount",
    "FieldCount",
    "ReportFilters",
    "ReportThresholds",
    "ReportView",
    "Verification",
    "last_verification",
    "render",
    "report",
    "rich_table",
    "to_csv",
    "to_html",
    "to_json",
    "verification_status",
]

_T = cast(SATable, AuditEntryRow.__table__)
JSON_SCHEMA_VERSION = 1
ROW_LIMIT = 10_000
DATA_ACTIONS = ("read", "search", "write", "update", "delete", "export")
READ_ACTIONS = ("read", "search")
PRIVILEGED_PREFIXES = ("roles.", "policy.", "keys.", "vault.", "config.")
PRIVILEGED_ACTIONS = ("audit.checkpoint", "audit.read")
_STREAM = 5_000
_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")

Row = dict[str, str | int]


class ReportView(enum.StrEnum):
    """The ready-made views (see the module docstring)."""

    ENTRIES = "entries"
    SUBJECT_ACCESS = "subject_access"
    DENIALS = "denials"
    UNUSUAL_PURPOSE = "unusual_purpose"
    BURSTS = "bursts"
    PRIVILEGED = "privileged"


def _invalid(exc: ValidationError) -> InvalidData:
    """One InvalidData naming the first bad filter; pydantic's message holds no input."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if where:
        return InvalidData(f"report filter {where}: {message}", field=where)
    return InvalidData(f"report filters: {message}")


class ReportFilters(BaseModel):
    """Which entries a report covers; every filter given must match.

    ``since`` and ``until`` are inclusive and must be aware datetimes (they
    are kept in UTC). ``subject`` is a subject id of ``tenant``: the report
    turns it into its keyed pseudonym and never shows it.

    Raises:
        InvalidData: a naive time, ``since`` after ``until``, a decision other
            than allow/deny/error, a malformed identifier or action, or a
            subject without a tenant. Values are never echoed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    tenant: str | None = None
    actor: str | None = None
    subject: str | None = None
    action: str | None = None
    decision: Decision | None = None
    purpose: str | None = None
    collection: str | None = None

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _invalid(exc) from None

    @classmethod
    def parse(cls, **values: Any) -> ReportFilters:
        """Build filters (same as the constructor; kept for readability at call sites)."""
        return cls(**values)

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must include a time zone (e.g. 2026-11-01T00:00:00Z)")
        return value.astimezone(dt.UTC)

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        # "*" is the tenant of the vault-wide administrative entries.
        if value is not None and value != "*":
            try:
                check_identifier(value, "tenant")
            except InvalidData:
                raise ValueError("is not a valid tenant") from None
        return value

    @field_validator("actor", "subject", "purpose", "collection")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_identifier(value, "filter")
            except InvalidData:
                raise ValueError("is not a valid identifier") from None
        return value

    @field_validator("action")
    @classmethod
    def _action(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 64 or not _ACTION.fullmatch(value)):
            raise ValueError("is not an action name (e.g. read, roles.assign)")
        return value

    @model_validator(mode="after")
    def _window(self) -> ReportFilters:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("from (since) must not be after to (until)")
        if self.subject is not None and self.tenant in (None, "*"):
            raise ValueError("a subject filter needs the tenant of the subject")
        return self


@dataclass(frozen=True, slots=True)
class ReportThresholds:
    """Thresholds of the ``unusual_purpose`` and ``bursts`` views.

    Attributes:
        usual_share: a purpose is usual for an actor when it makes up at least
            this share (0 < share < 1) of the actor's allowed data accesses in
            the baseline.
        usual_min_accesses: actors with fewer baseline accesses are not judged.
        usual_baseline_days: 0 to take the report window as the baseline, else
            that many days before ``since`` (which is then required).
        burst_reads: a burst is *more than* this many records read ...
        burst_minutes: ... by one actor within this many minutes.

    Raises:
        InvalidData: a value out of range.
    """

    usual_share: float = 0.05
    usual_min_accesses: int = 20
    usual_baseline_days: int = 0
    burst_reads: int = 100
    burst_minutes: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.usual_share < 1:
            raise InvalidData("usual_share must be between 0 and 1", field="usual_share")
        for name in ("usual_min_accesses", "burst_reads", "burst_minutes"):
            if getattr(self, name) < 1:
                raise InvalidData(f"{name} must be at least 1", field=name)
        if self.usual_baseline_days < 0:
            raise InvalidData("usual_baseline_days must not be negative",
                              field="usual_baseline_days")


class DayCount(NamedTuple):
    """Entries of one UTC day by decision."""

    day: str
    allowed: int
    denied: int
    errors: int


class ActorCount(NamedTuple):
    """Denied entries of one actor."""

    tenant: str
    actor: str
    denials: int


class FieldCount(NamedTuple):
    """Denied entries naming one field."""

    name: str
    denials: int


@dataclass(frozen=True)
class AuditReport:
    """A finished report: the rows of its view and the figures every output shows.

    Attributes:
        view: the view that was run.
        filters: the filters as shown to readers (``from``/``to`` in ISO 8601;
            a subject only as ``subject (pseudonym)``).
        since, until: the requested time window (None: open).
        first_entry, last_entry: times of the first and last entry examined.
        generated_at: when the report was made (the vault's clock).
        thresholds: the thresholds in force.
        columns, rows: the view's table; values are str or int.
        total_entries, total_allowed, total_denials, total_errors: counts of
            the entries the view examines, by decision.
        per_day: those counts per UTC day, oldest first.
        denials_by_actor: denied entries per (tenant, actor), most first.
        denials_by_field: denied entries per field named, most first
            (``(none)`` for refusals naming no field).
        truncated: True if more than ``limit`` rows matched.
        limit: the row limit (None: unlimited).
        altered: entries within the filters whose stored columns are not of their
            type or form (SQLite keeps a BLOB in any column; only a hand-made change
            does that): listed apart, with the columns that are wrong, and left out
            of every figure, so that they can neither hide nor break the report.
            ``vault audit verify`` names them as damage.
        verification: the last verification of the log when the report was made
            (see :class:`Verification`); every output states it.
    """

    view: ReportView
    filters: dict[str, str]
    since: dt.datetime | None
    until: dt.datetime | None
    first_entry: dt.datetime | None
    last_entry: dt.datetime | None
    generated_at: dt.datetime
    thresholds: ReportThresholds
    columns: list[str]
    rows: list[Row]
    total_entries: int
    total_allowed: int
    total_denials: int
    total_errors: int
    per_day: list[DayCount]
    denials_by_actor: list[ActorCount]
    denials_by_field: list[FieldCount]
    truncated: bool = False
    limit: int | None = ROW_LIMIT
    altered: list[Row] = field(default_factory=list)
    verification: Verification | None = None

    @property
    def title(self) -> str:
        return _TITLES[self.view]

    def summary(self) -> dict[str, int | bool]:
        """The headline numbers (also ``totals`` in JSON)."""
        return {"entries": self.total_entries, "allowed": self.total_allowed,
                "denials": self.total_denials, "errors": self.total_errors,
                "rows": len(self.rows), "truncated": self.truncated}


_TITLES = {
    ReportView.ENTRIES: "Audit entries",
    ReportView.SUBJECT_ACCESS: "Who accessed this data subject's data (GDPR Art. 15(1)(c))",
    ReportView.DENIALS: "Refused calls, with their reasons",
    ReportView.UNUSUAL_PURPOSE: "Access for purposes outside an actor's usual ones",
    ReportView.BURSTS: "Bursts of reads by one actor",
    ReportView.PRIVILEGED: "Privileged actions (roles, policy, keys)",
}

# ------------------------------------------------------------------ building

_Clauses = list[ColumnElement[bool]]


def _filter_clauses(filters: ReportFilters, pseudonym: str | None, *,
                    baseline: bool = False) -> _Clauses:
    """WHERE clauses of the filters (tenant, actor, action, ts are indexed columns).

    With ``baseline``, only the filters that describe whose habits are
    measured: tenant, actor and collection (no time, subject, purpose,
    action or decision).
    """
    clauses: _Clauses = []
    names = ("tenant", "actor", "collection") if baseline else (
        "tenant", "actor", "action", "decision", "purpose", "collection")
    for name in names:
        value = getattr(filters, name)
        if value is not None:
            clauses.append(_T.c[name] == str(value))
    if baseline:
        return clauses
    if filters.since is not None:
        clauses.append(_T.c.ts >= filters.since)
    if filters.until is not None:
        clauses.append(_T.c.ts <= filters.until)
    if pseudonym is not None:
        # ``subjects`` is a JSON list of pseudonyms; quotes anchor the match.
        clauses.append(_T.c.subjects.contains(f'"{pseudonym}"', autoescape=True))
    return clauses


def _privileged() -> ColumnElement[bool]:
    return or_(_T.c.action.in_(PRIVILEGED_ACTIONS),
               *[_T.c.action.startswith(p, autoescape=True) for p in PRIVILEGED_PREFIXES])


def _scope(view: ReportView) -> _Clauses:
    """The entries a view examines (see the module docstring)."""
    if view in (ReportView.SUBJECT_ACCESS, ReportView.UNUSUAL_PURPOSE):
        return [_T.c.action.in_(DATA_ACTIONS)]
    if view is ReportView.BURSTS:
        return [_T.c.action.in_(READ_ACTIONS)]
    if view is ReportView.PRIVILEGED:
        return [_privileged()]
    return []


# SQLite: an entry whose text columns hold text (no BLOB: BLOBs sort above
# everything, so one max() tells) and whose ts is text in the stored form. Other
# rows would fall out of equality and time filters, or break the conversions.
_TS_FORM = "-".join(["[0-9]" * 4, "[0-9]" * 2, "[0-9]" * 2]) + " " + ":".join(
    ["[0-9]" * 2] * 3) + "." + "[0-9]" * 6
_REPORT_TEXT = ("request_id", "tenant", "actor", "action", "record_ids", "subjects", "fields",
                "decision", "prev_hash", "hash")
_REPORT_NULLABLE = ("collection", "purpose", "reason")
_SOUND_SQLITE = (
    "max(ts, " + ", ".join(_REPORT_TEXT) + "".join(f", ifnull({c}, '')" for c in _REPORT_NULLABLE)
    + f") < X'' AND ts >= '' AND ts GLOB '{_TS_FORM}'")
_ALTERED_LIMIT = 1000


def _sound(engine: Engine) -> _Clauses:
    """The clause that keeps rows of altered storage class out of the figures (SQLite)."""
    if engine.dialect.name != "sqlite":
        return []  # PostgreSQL columns hold only their own type
    return [cast(ColumnElement[bool], text(_SOUND_SQLITE))]


def _altered(conn: Connection, filters: ReportFilters, pseudo: str | None,
             view: ReportView) -> list[Row]:
    """SQLite: the entries left out by :func:`_sound` that the filters and the view
    would take, judged on their values read as UTF-8 text (at most
    :data:`_ALTERED_LIMIT`). An entry whose time cannot be read is kept."""
    columns = ("ts", "tenant", "actor", "action", "decision", "collection", "purpose",
               "subjects")
    checked = ("ts", *_REPORT_TEXT, *_REPORT_NULLABLE)
    sql = ("SELECT seq, " + ", ".join(f"CAST({c} AS BLOB)" for c in columns) + ", "  # noqa: S608
           + ", ".join(f"typeof({c})" for c in checked)
           + f" FROM audit_log WHERE NOT ({_SOUND_SQLITE}) ORDER BY seq")
    found: list[Row] = []
    for raw in conn.exec_driver_sql(sql):
        values = {c: None if v is None else bytes(v).decode("utf-8", "replace")
                  for c, v in zip(columns, raw[1:1 + len(columns)], strict=True)}
        kinds = dict(zip(checked, raw[1 + len(columns):], strict=True))
        if not _takes(values, filters, pseudo, view):
            continue
        wrong = [f"{c}:{k}" for c, k in kinds.items()
                 if k not in ("text", "null") or (k == "null" and c not in _REPORT_NULLABLE)]
        stamp = values["ts"] or ""
        if kinds["ts"] == "text" and not wrong:
            wrong.append("ts:form")
        found.append({"seq": int(raw[0]), "time": stamp, "tenant": values["tenant"] or "",
                      "actor": values["actor"] or "", "action": values["action"] or "",
                      "decision": values["decision"] or "", "altered": " ".join(wrong)})
        if len(found) >= _ALTERED_LIMIT:
            break
    return found


def _takes(values: dict[str, str | None], filters: ReportFilters, pseudo: str | None,
           view: ReportView) -> bool:
    """Whether the filters and the view would take an entry of these values."""
    for name in ("tenant", "actor", "action", "decision", "purpose", "collection"):
        wanted = getattr(filters, name)
        if wanted is not None and values[name] != str(wanted):
            return False
    if pseudo is not None and f'"{pseudo}"' not in (values["subjects"] or ""):
        return False
    action = values["action"] or ""
    if view in (ReportView.SUBJECT_ACCESS, ReportView.UNUSUAL_PURPOSE):
        if action not in DATA_ACTIONS:
            return False
    elif view is ReportView.BURSTS:
        if action not in READ_ACTIONS:
            return False
    elif view is ReportView.PRIVILEGED and not (
            action in PRIVILEGED_ACTIONS or action.startswith(PRIVILEGED_PREFIXES)):
        return False
    try:
        stamp = _aware((values["ts"] or "").replace("T", " ").rstrip("Z"))
    except ValueError:
        return True  # an unreadable time: it may belong to any window
    return not ((filters.since is not None and stamp < filters.since)
                or (filters.until is not None and stamp > filters.until))


def _day(engine: Engine) -> ColumnElement[str]:
    """The UTC day of ``ts`` as YYYY-MM-DD, computed by the database."""
    if engine.dialect.name == "sqlite":
        # SQLite stores UTCDateTime as naive UTC text "YYYY-MM-DD HH:MM:SS...".
        return cast(ColumnElement[str], func.substr(_T.c.ts, 1, 10))
    return cast(ColumnElement[str], func.to_char(func.timezone("UTC", _T.c.ts), "YYYY-MM-DD"))


def _aware(value: Any) -> dt.datetime:
    stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC)


def _iso(value: Any) -> str:
    return _aware(value).isoformat(timespec="seconds")


def _names(text: str | None) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def report(
    engine: Engine,
    filters: ReportFilters,
    *,
    view: ReportView | str = ReportView.ENTRIES,
    pseudonym: Callable[[str, str], str] | None = None,
    thresholds: ReportThresholds | None = None,
    now: dt.datetime | None = None,
    limit: int | None = ROW_LIMIT,
) -> AuditReport:
    """Run one report view over the audit log in ``engine``.

    Args:
        engine: the data database.
        filters: which entries to cover.
        view: a :class:`ReportView` or its name.
        pseudonym: ``(tenant, subject_id) -> pseudonym`` (``Vault.pseudonym``);
            needed only with a subject filter.
        thresholds: of ``unusual_purpose`` and ``bursts`` (defaults otherwise).
        now: the time printed as ``generated_at`` (default: the system clock).
        limit: keep at most this many rows (None: all; mind the memory).

    Returns:
        An :class:`AuditReport`.

    Raises:
        InvalidData: an unknown view; ``subject_access`` without a subject; a
            subject filter without ``pseudonym``; a baseline without ``since``;
            a negative limit.
    """
    try:
        view = ReportView(view)
    except ValueError:
        raise InvalidData("unknown report view; use one of "
                          + ", ".join(v.value for v in ReportView), field="view") from None
    if view is ReportView.SUBJECT_ACCESS and filters.subject is None:
        raise InvalidData("the subject_access view needs a subject (and its tenant)",
                          field="subject")
    if limit is not None and limit < 0:
        raise InvalidData("limit must not be negative", field="limit")
    limits = thresholds or ReportThresholds()
    if (view is ReportView.UNUSUAL_PURPOSE and limits.usual_baseline_days
            and filters.since is None):
        raise InvalidData("a baseline of days before the report needs a start time (from)",
                          field="since")
    pseudo: str | None = None
    if filters.subject is not None:
        if pseudonym is None:
            raise InvalidData("a subject filter needs the vault's pseudonym function",
                              field="subject")
        pseudo = pseudonym(cast(str, filters.tenant), filters.subject)
    where = _filter_clauses(filters, pseudo) + _scope(view) + _sound(engine)
    context = _Context(engine, filters, where, limits, limit)
    with _snapshot(engine) as conn:
        altered = _altered(conn, filters, pseudo, view) if engine.dialect.name == "sqlite" else []
        day = _day(engine)
        by_day: dict[str, list[int]] = {}
        for d, decision, n in conn.execute(
                select(day, _T.c.decision, func.count()).where(*where)
                .group_by(day, _T.c.decision)):
            slot = by_day.setdefault(str(d), [0, 0, 0])
            slot[_DECISION_SLOT.get(str(decision), 2)] += int(n)
        first, last = conn.execute(select(func.min(_T.c.ts), func.max(_T.c.ts))
                                   .where(*where)).one()
        denied = [*where, _T.c.decision == Decision.DENY.value]
        denials_by_actor = [
            ActorCount(str(t), str(a), int(n)) for t, a, n in conn.execute(
                select(_T.c.tenant, _T.c.actor, func.count()).where(*denied)
                .group_by(_T.c.tenant, _T.c.actor)
                .order_by(func.count().desc(), _T.c.tenant, _T.c.actor))]
        # Few distinct field lists exist: group by the JSON text, split here.
        per_field: Counter[str] = Counter()
        for fields, n in conn.execute(select(_T.c.fields, func.count()).where(*denied)
                                      .group_by(_T.c.fields)):
            for name in _names(fields) or ["(none)"]:
                per_field[name] += int(n)
        columns, rows, truncated = _VIEWS[view](conn, context)
        verification = last_verification(conn)
    totals = [sum(v[i] for v in by_day.values()) for i in range(3)]
    return AuditReport(
        view=view, filters=_shown(filters, pseudo), since=filters.since, until=filters.until,
        first_entry=None if first is None else _aware(first),
        last_entry=None if last is None else _aware(last),
        generated_at=_aware(now or dt.datetime.now(dt.UTC)), thresholds=limits,
        columns=columns, rows=rows, total_entries=sum(totals), total_allowed=totals[0],
        total_denials=totals[1], total_errors=totals[2],
        per_day=[DayCount(d, *v) for d, v in sorted(by_day.items())],
        denials_by_actor=denials_by_actor,
        denials_by_field=[FieldCount(k, n) for k, n in
                          sorted(per_field.items(), key=lambda kv: (-kv[1], kv[0]))],
        truncated=truncated, limit=limit, altered=altered, verification=verification,
    )


_DECISION_SLOT = {Decision.ALLOW.value: 0, Decision.DENY.value: 1, Decision.ERROR.value: 2}


def _shown(filters: ReportFilters, pseudo: str | None) -> dict[str, str]:
    """The filters as printed: ISO times, and never the subject id itself."""
    shown: dict[str, str] = {}
    if filters.since is not None:
        shown["from"] = _iso(filters.since)
    if filters.until is not None:
        shown["to"] = _iso(filters.until)
    for name in ("tenant", "actor", "action", "decision", "purpose", "collection"):
        value = getattr(filters, name)
        if value is not None:
            shown[name] = str(value)
    if pseudo is not None:
        shown["subject (pseudonym)"] = pseudo
    return shown


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction, so that counts and rows agree."""
    options: dict[str, Any] = {}
    if engine.dialect.name == "sqlite":
        options["sqlite_begin"] = "deferred"
    elif engine.dialect.name == "postgresql":
        options.update(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    with engine.connect().execution_options(**options) as conn:
        conn.begin()
        try:
            yield conn
        finally:
            conn.rollback()


@dataclass(frozen=True, slots=True)
class _Context:
    engine: Engine
    filters: ReportFilters
    where: _Clauses
    thresholds: ReportThresholds
    limit: int | None


_Result = tuple[list[str], list[Row], bool]

_ENTRY_COLUMNS = ["seq", "time", "tenant", "actor", "action", "collection", "fields",
                  "subjects", "records", "purpose", "decision", "reason", "request_id"]


def _entry_row(row: Any) -> Row:
    return {
        "seq": int(row.seq), "time": _iso(row.ts), "tenant": row.tenant, "actor": row.actor,
        "action": row.action, "collection": row.collection or "",
        "fields": ", ".join(_names(row.fields)), "subjects": len(_names(row.subjects)),
        "records": len(_names(row.record_ids)), "purpose": row.purpose or "",
        "decision": row.decision, "reason": row.reason or "", "request_id": row.request_id,
    }


def _streamed(conn: Connection, stmt: Select[Any], limit: int | None,
              convert: Callable[[Any], Row]) -> tuple[list[Row], bool]:
    """Rows of ``stmt`` fetched in batches, at most ``limit`` kept."""
    if limit is not None:
        stmt = stmt.limit(limit + 1)
    result = conn.execute(stmt.execution_options(yield_per=_STREAM))
    try:
        return _keep((convert(r) for r in result), limit)
    finally:
        result.close()  # a server-side cursor must not outlive an early stop


def _keep(rows: Iterable[Row], limit: int | None) -> tuple[list[Row], bool]:
    kept: list[Row] = []
    for row in rows:
        if limit is not None and len(kept) >= limit:
            return kept, True
        kept.append(row)
    return kept, False


def _view_entries(conn: Connection, ctx: _Context) -> _Result:
    stmt = select(_T).where(*ctx.where).order_by(_T.c.ts, _T.c.seq)
    rows, truncated = _streamed(conn, stmt, ctx.limit, _entry_row)
    return _ENTRY_COLUMNS, rows, truncated


_SUBJECT_COLUMNS = ["time", "tenant", "actor", "action", "collection", "fields", "purpose",
                    "decision", "reason", "request_id"]


def _view_subject(conn: Connection, ctx: _Context) -> _Result:
    _columns, rows, truncated = _view_entries(conn, ctx)
    return _SUBJECT_COLUMNS, [{k: r[k] for k in _SUBJECT_COLUMNS} for r in rows], truncated


_DENIAL_COLUMNS = ["time", "tenant", "actor", "action", "collection", "fields", "purpose",
                   "reason", "subjects", "records", "request_id"]


def _denial_row(row: Any) -> Row:
    return {
        "time": _iso(row.ts), "tenant": row.tenant, "actor": row.actor, "action": row.action,
        "collection": row.collection or "", "fields": ", ".join(_names(row.fields)),
        "purpose": row.purpose or "", "reason": row.reason or "access_denied",
        # Whole pseudonyms (never ids): a later report (--subject) needs them.
        "subjects": ", ".join(_names(row.subjects)),
        "records": ", ".join(_names(row.record_ids)), "request_id": row.request_id,
    }


def _view_denials(conn: Connection, ctx: _Context) -> _Result:
    """One row per refused call: when, who, what, the reason code, the subjects'
    pseudonyms and records concerned, and the request id."""
    stmt = (select(_T).where(*ctx.where, _T.c.decision == Decision.DENY.value)
            .order_by(_T.c.ts, _T.c.seq))
    rows, truncated = _streamed(conn, stmt, ctx.limit, _denial_row)
    return _DENIAL_COLUMNS, rows, truncated


def _view_unusual(conn: Connection, ctx: _Context) -> _Result:
    t, filters = ctx.thresholds, ctx.filters
    allowed = [_T.c.decision == Decision.ALLOW.value, _T.c.action.in_(DATA_ACTIONS)]
    base = _filter_clauses(filters, None, baseline=True) + allowed + _sound(ctx.engine)
    if t.usual_baseline_days and filters.since is not None:
        base += [_T.c.ts >= filters.since - dt.timedelta(days=t.usual_baseline_days),
                 _T.c.ts < filters.since]
    else:
        if filters.since is not None:
            base.append(_T.c.ts >= filters.since)
        if filters.until is not None:
            base.append(_T.c.ts <= filters.until)
    usage: dict[tuple[str, str], Counter[str]] = {}
    for tenant, actor, purpose, n in conn.execute(
            select(_T.c.tenant, _T.c.actor, _T.c.purpose, func.count()).where(*base)
            .group_by(_T.c.tenant, _T.c.actor, _T.c.purpose)):
        usage.setdefault((str(tenant), str(actor)), Counter())[str(purpose or "")] += int(n)
    rows: list[Row] = []
    for tenant, actor, purpose, n, first, last in conn.execute(
            select(_T.c.tenant, _T.c.actor, _T.c.purpose, func.count(), func.min(_T.c.ts),
                   func.max(_T.c.ts))
            .where(*ctx.where, *allowed)
            .group_by(_T.c.tenant, _T.c.actor, _T.c.purpose)
            .order_by(_T.c.tenant, _T.c.actor, _T.c.purpose)):
        habits = usage.get((str(tenant), str(actor)), Counter())
        total = sum(habits.values())
        if total < t.usual_min_accesses:
            continue
        share = habits[str(purpose or "")] / total
        if share >= t.usual_share:
            continue
        usual = sorted(p for p, k in habits.items() if k / total >= t.usual_share)
        rows.append({"tenant": str(tenant), "actor": str(actor), "purpose": str(purpose or ""),
                     "accesses": int(n), "baseline_share": f"{100 * share:.1f}%",
                     "usual_purposes": ", ".join(usual), "baseline_accesses": total,
                     "first": _iso(first), "last": _iso(last)})
    kept, truncated = _keep(rows, ctx.limit)
    return (["tenant", "actor", "purpose", "accesses", "baseline_share", "usual_purposes",
             "baseline_accesses", "first", "last"], kept, truncated)


def _view_bursts(conn: Connection, ctx: _Context) -> _Result:
    """Sliding window over each actor's reads, weighted by records read."""
    t = ctx.thresholds
    window = dt.timedelta(minutes=t.burst_minutes)
    rows: list[Row] = []
    current: tuple[str, str] | None = None
    # (time, cumulative records before this entry, cumulative entries before, denied before)
    recent: deque[tuple[dt.datetime, int, int, int]] = deque()
    records = entries = denied = in_window = 0
    burst: dict[str, Any] | None = None

    def close() -> None:
        if burst is not None:
            rows.append({
                "tenant": burst["tenant"], "actor": burst["actor"],
                "start": _iso(burst["start"]), "end": _iso(burst["end"]),
                "reads": burst["records1"] - burst["records0"],
                "entries": burst["entries1"] - burst["entries0"],
                "denied": burst["denied1"] - burst["denied0"],
                "threshold": f">{t.burst_reads} records in {t.burst_minutes} min"})

    # Records per entry, counted by the database: ids never contain a comma, so a
    # JSON list of n ids has n - 1 commas ("[]" counts as one read attempt).
    ids = _T.c.record_ids
    weight_sql = func.length(ids) - func.length(func.replace(ids, ",", "")) + 1
    stmt = (select(_T.c.tenant, _T.c.actor, _T.c.ts, weight_sql, _T.c.decision)
            .where(*ctx.where).order_by(_T.c.tenant, _T.c.actor, _T.c.ts, _T.c.seq)
            .execution_options(yield_per=_STREAM * 2))
    for tenant, actor, ts, weight, decision in conn.execute(stmt):
        who = (str(tenant), str(actor))
        stamp = _aware(ts)
        if who != current:
            close()
            current, burst = who, None
            recent.clear()
            records = entries = denied = in_window = 0
        weight = max(1, int(weight))
        recent.append((stamp, records, entries, denied))
        records += weight
        entries += 1
        denied += decision != Decision.ALLOW.value
        in_window += weight
        while stamp - recent[0][0] > window:
            start = recent.popleft()
            in_window -= (recent[0][1] if recent else records) - start[1]
        if in_window <= t.burst_reads:
            continue
        ends = {"end": stamp, "records1": records, "entries1": entries, "denied1": denied}
        if burst is not None and recent[0][0] <= burst["end"]:
            burst.update(ends)  # the windows overlap: one longer burst
            continue
        close()
        first = recent[0]
        burst = {"tenant": who[0], "actor": who[1], "start": first[0],
                 "records0": first[1], "entries0": first[2], "denied0": first[3], **ends}
    close()
    kept, truncated = _keep(rows, ctx.limit)
    return (["tenant", "actor", "start", "end", "reads", "entries", "denied", "threshold"],
            kept, truncated)


_VIEWS: dict[ReportView, Callable[[Connection, _Context], _Result]] = {
    ReportView.ENTRIES: _view_entries,
    ReportView.SUBJECT_ACCESS: _view_subject,
    ReportView.DENIALS: _view_denials,
    ReportView.UNUSUAL_PURPOSE: _view_unusual,
    ReportView.BURSTS: _view_bursts,
    ReportView.PRIVILEGED: _view_entries,  # the scope selects the privileged actions
}


# ------------------------------------------------------------------ verification

VERIFY_ACTIONS = ("audit.verify", "audit.checkpoint")


@dataclass(frozen=True, slots=True)
class Verification:
    """The last verification of the audit log, as the log itself records it.

    ``vault audit verify`` (``v.audit.verify``) appends an ``audit.verify`` entry
    with its result and ``vault audit checkpoint`` an ``audit.checkpoint`` entry
    (it verifies before it signs): the newest of these is the last verification.
    It lives in the log, not in a table, because the log is shared by every
    replica, append-only and hash-chained (a forged "verified" entry breaks the
    chain), and the application's database role may insert into it.

    Attributes:
        at: when it ran (None: the log was never verified).
        ok: whether the log (and the checkpoints given) verified.
        action: ``audit.verify`` or ``audit.checkpoint``.
        damage: the kind of damage found (``modified_entry``, ...), None if ok.
        checkpoints: how many signed checkpoints were checked (None: unknown).
        checkpoint: the newest signed checkpoint at that time (a file name) or None.
        checkpoint_at: when that checkpoint was signed.
        entries_since: entries appended after it, which it does not cover.
        seq: the sequence number of its entry (0: never verified).
    """

    at: dt.datetime | None
    ok: bool
    action: str = ""
    damage: str | None = None
    checkpoints: int | None = None
    checkpoint: str | None = None
    checkpoint_at: dt.datetime | None = None
    entries_since: int = 0
    seq: int = 0

    @property
    def state(self) -> str:
        """``verified``, ``damaged`` or ``never_verified``."""
        if self.at is None:
            return "never_verified"
        return "verified" if self.ok else "damaged"

    def sentence(self) -> str:
        """One line for a reader: what was verified when, against which checkpoint."""
        if self.at is None:
            return ("audit log NOT verified: no verification on record "
                    "(run vault audit verify or vault audit nightly)")
        when = _iso(self.at)
        if not self.ok:
            return (f"audit log DAMAGED: the verification of {when} found "
                    f"{self.damage or 'damage'}; do not rely on this report")
        against = (f"newest signed checkpoint {self.checkpoint} "
                   f"({_iso(self.checkpoint_at)})"
                   if self.checkpoint and self.checkpoint_at else "no signed checkpoint yet")
        since = (f"; {self.entries_since} entries appended since are not covered"
                 if self.entries_since else "")
        return f"audit log verified at {when}; {against}{since}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``verification`` in reports and ``vault audit status``)."""
        return {"state": self.state, "ok": self.ok,
                "verified_at": _iso(self.at) if self.at else None,
                "action": self.action or None, "damage": self.damage,
                "checkpoints_checked": self.checkpoints, "checkpoint": self.checkpoint,
                "checkpoint_signed_at": _iso(self.checkpoint_at) if self.checkpoint_at else None,
                "entries_since": self.entries_since, "statement": self.sentence()}


def _reason_count(reason: str) -> int | None:
    # "ok:checkpoints:3" (audit.verify)
    head, _sep, tail = reason.rpartition(":")
    return int(tail) if head == "ok:checkpoints" and tail.isdigit() else None


def last_verification(conn: Connection) -> Verification:
    """The newest verification the log records (see :class:`Verification`).

    Refused attempts (decision ``deny``) are not verifications and are skipped.
    """
    kinds = (_T.c.action.in_(VERIFY_ACTIONS), _T.c.decision != Decision.DENY.value)
    row = conn.execute(select(_T.c.seq, _T.c.ts, _T.c.action, _T.c.reason).where(*kinds)
                       .order_by(_T.c.seq.desc()).limit(1)).first()
    if row is None:
        return Verification(at=None, ok=False)
    signed = conn.execute(
        select(_T.c.ts, _T.c.reason).where(
            _T.c.action == "audit.checkpoint", _T.c.decision == Decision.ALLOW.value,
            _T.c.seq <= row.seq)
        .order_by(_T.c.seq.desc()).limit(1)).first()
    since = conn.execute(select(func.count()).select_from(_T)
                         .where(_T.c.seq > row.seq)).scalar_one()
    reason = str(row.reason or "")
    damage = reason.removeprefix("damage:") if reason.startswith("damage:") else None
    return Verification(
        at=_aware(row.ts), ok=damage is None, action=str(row.action), damage=damage,
        checkpoints=_reason_count(reason) if row.action == "audit.verify" else None,
        checkpoint=(str(signed.reason).removeprefix("checkpoint:")
                    if signed is not None and signed.reason else None),
        checkpoint_at=_aware(signed.ts) if signed is not None else None,
        entries_since=int(since), seq=int(row.seq))


def verification_status(engine: Engine) -> Verification:
    """:func:`last_verification` in its own read-only transaction."""
    with _snapshot(engine) as conn:
        return last_verification(conn)


# ------------------------------------------------------------------ outputs


def _window_text(rep: AuditReport) -> tuple[str, str]:
    start = _iso(rep.since) if rep.since else "(start of the log)"
    end = _iso(rep.until) if rep.until else "(end of the log)"
    return start, end


def _verification(rep: AuditReport) -> Verification:
    return rep.verification or Verification(at=None, ok=False)


def rich_table(rep: AuditReport) -> Table:
    """The report as a rich table for the terminal (values are not rich markup)."""
    start, end = _window_text(rep)
    caption = (f"{_verification(rep).sentence()}; {rep.total_entries} entries "
               f"({rep.total_allowed} allowed, {rep.total_denials} denied, "
               f"{rep.total_errors} errors) from {start} to {end}")
    if rep.filters:
        caption += "; " + ", ".join(f"{k}={v}" for k, v in rep.filters.items())
    if rep.truncated:
        caption += f"; only the first {rep.limit} rows shown"
    if rep.altered:
        caption += (f"; {len(rep.altered)} entries with altered columns left out (seq "
                    + ", ".join(str(r["seq"]) for r in rep.altered[:20])
                    + (", ..." if len(rep.altered) > 20 else "") + "): run vault audit verify")
    title = rep.title if _verification(rep).ok else f"{rep.title} (audit log NOT verified)"
    table = Table(title=title, caption=caption + "; times in UTC", caption_justify="left")
    numeric = {c for c in rep.columns if rep.rows and isinstance(rep.rows[0].get(c), int)}
    times = {c for c in rep.columns if c in _TIME_COLUMNS}
    for column in rep.columns:
        table.add_column(column, overflow="fold",
                         justify="right" if column in numeric else "left")
    for row in rep.rows:
        # Text objects, so that a value like "[red]" is shown, not interpreted.
        table.add_row(*[Text(_short_time(row.get(c, "")) if c in times else str(row.get(c, "")))
                        for c in rep.columns])
    return table


_TIME_COLUMNS = frozenset({"time", "first", "last", "start", "end"})


def _short_time(value: object) -> str:
    """``2026-11-02T09:00:00+00:00`` as ``2026-11-02 09:00:00`` (the caption says UTC)."""
    text = str(value)
    if len(text) == 25 and text.endswith("+00:00") and text[10] == "T":
        return f"{text[:10]} {text[11:19]}"
    return text


CSV_VERIFICATION_COLUMN = "log_verification"
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def to_csv(rep: AuditReport, out: IO[str]) -> None:
    """Write the rows of the report as CSV (a header row first) to ``out``.

    A text cell that a spreadsheet would run as a formula (starting with
    ``= + - @``) is prefixed with ``'``. The last column, ``log_verification``,
    states on every row whether the log verified (:meth:`Verification.sentence`);
    a report without rows has one row with only that column filled, so that
    no CSV of a damaged log looks normal.
    """
    status = _verification(rep).sentence()
    writer = csv.DictWriter(out, fieldnames=[*rep.columns, CSV_VERIFICATION_COLUMN],
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rep.rows or [{}]:
        writer.writerow({k: (f"'{v}" if isinstance(v, str) and v.startswith(_FORMULA) else v)
                         for k, v in row.items()} | {CSV_VERIFICATION_COLUMN: status})


def to_json(rep: AuditReport) -> str:
    """The whole report as JSON (``schema_version`` 1; see the module docstring)."""
    start = _iso(rep.since) if rep.since else None
    end = _iso(rep.until) if rep.until else None
    doc: dict[str, Any] = {
        "schema_version": JSON_SCHEMA_VERSION,
        "view": rep.view.value,
        "title": rep.title,
        "generated_at": _iso(rep.generated_at),
        "filters": rep.filters,
        "time_range": {"from": start, "to": end,
                       "first_entry": _iso(rep.first_entry) if rep.first_entry else None,
                       "last_entry": _iso(rep.last_entry) if rep.last_entry else None},
        "thresholds": asdict(rep.thresholds),
        "totals": rep.summary(),
        "verification": _verification(rep).as_dict(),
        "per_day": [d._asdict() for d in rep.per_day],
        "denials_by_actor": [{"tenant": a.tenant, "actor": a.actor, "denials": a.denials}
                             for a in rep.denials_by_actor],
        "denials_by_field": [{"field": f.name, "denials": f.denials}
                             for f in rep.denials_by_field],
        "columns": rep.columns,
        "rows": rep.rows,
    }
    if rep.altered:  # only when there are: a report of a sound log is as it always was
        doc["altered_entries"] = rep.altered
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _chart_per_day(per_day: Sequence[DayCount]) -> str:
    """Stacked bars per day: allowed (blue), denied (red), errors (grey)."""
    if not per_day:
        return '<p class="empty" id="chart-per-day-empty">No entries in this range.</p>'
    width, height, left, bottom, top = 760, 240, 48, 36, 16
    plot_w, plot_h = width - left - 12, height - top - bottom
    peak = max(d.allowed + d.denied + d.errors for d in per_day) or 1
    slot = plot_w / len(per_day)
    bar = min(48.0, max(1.0, slot * 0.8))
    parts = [f'<svg id="chart-per-day" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-labelledby="chart-per-day-title">'
             '<title id="chart-per-day-title">Accesses per day</title>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
             'class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>',
             f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>',
             f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>']
    for i, d in enumerate(per_day):
        x = left + i * slot + (slot - bar) / 2
        y = float(top + plot_h)
        for css, n in (("allowed", d.allowed), ("denied", d.denied), ("error", d.errors)):
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}"><title>{_e(d.day)}: {n} {css}</title></rect>')
    step = max(1, len(per_day) // 6)
    for i in range(0, len(per_day), step):
        x = left + i * slot + slot / 2
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                     f'{_e(per_day[i].day)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _chart_denials(rows: Sequence[ActorCount], *, show: int = 20) -> str:
    """Horizontal bars: denials per actor (the first ``show``)."""
    if not rows:
        return '<p class="empty" id="chart-denials-empty">No denials.</p>'
    shown = list(rows)[:show]
    width, line, label = 760, 24, 260
    peak = max(a.denials for a in shown) or 1
    height = line * len(shown) + 8
    parts = [f'<svg id="chart-denials" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-labelledby="chart-denials-title">'
             '<title id="chart-denials-title">Denials per actor</title>']
    for i, a in enumerate(shown):
        y = 4 + i * line
        w = (width - label - 70) * a.denials / peak
        who = a.actor if a.tenant in ("", "*") else f"{a.actor} ({a.tenant})"
        parts.append(f'<text x="{label - 8}" y="{y + 15}" text-anchor="end">{_e(who)}</text>'
                     f'<rect class="denied" x="{label}" y="{y}" width="{w:.1f}" '
                     f'height="{line - 8}"><title>{_e(who)}: {a.denials}</title></rect>'
                     f'<text x="{label + w + 6:.1f}" y="{y + 15}">{a.denials}</text>')
    parts.append("</svg>")
    if len(rows) > show:
        parts.append(f'<p class="meta">{len(rows) - show} more actors in the data.</p>')
    return "".join(parts)


_CSS = resources.files("vault.audit").joinpath("report.css").read_text(encoding="utf-8")


_NOWRAP = frozenset({"time", "first", "last", "start", "end", "tenant", "actor", "action",
                     "decision"})


def _table(table_id: str, columns: Sequence[str], rows: Iterable[Row], *,
           narrow: bool = False) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    kinds = {c: "nw" if c in _NOWRAP else "" for c in columns}
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{_e(v)}</td>' if isinstance(v := row.get(c, ""), int)
            else (f'<td class="{kinds[c]}">{_e(v)}</td>' if kinds[c] else f"<td>{_e(v)}</td>")
            for c in columns) + "</tr>"
        for row in rows)
    css = ' class="narrow"' if narrow else ""
    return (f'<div style="overflow-x:auto"><table id="{table_id}"{css}><thead><tr>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table></div>")


def to_html(rep: AuditReport) -> str:
    """The report as one self-contained HTML page (no scripts, no external assets).

    Every value is HTML-escaped. Key numbers carry stable ids: ``total-entries``,
    ``total-allowed``, ``total-denials``, ``total-errors``, ``row-count``,
    ``time-from``, ``time-to``, ``generated-at``; the charts are
    ``chart-per-day`` and ``chart-denials``; the rows are in ``table#rows``.
    """
    start, end = _window_text(rep)
    filters = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rep.filters.items())
    if not filters:
        filters = "<dt>filters</dt><dd>none (the whole log)</dd>"
    span = (f"{_iso(rep.first_entry)} to {_iso(rep.last_entry)}"
            if rep.first_entry and rep.last_entry else "no entries")
    thresholds = ""
    if rep.view is ReportView.UNUSUAL_PURPOSE:
        t = rep.thresholds
        base = (f"the {t.usual_baseline_days} days before the start of the range"
                if t.usual_baseline_days else "the time range of the report")
        thresholds = (f'<p class="meta" id="thresholds">Usual purposes: at least '
                      f"{_e(f'{100 * t.usual_share:g}')}% of an actor's allowed accesses over "
                      f"{_e(base)}; actors with fewer than {t.usual_min_accesses} such "
                      "accesses are not judged.</p>")
    elif rep.view is ReportView.BURSTS:
        t = rep.thresholds
        thresholds = (f'<p class="meta" id="thresholds">A burst: more than {t.burst_reads} '
                      f"records read by one actor within {t.burst_minutes} minutes.</p>")
    note = (f'<p class="meta" id="truncated">Only the first {rep.limit} rows are shown.</p>'
            if rep.truncated else "")
    altered = ""
    if rep.altered:
        altered = (f'<h2 id="altered-title">Entries with altered columns ({len(rep.altered)})'
                   '</h2><p class="meta">Their stored values are not of their column\'s type '
                   "or form, which only a change made outside Vault does: they are left out "
                   "of every figure above. Run <code>vault audit verify</code>.</p>"
                   + _table("altered", list(rep.altered[0]), rep.altered))
    by_field = _table("denials-by-field", ["field", "denials"],
                      ({"field": f.name, "denials": f.denials} for f in rep.denials_by_field),
                      narrow=True)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="vault audit report, schema {JSON_SCHEMA_VERSION}">
<title>Vault audit report: {_e(rep.title)}</title><style>{_CSS}</style></head>
<body>
<h1 id="report-title">{_e(rep.title)}</h1>
<p class="meta">View <code id="view-name">{_e(rep.view.value)}</code>, generated
<span id="generated-at">{_e(_iso(rep.generated_at))}</span>.
Time range <span id="time-from">{_e(start)}</span> to <span id="time-to">{_e(end)}</span>
(entries found: <span id="entry-span">{_e(span)}</span>).
Data subjects appear only as keyed pseudonyms; the log holds no personal data.</p>
<p id="verification" class="{_verification(rep).state}">{_e(_verification(rep).sentence())}.</p>
<h2>Filters</h2>
<dl id="filters">{filters}</dl>
<div class="figures">
<div class="figure">entries<b id="total-entries">{rep.total_entries}</b></div>
<div class="figure">allowed<b id="total-allowed">{rep.total_allowed}</b></div>
<div class="figure">denied<b id="total-denials">{rep.total_denials}</b></div>
<div class="figure">errors<b id="total-errors">{rep.total_errors}</b></div>
<div class="figure">rows in this view<b id="row-count">{len(rep.rows)}</b></div>
</div>
<h2>Accesses per day (UTC)</h2>
<p class="legend meta"><span style="background:#4a7fb5"></span>allowed
<span style="background:#c0392b"></span>denied<span style="background:#999"></span>error</p>
{_chart_per_day(rep.per_day)}
<h2>Denials per actor</h2>
{_chart_denials(rep.denials_by_actor)}
<h2>Denials per field</h2>
{by_field}
<h2>{_e(rep.title)}</h2>{thresholds}{note}
{_table("rows", rep.columns, rep.rows)}
{altered}
</body></html>
"""


def render(rep: AuditReport, fmt: str) -> str:
    """The report as ``csv``, ``json`` or ``html`` text.

    Raises:
        InvalidData: another format.
    """
    if fmt == "csv":
        buffer = io.StringIO()
        to_csv(rep, buffer)
        return buffer.getvalue()
    if fmt == "json":
        return to_json(rep)
    if fmt == "html":
        return to_html(rep)
    raise InvalidData("format must be csv, json or html", field="format")
