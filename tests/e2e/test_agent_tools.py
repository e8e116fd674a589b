"""The agent's tools as an operator uses them, against a real coordinator and real MariaDB.

Every test runs ``python -m coordinator serve`` on a fresh PostgreSQL database, registers
stores through ``POST /v1/peers``, gives each a MariaDB database with the WHMCS schema, and
runs the agent as a user does (``python -m agent serve | check | backfill``):

* the PHP hook (``agent/whmcs/hooks/concord.php``, run by php-cli in a harness that stands in
  for WHMCS) numbers an invoice before its email, and never blocks WHMCS when the agent
  refuses it, is down, or hangs;
* ``concord-agent backfill`` imports documents numbered before Concord exactly once, and
  raises ``import_collision`` for a number the ledger already holds;
* ``concord-agent check`` prints one clear line per problem and exits 1, or "all checks
  passed" and exits 0;
* a change of an issued document in WHMCS reaches the ledger as ``DocumentUpdated``;
* heartbeats raise and resolve ``whmcs_sequential_numbering`` and ``peer_silent``;
* WHMCS's ``configuration.php`` is read as PHP reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from agent.client import CoordinatorClient
from agent.whmcs.database import MysqlTarget, read_configuration_php
from getfeed.snapshot import document
from simulator.generator import StoreGenerator
from simulator.whmcs import (
    MySQLURL,
    connection,
    create_invoice,
    fetch_all,
    fetch_invoice,
    load_store,
    mark_paid,
    parse_mysql_url,
    set_config,
    set_status,
    update_invoice,
)
from tests.conftest import Tokens, bearer
from tests.support.agent_process import AgentProcess
from tests.support.coordinator_process import CoordinatorProcess
from tests.support.mysql_fixtures import REQUIRE_VARIABLE, WhmcsDatabaseFactory
from tests.support.service_process import free_port

HOOK_FILE = Path(__file__).resolve().parents[2] / "agent" / "whmcs" / "hooks" / "concord.php"
HOOK_TOKEN = "hook-secret-for-tests"
SEED = 20250115
INVOICE_TABLES = ("tblinvoices", "tblinvoiceitems", "tblaccounts", "mod_invoicedata")
# The agent numbers, confirms and reports only through its loops: these keep it idle, so
# that whatever happens to an invoice can only come from the hook.
IDLE_LOOPS = {
    "CONCORD_AGENT_POLL_SECONDS": "300",
    "CONCORD_AGENT_RECONCILE_SECONDS": "3600",
    "CONCORD_AGENT_UPDATE_SCAN_SECONDS": "60",
}

T = TypeVar("T")


# -- the coordinator and its stores ----------------------------------------------------------


@dataclass
class Coordinator:
    process: CoordinatorProcess
    tokens: Tokens

    @property
    def url(self) -> str:
        return self.process.url

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = bearer(token or self.tokens.operator)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
            http.request(method, self.url + path, json=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json(content_type=None)

    async def register_store(self, name: str) -> Peer:
        status, body = await self.call("POST", "/v1/peers", {"name": name, "url": "http://127.0.0.1:8701"})
        assert status == 201, body
        return Peer(name, body["peer_id"], body["token"])

    async def events(self, *types: str) -> list[dict[str, Any]]:
        """The whole ledger in order (only events of ``types`` when given)."""
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            status, body = await self.call(
                "GET", f"/v1/events?after={after}&limit=1000", token=self.tokens.reader
            )
            assert status == 200, body
            if not body["events"]:
                return [e for e in found if not types or e["type"] in types]
            found += body["events"]
            after = body["events"][-1]["position"]

    async def warnings(self, state: str) -> list[dict[str, Any]]:
        status, body = await self.call("GET", f"/v1/warnings?state={state}", token=self.tokens.reader)
        assert status == 200, body
        return body["warnings"]

    async def has_warning(self, state: str, code: str, subject: str) -> bool:
        return any(w["code"] == code and w["subject"] == subject for w in await self.warnings(state))


@dataclass(frozen=True)
class Peer:
    name: str
    peer_id: str
    token: str


@contextlib.asynccontextmanager
async def running_coordinator(
    database_url: str, tokens: Tokens, data_dir: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Coordinator]:
    process = CoordinatorProcess(database_url, data_dir, "coordinator", env=env)
    try:
        await process.start()
        yield Coordinator(process, tokens)
    finally:
        process.stop()


@pytest.fixture
async def coordinator(database_url: str, tokens: Tokens, tmp_path: Path) -> AsyncIterator[Coordinator]:
    async with running_coordinator(database_url, tokens, tmp_path) as running:
        yield running


def agent_env(whmcs_url: str, coordinator_url: str, peer: Peer, **extra: str) -> dict[str, str]:
    return {
        "CONCORD_AGENT_WHMCS_URL": whmcs_url,
        "CONCORD_AGENT_COORDINATOR_URL": coordinator_url,
        "CONCORD_AGENT_TOKEN": peer.token,
        "CONCORD_AGENT_STORE": peer.name,
        "CONCORD_AGENT_LOG_LEVEL": "warning",
        **extra,
    }


def run_agent_command(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """``python -m agent ARGS`` with only the given CONCORD_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def agent_command(args: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_agent_command, args, env)


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float, what: str) -> tuple[T, float]:
    """Poll ``probe`` until it returns something truthy; returns it and the seconds it took."""
    started = time.monotonic()
    while True:
        found = await probe()
        elapsed = time.monotonic() - started
        if found:
            return found, elapsed
        if elapsed > within:
            raise AssertionError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(0.1)


