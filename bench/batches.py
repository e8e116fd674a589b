"""``python -m bench.batches``: numbering through the batch endpoints (issue 13).

Two measurements, each on a fresh database and a real ``concord serve``, against baseline
(a) measured in the same run (the counter row, one transaction per number):

- **throughput**: ``--workers`` clients each reserve ``--batch`` documents in one request
  and confirm them in another, in a closed loop; numbers/s counts the confirmed ones;
- **beside batches**: single reserves offered open loop at ``--rate`` per second (each
  then confirmed, as in the main benchmark) while two clients keep sending batches; the p99
  of the single reserve is the figure (a big batch must not stall small requests), next to
  the same load offered alone just before, on the same coordinator (a fresh one, on a
  database of its own: not the throughput run's).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import baseline_counter
from bench.coordinator import coordinators, ledger_check
from bench.cpu import CpuMeter, wait_for_quiet
from bench.load import DOC_DATE, DOCUMENT, on_uvloop, open_loop
from bench.postgres import admin_url, checkpoint, fresh_database, url_parts
from bench.report import cpu_ms_per_number, write_section

ROOT = Path(__file__).resolve().parent.parent
TITLE = "## Batches: many documents per request"
BEGIN = "<!-- bench:batches:begin (written by `python -m bench.batches`; edit outside) -->"
END = "<!-- bench:batches:end -->"
BASELINE_CLIENTS = 256


class BatchError(Exception):
    pass


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with session.post(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    ) as resp:
        payload = orjson.loads(await resp.read())
    if resp.status != 200:
        raise BatchError(f"POST {url} -> {resp.status}: {str(payload)[:200]}")
    return payload


async def _batch_worker(
    session: aiohttp.ClientSession, url: str, prefix: str, size: int, until: float, counted_from: float
) -> int:
    """Reserve and confirm batches of ``size`` until ``until``; return the numbers confirmed
    at or after ``counted_from``."""
    confirmed, seq = 0, itertools.count()
    while time.monotonic() < until:
        docs = [
            {"doctype": "invoice", "doc_id": f"{prefix}-{next(seq)}", "date": DOC_DATE} for _ in range(size)
        ]
        reserved = await _post(session, f"{url}/v1/reservations/batch", {"documents": docs})
        items = reserved["results"]
        if any(r["status"] != 201 for r in items):
            raise BatchError(f"a batch reserve item failed: {items[0]}")
        done = await _post(
            session,
            f"{url}/v1/reservations/confirm",
            {"confirmations": [{"reservation_id": r["reservation_id"], "document": DOCUMENT} for r in items]},
        )
        if any(r["status"] != 200 for r in done["results"]):
            raise BatchError(f"a batch confirm item failed: {done['results'][0]}")
        if time.monotonic() >= counted_from:
            confirmed += size
    return confirmed


def _session(token: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"}, timeout=aiohttp.ClientTimeout(total=60)
    )


async def _throughput(
    url: str, token: str, *, workers: int, size: int, duration: float, warmup: float, meter: CpuMeter
) -> dict[str, Any]:
    async with _session(token) as session:
        begin = time.monotonic()
        meter.start()
        counts = await asyncio.gather(
            *(
                _batch_worker(session, url, f"t{w}", size, begin + warmup + duration, begin + warmup)
                for w in range(workers)
            )
        )
        cores = meter.stop()
        wall = time.monotonic() - begin - warmup
    # Batches finishing after the window still count: divide by the time they took.
    rate = sum(counts) / max(wall, duration)
    return {
        "numbers_per_s": round(rate),
        "cores": cores,
        "cpu_ms_per_number": round(cpu_ms_per_number(cores, rate), 2),
    }


async def _beside(
    url: str, token: str, *, size: int, rate: float, duration: float, warmup: float
) -> dict[str, Any]:
    """Single reserves at ``rate`` (open loop) while two clients send batches.

    The batch clients run in a process of their own, as they would be other stores' agents:
    in this one, their request building and answer parsing would delay the single reserves'
    own timing and count as the coordinator's latency."""
    spawn = multiprocessing.get_context("spawn")
    failures: Any = spawn.Queue()
    clients = spawn.Process(
        target=_batch_clients, args=(url, token, size, warmup + duration + 60, failures), daemon=True
    )
    clients.start()
    try:
        single = await open_loop([url], token, rate=rate, duration=duration, warmup=warmup, prefix="single")
    finally:
        ended_by_itself = clients.exitcode is not None
        clients.terminate()  # it would stop by itself a minute later
        clients.join(10)
    if not failures.empty():
        raise BatchError(f"a batch client failed: {failures.get()}")
    if ended_by_itself:  # it died before the single reserves were done: no batches beside them
        raise BatchError(f"the batch clients' process ended early (exit code {clients.exitcode})")
    return single


def _batch_clients(url: str, token: str, size: int, seconds: float, failures: Any) -> None:
    """Two closed-loop batch clients for ``seconds`` (the child process of ``_beside``)."""

    async def run() -> None:
        async with _session(token) as session:
            until = time.monotonic() + seconds
            await asyncio.gather(*(_batch_worker(session, url, f"b{w}", size, until, 0.0) for w in range(2)))

    try:
        on_uvloop(run())
    except Exception as exc:
        failures.put(repr(exc))


