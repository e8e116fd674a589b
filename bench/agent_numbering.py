"""Agent benchmark: time to number N paid invoices across three WHMCS stores, end to end.

Three MariaDB databases with the WHMCS schema each holding N/3 paid invoices without a number,
and by default a history: 100,000 documents (``--preload``) numbered by Concord before the run,
in the stores, in the agents' tables and in the ledger (bench/agent_preload.py), as stores in
service have. One coordinator process on that PostgreSQL database; then three agent processes
(``python -m agent serve``) are started and the clock runs until every invoice of every store
carries an ``invoicenum`` and every outbox row is confirmed. Afterwards the ledger is checked
(history + N ``NumberIssued``, numbers 1..history + N, each store's ``invoicenum`` the
ledger's number, numbers in date order within a store, the history reported unchanged) and
the CPU each process used is reported, to show what bounds the throughput. ``--profile``
attaches py-spy to one agent and to the coordinator during the run and summarises where
their CPU time goes.

    .venv/bin/python -m bench.agent_numbering            # 10,000 invoices, rewrites docs
    .venv/bin/python -m bench.agent_numbering --profile  # the same, with the py-spy summary
    .venv/bin/python -m bench.agent_numbering --quick    # 1,500 invoices, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncmy.errors
import asyncpg

from agent.settings import AgentSettings
from agent.whmcs.fixture import (
    MySQLURL,
    connect,
    connection,
    create_database,
    drop_database,
    fetch_all,
    insert_rows,
    load_schema,
    load_store,
    parse_mysql_url,
)
from agent.whmcs.generator import StoreGenerator
from bench.agent_preload import Numbered, preload_ledger, remember_numbered
from bench.audit import RebuildFailed
from bench.coordinator import wait_for_chain
from bench.cpu import cpu_seconds, machine_busy_seconds, wait_for_quiet
from bench.postgres import admin_url, with_database
from bench.report import write_section
from coordinator.scratch_postgres import run_sql

STORES = ("alpha", "bravo", "charlie")
PROFILED_AGENT = STORES[0]
TITLE = "## Agent: numbering 10,000 paid invoices across three stores"
BEGIN = "<!-- bench:agent:begin (written by `python -m bench.agent_numbering`; edit outside) -->"
END = "<!-- bench:agent:end -->"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
MYSQL_ADMIN = os.environ.get("CONCORD_TEST_MYSQL_URL", "").strip() or "mysql://root@127.0.0.1:3306/"

# Agent log lines that mean something went wrong (as in tests/test_agent_stores.py).
BAD_AGENT_LOG = re.compile(
    r'"level": ?"(error|critical)"|Traceback|job_crashed|confirm_refused|outbox_invoice_missing'
    r"|invoice_numbered_elsewhere|number_taken_back|whmcs_write_failed")
POLL_SECONDS = 0.25  # how often the benchmark looks whether the stores are done
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
INSERT_CHUNK = 500
AGENT_BATCH_SIZE: int = AgentSettings.model_fields["batch_size"].default
PRELOAD = 100_000  # documents numbered before the run: stores (and a ledger) in service
SEED = 20251122


class BenchError(Exception):
    pass


# -- processes -------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.returncode is None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


async def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> Process:
    log = _open_log(log_path)
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=log,
                                                stderr=asyncio.subprocess.STDOUT,
                                                start_new_session=True)
    return Process(name, proc, log_path, log)


async def stop(process: Process, sig: signal.Signals = signal.SIGTERM,
               grace: float = STOP_TIMEOUT) -> None:
    """Signal the process and wait for it; SIGKILL if it does not exit in time."""
    if process.running():
        with contextlib.suppress(ProcessLookupError):
            process.proc.send_signal(sig)
        try:
            await asyncio.wait_for(process.proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.proc.wait(), grace)
    process.log.close()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def wait_healthy(process: Process, url: str, within: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while time.monotonic() < deadline:
            if not process.running():
                raise BenchError(f"{process.name} exited with {process.proc.returncode} while"
                                 f" starting:\n{process.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise BenchError(f"{process.name}: {url}/healthz did not answer within {within:.0f} s:\n"
                     f"{process.log_tail()}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- CPU from /proc --------------------------------------------------------------------------


def _processes(comm: set[str]) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in comm:
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry.name), title))
    return found


def postgres_pids(database: str, *, backends: bool) -> list[int]:
    """Backends of ``database``, or the shared server processes (postmaster, WAL writer…)."""
    pids = []
    for pid, title in _processes({"postgres"}):
        client_backend = "(" in title or "[local]" in title
        ours = f" {database} " in title
        if (client_backend and ours) if backends else not client_backend:
            pids.append(pid)
    return pids


def mariadb_pids() -> list[int]:
    return [pid for pid, _ in _processes({"mariadbd", "mysqld"})]


@dataclass
class CpuMeter:
    """CPU seconds of named process groups between ``start`` and ``stop``.

    Processes started after ``start`` (the agents, py-spy) count in full, from their start.
    """

    groups: dict[str, Callable[[], list[int]]]
    before: dict[str, dict[int, float]] = field(default_factory=dict)
    busy: float = 0.0

    def _take(self) -> dict[str, dict[int, float]]:
        return {name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self.before = self._take()
        self.busy = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        after = self._take()
        used = {}
        for name, times in after.items():
            before = self.before.get(name, {})
            used[name] = sum(max(t - before.get(pid, 0.0), 0.0) for pid, t in times.items())
        used["other"] = max(machine_busy_seconds() - self.busy - sum(used.values()), 0.0)
        return used


# -- the WHMCS stores ------------------------------------------------------------------------

INVOICE_TABLES = ("tblinvoices", "tblinvoiceitems", "tblaccounts", "mod_invoicedata")


def paid_invoices(generator: StoreGenerator, count: int, rng: random.Random,
                  numbered: Sequence[Numbered] = ()) -> dict[str, list[Any]]:
    """The store's ``numbered`` history (invoice ids 1..k, with their numbers and dates), then
    ``count`` Paid invoices without a number, dated over 2024 in random order of id."""
    tables: dict[str, list[Any]] = {table: [] for table in INVOICE_TABLES}
    first = date(2024, 1, 1)
    if [n.invoice_id for n in numbered] != list(range(1, len(numbered) + 1)):
        raise BenchError("the numbered history must hold invoice ids 1..k")
    wanted = [(n.day, n.formatted) for n in numbered] + [
        (first + timedelta(days=rng.randrange(366)), None) for _ in range(count)]
    for invoice_id, (day, invoicenum) in enumerate(wanted, 1):
        rows = generator.new_invoice(status="Paid", date=day, invoicenum=invoicenum)
        tables["tblinvoices"].append({"id": invoice_id, **rows.invoice})
        tables["tblinvoiceitems"] += [{**item, "invoiceid": invoice_id} for item in rows.items]
        tables["tblaccounts"] += [{**pay, "invoiceid": invoice_id} for pay in rows.payments]
        if rows.snapshot is not None:
            tables["mod_invoicedata"].append({**rows.snapshot, "invoiceid": invoice_id})
    return tables


async def create_store(admin: MySQLURL, database: str, store: str, count: int,
                       numbered: Sequence[Numbered] = ()) -> str:
    """A WHMCS database with the store's clients and settings, its ``numbered`` history (and
    the agent's tables as they are once it is confirmed) and ``count`` unnumbered paid
    invoices; returns its URL."""
    generator = StoreGenerator(SEED, store, clients=60, invoices=40)
    base = {table: ([] if table in INVOICE_TABLES else rows)
            for table, rows in generator.base().items()}
    # In a thread: building a large history takes seconds of CPU, during which the event loop
    # must go on serving the other stores' MariaDB connections.
    invoices = await asyncio.to_thread(paid_invoices, generator, count,
                                       random.Random(f"{SEED}:{store}"), numbered)
    url = await create_database(admin, database)
    async with connection(url) as conn:
        await load_schema(conn)
        await load_store(conn, base)
        for table in INVOICE_TABLES:
            rows = invoices[table]
            for start in range(0, len(rows), INSERT_CHUNK):
                await insert_rows(conn, table, rows[start:start + INSERT_CHUNK])
    await remember_numbered(url, numbered)
    return url


async def store_progress(conn: Any) -> tuple[int, int]:
    """(outbox rows, confirmed outbox rows) of one store.

    The agent writes an invoice's number and its outbox row in one transaction, so in a store
    that starts without any, outbox rows = numbered invoices (checked again at the end).
    """
    try:
        rows = await fetch_all(conn, "SELECT COUNT(*) AS outbox, COUNT(confirmed_at) AS confirmed"
                               " FROM mod_concord_outbox")
    except asyncmy.errors.ProgrammingError:  # the agent has not created its tables yet
        return 0, 0
    return int(rows[0]["outbox"]), int(rows[0]["confirmed"])


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Store:
    name: str
    database: str
    url: str
    invoices: int
    peer_id: str = ""
    token: str = ""
    port: int = 0
    agent: Process | None = None
    numbered: list[Numbered] = field(default_factory=list)  # before the run (--preload)


@dataclass
class Result:
    invoices: int
    wall: float  # agent start -> all numbered and confirmed
    first_number: float  # agent start -> first invoicenum seen
    numbered_at: float  # agent start -> last invoicenum seen
    ledger_span: float  # first NumberReserved -> last NumberIssued, in the ledger
    cpu: dict[str, float]
    events: dict[str, int]
    writer: dict[str, float]
    checks: list[str]
    machine: dict[str, str]
    neighbours: float = 0.0  # cores used by others just before the run
    scans: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    functions: dict[str, tuple[int, float]] = field(default_factory=dict)
    stores: list[Store] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    profile_errors: list[str] = field(default_factory=list)
    preloaded: int = 0  # documents numbered before the run (--preload)
    preload_events: int = 0  # the ledger's events before the run
    preload_seconds: float = 0.0  # building and loading them, rebuilding the projections
    batch_size: int = AGENT_BATCH_SIZE  # the agents' CONCORD_AGENT_BATCH_SIZE

    @property
    def rate(self) -> float:
        return self.invoices / self.wall


async def _cli(database_url: str, env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator", "--database-url", database_url, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError(f"coordinator {' '.join(args)} timed out") from None
    if proc.returncode != 0:
        raise BenchError(f"coordinator {' '.join(args)} failed: {err.decode()[-2000:]}")
    return out.decode().strip()


async def _metrics(url: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
            http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("concord_ledger_batch_") and ("_sum " in line or "_count " in line):
            name, value = line.rsplit(" ", 1)
            sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def _writer_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("concord_ledger_batch_commands_count")
    return {"transactions": batches,
            "commands": delta("concord_ledger_batch_commands_sum"),
            "seconds": delta("concord_ledger_batch_seconds_sum")}


async def _server_versions(pg_url: str, mysql_admin: MySQLURL) -> dict[str, str]:
    conn = await asyncpg.connect(pg_url)
    try:
        pg = {r["name"]: r["setting"] for r in await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            ["server_version", "synchronous_commit", "fsync"])}
    finally:
        await conn.close()
    async with connection(mysql_admin) as mconn:
        rows = await fetch_all(mconn, "SELECT VERSION() AS v,"
                               " @@innodb_flush_log_at_trx_commit AS flush, @@log_bin AS binlog")
    my = rows[0]
    return {
        "postgres": f"PostgreSQL {pg.get('server_version', '?')} (fsync {pg.get('fsync')},"
                    f" synchronous_commit {pg.get('synchronous_commit')})",
        "mariadb": f"MariaDB/MySQL {my['v']} (innodb_flush_log_at_trx_commit {my['flush']},"
                   f" binlog {'on' if my['binlog'] else 'off'})",
    }


def machine_facts() -> dict[str, str]:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": str(os.cpu_count() or 0), "cpu": model,
            "python": platform.python_version()}


async def event_counts(pg_url: str) -> dict[str, int]:
    """Events in the ledger, by type."""
    conn = await asyncpg.connect(pg_url)
    try:
        return {r["type"]: r["n"] for r in await conn.fetch(
            "SELECT type, count(*) AS n FROM events GROUP BY type")}
    finally:
        await conn.close()


async def verify(pg_url: str, stores: list[Store], total: int) -> list[str]:
    """The ledger and the stores agree: N issued, 1..N, each invoicenum the ledger's, date order
    (N counting the numbered history of --preload)."""
    events = await event_counts(pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        reservations = await conn.fetch(
            "SELECT peer_id::text AS peer_id, doc_id, number, formatted, state"
            " FROM reservations WHERE series = 'invoice'")
    finally:
        await conn.close()
    problems: list[str] = []
    if events.get("NumberIssued", 0) != total:
        problems.append(f"{events.get('NumberIssued', 0)} NumberIssued events, expected {total}")
    numbers = sorted(r["number"] for r in reservations)
    if numbers != list(range(1, total + 1)):
        problems.append(f"numbers are not exactly 1..{total}: {len(numbers)} handed out,"
                        f" lowest {numbers[:1]}, highest {numbers[-1:]}")
    states = Counter(r["state"] for r in reservations)
    if set(states) - {"issued"}:
        problems.append(f"reservation states {dict(states)}")
    ledger = {(r["peer_id"], r["doc_id"]): r for r in reservations}
    for store in stores:
        async with connection(store.url) as mconn:
            rows = await fetch_all(mconn, "SELECT id, date, invoicenum FROM tblinvoices"
                                   " ORDER BY date, id")
        wrong, previous, out_of_order = 0, 0, 0
        for row in rows:
            reservation = ledger.get((store.peer_id, str(row["id"])))
            if reservation is None or reservation["formatted"] != row["invoicenum"]:
                wrong += 1
                continue
            if reservation["number"] < previous:
                out_of_order += 1
            previous = reservation["number"]
        if wrong:
            problems.append(f"{store.name}: {wrong} invoices whose invoicenum is not the ledger's")
        if out_of_order:
            problems.append(f"{store.name}: {out_of_order} numbers out of date order")
    return problems


async def table_scans(pg_url: str) -> dict[str, tuple[int, int, int]]:
    """(sequential scans, rows they read, index scans) per ledger table."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan"
            " FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
            ["events", "reservations", "documents", "counters", "released_numbers"])
    finally:
        await conn.close()
    return {r["relname"]: (r["seq_scan"], r["seq_tup_read"], r["idx_scan"]) for r in rows}


