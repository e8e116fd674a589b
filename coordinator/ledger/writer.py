"""Group commit: one writer per process turns queued commands into one transaction per batch.

Concurrent requests wait in a bounded queue; the writer takes everything waiting (up to
``max_batch``), decides each command against the loaded state, appends all events and
flushes the projections in one transaction (one ``concord_write_batch`` statement), then
answers every caller. A reply is only sent after that statement committed, and
``synchronous_commit`` is on, so an acknowledged number is durable. While that statement
runs, the commands queued meanwhile are read (on a second connection) and decided, so that
a busy ledger costs one round trip per transaction (``_read_next``, docs/ledger.md).

Faults, and why each answer is safe:

- **The database away** (connection lost, restart, failover, a timeout): every caller of the
  batch gets ``LedgerUnavailable`` (503 + Retry-After). The cached state is discarded, the
  connection closed (its session-level ledger lock ends with it), and ``problem()`` says
  why until a batch, or the probe that retries every ``probe_seconds``, reaches a writable
  database again. A batch that failed before its write statement was sent wrote nothing and
  is tried once more on a new connection; after that the outcome is unknown, and the caller
  is told so (reserve, confirm, release, void, update and import are idempotent: a retry
  gets the same answer).
- **One command failing** inside the database or in Python, where no domain rule refused it
  (a value the boundary let through, a bug): the batch's transaction wrote nothing, so the
  batch is split in halves and each half written on its own, down to the one command that
  fails. It alone gets ``CommandFailed``; the others are written and answered as usual.
- **No answer in time:** a caller waits at most ``answer_timeout`` seconds. A command still
  queued then is dropped unwritten; one already in a batch may have been written.
- **A full queue** (``queue_limit`` commands waiting) refuses new commands at once.
- **A bug in the loop itself** ends the loop's run, not the writer: it is started again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter, Gauge, Histogram

from coordinator.db import create_pool
from coordinator.events.canonical import canonical_event, canonical_json, format_recorded_at
from coordinator.ledger import commands as c
from coordinator.ledger import store
from coordinator.ledger.commands import DomainError
from coordinator.ledger.decide import DECIDERS, answer_again
from coordinator.ledger.state import Event, LedgerState
from coordinator.migrations import migrate

log = structlog.get_logger(__name__)

BATCH_SIZE = Histogram(
    "concord_ledger_batch_commands",
    "Commands written per ledger transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
EVENTS = Counter("concord_ledger_events", "Events appended by this process", ["type"])
BATCH_SECONDS = Histogram(
    "concord_ledger_batch_seconds",
    "Duration of one ledger batch, open to commit",
)
FAULTS = Counter(
    "concord_ledger_faults", "Ledger batches that failed, by kind", ["kind"]
)  # database_away | command_failed | writer_crashed
WRITABLE = Gauge("concord_ledger_writable", "1 while this process can write the ledger")
READ_AHEAD = Counter(
    "concord_ledger_read_ahead_batches", "Ledger batches decided while the batch before was being written"
)
QUEUED = Gauge(
    "concord_ledger_queued_commands", "Commands waiting for the ledger", ["lane"]
)  # single | batch

# Errors that say nothing about the commands: the database is away, restarting, read-only,
# out of resources, or did not answer in time. Everything else is a command's own failure.
DATABASE_AWAY: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError included
    TimeoutError,
    asyncpg.InterfaceError,  # ConnectionDoesNotExistError: the connection was closed
    # A pooled connection the server ended while idle may fail its next statement with
    # this ("another operation is in progress"): its protocol state is broken, not the command.
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, statement timeout
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.LockNotAvailableError,  # lock_timeout on the ledger lock
    asyncpg.ReadOnlySQLTransactionError,  # a standby after a failover
    asyncpg.TransactionRollbackError,  # serialization failure, deadlock
)


EXPIRY_SECONDS = 0.1  # how often callers past their answer timeout are answered
# How long the ledger lock is kept once the queue is empty, for the next command: another
# replica waits at most this much longer for it.
LOCK_LINGER = 0.002

# Batch items a ledger transaction takes while single requests flow (one came within
# SINGLES_RECENT seconds): a request waits for the transaction under way and then its own,
# so both stay short (about 0.2 ms a command). With no single request about, batch items
# fill whole transactions (max_batch), which is what makes a batch cheap per number.
# 4 rather than 16: measured beside 500 single reserves a second (docs/benchmarks.md,
# "Batches"), a transaction took about 9 ms with 16 and 6 ms with 4, and every single
# request waits for one transaction besides its own.
BULK_BESIDE_SINGLES = 4
SINGLES_RECENT = 0.5

# While the ledger is busy, the next batch is read and decided while the one before is
# written (_read_next), without opening it: no lock hand-over then. A batch is opened, so a
# waiting replica gets the lock, at least this often.
HANDOVER_SECONDS = 0.1

REFUSED_UNWRITTEN = (
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.TransactionRollbackError,
    asyncpg.InsufficientResourcesError,
    asyncpg.LockNotAvailableError,
)


class LedgerUnavailable(Exception):
    """The ledger cannot be written right now (503 + Retry-After).

    ``outcome_unknown``: the command was in a write whose commit was not confirmed, so it
    may have been written. ``busy``: refused at once, the queue being full.
    """

    def __init__(self, reason: str, *, outcome_unknown: bool = False, busy: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome_unknown = outcome_unknown
        self.busy = busy


class CommandFailed(Exception):
    """One command failed where no domain rule refused it; nothing of it was written.
    ``invalid_value``: PostgreSQL refused one of its values (SQLSTATE class 22)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.invalid_value = isinstance(error, asyncpg.DataError)
        self.detail = str(error)


