"""Stores that already hold numbered documents, and a ledger that already holds them.

For the agent benchmark at scale: each store's documents, numbered by Concord before the run,
are in the ledger (NumberReserved and NumberIssued events built and COPYed as the audit
benchmark builds its ledger, bench/ledger_fixture.py; projections by `concord audit
--rebuild`), in WHMCS (``tblinvoices`` rows with that id, number and date) and in the agent's
own tables as its relay leaves them (``mod_concord_outbox`` confirmed, ``mod_concord_documents``
written by the agent's own code from the agent's own snapshot, so its reconciliation at
start-up finds nothing to report). ``mod_concord_receipts`` stays empty: only `concord-agent
receipts export` reads it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from agent.settings import AgentSettings
from agent.whmcs import queries
from agent.whmcs.database import create_agent_tables, create_pool, parse_mysql_url
from bench.audit import rebuild_projections
from bench.ledger_fixture import LedgerBuilder, Peer, Record, copy_events
from bench.postgres import connected
from coordinator.ledger.numbering import SeriesSettings
from coordinator.migrations import migrate
from simulator.whmcs import connection, insert_rows

FIRST_DAY = date(2023, 1, 1)  # the history ends before the run's invoices (dated over 2024)
SNAPSHOT_PAGE = 500


@dataclass(frozen=True)
class Numbered:
    """A document numbered before the run: its WHMCS invoice id, number, date, reservation."""

    invoice_id: int
    formatted: str
    day: date
    reservation_id: str


@dataclass
class Ledger:
    tokens: dict[str, str]  # store name -> bearer token
    peer_ids: dict[str, str]  # store name -> peer id
    numbered: dict[str, list[Numbered]]  # store name -> its documents, by invoice id
    head: int  # the ledger's last position before the run
    seconds: float  # building, COPY and rebuild


async def _copy(
    pg_url: str, builder: LedgerBuilder, documents: int, names: dict[str, str]
) -> dict[str, list[Numbered]]:
    numbered: dict[str, list[Numbered]] = {name: [] for name in names.values()}
    header = len(names) + 1  # PeerRegistered per store, SeriesConfigured

    def records() -> Iterator[Record]:
        for record in builder.ledger(header + 2 * documents, finish_pending=True):
            if record[2] == "NumberIssued":
                data = json.loads(record[4])
                numbered[names[data["peer_id"]]].append(
                    Numbered(
                        int(data["doc_id"]),
                        data["formatted"],
                        date.fromisoformat(data["document"]["DocData"]["Date"]),
                        data["reservation_id"],
                    )
                )
            yield record

    async with connected(pg_url) as conn:
        await migrate(conn)
        await copy_events(conn, records())
    for docs in numbered.values():
        docs.sort(key=lambda d: d.invoice_id)
    return numbered


async def preload_ledger(pg_url: str, stores: Sequence[str], documents: int) -> Ledger:
    """``documents`` invoices numbered (series ``invoice`` with its defaults) and issued across
    ``stores`` in the ledger at ``pg_url``, its projections rebuilt."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    tokens = {name: secrets.token_urlsafe(32) for name in stores}
    peers = [
        Peer(str(uuid.uuid4()), name, hashlib.sha256(tokens[name].encode()).hexdigest()) for name in stores
    ]
    builder = LedgerBuilder(peers=peers, invoice=SeriesSettings(), first_day=FIRST_DAY, churn=False)
    numbered = await _copy(pg_url, builder, documents, {p.peer_id: p.name for p in peers})
    await asyncio.to_thread(rebuild_projections, pg_url)
    async with connected(pg_url) as conn:
        head = await conn.fetchval("SELECT max(position) FROM events")
    return Ledger(
        tokens=tokens,
        peer_ids={p.name: p.peer_id for p in peers},
        numbered=numbered,
        head=head,
        seconds=loop.time() - started,
    )


async def remember_numbered(store_url: str, numbered: Sequence[Numbered]) -> None:
    """The agent's tables as its relay leaves them once ``numbered`` were all confirmed."""
    if not numbered:
        return
    pool = await create_pool(parse_mysql_url(store_url))
    try:
        await create_agent_tables(pool)
        settled = [
            {
                "reservation_id": n.reservation_id,
                "invoice_id": n.invoice_id,
                "doctype": "invoice",
                "formatted": n.formatted,
                "created_at": datetime.combine(n.day, time(12), UTC).replace(tzinfo=None),
                "confirmed_at": datetime.combine(n.day, time(12, 1), UTC).replace(tzinfo=None),
            }
            for n in numbered
        ]
        async with connection(store_url) as conn:
            for start in range(0, len(settled), SNAPSHOT_PAGE):
                await insert_rows(conn, "mod_concord_outbox", settled[start : start + SNAPSHOT_PAGE])
        rules = queries.DueRules("payment", "payment", AgentSettings.model_fields["credit_note_rule"].default)
        ids = [n.invoice_id for n in numbered]
        for start in range(0, len(ids), SNAPSHOT_PAGE):
            async with pool.acquire() as conn:
                snaps = await queries.snapshots(conn, ids[start : start + SNAPSHOT_PAGE], rules, True)
            await queries.remember_documents(pool, snaps.values(), "issued")
    finally:
        pool.close()
        await pool.wait_closed()
