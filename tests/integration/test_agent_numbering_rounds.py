"""The agent's numbering rounds against a live coordinator and MariaDB: one read of the due
documents serves several batches, yet every store's documents are numbered in date order,
and a failed write gives its documents back before the later ones."""

from __future__ import annotations

import asyncio
import random
from datetime import date, timedelta
from typing import Any

from aiohttp import web

from agent.client import CoordinatorClient
from agent.heartbeat import beat
from agent.numbering import DUE_READ_BATCHES, Numbering
from agent.whmcs.database import create_agent_tables
from simulator.whmcs import connection, invoice_tables, load_store
from tests.support.agent_parts import Agent

BATCH = 2
BACKLOG = BATCH * DUE_READ_BATCHES + 7  # more than one read of the due list


async def paid_backlog(agent: Agent, count: int, seed: int) -> None:
    """``count`` paid invoices created at once, ids in an order unrelated to their dates."""
    rng = random.Random(seed)
    first = date(2025, 3, 1)
    documents = [
        (i, agent.generator.new_invoice(status="Paid", date=first + timedelta(days=rng.randrange(60))))
        for i in range(1, count + 1)
    ]
    async with connection(agent.whmcs_url) as conn:
        await load_store(conn, invoice_tables(documents))


async def numbers_by_date(agent: Agent) -> list[int]:
    rows = await agent.rows("SELECT id, date, invoicenum FROM tblinvoices ORDER BY date, id")
    return [int(row["invoicenum"]) for row in rows]


async def number_all(numbering: Numbering) -> int:
    rounds = 1
    while await numbering.round() >= BATCH:
        rounds += 1
    return rounds


async def test_a_backlog_longer_than_one_read_is_numbered_in_date_order(agent: Agent) -> None:
    await beat(agent.pool, agent.client, agent.rules, {})
    await paid_backlog(agent, BACKLOG, seed=3)
    numbering = Numbering(agent.pool, agent.client, agent.rules, BATCH, asyncio.Event())
    assert await number_all(numbering) == BACKLOG // BATCH + 1
    assert await numbers_by_date(agent) == list(range(1, BACKLOG + 1))


async def test_a_document_due_meanwhile_waits_for_the_next_read_and_a_hooked_one_is_not_doubled(
    agent: Agent,
) -> None:
    await beat(agent.pool, agent.client, agent.rules, {})
    await paid_backlog(agent, BACKLOG, seed=4)
    numbering = Numbering(agent.pool, agent.client, agent.rules, BATCH, asyncio.Event())
    assert await numbering.round() == BATCH  # the first read holds the rest of this read
    rows = await agent.rows("SELECT id FROM tblinvoices WHERE invoicenum = '' ORDER BY date, id")
    await numbering.number_invoice(rows[0]["id"])  # WHMCS's hook numbers the next one in the list
    late = agent.generator.new_invoice(status="Paid", date=date(2025, 1, 1))  # older than all
    async with connection(agent.whmcs_url) as conn:
        await load_store(conn, invoice_tables([(BACKLOG + 1, late)]))
    await number_all(numbering)
    rows = await agent.rows("SELECT id, invoicenum FROM tblinvoices")
    numbers = sorted(int(row["invoicenum"]) for row in rows)
    assert numbers == list(range(1, BACKLOG + 2))  # nothing doubled, nothing skipped
    by_id = {row["id"]: int(row["invoicenum"]) for row in rows}
    # Due after the first read, older than all: the first of the next read.
    assert by_id[BACKLOG + 1] == BATCH * DUE_READ_BATCHES + 1


async def test_a_failed_write_gives_its_documents_back_before_the_later_ones(agent: Agent) -> None:
    """The MySQL write of a batch fails (a table the agent writes is gone): its numbers are
    released, and the next round takes the same documents again, not the read's later ones,
    so the released numbers go back to them and date order holds."""
    await beat(agent.pool, agent.client, agent.rules, {})
    await paid_backlog(agent, BACKLOG, seed=5)
    numbering = Numbering(agent.pool, agent.client, agent.rules, BATCH, asyncio.Event())
    assert await numbering.round() == BATCH
    async with connection(agent.whmcs_url) as conn, conn.cursor() as cur:
        await cur.execute("DROP TABLE mod_concord_receipts")
    try:
        await numbering.round()
    except Exception as exc:  # the write's own error, after the numbers were released
        assert "mod_concord_receipts" in str(exc)
    else:
        raise AssertionError("the write did not fail")
    await create_agent_tables(agent.pool)
    await number_all(numbering)
    assert await numbers_by_date(agent) == list(range(1, BACKLOG + 1))


async def test_a_change_of_assign_on_drops_what_was_read_under_the_old_rule(agent: Agent) -> None:
    """Numbered on creation, unpaid invoices are due; the operator switches the series to
    numbering on payment after the first round: the rest of that read is no longer due,
    so nothing more is numbered until the invoices are paid."""
    agent.rules.update({"invoice": {"assign_on": "creation"}, "creditnote": {"assign_on": "creation"}})
    rng = random.Random(7)
    documents = [
        (
            i,
            agent.generator.new_invoice(
                status="Unpaid", date=date(2025, 3, 1) + timedelta(days=rng.randrange(60))
            ),
        )
        for i in range(1, BACKLOG + 1)
    ]
    async with connection(agent.whmcs_url) as conn:
        await load_store(conn, invoice_tables(documents))
    numbering = Numbering(agent.pool, agent.client, agent.rules, BATCH, asyncio.Event())
    assert await numbering.round() == BATCH
    agent.rules.update({"invoice": {"assign_on": "payment"}, "creditnote": {"assign_on": "payment"}})
    assert await numbering.round() == 0
    rows = await agent.rows("SELECT COUNT(*) AS n FROM tblinvoices WHERE invoicenum <> ''")
    assert rows[0]["n"] == BATCH


async def test_documents_refused_or_unanswered_end_the_round_rather_than_spin(
    agent: Agent, aiohttp_server: Any
) -> None:
    """The coordinator refuses one document of each batch and cannot answer for the other
    (its ledger did not answer in time; the real one does so only under a timing fault or a
    race with retiring the store, hence this stand-in): the round settles nothing, so the
    loop waits for its next poll instead of reading and asking again at once."""
    await beat(agent.pool, agent.client, agent.rules, {})
    await paid_backlog(agent, BACKLOG, seed=8)

    async def reserve_batch(request: web.Request) -> web.Response:
        items = (await request.json())["documents"]
        refused = {"status": 403, "error": {"code": "peer_retired", "message": "retired"}}
        busy = {"status": 503, "error": {"code": "unavailable", "message": "no answer in time"}}
        return web.json_response({"results": [refused if n % 2 else busy for n in range(len(items))]})

    app = web.Application()
    app.router.add_post("/v1/reservations/batch", reserve_batch)
    server = await aiohttp_server(app)
    async with CoordinatorClient(str(server.make_url("")), "token", patience=0.2) as client:
        numbering = Numbering(agent.pool, client, agent.rules, BATCH, asyncio.Event())
        assert await numbering.round() == 0
    rows = await agent.rows("SELECT COUNT(*) AS n FROM tblinvoices WHERE invoicenum <> ''")
    assert rows[0]["n"] == 0
