"""Audit reports for compliance officers: filters, ready-made views, and outputs.

The views answer the questions an auditor asks:

``entries``
    every entry matching the filters;
``subject_access``
    who accessed one data subject's data, when, for what purpose and with
    what outcome: the recipients of GDPR Art. 15(1)(c) (needs ``subject``);
``denials``
    refused attempts, counted by actor and by field;
``unusual_purpose``
    accesses for a purpose that makes up less than ``usual_share`` of an
    actor's allowed accesses in the window (actors with at least
    ``usual_min_accesses``);
``bursts``
    more than ``burst_reads`` reads by one actor within ``burst_minutes``;
``privileged``
    role, policy, key, configuration and audit-administration actions.

Outputs: a rich table, CSV, JSON (``schema_version`` 1) and a self-contained
HTML page (inline CSS and SVG charts, no scripts, no external assets). The
log holds no personal data (subjects are keyed pseudonyms), and a subject
given as a filter is shown only as its pseudonym.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import html
import io
import json
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, cast

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from rich.table import Table
from sqlalchemy import ColumnElement, Engine, and_, func, or_, select
from sqlalchemy import Table as SATable

from vault.errors import InvalidData
from vault.store.models import AuditEntryRow
from vault.types import check_identifier

__all__ = [
    "AuditReport",
    "ReportFilters",
    "ReportThresholds",
    "ReportView",
    "report",
    "rich_table",
    "to_csv",
    "to_html",
    "to_json",
]

_T = cast(SATable, AuditEntryRow.__table__)
DATA_ACTIONS = ("read", "search", "write", "update", "delete")
READ_ACTIONS = ("read", "search")
PRIVILEGED_PREFIXES = ("roles.", "policy.", "keys.", "vault.", "config.", "audit.checkpoint")
ROW_LIMIT = 10_000


class ReportView(enum.StrEnum):
    ENTRIES = "entries"
    SUBJECT_ACCESS = "subject_access"
    DENIALS = "denials"
    UNUSUAL_PURPOSE = "unusual_purpose"
    BURSTS = "bursts"
    PRIVILEGED = "privileged"


class ReportFilters(BaseModel):
    """Which entries a report covers. Times are inclusive and must be aware."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    tenant: str | None = None
    actor: str | None = None
    subject: str | None = None  # a subject id; turned into its pseudonym, never shown
    action: str | None = None
    decision: str | None = None
    purpose: str | None = None
    collection: str | None = None

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must include a time zone (e.g. 2026-11-01T00:00:00Z)")
        return None if value is None else value.astimezone(dt.UTC)

    @field_validator("tenant", "actor", "subject", "purpose", "collection")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None:
            check_identifier(value, "filter")
        return value

    @field_validator("action")
    @classmethod
    def _action(cls, value: str | None) -> str | None:
        if value is not None and not value.replace(".", "").replace("_", "").isalnum():
            raise ValueError("is not an action name")
        return value

    @field_validator("decision")
    @classmethod
    def _decision(cls, value: str | None) -> str | None:
        if value is not None and value not in ("allow", "deny", "error"):
            raise ValueError("must be allow, deny or error")
        return value

    @model_validator(mode="after")
    def _window(self) -> ReportFilters:
        if self.since and self.until and self.since > self.until:
            raise ValueError("--from must not be after --to")
        if self.subject is not None and self.tenant is None:
            raise ValueError("a subject filter needs the tenant of the subject")
        return self

    @classmethod
    def parse(cls, **values: Any) -> ReportFilters:
        """Build filters, turning validation failures into one InvalidData."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            if where:
                raise InvalidData(f"report filter {where}: {message}", field=where) from None
            raise InvalidData(f"report filters: {message}") from None


@dataclass(frozen=True, slots=True)
class ReportThresholds:
    """Thresholds of the ``unusual_purpose`` and ``bursts`` views."""

    usual_share: float = 0.05
    usual_min_accesses: int = 20
    burst_reads: int = 100
    burst_minutes: int = 5


@dataclass
class AuditReport:
    """A finished report: rows of its view plus the figures every output shows."""

    view: ReportView
    filters: dict[str, str]
    generated_at: dt.datetime
    columns: list[str]
    rows: list[dict[str, Any]]
    total_entries: int
    total_denials: int
    per_day: list[tuple[str, int, int]] = field(default_factory=list)  # day, allowed, denied
    denials_by_actor: list[tuple[str, int]] = field(default_factory=list)
    denials_by_field: list[tuple[str, int]] = field(default_factory=list)
    truncated: bool = False


# ------------------------------------------------------------------ building


def _where(filters: ReportFilters, pseudonym: str | None) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if filters.since is not None:
        clauses.append(_T.c.ts >= filters.since)
    if filters.until is not None:
        clauses.append(_T.c.ts <= filters.until)
    for name in ("tenant", "actor", "action", "decision", "purpose", "collection"):
        value = getattr(filters, name)
        if value is not None:
            clauses.append(_T.c[name] == value)
    if pseudonym is not None:
        clauses.append(_T.c.subjects.contains(f'"{pseudonym}"'))
    return clauses


def _day(engine: Engine) -> ColumnElement[str]:
    if engine.dialect.name == "sqlite":
        return cast(ColumnElement[str], func.substr(_T.c.ts, 1, 10))
    return cast(ColumnElement[str], func.to_char(func.timezone("UTC", _T.c.ts), "YYYY-MM-DD"))


def _entry_row(row: Any) -> dict[str, Any]:
    ts = row.ts if isinstance(row.ts, dt.datetime) else dt.datetime.fromisoformat(row.ts)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return {
        "seq": row.seq, "time": ts.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "tenant": row.tenant, "actor": row.actor, "action": row.action,
        "collection": row.collection or "", "fields": ", ".join(json.loads(row.fields)),
        "subjects": len(json.loads(row.subjects)), "purpose": row.purpose or "",
        "decision": row.decision, "reason": row.reason or "", "request_id": row.request_id,
    }


_ENTRY_COLUMNS = ["seq", "time", "tenant", "actor", "action", "collection", "fields",
                  "subjects", "purpose", "decision", "reason", "request_id"]


def report(
    engine: Engine,
    filters: ReportFilters,
    *,
    view: ReportView | str = ReportView.ENTRIES,
    pseudonym: Callable[[str, str], str] | None = None,
    thresholds: ReportThresholds | None = None,
    now: dt.datetime | None = None,
) -> AuditReport:
    """Run one report view over the audit log of ``engine``.

    Raises:
        InvalidData: an unknown view, or ``subject_access`` without a subject.
    """
    try:
        view = ReportView(view)
    except ValueError:
        raise InvalidData(f"unknown report view; use one of "
                          f"{', '.join(v.value for v in ReportView)}", field="view") from None
    if view is ReportView.SUBJECT_ACCESS and filters.subject is None:
        raise InvalidData("the subject_access view needs --subject and --tenant",
                          field="subject")
    limits = thresholds or ReportThresholds()
    pseudo = None
    if filters.subject is not None:
        if pseudonym is None:
            raise InvalidData("a subject filter needs the vault's pseudonym key", field="subject")
        pseudo = pseudonym(cast(str, filters.tenant), filters.subject)
    where = _where(filters, pseudo)
    shown = {k: str(v) for k, v in filters.model_dump(exclude_none=True).items()
             if k != "subject"}
    if pseudo is not None:
        shown["subject (pseudonym)"] = pseudo
    day = _day(engine)
    with engine.connect().execution_options(sqlite_begin="deferred") as conn:
        per_day_rows = conn.execute(
            select(day.label("day"), _T.c.decision, func.count()).where(*where)
            .group_by(day, _T.c.decision).order_by(day)).all()
        by_day: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for d, decision, n in per_day_rows:
            by_day[str(d)][0 if decision == "allow" else 1] += int(n)
        total = sum(a + b for a, b in by_day.values())
        denials = sum(b for _a, b in by_day.values())
        denial_actors = [(str(a), int(n)) for a, n in conn.execute(
            select(_T.c.actor, func.count()).where(*where, _T.c.decision != "allow")
            .group_by(_T.c.actor).order_by(func.count().desc(), _T.c.actor))]
        field_counts: Counter[str] = Counter()
        for (fields,) in conn.execute(
                select(_T.c.fields).where(*where, _T.c.decision != "allow")
                .execution_options(yield_per=5000)):
            field_counts.update(json.loads(fields))
        columns, rows, truncated = _VIEWS[view](conn, where, limits)
        conn.rollback()
    return AuditReport(
        view=view, filters=shown, generated_at=(now or dt.datetime.now(dt.UTC)),
        columns=columns, rows=rows, total_entries=total, total_denials=denials,
        per_day=[(d, v[0], v[1]) for d, v in sorted(by_day.items())],
        denials_by_actor=denial_actors,
        denials_by_field=sorted(field_counts.items(), key=lambda kv: (-kv[1], kv[0])),
        truncated=truncated,
    )


_Result = tuple[list[str], list[dict[str, Any]], bool]


def _entries(conn: Any, where: list[ColumnElement[bool]], extra: Iterable[Any] = ()) -> _Result:
    result = conn.execute(select(_T).where(*where, *extra).order_by(_T.c.ts, _T.c.seq)
                          .limit(ROW_LIMIT + 1))
    rows = [_entry_row(r) for r in result]
    return _ENTRY_COLUMNS, rows[:ROW_LIMIT], len(rows) > ROW_LIMIT


def _view_entries(conn: Any, where: list[ColumnElement[bool]], _t: ReportThresholds) -> _Result:
    return _entries(conn, where)


def _view_subject(conn: Any, where: list[ColumnElement[bool]], _t: ReportThresholds) -> _Result:
    _columns, rows, truncated = _entries(conn, where, [_T.c.action.in_(DATA_ACTIONS)])
    keep = ["time", "actor", "tenant", "action", "collection", "fields", "purpose", "decision",
            "reason", "request_id"]
    return keep, [{k: r[k] for k in keep} for r in rows], truncated


def _view_denials(conn: Any, where: list[ColumnElement[bool]], _t: ReportThresholds) -> _Result:
    counts: dict[tuple[str, str], list[Any]] = {}
    for row in conn.execute(select(_T.c.actor, _T.c.fields, _T.c.ts, _T.c.action, _T.c.reason)
                            .where(*where, _T.c.decision != "allow").order_by(_T.c.ts)
                            .execution_options(yield_per=5000)):
        for name in json.loads(row.fields) or ["(none)"]:
            entry = counts.setdefault((row.actor, name), [0, row.ts, row.ts, set()])
            entry[0] += 1
            entry[2] = row.ts
            entry[3].add(row.action)
    rows = [{"actor": actor, "field": name, "denials": n, "actions": ", ".join(sorted(actions)),
             "first": _iso(first), "last": _iso(last)}
            for (actor, name), (n, first, last, actions) in
            sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))]
    return ["actor", "field", "denials", "actions", "first", "last"], rows, False


def _view_unusual(conn: Any, where: list[ColumnElement[bool]], t: ReportThresholds) -> _Result:
    usage: dict[str, Counter[str]] = defaultdict(Counter)
    for actor, purpose, n in conn.execute(
            select(_T.c.actor, _T.c.purpose, func.count())
            .where(*where, _T.c.decision == "allow", _T.c.action.in_(DATA_ACTIONS))
            .group_by(_T.c.actor, _T.c.purpose)):
        usage[str(actor)][str(purpose)] += int(n)
    rows = []
    for actor, purposes in sorted(usage.items()):
        total = sum(purposes.values())
        if total < t.usual_min_accesses:
            continue
        usual = sorted(p for p, n in purposes.items() if n / total >= t.usual_share)
        for purpose, n in sorted(purposes.items()):
            if n / total < t.usual_share:
                rows.append({"actor": actor, "purpose": purpose, "accesses": n,
                             "share": f"{100 * n / total:.1f}%",
                             "usual_purposes": ", ".join(usual)})
    return ["actor", "purpose", "accesses", "share", "usual_purposes"], rows, False


def _view_bursts(conn: Any, where: list[ColumnElement[bool]], t: ReportThresholds) -> _Result:
    window = dt.timedelta(minutes=t.burst_minutes)
    rows: list[dict[str, Any]] = []
    current: str | None = None
    recent: deque[dt.datetime] = deque()
    burst: dict[str, Any] | None = None
    for actor, ts in conn.execute(
            select(_T.c.actor, _T.c.ts)
            .where(*where, _T.c.decision == "allow", _T.c.action.in_(READ_ACTIONS))
            .order_by(_T.c.actor, _T.c.ts).execution_options(yield_per=10_000)):
        stamp = ts if isinstance(ts, dt.datetime) else dt.datetime.fromisoformat(ts)
        if actor != current:
            current, burst = actor, None
            recent.clear()
        recent.append(stamp)
        while stamp - recent[0] > window:
            recent.popleft()
        if len(recent) > t.burst_reads:
            if burst is None:
                burst = {"actor": actor, "start": recent[0], "end": stamp, "reads": len(recent)}
                rows.append(burst)
            else:
                burst["end"] = stamp
                burst["reads"] += 1
        elif burst is not None and stamp - burst["end"] > window:
            burst = None
    for row in rows:
        row["start"], row["end"] = _iso(row["start"]), _iso(row["end"])
        row["threshold"] = f">{t.burst_reads} reads / {t.burst_minutes} min"
    return ["actor", "start", "end", "reads", "threshold"], rows, False


def _view_privileged(conn: Any, where: list[ColumnElement[bool]], _t: ReportThresholds
                     ) -> _Result:
    privileged = or_(*[_T.c.action.startswith(p) for p in PRIVILEGED_PREFIXES])
    return _entries(conn, where, [and_(privileged)])


_VIEWS: dict[ReportView, Callable[[Any, list[ColumnElement[bool]], ReportThresholds], _Result]]
_VIEWS = {
    ReportView.ENTRIES: _view_entries,
    ReportView.SUBJECT_ACCESS: _view_subject,
    ReportView.DENIALS: _view_denials,
    ReportView.UNUSUAL_PURPOSE: _view_unusual,
    ReportView.BURSTS: _view_bursts,
    ReportView.PRIVILEGED: _view_privileged,
}


def _iso(value: Any) -> str:
    stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------ outputs

_TITLES = {
    ReportView.ENTRIES: "Audit entries",
    ReportView.SUBJECT_ACCESS: "Who accessed this data subject's data (GDPR Art. 15(1)(c))",
    ReportView.DENIALS: "Denied attempts by actor and field",
    ReportView.UNUSUAL_PURPOSE: "Access for purposes outside an actor's usual ones",
    ReportView.BURSTS: "Bursts of reads by one actor",
    ReportView.PRIVILEGED: "Privileged actions (roles, policy, keys)",
}


def rich_table(rep: AuditReport) -> Table:
    """The report as a rich table for the terminal."""
    caption = (f"{rep.total_entries} entries, {rep.total_denials} denied"
               + (f"; first {ROW_LIMIT} rows shown" if rep.truncated else ""))
    table = Table(title=_TITLES[rep.view], caption=caption)
    for column in rep.columns:
        table.add_column(column, overflow="fold")
    for row in rep.rows:
        table.add_row(*[str(row.get(c, "")) for c in rep.columns])
    return table


def to_csv(rep: AuditReport, out: IO[str]) -> None:
    """The rows of the report as CSV (header row first)."""
    writer = csv.DictWriter(out, fieldnames=rep.columns, extrasaction="ignore")
    writer.writeheader()
    for row in rep.rows:
        # Neutralise spreadsheet formulas: a cell must never start with = + - @.
        writer.writerow({k: (f"'{v}" if isinstance(v, str) and v and v[0] in "=+-@" else v)
                         for k, v in row.items()})


def to_json(rep: AuditReport) -> str:
    """The whole report as JSON (``schema_version`` 1)."""
    return json.dumps({
        "schema_version": 1,
        "view": rep.view.value,
        "title": _TITLES[rep.view],
        "generated_at": rep.generated_at.isoformat(),
        "filters": rep.filters,
        "totals": {"entries": rep.total_entries, "denials": rep.total_denials,
                   "rows": len(rep.rows), "truncated": rep.truncated},
        "per_day": [{"day": d, "allowed": a, "denied": n} for d, a, n in rep.per_day],
        "denials_by_actor": [{"actor": a, "denials": n} for a, n in rep.denials_by_actor],
        "denials_by_field": [{"field": f, "denials": n} for f, n in rep.denials_by_field],
        "columns": rep.columns,
        "rows": rep.rows,
    }, indent=2, default=str)


def _bar_chart_days(per_day: Sequence[tuple[str, int, int]]) -> str:
    if not per_day:
        return '<p class="empty">No entries in this range.</p>'
    width, height, pad = 720, 220, 40
    peak = max(a + d for _day, a, d in per_day) or 1
    bar = min(40.0, max(2.0, (width - 2 * pad) / len(per_day) - 2))
    parts = [f'<svg id="chart-per-day" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-label="accesses per day">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
             'stroke="#888"/>',
             f'<text x="{pad - 6}" y="{pad}" text-anchor="end" font-size="11">{peak}</text>']
    for i, (day, allowed, denied) in enumerate(per_day):
        x = pad + i * (bar + 2)
        h_allowed = (height - 2 * pad) * allowed / peak
        h_denied = (height - 2 * pad) * denied / peak
        y = height - pad - h_allowed
        parts.append(f'<rect class="allowed" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                     f'height="{h_allowed:.1f}"><title>{html.escape(day)}: {allowed} allowed'
                     '</title></rect>')
        parts.append(f'<rect class="denied" x="{x:.1f}" y="{y - h_denied:.1f}" '
                     f'width="{bar:.1f}" height="{h_denied:.1f}"><title>{html.escape(day)}: '
                     f'{denied} denied</title></rect>')
    first, last = per_day[0][0], per_day[-1][0]
    parts.append(f'<text x="{pad}" y="{height - pad + 16}" font-size="11">'
                 f'{html.escape(first)}</text>')
    parts.append(f'<text x="{width - pad}" y="{height - pad + 16}" font-size="11" '
                 f'text-anchor="end">{html.escape(last)}</text></svg>')
    return "".join(parts)


def _bar_chart_actors(rows: Sequence[tuple[str, int]]) -> str:
    if not rows:
        return '<p class="empty">No denials.</p>'
    rows = list(rows)[:20]
    width, line, label = 720, 22, 180
    peak = max(n for _a, n in rows) or 1
    height = line * len(rows) + 10
    parts = [f'<svg id="chart-denials" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-label="denials per actor">']
    for i, (actor, n) in enumerate(rows):
        y = 5 + i * line
        w = (width - label - 60) * n / peak
        parts.append(f'<text x="{label - 8}" y="{y + 14}" text-anchor="end" font-size="12">'
                     f'{html.escape(actor)}</text>')
        parts.append(f'<rect class="denied" x="{label}" y="{y}" width="{w:.1f}" '
                     f'height="{line - 6}"/>')
        parts.append(f'<text x="{label + w + 6:.1f}" y="{y + 14}" font-size="12">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#222}
h1{font-size:1.4rem;margin-bottom:.2rem}h2{font-size:1.1rem;margin-top:2rem}
.meta{color:#555}.figures{display:flex;gap:2rem;margin:1rem 0}
.figure{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem}
.figure b{display:block;font-size:1.6rem}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{border-bottom:1px solid #e4e4e4;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}rect.allowed{fill:#4a7fb5}rect.denied{fill:#c0392b}
.empty{color:#777;font-style:italic}dl{display:grid;grid-template-columns:max-content auto;
gap:.2rem 1rem}dt{font-weight:600}
"""


