"""Three WHMCS stores, three agent processes and one coordinator process, under real load.

Every test runs a real coordinator (``python -m coordinator serve``) on a fresh PostgreSQL
database and three real agents (``python -m agent serve``), each beside a MariaDB database
with the WHMCS schema, while writers in this process act like WHMCS: they create invoices
and credit notes, publish drafts and pay invoices concurrently in all three stores.

Afterwards the stores and the ledger are checked against each other and against rules
computed here from the series settings, not taken from the code under test:

* per series and period the issued numbers are exactly ``start, start+increment, …``: no
  hole, no duplicate, nothing left reserved, the pool of released numbers empty, and the
  counter's ``next`` right after the last number;
* every due document (``assign_on``: Paid/Refunded, or left Draft) of every store carries
  in ``tblinvoices.invoicenum`` the ledger's formatted number of its own reservation, in
  the right series and period, formatted as the settings say; no formatted number twice;
  documents that are not due carry none and hold no reservation;
* every outbox row is confirmed, every receipt carries its issue position, and the
  ledger's document snapshot carries the number, type and current status of the invoice;
* the agents' logs show no crash and no refused confirm.

The scenarios: concurrent load; an agent SIGKILLed at random points 36 times and
restarted each time; the coordinator unreachable for 30 s (frozen by SIGSTOP, then killed)
while the stores keep invoicing; credit notes on a dedicated series and on the shared
invoice counter, with numbering that resets across 31 December; and the agent's log
staying one JSON event per line when it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from simulator.generator import StoreGenerator
from simulator.whmcs import (
    connect,
    connection,
    create_invoice,
    fetch_all,
    load_store,
    mark_paid,
    publish_draft,
    set_status,
    update_invoice,
)
from tests.conftest import Tokens, bearer
from tests.support.agent_process import AgentProcess
from tests.support.coordinator_process import CoordinatorProcess
from tests.support.mysql_fixtures import WhmcsDatabaseFactory

STORE_NAMES = ("alpha", "bravo", "charlie")
INVOICE_TABLES = ("tblinvoices", "tblinvoiceitems", "tblaccounts", "mod_invoicedata")
SETTLE_SECONDS = 90.0  # bound on waiting for the agents to catch up after the load

# Log lines of an agent that mean something went wrong (the agents log at warning level).
BAD_AGENT_LOG = (
    "job_crashed",
    "Traceback",
    "confirm_refused",
    "outbox_invoice_missing",
    "invoice_numbered_elsewhere",
    "number_taken_back",
    "document_update_refused",
    "whmcs_write_failed",
)


# -- the numbering rules, as the tests expect them -----------------------------------------

_TOKEN = re.compile(r"\{([A-Z]+)(?::(\d+))?\}")


@dataclass(frozen=True)
class Series:
    start: int = 1
    increment: int = 1
    format: str = "{NUMBER}"
    reset: str = "never"
    assign_on: str = "payment"
    dedicated: bool = True

    def body(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "start": self.start,
            "increment": self.increment,
            "format": self.format,
            "reset": self.reset,
            "assign_on": self.assign_on,
        }
        if name == "creditnote":
            body["dedicated"] = self.dedicated
        return body


@dataclass(frozen=True)
class Rules:
    invoice: Series
    creditnote: Series

    def series(self, name: str) -> Series:
        return self.invoice if name == "invoice" else self.creditnote

    def counter(self, doctype: str, day: date) -> tuple[str, str]:
        """(series, period) whose counter a document draws from."""
        name = "creditnote" if doctype == "creditnote" and self.creditnote.dedicated else "invoice"
        return name, (str(day.year) if self.series(name).reset == "yearly" else "all")

    def formatted(self, doctype: str, number: int, day: date, store: str) -> str:
        values = {
            "YEAR": f"{day.year:04d}",
            "YY": f"{day.year % 100:02d}",
            "MONTH": f"{day.month:02d}",
            "DAY": f"{day.day:02d}",
            "STORE": store,
        }

        def token(match: re.Match[str]) -> str:
            name, width = match.groups()
            return str(number).zfill(int(width or 0)) if name == "NUMBER" else values[name]

        return _TOKEN.sub(token, self.series(doctype).format)

    def is_due(self, doctype: str, status: str) -> bool:
        if self.series(doctype).assign_on == "payment":
            return status in ("Paid", "Refunded")
        return status != "Draft"


def doctype_of(total: Any) -> str:
    """The agent's default rule: a negative total is a credit note."""
    return "creditnote" if Decimal(str(total)) < 0 else "invoice"


# -- the cluster: one coordinator, three stores with their agents --------------------------


@dataclass
class Store:
    name: str
    whmcs_url: str
    peer_id: str
    token: str
    generator: StoreGenerator
    agent: AgentProcess


