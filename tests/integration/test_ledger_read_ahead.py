"""The ledger writer decides the next batch while the one before is being written.

Each test holds the batch being written inside PostgreSQL (another session holds the events
table in EXCLUSIVE mode: reads go on, the append waits), queues the next batch meanwhile,
and waits until the writer has read that batch's rows on its second connection. The next
batch must then see everything the unwritten one did, whatever the read returned; a caller
who gave up meanwhile is not written; a batch read ahead of one the database lost is
written on its own, not lost; and single requests arriving later join it. Last, the writer
tells when items of batch requests are being written (the background checks wait then).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import date, datetime
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from coordinator.db import create_pool
from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerUnavailable, LedgerWriter
from coordinator.migrations import migrate
from tests.support.concord_cli import concord

DOCUMENT = {"ClientData": {}, "DocData": {"Total": "1.00"}}
DATE = date(2026, 3, 1)


async def _writer(database_url: str, *, answer_timeout: float = 10.0) -> tuple[asyncpg.Pool, LedgerWriter]:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(database_url, size=4)
    writer = LedgerWriter(pool, answer_timeout=answer_timeout)
    await writer.start()
    return pool, writer


@contextlib.asynccontextmanager
async def _ledger(database_url: str, answer_timeout: float) -> AsyncIterator[tuple[LedgerWriter, str]]:
    """A running writer and a registered store's peer id."""
    pool, writer = await _writer(database_url, answer_timeout=answer_timeout)
    try:
        peer = await writer.execute(
            c.RegisterPeer(name="north", url="http://127.0.0.1:1", token_sha256="0" * 64)
        )
        yield writer, peer["peer_id"]
    finally:
        await writer.stop()
        await pool.close()


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[tuple[LedgerWriter, str]]:
    async with _ledger(database_url, 10.0) as running:
        yield running


@pytest.fixture
async def impatient_ledger(database_url: str) -> AsyncIterator[tuple[LedgerWriter, str]]:
    """Callers give up after a second."""
    async with _ledger(database_url, 1.0) as running:
        yield running


class Blocker:
    """Holds the events table in EXCLUSIVE mode: the writer's append waits, reads go on."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._tx = conn.transaction()

    async def hold(self) -> None:
        await self._tx.start()
        await self.conn.execute("LOCK TABLE events IN EXCLUSIVE MODE")

    async def let_go(self) -> None:
        await self._tx.commit()

    async def until(self, query: str, what: str, within: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        # Inside its transaction, this session would see the activity statistics as cached
        # at their first read: they are read afresh every time.
        while not (
            await self.conn.execute("SELECT pg_stat_clear_snapshot()"),
            await self.conn.fetchval(query),
        )[1]:
            assert loop.time() < deadline, f"the writer never {what}"
            await asyncio.sleep(0.01)

    async def until_append_waits(self) -> None:
        await self.until(
            "SELECT count(*) > 0 FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted",
            "waited to append",
        )

    async def now(self) -> datetime:
        moment: datetime = await self.conn.fetchval("SELECT clock_timestamp()")
        return moment

    async def until_read_ahead(self, since: datetime | None = None) -> None:
        """Until the writer's second connection has read a batch (one begun after ``since``)."""
        later = f" AND query_start > '{since.isoformat()}'::timestamptz" if since else ""
        await self.until(
            "SELECT count(*) > 0 FROM pg_stat_activity"
            f" WHERE query LIKE 'SELECT concord_read_batch%' AND state = 'idle'{later}",
            "read the next batch ahead",
        )


@pytest.fixture
async def blocker(database_url: str) -> AsyncIterator[Blocker]:
    conn = await asyncpg.connect(database_url)
    try:
        yield Blocker(conn)
    finally:
        await conn.close()


def _read_ahead_batches() -> float:
    return REGISTRY.get_sample_value("concord_ledger_read_ahead_batches_total") or 0.0


def _start(*calls: Awaitable[Any]) -> list[asyncio.Future[Any]]:
    return [asyncio.ensure_future(call) for call in calls]


def _reserve(peer: str, doc_id: str, event_id: str | None = None) -> c.Reserve:
    return c.Reserve(peer_id=peer, doctype="invoice", doc_id=doc_id, date=DATE, event_id=event_id)


async def test_a_batch_read_ahead_sees_what_the_batch_before_did(
    ledger: tuple[LedgerWriter, str], blocker: Blocker, database_url: str
) -> None:
    writer, peer = ledger
    confirmed = await writer.execute(_reserve(peer, "confirmed"))
    released = await writer.execute(_reserve(peer, "released"))
    read_ahead_before = _read_ahead_batches()
    retry_id = str(uuid.uuid4())

    confirm = c.Confirm(reservation_id=confirmed["reservation_id"], peer_id=peer, document=DOCUMENT)
    release = c.Release(reservation_id=released["reservation_id"], peer_id=peer, reason="test")
    repeated = [confirm, _reserve(peer, "again"), _reserve(peer, "retried", retry_id)]

    await blocker.hold()
    first = _start(*map(writer.execute, [*repeated, release]))
    await blocker.until_append_waits()
    # Each of these is answered from rows the first batch changed and has not committed:
    # the read on the second connection cannot see them.
    second = _start(*map(writer.execute, [*repeated, _reserve(peer, "new")]))
    await blocker.until_read_ahead()
    await blocker.let_go()
    issued, again, retried, _ = await asyncio.gather(*first)
    issued_again, again_again, retried_again, new = await asyncio.gather(*second)

    assert _read_ahead_batches() > read_ahead_before
    assert issued_again == issued and issued["state"] == "issued"
    assert again_again["reservation_id"] == again["reservation_id"]
    assert retried.pop("created") and retried_again == retried  # the same answer, as a retry
    # The number the first batch released goes to the next document, first.
    assert new["number"] == released["number"]
    conn = await asyncpg.connect(database_url)
    try:
        issues = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'NumberIssued'")
        reservations = await conn.fetchval("SELECT count(*) FROM reservations")
    finally:
        await conn.close()
    assert (issues, reservations) == (1, 5)
    await asyncio.to_thread(concord, database_url, "audit")  # replayed, the same projections


