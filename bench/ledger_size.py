"""Throughput and p99 reserve against the ledger's size: ``python -m bench.ledger_size``.

For each size (default 0, 100,000 and 1,000,000 events), on a fresh database:

1. Unless the size is 0, a ledger of that many events is built and COPYed as the audit
   benchmark builds its own (bench/ledger_fixture.py: three stores, invoices and credit
   notes, releases, updates, voids), then ``concord audit --rebuild`` builds the projections
   from it (the product's own path from events to projections). No ANALYZE and no VACUUM
   by hand: the database is as a restored ledger is (``--analyze`` adds a VACUUM ANALYZE
   here, to compare).
2. One ``concord serve`` process starts cold on it (bench/coordinator.py) and a store is
   registered. The measuring starts once the coordinator's background chain check has
   reached the head (the time it took is reported).
3. Once every size is ready, ``--rounds`` rounds taken in turn (0, 100k, 1M, 0, …, so that
   a neighbour's burst falls on every size alike), each: the closed-loop throughput run
   (bench.load, 256 clients, each a reserve then a confirm through HTTP) and the open-loop
   latency run (500 numbers/s offered, latency from the scheduled start). Every round is
   recorded, with the cores other processes used meanwhile (bench/cpu.py): the machine may
   be shared.

Afterwards: every series and period still holds exactly 1..highest, the on-disk size of
the ledger's tables, and the rows PostgreSQL read by sequential scan per issued number.
Writes its block in docs/benchmarks.md between the bench:ledger-size markers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.audit import rebuild_projections
from bench.cli import machine_facts
from bench.coordinator import Cluster, CoordinatorError, coordinators, ledger_check, wait_for_chain
from bench.cpu import wait_for_quiet
from bench.drive import DriveError, run_clients
from bench.ledger_fixture import LedgerBuilder, copy_events
from bench.postgres import admin_url, checkpoint, connected, fresh_database, server_facts, url_parts
from bench.report import cpu_ms_per_number, write_section
from coordinator.migrations import migrate
from simulator.scratch_postgres import run_sql

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
TITLE = "## Throughput and latency against the ledger's size"
BEGIN = "<!-- bench:ledger-size:begin (written by `python -m bench.ledger_size`; edit outside) -->"
END = "<!-- bench:ledger-size:end -->"

SIZES = (0, 100_000, 1_000_000)
TARGET_RATE_SHARE = 0.90  # throughput at the largest size, as a share of that at 0
TARGET_P99_FACTOR = 1.2  # p99 reserve at the largest size, as a multiple of that at 0
TABLES = ("events", "reservations", "documents")


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    rounds: int
    duration: float
    warmup: float
    concurrency: int
    rate: float
    http: str
    analyze: bool
    quiet_wait: float


@dataclass
class Size:
    events: int
    preload_seconds: float = 0.0
    rebuild_seconds: float = 0.0
    chain_seconds: float = 0.0
    disk: dict[str, int] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    scans: dict[str, tuple[int, int]] = field(default_factory=dict)  # table: (scans, rows read)
    issued: int = 0
    appended: int = 0  # events appended by all rounds
    gapless: bool = True

    def median_rate(self) -> float:
        return statistics.median(r["closed"]["numbers"] / r["closed"]["window"] for r in self.rounds)

    def median_cpu_ms(self) -> float:
        return statistics.median(
            cpu_ms_per_number(r["closed"]["cores"], r["closed"]["numbers"] / r["closed"]["window"])
            for r in self.rounds
        )

    def median_p99(self) -> float:
        return statistics.median(r["open"]["reserve_ms"]["p99"] for r in self.rounds)


def _say(text: str) -> None:
    sys.stderr.write(f"[{datetime.now(UTC):%H:%M:%S}] {text}\n")
    sys.stderr.flush()


async def _preload(url: str, events: int) -> None:
    async with connected(url) as conn:
        await migrate(conn)
        await copy_events(conn, LedgerBuilder().ledger(events))


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with connected(url) as conn:
        return await conn.fetch(sql, *args)


def disk_sizes(url: str) -> dict[str, int]:
    """Bytes on disk of each ledger table, its indexes and TOAST included."""
    rows = asyncio.run(
        _fetch(
            url,
            "SELECT t AS name, pg_total_relation_size(t::regclass) AS bytes FROM unnest($1::text[]) t",
            list(TABLES),
        )
    )
    return {r["name"]: r["bytes"] for r in rows}


def head(url: str) -> int:
    """The ledger's last position (read by its primary key: no sequential scan counted)."""
    return asyncio.run(_fetch(url, "SELECT coalesce(max(position), 0) AS p FROM events"))[0]["p"]