def store_without_documents(generator: StoreGenerator) -> dict[str, list[dict[str, Any]]]:
    """A store's clients, currencies, custom fields and settings; no documents yet."""
    return {table: ([] if table in INVOICE_TABLES else rows) for table, rows in generator.base().items()}


async def empty_store(make_whmcs: WhmcsDatabaseFactory, name: str) -> tuple[str, StoreGenerator]:
    generator = StoreGenerator(SEED, name, clients=8, invoices=40)
    url = make_whmcs()
    async with connection(url) as conn:
        await load_store(conn, store_without_documents(generator))
    return url, generator


async def paid_invoice(whmcs_url: str, generator: StoreGenerator) -> int:
    """An invoice created and paid in full, as WHMCS does it; returns its id."""
    async with connection(whmcs_url) as conn:
        invoice_id = await create_invoice(conn, generator.new_invoice(status="Unpaid"))
        await mark_paid(conn, invoice_id)
    return invoice_id


async def invoicenum(whmcs_url: str, invoice_id: int) -> str:
    async with connection(whmcs_url) as conn:
        return str((await fetch_invoice(conn, invoice_id))["invoicenum"])


def line_with(lines: Sequence[str], *words: str) -> bool:
    return any(all(word in line for word in words) for line in lines)


# -- 1. the PHP hook ---------------------------------------------------------------------------

# Stands in for WHMCS: defines WHMCS, records add_hook closures, prints logActivity, includes
# the hook file, runs the closures of one hook and reports as JSON what happened.
PHP_HARNESS = r"""<?php
define('WHMCS', true);
$hooks = [];
$activity = [];
function add_hook($name, $priority, $callback) {
    global $hooks;
    $hooks[$name][] = $callback;
}
function logActivity($message) {
    global $activity;
    $activity[] = $message;
}
require $argv[1];
$started = microtime(true);
foreach ($hooks[$argv[2]] ?? [] as $callback) {
    $callback(['invoiceid' => (int) $argv[3]]);
}
echo json_encode([
    'registered' => array_map('count', $hooks),
    'activity' => $activity,
    'seconds' => microtime(true) - $started,
]);
"""


@dataclass(frozen=True)
class HookRun:
    exit_code: int
    registered: dict[str, int]
    activity: list[str]
    seconds: float
    stderr: str


@pytest.fixture(scope="module")
def php() -> str:
    """php-cli with curl; skipped (with one line) when absent, unless CI requires it."""
    found = shutil.which("php")
    problem = "php-cli not found on PATH"
    if found:
        probe = subprocess.run(
            [found, "-r", "exit(function_exists('curl_init') ? 0 : 3);"], capture_output=True, timeout=30
        )
        problem = "" if probe.returncode == 0 else "php-cli has no curl extension (php-curl)"
    if problem:
        message = f"PHP hook tests need php-cli with curl: {problem}"
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{message}; {REQUIRE_VARIABLE}=1 requires it", pytrace=False)
        pytest.skip(message)
    assert found is not None
    return found


