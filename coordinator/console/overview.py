"""What the overview shows, read by index: the ledger head, numbers issued today, this month
and per hour over the last 7 days (time ranges turned into position ranges), stores and
open warnings."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
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
    return [(this_hour - timedelta(hours=CHART_HOURS - 1 - i)).astimezone(now.tzinfo)
            for i in range(CHART_HOURS)]


def drift(reported: dict[str, Any] | None) -> list[str]:
    """The WHMCS settings a store reported that make WHMCS number documents itself."""
    return [name for name in NUMBERING_SETTINGS
            if str((reported or {}).get(name, "")).strip().lower() in SEQUENTIAL_ON]


async def read(conn: asyncpg.Connection, timezone: str) -> Overview:
    now = datetime.now(ZoneInfo(timezone))
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    hours = chart_hours(now)
    ends = [*hours, hours[-1] + timedelta(hours=1)]
    # Clocks of several replicas may disagree a little: keep the bounds ascending.
    positions = await queries.positions_at(conn, [month, today, *ends])
    month_at, today_at = accumulate(positions[:2], max)
    hour_positions = list(accumulate(positions[2:], max))
    head = await queries.ledger_head(conn)
    end = head["position"] + 1
    per_hour = [0] * CHART_HOURS
    for row in await queries.issued_counts(conn, hour_positions):
        per_hour[row["interval"]] += row["issued"]
    issued: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"today": 0, "month": 0})
    for row in await queries.issued_counts(conn, [month_at, today_at, end]):
        counts = issued[(row["series"], row["store"] or "?")]
        counts["month"] += row["issued"]
        if row["interval"] == 1:
            counts["today"] += row["issued"]
    return Overview(
        head=head,
        issued=[{"series": s, "store": st, **v} for (s, st), v in sorted(issued.items())],
        chart=hourly_chart(hours, per_hour),
        stores=[{**s, "drift": drift(s["reported_settings"])} for s in await queries.peers(conn)],
        warnings=await queries.recent_warnings(conn, "open", None, None, OPEN_WARNINGS_SHOWN),
    )