@dataclass
class Cluster:
    database_url: str
    operator: str
    rules: Rules
    coordinator: CoordinatorProcess
    stores: list[Store]

    def log_tails(self) -> str:
        parts = [f"== coordinator\n{self.coordinator.log_tail(15)}"]
        parts += [f"== agent {s.name}\n{s.agent.log_tail(15)}" for s in self.stores]
        return "\n".join(parts)


def empty_store_tables(generator: StoreGenerator) -> dict[str, list[dict[str, Any]]]:
    """The store's clients, currencies, custom fields and settings, but no documents yet."""
    return {table: ([] if table in INVOICE_TABLES else rows) for table, rows in generator.base().items()}


@contextlib.asynccontextmanager
async def running_cluster(
    database_url: str,
    tokens: Tokens,
    make_whmcs: WhmcsDatabaseFactory,
    tmp_path: Path,
    rules: Rules,
    seed: int,
    agent_env: dict[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    coordinator = CoordinatorProcess(database_url, tmp_path, "coordinator")
    stores: list[Store] = []
    try:
        await coordinator.start()
        async with aiohttp.ClientSession(headers=bearer(tokens.operator)) as http:
            for name in ("invoice", "creditnote"):
                async with http.put(
                    f"{coordinator.url}/v1/series/{name}", json=rules.series(name).body(name)
                ) as resp:
                    assert resp.status == 200, await resp.text()
            peers = []
            for name in STORE_NAMES:
                async with http.post(
                    f"{coordinator.url}/v1/peers", json={"name": name, "url": "http://127.0.0.1:8701"}
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    peers.append(await resp.json())
        for name, peer in zip(STORE_NAMES, peers, strict=True):
            generator = StoreGenerator(seed, name, clients=12, invoices=40)
            url = make_whmcs()
            async with connection(url) as conn:
                await load_store(conn, empty_store_tables(generator))
            agent = AgentProcess(name, url, coordinator.url, peer["token"], tmp_path, env=agent_env)
            stores.append(Store(name, url, peer["peer_id"], peer["token"], generator, agent))
        for store in stores:
            store.agent.spawn()
        await asyncio.gather(*(store.agent.wait_healthy(60) for store in stores))
        yield Cluster(database_url, tokens.operator, rules, coordinator, stores)
    finally:
        for store in stores:
            store.agent.stop()
        if coordinator.running() and coordinator.pid is not None:
            os.kill(coordinator.pid, signal.SIGCONT)  # in case a test left it frozen
        coordinator.stop()


# -- WHMCS at work ---------------------------------------------------------------------------

# kind: (status at creation, credit note, what happens to it later)
KINDS: dict[str, tuple[str, bool, str]] = {
    "invoice_paid": ("Paid", False, ""),
    "invoice_pay_later": ("Unpaid", False, "pay"),
    "invoice_unpaid": ("Unpaid", False, ""),
    "invoice_draft": ("Draft", False, ""),
    "invoice_publish": ("Draft", False, "publish"),
    "invoice_publish_pay": ("Draft", False, "publish+pay"),
    "invoice_refund_later": ("Paid", False, "Refunded"),
    "invoice_refunded": ("Refunded", False, ""),
    "invoice_cancel_later": ("Unpaid", False, "Cancelled"),
    "credit_paid": ("Paid", True, ""),
    "credit_unpaid": ("Unpaid", True, ""),
    "credit_draft": ("Draft", True, ""),
    "credit_publish": ("Draft", True, "publish"),
}


class Writer:
    """One store's WHMCS users on a connection of their own; every action commits."""

    def __init__(self, store: Store, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self.conn: Any = None
        self.created = 0
        self.to_pay: list[int] = []
        self.to_publish: list[tuple[int, bool]] = []
        self.to_change: list[tuple[int, str]] = []  # later status changes: refunds, cancels

    async def __aenter__(self) -> Writer:
        self.conn = await connect(self.store.whmcs_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.conn.close()

    async def create(self, kind: str, day: date) -> int:
        status, credit_note, later = KINDS[kind]
        rows = self.store.generator.new_invoice(status=status, credit_note=credit_note, date=day)
        invoice_id = await create_invoice(self.conn, rows)
        self.created += 1
        if later == "pay":
            self.to_pay.append(invoice_id)
        elif later.startswith("publish"):
            self.to_publish.append((invoice_id, later == "publish+pay"))
        elif later:
            self.to_change.append((invoice_id, later))
        return invoice_id

    async def pay(self, invoice_id: int) -> None:
        try:
            await mark_paid(self.conn, invoice_id)
        except ValueError:  # nothing left to pay (credit covered it): WHMCS marks it Paid
            await update_invoice(
                self.conn, invoice_id, {"status": "Paid", "datepaid": datetime.now().replace(microsecond=0)}
            )

    async def publish(self, invoice_id: int, then_pay: bool) -> None:
        await publish_draft(self.conn, invoice_id)
        if then_pay:
            self.to_pay.append(invoice_id)

    async def step(self, mix: dict[str, int], days: Sequence[date]) -> None:
        """One action: pay, publish, refund or cancel, or create, as the dice say."""
        roll = self.rng.random()
        if self.to_pay and roll < 0.3:
            await self.pay(self.to_pay.pop(self.rng.randrange(len(self.to_pay))))
        elif self.to_publish and roll < 0.45:
            await self.publish(*self.to_publish.pop(self.rng.randrange(len(self.to_publish))))
        elif self.to_change and roll < 0.55:
            await set_status(self.conn, *self.to_change.pop(self.rng.randrange(len(self.to_change))))
        else:
            kind = self.rng.choices(list(mix), list(mix.values()))[0]
            await self.create(kind, self.rng.choice(days))

    async def finish(self) -> None:
        """What was planned happens: drafts are published, invoices paid, refunded, cancelled."""
        while self.to_publish:
            await self.publish(*self.to_publish.pop())
        while self.to_pay:
            await self.pay(self.to_pay.pop())
        while self.to_change:
            await set_status(self.conn, *self.to_change.pop())


async def churn(
    store: Store,
    seed: int,
    mix: dict[str, int],
    days: Sequence[date],
    *,
    count: int | None = None,
    stop: asyncio.Event | None = None,
    pause: tuple[float, float] = (0.0, 0.02),
) -> int:
    """A store's WHMCS at work until ``count`` documents exist or ``stop`` is set."""
    rng = random.Random(f"{seed}:{store.name}")
    async with Writer(store, rng) as writer:
        while not ((count is not None and writer.created >= count) or (stop is not None and stop.is_set())):
            await writer.step(mix, days)
            await asyncio.sleep(rng.uniform(*pause))
        await writer.finish()
        return writer.created


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# -- reading both sides ----------------------------------------------------------------------


@dataclass
class StoreState:
    invoices: list[dict[str, Any]]
    outbox: list[dict[str, Any]]
    receipts: list[dict[str, Any]]


@dataclass
class LedgerState:
    reservations: list[dict[str, Any]]
    documents: dict[tuple[str, str, str], dict[str, Any]]
    released: list[dict[str, Any]]
    counters: list[dict[str, Any]]
    # (reservation id, event type) -> (position, hash hex, recorded_at) of NumberReserved/Issued
    events: dict[tuple[str, str], tuple[int, str, datetime]]
    issued: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)


async def read_store(store: Store) -> StoreState:
    async with connection(store.whmcs_url) as conn:
        invoices = await fetch_all(
            conn, "SELECT id, invoicenum, status, total, date FROM tblinvoices ORDER BY id"
        )
        outbox = await fetch_all(conn, "SELECT * FROM mod_concord_outbox")
        receipts = await fetch_all(conn, "SELECT * FROM mod_concord_receipts")
    return StoreState(invoices, outbox, receipts)


async def read_ledger(database_url: str) -> LedgerState:
    conn = await asyncpg.connect(database_url)
    try:
        reservations = [
            dict(r)
            for r in await conn.fetch(
                "SELECT id::text AS id, peer_id::text AS peer_id, doctype, doc_id, series, period,"
                " number, formatted, doc_date, state FROM reservations"
            )
        ]
        documents = {}
        for r in await conn.fetch(
            "SELECT peer_id::text AS peer_id, doctype, doc_id, reservation_id::text AS"
            " reservation_id, series, period, number, formatted, snapshot, voided, imported"
            " FROM documents"
        ):
            row = dict(r)
            row["snapshot"] = json.loads(row["snapshot"])
            documents[(row["peer_id"], row["doctype"], row["doc_id"])] = row
        released = [dict(r) for r in await conn.fetch("SELECT * FROM released_numbers")]
        counters = [dict(r) for r in await conn.fetch("SELECT * FROM counters")]
        events = {
            (r["rid"], r["type"]): (r["position"], r["hash"].hex(), r["recorded_at"])
            for r in await conn.fetch(
                "SELECT data->>'reservation_id' AS rid, type, position, hash, recorded_at"
                " FROM events WHERE type IN ('NumberReserved', 'NumberIssued')"
            )
        }
    finally:
        await conn.close()
    ledger = LedgerState(reservations, documents, released, counters, events)
    ledger.issued = {
        (r["peer_id"], r["doctype"], r["doc_id"]): r for r in reservations if r["state"] == "issued"
    }
    return ledger


async def outstanding(cluster: Cluster) -> list[str]:
    """What the agents still have to do; empty once everything settled."""
    rules, problems = cluster.rules, []
    ledger = await read_ledger(cluster.database_url)
    pending = [r for r in ledger.reservations if r["state"] == "reserved"]
    if pending:
        problems.append(f"{len(pending)} reservations still reserved")
    for store in cluster.stores:
        state = await read_store(store)
        unnumbered = [
            row["id"]
            for row in state.invoices
            if row["invoicenum"] == "" and rules.is_due(doctype_of(row["total"]), row["status"])
        ]
        if unnumbered:
            problems.append(f"{store.name}: {len(unnumbered)} due documents without a number")
        unconfirmed = [row for row in state.outbox if row["confirmed_at"] is None]
        if unconfirmed:
            problems.append(f"{store.name}: {len(unconfirmed)} outbox rows unconfirmed")
        stale = 0
        for row in state.invoices:
            doc = ledger.documents.get((store.peer_id, doctype_of(row["total"]), str(row["id"])))
            if doc is not None and doc["snapshot"]["DocData"]["Status"] != row["status"]:
                stale += 1
        if stale:
            problems.append(f"{store.name}: {stale} ledger snapshots with an old status")
    return problems


async def wait_settled(cluster: Cluster, within: float = SETTLE_SECONDS) -> float:
    """Wait until the agents have caught up; returns the seconds it took (the checks that
    follow report precisely what is wrong when they did not)."""
    started = time.monotonic()
    problems: list[str] = []
    while time.monotonic() - started < within:
        problems = await outstanding(cluster)
        if not problems:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    print(f"not settled after {within:.0f}s: {problems}\n{cluster.log_tails()}")
    return time.monotonic() - started


# -- the invariants --------------------------------------------------------------------------


async def verify(cluster: Cluster) -> LedgerState:
    """Every invariant of the numbering, across the three stores and the ledger."""
    rules = cluster.rules
    ledger = await read_ledger(cluster.database_url)
    by_peer = {store.peer_id: store for store in cluster.stores}

    # Nothing pending, nothing in the pool: all numbers handed out are issued (or void).
    pending = [r for r in ledger.reservations if r["state"] == "reserved"]
    assert pending == [], f"{len(pending)} numbers reserved but never confirmed: {pending[:5]}"
    assert ledger.released == [], "numbers left in the pool: the sequence has a hole"
    assert {r["peer_id"] for r in ledger.reservations} <= set(by_peer)

    # Per series and period: start, start+increment, … with no hole and no duplicate.
    numbers: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in ledger.reservations:
        if r["state"] in ("issued", "void"):
            numbers[(r["series"], r["period"])].append(r["number"])
    for (series, period), got in numbers.items():
        settings = rules.series(series)
        expected = [settings.start + i * settings.increment for i in range(len(got))]
        duplicates = sorted(n for n, k in Counter(got).items() if k > 1)
        assert not duplicates, f"{series} {period}: numbers issued twice: {duplicates}"
        missing = sorted(set(expected) - set(got))
        assert sorted(got) == expected, (
            f"{series} {period}: not contiguous from {settings.start} step "
            f"{settings.increment}; missing {missing[:20]}, unexpected "
            f"{sorted(set(got) - set(expected))[:20]}"
        )
    for counter in ledger.counters:
        key = (counter["series"], counter["period"])
        settings = rules.series(counter["series"])
        used = len(numbers.get(key, []))
        assert counter["next"] == settings.start + used * settings.increment, (
            f"counter {key} is at {counter['next']} after {used} numbers: numbers were "
            "consumed that no document holds"
        )

    # No formatted number twice, across the stores.
    formatted = Counter(r["formatted"] for r in ledger.reservations if r["state"] != "released")
    assert [f for f, k in formatted.items() if k > 1] == []

    # Each store: due documents carry their own ledger number, the others none.
    due_total = 0
    for store in cluster.stores:
        state = await read_store(store)
        mine = {
            (r["doctype"], r["doc_id"]): r
            for r in ledger.reservations
            if r["peer_id"] == store.peer_id and r["state"] != "released"
        }
        outbox = {row["invoice_id"]: row for row in state.outbox}
        receipts = {row["reservation_id"]: row for row in state.receipts}
        assert len(outbox) == len(state.outbox), f"{store.name}: two outbox rows for a document"
        due_keys = set()
        wrong: list[str] = []
        for row in state.invoices:
            doctype, doc_id = doctype_of(row["total"]), str(row["id"])
            reservation = mine.get((doctype, doc_id))
            if not rules.is_due(doctype, row["status"]):
                if row["invoicenum"] != "" or reservation is not None:
                    wrong.append(
                        f"{doc_id} ({doctype} {row['status']}) is not due but carries "
                        f"{row['invoicenum']!r} / reservation {reservation}"
                    )
                continue
            due_keys.add((doctype, doc_id))
            if reservation is None:
                wrong.append(
                    f"{doc_id} ({doctype} {row['status']}) is due but holds no number"
                    f" (invoicenum {row['invoicenum']!r})"
                )
                continue
            series, period = rules.counter(doctype, row["date"])
            expected = rules.formatted(doctype, reservation["number"], row["date"], store.name)
            if (
                reservation["state"],
                reservation["series"],
                reservation["period"],
                reservation["formatted"],
                row["invoicenum"],
            ) != ("issued", series, period, expected, expected):
                wrong.append(
                    f"{doc_id} ({doctype} {row['date']}): invoicenum "
                    f"{row['invoicenum']!r}, ledger {reservation}, expected "
                    f"{series} {period} {expected!r} issued"
                )
                continue
            box = outbox.get(row["id"])
            if (
                box is None
                or box["reservation_id"] != reservation["id"]
                or box["formatted"] != expected
                or box["confirmed_at"] is None
            ):
                wrong.append(f"{doc_id}: outbox row {box} for reservation {reservation['id']}")
            # The receipts the store keeps are those of the ledger's own events.
            receipt = receipts.get(reservation["id"])
            reserved = ledger.events.get((reservation["id"], "NumberReserved"))
            issued = ledger.events.get((reservation["id"], "NumberIssued"))
            if (
                receipt is None
                or reserved is None
                or issued is None
                or (
                    receipt["number"],
                    receipt["formatted"],
                    receipt["period"],
                    receipt["reserved_position"],
                    receipt["reserved_hash"],
                    receipt["issued_position"],
                    receipt["issued_hash"],
                )
                != (reservation["number"], expected, period, *reserved[:2], *issued[:2])
            ):
                wrong.append(
                    f"{doc_id}: receipt {receipt} for reservation {reservation},"
                    f" events reserved {reserved} issued {issued}"
                )
            doc = ledger.documents.get((store.peer_id, doctype, doc_id))
            data = doc["snapshot"]["DocData"] if doc else {}
            if (
                doc is None
                or doc["formatted"] != expected
                or doc["reservation_id"] != reservation["id"]
                or (
                    data.get("Num"),
                    data.get("ID"),
                    data.get("Type"),
                    data.get("Status"),
                    data.get("Date"),
                    data.get("Total"),
                )
                != (
                    expected,
                    row["id"],
                    "Invoice" if doctype == "invoice" else "CreditNote",
                    row["status"],
                    row["date"].isoformat(),
                    f"{row['total']:.2f}",
                )
            ):
                wrong.append(
                    f"{doc_id}: ledger document {doc and (doc['formatted'], data)}"
                    f" does not match the invoice {row}"
                )
        assert wrong == [], f"store {store.name}:\n" + "\n".join(wrong[:20])
        strays = set(mine) - due_keys
        assert strays == set(), f"{store.name}: ledger numbers for unknown documents {strays}"
        due_total += len(due_keys)
    assert len(ledger.issued) == due_total == len(ledger.documents)
    return ledger


def assert_clean_logs(cluster: Cluster) -> None:
    for store in cluster.stores:
        text = store.agent.log_text()
        found = [line for line in text.splitlines() if any(bad in line for bad in BAD_AGENT_LOG)]
        assert found == [], f"agent {store.name} logged:\n" + "\n".join(found[:10])
    coordinator_log = cluster.coordinator.log_path.read_text(errors="replace")
    assert "Traceback" not in coordinator_log, cluster.coordinator.log_tail(60)


def slow_issues(ledger: LedgerState, seconds: float = 1.0) -> int:
    """Numbers confirmed more than ``seconds`` after they were reserved: work that was
    interrupted between reserve and confirm (a kill, an outage) and finished later."""
    late = 0
    for r in ledger.issued.values():
        reserved = ledger.events[(r["id"], "NumberReserved")][2]
        issued = ledger.events[(r["id"], "NumberIssued")][2]
        late += (issued - reserved).total_seconds() > seconds
    return late


def summary(ledger: LedgerState) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for r in ledger.issued.values():
        counts[f"{r['series']}/{r['period']}"] += 1
    counts["released_then_reused"] = sum(1 for r in ledger.reservations if r["state"] == "released")
    return dict(sorted(counts.items()))


# -- the tests -------------------------------------------------------------------------------

MIX_ON_PAYMENT = {
    "invoice_paid": 20,
    "invoice_pay_later": 30,
    "invoice_unpaid": 8,
    "invoice_draft": 4,
    "invoice_publish_pay": 8,
    "invoice_publish": 4,
    "invoice_refund_later": 3,
    "invoice_refunded": 2,
    "invoice_cancel_later": 3,
    "credit_paid": 16,
    "credit_unpaid": 5,
    "credit_draft": 3,
}


@pytest.mark.slow
async def test_three_stores_number_concurrently(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    """100 documents per store created, published, paid, refunded and cancelled at once in
    three stores: one gapless numbering across them, each invoicenum the ledger's."""
    rules = Rules(
        invoice=Series(start=1000, format="INV-{NUMBER:6}"),
        creditnote=Series(start=1, format="CN-{NUMBER:5}"),
    )
    async with running_cluster(
        database_url, tokens, whmcs_database_factory, tmp_path, rules, seed=11
    ) as cluster:
        started = time.monotonic()
        days = day_range(date(2025, 3, 1), date(2025, 6, 30))
        created = await asyncio.gather(
            *(churn(store, 11, MIX_ON_PAYMENT, days, count=100) for store in cluster.stores)
        )
        load = time.monotonic() - started
        settle = await wait_settled(cluster)
        ledger = await verify(cluster)
        assert_clean_logs(cluster)
    assert created == [100, 100, 100]
    counts = summary(ledger)
    assert counts["invoice/all"] > 100 and counts["creditnote/all"] > 10
    print(f"load {load:.1f}s, settled {settle:.1f}s later; issued {counts}")


@pytest.mark.slow
async def test_agents_survive_sigkill_at_random_points(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    """The agents, in turn, are SIGKILLed 36 times at random moments (half of them right
    after a burst of paid documents) and restarted at once, while all three stores keep
    invoicing around 31 December: no duplicate, no gap, every due document numbered. Batches
    of 5 documents, so that a burst takes more than one and kills fall inside and between
    batches of reserves, writes and confirms."""
    rules = Rules(
        invoice=Series(format="{YEAR}/{NUMBER:5}", reset="yearly"),
        creditnote=Series(start=1, format="CR{YY}/{NUMBER:4}", reset="yearly"),
    )
    days = day_range(date(2025, 12, 29), date(2026, 1, 3))
    rng = random.Random(2024)
    kills, busy_kills, target = 0, 0, 36
    async with running_cluster(
        database_url,
        tokens,
        whmcs_database_factory,
        tmp_path,
        rules,
        seed=23,
        agent_env={"CONCORD_AGENT_BATCH_SIZE": "5"},
    ) as cluster:
        stop = asyncio.Event()
        writers = [
            asyncio.create_task(churn(store, 23, MIX_ON_PAYMENT, days, stop=stop, pause=(0.05, 0.35)))
            for store in cluster.stores
        ]
        started = time.monotonic()
        try:
            async with contextlib.AsyncExitStack() as stack:
                bursts = {
                    store.name: await stack.enter_async_context(
                        Writer(store, random.Random(f"burst:{store.name}"))
                    )
                    for store in cluster.stores
                }
                while kills < target and time.monotonic() - started < 100:
                    store = cluster.stores[kills % len(cluster.stores)]
                    if rng.random() < 0.5:
                        # A burst of paid documents: the kill lands while the agent works.
                        for _ in range(rng.randint(3, 8)):
                            await bursts[store.name].create(
                                rng.choice(("invoice_paid", "invoice_paid", "credit_paid")), rng.choice(days)
                            )
                        await asyncio.sleep(rng.uniform(0.0, 0.4))
                    else:
                        await asyncio.sleep(rng.uniform(0.2, 1.5))
                    busy_kills += bool(await outstanding_in(store, rules))
                    store.agent.kill()
                    kills += 1
                    await asyncio.sleep(rng.uniform(0.0, 0.2))
                    store.agent.spawn()
                    if rng.random() < 0.3:  # sometimes let it get going before it dies again
                        await store.agent.wait_healthy(60)
        finally:
            stop.set()
            await asyncio.gather(*writers, return_exceptions=True)
        load = time.monotonic() - started
        for task in writers:
            task.result()  # a writer's failure is the test's
        await asyncio.gather(*(store.agent.wait_healthy(60) for store in cluster.stores))
        settle = await wait_settled(cluster)
        ledger = await verify(cluster)
        assert_clean_logs(cluster)
    assert kills >= 30, f"only {kills} kills in the time given"
    assert busy_kills >= 10, f"only {busy_kills} of {kills} kills hit an agent with work to do"
    counts = summary(ledger)
    assert {"invoice/2025", "invoice/2026", "creditnote/2025", "creditnote/2026"} <= set(counts)
    print(
        f"{kills} kills ({busy_kills} while busy) in {load:.1f}s, settled {settle:.1f}s "
        f"later; {slow_issues(ledger)} numbers confirmed >1s after their reservation;"
        f" issued {counts}"
    )


async def outstanding_in(store: Store, rules: Rules) -> int:
    """Due documents without a number plus unconfirmed outbox rows in one store."""
    async with connection(store.whmcs_url) as conn:
        rows = await fetch_all(conn, "SELECT total, status FROM tblinvoices WHERE invoicenum = ''")
        (box,) = await fetch_all(
            conn, "SELECT COUNT(*) AS n FROM mod_concord_outbox WHERE confirmed_at IS NULL"
        )
    return sum(rules.is_due(doctype_of(r["total"]), r["status"]) for r in rows) + int(box["n"])


@pytest.mark.slow
async def test_coordinator_unreachable_for_30_seconds(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    """The coordinator freezes (SIGSTOP) for 15 s, then is gone (SIGKILL) for 15 s, then comes
    back on its port; the stores keep invoicing throughout and one agent is restarted in the
    middle. The agents wait and retry, the restarted one does not serve before its first
    heartbeat, and afterwards they catch up: nothing lost, nothing doubled."""
    rules = Rules(
        invoice=Series(start=10, increment=3, format="A{NUMBER:6}"),
        creditnote=Series(start=2, increment=2, format="C{NUMBER:6}"),
    )
    days = day_range(date(2025, 8, 1), date(2025, 8, 31))
    async with running_cluster(
        database_url, tokens, whmcs_database_factory, tmp_path, rules, seed=37
    ) as cluster:
        stop = asyncio.Event()
        writers = [
            asyncio.create_task(churn(store, 37, MIX_ON_PAYMENT, days, stop=stop, pause=(0.05, 0.3)))
            for store in cluster.stores
        ]
        coordinator = cluster.coordinator
        late = cluster.stores[2]  # restarted while the coordinator is away
        try:
            await asyncio.sleep(4)
            assert coordinator.pid is not None
            # 0-15 s: frozen. Connections are accepted by the kernel but never answered.
            os.kill(coordinator.pid, signal.SIGSTOP)
            outage = time.monotonic()
            await asyncio.sleep(3)
            late.agent.kill()
            late.agent.spawn()
            await asyncio.sleep(15 - (time.monotonic() - outage))
            # 15-30 s: gone. Connections are refused; what hung is cut off.
            coordinator.kill()
            await asyncio.sleep(5)
            assert not await late.agent.healthy(), (
                "an agent started without its first heartbeat must not serve"
            )
            await asyncio.sleep(30 - (time.monotonic() - outage) - 2)
            waiting = sum([await outstanding_in(store, rules) for store in cluster.stores])
            alive = [store.name for store in cluster.stores if store.agent.running()]
            await asyncio.sleep(30 - (time.monotonic() - outage))
            await coordinator.start()
            back = time.monotonic()
            await asyncio.sleep(5)
        finally:
            stop.set()
            await asyncio.gather(*writers, return_exceptions=True)
        for task in writers:
            task.result()
        assert alive == list(STORE_NAMES), "agents must wait for the coordinator, not exit"
        assert waiting > 0, "documents became due while the coordinator was away"
        await late.agent.wait_healthy(30)
        settle = await wait_settled(cluster)
        caught_up = time.monotonic() - back
        ledger = await verify(cluster)
        assert_clean_logs(cluster)
    counts = summary(ledger)
    print(
        f"outage of {back - outage:.1f}s with {waiting} documents waiting; caught up "
        f"{caught_up:.1f}s after the coordinator came back (writers stopped after 5s,"
        f" settled {settle:.1f}s later); {slow_issues(ledger, 10)} numbers reserved before"
        f" and confirmed after; issued {counts}"
    )


YEAR_END = day_range(date(2025, 12, 30), date(2026, 1, 2))


@pytest.mark.slow
async def test_credit_notes_on_a_dedicated_series_reset_yearly(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    # Invoices numbered on payment, credit notes as soon as they leave Draft.
    rules = Rules(
        invoice=Series(format="{YEAR}-{NUMBER:4}", reset="yearly"),
        creditnote=Series(format="CN-{YEAR}-{NUMBER:4}", reset="yearly", assign_on="creation"),
    )
    mix = {
        "invoice_paid": 25,
        "invoice_pay_later": 20,
        "invoice_unpaid": 8,
        "invoice_draft": 4,
        "credit_paid": 10,
        "credit_unpaid": 12,
        "credit_draft": 5,
        "credit_publish": 12,
    }
    async with running_cluster(
        database_url, tokens, whmcs_database_factory, tmp_path, rules, seed=41
    ) as cluster:
        await asyncio.gather(*(churn(store, 41, mix, YEAR_END, count=40) for store in cluster.stores))
        await wait_settled(cluster)
        ledger = await verify(cluster)
        assert_clean_logs(cluster)
    counts = summary(ledger)
    assert {k for k in counts if "/" in k} == {
        "invoice/2025",
        "invoice/2026",
        "creditnote/2025",
        "creditnote/2026",
    }
    numbers = {r["formatted"] for r in ledger.issued.values()}
    assert {"2025-0001", "2026-0001", "CN-2025-0001", "CN-2026-0001"} <= numbers
    by_year = {(r["doctype"], r["doc_date"].year, r["period"]) for r in ledger.issued.values()}
    assert by_year == {
        ("invoice", 2025, "2025"),
        ("invoice", 2026, "2026"),
        ("creditnote", 2025, "2025"),
        ("creditnote", 2026, "2026"),
    }
    print(f"issued {counts}")


@pytest.mark.slow
async def test_credit_notes_on_the_shared_invoice_counter_reset_yearly(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    # Invoices numbered when they leave Draft (and reported again once paid); credit notes
    # on payment, drawing from the invoice counter with a format of their own.
    rules = Rules(
        invoice=Series(
            start=100, increment=2, format="{YEAR}-{NUMBER:5}", reset="yearly", assign_on="creation"
        ),
        creditnote=Series(format="CN-{YEAR}-{NUMBER:5}", dedicated=False),
    )
    mix = {
        "invoice_paid": 15,
        "invoice_pay_later": 25,
        "invoice_unpaid": 8,
        "invoice_draft": 5,
        "invoice_publish": 8,
        "invoice_publish_pay": 8,
        "invoice_refund_later": 4,
        "invoice_cancel_later": 5,
        "credit_paid": 20,
        "credit_unpaid": 6,
        "credit_draft": 3,
    }
    async with running_cluster(
        database_url, tokens, whmcs_database_factory, tmp_path, rules, seed=43
    ) as cluster:
        # Slow enough that most invoices are numbered before they are paid.
        await asyncio.gather(
            *(churn(store, 43, mix, YEAR_END, count=40, pause=(0.02, 0.12)) for store in cluster.stores)
        )
        await wait_settled(cluster)
        ledger = await verify(cluster)
        assert_clean_logs(cluster)
        # Credit notes follow the invoice counter's yearly reset: a format without the year
        # would give "CN-00100" in 2025 and again in 2026, so it must be refused.
        status, answer = await put_series(cluster, "creditnote", {"format": "CN-{NUMBER:5}"})
    assert status == 400, (
        f"a credit-note format without {{YEAR}}/{{YY}} on the yearly-reset shared counter was"
        f" accepted ({status} {answer}): credit notes of different years would get the same"
        " number"
    )
    counts = summary(ledger)
    assert {k for k in counts if "/" in k} == {"invoice/2025", "invoice/2026"}
    doctypes = Counter((r["doctype"], r["period"]) for r in ledger.issued.values())
    assert all(
        doctypes[(doctype, year)] > 0 for doctype in ("invoice", "creditnote") for year in ("2025", "2026")
    ), doctypes
    firsts = {(r["period"], r["number"]) for r in ledger.issued.values() if r["number"] == 100}
    assert firsts == {("2025", 100), ("2026", 100)}
    # Invoices numbered while Unpaid and paid afterwards reached the ledger as updates
    # (verify() checked that every snapshot carries the invoice's current status).
    updates = await count_events(cluster.database_url, "DocumentUpdated")
    assert updates >= 5
    print(f"issued {counts}, by type {dict(doctypes)}, {updates} documents updated")


async def put_series(cluster: Cluster, name: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=bearer(cluster.operator)) as http,
        http.put(f"{cluster.coordinator.url}/v1/series/{name}", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def count_events(database_url: str, event_type: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE type = $1", event_type))
    finally:
        await conn.close()


@pytest.mark.slow
async def test_agent_log_stays_json_lines_across_a_restart(
    database_url: str, tokens: Tokens, whmcs_database_factory: WhmcsDatabaseFactory, tmp_path: Path
) -> None:
    """Log shippers read one JSON event per line (docs/design.md §8); a restarted agent meets its
    tables already there, and whatever the driver says about that must not break the stream."""
    rules = Rules(invoice=Series(), creditnote=Series())
    async with running_cluster(
        database_url, tokens, whmcs_database_factory, tmp_path, rules, seed=47
    ) as cluster:
        agent = cluster.stores[0].agent
        agent.stop()
        await agent.start()
        await churn(cluster.stores[0], 47, {"invoice_paid": 1}, [date(2025, 5, 5)], count=3)
        await wait_settled(cluster)
        agent.stop()
    lines = [
        line for line in agent.log_text().splitlines() if line.strip() and not line.startswith("--- start #")
    ]
    not_json = []
    for line in lines:
        try:
            assert isinstance(json.loads(line)["event"], str)
        except (ValueError, KeyError, TypeError, AssertionError):
            not_json.append(line)
    assert not_json == [], "agent log lines that are not JSON events:\n" + "\n".join(not_json)