class _DatabaseAway(Exception):
    def __init__(self, error: BaseException, *, written: bool) -> None:
        super().__init__(repr(error))
        self.error = error
        self.written = written


@dataclass(slots=True)
class _Pending:
    command: c.Command
    future: asyncio.Future[dict[str, Any]]
    sent: bool = False  # in a write statement: it may have been written


@dataclass(slots=True)
class _ReadAhead:
    """The next batch, decided on ``state`` as the batch being written leaves it, and its
    writes; it holds once that batch committed at ``after``, and while its callers wait."""

    state: LedgerState
    live: list[_Pending]
    results: list[tuple[_Pending, Any]]
    out: _Batch
    writes: bytes | None
    after: int


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

    def emitter(self, event_id: str | None) -> _Emitter:
        return _Emitter(self, event_id)

    def append(self, event_id: str, type_: str, stream: str, data: dict[str, Any]) -> Event:
        position = self.position + 1
        data_json = canonical_json(data)
        body = canonical_event(position, event_id, type_, stream, data_json, self.stamp)
        digest = hashlib.sha256(self.hash + body).digest()
        event = Event(position, event_id, type_, stream, data, self.recorded_at, self.hash, digest, data_json)
        self.state.apply(event)
        self.events.append(event)
        self.by_id[event_id] = event
        self.position, self.hash = position, digest
        return event


class _Emitter:
    """``decide.Emit`` for one command: its first event takes the command's event id (when
    it has one), later ones and every new id a random UUID."""

    def __init__(self, batch: _Batch, event_id: str | None) -> None:
        self._batch = batch
        self._event_id = event_id

    def __call__(self, type_: str, stream: str, data: dict[str, Any], /) -> Event:
        event_id, self._event_id = self._event_id or self.new_id(), None
        return self._batch.append(event_id, type_, stream, data)

    def new_id(self) -> str:
        return _random_ids.next()


class _RandomIds:
    """Version-4 UUIDs, as ``uuid.uuid4()`` makes them, from one read of the system's random
    source per 256 ids: a read per id (a system call) took a sixth of the writer's time."""

    _READ = 16 * 256

    def __init__(self) -> None:
        self._random = b""
        self._at = 0

    def next(self) -> str:
        if self._at == len(self._random):
            self._random, self._at = os.urandom(self._READ), 0
        raw = self._random[self._at : self._at + 16]
        self._at += 16
        return str(uuid.UUID(bytes=raw, version=4))


_random_ids = _RandomIds()


class LedgerWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 512,
        queue_limit: int = 10_000,
        answer_timeout: float = 10.0,
        acquire_timeout: float = 5.0,
        probe_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._answer_timeout = answer_timeout
        self._acquire_timeout = acquire_timeout
        self._probe_seconds = probe_seconds
        # Two lanes: single requests, and the items of batch requests. Each ledger
        # transaction takes every waiting single request first, then batch items: few while
        # single requests flow, so that none waits behind a big batch (_take).
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_limit)
        self._bulk: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_limit)
        self._arrived = asyncio.Event()
        self._single_at = -SINGLES_RECENT  # loop time a single request was last taken
        self._bulk_at = -float("inf")  # loop time items of batch requests were last taken
        # (deadline, commands of one call) in the order of the calls, for _expire.
        self._deadlines: collections.deque[tuple[float, list[_Pending]]] = collections.deque()
        QUEUED.labels("single").set_function(self._queue.qsize)
        QUEUED.labels("batch").set_function(self._bulk.qsize)
        self._tasks: list[asyncio.Task[None]] = []
        self._held: list[_Pending] = []  # the batch the loop works on: answered if it crashes
        self._next: list[_Pending] = []  # taken while the batch before was written (_read_next)
        self._ahead: _ReadAhead | None = None  # self._next, decided
        self._stopping = False
        self._state = LedgerState()
        self._state_at: int | None = None  # ledger position the cached small tables reflect
        # Kept for the writer's life: no pool hand-over and reset query per batch.
        self._conn: asyncpg.Connection | None = None
        self._holding = False  # the connection holds the ledger lock (store.open_batch)
        self._opened_at = 0.0  # loop time of the last open, which hands the lock over
        self._reader: asyncpg.Connection | None = None  # reads ahead while the writer is busy
        self._problem: str | None = None  # why the ledger cannot be written; None: it can
        self._down = asyncio.Event()  # set while there is a problem: the probe runs

    async def start(self) -> None:
        WRITABLE.set(1)
        self._tasks = [
            asyncio.create_task(self._supervise(), name="ledger-writer"),
            asyncio.create_task(self._probe(), name="ledger-probe"),
            asyncio.create_task(self._expire(), name="ledger-expiry"),
        ]

    def numbering_burst(self, seconds: float = 1.0) -> bool:
        """Whether items of batch requests were written within ``seconds`` (or wait): agents
        are numbering a burst, which background checks let go first."""
        return not self._bulk.empty() or asyncio.get_running_loop().time() - self._bulk_at < seconds

    def problem(self) -> str | None:
        """Why the ledger cannot be written right now, or None when it can."""
        return self._problem

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, pending in self._deadlines:  # queued, or in a batch the loop held
            self._answer(
                pending,
                LedgerUnavailable(
                    "the coordinator is stopping", outcome_unknown=any(p.sent for p in pending)
                ),
            )
        await self._drop_connection()

    async def execute(self, command: c.Command) -> dict[str, Any]:
        """Decide and write ``command``; its answer once durable. Raises ``DomainError``
        (refused), ``LedgerUnavailable`` (503) or ``CommandFailed``."""
        [answer] = await self.execute_many([command])
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def execute_many(self, commands: Sequence[c.Command]) -> list[Any]:
        """Decide and write ``commands`` in their order, as one run of the queue (so in one
        ledger transaction, or consecutive ones beyond ``max_batch``); each gets an answer
        of its own: its result, or the exception it alone got (``DomainError``,
        ``CommandFailed``, ``LedgerUnavailable``). Raises ``LedgerUnavailable`` when the
        queue has no room for all of them: then none was queued."""
        if self._stopping:
            raise LedgerUnavailable("the coordinator is stopping")
        lane = self._queue if len(commands) == 1 else self._bulk
        if lane.maxsize - lane.qsize() < len(commands):
            _compact(lane)
        if lane.maxsize - lane.qsize() < len(commands):
            raise LedgerUnavailable(f"the ledger is busy: {lane.qsize()} commands are waiting", busy=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._answer_timeout
        pending = [_Pending(cmd, loop.create_future()) for cmd in commands]
        for item in pending:  # no await in between: nothing else queues among them
            lane.put_nowait(item)
        self._arrived.set()
        self._deadlines.append((deadline, pending))
        answers: list[Any] = []
        for item in pending:  # each is answered by the writer, or by _expire in time
            try:
                answers.append(await item.future)
            except Exception as exc:
                answers.append(exc)
        return answers

    async def _expire(self) -> None:
        """Answer every command whose caller has waited ``answer_timeout``: one task for all
        of them rather than a timer per request (the deadlines come in order, the timeout
        being the same for all). A command still queued is then skipped unwritten."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(EXPIRY_SECONDS)
            now = loop.time()
            while self._deadlines and (
                self._deadlines[0][0] <= now or all(item.future.done() for item in self._deadlines[0][1])
            ):
                _, pending = self._deadlines.popleft()  # answered calls go at once
                for item in pending:
                    if not item.future.done():
                        item.future.set_exception(
                            LedgerUnavailable(
                                f"the ledger did not answer within {self._answer_timeout:g} s",
                                outcome_unknown=item.sent,
                            )
                        )

    # -- the loop ---------------------------------------------------------------------------
    async def _supervise(self) -> None:
        while True:
            try:
                await self._run()
            except Exception:
                FAULTS.labels("writer_crashed").inc()
                log.exception("ledger_writer_crashed")
                for held in (self._held, self._next):  # the batch read ahead was never sent
                    self._answer(
                        held,
                        LedgerUnavailable(
                            "the ledger writer failed and was started again",
                            outcome_unknown=any(p.sent for p in held),
                        ),
                    )
                self._held, self._next = [], []
                self._discard_state()
                await self._drop_connection()

    async def _run(self) -> None:
        while True:
            self._held = batch = await self._take()
            try:
                await self._write_isolating(batch)
            except asyncio.CancelledError:  # stopping: nobody will answer them later
                for held in (batch, self._next):
                    self._answer(
                        held,
                        LedgerUnavailable(
                            "the coordinator is stopping", outcome_unknown=any(p.sent for p in held)
                        ),
                    )
                raise
            self._held = []
            if not await self._more_soon():  # let other replicas append
                await self._release()

    async def _more_soon(self) -> bool:
        """Whether a command is queued, or arrives within LOCK_LINGER: then the lock is kept
        for it, saving the release and the next batch's wait for the lock (two round trips
        per transaction while requests trickle in)."""
        if self._next or not (self._queue.empty() and self._bulk.empty()):
            return True
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), LOCK_LINGER)
        except TimeoutError:
            return False
        return True

    async def _take(self) -> list[_Pending]:
        """The next commands whose callers still wait (a caller that timed out is skipped):
        the single requests first, then batch items (few while single requests flow)."""
        while True:
            batch, self._next = [p for p in self._next if not p.future.done()], []
            batch = batch or self._take_now()
            if batch:
                return batch
            self._arrived.clear()
            await self._arrived.wait()

    def _take_now(self) -> list[_Pending]:
        now = asyncio.get_running_loop().time()
        batch = _drain(self._queue, self._max_batch)
        if batch:
            self._single_at = now
        room = self._max_batch - len(batch)
        if now - self._single_at < SINGLES_RECENT:
            room = min(room, BULK_BESIDE_SINGLES)
        bulk = _drain(self._bulk, room)
        if bulk:
            self._bulk_at = now
        return batch + bulk

    async def _write_isolating(self, batch: list[_Pending]) -> None:
        """Write ``batch``; if a command fails it, write the rest without it (by halves)."""
        try:
            results = await self._write_retrying(batch)
        except _DatabaseAway as away:
            FAULTS.labels("database_away").inc()
            self._answer(batch, LedgerUnavailable(_reason(away.error), outcome_unknown=away.written))
            return
        except Exception as exc:
            FAULTS.labels("command_failed").inc()
            for pending in batch:
                pending.sent = False  # the failed statement committed nothing
            self._discard_state()
            await self._release()
            if len(batch) == 1:
                log.error("ledger_command_failed", command=type(batch[0].command).__name__, error=repr(exc))
                self._answer(batch, CommandFailed(exc))
                return
            half = len(batch) // 2
            await self._write_isolating(batch[:half])
            await self._write_isolating(batch[half:])
            return
        for pending, result in results:
            self._answer([pending], result)

    async def _write_retrying(self, batch: list[_Pending]) -> list[tuple[_Pending, Any]]:
        """``_write``, once more on a new connection when the database failed it before its
        write statement was sent (a connection closed while idle: nothing was written)."""
        for attempt in (1, 2):
            try:
                return await self._write(batch)
            except DATABASE_AWAY as exc:
                # The server refused the statement with an error of its own: it committed
                # nothing. Only a connection that ended without an answer leaves it unknown.
                written = any(p.sent for p in batch) and not isinstance(exc, REFUSED_UNWRITTEN)
                self._lost_database(exc)
                if attempt == 2 or written:
                    raise _DatabaseAway(exc, written=written) from exc
        raise AssertionError("unreachable")

    async def _write(self, batch: list[_Pending]) -> list[tuple[_Pending, Any]]:
        """Each command of ``batch`` whose caller still waits, with its answer (a result or
        a DomainError), once written. While it is written, the commands queued meanwhile
        are read and decided (``_read_next``)."""
        started = time.perf_counter()
        conn = await self._connection()
        state = self._state
        ahead = self._ahead
        if ahead is not None and not self._ahead_holds(ahead, batch):
            self._discard_state()  # it holds the decisions of a batch that is not written
            state, ahead = self._state, None
        self._ahead = None
        if ahead is None:
            live, results, out = await self._open_and_decide(conn, state, batch)
            writes = store.batch_writes(state, out.events) if out.events else None
        else:
            live, results, out, writes = ahead.live, ahead.results, ahead.out, ahead.writes
            READ_AHEAD.inc()
        self._state_at = None  # until this batch commits
        for pending in live:
            pending.sent = True
        if writes is not None:
            write = asyncio.ensure_future(store.write_batch(conn, writes))
            try:
                read_failed = not await self._read_next(state, out, write)
            except BaseException:
                write.cancel()  # stopping: the caller is told the outcome is unknown
                raise
            await write
            if read_failed:
                self._discard_state()  # it may hold part of a decision: load it again
        if state is self._state:
            self._state_at = out.position
        self._writable()
        # Per type, not per event: a labels() lookup per event showed in the writer's profile.
        for type_, count in collections.Counter(event.type for event in out.events).items():
            EVENTS.labels(type_).inc(count)
        BATCH_SIZE.observe(len(live))
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return results

    async def _open_and_decide(
        self, conn: asyncpg.Connection, state: LedgerState, batch: list[_Pending]
    ) -> tuple[list[_Pending], list[tuple[_Pending, Any]], _Batch]:
        """Open the batch (the ledger lock, its head, the rows its commands name) and decide it."""
        commands = [p.command for p in batch]
        request = store.batch_request(commands, self._state_at, state)
        self._state_at = None  # until this batch commits
        opened = await store.open_batch(conn, state, request, holding=self._holding)
        self._holding = True
        self._opened_at = asyncio.get_running_loop().time()
        lookups = store.import_lookups(commands, state)
        if lookups != request["external_numbers"]:
            # An import read with settings that another process changed meanwhile (or with
            # none cached yet): open again, now that the state has the current ones.
            request = store.batch_request(commands, opened.position, state)
            opened = await store.open_batch(conn, state, request, holding=True)
        # A caller that gave up while the ledger lock was awaited was told nothing was written:
        # so it is not. From here to the write statement nothing awaits, so none can give up.
        live = [p for p in batch if not p.future.done()]
        out = _Batch(state, opened.position, opened.hash)
        return live, [(p, self._decide(state, p.command, opened.known, out)) for p in live], out

    async def _read_next(self, state: LedgerState, writing: _Batch, write: asyncio.Future[None]) -> bool:
        """While ``writing`` is written (``write``): take the commands queued by then, or the
        first to arrive before it is done, read their rows on the reader connection and
        decide them on ``state`` as ``writing`` leaves it, so that they are written as soon
        as it committed. Single requests arriving while it is still being written join that
        batch the same way, so that each waits for one transaction besides its own rather
        than two. This process holds the ledger lock throughout (nobody else writes), and
        what ``writing`` changed is in ``state``, kept over the rows read
        (``store.load_read_ahead``). Returns False when ``state`` may now hold part of a
        decision that is not in ``self._ahead`` (a command failed where no rule refused it,
        or a later read failed): the next batch then opens as usual."""
        loop = asyncio.get_running_loop()
        if self._next or self._stopping or loop.time() - self._opened_at > HANDOVER_SECONDS:
            return True
        reader = await self._reader_connection()
        if reader is None:
            return True
        out = _Batch(state, writing.position, writing.hash)
        live: list[_Pending] = []
        results: list[tuple[_Pending, Any]] = []
        while not write.done() and len(self._next) < self._max_batch:
            first = not self._next
            if self._queue.empty() and (not first or self._bulk.empty()):
                await self._arrival_or(write)
                continue
            if first:
                taken = self._take_now()
            else:
                taken = _drain(self._queue, self._max_batch - len(self._next))
                self._single_at = loop.time()
            self._next += taken
            request = store.batch_request([p.command for p in taken], None, state)
            try:
                got = await store.read_batch(reader, request)
            except Exception as exc:  # the batch opens as usual, and meets the fault there
                log.warning("ledger_read_ahead_failed", error=repr(exc))
                await self._drop_reader()
                return first  # after the first read, ``state`` holds decisions
            # No await from here to the write statement: a caller that gave up meanwhile is
            # found by _ahead_holds, and the batch is decided again without it.
            more = [p for p in taken if not p.future.done()]
            try:
                # The events being written may not have been committed when the read ran.
                load = store.load_read_ahead if first else store.load_rows_read_ahead
                known = load(state, request, got) | writing.by_id
                results += [(p, self._decide(state, p.command, known, out)) for p in more]
                writes = store.batch_writes(state, out.events) if out.events else None
            except Exception as exc:
                log.warning("ledger_read_ahead_failed", error=repr(exc))
                return False
            live += more
            self._ahead = _ReadAhead(state, live, results, out, writes, writing.position)
        return True

    async def _arrival_or(self, write: asyncio.Future[None]) -> None:
        """Until a command is queued or ``write`` is done."""
        self._arrived.clear()
        arrived = asyncio.ensure_future(self._arrived.wait())
        try:
            await asyncio.wait((write, arrived), return_when=asyncio.FIRST_COMPLETED)
        finally:
            arrived.cancel()

    def _ahead_holds(self, ahead: _ReadAhead, batch: list[_Pending]) -> bool:
        """Whether ``ahead`` is ``batch`` decided on the ledger as it now is: the batch it
        followed committed, and every caller of it still waits (``_take`` leaves out those
        who gave up, so ``batch`` is then shorter)."""
        return (
            ahead.state is self._state
            and ahead.after == self._state_at
            and len(ahead.live) == len(batch)
            and all(a is b for a, b in zip(ahead.live, batch, strict=True))
        )

    @staticmethod
    def _decide(
        state: LedgerState, cmd: c.Command, known: dict[str, Event], batch: _Batch
    ) -> dict[str, Any] | DomainError:
        seen = known.get(cmd.event_id or "") or batch.by_id.get(cmd.event_id or "")
        event_id = cmd.event_id
        try:
            if seen is not None:
                again = answer_again(state, cmd, seen)
                if again is not None:
                    return again
                event_id = None  # an import runs again; its id is taken already
            return DECIDERS[type(cmd)](state, cmd, batch.emitter(event_id))
        except DomainError as refused:
            return refused

    @staticmethod
    def _answer(batch: Sequence[_Pending], result: dict[str, Any] | Exception) -> None:
        for pending in batch:
            if pending.future.done():  # its caller stopped waiting
                continue
            if isinstance(result, Exception):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    # -- the connection and the database's health --------------------------------------------
    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or _closed(self._conn):
            await self._drop_connection()
            self._conn = await self._pool.acquire(timeout=self._acquire_timeout)
        return self._conn

    async def _drop_connection(self) -> None:
        self._holding = False  # a session's advisory locks end with it
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if not _closed(conn):
                conn.terminate()
        await self._drop_reader()

    async def _reader_connection(self) -> asyncpg.Connection | None:
        """The connection that reads ahead, taken from the pool the first time the writer is
        busy, when two are free (idle, or not opened yet): request handlers keep at least
        one. Kept, like the writer's own, until it fails or the writer stops (giving it back
        whenever the writer goes idle cost a reset round trip before the lock's release).
        None: no reading ahead for now."""
        if self._reader is not None and not _closed(self._reader):
            return self._reader
        self._reader = None
        pool = self._pool
        if pool.get_max_size() - pool.get_size() + pool.get_idle_size() < 2:
            return None
        try:
            self._reader = await self._pool.acquire(timeout=self._acquire_timeout)
        except Exception as exc:
            log.warning("ledger_reader_unavailable", error=repr(exc))
        return self._reader

    async def _drop_reader(self) -> None:
        """Give the reader back to the pool (the writer stops, or the connection failed)."""
        reader, self._reader = self._reader, None
        if reader is None:
            return
        try:
            await self._pool.release(reader, timeout=self._acquire_timeout)
        except Exception:
            reader.terminate()

    async def _release(self) -> None:
        """Give up the ledger lock (unlock_all: after a failed statement it is unknown whether,
        and how often, the session took it); a connection that cannot is closed instead."""
        if self._conn is None or _closed(self._conn):
            await self._drop_connection()
            return
        try:
            await store.release_ledger(self._conn)
            self._holding = False
        except Exception as exc:
            log.warning("ledger_lock_release_failed", error=repr(exc))
            await self._drop_connection()

    def _discard_state(self) -> None:
        """After any failed batch: the cached state may hold its undone effects."""
        self._state = LedgerState()
        self._state_at = None
        self._ahead = None  # decided on the state discarded

    def _lost_database(self, exc: BaseException) -> None:
        self._discard_state()
        self._holding = False
        if self._conn is not None and not _closed(self._conn):
            self._conn.terminate()  # _connection() replaces it
        reason = _reason(exc)
        if self._problem is None:
            log.warning("ledger_unwritable", reason=reason)
        self._problem = reason
        WRITABLE.set(0)
        self._down.set()

    def _writable(self) -> None:
        if self._problem is not None:
            log.info("ledger_writable_again", was=self._problem)
        self._problem = None
        WRITABLE.set(1)
        self._down.clear()

    async def _probe(self) -> None:
        """While the ledger cannot be written, ask the database every ``probe_seconds`` whether
        it can be, so health turns good again without waiting for a request."""
        while True:
            await self._down.wait()
            await asyncio.sleep(self._probe_seconds)
            try:
                async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                    # On in a standby, and where an operator made the database read-only.
                    read_only = await conn.fetchval(
                        "SELECT current_setting('transaction_read_only') = 'on'",
                        timeout=self._acquire_timeout,
                    )
            except Exception as exc:
                if self._problem is not None:
                    self._problem = _reason(exc)
                continue
            if read_only:
                self._problem = READ_ONLY
            elif self._down.is_set():
                self._writable()


def _compact(lane: asyncio.Queue[_Pending]) -> None:
    """Drop the commands whose callers were answered already (their answer timeout ran out
    while the writer was held up): only commands still waited for count against the limit."""
    waiting = _drain(lane, lane.qsize())
    for pending in waiting:
        lane.put_nowait(pending)


def _drain(lane: asyncio.Queue[_Pending], most: int) -> list[_Pending]:
    taken: list[_Pending] = []
    while len(taken) < most and not lane.empty():
        pending = lane.get_nowait()
        if not pending.future.done():
            taken.append(pending)
    return taken


READ_ONLY = "the database is read-only (a standby, or set so by an operator)"


def _closed(conn: asyncpg.Connection) -> bool:
    """A pool connection that closed (the server ended it, or a cancelled statement left it
    unusable) has gone back to the pool by itself, and its proxy refuses every call."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncpg.QueryCanceledError):
        return "the database did not answer in time"
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return "the ledger lock was not granted in time (another replica holds it)"
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return READ_ONLY
    detail = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError):
        return f"the database does not accept connections ({detail})"
    return f"the database is unavailable ({detail})"


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
