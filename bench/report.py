"""What the benchmarks report: the machine they ran on, `make bench`'s results table and the
targets it checks, and the writing of a benchmark's block into docs/benchmarks.md."""

from __future__ import annotations

import contextlib
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATE = 2500.0
TARGET_VS_COUNTER = 2.0
TARGET_VS_EVENTSOURCING = 3.0
TARGET_P99_MS = 20.0

BEGIN = "<!-- bench:results:begin (written by `make bench`; edit outside these markers) -->"
END = "<!-- bench:results:end -->"


@dataclass
class Row:
    system: str
    result: dict[str, Any]
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.result["numbers"] / self.result["window"]


@dataclass
class Results:
    machine: dict[str, str]
    plan: dict[str, Any]
    ours: list[Row] = field(default_factory=list)
    counters: list[Row] = field(default_factory=list)
    eventsourcing: Row | None = None
    latency: dict[str, Any] | None = None

    @property
    def counter(self) -> Row | None:
        """Baseline (a) in its fastest configuration: the ratio is taken against that."""
        return max(self.counters, key=lambda r: r.rate, default=None)

    def best(self) -> Row:
        """The fastest configuration that failed no request (any, if all failed some)."""
        clean = [r for r in self.ours if not r.result["errors"]]
        return max(clean or self.ours, key=lambda r: r.rate)


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def git_head() -> str:
    """The commit measured (short), or "" when git cannot tell."""
    return _git("rev-parse", "--short", "HEAD")


def uncommitted(folder: str) -> bool:
    """Whether ``folder`` (from the repository's root) differs from the commit."""
    return bool(_git("status", "--porcelain", folder))


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def cpu_ms_per_number(cores: dict[str, float], rate: float) -> float:
    """CPU the measured system (and its load) spent per number, neighbours excluded."""
    return sum(v for k, v in cores.items() if k != "other") / rate * 1000 if rate else math.nan


def _cores(cores: dict[str, float]) -> str:
    order = ("coordinator", "client", "bench", "postgres", "other")
    return ", ".join(f"{k} {cores[k]:.2f}" for k in order if cores.get(k, 0) >= 0.01)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def throughput_table(res: Results) -> list[str]:
    a = res.counter.rate if res.counter else math.nan
    b = res.eventsourcing.rate if res.eventsourcing else math.nan
    rows = []
    for row in [*res.ours, *res.counters, res.eventsourcing]:
        if row is None:
            continue
        rows.append(
            [
                row.system,
                f"{row.rate:,.0f}",
                f"{_ratio(row.rate, a):.2f}x",
                f"{_ratio(row.rate, b):.2f}x",
                str(row.result["errors"]),
                f"{cpu_ms_per_number(row.result['cores'], row.rate):.2f}",
                _cores(row.result["cores"]),
                row.detail,
            ]
        )
    return _table(
        [
            "system",
            "numbers/s",
            "vs best (a)",
            "vs (b)",
            "errors",
            "CPU ms/number",
            "CPU cores used (by process)",
            "notes",
        ],
        rows,
    )


def _ms(value: float | None) -> str:
    """A latency; none when no number got through (the JSON of NaN is null)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f} ms"


def _p99(res: Results) -> float:
    value = res.latency["reserve_ms"]["p99"] if res.latency else None
    return math.inf if value is None or math.isnan(value) else value


def latency_table(res: Results) -> list[str]:
    lat = res.latency
    if lat is None:
        return []
    reserve, confirm = lat["reserve_ms"], lat["confirm_ms"]
    return _table(
        [
            "offered",
            "issued",
            "errors",
            "reserve p50",
            "reserve p90",
            "reserve p99",
            "reserve max",
            "confirm p99",
            "CPU cores used",
        ],
        [
            [
                f"{res.plan['rate']:,.0f}/s",
                f"{lat['numbers']:,} of {lat['offered']:,}",
                str(lat["errors"]),
                _ms(reserve["p50"]),
                _ms(reserve["p90"]),
                _ms(reserve["p99"]),
                _ms(reserve["max"]),
                _ms(confirm["p99"]),
                _cores(lat["cores"]),
            ]
        ],
    )


def targets(res: Results) -> list[tuple[str, str, bool]]:
    best = res.best()
    out = [(f"≥ {TARGET_RATE:,.0f} numbers/s", f"{best.rate:,.0f} ({best.system})", best.rate >= TARGET_RATE)]
    if res.counter:
        r = _ratio(best.rate, res.counter.rate)
        out.append((f"≥ {TARGET_VS_COUNTER:g}x baseline (a)", f"{r:.2f}x", r >= TARGET_VS_COUNTER))
    if res.eventsourcing:
        r = _ratio(best.rate, res.eventsourcing.rate)
        out.append(
            (f"≥ {TARGET_VS_EVENTSOURCING:g}x baseline (b)", f"{r:.2f}x", r >= TARGET_VS_EVENTSOURCING)
        )
    if res.latency:
        ok = _p99(res) <= TARGET_P99_MS and res.latency["errors"] == 0
        out.append(
            (
                f"p99 reserve ≤ {TARGET_P99_MS:g} ms at {res.plan['rate']:,.0f}/s offered",
                _ms(res.latency["reserve_ms"]["p99"]),
                ok,
            )
        )
    return out


def targets_table(res: Results) -> list[str]:
    return _table(
        ["target", "measured", "holds"], [[t, m, "yes" if ok else "**no**"] for t, m, ok in targets(res)]
    )


def error_lines(res: Results) -> list[str]:
    rows = [(r.system, r.result) for r in [*res.ours, *res.counters, res.eventsourcing] if r]
    if res.latency:
        rows.append(("latency run", res.latency))
    return [
        f"- {name}: {result['errors']} failed, first: `{result['first_error']}`"
        for name, result in rows
        if result["errors"]
    ]


def results_block(res: Results, when: str) -> list[str]:
    m, p = res.machine, res.plan
    return [
        f"Measured {when} at commit {m['commit']} on {m['cpus']} CPU cores ({m['cpu_model']}), "
        f"{m['python']}, "
        f"PostgreSQL {m['server_version']} ({m['postgres']}; fsync {m['fsync']}, "
        f"synchronous_commit {m['synchronous_commit']}, wal_sync_method {m['wal_sync_method']}).",
        "",
        f"Throughput: {p['concurrency']} concurrent clients in {p['client_processes']} load "
        f"process(es) ({p['http']} HTTP client), {p['duration']:g} s measured after "
        f"{p['warmup']:g} s warm-up. "
        f"Latency: {p['rate']:,.0f} numbers/s offered open-loop for {p['latency_duration']:g} s.",
        "",
        *throughput_table(res),
        "",
        *latency_table(res),
        "",
        *targets_table(res),
        "",
        *(["Failed numbers (not counted above):", *error_lines(res), ""] if error_lines(res) else []),
        "`other` is CPU used meanwhile by processes outside the benchmark (the machine may be "
        "shared); a run with more than 0.25 was repeated when time allowed and the least "
        "disturbed one is shown.",
    ]


def write_section(
    path: Path, title: str, begin: str, end: str, block: list[str], intro: list[str] | None = None
) -> None:
    """Replace the block between ``begin`` and ``end`` in ``path``; when the markers are not
    there yet, append a new section ``title`` (with ``intro``) holding them."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    body = "\n".join([begin, *block, end])
    first, last = text.find(begin), text.find(end)
    if first != -1 and last != -1:
        text = text[:first] + body + text[last + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join([title, "", *(intro or []), body]) + "\n"
    path.write_text(text)
