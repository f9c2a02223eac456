"""Times given on the command line (``--from``/``--since``, ``--to``/``--until``,
``--at``, ``--expires``): one grammar for every command.

A time is one of:

* a date, ``2026-11-26`` (UTC midnight; with ``end_of_day`` its last microsecond);
* an ISO 8601 time with a zone, ``2026-11-26T09:00:00Z``, ``2026-11-26 09:00+01:00``;
* a span relative to now, ``30m``, ``12h``, ``7d``, ``2w`` (minutes, hours, days,
  weeks): in the past for a start or end of a window (``--since 7d``: the last
  seven days), in the future for a horizon or an expiry (``--until 30d``);
  a sign (``-7d``, ``+30d``) says the direction itself;
* ``now``, or ``today`` (UTC midnight; with ``end_of_day`` its end).

A bad value is a usage error (exit code 2) that names the option the user
typed, never an internal parameter.
"""

from __future__ import annotations

import datetime as dt
import re

import typer

__all__ = ["parse_when", "parse_window"]

_SPAN = re.compile(r"([+-]?)(\d{1,6})\s*([mhdw])")
_UNITS = {"m": dt.timedelta(minutes=1), "h": dt.timedelta(hours=1), "d": dt.timedelta(days=1),
          "w": dt.timedelta(weeks=1)}
_EXAMPLES = "e.g. 2026-11-26, 2026-11-26T09:00:00Z, 7d, 12h or 30m"


def _bad(option: str, message: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=f"'{option}'")


def parse_when(value: str | None, option: str, *, end_of_day: bool = False,
               future: bool = False, now: dt.datetime | None = None) -> dt.datetime | None:
    """The aware UTC-comparable time ``value`` stands for (None stays None).

    Args:
        value: the text given (see the module docstring).
        option: the option as the user typed it (``--from``), for messages.
        end_of_day: a bare date (or ``today``) means its last microsecond.
        future: an unsigned span counts forward from now (horizons, expiries).
        now: the current time (default: the system clock, UTC).

    Raises:
        typer.BadParameter: not a time, or a time of day without a zone (exit 2).
    """
    if value is None:
        return None
    text = value.strip().lower()
    current = now or dt.datetime.now(dt.UTC)
    if text == "now":
        return current
    if text == "today":
        text = current.astimezone(dt.UTC).date().isoformat()
    span = _SPAN.fullmatch(text)
    if span is not None:
        sign, amount, unit = span.groups()
        forward = sign == "+" or (not sign and future)
        delta = int(amount) * _UNITS[unit]
        return current + delta if forward else current - delta
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            return start + dt.timedelta(days=1, microseconds=-1) if end_of_day else start
        stamp = dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise _bad(option, f"is not a date, time or span ({_EXAMPLES})") from None
    if stamp.tzinfo is None:
        raise _bad(option, "needs a time zone (e.g. 2026-11-26T09:00:00Z or +01:00)")
    return stamp


def parse_window(since: str | None, until: str | None, *, since_option: str = "--from",
                 until_option: str = "--to", now: dt.datetime | None = None
                 ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """A start and an end (a bare end date covers its whole day), in order.

    Raises:
        typer.BadParameter: either is not a time, or the start is after the end.
    """
    current = now or dt.datetime.now(dt.UTC)
    start = parse_when(since, since_option, now=current)
    end = parse_when(until, until_option, end_of_day=True, now=current)
    if start is not None and end is not None and start > end:
        raise _bad(since_option, f"is after {until_option}")
    return start, end