@pytest.fixture
def run_hook(php: str, tmp_path: Path) -> Callable[..., Awaitable[HookRun]]:
    harness = tmp_path / "whmcs_harness.php"
    harness.write_text(PHP_HARNESS)

    async def run(hook: str, invoice_id: int, agent_url: str, token: str) -> HookRun:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        env.update({"CONCORD_AGENT_URL": agent_url, "CONCORD_AGENT_HOOK_TOKEN": token})
        started = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run,
            [php, str(harness), str(HOOK_FILE), hook, str(invoice_id)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        wall = time.monotonic() - started
        assert done.stdout.strip(), f"the harness printed nothing; stderr: {done.stderr}"
        report = json.loads(done.stdout)
        return HookRun(
            done.returncode,
            report["registered"],
            report["activity"],
            max(wall, float(report["seconds"])),
            done.stderr,
        )

    return run


async def numbering_rounds(agent: AgentProcess, *, at_least: int) -> int:
    """The numbering rounds the agent has finished (its /healthz), once at least ``at_least``."""
    deadline = asyncio.get_running_loop().time() + 15
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{agent.url}/healthz") as resp:
                rounds = (await resp.json())["numbering_rounds"]
            if rounds >= at_least:
                return rounds
            assert asyncio.get_running_loop().time() < deadline, f"{rounds} rounds after 15 s"
            await asyncio.sleep(0.05)


async def test_php_hook_numbers_the_invoice_before_whmcs_emails_it(
    coordinator: Coordinator,
    whmcs_database_factory: WhmcsDatabaseFactory,
    run_hook: Callable[..., Awaitable[HookRun]],
    tmp_path: Path,
) -> None:
    peer = await coordinator.register_store("hooked")
    whmcs_url, generator = await empty_store(whmcs_database_factory, "hooked")
    agent = AgentProcess(
        "hooked",
        whmcs_url,
        coordinator.url,
        peer.token,
        tmp_path,
        env={**IDLE_LOOPS, "CONCORD_AGENT_HOOK_TOKEN": HOOK_TOKEN},
    )
    await agent.start()
    try:
        # Its start-up rounds (the numbering loop's and the reconciliation's) are behind it.
        await numbering_rounds(agent, at_least=2)
        invoice_id = await paid_invoice(whmcs_url, generator)
        assert await invoicenum(whmcs_url, invoice_id) == "", "the idle agent numbered it"

        run = await run_hook("InvoicePaidPreEmail", invoice_id, agent.url, HOOK_TOKEN)

        assert run.exit_code == 0, run.stderr
        assert run.registered == {"InvoicePaidPreEmail": 1, "InvoiceCreationPreEmail": 1}
        assert run.activity == []
        # When php returns, the number is in WHMCS: the email WHMCS composes next shows it;
        # the hook numbered it, not a round of the loop.
        number = await invoicenum(whmcs_url, invoice_id)
        assert await numbering_rounds(agent, at_least=2) == 2
        status, listed = await coordinator.call("GET", "/v1/reservations")
        assert status == 200, listed
        ledger = [
            r
            for r in listed["reservations"]
            if r["peer_id"] == peer.peer_id and r["doc_id"] == str(invoice_id)
        ]
        assert [r["formatted"] for r in ledger] == [number] and number == "1"

        # The relay confirms it right after, without waiting for its 300 s poll.
        async def issued() -> list[dict[str, Any]]:
            return [
                e for e in await coordinator.events("NumberIssued") if e["data"]["doc_id"] == str(invoice_id)
            ]

        (event,), _ = await eventually(issued, 10, "NumberIssued after the hook")
        assert event["data"]["document"]["DocData"]["Num"] == number

        # The hook again (WHMCS re-sends the email): same number, nothing new in the ledger.
        again = await run_hook("InvoicePaidPreEmail", invoice_id, agent.url, HOOK_TOKEN)
        assert again.exit_code == 0 and again.activity == []
        assert await invoicenum(whmcs_url, invoice_id) == number
        assert len(await coordinator.events("NumberReserved")) == 1
    finally:
        agent.stop()


async def test_php_hook_never_blocks_whmcs(
    coordinator: Coordinator,
    whmcs_database_factory: WhmcsDatabaseFactory,
    run_hook: Callable[..., Awaitable[HookRun]],
    tmp_path: Path,
) -> None:
    peer = await coordinator.register_store("guarded")
    whmcs_url, generator = await empty_store(whmcs_database_factory, "guarded")
    agent = AgentProcess(
        "guarded",
        whmcs_url,
        coordinator.url,
        peer.token,
        tmp_path,
        env={**IDLE_LOOPS, "CONCORD_AGENT_HOOK_TOKEN": HOOK_TOKEN},
    )
    await agent.start()
    try:
        invoice_id = await paid_invoice(whmcs_url, generator)

        refused = await run_hook("InvoicePaidPreEmail", invoice_id, agent.url, "wrong-token")
        assert refused.exit_code == 0, refused.stderr
        assert refused.seconds < 3
        assert len(refused.activity) == 1 and "HTTP 401" in refused.activity[0]
        assert f"invoice {invoice_id}" in refused.activity[0]
        assert await invoicenum(whmcs_url, invoice_id) == ""

        # Installed without its token: nothing is sent, but the admin can see why.
        unset = await run_hook("InvoicePaidPreEmail", invoice_id, agent.url, "")
        assert unset.exit_code == 0, unset.stderr
        assert len(unset.activity) == 1 and "CONCORD_AGENT_HOOK_TOKEN" in unset.activity[0]
        assert await invoicenum(whmcs_url, invoice_id) == ""
    finally:
        agent.stop()

    # Nobody listening where the agent should be.
    down = await run_hook("InvoicePaidPreEmail", invoice_id, agent.url, HOOK_TOKEN)
    assert down.exit_code == 0, down.stderr
    assert down.seconds < 3
    assert len(down.activity) == 1 and "failed" in down.activity[0]
    assert await invoicenum(whmcs_url, invoice_id) == ""

    # An agent that accepts the connection and never answers: WHMCS waits at most the
    # hook's timeout (5 s), then sends its email.
    with contextlib.closing(socket.socket()) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        hung_url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        stuck = await run_hook("InvoicePaidPreEmail", invoice_id, hung_url, HOOK_TOKEN)
    assert stuck.exit_code == 0, stuck.stderr
    assert 4 < stuck.seconds < 8
    assert len(stuck.activity) == 1 and "failed" in stuck.activity[0]


# -- 2. backfill -------------------------------------------------------------------------------


async def numbered_documents(whmcs_url: str) -> dict[str, tuple[str, str, date]]:
    """doc_id -> (doctype by the default rule, invoicenum, date) of every numbered row."""
    async with connection(whmcs_url) as conn:
        rows = await fetch_all(
            conn, "SELECT id, invoicenum, total, date FROM tblinvoices WHERE invoicenum <> '' ORDER BY id"
        )
    return {
        str(r["id"]): ("creditnote" if r["total"] < 0 else "invoice", r["invoicenum"], r["date"])
        for r in rows
    }


async def imported_by(coordinator: Coordinator, peer: Peer) -> dict[str, tuple[str, str]]:
    events = [
        e["data"]
        for e in await coordinator.events("DocumentImported")
        if e["data"]["peer_id"] == peer.peer_id
    ]
    found = {d["doc_id"]: (d["doctype"], d["formatted"]) for d in events}
    assert len(found) == len(events), "a document was imported twice"
    return found


def imported_counts(stdout: str) -> str:
    return stdout.strip().splitlines()[-1] if stdout.strip() else ""


async def issue_through_api(
    coordinator: Coordinator, peer: Peer, generator: StoreGenerator, doc_id: str
) -> str:
    """A number the ledger issued to ``peer`` for a document; returns its formatted number."""
    rows = generator.new_invoice(status="Paid")
    invoice = {**rows.invoice, "id": int(doc_id)}
    items = [{**item, "id": n} for n, item in enumerate(rows.items, start=1)]
    async with CoordinatorClient(coordinator.url, peer.token) as client:
        reservation = await client.reserve("invoice", doc_id, invoice["date"])
        snapshot = document("invoice", reservation["formatted"], invoice, items, {}, rows.snapshot, [])
        await client.confirm(reservation["reservation_id"], snapshot)
    return str(reservation["formatted"])


@pytest.mark.slow
async def test_backfill_imports_earlier_numbers_once_and_flags_collisions(
    coordinator: Coordinator, whmcs_database_factory: WhmcsDatabaseFactory
) -> None:
    numbered_until = date(2024, 7, 1)
    since = date(2024, 1, 1)
    alpha = await coordinator.register_store("alpha")
    alpha_url = whmcs_database_factory(
        StoreGenerator(SEED, "alpha", clients=8, invoices=60, numbered_until=numbered_until)
    )
    alpha_env = agent_env(alpha_url, coordinator.url, alpha)
    alpha_docs = await numbered_documents(alpha_url)
    recent = {i: (t, n) for i, (t, n, d) in alpha_docs.items() if d >= since}
    assert 0 < len(recent) < len(alpha_docs), "the store needs numbers before and after --since"

    # --since: only documents dated from that day.
    first = await agent_command(["backfill", "--since", since.isoformat()], alpha_env)
    assert first.returncode == 0, first.stderr
    assert await imported_by(coordinator, alpha) == recent
    assert f"imported {len(recent)}," in imported_counts(first.stdout)

    # Then everything else, with progress on stderr.
    second = await agent_command(["backfill"], alpha_env)
    assert second.returncode == 0, second.stderr
    rest = len(alpha_docs) - len(recent)
    assert "backfill" in second.stderr and f"{rest}/{rest}" in second.stderr, second.stderr
    assert f"imported {rest}, already known 0, collisions 0" in imported_counts(second.stdout)
    assert await imported_by(coordinator, alpha) == {i: (t, n) for i, (t, n, _) in alpha_docs.items()}

    # Again: nothing new.
    third = await agent_command(["backfill", "--quiet"], alpha_env)
    assert third.returncode == 0, third.stderr
    assert "imported 0," in imported_counts(third.stdout)
    assert len(await coordinator.events("DocumentImported")) == len(alpha_docs)

    # Bravo numbered with WHMCS's own sequence too: many of its numbers are alpha's. One
    # more invoice carries a number the ledger issued through Concord.
    issued = await issue_through_api(coordinator, alpha, StoreGenerator(SEED, "alpha"), "9001")
    bravo = await coordinator.register_store("bravo")
    bravo_generator = StoreGenerator(SEED, "bravo", clients=8, invoices=60, numbered_until=numbered_until)
    bravo_url = whmcs_database_factory(bravo_generator)
    async with connection(bravo_url) as conn:
        duplicate_id = await create_invoice(
            conn, bravo_generator.new_invoice(status="Paid", invoicenum=issued, date=date(2025, 1, 10))
        )
    bravo_env = agent_env(bravo_url, coordinator.url, bravo)
    bravo_docs = await numbered_documents(bravo_url)
    taken = {n for _, n, _ in alpha_docs.values()} | {issued}
    clashing = {i for i, (_, n, _) in bravo_docs.items() if n in taken}
    assert str(duplicate_id) in clashing and len(clashing) > 1

    clash_run = await agent_command(["backfill"], bravo_env)
    assert clash_run.returncode == 0, clash_run.stderr
    assert f"collisions {len(clashing)}" in imported_counts(clash_run.stdout)
    assert await imported_by(coordinator, bravo) == {
        i: (t, n) for i, (t, n, _) in bravo_docs.items() if i not in clashing
    }
    open_warnings = [w for w in await coordinator.warnings("open") if w["code"] == "import_collision"]
    assert {w["subject"] for w in open_warnings} == {
        f"{bravo.peer_id}/{bravo_docs[i][0]}/{i}" for i in clashing
    }
    ours = next(w for w in open_warnings if w["subject"].endswith(f"/{duplicate_id}"))
    assert issued in ours["message"] and "store alpha" in ours["message"]

    # A second run neither imports the clashing documents nor raises their warnings again.
    raised_before = len(await coordinator.events("WarningRaised"))
    repeat = await agent_command(["backfill", "--quiet"], bravo_env)
    assert repeat.returncode == 0, repeat.stderr
    assert "imported 0," in imported_counts(repeat.stdout)
    assert len(await coordinator.events("WarningRaised")) == raised_before

    # No formatted number belongs to two documents of the ledger.
    numbers = [e["data"]["formatted"] for e in await coordinator.events("DocumentImported", "NumberIssued")]
    assert len(numbers) == len(set(numbers))


async def test_backfill_names_an_unreachable_database_in_one_line() -> None:
    closed = str(MySQLURL(port=free_port(), database="whmcs"))
    done = await agent_command(["backfill"], agent_env(closed, "http://127.0.0.1:9", Peer("x", "", "token")))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("concord-agent:"), done.stderr


# -- 3. check ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    exit_code: int
    lines: list[str]
    stderr: str


async def run_check(env: Mapping[str, str]) -> CheckResult:
    done = await agent_command(["check"], env)
    return CheckResult(done.returncode, done.stdout.strip().splitlines(), done.stderr)


async def scratch_store(make_whmcs: WhmcsDatabaseFactory, sql: Sequence[str] = ()) -> str:
    url, _ = await empty_store(make_whmcs, "scratch")
    async with connection(url) as conn, conn.cursor() as cursor:
        for statement in sql:
            await cursor.execute(statement)
    return url


async def test_check_passes_on_a_healthy_setup(
    coordinator: Coordinator, whmcs_database_factory: WhmcsDatabaseFactory
) -> None:
    peer = await coordinator.register_store("healthy")
    whmcs_url, _ = await empty_store(whmcs_database_factory, "healthy")
    result = await run_check(agent_env(whmcs_url, coordinator.url, peer))
    assert (result.exit_code, result.lines) == (0, ["all checks passed"]), result.stderr
    # It created the agent's own tables, as serve does.
    async with connection(whmcs_url) as conn:
        tables = await fetch_all(conn, "SHOW TABLES LIKE 'mod_concord_%'")
    assert len(tables) == 4  # outbox, receipts, documents, vies


@pytest.mark.slow
async def test_check_names_each_database_problem_on_one_line(
    coordinator: Coordinator, whmcs_database_factory: WhmcsDatabaseFactory
) -> None:
    peer = await coordinator.register_store("broken")
    missing_table = await scratch_store(whmcs_database_factory, ["DROP TABLE tblcustomfields"])
    missing_column = await scratch_store(
        whmcs_database_factory, ["ALTER TABLE tblinvoices DROP COLUMN taxrate2"]
    )
    # The agent reads tblclients.tax_id (the 8.x VAT number) into every snapshot.
    missing_tax_id = await scratch_store(
        whmcs_database_factory, ["ALTER TABLE tblclients DROP COLUMN tax_id"]
    )
    # Without tblinvoices nothing else about it (such as privileges) can be said.
    missing_invoices = await scratch_store(whmcs_database_factory, ["DROP TABLE tblinvoices"])
    sequential = await scratch_store(whmcs_database_factory)
    async with connection(sequential) as conn:
        await set_config(conn, "SequentialInvoiceNumbering", "on")
    # WHMCS's second series writes invoicenum when a Draft is published: the agent would
    # then find those invoices numbered already and never give them a Concord number.
    custom_numbering = await scratch_store(whmcs_database_factory)
    async with connection(custom_numbering) as conn:
        await set_config(conn, "TaxCustomInvoiceNumbering", "on")
    closed_port = str(MySQLURL(port=free_port(), database="whmcs"))

    cases = {
        "unreachable": (closed_port, ("WHMCS database", "unreachable")),
        "missing table": (missing_table, ("tblcustomfields", "missing")),
        "missing column": (missing_column, ("tblinvoices.taxrate2", "missing")),
        "missing tax_id": (missing_tax_id, ("tblclients.tax_id", "missing")),
        "missing tblinvoices": (missing_invoices, ("tblinvoices", "missing")),
        "sequential numbering": (sequential, ("sequential invoice numbering is on",)),
        "custom numbering": (custom_numbering, ("TaxCustomInvoiceNumbering",)),
    }
    results = await asyncio.gather(
        *(run_check(agent_env(url, coordinator.url, peer)) for url, _ in cases.values())
    )
    wrong = {
        name: (result.exit_code, result.lines, result.stderr[-500:])
        for (name, (_, words)), result in zip(cases.items(), results, strict=True)
        if not (result.exit_code == 1 and len(result.lines) == 1 and line_with(result.lines, *words))
    }
    assert wrong == {}


async def test_check_names_a_missing_privilege(
    coordinator: Coordinator, whmcs_database_factory: WhmcsDatabaseFactory, mysql_admin_url: str
) -> None:
    peer = await coordinator.register_store("readonly")
    whmcs_url = await scratch_store(whmcs_database_factory)
    root = await agent_command(["check"], agent_env(whmcs_url, coordinator.url, peer))
    assert root.returncode == 0, root.stdout + root.stderr  # creates the mod_concord_* tables
    database = parse_mysql_url(whmcs_url).database
    user, password = f"ro_{uuid.uuid4().hex[:10]}", "read-only-pass"
    async with connection(mysql_admin_url) as conn, conn.cursor() as cursor:
        await cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        try:
            # Everything the agent needs except writing tblinvoices.invoicenum.
            await cursor.execute(f"GRANT SELECT, CREATE ON `{database}`.* TO %s@'%%'", (user,))
            for table in ("mod_concord_outbox", "mod_concord_receipts", "mod_concord_documents"):
                await cursor.execute(
                    f"GRANT INSERT, UPDATE, DELETE ON `{database}`.`{table}` TO %s@'%%'", (user,)
                )
            readonly_url = str(replace(parse_mysql_url(whmcs_url), user=user, password=password))
            result = await run_check(agent_env(readonly_url, coordinator.url, peer))
        finally:
            await cursor.execute("DROP USER %s@'%%'", (user,))
    assert result.exit_code == 1, result.lines
    assert len(result.lines) == 1 and line_with(result.lines, "privilege", "UPDATE", "tblinvoices"), (
        result.lines
    )


async def test_check_names_each_coordinator_problem_on_one_line(
    coordinator: Coordinator, whmcs_database_factory: WhmcsDatabaseFactory
) -> None:
    peer = await coordinator.register_store("lonely")
    whmcs_url, _ = await empty_store(whmcs_database_factory, "lonely")
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable, refused, operator = await asyncio.gather(
        run_check(agent_env(whmcs_url, nowhere, peer)),
        run_check(agent_env(whmcs_url, coordinator.url, Peer(peer.name, peer.peer_id, "bogus"))),
        # The operator token `concord serve` printed, pasted where the store's belongs: it
        # may read the series, but the agent could not reserve a single number with it.
        run_check(
            agent_env(whmcs_url, coordinator.url, Peer(peer.name, peer.peer_id, coordinator.tokens.operator))
        ),
    )
    assert unreachable.exit_code == 1 and len(unreachable.lines) == 1, unreachable
    assert line_with(unreachable.lines, "coordinator", nowhere, "unreachable")
    assert refused.exit_code == 1 and len(refused.lines) == 1, refused
    assert line_with(refused.lines, "refused the token", "CONCORD_AGENT_TOKEN")
    assert operator.exit_code == 1 and len(operator.lines) == 1, operator
    assert line_with(operator.lines, "CONCORD_AGENT_TOKEN", "operator", "store")


# -- 4. DocumentUpdated --------------------------------------------------------------------------


@pytest.mark.slow
async def test_changes_of_an_issued_invoice_reach_the_ledger_within_seconds(
    coordinator: Coordinator, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    peer = await coordinator.register_store("changing")
    whmcs_url, generator = await empty_store(whmcs_database_factory, "changing")
    agent = AgentProcess(
        "changing",
        whmcs_url,
        coordinator.url,
        peer.token,
        tmp_path,
        env={"CONCORD_AGENT_UPDATE_SCAN_SECONDS": "1"},
    )
    await agent.start()
    try:
        invoice_id = await paid_invoice(whmcs_url, generator)
        doc_id = str(invoice_id)

        async def documents(event_type: str) -> list[dict[str, Any]]:
            return [
                e["data"]["document"]
                for e in await coordinator.events(event_type)
                if e["data"]["doc_id"] == doc_id
            ]

        (issued,), _ = await eventually(lambda: documents("NumberIssued"), 15, "NumberIssued")
        assert issued["DocData"]["Status"] == "Paid"

        async with connection(whmcs_url) as conn:
            await set_status(conn, invoice_id, "Refunded")

        async def refunded() -> list[dict[str, Any]]:
            return [d for d in await documents("DocumentUpdated") if d["DocData"]["Status"] == "Refunded"]

        _, status_seconds = await eventually(refunded, 5, "DocumentUpdated with Refunded")

        async with connection(whmcs_url) as conn:
            row = await fetch_invoice(conn, invoice_id)
            credit = Decimal("2.50")
            await update_invoice(
                conn, invoice_id, {"credit": row["credit"] + credit, "total": row["total"] - credit}
            )
        expected_credit = f"{row['credit'] + credit:.2f}"
        expected_total = f"{row['total'] - credit:.2f}"

        async def recredited() -> list[dict[str, Any]]:
            return [
                d
                for d in await documents("DocumentUpdated")
                if (d["DocData"]["Credit"], d["DocData"]["Total"]) == (expected_credit, expected_total)
            ]

        (latest,), total_seconds = await eventually(recredited, 5, "DocumentUpdated with credit")
        assert latest["DocData"]["Status"] == "Refunded"
        assert latest["DocData"]["Num"] == issued["DocData"]["Num"]
        assert max(status_seconds, total_seconds) < 5
    finally:
        agent.stop()
    assert "job_crashed" not in agent.log_text()


# -- 5. heartbeat drift ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_heartbeats_raise_and_resolve_drift_and_silence(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    async with running_coordinator(
        database_url, tokens, tmp_path, env={"CONCORD_HEARTBEAT_SECONDS": "1"}
    ) as coordinator:
        peer = await coordinator.register_store("drifting")
        whmcs_url, _ = await empty_store(whmcs_database_factory, "drifting")
        agent = AgentProcess(
            "drifting",
            whmcs_url,
            coordinator.url,
            peer.token,
            tmp_path,
            env={"CONCORD_AGENT_HEARTBEAT_SECONDS": "1"},
        )
        await agent.start()
        try:

            def warning(state: str, code: str) -> Callable[[], Awaitable[bool]]:
                return lambda: coordinator.has_warning(state, code, peer.peer_id)

            async with connection(whmcs_url) as conn:
                await set_config(conn, "SequentialInvoiceNumbering", "on")
            await eventually(
                warning("open", "whmcs_sequential_numbering"), 6, "whmcs_sequential_numbering raised"
            )
            async with connection(whmcs_url) as conn:
                await set_config(conn, "SequentialInvoiceNumbering", "")
            await eventually(
                warning("resolved", "whmcs_sequential_numbering"), 6, "whmcs_sequential_numbering resolved"
            )
            assert not await coordinator.has_warning("open", "whmcs_sequential_numbering", peer.peer_id)
            assert not await coordinator.has_warning("open", "peer_silent", peer.peer_id)

            agent.kill()
            _, silent_after = await eventually(warning("open", "peer_silent"), 10, "peer_silent raised")
            await agent.start()
            await eventually(warning("resolved", "peer_silent"), 6, "peer_silent resolved")
            assert not await coordinator.has_warning("open", "peer_silent", peer.peer_id)
        finally:
            agent.stop()
    # Three missed one-second heartbeats, not fewer.
    assert silent_after >= 2


# -- 6. configuration.php ------------------------------------------------------------------------


def php_single_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def configuration_php(*, host: str, port: str, user: str, password: str, database: str) -> str:
    """A configuration.php as the WHMCS installer writes it (plus what admins add)."""
    return textwrap.dedent(f"""\
        <?php
        $license = 'WHMCS-1a2b3c4d5e6f';
        $db_host = {php_single_quoted(host)};
        $db_port = {php_single_quoted(port)};
        $db_username = {php_single_quoted(user)};
        $db_password = {php_single_quoted(password)};
        $db_name = {php_single_quoted(database)};
        $db_tls_ca = '';
        $db_tls_ca_path = '';
        $db_tls_cert = '';
        $db_tls_cipher = '';
        $db_tls_key = '';
        $db_tls_verify_cert = '';
        $cc_encryption_hash = 'kd83JdkS0aPq7Zs3XvB9mN1cLr4tYu6Wq2Ee5Rt8Yy0Uu3Ii';
        $templates_compiledir = 'templates_c';
        $mysql_charset = 'utf8mb4';
        $customadminpath = 'secure-admin';
        // $display_errors = true;
        """)


def test_configuration_php_is_read_as_php_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "configuration.php"
    password = 'Pa$$w0rd\'s "best"; #1 // not a comment \\ end'
    path.write_text(
        configuration_php(
            host="db.internal", port="3307", user="whmcs_live", password=password, database="whmcs_prod"
        )
    )
    assert read_configuration_php(path) == MysqlTarget(
        host="db.internal", port=3307, user="whmcs_live", password=password, database="whmcs_prod"
    )


def test_configuration_php_variants(tmp_path: Path) -> None:
    path = tmp_path / "configuration.php"
    # Port inside the host, an empty $db_port, double quotes.
    path.write_text(
        "<?php\n$db_host = \"10.0.0.7:3310\";\n$db_port = '';\n"
        '$db_username = "whmcs";\n$db_password = "say \\"hi\\"";\n'
        '$db_name = "billing";\n'
    )
    assert read_configuration_php(path) == MysqlTarget("10.0.0.7", 3310, "whmcs", 'say "hi"', "billing")
    # No password line at all; no port: MySQL's default.
    path.write_text("<?php\n$db_host = 'localhost';\n$db_username = 'root';\n$db_name = 'w';\n")
    assert read_configuration_php(path) == MysqlTarget("localhost", 3306, "root", "", "w")
    path.write_text("<?php\n$db_host = 'localhost';\n")
    with pytest.raises(ValueError, match=r"\$db_username, \$db_name"):
        read_configuration_php(path)


def test_configuration_php_ignores_commented_out_credentials(tmp_path: Path) -> None:
    path = tmp_path / "configuration.php"
    path.write_text(
        textwrap.dedent("""\
        <?php
        $db_host = 'localhost';
        $db_port = '3307';
        $db_username = 'whmcs';
        $db_password = 'current';
        $db_name = 'whmcs';
        // Before the move to the new server:
        // $db_password = 'old-password';
        # $db_host = 'old-db.example';
        /* $db_name = 'whmcs_old'; */
        """)
    )
    assert read_configuration_php(path) == MysqlTarget("localhost", 3307, "whmcs", "current", "whmcs")


def test_configuration_php_reads_a_port_written_as_a_number(tmp_path: Path) -> None:
    path = tmp_path / "configuration.php"
    path.write_text(
        "<?php\n$db_host = 'localhost';\n$db_port = 3307;\n"
        "$db_username = 'whmcs';\n$db_password = 'x';\n$db_name = 'whmcs';\n"
    )
    assert read_configuration_php(path).port == 3307


async def test_check_reads_the_credentials_from_configuration_php(
    coordinator: Coordinator,
    whmcs_database_factory: WhmcsDatabaseFactory,
    mysql_admin_url: str,
    tmp_path: Path,
    php: str,
) -> None:
    peer = await coordinator.register_store("configured")
    whmcs_url, _ = await empty_store(whmcs_database_factory, "configured")
    target = parse_mysql_url(whmcs_url)
    user, password = f"cfg_{uuid.uuid4().hex[:10]}", 'it\'s a "secret" $pass; #1'
    path = tmp_path / "configuration.php"
    path.write_text(
        configuration_php(
            host=target.host, port=str(target.port), user=user, password=password, database=target.database
        )
    )
    # The file says what PHP itself reads from it.
    echoed = await asyncio.to_thread(
        subprocess.run,
        [php, "-r", f"include {php_single_quoted(str(path))}; echo $db_password;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert echoed.stdout == password, echoed.stderr
    async with connection(mysql_admin_url) as conn, conn.cursor() as cursor:
        await cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        try:
            await cursor.execute(f"GRANT ALL ON `{target.database}`.* TO %s@'%%'", (user,))
            env = agent_env("", coordinator.url, peer)
            del env["CONCORD_AGENT_WHMCS_URL"]
            result = await run_check({**env, "CONCORD_AGENT_WHMCS_CONFIG": str(path)})
            both = await run_check(
                {**env, "CONCORD_AGENT_WHMCS_CONFIG": str(path), "CONCORD_AGENT_WHMCS_URL": whmcs_url}
            )
        finally:
            await cursor.execute("DROP USER %s@'%%'", (user,))
    assert (result.exit_code, result.lines) == (0, ["all checks passed"]), result
    # Both sources at once is refused, with a message naming them.
    assert both.exit_code == 2 and "not both" in both.stderr, both