def _single_row(args: argparse.Namespace, single: dict[str, Any], beside: str) -> str:
    return (
        f"| {args.rate:g}/s | {single['numbers']:,} of {single['offered']:,} | "
        f"{single['errors']} | {single['reserve_ms']['p50']} ms | "
        f"{single['reserve_ms']['p99']} ms | {single['reserve_ms']['max']} ms | {beside} |"
    )


def _lines(
    baseline: dict[str, Any],
    thr: dict[str, Any],
    alone: dict[str, Any],
    single: dict[str, Any],
    args: argparse.Namespace,
    quiet: list[float],
) -> list[str]:
    base = baseline["numbers"] / baseline["window"]
    ratio = thr["numbers_per_s"] / base if base else 0.0
    p99 = single["reserve_ms"]["p99"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Measured {stamp}; neighbours' load before each run: {', '.join(f'{q:.2f}' for q in quiet)} cores.",
        "",
        "| run | numbers/s | vs (a) | CPU ms/number | cores | notes |",
        "|---|---|---|---|---|---|",
        f"| batches over HTTP, {args.workers} clients, {args.batch} documents each "
        f"(reserve batch + confirm batch) | {thr['numbers_per_s']:,} | {ratio:.2f}x | "
        f"{thr['cpu_ms_per_number']} | "
        f"{', '.join(f'{k} {v}' for k, v in thr['cores'].items() if v)} | |",
        f"| (a) counter row, 1 transaction per number, {BASELINE_CLIENTS} clients | "
        f"{round(base):,} | 1.00x | "
        f"{cpu_ms_per_number(baseline['cores'], base):.2f} | "
        f"{', '.join(f'{k} {v}' for k, v in baseline['cores'].items() if v)} | |",
        "",
        "| single reserves offered | issued | errors | p50 | p99 | max | beside |",
        "|---|---|---|---|---|---|---|",
        _single_row(args, alone, "nothing (the same coordinator, just before)"),
        _single_row(args, single, f"2 clients sending batches of {args.batch}"),
        "",
        "| target | measured | holds |",
        "|---|---|---|",
        f"| batches ≥ 2x baseline (a) | {ratio:.2f}x | {'yes' if ratio >= 2 else '**no**'} |",
        f"| p99 single reserve ≤ 20 ms at {args.rate:g}/s beside batches | {p99} ms | "
        f"{'yes' if p99 <= 20 else '**no**'} |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batches", description=__doc__)
    parser.add_argument("--workers", type=int, default=4, help="batch clients (default 4)")
    parser.add_argument(
        "--batch", type=int, default=500, help="documents per batch request (default 500, the most)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted (1)")
    parser.add_argument(
        "--rate", type=float, default=500.0, help="single reserves offered per second beside batches (500)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "docs" / "benchmarks.md",
        help="markdown file whose block to rewrite",
    )
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args(argv)
    quiet: list[float] = []
    with admin_url() as (admin, _):
        with fresh_database(admin, "batches_a") as url:
            quiet.append(wait_for_quiet())
            baseline = baseline_counter.run(
                url, concurrency=BASELINE_CLIENTS, duration=args.duration, warmup=args.warmup
            )
        with fresh_database(admin, "batches") as url, coordinators(url, 1) as cluster:
            target, token = cluster.urls[0], cluster.peer_token
            checkpoint(url)
            quiet.append(wait_for_quiet())
            meter = CpuMeter({"coordinator": cluster.pids}, database=url_parts(url).dbname)
            thr = on_uvloop(
                _throughput(
                    target,
                    token,
                    workers=args.workers,
                    size=args.batch,
                    duration=args.duration,
                    warmup=args.warmup,
                    meter=meter,
                )
            )
            checks = [ledger_check(url)]
        # The single reserves on a coordinator and database of their own: right after the
        # throughput run, they would also meet its after-effects (the billing monitor and
        # the chain watch catching up on ~80,000 events, autovacuum), which are not batches
        # running beside them (docs/benchmarks.md, "Batches").
        with fresh_database(admin, "batches_latency") as url, coordinators(url, 1) as cluster:
            target, token = cluster.urls[0], cluster.peer_token
            checkpoint(url)
            quiet.append(wait_for_quiet())
            alone = on_uvloop(
                open_loop(
                    [target],
                    token,
                    rate=args.rate,
                    duration=args.duration,
                    warmup=args.warmup,
                    prefix="alone",
                )
            )
            single = on_uvloop(
                _beside(
                    target, token, size=args.batch, rate=args.rate, duration=args.duration, warmup=args.warmup
                )
            )
            checks.append(ledger_check(url))
    lines = [
        *_lines(baseline, thr, alone, single, args, quiet),
        "",
        f"Afterwards the ledgers hold {checks[0]} (throughput) and {checks[1]} (single reserves).",
    ]
    print("\n".join(lines))
    if not args.no_docs:
        write_section(args.output, TITLE, BEGIN, END, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
