"""The DSAR report: on-time rate, median days to close, open and overdue by regime
and kind, a CCPA §7102-style metrics table, and the request log. Pure: built
from requests already read (their append-only history), no I/O.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from vault.dsar.clocks import ClockProfile, is_on_time
from vault.dsar.model import DSARRequest, RequestKind, RequestState

__all__ = ["DSARReport", "GroupFigures", "build_report"]

_CLOSING = ("completed", "partially_completed", "rejected")
_LOG_COLUMNS = ("request_id", "regime", "kind", "right", "channel", "state", "received_at",
                "acknowledge_by", "acknowledged_at", "due_on", "extended", "closed_at",
                "on_time", "reject_reason", "subject_matched")
# CCPA §7102(a)(1): requests to know, delete, correct, opt-out (and limit).
_CCPA_ROWS = (("know", (RequestKind.ACCESS, RequestKind.PORTABILITY)),
              ("delete", (RequestKind.ERASURE,)), ("correct", (RequestKind.RECTIFICATION,)),
              ("opt_out", (RequestKind.OPT_OUT_SALE_SHARING,)),
              ("limit", (RequestKind.LIMIT_SENSITIVE,)))


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """Figures of one (regime, kind)."""

    regime: str
    kind: str
    received: int
    open: int
    overdue: int
    closed: int
    on_time: int
    late: int
    rejected: int
    acknowledged_late: int
    median_days_to_close: float | None

    @property
    def on_time_rate(self) -> float | None:
        return None if not self.closed else round(self.on_time / self.closed, 4)


@dataclass(frozen=True, slots=True)
class DSARReport:
    """What :meth:`DSARService.report` returns: figures and the request log."""

    tenant: str
    generated_at: dt.datetime
    groups: tuple[GroupFigures, ...]
    log: tuple[dict[str, object], ...]
    ccpa_metrics: tuple[dict[str, object], ...]

    @property
    def on_time_rate(self) -> float | None:
        closed = sum(g.closed for g in self.groups)
        return None if not closed else round(sum(g.on_time for g in self.groups) / closed, 4)

    def to_json(self) -> str:
        return json.dumps({
            "tenant": self.tenant, "generated_at": self.generated_at.isoformat(),
            "on_time_rate": self.on_time_rate,
            "groups": [{**asdict(g), "on_time_rate": g.on_time_rate} for g in self.groups],
            "ccpa_metrics": list(self.ccpa_metrics), "log": list(self.log)},
            indent=2, sort_keys=True, default=str)

    def log_csv(self) -> str:
        """The request log as CSV (ids, codes and dates only)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(_LOG_COLUMNS))
        writer.writeheader()
        for row in self.log:
            writer.writerow(row)
        return buffer.getvalue()

    def to_csv(self) -> str:
        """The figures by regime and kind as CSV."""
        buffer = io.StringIO()
        names = [*GroupFigures.__dataclass_fields__, "on_time_rate"]
        writer = csv.DictWriter(buffer, fieldnames=names)
        writer.writeheader()
        for g in self.groups:
            writer.writerow({**asdict(g), "on_time_rate": g.on_time_rate})
        return buffer.getvalue()

    def to_html(self) -> str:
        """A self-contained HTML page of the figures and the CCPA metrics."""
        def table(rows: Sequence[dict[str, object]]) -> str:
            if not rows:
                return "<p>No requests.</p>"
            head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>"
                                            for v in r.values()) + "</tr>" for r in rows)
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        groups = [{**asdict(g), "on_time_rate": g.on_time_rate} for g in self.groups]
        return ("<!doctype html><html><head><meta charset='utf-8'><title>DSAR report</title>"
                "<style>table{border-collapse:collapse}td,th{border:1px solid #999;"
                "padding:2px 6px}</style></head><body>"
                f"<h1>Data-subject requests: {html.escape(self.tenant)}</h1>"
                f"<p>Generated {html.escape(self.generated_at.isoformat())}; on-time rate "
                f"{self.on_time_rate}</p><h2>By regime and kind</h2>{table(groups)}"
                f"<h2>CCPA §7102 metrics</h2>{table(list(self.ccpa_metrics))}</body></html>")


def _closed_at(request: DSARRequest) -> dt.datetime | None:
    for step in reversed(request.history):
        if step.event in _CLOSING:
            return step.at
    return None


def build_report(tenant: str, requests: Sequence[DSARRequest], now: dt.datetime,
                 clock_of: Callable[[str], ClockProfile]) -> DSARReport:
    """Figures of ``requests`` as of ``now``; ``clock_of(regime)`` gives each regime's
    clock profile (its zone decides what "on time" and "overdue" mean)."""
    buckets: dict[tuple[str, str], list[DSARRequest]] = {}
    log: list[dict[str, object]] = []
    for r in requests:
        buckets.setdefault((r.regime, r.kind.value), []).append(r)
        closed = _closed_at(r)
        cp = clock_of(r.regime)
        log.append({
            "request_id": r.id, "regime": r.regime, "kind": r.kind.value, "right": r.right,
            "channel": r.channel, "state": r.state.value,
            "received_at": r.received_at.isoformat(),
            "acknowledge_by": r.acknowledge_by.isoformat() if r.acknowledge_by else None,
            "acknowledged_at": r.acknowledged_at.isoformat() if r.acknowledged_at else None,
            "due_on": r.due_on.isoformat(), "extended": r.extended,
            "closed_at": closed.isoformat() if closed else None,
            "on_time": None if closed is None else is_on_time(cp, r.due_on, closed),
            "reject_reason": r.reject_reason, "subject_matched": r.subject_id is not None,
        })
    groups = []
    for (regime, kind), items in sorted(buckets.items()):
        cp = clock_of(regime)
        today = now.astimezone(cp.zone).date()
        on_time = late = closed_count = rejected = ack_late = 0
        days: list[float] = []
        for r in items:
            closed = _closed_at(r)
            if r.acknowledge_by is not None:
                acked = r.acknowledged_at
                if (acked is not None and acked.astimezone(cp.zone).date() > r.acknowledge_by) or (
                        acked is None and today > r.acknowledge_by):
                    ack_late += 1
            if closed is None:
                continue
            closed_count += 1
            rejected += r.state is RequestState.REJECTED
            if is_on_time(cp, r.due_on, closed):
                on_time += 1
            else:
                late += 1
            days.append((closed - r.received_at).total_seconds() / 86400)
        open_items = [r for r in items if r.is_open]
        groups.append(GroupFigures(
            regime=regime, kind=kind, received=len(items), open=len(open_items),
            overdue=sum(r.overdue_on(today) for r in open_items), closed=closed_count,
            on_time=on_time, late=late, rejected=rejected, acknowledged_late=ack_late,
            median_days_to_close=round(statistics.median(days), 2) if days else None))
    metrics = []
    ccpa = [r for r in requests if r.regime == "ccpa"]
    for label, kinds in _CCPA_ROWS:
        items = [r for r in ccpa if r.kind in kinds]
        days = [(c - r.received_at).total_seconds() / 86400
                for r in items if (c := _closed_at(r)) is not None]
        metrics.append({
            "request": label, "received": len(items),
            "complied_in_whole_or_part": sum(r.state in (
                RequestState.COMPLETED, RequestState.PARTIALLY_COMPLETED) for r in items),
            "denied": sum(r.state is RequestState.REJECTED for r in items),
            "median_days_to_respond": round(statistics.median(days), 2) if days else None})
    return DSARReport(tenant=tenant, generated_at=now, groups=tuple(groups), log=tuple(log),
                      ccpa_metrics=tuple(metrics))
