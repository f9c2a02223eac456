"""Times given on the command line (``--from``, ``--to``, ``--until``, ``--at``, ``--expires``)."""

from __future__ import annotations

import datetime as dt

from vault.errors import InvalidData

__all__ = ["parse_when"]


def parse_when(value: str | None, option: str, *, end_of_day: bool = False
               ) -> dt.datetime | None:
    """ISO 8601 with a zone, or a bare date (UTC; its last microsecond with ``end_of_day``).

    Raises:
        InvalidData: not a date or time, or a time without a zone (names ``option``).
    """
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            return start + dt.timedelta(days=1, microseconds=-1) if end_of_day else start
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidData(f"{option} is not an ISO 8601 date or time "
                          "(e.g. 2026-11-01 or 2026-11-01T09:00:00Z)", field=option) from None
    if stamp.tzinfo is None:
        raise InvalidData(f"{option} needs a time zone (e.g. 2026-11-01T09:00:00Z)",
                          field=option)
    return stamp