def seq_scans(url: str) -> dict[str, tuple[int, int]]:
    rows = asyncio.run(
        _fetch(
            url,
            "SELECT relname, seq_scan, seq_tup_read FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
            list(TABLES),
        )
    )
    return {r["relname"]: (r["seq_scan"], r["seq_tup_read"]) for r in rows}


def _settle(admin: str, plan: Plan, label: str) -> float:
    checkpoint(admin)  # no run pays for the previous one's dirty pages
    load = wait_for_quiet(longest=plan.quiet_wait)
    _say(f"{label}: other processes use {load:.2f} cores; measuring")
    return load


@dataclass
class Subject:
    """One ledger size under measurement: its database, its coordinator, its readings."""

    size: Size
    url: str
    cluster: Cluster
    issued_before: int
    # (head, sequential scans) before each round and after the last: what each round
    # appended, and the rows PostgreSQL read by sequential scan meanwhile.
    readings: list[tuple[int, dict[str, tuple[int, int]]]] = field(default_factory=list)


def prepare(stack: contextlib.ExitStack, admin: str, plan: Plan, events: int) -> Subject:
    """A database holding a ledger of ``events`` events, and a cold coordinator serving it."""
    size = Size(events)
    url = stack.enter_context(fresh_database(admin, f"size{events}"))
    if events:
        _say(f"building and loading {events:,} events …")
        started = time.perf_counter()
        asyncio.run(_preload(url, events))
        size.preload_seconds = time.perf_counter() - started
        _say(f"  {size.preload_seconds:.0f} s; concord audit --rebuild …")
        size.rebuild_seconds = rebuild_projections(url)["seconds"]
        _say(f"  {size.rebuild_seconds:.0f} s")
        if plan.analyze:
            _say("VACUUM ANALYZE (--analyze) …")
            asyncio.run(run_sql(url, "VACUUM (ANALYZE)"))
        size.disk = disk_sizes(url)
    issued_before = ledger_check(url)["issued"] if events else 0
    cluster = stack.enter_context(coordinators(url, 1))
    started_at = head(url)
    size.chain_seconds = wait_for_chain(cluster.urls[0], started_at)
    _say(
        f"{events:,} events: chain check of {started_at:,} events took {size.chain_seconds:.1f} s after start"
    )
    return Subject(size, url, cluster, issued_before)


def measure_round(admin: str, plan: Plan, subject: Subject, index: int) -> None:
    size, url = subject.size, subject.url
    label = f"{size.events:,} events, round {index + 1}"
    quiet = _settle(admin, plan, label)
    subject.readings.append((head(url), seq_scans(url)))
    round_: dict[str, Any] = {"events": subject.readings[-1][0], "quiet": quiet}
    database = url_parts(url).dbname
    round_["closed"] = run_clients(
        subject.cluster,
        database,
        "closed",
        processes=1,
        concurrency=plan.concurrency,
        duration=plan.duration,
        warmup=plan.warmup,
        http=plan.http,
        tag=f"r{index}",
    )
    _settle(admin, plan, f"{label}, latency")
    round_["open"] = run_clients(
        subject.cluster,
        database,
        "open",
        processes=1,
        rate=plan.rate,
        duration=plan.duration,
        warmup=plan.warmup,
        http=plan.http,
        tag=f"r{index}",
    )
    rate = round_["closed"]["numbers"] / round_["closed"]["window"]
    _say(
        f"  {rate:,.0f} numbers/s (other {round_['closed']['cores']['other']:.2f}),"
        f" p99 reserve {round_['open']['reserve_ms']['p99']} ms at "
        f"{plan.rate:,.0f}/s (other {round_['open']['cores']['other']:.2f})"
    )
    size.rounds.append(round_)


def finish(subject: Subject) -> Size:
    """The last reading taken (after the statistics' flush): per-round figures, checks."""
    size, url = subject.size, subject.url
    subject.readings.append((head(url), seq_scans(url)))
    readings = subject.readings
    for round_, (head0, scans0), (head1, scans1) in zip(size.rounds, readings, readings[1:], strict=False):
        round_["appended"] = head1 - head0
        round_["seq_rows"] = {t: scans1[t][1] - scans0[t][1] for t in scans1}
    (head0, first), (head1, last) = readings[0], readings[-1]
    size.appended = head1 - head0
    size.scans = {t: (last[t][0] - first[t][0], last[t][1] - first[t][1]) for t in last}
    check = ledger_check(url)
    size.issued = check["issued"] - subject.issued_before
    size.gapless = check["gapless"]
    if not size.gapless:
        raise BenchError(f"{size.events:,} events: a series holds a hole or a number twice")
    return size