async def function_times(pg_url: str) -> dict[str, tuple[int, float]]:
    """(calls, total ms) of the ledger's SQL functions, when track_functions records them."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT funcname, calls, total_time FROM pg_stat_user_functions")
    finally:
        await conn.close()
    return {r["funcname"]: (r["calls"], r["total_time"]) for r in rows}


async def ledger_span(pg_url: str, after: int) -> float:
    """First NumberReserved -> last NumberIssued among the events after position ``after``."""
    conn = await asyncpg.connect(pg_url)
    try:
        row = await conn.fetchrow(
            "SELECT min(recorded_at) FILTER (WHERE type = 'NumberReserved') AS first,"
            " max(recorded_at) FILTER (WHERE type = 'NumberIssued') AS last FROM events"
            " WHERE position > $1", after)
    finally:
        await conn.close()
    if row["first"] is None or row["last"] is None:
        return 0.0
    return float((row["last"] - row["first"]).total_seconds())


class Cleanup:
    """Undo steps, run in reverse order whatever happened."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    def push(self, what: str, step: Callable[[], Awaitable[Any]]) -> None:
        self._steps.append((what, step))

    async def run(self) -> None:
        while self._steps:
            what, step = self._steps.pop()
            try:
                await asyncio.wait_for(step(), 60)
            except Exception as exc:
                print(f"cleanup: {what} failed: {exc!r}", file=sys.stderr)


