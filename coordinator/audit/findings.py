"""What an audit or an offline verification found, and how it is reported. Pure.

Every finding names its check and, where one applies, the position, series, period and
number concerned. The list kept is bounded (a ledger rewritten wholesale would otherwise
fill memory with millions of findings); the count per check is always exact.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

# The checks, in the order a report lists them.
CHECKS = {
    "chain": "hash chain: every hash recomputed from the genesis with the canonical form",
    "positions": "positions gapless from 1",
    "invariants": "numbering invariants: no hole, no duplicate, one number per document",
    "replay": "projections rebuilt from the events alone",
    "projections": "live projections equal to the replayed ones, row by row",
    "receipts": "receipts held by the stores match the ledger",
}

KEPT_PER_CHECK = 200


@dataclass(frozen=True)
class Finding:
    check: str
    message: str
    position: int | None = None
    series: str | None = None
    period: str | None = None
    number: int | None = None
    table: str | None = None
    key: Any = None

    def line(self) -> str:
        where = []
        if self.position is not None:
            where.append(f"position {self.position}")
        if self.series is not None:
            where.append(
                f"{self.series} {self.period} #{self.number}"
                if self.number is not None
                else f"{self.series} {self.period}"
            )
        if self.table is not None:
            where.append(f"{self.table} {self.key}")
        return (
            f"[{self.check}] {', '.join(where)}: {self.message}"
            if where
            else f"[{self.check}] {self.message}"
        )

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Findings:
    kept: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    ran: set[str] = field(default_factory=set)  # checks that ran (a skipped one proves nothing)

    def add(self, finding: Finding) -> None:
        self.counts[finding.check] += 1
        if self.counts[finding.check] <= KEPT_PER_CHECK:
            self.kept.append(finding)

    def __call__(self, check: str, message: str, **where: Any) -> None:
        self.add(Finding(check, message, **where))

    def merge(self, other: Findings) -> None:
        """Take in what another pass found (over other checks, or the same ones)."""
        self.ran |= other.ran
        for finding in other.kept:
            if sum(1 for f in self.kept if f.check == finding.check) < KEPT_PER_CHECK:
                self.kept.append(finding)
        self.counts.update(other.counts)

    @property
    def ok(self) -> bool:
        return not self.counts

    def held(self, check: str) -> bool:
        return check in self.ran and not self.counts[check]


def render_text(title: str, findings: Findings, summary: list[str]) -> str:
    """The human report: one line per check, then the findings, then the summary."""
    lines = [title]
    for check, what in CHECKS.items():
        if check not in findings.ran:
            continue
        count = findings.counts[check]
        lines.append(
            f"  {'ok  ' if not count else 'FAIL'} {what}" + (f" — {count} finding(s)" if count else "")
        )
    for check in CHECKS:
        mine = [f for f in findings.kept if f.check == check]
        if mine:
            lines.append("")
            lines.extend(f.line() for f in mine)
            hidden = findings.counts[check] - len(mine)
            if hidden > 0:
                lines.append(f"[{check}] … and {hidden} more")
    lines.append("")
    lines.extend(summary)
    lines.append("RESULT: every check holds" if findings.ok else "RESULT: FAILED")
    return "\n".join(lines) + "\n"


def render_json(findings: Findings, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "ok": findings.ok,
        "checks": {
            check: {"ok": not findings.counts[check], "findings": findings.counts[check]}
            for check in CHECKS
            if check in findings.ran
        },
        "findings": [f.as_json() for f in findings.kept],
        **summary,
    }
