"""What the overview shows, read by index: the ledger head, numbers issued today, this month
and per hour over the last 7 days (time ranges turned into position ranges), stores and
open warnings."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate, pairwise
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from coordinator.console.chart import Chart, hourly_chart
from coordinator.ledger import queries
from coordinator.ledger.decide import SEQUENTIAL_ON

CHART_HOURS = 7 * 24
OPEN_WARNINGS_SHOWN = 20
NUMBERING_SETTINGS = ("SequentialInvoiceNumbering", "TaxCustomInvoiceNumbering")


@dataclass(frozen=True)
class Overview:
    head: dict[str, Any]
    issued: list[dict[str, Any]]  # series, store, today, month
    chart: Chart
    stores: list[dict[str, Any]]
    warnings: list[dict[str, Any]]


def chart_hours(now: datetime) -> list[datetime]:
    """The starts of the last CHART_HOURS hours, the current one last, in ``now``'s zone."""
    this_hour = now.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    # Step in UTC, label in local time: a DST change neither repeats nor skips an hour.
    return [
        (this_hour - timedelta(hours=CHART_HOURS - 1 - i)).astimezone(now.tzinfo) for i in range(CHART_HOURS)
    ]


def drift(reported: dict[str, Any] | None) -> list[str]:
    """The WHMCS settings a store reported that make WHMCS number documents itself."""
    return [
        name
        for name in NUMBERING_SETTINGS
        if str((reported or {}).get(name, "")).strip().lower() in SEQUENTIAL_ON
    ]


Counts = list[dict[str, Any]]  # rows of queries.issued_counts for one interval


@dataclass
class IssuedCounts:
    """Numbers issued between positions, remembered for the intervals that can no longer
    change: those that end before the head (later numbers get later positions), as long as
    no number was voided since (a void is the only way an issued number stops counting).
    So an overview counts only the current hour and today; the first one after a start
    counts the 7 days and the month once."""

    voided: int | None = None
    known: dict[tuple[int, int], Counts] = field(default_factory=dict)

    async def between(self, conn: asyncpg.Connection, bounds: list[int], head: int) -> list[Counts]:
        voided = await queries.voided_count(conn)
        if voided != self.voided:
            self.known.clear()
            self.voided = voided
        intervals = list(pairwise(bounds))
        missing = [i for i, key in enumerate(intervals) if key not in self.known]
        found = {key: self.known[key] for key in intervals if key in self.known}
        if missing:
            first = missing[0]  # usually only the last ones: count from the first missing on
            counted: list[Counts] = [[] for _ in intervals[first:]]
            for row in await queries.issued_counts(conn, bounds[first:]):
                counted[row["interval"]].append(row)
            for key, rows in zip(intervals[first:], counted, strict=True):
                found[key] = rows
                if key[1] <= head:  # ends inside the ledger: final
                    self.known[key] = rows
        # Forget what this overview no longer shows (the hour that left the chart).
        self.known = {key: rows for key, rows in self.known.items() if key in found}
        return [found[key] for key in intervals]


@dataclass
class Remembered:
    """What one coordinator process remembers between overviews: the chart's hours, and the
    month before today (each forgets the intervals it no longer shows)."""

    hours: IssuedCounts = field(default_factory=IssuedCounts)
    month: IssuedCounts = field(default_factory=IssuedCounts)


async def read(conn: asyncpg.Connection, timezone: str, remembered: Remembered) -> Overview:
    now = datetime.now(ZoneInfo(timezone))
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    hours = chart_hours(now)
    ends = [*hours, hours[-1] + timedelta(hours=1)]
    head = await queries.ledger_head(conn)
    end = head["position"] + 1
    # Clocks of several replicas may disagree a little: keep the bounds ascending.
    positions = await queries.positions_at(conn, [month, today, *ends])
    month_at, today_at = accumulate(positions[:2], max)
    hour_positions = [min(p, end) for p in accumulate(positions[2:], max)]
    per_hour = [
        sum(row["issued"] for row in rows)
        for rows in await remembered.hours.between(conn, hour_positions, head["position"])
    ]
    issued: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"today": 0, "month": 0})
    before_today, since_today = await remembered.month.between(
        conn, [month_at, today_at, end], head["position"]
    )
    for rows, today_too in ((before_today, False), (since_today, True)):
        for row in rows:
            counts = issued[(row["series"], row["store"] or "?")]
            counts["month"] += row["issued"]
            if today_too:
                counts["today"] += row["issued"]
    return Overview(
        head=head,
        issued=[{"series": s, "store": st, **v} for (s, st), v in sorted(issued.items())],
        chart=hourly_chart(hours, per_hour),
        stores=[{**s, "drift": drift(s["reported_settings"])} for s in await queries.peers(conn)],
        warnings=await queries.recent_warnings(conn, "open", None, None, OPEN_WARNINGS_SHOWN),
    )