async def test_callers_who_give_up_while_the_batch_before_is_written_are_not_written(
    impatient_ledger: tuple[LedgerWriter, str], blocker: Blocker
) -> None:
    """Whether they were in the batch read ahead from the start or joined it later."""
    writer, peer = impatient_ledger
    await blocker.hold()
    [written] = _start(writer.execute(_reserve(peer, "written")))
    await blocker.until_append_waits()
    [gave_up] = _start(writer.execute(_reserve(peer, "gave-up")))
    await blocker.until_read_ahead()
    mark = await blocker.now()
    [late] = _start(writer.execute(_reserve(peer, "late")))
    await blocker.until_read_ahead(since=mark)
    for unanswered in (gave_up, late):
        with pytest.raises(LedgerUnavailable) as unwritten:
            await unanswered
        assert not unwritten.value.outcome_unknown  # told: not written
    with pytest.raises(LedgerUnavailable) as unknown:
        await written
    assert unknown.value.outcome_unknown  # its write was under way
    await blocker.let_go()
    after = await writer.execute(_reserve(peer, "after"))
    assert after["number"] == 2, "a command whose caller was told 'not written' was written"
    assert (await writer.execute(_reserve(peer, "written")))["number"] == 1
    assert (await writer.execute(_reserve(peer, "late")))["number"] == 3


async def test_a_batch_read_ahead_of_one_the_database_lost_is_written_on_its_own(
    ledger: tuple[LedgerWriter, str], blocker: Blocker, database_url: str
) -> None:
    writer, peer = ledger
    await blocker.hold()
    [lost] = _start(writer.execute(_reserve(peer, "lost")))
    await blocker.until_append_waits()
    [kept] = _start(writer.execute(_reserve(peer, "kept")))
    await blocker.until_read_ahead()
    await blocker.conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted"
    )
    with pytest.raises(LedgerUnavailable) as unknown:
        await lost
    assert unknown.value.outcome_unknown
    await blocker.let_go()
    # Never sent, so written on a new connection rather than answered 503.
    assert (await kept)["number"] == 1
    assert (await writer.execute(_reserve(peer, "lost")))["number"] == 2
    await asyncio.to_thread(concord, database_url, "audit")


async def test_single_requests_arriving_after_the_read_ahead_join_it(
    ledger: tuple[LedgerWriter, str], blocker: Blocker, database_url: str
) -> None:
    """They wait for the batch being written and their own, not for a third."""
    writer, peer = ledger
    released = await writer.execute(_reserve(peer, "released"))
    await blocker.hold()
    [release] = _start(
        writer.execute(c.Release(reservation_id=released["reservation_id"], peer_id=peer, reason="test"))
    )
    await blocker.until_append_waits()
    [first] = _start(writer.execute(_reserve(peer, "first")))
    await blocker.until_read_ahead()
    mark = await blocker.now()
    later = _start(writer.execute(_reserve(peer, "later")), writer.execute(_reserve(peer, "first")))
    await blocker.until_read_ahead(since=mark)
    await blocker.let_go()
    await release
    first_answer = await first
    later_answer, first_again = await asyncio.gather(*later)

    # Decided on what the unwritten batch and the read-ahead part did.
    assert first_answer["number"] == released["number"]  # the released number goes first
    assert later_answer["number"] == released["number"] + 1
    assert first_again["reservation_id"] == first_answer["reservation_id"]
    conn = await asyncpg.connect(database_url)
    try:
        transactions = await conn.fetchval(
            "SELECT count(DISTINCT recorded_at) FROM events"
            " WHERE type = 'NumberReserved' AND data->>'doc_id' IN ('first', 'later')"
        )
    finally:
        await conn.close()
    assert transactions == 1  # written together, in the batch read ahead
    await asyncio.to_thread(concord, database_url, "audit")


async def test_the_writer_tells_when_agents_number_a_burst(ledger: tuple[LedgerWriter, str]) -> None:
    """The background checks wait while items of batch requests are being written."""
    writer, peer = ledger
    await writer.execute(_reserve(peer, "single"))
    assert not writer.numbering_burst(60)  # single requests are no burst
    await writer.execute_many([_reserve(peer, "batch-1"), _reserve(peer, "batch-2")])
    assert writer.numbering_burst(60)
    assert not writer.numbering_burst(0)  # and it is over once nothing more came within the window
