"""The console's pages against a large ledger: each must answer in ≤ 100 ms (docs/console.md).

    python -m bench.console [--events 1000000] [--days 7] [--rounds 20]

Builds the audit's ledger (bench/ledger_fixture.py) with its events spread over the last
``--days`` days up to now, so the overview's 7-day chart and today's counts have all of it
to count (--days 7 is the worst case for the chart), rebuilds the projections with
``concord audit --rebuild``, VACUUM ANALYZE, then serves the coordinator in this process and
times every page over loopback HTTP as a signed-in operator would fetch it. Exit 1 when a
page's slowest answer is over the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.audit import run_measured
from bench.ledger_fixture import LedgerBuilder, Record, copy_events
from bench.postgres import connected
from coordinator.app import create_app
from coordinator.migrations import migrate
from coordinator.peers.tokens import create_api_token
from coordinator.settings import Settings
from simulator.scratch_postgres import admin_url, fresh_database, run_sql

BUDGET_MS = 100.0
CHAIN_WAIT_SECONDS = 900
FIXTURE_STEP = timedelta(microseconds=20_100)
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


class RecentLedger(LedgerBuilder):
    """The fixture's ledger with its events spread evenly over ``days`` up to now."""

    def __init__(self, events: int, days: float) -> None:
        start = datetime.now(UTC) - timedelta(days=days)
        super().__init__(first_day=start.date())
        self.moment = start
        # The fixture moves on by 20.1 ms per event on average itself (0.2 to 40 ms).
        self.step = max(timedelta(days=days) / events - FIXTURE_STEP, timedelta(0))

    def event(self, type_: str, stream: str, data: dict[str, Any]) -> Record:
        self.moment += self.step
        return super().event(type_, stream, data)


def _say(text: str) -> None:
    sys.stderr.write(f"[{datetime.now(UTC):%H:%M:%S}] {text}\n")
    sys.stderr.flush()


async def _load(url: str, events: int, days: float) -> None:
    async with connected(url) as conn:
        await migrate(conn)
        await copy_events(conn, RecentLedger(events, days).ledger(events))


async def _operator(url: str) -> str:
    async with connected(url) as conn:
        return await create_api_token(conn, "operator", "bench.console")


async def _targets(url: str) -> dict[str, Any]:
    async with connected(url) as conn:
        # A number issued half-way through the ledger, by its primary key's order.
        row = await conn.fetchrow(
            "SELECT r.formatted, r.doc_id, r.peer_id::text, d.snapshot->'ClientData'->>'UserID'"
            " AS client FROM reservations r JOIN documents d ON d.reservation_id = r.id"
            " WHERE r.position >= (SELECT max(position) / 2 FROM events) AND r.state = 'issued'"
            " ORDER BY r.position LIMIT 1"
        )
        head = await conn.fetchval("SELECT max(position) FROM events")
        return {**dict(row), "head": head}


async def _chain_checked(base: str) -> None:
    """Wait until the background chain check has verified the whole ledger: a coordinator
    just started verifies it all once, on the same event loop as the pages."""
    async with aiohttp.ClientSession(base) as http:
        for _ in range(CHAIN_WAIT_SECONDS):
            health = await (await http.get("/healthz")).json()
            if health["chain"]["verified_position"] == health["ledger"]["position"]:
                return
            await asyncio.sleep(1)
    raise TimeoutError(f"the chain check did not finish within {CHAIN_WAIT_SECONDS} s")


async def _screenshots(base: str, operator: str, pages: dict[str, str], folder: Path) -> None:
    """Each page as chromium shows it, 1280 px wide (docs/console/*.png)."""
    from playwright.async_api import async_playwright  # a dev dependency, only for this

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(base + "/console/sign-in")
        await page.get_by_label("Token").fill(operator)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(base + "/console/")
        for name, path in pages.items():
            await page.goto(base + path)
            await page.screenshot(path=str(folder / f"{name}.png"))
        await browser.close()


