"""Group commit: one writer per process turns queued commands into one transaction per batch.

Concurrent requests wait in a queue; the writer takes everything waiting (up to
``max_batch``), decides each command against the loaded state, appends all events and
flushes the projections in one transaction (one ``concord_write_batch`` statement), then
answers every caller. A reply is only sent after that statement committed, and
``synchronous_commit`` is on, so an acknowledged number is durable. If the transaction
fails, every caller of the batch gets the error and nothing of the batch was written;
retries are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter, Histogram

from coordinator.db import create_pool
from coordinator.events import catalogue as ev
from coordinator.events.canonical import canonical_event, canonical_json, format_recorded_at
from coordinator.ledger import commands as c
from coordinator.ledger import store
from coordinator.ledger.commands import DomainError
from coordinator.ledger.decide import DECIDERS, receipt, reservation_view
from coordinator.ledger.state import Event, LedgerState
from coordinator.migrations import migrate

log = structlog.get_logger(__name__)

BATCH_SIZE = Histogram(
    "concord_ledger_batch_commands", "Commands written per ledger transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
EVENTS = Counter("concord_ledger_events", "Events appended by this process", ["type"])
BATCH_SECONDS = Histogram(
    "concord_ledger_batch_seconds", "Duration of one ledger batch, open to commit",
)


@dataclass
class _Pending:
    command: c.Command
    future: asyncio.Future[dict[str, Any]]


@dataclass
class _Batch:
    """Events of one transaction, chained onto the head read under the ledger lock."""

    state: LedgerState
    position: int
    hash: bytes
    recorded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    events: list[Event] = field(default_factory=list)
    by_id: dict[str, Event] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stamp = format_recorded_at(self.recorded_at)

    def emitter(self, event_id: str | None):
        first = [event_id]

        def emit(type_: str, stream: str, data: dict[str, Any]) -> Event:
            eid = first.pop() if first and first[0] else str(uuid.uuid4())
            first.clear()
            position = self.position + 1
            data_json = canonical_json(data)
            body = canonical_event(position, eid, type_, stream, data_json, self.stamp)
            digest = hashlib.sha256(self.hash + body).digest()
            event = Event(position, eid, type_, stream, data, self.recorded_at, self.hash, digest,
                          data_json)
            self.state.apply(event)
            self.events.append(event)
            self.by_id[eid] = event
            self.position, self.hash = position, digest
            return event

        return emit


class LedgerWriter:
    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 512) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._state = LedgerState()
        self._state_at: int | None = None  # ledger position the cached small tables reflect
        # Kept for the writer's life: no pool hand-over and reset query per batch.
        self._conn: asyncpg.Connection | None = None
        self._holding = False  # the connection holds the ledger lock (store.open_batch)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(ConnectionError("the coordinator is stopping"))
        await self._drop_connection()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            await self._drop_connection()
            self._conn = await self._pool.acquire()
        return self._conn

    async def _drop_connection(self) -> None:
        self._holding = False  # a session's advisory locks end with it
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await self._pool.release(conn, timeout=5)

    async def execute(self, command: c.Command) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(command, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._write(batch)
            except Exception as exc:  # the whole batch failed: nothing was written
                self._state_at = None
                log.warning("ledger_batch_failed", commands=len(batch), error=repr(exc))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                await self._release()
                continue
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, DomainError):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
            if self._queue.empty():  # nothing more to write: let other replicas append
                await self._release()

    async def _release(self) -> None:
        if self._conn is None or self._conn.is_closed():
            await self._drop_connection()
            return
        try:
            await store.release_ledger(self._conn)
            self._holding = False
        except Exception as exc:  # the connection is unusable; closing it frees the lock
            log.warning("ledger_lock_release_failed", error=repr(exc))
            self._conn.terminate()
            await self._drop_connection()

    async def _write(self, batch: list[_Pending]) -> list[dict[str, Any] | DomainError]:
        started = time.perf_counter()
        commands = [p.command for p in batch]
        conn = await self._connection()
        request = store.batch_request(commands, self._state_at)
        self._state_at = None  # until this batch commits
        state = self._state
        opened = await store.open_batch(conn, state, request, holding=self._holding)
        self._holding = True
        out = _Batch(state, opened.position, opened.hash)
        results = [self._decide(state, cmd, opened.known, out) for cmd in commands]
        await store.write_batch(conn, state, out.events)
        self._state_at = out.position
        for event in out.events:
            EVENTS.labels(event.type).inc()
        BATCH_SIZE.observe(len(batch))
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return results

    @staticmethod
    def _decide(state: LedgerState, cmd: c.Command, known: dict[str, Event],
                batch: _Batch) -> dict[str, Any] | DomainError:
        seen = known.get(cmd.event_id or "") or batch.by_id.get(cmd.event_id or "")
        try:
            if seen is not None:
                return _answer_again(state, seen)
            return DECIDERS[type(cmd)](state, cmd, batch.emitter(cmd.event_id))
        except DomainError as refused:
            return refused


def _answer_again(state: LedgerState, event: Event) -> dict[str, Any]:
    """A retry of a request whose event is already in the ledger gets the same answer."""
    if event.type in ev.RESERVATION_EVENTS:
        view = reservation_view(state.reservations[event.data["reservation_id"]])
        return {**view, "receipt": receipt(event.position, event.hash)}
    return {"receipt": receipt(event.position, event.hash), "data": event.data}


@contextlib.asynccontextmanager
async def open_ledger(url: str, *, pool_size: int) -> AsyncIterator[tuple[asyncpg.Pool, LedgerWriter]]:
    """A pool on a migrated database and a running writer, for CLI commands (serve has its
    own lifecycle in app.py). ``pool_size`` counts the writer's connection."""
    pool = await create_pool(url, size=pool_size)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        writer = LedgerWriter(pool)
        await writer.start()
        try:
            yield pool, writer
        finally:
            await writer.stop()
    finally:
        await pool.close()