def measure(admin: str, plan: Plan) -> list[Size]:
    """Every size prepared first, then the rounds taken in turn (0, 100k, 1M, 0, …): on a
    shared machine a neighbour's burst then falls on every size alike, not on one."""
    with contextlib.ExitStack() as stack:
        subjects = [prepare(stack, admin, plan, events) for events in plan.sizes]
        for index in range(plan.rounds):
            for subject in subjects:
                measure_round(admin, plan, subject, index)
        # Idle backends report their last statistics within PGSTAT_IDLE_INTERVAL (10 s);
        # between rounds, the wait for a quiet machine gives them most of that time.
        time.sleep(11)
        return [finish(subject) for subject in subjects]


# -- report ------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")


def targets(sizes: list[Size]) -> list[tuple[str, str, bool]]:
    if len(sizes) < 2 or sizes[0].events != 0:
        return []
    base, top = sizes[0], sizes[-1]
    share = _ratio(top.median_rate(), base.median_rate())
    factor = _ratio(top.median_p99(), base.median_p99())
    return [
        (
            f"throughput at {top.events:,} events ≥ {TARGET_RATE_SHARE:.0%} of that at 0",
            f"{share:.0%} ({top.median_rate():,.0f} vs {base.median_rate():,.0f} numbers/s)",
            share >= TARGET_RATE_SHARE,
        ),
        (
            f"p99 reserve at {top.events:,} events ≤ {TARGET_P99_FACTOR:g}x that at 0",
            f"{factor:.2f}x ({top.median_p99():.1f} vs {base.median_p99():.1f} ms)",
            factor <= TARGET_P99_FACTOR,
        ),
    ]