async def _time_pages(
    url: str, operator: str, rounds: int, screenshots: Path | None
) -> dict[str, list[float]]:
    """Each page's times, the first (a cold start's) first."""
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(
            Settings(database_url=url, data_dir=Path(data_dir), timezone="UTC", log_level="warning")
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        try:
            await _chain_checked(base)
            t = await _targets(url)
            pages = {
                "overview": "/console/",
                "overview (poll)": "/console/overview/live",
                "series": "/console/series",
                "stores": "/console/stores",
                "warnings": "/console/warnings",
                "warnings resolved": "/console/warnings?state=resolved",
                "search number": f"/console/numbers?by=number&q={t['formatted']}",
                "search document": f"/console/numbers?by=document&q={t['doc_id']}",
                "search client": f"/console/numbers?by=client&q={t['client']}",
                "history": f"/console/numbers/history?number={t['formatted']}",
                "ledger newest": "/console/ledger",
                "ledger middle": f"/console/ledger?before={t['head'] // 2}",
            }
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(base, cookie_jar=jar) as http:
                form = await (await http.get("/console/sign-in")).text()
                signed = await http.post(
                    "/console/sign-in",
                    allow_redirects=False,
                    data={"csrf": CSRF.search(form)[1], "token": operator},
                )
                assert signed.status == 303, await signed.text()
                times: dict[str, list[float]] = {name: [] for name in pages}
                for _ in range(rounds + 1):  # the first round warms the caches: reported apart
                    for name, path in pages.items():
                        started = time.perf_counter()
                        async with http.get(path, allow_redirects=False) as resp:
                            await resp.read()
                            assert resp.status == 200, (path, resp.status)
                        times[name].append((time.perf_counter() - started) * 1000)
            if screenshots:
                await _screenshots(
                    base,
                    operator,
                    {
                        "overview": "/console/",
                        "ledger": "/console/ledger",
                        "history": pages["history"],
                        "numbers": pages["search client"],
                    },
                    screenshots,
                )
            return times
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--database-url", default=None, help="time a ledger loaded before (by an earlier run's build) instead"
    )
    parser.add_argument(
        "--screenshots",
        type=Path,
        default=None,
        help="save the main pages as PNGs into this folder (needs chromium)",
    )
    args = parser.parse_args(argv)
    if args.database_url:  # a ledger loaded before: time it as it is
        operator = asyncio.run(_operator(args.database_url))
        times = asyncio.run(_time_pages(args.database_url, operator, args.rounds, args.screenshots))
    else:
        times = _build_and_time(args)
    ledger = (
        f"the ledger at {args.database_url}"
        if args.database_url
        else f"{args.events:,} events over {args.days:g} days"
    )
    print(
        f"console pages on {ledger} ({args.rounds} rounds, ms over loopback HTTP; budget {BUDGET_MS:.0f} ms)"
    )
    print(f"{'page':<20} {'first':>8} {'median':>8} {'p95':>8} {'max':>8}")
    over = []
    for name, (first, *values) in times.items():
        values.sort()
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        print(f"{name:<20} {first:8.1f} {statistics.median(values):8.1f} {p95:8.1f} {values[-1]:8.1f}")
        if values[-1] > BUDGET_MS:
            over.append(name)
    print(
        "first: the first request after the coordinator started (cold caches); median, p95 "
        "and max over the rounds after it"
    )
    if over:
        print(f"over the budget: {', '.join(over)}")
    return 1 if over else 0


def _build_and_time(args: argparse.Namespace) -> dict[str, list[float]]:
    with admin_url() as (admin, _), fresh_database(admin, "bench_console") as url:
        _say(f"building and loading {args.events:,} events over {args.days:g} days …")
        started = time.perf_counter()
        asyncio.run(_load(url, args.events, args.days))
        operator = asyncio.run(_operator(url))
        _say(f"  {time.perf_counter() - started:.0f} s; concord audit --rebuild …")
        rebuilt = run_measured(["--database-url", url, "audit", "--rebuild", "--json"])
        if rebuilt["code"] != 0 or not json.loads(rebuilt["stdout"] or "{}").get("rebuilt"):
            raise SystemExit(f"concord audit --rebuild failed: {rebuilt['stderr'][-2000:]}")
        _say(f"  {rebuilt['seconds']:.0f} s; VACUUM ANALYZE …")
        asyncio.run(run_sql(url, "VACUUM (ANALYZE)"))
        _say(f"timing the pages, {args.rounds} rounds …")
        return asyncio.run(_time_pages(url, operator, args.rounds, args.screenshots))


if __name__ == "__main__":
    sys.exit(main())
