"""Benchmark: the Get feed answering 100,000 documents, on the agent and on the coordinator.

Each measurement runs in a fresh serving process (the real feed handler, or the baseline that
builds the whole answer in memory and serialises it at once); the clock runs from the request
to the last byte received, and the process's peak RSS (VmHWM) is read afterwards.

    python -m bench.webservice            # 100,000 documents; rewrites its block in docs
    python -m bench.webservice --quick    # 10,000 documents, printed only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop
from aiohttp import web

from agent.webservice import AgentFeed, add_webservice_routes
from agent.whmcs import queries
from agent.whmcs.database import create_agent_tables, create_pool, parse_mysql_url
from agent.whmcs.feed_queries import MysqlVerdictCache, store_documents
from bench import mariadb
from bench.cpu import CpuMeter, cpu_seconds, mariadb_pids, wait_for_quiet
from bench.postgres import admin_url, connected, fresh_database
from bench.processes import free_port, start, stopped, wait_healthy
from bench.report import cpu_model, write_section
from coordinator.app import create_app
from coordinator.db import connect
from coordinator.http.routes import POOL
from coordinator.migrations import migrate
from coordinator.peers.tokens import create_api_token
from coordinator.settings import Settings
from coordinator.webservice.feed import document_pages
from getfeed.europe import home_member_state
from getfeed.lookup import ViesLookup
from getfeed.query import parse_get
from getfeed.vies import ViesSettings, add_europe
from simulator.generator import StoreGenerator
from simulator.whmcs import connection, create_database, drop_database, load_schema, load_store
from simulator.whmcs import parse_mysql_url as parse_admin_url

BEGIN = "<!-- bench:webservice:begin (written by `python -m bench.webservice`; edit outside) -->"
END = "<!-- bench:webservice:end -->"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
TOKEN = "bench-webservice-token"
TEMPLATES = 1000  # generated documents, copied until the wanted count is reached
STORE = "bench"
TARGET_SECONDS = 5.0
TARGET_PEAK_MB = 150.0
VIES_OFF = ViesSettings("", 5.0, 7, 0)
RUNS = 2


# -- serving processes ------------------------------------------------------------------------


def _lookup(cache: Any) -> ViesLookup:
    return ViesLookup(None, cache, max_age=timedelta(days=7), budget=0, now=lambda: datetime.now(UTC))


async def _fields(request: web.Request) -> dict[str, Any]:
    return dict(await request.post())


def agent_app(pool: Any) -> web.Application:
    feed = AgentFeed(
        pool=pool,
        rules=queries.DueRules("payment", "payment", "negative_total"),
        has_invoicedata=True,
        token=TOKEN,
        timezone="UTC",
        country="NL",
        vies=VIES_OFF,
    )

    async def baseline(request: web.Request) -> web.Response:
        query = parse_get(await _fields(request), date.today())
        answer: dict[str, Any] = {}
        lookup = _lookup(MysqlVerdictCache(pool))
        home = home_member_state(feed.country)
        async for snaps in store_documents(pool, query, feed.rules, True):
            documents = [s.document for s in snaps]
            await add_europe(documents, [home] * len(documents), lookup, date.today())
            answer.update((str(s.invoice_id), s.document) for s in snaps)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    add_webservice_routes(app, feed)
    app.router.add_post("/baseline", baseline)
    app.router.add_get("/healthz", _ok)
    return app


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def coordinator_app(database_url: str) -> web.Application:
    app = create_app(
        Settings(database_url=database_url, vies_url="", timezone="UTC", log_level="warning", log_json=True)
    )

    async def baseline(request: web.Request) -> web.Response:
        pool = request.app[POOL]
        query = parse_get(await _fields(request), date.today())
        answer: dict[str, Any] = {}
        lookup = _lookup(_NoCache())
        async for page in document_pages(pool, query):
            await add_europe([d for _, d, _ in page], [h for *_, h in page], lookup, date.today())
            answer.update((key, doc) for key, doc, _ in page)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app.router.add_post("/baseline", baseline)
    return app


class _NoCache:
    async def load(self, keys: Any) -> dict[Any, Any]:
        return {}

    async def save(self, verdicts: Any) -> None:
        return None


async def _serve_agent(url: str, port: int) -> None:
    pool = await create_pool(parse_mysql_url(url))
    runner = web.AppRunner(agent_app(pool), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gc.freeze()  # as agent/service.py does once serving
    await asyncio.Event().wait()


async def _serve_coordinator(url: str, port: int) -> None:
    runner = web.AppRunner(coordinator_app(url), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def serve(system: str, url: str, port: int) -> None:
    # The event loop `concord serve` and `concord-agent serve` run on.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_agent(url, port) if system == "agent" else _serve_coordinator(url, port))


# -- data -------------------------------------------------------------------------------------


async def make_store(admin: str, database: str, documents: int) -> str:
    """A WHMCS database with ``documents`` issued documents: a generated store of TEMPLATES
    documents, copied server-side with new ids and numbers."""
    url = await create_database(parse_admin_url(admin), database)
    generator = StoreGenerator(
        7, STORE, clients=200, invoices=TEMPLATES, today=date(2025, 12, 31), numbered_until=date(2026, 1, 1)
    )
    async with connection(url) as conn:
        await load_schema(conn)
        await load_store(conn, generator)
        async with conn.cursor() as cur:
            await cur.execute("UPDATE tblinvoices SET invoicenum = CONCAT('B-', id) WHERE invoicenum = ''")
            await cur.execute("SELECT MAX(id) FROM tblinvoiceitems")
            (items,) = await cur.fetchone()
            columns = (
                "userid, invoicenum, date, duedate, datepaid, last_capture_attempt,"
                " subtotal, credit, tax, tax2, total, taxrate, taxrate2, status,"
                " paymentmethod, notes"
            )
            for copy in range(1, documents // TEMPLATES):
                await cur.execute(
                    f"INSERT INTO tblinvoices (id, {columns}) SELECT id + %s,"
                    f" {columns.replace('invoicenum', 'CONCAT(invoicenum, %s)')}"
                    f" FROM tblinvoices WHERE id <= %s",
                    (copy * TEMPLATES, f"/{copy}", TEMPLATES),
                )
                await cur.execute(
                    "INSERT INTO tblinvoiceitems (id, invoiceid, userid, type, relid,"
                    " description, amount, taxed, duedate, paymentmethod, notes)"
                    " SELECT id + %s, invoiceid + %s, userid, type, relid, description, amount,"
                    " taxed, duedate, paymentmethod, notes FROM tblinvoiceitems"
                    " WHERE invoiceid <= %s",
                    (copy * items, copy * TEMPLATES, TEMPLATES),
                )
                await cur.execute(
                    "INSERT INTO mod_invoicedata (invoiceid, clientsdetails, customfields)"
                    " SELECT invoiceid + %s, clientsdetails, customfields FROM mod_invoicedata"
                    " WHERE invoiceid <= %s",
                    (copy * TEMPLATES, TEMPLATES),
                )
    pool = await create_pool(parse_mysql_url(url))
    try:
        await create_agent_tables(pool)
    finally:
        pool.close()
        await pool.wait_closed()
    return url


async def make_ledger(database_url: str, whmcs_url: str, documents: int) -> str:
    """The coordinator's documents projection holding the same documents as the store, and a
    reader token. Rows are written straight into the projection (no ledger events): the
    benchmark measures the feed, not the numbering."""
    pool = await create_pool(parse_mysql_url(whmcs_url))
    try:
        async with pool.acquire() as conn:
            snaps = await queries.snapshots(
                conn,
                list(range(1, TEMPLATES + 1)),
                queries.DueRules("payment", "payment", "negative_total"),
                True,
            )
    finally:
        pool.close()
        await pool.wait_closed()
    conn = await connect(database_url)
    try:
        await migrate(conn)
        token = await create_api_token(conn, "reader")
        peer_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO peers (id, name, url, token_sha256, state, reported)"
            " VALUES ($1, $2, 'http://127.0.0.1:8701', $3, 'active', $4)",
            peer_id,
            STORE,
            uuid.uuid4().hex,
            {"country": "NL"},
        )
        await conn.executemany(
            "INSERT INTO documents (peer_id, doctype, doc_id, formatted, snapshot, voided,"
            " imported, position) VALUES ($1, $2, $3, $4, $5, false, true, 0)",
            [(peer_id, s.doctype, str(s.invoice_id), s.formatted, s.document) for s in snaps.values()],
        )
        await conn.execute(
            "INSERT INTO documents (peer_id, doctype, doc_id, formatted, snapshot, voided,"
            " imported, position)"
            " SELECT peer_id, doctype, (doc_id::int + k * $1)::text, formatted || '/' || k,"
            " jsonb_set(jsonb_set(snapshot, '{DocData,ID}', to_jsonb(doc_id::int + k * $1)),"
            "           '{DocData,Num}', to_jsonb(formatted || '/' || k)),"
            " voided, imported, position FROM documents, generate_series(1, $2) AS k",
            TEMPLATES,
            documents // TEMPLATES - 1,
        )
        await conn.execute("ANALYZE documents")
    finally:
        await conn.close()
    return token


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Measurement:
    system: str
    mode: str
    documents: int
    megabytes: float
    seconds: float
    idle_mb: float
    peak_mb: float
    sha256: str
    cpu_seconds: float
    cores: dict[str, float]
    other_seconds: list[float] = field(default_factory=list)


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


@contextlib.asynccontextmanager
async def server(system: str, url: str) -> AsyncIterator[tuple[int, str]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="concord-bench-ws-") as tmp:
        process = start(
            f"the {system} server",
            [sys.executable, "-m", "bench.webservice", "serve", system, url, str(port)],
            Path(tmp) / "server.log",
        )
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(process, base, within=30)
            yield process.pid, base
        finally:
            await stopped(process)


MARKER = b'"DocData":'


async def measure(system: str, mode: str, url: str, token: str, pg_database: str) -> Measurement:
    path = {"feed": "/v1/webservice" if system == "coordinator" else "/webservice", "baseline": "/baseline"}[
        mode
    ]
    async with server(system, url) as (pid, base):
        await asyncio.sleep(1.0)  # let start-up settle (pools, migrations check)
        wait_for_quiet(limit=0.3, longest=10)
        idle = _status_kb(pid, "VmRSS")
        cpu_before = cpu_seconds(pid)
        meter = CpuMeter({"server": [pid], "mariadb": mariadb_pids()}, database=pg_database)
        digest, size, count, tail = hashlib.sha256(), 0, 0, b""
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            meter.start()
            started = time.perf_counter()
            async with http.post(base + path, data={"action": "Get", "token": token}) as resp:
                assert resp.status == 200, await resp.text()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    digest.update(chunk)
                    size += len(chunk)
                    window = tail + chunk
                    count += window.count(MARKER)
                    tail = chunk[-(len(MARKER) - 1) :]
            seconds = time.perf_counter() - started
            cores = meter.stop()
        peak = _status_kb(pid, "VmHWM")
        cpu = cpu_seconds(pid) - cpu_before
    return Measurement(
        system, mode, count, size / 1e6, seconds, idle / 1024, peak / 1024, digest.hexdigest(), cpu, cores
    )


# -- report -----------------------------------------------------------------------------------


def _cores(cores: dict[str, float]) -> str:
    order = ("server", "mariadb", "postgres", "bench", "other")
    names = {"bench": "client"}
    return ", ".join(f"{names.get(k, k)} {cores[k]:.2f}" for k in order if cores.get(k, 0) >= 0.01)


def render(results: list[Measurement], documents: int, facts: str, setup: float) -> str:
    rows = [
        "| system | answer | documents | MB sent | seconds (other run) | CPU s (server) "
        "| CPU cores used | RSS before (MB) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        label = "streamed feed" if m.mode == "feed" else "baseline: whole answer in memory"
        rows.append(
            f"| {m.system} | {label} | {m.documents:,} | {m.megabytes:,.1f} | "
            f"{m.seconds:.2f} ({', '.join(f'{o:.2f}' for o in m.other_seconds)}) | "
            f"{m.cpu_seconds:.2f} | {_cores(m.cores)} | {m.idle_mb:.0f} | "
            f"{m.peak_mb:.0f} |"
        )
    checks = ["", "| target | agent | coordinator |", "|---|---|---|"]
    by = {(m.system, m.mode): m for m in results}

    def check(system: str, what: str) -> str:
        feed, base = by[(system, "feed")], by[(system, "baseline")]
        value, holds = {
            "seconds": (f"{feed.seconds:.2f} s", feed.seconds <= TARGET_SECONDS),
            "peak": (f"{feed.peak_mb:.0f} MB", feed.peak_mb <= TARGET_PEAK_MB),
            "half": (
                f"{feed.peak_mb / base.peak_mb:.0%} of {base.peak_mb:.0f} MB",
                feed.peak_mb < base.peak_mb / 2,
            ),
            "same": (
                "identical" if feed.sha256 == base.sha256 else "DIFFERENT",
                feed.sha256 == base.sha256 and feed.documents == documents,
            ),
        }[what]
        return f"{value} ({'yes' if holds else '**no**'})"

    for label, what in (
        (f"≤ {TARGET_SECONDS:g} s for {documents:,} documents", "seconds"),
        (f"peak RSS ≤ {TARGET_PEAK_MB:g} MB", "peak"),
        ("peak RSS under half the baseline's", "half"),
        ("answer bytes equal to the baseline's", "same"),
    ):
        checks.append(f"| {label} | {check('agent', what)} | {check('coordinator', what)} |")
    method = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {facts}. Data set up in "
        f"{setup:.0f} s: a generated WHMCS store of {TEMPLATES:,} documents (items, "
        "`mod_invoicedata` snapshots, clients from many countries) copied server-side "
        f"(`INSERT … SELECT`) to {documents:,} issued documents; the coordinator's `documents` "
        "projection filled with the same documents (written straight into the table, no ledger "
        "events). Each measurement is a fresh serving process (`python -m bench.webservice "
        "serve …` on uvloop, as `concord serve` and `concord-agent serve` run; the agent's "
        "process freezes its start-up objects for the garbage collector as `concord-agent "
        "serve` does) with the real feed handler, or the baseline handler that reads the same "
        "pages and adds the same Europe block, then `orjson.dumps` the whole answer at once; "
        "one `action=Get` for everything, VIES off (the cache is still read), read by a "
        "client that discards the bytes. Seconds: request to last byte, the faster of "
        f"{RUNS} runs (the other in parentheses). CPU: the serving process's, for that "
        "answer; CPU cores used: CPU seconds per wall second of the serving process, MariaDB, "
        "the benchmark's PostgreSQL backends, the client (this process) and everything else "
        "on the machine (`other`: neighbours; each run waits up to 10 s for them to quieten). "
        "Peak RSS: the process's VmHWM after the answer (start-up included; RSS before = "
        "after start-up)."
    )
    return "\n".join([method, "", *rows, *checks])


def _facts(pg_url: str, mysql_url: str) -> str:
    async def versions() -> str:
        async with connected(pg_url) as conn:
            pg = await conn.fetchval("SHOW server_version")
        maria = (await mariadb.server_facts(mysql_url))["version"]
        return f"PostgreSQL {pg.split()[0]}, MariaDB/MySQL {maria}"

    return (
        f"{os.cpu_count()} CPU cores ({cpu_model()}), Python {sys.version.split()[0]}, "
        f"{asyncio.run(versions())}; everything on one machine"
    )


async def _setup(documents: int, mysql_admin: str, pg_url: str, database: str) -> tuple[str, str]:
    whmcs_url = await make_store(mysql_admin, database, documents)
    token = await make_ledger(pg_url, whmcs_url, documents)
    return whmcs_url, token


def run(documents: int, write: bool) -> int:
    logging.getLogger("asyncmy").setLevel(logging.ERROR)  # the WHMCS schema's missing defaults
    mysql_admin = mariadb.ADMIN_URL
    database = f"concord_bench_ws_{uuid.uuid4().hex[:8]}"
    with admin_url() as (pg_admin, _), fresh_database(pg_admin, "webservice") as pg_url:
        started = time.perf_counter()
        pg_database = urlsplit(pg_url).path.lstrip("/")
        try:
            whmcs_url, token = asyncio.run(_setup(documents, mysql_admin, pg_url, database))
            setup = time.perf_counter() - started
            print(f"set up {documents:,} documents in {setup:.1f} s", flush=True)
            results = []
            for system, url, key in (("agent", whmcs_url, TOKEN), ("coordinator", pg_url, token)):
                for mode in ("feed", "baseline"):
                    # Best of RUNS, each in a fresh process: the machine is shared and noisy.
                    runs = sorted(
                        (asyncio.run(measure(system, mode, url, key, pg_database)) for _ in range(RUNS)),
                        key=lambda r: r.seconds,
                    )
                    m = replace(runs[0], other_seconds=[r.seconds for r in runs[1:]])
                    results.append(m)
                    print(
                        f"{system:12} {mode:9} {m.documents:,} docs {m.seconds:6.2f} s "
                        f"(server CPU {m.cpu_seconds:.2f} s; cores {_cores(m.cores)}) "
                        f"peak {m.peak_mb:5.0f} MB",
                        flush=True,
                    )
            block = render(results, documents, _facts(pg_url, whmcs_url), setup)
        finally:
            asyncio.run(drop_database(parse_admin_url(mysql_admin), database))
    print(block)
    if write:
        write_section(DOCS, "## WebService Get feed: 100,000 documents", BEGIN, END, block.split("\n"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webservice",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="(internal) one serving process")
    serve_parser.add_argument("system", choices=("agent", "coordinator"))
    serve_parser.add_argument("url")
    serve_parser.add_argument("port", type=int)
    parser.add_argument(
        "--documents", type=int, default=100_000, help=f"how many documents (a multiple of {TEMPLATES:,})"
    )
    parser.add_argument("--quick", action="store_true", help="10,000 documents, printed only")
    parser.add_argument("--print-only", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.system, args.url, args.port)
        return 0
    if args.quick:
        return run(10_000, write=False)
    return run(max(TEMPLATES, args.documents // TEMPLATES * TEMPLATES), write=not args.print_only)


if __name__ == "__main__":
    sys.exit(main())
