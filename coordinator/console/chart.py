"""The overview's chart of numbers issued per hour, as bar geometry for an inline SVG. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

WIDTH = 672  # 4 px per hour over 7 days
HEIGHT = 120


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    height: float
    count: int
    hour: datetime


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    days: list[tuple[int, str]]  # x of each local midnight, its label
    peak: int
    total: int


def hourly_chart(hours: list[datetime], counts: list[int]) -> Chart:
    """Bars scaled to the busiest hour; ``hours`` are the local starts of the hours."""
    step = WIDTH // max(len(hours), 1)
    peak = max(counts, default=0)
    bars = []
    for i, (hour, count) in enumerate(zip(hours, counts, strict=True)):
        height = 0.0 if peak == 0 else round(HEIGHT * count / peak, 1)
        bars.append(Bar(x=i * step, y=HEIGHT - height, height=height, count=count, hour=hour))
    days = [(i * step, hour.strftime("%a %d")) for i, hour in enumerate(hours) if hour.hour == 0]
    return Chart(bars=bars, days=days, peak=peak, total=sum(counts))