def block(sizes: list[Size], plan: Plan, machine: dict[str, str]) -> list[str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured {when} at commit {machine['commit']} on {machine['cpus']} CPU cores "
        f"({machine['cpu_model']}), {machine['python']}, PostgreSQL {machine['server_version']} "
        f"({machine['postgres']}; fsync {machine['fsync']}, synchronous_commit "
        f"{machine['synchronous_commit']}). Per round: {plan.concurrency} clients closed loop "
        f"for {plan.duration:g} s, then {plan.rate:,.0f} numbers/s offered open loop for "
        f"{plan.duration:g} s (each after {plan.warmup:g} s not counted). "
        + (
            "VACUUM ANALYZE after the preload (`--analyze`)."
            if plan.analyze
            else "No ANALYZE or VACUUM by hand: statistics are whatever autovacuum made meanwhile."
        ),
        "",
        "| ledger at start | round | events before the round | numbers/s | errors | CPU ms/number "
        "| cores (coordinator, client, postgres, other) | p50 reserve | p99 reserve | "
        "max reserve | issued / offered | errors | other cores | rows read by seq. scan per "
        "event appended: reservations, documents |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for index, r in enumerate(size.rounds, 1):
            closed, opened = r["closed"], r["open"]
            cores = closed["cores"]
            lat = opened["reserve_ms"]
            rate = closed["numbers"] / closed["window"]
            lines.append(
                f"| {size.events:,} | {index} | {r['events']:,} | {rate:,.0f} | "
                f"{closed['errors']} | {cpu_ms_per_number(cores, rate):.2f} | "
                + ", ".join(f"{cores.get(k, 0):.2f}" for k in ("coordinator", "client", "postgres", "other"))
                + f" | {lat['p50']:.1f} ms | {lat['p99']:.1f} ms | {lat['max']:.1f} ms | "
                f"{opened['numbers']:,} / {opened['offered']:,} | {opened['errors']} | "
                f"{opened['cores'].get('other', 0):.2f} | "
                + ", ".join(
                    f"{r['seq_rows'].get(t, 0) / max(r['appended'], 1):,.1f}"
                    for t in ("reservations", "documents")
                )
                + " |"
            )
    lines += [
        "",
        "Per round, left: the throughput run (CPU ms/number: CPU the coordinator, the load "
        "generator and PostgreSQL spent per issued number, neighbours excluded); right: the "
        "latency run; last column: rows PostgreSQL read by sequential scan during the round "
        "(pg_stat_user_tables before and after it; a round's last second may count in the "
        "next), per event appended. `other`: cores used meanwhile by processes outside the "
        "benchmark.",
        "",
        "| ledger at start | median numbers/s | vs 0 | median CPU ms/number | median p99 reserve "
        "| vs 0 | "
        "seq. scans (rows read per event appended): events, reservations, documents | "
        "on disk: events, reservations, documents | preload: build + COPY, rebuild | "
        "chain check after start |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = sizes[0] if sizes and sizes[0].events == 0 else None
    for size in sizes:
        rate, p99 = size.median_rate(), size.median_p99()
        scans = ", ".join(
            f"{size.scans.get(t, (0, 0))[0]:,} ({size.scans.get(t, (0, 0))[1] / max(size.appended, 1):,.1f})"
            for t in TABLES
        )
        disk = ", ".join(_mib(size.disk[t]) for t in TABLES) if size.disk else "—"
        preload = f"{size.preload_seconds:.0f} s + {size.rebuild_seconds:.0f} s" if size.events else "—"
        lines.append(
            f"| {size.events:,} | {rate:,.0f} | "
            f"{f'{_ratio(rate, base.median_rate()):.0%}' if base else '—'} | "
            f"{size.median_cpu_ms():.2f} | {p99:.1f} ms | "
            f"{f'{_ratio(p99, base.median_p99()):.2f}x' if base else '—'} | {scans} | {disk} | "
            f"{preload} | {size.chain_seconds:.1f} s |"
        )
    checks = targets(sizes)
    if checks:
        lines += ["", "| target | measured | holds |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in checks]
    lines += [
        "",
        "Numbers issued in all runs: "
        + ", ".join(f"{s.events:,} events: {s.issued:,}" for s in sizes)
        + "; every series and period afterwards holds exactly 1..highest.",
    ]
    return lines


# -- main --------------------------------------------------------------------------------------


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes like 0,100000") from None
    if any(s < 0 for s in sizes) or any(0 < s < 100 for s in sizes):
        raise argparse.ArgumentTypeError("a size is 0 or at least 100 events")
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger_size",
        description=__doc__.split("\n\n")[0],
        epilog="Runs about 15 minutes with the defaults.",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="ledger sizes in events, comma-separated (default 0,100000,1000000; 0,20000 with --quick)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds (throughput run + latency run) per size (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds measured per run (default 10; 3 with --quick)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds before each run's measuring window (default 1)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=256, help="clients in the throughput run (default 256)"
    )
    parser.add_argument(
        "--rate", type=float, default=500.0, help="numbers/s offered in the latency run (default 500)"
    )
    parser.add_argument(
        "--http",
        choices=["raw", "aiohttp"],
        default="raw",
        help="load generator's HTTP client (default raw: bench.http1)",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="VACUUM ANALYZE after the preload, as autovacuum would have done"
        " in service (to compare with the default: nothing by hand)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="longest wait, before each run, for other processes to use under"
        " 0.3 cores (default 20 s; 3 s with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: sizes 0 and 20,000, one short round; prints only"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to write the block to (default "
        f"{DOCS.relative_to(DOCS.parent.parent)}; none with --quick)",
    )
    parser.add_argument("--no-docs", action="store_true", help="print only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = Plan(
        sizes=args.sizes or ((0, 20_000) if args.quick else SIZES),
        rounds=args.rounds or (1 if args.quick else 3),
        duration=args.duration or (3.0 if args.quick else 10.0),
        warmup=args.warmup,
        concurrency=args.concurrency,
        rate=args.rate,
        http=args.http,
        analyze=args.analyze,
        quiet_wait=args.quiet_wait or (3.0 if args.quick else 20.0),
    )
    try:
        with admin_url() as (admin, where):
            machine = machine_facts(server_facts(admin), where)
            sizes = measure(admin, plan)
    except (BenchError, CoordinatorError, DriveError) as exc:
        sys.stderr.write(f"bench.ledger_size: {exc}\n")
        return 1
    lines = block(sizes, plan, machine)
    print("\n".join(lines))
    output = args.output or (None if args.quick or args.no_docs else DOCS)
    if output is not None:
        write_section(output, TITLE, BEGIN, END, lines)
        sys.stderr.write(f"bench.ledger_size: written to {output}\n")
    missed = [t for t, _, ok in targets(sizes) if not ok]
    if missed:
        sys.stderr.write(f"bench.ledger_size: targets missed: {'; '.join(missed)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