def to_html(rep: AuditReport) -> str:
    """One self-contained HTML page: no scripts, no external assets."""
    esc = html.escape
    filters = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rep.filters.items())
    if not filters:
        filters = "<dt>filters</dt><dd>none (the whole log)</dd>"
    since = rep.filters.get("since", rep.per_day[0][0] if rep.per_day else "-")
    until = rep.filters.get("until", rep.per_day[-1][0] if rep.per_day else "-")
    head = "".join(f"<th>{esc(c)}</th>" for c in rep.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(row.get(c, '')))}</td>" for c in rep.columns) + "</tr>"
        for row in rep.rows)
    note = (f'<p class="meta">Showing the first {ROW_LIMIT} rows.</p>' if rep.truncated
            else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Vault audit report: {esc(_TITLES[rep.view])}</title><style>{_CSS}</style></head>
<body>
<h1 id="report-title">{esc(_TITLES[rep.view])}</h1>
<p class="meta">View <code id="view-name">{esc(rep.view.value)}</code>, generated
<span id="generated-at">{esc(rep.generated_at.isoformat(timespec="seconds"))}</span>;
time range <span id="time-range">{esc(since)} to {esc(until)}</span>.
Subjects appear only as keyed pseudonyms; the log holds no personal data.</p>
<dl id="filters">{filters}</dl>
<div class="figures">
<div class="figure">entries<b id="total-entries">{rep.total_entries}</b></div>
<div class="figure">denied<b id="total-denials">{rep.total_denials}</b></div>
<div class="figure">rows in this view<b id="row-count">{len(rep.rows)}</b></div>
</div>
<h2>Accesses per day (blue allowed, red denied)</h2>
{_bar_chart_days(rep.per_day)}
<h2>Denials per actor</h2>
{_bar_chart_actors(rep.denials_by_actor)}
<h2>{esc(_TITLES[rep.view])}</h2>{note}
<div style="overflow-x:auto">
<table id="rows"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>
</body></html>
"""


def render(rep: AuditReport, fmt: str) -> str:
    """The report as ``csv``, ``json`` or ``html`` text."""
    if fmt == "csv":
        buffer = io.StringIO()
        to_csv(rep, buffer)
        return buffer.getvalue()
    if fmt == "json":
        return to_json(rep)
    if fmt == "html":
        return to_html(rep)
    raise InvalidData("format must be table, csv, json or html", field="format")