@contextlib.asynccontextmanager
async def cleanup() -> AsyncIterator[Cleanup]:
    steps = Cleanup()
    try:
        yield steps
    finally:
        await asyncio.shield(steps.run())


async def run(invoices: int, pg_admin: str, profile: bool, limit: float,
              workdir: Path, pg_settings: list[str] | None = None, preload: int = 0,
              batch_size: int = AGENT_BATCH_SIZE) -> Result:
    mysql_admin = parse_mysql_url(MYSQL_ADMIN).with_database("")
    tag = uuid.uuid4().hex[:8]
    pg_name = f"concord_bench_agent_{tag}"
    pg_url = with_database(pg_admin, pg_name)
    share, extra = divmod(invoices, len(STORES))
    stores = [Store(name, f"concord_bench_whmcs_{name}_{tag}", "",
                    share + (1 if index < extra else 0)) for index, name in enumerate(STORES)]
    machine = {**machine_facts(), **await _server_versions(pg_admin, mysql_admin)}
    async with cleanup() as undo:
        # -- set up (not timed) ------------------------------------------------------------
        await run_sql(pg_admin, f'CREATE DATABASE "{pg_name}"')
        # The ledger's SQL functions report their time in pg_stat_user_functions (superuser only).
        with contextlib.suppress(asyncpg.PostgresError):
            await run_sql(pg_admin, f'ALTER DATABASE "{pg_name}" SET track_functions = pl')
        for setting in pg_settings or []:
            name, _, value = setting.partition("=")
            if not re.fullmatch(r"[a-z_]+", name) or not re.fullmatch(r"[A-Za-z0-9_.]+", value):
                raise BenchError(f"--pg-set {setting!r}: expected name=value")
            await run_sql(pg_admin, f'ALTER DATABASE "{pg_name}" SET {name} = {value}')
        undo.push("drop PostgreSQL database",
                  lambda: run_sql(pg_admin, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        env = {**base_env(), "CONCORD_DATA_DIR": str(workdir), "CONCORD_LOG_LEVEL": "warning",
               "CONCORD_LOG_JSON": "true"}
        history = None
        if preload:
            print(f"preloading {preload:,} numbered documents …", file=sys.stderr, flush=True)
            try:
                history = await preload_ledger(pg_url, STORES, preload)
            except RebuildFailed as exc:
                raise BenchError(str(exc)) from None
            for store in stores:
                store.numbered = history.numbered[store.name]
                store.peer_id, store.token = history.peer_ids[store.name], history.tokens[store.name]
        operator = await _cli(pg_url, env, "tokens", "create", "--role", "operator")
        port = free_port()
        coordinator_url = f"http://127.0.0.1:{port}"
        coordinator = await spawn(
            "coordinator", [sys.executable, "-m", "coordinator", "--database-url", pg_url, "serve",
                            "--host", "127.0.0.1", "--port", str(port)], env,
            workdir / "coordinator.log")
        undo.push("stop coordinator", lambda: stop(coordinator))
        for store in stores:
            undo.push(f"drop WHMCS database {store.database}",
                      lambda store=store: drop_database(mysql_admin, store.database))
        # Building the stores overlaps with the coordinator's start.
        urls = await asyncio.gather(*(create_store(mysql_admin, s.database, s.name, s.invoices,
                                                   s.numbered) for s in stores))
        for store, url in zip(stores, urls, strict=True):
            store.url = url
        await wait_healthy(coordinator, coordinator_url)
        # The coordinator checks the whole chain when it starts: the clock starts after that.
        head = history.head if history else 0
        await asyncio.to_thread(wait_for_chain, coordinator_url, head)
        headers = {"Authorization": f"Bearer {operator}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for store in (s for s in stores if not s.peer_id):
                async with http.post(f"{coordinator_url}/v1/peers",
                                     json={"name": store.name, "url": "http://127.0.0.1:8701"}) as resp:
                    if resp.status != 201:
                        raise BenchError(f"POST /v1/peers: {resp.status} {await resp.text()}")
                    peer = await resp.json()
                store.peer_id, store.token = peer["peer_id"], peer["token"]
        with contextlib.suppress(asyncpg.PostgresError):
            await run_sql(pg_url, "CHECKPOINT")  # no run pays for the setup's dirty pages

        # -- the run -----------------------------------------------------------------------
        meter = CpuMeter({
            "coordinator": lambda: [coordinator.pid],
            **{f"agent {s.name}": (lambda s=s: [s.agent.pid] if s.agent else []) for s in stores},
            "postgres backends": lambda: postgres_pids(pg_name, backends=True),
            "postgres shared processes": lambda: postgres_pids(pg_name, backends=False),
            "mariadb": mariadb_pids,
            "benchmark (polling)": lambda: [os.getpid()],
        })
        spies: list[Spy] = []
        writer_before = await _metrics(coordinator_url)
        events_before = await event_counts(pg_url)
        await asyncio.sleep(0.6)  # the setup's statistics reach pg_stat_* (PGSTAT_MIN_INTERVAL)
        scans_before, functions_before = await table_scans(pg_url), await function_times(pg_url)
        watchers = []
        for store in stores:
            conn = await connect(store.url)
            watchers.append(conn)
            undo.push(f"close {store.name} watcher", lambda conn=conn: _close(conn))
        if profile:
            spies.append(await Spy.attach("coordinator", coordinator.pid, workdir))
            undo.push("stop py-spy on the coordinator", spies[-1].stop)
        # Neighbours (other benchmarks, tests) would take cores from the run: wait for a lull.
        neighbours = await asyncio.to_thread(wait_for_quiet, limit=0.2, longest=15.0)
        meter.start()
        started = time.monotonic()
        for store in stores:
            store.port = free_port()
            agent_env = {
                **base_env(),
                "CONCORD_AGENT_WHMCS_URL": store.url,
                "CONCORD_AGENT_COORDINATOR_URL": coordinator_url,
                "CONCORD_AGENT_TOKEN": store.token,
                "CONCORD_AGENT_STORE": store.name,
                "CONCORD_AGENT_HOST": "127.0.0.1",
                "CONCORD_AGENT_PORT": str(store.port),
                "CONCORD_AGENT_POLL_SECONDS": "0.2",
                "CONCORD_AGENT_BATCH_SIZE": str(batch_size),
                "CONCORD_AGENT_LOG_LEVEL": "warning",
                "CONCORD_AGENT_LOG_JSON": "true",
            }
            store.agent = await spawn(f"agent {store.name}", [sys.executable, "-m", "agent", "serve"],
                                      agent_env, workdir / f"agent-{store.name}.log")
            undo.push(f"stop agent {store.name}", lambda agent=store.agent: stop(agent))
        if profile:
            profiled = next(s for s in stores if s.name == PROFILED_AGENT)
            assert profiled.agent is not None
            await wait_healthy(profiled.agent, f"http://127.0.0.1:{profiled.port}")
            spies.append(await Spy.attach(f"agent {PROFILED_AGENT}", profiled.agent.pid, workdir))
            undo.push(f"stop py-spy on agent {PROFILED_AGENT}", spies[-1].stop)

        first_number = numbered_at = 0.0
        deadline = started + limit
        while True:
            progress = [tuple(n - len(s.numbered) for n in await store_progress(conn))
                        for conn, s in zip(watchers, stores, strict=True)]
            now = time.monotonic() - started
            written = sum(p[0] for p in progress)
            if not first_number and written:
                first_number = now
            if written == invoices and not numbered_at:
                numbered_at = now
            if all(p == (s.invoices, s.invoices) for p, s in zip(progress, stores, strict=True)):
                break
            for store in stores:
                if store.agent is not None and not store.agent.running():
                    raise BenchError(f"agent {store.name} exited with"
                                     f" {store.agent.proc.returncode}:\n{store.agent.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(
                    f"not done within {limit:.0f} s: {invoices - written} invoices without a"
                    f" number, {sum(p[0] - p[1] for p in progress)} outbox rows unconfirmed\n"
                    + "\n".join(f"== {s.name}\n{s.agent.log_tail(10)}" for s in stores if s.agent))
            await asyncio.sleep(POLL_SECONDS)
        wall = time.monotonic() - started
        cpu = meter.stop()
        writer = _writer_delta(writer_before, await _metrics(coordinator_url))
        profiles: dict[str, Profile] = {}
        errors: list[str] = []
        for spy in spies:
            cpu[f"py-spy ({spy.name})"] = cpu_seconds(spy.process.pid)
            await spy.stop()
            try:
                profiles[spy.name] = Profile.read(spy.output, spy.name)
            except (OSError, ValueError) as exc:
                errors.append(f"{spy.name}: {exc}; py-spy said: {spy.process.log_tail(5)}")
        span = await ledger_span(pg_url, head)
        await asyncio.sleep(0.6)  # statistics reach pg_stat_* within PGSTAT_MIN_INTERVAL
        scans = {table: tuple(a - b for a, b in zip(after, scans_before.get(table, (0, 0, 0)),
                                                    strict=True))
                 for table, after in (await table_scans(pg_url)).items()}
        functions = {name: (calls - functions_before.get(name, (0, 0.0))[0],
                            total - functions_before.get(name, (0, 0.0))[1])
                     for name, (calls, total) in (await function_times(pg_url)).items()
                     if calls > functions_before.get(name, (0, 0.0))[0]}
        # The history holds a few documents more than asked: those still reserved when the
        # ledger reached its size were issued too (bench/ledger_fixture.py, finish_pending).
        preloaded = sum(len(s.numbered) for s in stores)
        checks = await verify(pg_url, stores, preloaded + invoices)
        events = {kind: count - events_before.get(kind, 0)
                  for kind, count in (await event_counts(pg_url)).items()
                  if count > events_before.get(kind, 0)}
        if events.get("DocumentUpdated"):
            checks.append(f"{events['DocumentUpdated']} documents reported as changed: the"
                          " numbered history should have been found unchanged")
        for store in stores:
            if store.agent is not None:
                bad = [line for line in store.agent.log_path.read_text(errors="replace").splitlines()
                       if BAD_AGENT_LOG.search(line)]
                if bad:
                    checks.append(f"agent {store.name} logged {len(bad)} problems, e.g. {bad[0][:300]}")
        return Result(invoices=invoices, wall=wall, first_number=first_number,
                      numbered_at=numbered_at, ledger_span=span, cpu=cpu, events=events,
                      writer=writer, checks=checks, machine=machine, neighbours=neighbours,
                      scans=scans, functions=functions, profiles=profiles, profile_errors=errors,
                      stores=stores, preloaded=preloaded, preload_events=head,
                      preload_seconds=history.seconds if history else 0.0,
                      batch_size=batch_size)


async def _close(conn: Any) -> None:
    conn.close()


# -- profiles (py-spy) -----------------------------------------------------------------------


@dataclass
class Spy:
    name: str
    process: Process
    output: Path

    @classmethod
    async def attach(cls, name: str, pid: int, workdir: Path) -> Spy:
        binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if binary is None:
            raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
        slug = name.replace(" ", "-")
        output = workdir / f"profile-{slug}.txt"
        process = await spawn(f"py-spy {name}", [
            binary, "record", "--pid", str(pid), "--format", "raw", "--nolineno",
            "--rate", "100", "--output", str(output)],
            base_env(), workdir / f"py-spy-{slug}.log")
        await asyncio.sleep(0.3)
        if not process.running():
            raise BenchError(f"py-spy could not attach to {name}: {process.log_tail()}")
        return cls(name, process, output)

    async def stop(self) -> None:
        # py-spy writes its output when interrupted.
        await stop(self.process, signal.SIGINT, grace=30)


# What a sample was doing: the first rule (in order) matching a frame of its stack wins.
# Each rule: (label, function name regex, file substring).
AGENT_ACTIVITIES: list[tuple[str, str, str]] = [
    ("startup (imports, settings, first heartbeat)", r"^_find_and_load$|^run_agent$", ""),
    ("changes scan / reconcile", r"^ChangeReporter\.", "agent/changes.py"),
    ("heartbeat", r"^beat$", "agent/heartbeat.py"),
    ("numbering: batch reserve over HTTP", r"^CoordinatorClient\.reserve_many$", "agent/client.py"),
    ("numbering: MySQL transaction (invoicenums + outbox + receipts)", r"^write_numbers$",
     "queries.py"),
    ("numbering: query due documents", r"^due_documents$", "queries.py"),
    ("relay: batch confirm over HTTP", r"^CoordinatorClient\.confirm_many$", "agent/client.py"),
    ("relay: MySQL transaction (mark confirmed + documents)", r"^mark_confirmed$", "queries.py"),
    ("relay: build snapshots (MySQL reads + document JSON)", r"^snapshots$", "queries.py"),
    ("relay: query pending outbox", r"^pending_outbox$", "queries.py"),
    ("HTTP client I/O callbacks (aiohttp, outside a request)", r".", "aiohttp/"),
    ("MySQL driver I/O callbacks (asyncmy, outside a query)", r".", "asyncmy/"),
    ("event loop (scheduling, select, tasks)", r".", "asyncio/"),
]
COORDINATOR_ACTIVITIES: list[tuple[str, str, str]] = [
    ("startup", r"^_find_and_load$", ""),
    ("ledger writer (group commit: decide, append, projections)", r".", "coordinator/ledger/writer.py"),
    ("POST /v1/reservations/batch (handler)", r"^reserve_batch$", "routes.py"),
    ("POST /v1/reservations/confirm (handler)", r"^confirm_batch$", "routes.py"),
    ("POST /v1/heartbeat, GET /metrics, other handlers", r"^(heartbeat|metrics|healthz)$", "routes.py"),
    ("HTTP middleware (auth, errors, logging)", r".", "coordinator/http/middleware.py"),
    ("aiohttp server (parse, respond)", r".", "aiohttp/"),
    ("asyncpg outside a query", r".", "asyncpg/"),
    ("event loop", r".", "uvloop/"),
    ("event loop", r".", "asyncio/"),
]
# The layer a sample's innermost frame belongs to.
LAYERS: list[tuple[str, str]] = [
    ("aiohttp/", "aiohttp"), ("yarl/", "aiohttp"), ("multidict/", "aiohttp"),
    ("asyncmy/", "asyncmy (MySQL driver)"), ("asyncpg/", "asyncpg (PostgreSQL driver)"),
    ("asyncio/", "asyncio"), ("uvloop/", "uvloop"), ("tenacity/", "tenacity (retries)"),
    ("structlog/", "structlog (logging)"), ("logging/", "logging"),
    ("pydantic", "pydantic (validation)"), ("json/", "json"),
    ("coordinator/events/", "canonical JSON / document"), ("coordinator/ledger/", "ledger code"),
    ("coordinator/", "coordinator code"), ("agent/", "agent code"),
    ("importlib", "imports"), ("<frozen", "imports"),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text)
    return (match["func"], match["file"]) if match else (text, "")


def _layer(file: str) -> str:
    for needle, label in LAYERS:
        if needle in file:
            return label
    return file.split("/", 1)[0] or "other"


# Samples whose innermost frame is the event loop's poll: the process sleeps in epoll, or it
# was woken and waits for a core (py-spy counts a runnable thread as active). With uvloop (the
# coordinator) the poll and uvloop's own C code show as Runner.run.
_WAITING = re.compile(r"^(EpollSelector\.select|Runner\.run|BaseEventLoop\.run_forever)$")


@dataclass
class Profile:
    name: str
    samples: int  # all samples py-spy kept
    waiting: int  # of which in the event loop's poll (see _WAITING)
    activities: Counter[str]  # the others, by what they were doing
    layers: Counter[str]
    leaves: Counter[str]

    @property
    def busy(self) -> int:
        return self.samples - self.waiting

    @classmethod
    def read(cls, path: Path, name: str) -> Profile:
        rules = AGENT_ACTIVITIES if name.startswith("agent") else COORDINATOR_ACTIVITIES
        compiled = [(label, re.compile(func), file) for label, func, file in rules]
        activities: Counter[str] = Counter()
        layers: Counter[str] = Counter()
        leaves: Counter[str] = Counter()
        total = waiting = 0
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame(part) for part in stack.split(";")]
            total += count
            leaf_func, leaf_file = frames[-1]
            if _WAITING.match(leaf_func):
                waiting += count
                continue
            label = "other"
            for rule_label, func, file in compiled:
                if any(func.search(f) and file in path_ for f, path_ in frames):
                    label = rule_label
                    break
            activities[label] += count
            layers[_layer(leaf_file)] += count
            leaves[f"{leaf_func} ({leaf_file})"] += count
        if not total:
            raise ValueError(f"no samples in {path}")
        return cls(name, total, waiting, activities, layers, leaves)


# -- report ----------------------------------------------------------------------------------


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _cpu_rows(result: Result) -> list[tuple[str, float]]:
    """The CPU table's rows: the two PostgreSQL groups as one."""
    rows: list[tuple[str, float]] = []
    postgres = 0.0
    for name, seconds in result.cpu.items():
        if name.startswith("postgres"):
            postgres += seconds
            if name == "postgres backends":
                rows.append(("postgres", 0.0))
        else:
            rows.append((name, seconds))
    return [(name, postgres if name == "postgres" else seconds) for name, seconds in rows]


def render(result: Result, *, profile_requested: bool) -> str:
    n, wall = result.invoices, result.wall
    m = result.machine
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    measured = {k: v for k, v in result.cpu.items() if k != "other"}
    total_cpu = sum(measured.values())
    per_store = n / len(STORES)
    writer = result.writer
    tx = writer.get("transactions", 0.0)
    reservations = result.scans.get("reservations", (0, 0, 0))
    lines = [
        f"Measured {now} on {m['cores']} CPU cores ({m['cpu']}), Python {m['python']},"
        f" {m['postgres']}, {m['mariadb']}; everything on one machine.",
        "",
        f"Method: {len(STORES)} stores with {n:,} Paid invoices without a number between them"
        f" ({', '.join(f'{s.invoices:,}' for s in result.stores)}; dated over 2024 in random"
        " order of id, each with its items, payment and `mod_invoicedata` snapshot),"
        " bulk-inserted before the clock starts; "
        + (f"the stores already hold {result.preloaded:,} invoices numbered by Concord before"
           f" the run ({', '.join(f'{len(s.numbered):,}' for s in result.stores)}, dated 2023),"
           " and so does the ledger: its"
           f" {result.preload_events:,} events built and COPYed as `bench.audit` builds its"
           " ledger (bench/agent_preload.py), projections by `concord audit --rebuild`, the"
           " agents' tables as their relay leaves them; set up in"
           f" {result.preload_seconds:.0f} s, not timed. One coordinator process on that"
           " database, started cold (the clock starts once its start-up chain check has"
           " reached the head)"
           if result.preloaded else "one coordinator process on a fresh PostgreSQL database")
        + "; series `invoice` with its defaults (`{NUMBER}`, on payment)."
        " The clock starts when the three `python -m agent serve` processes are started (poll"
        f" interval 0.2 s, batch {result.batch_size}, log level warning) and stops when every"
        " invoice has an"
        " `invoicenum` and every `mod_concord_outbox` row is confirmed (checked every"
        f" {POLL_SECONDS} s). CPU seconds per process from `/proc` over the same interval.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| invoices numbered (3 stores) | {n:,} |",
        f"| numbered before the run, in the stores and the ledger | {result.preloaded:,} |",
        f"| wall time, agents started → all numbered and confirmed | {wall:.1f} s |",
        f"| **end to end** | **{n / wall:,.0f} numbers/s** |",
        f"| first number written after (agent start-up, first heartbeat) | {result.first_number:.1f} s |",
        f"| last number written after | {result.numbered_at:.1f} s |",
        (f"| ledger: first NumberReserved → last NumberIssued | {result.ledger_span:.1f} s"
         f" ({n / result.ledger_span:,.0f} numbers/s) |") if result.ledger_span else
        "| ledger span | - |",
        f"| per store: one document every | {wall / per_store * 1000:.1f} ms |",
        f"| ledger transactions (group commit) | {tx:,.0f}: {writer.get('commands', 0) / max(tx, 1):.1f}"
        f" commands and {writer.get('seconds', 0) * 1000 / max(tx, 1):.2f} ms each; the writer was"
        f" busy {100 * writer.get('seconds', 0) / wall:.0f}% of the wall time |",
    ]
    if result.functions:
        lines.append("| of which in PostgreSQL functions | " + ", ".join(
            f"`{name}` {total / max(calls, 1):.2f} ms" for name, (calls, total)
            in sorted(result.functions.items())) + " per call |")
    lines += [
        f"| sequential scans of `reservations` | {reservations[0]:,}, reading {reservations[1]:,}"
        f" rows ({reservations[1] / n:,.0f} per number) |",
        f"| ledger events appended | {sum(result.events.values()):,}"
        f" ({', '.join(f'{k} {v:,}' for k, v in sorted(result.events.items()))}) |",
        f"| checks | {'all passed' if not result.checks else '; '.join(result.checks)} |",
        "",
        "| process | CPU s | cores (CPU s / wall s) | CPU ms per number |",
        "|---|---|---|---|",
    ]
    for name, seconds in _cpu_rows(result):
        lines.append(f"| {name} | {seconds:.1f} | {seconds / wall:.2f} | {seconds * 1000 / n:.2f} |")
    lines.append(f"| **all but other** | **{total_cpu:.1f}** | **{total_cpu / wall:.2f}**"
                 f" of {m['cores']} | **{total_cpu * 1000 / n:.2f}** |")
    lines += [
        "",
        "`postgres` is the backends of the benchmark's database plus the shared server processes"
        " (WAL writer, checkpointer…); `mariadb` is the whole `mariadbd`; the agents' CPU includes"
        " their start-up; `other` is everything else the machine did meanwhile (neighbours used"
        f" {result.neighbours:.2f} cores just before the run).",
        "",
        "**What bounds it.** " + bound_text(result),
    ]
    if result.profiles:
        lines += ["", "**Profile** (py-spy, 100 Hz, attached to the processes of the same run;"
                  " `--format raw`, summarised):", ""]
        for prof in result.profiles.values():
            lines += [f"*{prof.name}*: {prof.samples:,} samples, of which {_pct(prof.waiting, prof.samples)}"
                      " in the event loop's poll (asleep, or woken and waiting for a core); the"
                      f" other {prof.busy:,} by what they were doing (first matching frame of"
                      " the stack):", "",
                      "| where | share |", "|---|---|"]
            lines += [f"| {label} | {_pct(count, prof.busy)} |"
                      for label, count in prof.activities.most_common(10)
                      if count >= 0.005 * prof.busy]
            layers = ", ".join(f"{label} {_pct(count, prof.busy)}"
                               for label, count in prof.layers.most_common(6))
            leaves = ", ".join(f"`{label}` {_pct(count, prof.busy)}"
                               for label, count in prof.leaves.most_common(4))
            lines += ["", f"Innermost frame by layer: {layers}. Hottest functions: {leaves}.", ""]
        lines += ["`_SelectorSocketTransport.write`, `Connection._do_execute` and"
                  " `StreamWriter._writelines` are where a process sends on a socket: on loopback"
                  " the kernel delivers the data and wakes the receiver inside that call, so their"
                  " share is the cost of round trips (MySQL statements, HTTP requests, PostgreSQL"
                  " calls), not of Python code."]
    elif profile_requested:
        lines += ["", f"Profile: failed ({'; '.join(result.profile_errors)})."]
    lines += [
        "",
        "Reproduce: `.venv/bin/python -m bench.agent_numbering --profile` (about 5 minutes;"
        " PostgreSQL on 127.0.0.1:5432 or `DATABASE_URL`, MariaDB on 127.0.0.1:3306 or"
        " `CONCORD_TEST_MYSQL_URL`, `.venv/bin/pip install py-spy` for `--profile`; rewrites this"
        " block). `--invoices N` for another size, `--preload N` for another history (0: fresh"
        " stores and ledger), `--quick` for 1,500 invoices on 3,000 numbered documents printed"
        " only, `--pg-set name=value` to try a PostgreSQL setting on the benchmark's database.",
    ]
    return "\n".join(lines)


def bound_text(result: Result) -> str:
    wall, n = result.wall, result.invoices
    cores = float(result.machine["cores"] or 2)
    used = sum(v for k, v in result.cpu.items() if k != "other") / wall
    busy = used + result.cpu.get("other", 0.0) / wall
    writer_busy = result.writer.get("seconds", 0.0) / wall
    tx = max(result.writer.get("transactions", 0.0), 1.0)
    commands = result.writer.get("commands", 0.0) / tx
    tx_ms = result.writer.get("seconds", 0.0) * 1000 / tx
    agent_core = max((v for k, v in result.cpu.items() if k.startswith("agent ")), default=0) / wall
    text = (f"The two cores were {100 * busy / cores:.0f}% busy ({used:.2f} cores by the measured"
            f" processes, {sum(v for k, v in result.cpu.items() if k != 'other') * 1000 / n:.1f} ms"
            f" of CPU per number); no agent used more than {agent_core:.2f} of a core. ")
    if writer_busy > 0.8:
        text += (f"The coordinator's ledger writer, which appends one transaction at a time, was"
                 f" busy {100 * writer_busy:.0f}% of the run: it is the bottleneck. Each of its"
                 f" transactions took {tx_ms:.1f} ms but carried only {commands:.1f} commands"
                 f" ({commands / 2:.1f} numbers, a number being a reserve and a confirm), because"
                 " each store's agent reserves one document at a time, in date order, so three"
                 " stores put at most three reserves (plus the relay's confirms) into a"
                 f" transaction. {n:,} numbers at {commands / 2:.1f} per transaction need about"
                 f" {n / (commands / 2):,.0f} transactions; at {tx_ms:.1f} ms that is"
                 f" {n / (commands / 2) * tx_ms / 1000:.0f} s. ")
        if result.functions:
            inside = sum(total for _, total in result.functions.values()) / tx
            text += (f"{inside:.1f} ms of each transaction is spent inside the ledger's"
                     " PostgreSQL functions. ")
        reservations = result.scans.get("reservations", (0, 0, 0))
        if reservations[1] > 50 * n:
            text += (f"PostgreSQL read {reservations[1]:,} rows of `reservations` in"
                     f" {reservations[0]:,} sequential scans: lookups by key scan the whole"
                     " table, so a transaction costs more the longer the ledger (the keys come"
                     " from `jsonb_array_elements`/`jsonb_to_recordset`, which the planner takes"
                     " for 100 rows, so a hash join over a sequential scan looks cheaper than"
                     " index probes). ")
    elif busy > 0.85 * cores:
        text += ("The run is CPU-bound: everything shares two cores, so numbers/s follow the CPU"
                 " a number costs across all processes. ")
    else:
        text += (f"Neither the cores nor the ledger writer ({100 * writer_busy:.0f}% busy) are"
                 " saturated: the rate is bounded by latency, each agent numbering one document"
                 f" at a time ({wall / (n / len(STORES)) * 1000:.1f} ms per document per store:"
                 " a reserve round trip, then one MySQL transaction). ")
    return text


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_numbering", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=None,
                        help="paid invoices across the three stores (default 10,000; 1,500 with --quick)")
    parser.add_argument("--preload", type=int, default=None,
                        help="documents the stores (and the ledger) already hold, numbered by"
                             " Concord before the run (default 100,000; 3,000 with --quick;"
                             " 0 for fresh stores and a fresh ledger)")
    parser.add_argument("--quick", action="store_true",
                        help="1,500 invoices on 3,000 numbered documents; print, do not write docs")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy on one agent and on the coordinator during the run")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds the agents get to finish (default 30 s + 12 ms per"
                             " invoice + 1 ms per preloaded document)")
    parser.add_argument("--pg-set", action="append", metavar="NAME=VALUE",
                        help="a PostgreSQL setting for the benchmark's database (ALTER DATABASE …"
                             " SET), e.g. plan_cache_mode=force_custom_plan; repeatable")
    parser.add_argument("--batch-size", type=int, default=AGENT_BATCH_SIZE,
                        help=f"the agents' CONCORD_AGENT_BATCH_SIZE (default {AGENT_BATCH_SIZE},"
                             " the agent's own default)")
    parser.add_argument("--output", type=Path, default=DOCS, help="the markdown file to rewrite")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the logs and profiles (printed path)")
    args = parser.parse_args(argv)
    if args.invoices is None:
        args.invoices = 1500 if args.quick else 10_000
    if args.preload is None:
        args.preload = 3000 if args.quick else PRELOAD
    if args.preload < 0:
        parser.error("--preload must be 0 or more")
    if args.invoices < len(STORES):
        parser.error("--invoices must be at least 3")
    if args.timeout is None:
        args.timeout = 30 + 0.012 * args.invoices + 0.001 * args.preload
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # asyncmy logs every MySQL warning; loading WHMCS rows in WHMCS's sql_mode gives many.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    # SIGTERM as Ctrl-C: the run is cancelled and its clean-up (processes, databases) runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="concord-bench-agent-"))
    try:
        with admin_url() as (pg_admin, _where):
            result = asyncio.run(run(args.invoices, pg_admin, args.profile, args.timeout, workdir,
                                     args.pg_set, args.preload, args.batch_size))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        print(f"logs kept in {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        shutil.rmtree(workdir, ignore_errors=True)
        print("interrupted; processes stopped and databases dropped", file=sys.stderr)
        return 130
    block = render(result, profile_requested=args.profile)
    print(block)
    print("\nPostgreSQL scans (sequential scans, rows read by them, index scans):",
          ", ".join(f"{name} {v[0]:,}/{v[1]:,}/{v[2]:,}" for name, v in sorted(result.scans.items())))
    if result.functions:
        print("PostgreSQL functions (calls, ms per call):", ", ".join(
            f"{name} {calls:,} {total / max(calls, 1):.2f}"
            for name, (calls, total) in sorted(result.functions.items())))
    if args.keep:
        print(f"\nlogs and profiles in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.checks:
        print("\nchecks failed: " + "; ".join(result.checks), file=sys.stderr)
        return 1
    if not (args.quick or args.no_write):
        write_section(args.output, TITLE, BEGIN, END, block.split("\n"))
        print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

