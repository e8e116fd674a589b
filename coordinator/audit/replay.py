"""`concord audit`: replay the ledger, prove it untampered, optionally rebuild the projections.

One pass over the events of a consistent snapshot (REPEATABLE READ, no lock: the writers
keep writing meanwhile) feeds four checks:

- the hash chain (chain.py): every hash recomputed from the genesis, positions gapless;
- the numbering invariants of docs/design.md §2 (invariants.py);
- the stores' receipts, when given (receipts.py);
- the replay: every event applied by the live code (``LedgerState.apply``) and flushed by
  the live write path (``concord_write_batch``) into a scratch schema
  ``concord_audit_<random>``: unlogged copies (``LIKE … INCLUDING ALL``) of the live
  projection tables, keeping the indexes of their keys only, and a read-only view of the
  ledger. The scratch schema is dropped afterwards.

The replay runs in a transaction that imports the reading snapshot (``SET TRANSACTION
SNAPSHOT``), so it sees the live projections exactly as of the last event read, next to its
own scratch rows: each projection is then compared with its replay row by row by
PostgreSQL (counts, and a join on the key), each difference named by table, key and column.
``peer_liveness`` (heartbeat times) and ``api_tokens`` (operator and reader credentials) are
not ledger facts and are not compared.

``rebuild``: only when chain, invariants, receipts and replay all hold, the live
projections are replaced by the replayed ones in one transaction that holds the ledger's
advisory lock — no batch is written meanwhile — after replaying the events committed since
the snapshot. The rebuild is then recorded in the ledger as a warning, which also moves the
head, so every coordinator process reloads its cached series, counters and pool.
"""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from tqdm import tqdm

from coordinator.advisory_locks import LEDGER
from coordinator.audit.chain import ChainVerifier, stored_body
from coordinator.audit.export import stored_events
from coordinator.audit.findings import Findings
from coordinator.audit.invariants import Invariants
from coordinator.audit.receipts import Receipt, ReceiptCheck
from coordinator.db import connect, create_pool
from coordinator.events import catalogue as ev
from coordinator.ledger import commands as c
from coordinator.ledger import store
from coordinator.ledger.state import Event, LedgerState
from coordinator.ledger.writer import LedgerWriter

# The projections and their keys.
PROJECTIONS: dict[str, tuple[str, ...]] = {
    "series": ("name",),
    "counters": ("series", "period"),
    "released_numbers": ("series", "period", "number"),
    "external_numbers": ("series", "period", "number"),
    "reservations": ("id",),
    "documents": ("peer_id", "doctype", "doc_id"),
    "peers": ("id",),
    "warnings": ("id",),
}
DETAILS_PER_TABLE = 50
# Events per chunk. 500 to 2,000 measured alike: each chunk's work on either side is large
# next to a round trip.
CHUNK = 500


class ReplayFailed(Exception):
    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position


@dataclass
class AuditResult:
    findings: Findings
    position: int
    hash: bytes
    series: list[dict[str, Any]]
    rows: dict[str, int] = field(default_factory=dict)  # live rows compared per table
    differing: int = 0  # projection rows that differ from the replay
    receipts: int = 0
    rebuilt: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "hash": self.hash.hex(),
            "series": self.series,
            "rows": self.rows,
            "receipts": self.receipts,
            "rebuilt": self.rebuilt,
        }


class Replay:
    """Projections rebuilt from the events alone, through the live code, in a scratch schema.

    Chunk by chunk: the rows a chunk's events touch are loaded (``concord_open_batch``), the
    events applied (``LedgerState.apply``), the changed rows written (``concord_write_batch``).
    A chunk's rows are written in the same round trip that loads the next chunk's rows
    (``replay_chunk``), and the caller checks that next chunk meanwhile: the database writes
    while this process checks.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.schema = f"concord_audit_{secrets.token_hex(6)}"
        self.state = LedgerState()
        self.failed: ReplayFailed | None = None
        self._writes: str | None = None  # the last chunk's changed rows, not yet sent
        self._writes_from = 0  # that chunk's first position
        self._replayed = 0
        self._analyze_at = 1000
        # The ledger's head as the batch functions last saw it: while it stays, they need
        # not send the small tables back (this state has them, applied here).
        self._head: int | None = None
        self._in_flight: asyncio.Future[Any] | None = None

    async def create(self) -> None:
        s = self.schema
        tables = "; ".join(
            f"CREATE UNLOGGED TABLE {s}.{t} (LIKE public.{t} INCLUDING ALL)" for t in PROJECTIONS
        )
        # The batch functions read documents' snapshots from the ledger (by position): the
        # scratch "events" shows them the ledger itself, and refuses any write to it.
        # concord_open_batch takes the ledger lock as for a live batch; the replay writes no
        # ledger, so replay_chunk gives it back at once (a session lock: the rebuild's
        # transaction lock stays).
        await self.conn.execute(f"""
            CREATE SCHEMA {s}; {tables};
            CREATE VIEW {s}.events AS SELECT * FROM public.events;
            CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON {s}.events
                FOR EACH ROW EXECUTE FUNCTION public.concord_refuse_change();
            CREATE FUNCTION {s}.replay_chunk(writes text, req jsonb) RETURNS jsonb
            LANGUAGE plpgsql AS $$
            DECLARE
                loaded jsonb;
            BEGIN
                IF writes IS NOT NULL THEN
                    PERFORM concord_write_batch(writes::jsonb);
                END IF;
                loaded := concord_open_batch(req, false, {LEDGER});
                PERFORM pg_advisory_unlock_all();
                RETURN loaded;
            END $$""")
        # Only the indexes of the keys, which the loads go through: the others serve reads
        # the replay never makes (the feed's order, the pending sweep) or enforce uniqueness
        # (one active reservation per number, per document) that the invariants check
        # themselves, naming the event.
        for (drop,) in await self.conn.fetch(
            "SELECT format('DROP INDEX %I.%I', $1::text, c.relname) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = $1::regnamespace"
            " AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
            s,
        ):
            await self.conn.execute(drop)
        # concord_open_batch / concord_write_batch name their tables unqualified: here they
        # resolve to the scratch copies. No JIT: its compile time (hundreds of ms) dwarfs
        # these small statements. A small statistics sample: ANALYZE here is for sizes.
        await self.conn.execute(
            f"SET search_path = {s}, public; SET jit = off; SET default_statistics_target = 10"
        )

    async def drop(self) -> None:
        if self._in_flight is not None:  # the caller's checks failed while it ran
            await asyncio.gather(self._in_flight, return_exceptions=True)
        if self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")
        await self.conn.execute("SET search_path = public")
        await self.conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    def analyze(self, *tables: str) -> str:
        """ANALYZE of the scratch tables (all by default), on their keys only: the plans need
        sizes, and sorting a sample of documents' snapshots would cost more than the rest of
        ANALYZE together."""
        return "ANALYZE " + ", ".join(
            f"{self.schema}.{t} ({', '.join(PROJECTIONS[t])})" for t in tables or PROJECTIONS
        )

    async def step(
        self, rows: list[asyncpg.Record], check: Callable[[list[asyncpg.Record], list[Event]], None]
    ) -> None:
        """Replay one chunk of stored events, handing them to ``check`` while the database
        writes the last chunk's rows and loads this one's: all the work this process can do
        before the rows are back happens meanwhile."""
        if self.failed is not None:
            check(rows, [_event(row) for row in rows])
            return
        self._replayed += len(rows)
        if self._replayed >= self._analyze_at:
            # The scratch tables grow from nothing within one transaction, where autovacuum
            # cannot see them: without fresh statistics the functions' cached plans, made
            # when the tables were tiny, would scan them whole for every chunk.
            self._analyze_at *= 4
            await self.conn.execute(self.analyze())
        req = _request(rows, self._head)
        load = self._in_flight = asyncio.ensure_future(
            self.conn.fetchval(f"SELECT {self.schema}.replay_chunk($1, $2::jsonb)", self._writes, req)
        )
        await asyncio.sleep(0)  # the request goes out before this process's work
        self.state.forget_per_batch()  # the last chunk's rows are written: free them now
        events = [_event(row) for row in rows]
        check(rows, events)
        try:
            got = await load
        except asyncpg.PostgresError as exc:
            self._fail(events[0].position, exc)
            return
        finally:
            self._in_flight = None
        self._head = store.load_opened(self.state, req, got).position
        for event in events:
            try:
                self.state.apply(event)
            except Exception as exc:  # a changed or forged event the live code cannot apply
                self.failed = ReplayFailed(event.position, f"{event.type} cannot be applied: {exc!r}")
                return
        self._writes_from = events[0].position
        self._writes = store.batch_writes(self.state, []).decode()

    async def finish(self) -> None:
        """Write the last chunk's rows."""
        if self._writes is None or self.failed is not None:
            return
        try:
            await self.conn.execute("SELECT concord_write_batch($1::text::jsonb)", self._writes)
        except asyncpg.PostgresError as exc:
            self._fail(None, exc)
        self._writes = None

    def _fail(self, loading: int | None, exc: asyncpg.PostgresError) -> None:
        """Name what failed: the last chunk's writes and/or the loads for the chunk from
        position ``loading``."""
        if self._writes is None:
            self.failed = ReplayFailed(loading or 0, f"loading rows failed: {exc}")
        else:
            also = "" if loading is None else f", or loading rows for position {loading} on,"
            self.failed = ReplayFailed(
                self._writes_from, f"writing the projections of the events from here{also} failed: {exc}"
            )
        self._writes = None


# Events that act on a reservation an earlier event made.
_NAMES_RESERVATION = (ev.RESERVATION_EVENTS - {ev.NUMBER_RESERVED}) | {ev.WARNING_RAISED}


def _request(rows: list[asyncpg.Record], head: int | None) -> dict[str, Any]:
    """What concord_open_batch must load for these events: rows made by earlier chunks."""
    reservation_ids: set[str] = set()
    warning_ids: set[str] = set()
    document_keys: set[tuple[str, str, str]] = set()
    reserved_here: set[str] = set()
    for row in rows:
        type_, d = row["type"], row["data"]
        if not isinstance(d, dict):
            continue  # a malformed event fails in apply
        rid = d.get("reservation_id")
        if type_ == ev.NUMBER_RESERVED:
            reserved_here.add(rid)
        elif type_ in _NAMES_RESERVATION and rid and rid not in reserved_here:
            reservation_ids.add(rid)
        elif type_ == ev.WARNING_RESOLVED and d.get("warning_id"):
            warning_ids.add(d["warning_id"])
        elif type_ == ev.DOCUMENT_UPDATED and {"peer_id", "doctype", "doc_id"} <= d.keys():
            document_keys.add((d["peer_id"], d["doctype"], d["doc_id"]))
    return {
        "cached": head,
        "event_ids": [],
        "reservation_ids": list(reservation_ids),
        "reservation_keys": [],
        "numbers": [],
        "warning_ids": list(warning_ids),
        "warning_keys": [],
        "document_keys": [list(k) for k in document_keys],
        "formatted": [],
    }


def _event(row: asyncpg.Record) -> Event:
    return Event(
        row["position"],
        row["event_id"],
        row["type"],
        row["stream"],
        row["data"],
        datetime.fromisoformat(row["stamp"]),
        bytes(row["prev_hash"]),
        bytes(row["hash"]),
    )


class _Checks:
    """The checks every event goes through, in the main pass and in the rebuild's catch-up."""

    def __init__(self, findings: Findings, receipts: list[Receipt] | None) -> None:
        self.findings = findings
        self.chain = ChainVerifier(findings)
        self.invariants = Invariants(findings)
        self.receipts = ReceiptCheck(findings, receipts or [])

    def check(self, rows: list[asyncpg.Record], events: list[Event]) -> None:
        for row, event in zip(rows, events, strict=True):
            self.chain.feed(event.position, stored_body(row), event.hash, event.prev_hash)
            self.invariants.feed(event.position, event.type, event.data)
            self.receipts.feed(event.position, event.hash, event.type, event.data)

    async def replay(
        self, replay: Replay, chunks: AsyncIterator[list[asyncpg.Record]], progress: Any = None
    ) -> None:
        with _rare_collections():
            async for rows in chunks:
                await replay.step(rows, self.check)
                if progress is not None:
                    progress.update(len(rows))
            await replay.finish()


@contextmanager
def _rare_collections() -> Iterator[None]:
    """Each chunk allocates tens of thousands of containers (the events' data) that reference
    counting frees a chunk later; at the default threshold (700) the cycle collector would
    run dozens of times per chunk over them, about a tenth of the audit's time."""
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


async def audit(
    url: str, *, receipts: list[Receipt] | None = None, rebuild: bool = False, progress: bool | None = None
) -> AuditResult:
    findings = Findings()
    findings.ran.update(("chain", "positions", "invariants", "replay", "projections"))
    if receipts is not None:
        findings.ran.add("receipts")
    checks = _Checks(findings, receipts)
    reader, scratch = await connect(url), await connect(url)
    replay = Replay(scratch)
    try:
        await replay.create()
        async with reader.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await reader.fetchval("SELECT pg_export_snapshot()")
            head, head_hash = await store.head(reader)
            await scratch.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            await scratch.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            with tqdm(
                total=head,
                unit="ev",
                unit_scale=True,
                desc="audit",
                disable=None if progress is None else not progress,
            ) as bar:
                await checks.replay(replay, stored_events(reader, 0, head, size=CHUNK), bar)
            checks.receipts.finish(head)
            result = AuditResult(
                findings, head, head_hash, checks.invariants.summary(), receipts=checks.receipts.count
            )
            if replay.failed is not None:
                findings("replay", str(replay.failed), position=replay.failed.position)
                findings.ran.discard("projections")
                await _duplicate_event_ids(reader, findings)
            else:  # two connections, two queries at once
                await asyncio.gather(_duplicate_event_ids(reader, findings), _compare(replay, result))
        await scratch.execute("COMMIT")
        if rebuild:
            await _rebuild(url, reader, replay, checks, result)
        return result
    finally:
        try:
            await replay.drop()
        finally:
            await reader.close()
            await scratch.close()


async def _duplicate_event_ids(conn: asyncpg.Connection, findings: Findings) -> None:
    # The UNIQUE constraint guarantees it, unless someone with the rights dropped it.
    for row in await conn.fetch(
        "SELECT event_id::text, array_agg(position ORDER BY position) AS positions"
        " FROM events GROUP BY event_id HAVING count(*) > 1 ORDER BY min(position) LIMIT 200"
    ):
        findings(
            "positions",
            f"event id {row['event_id']} occurs at positions {', '.join(map(str, row['positions']))}",
            position=row["positions"][1],
        )


# -- comparison ------------------------------------------------------------------------------


async def _compare(replay: Replay, result: AuditResult) -> None:
    """Row by row, in the replay's transaction: the live tables as of the snapshot, the
    scratch ones as replayed. Per table, counts and an inner join on the key tell how many
    rows differ; a full join, for the details, runs only where some do."""
    conn, schema = replay.conn, replay.schema
    await conn.execute("SET LOCAL work_mem = '64MB'")  # large joins: fewer passes over disk
    for table, keys in PROJECTIONS.items():
        await conn.execute(replay.analyze(table))  # so the join is planned on real sizes
        on = " AND ".join(f"l.{k} = r.{k}" for k in keys)
        # Rows on one side only are told by the counts; the rest by an inner join, which
        # PostgreSQL can run in parallel workers (a full join it cannot, before version 16).
        # (fetch, not fetchrow: a row limit would rule the workers out.)
        [(live, replayed, matched, unequal)] = await conn.fetch(
            f"SELECT (SELECT count(*) FROM public.{table}), (SELECT count(*) FROM"
            f" {schema}.{table}), count(*), count(*) FILTER (WHERE l IS DISTINCT FROM r)"
            f" FROM public.{table} l JOIN {schema}.{table} r ON {on}"
        )
        differing = (live - matched) + (replayed - matched) + unequal
        result.rows[table] = live
        result.differing += differing
        if not differing:
            continue
        for row in await conn.fetch(
            f"SELECT to_jsonb(l) AS live, to_jsonb(r) AS replayed FROM public.{table} l"
            f" FULL JOIN {schema}.{table} r ON {on} WHERE l IS DISTINCT FROM r ORDER BY "
            + ", ".join(f"coalesce(l.{k}, r.{k})" for k in keys)
            + f" LIMIT {DETAILS_PER_TABLE}"
        ):
            _name_difference(table, keys, row["live"], row["replayed"], result.findings)
        if differing > DETAILS_PER_TABLE:
            result.findings(
                "projections",
                f"… and {differing - DETAILS_PER_TABLE} more rows differ from the replay",
                table=table,
            )


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 160 else text[:157] + "…"


def _key_text(key: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(k) for k in key) + ")"


def _name_difference(
    table: str,
    keys: tuple[str, ...],
    live: dict[str, Any] | None,
    rebuilt: dict[str, Any] | None,
    findings: Findings,
) -> None:
    row = live or rebuilt or {}
    where = {
        "table": table,
        "key": _key_text(tuple(row.get(k) for k in keys)),
        "position": row.get("position"),
        "series": row.get("series"),
        "period": row.get("period"),
        "number": row.get("number"),
    }
    if live is None:
        findings(
            "projections", f"row missing from the live table; the events produce {_short(rebuilt)}", **where
        )
    elif rebuilt is None:
        findings("projections", f"row in the live table that no event produces: {_short(live)}", **where)
    else:
        for column in live:
            if live[column] != rebuilt.get(column):
                findings(
                    "projections",
                    f"column {column}: live {_short(live[column])}, replayed {_short(rebuilt.get(column))}",
                    **where,
                )


# -- rebuild ---------------------------------------------------------------------------------

_BLOCKING = ("chain", "positions", "invariants", "receipts", "replay")


async def _rebuild(
    url: str, snapshot: asyncpg.Connection, replay: Replay, checks: _Checks, result: AuditResult
) -> None:
    findings = result.findings
    failed = [check for check in _BLOCKING if findings.counts[check]]
    if failed:
        findings(
            "replay",
            f"not rebuilt: {', '.join(failed)} failed; the projections are only "
            "rebuilt from a ledger that passes every check",
        )
        return
    conn = replay.conn
    async with conn.transaction():
        # Held until COMMIT: no batch is written meanwhile, so nothing is lost between the
        # catch-up below and the replacement.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LEDGER)
        latest = await snapshot.fetchval("SELECT max(position) FROM events")
        if latest is not None and latest > result.position:
            async with snapshot.transaction(readonly=True):
                await checks.replay(replay, stored_events(snapshot, result.position, latest, size=CHUNK))
        if replay.failed is not None:
            findings("replay", str(replay.failed), position=replay.failed.position)
        failed = [check for check in _BLOCKING if findings.counts[check]]
        if failed:
            findings("replay", f"not rebuilt: the events written during the audit failed {', '.join(failed)}")
            return
        for table in PROJECTIONS:
            await conn.execute(f"DELETE FROM public.{table}")
            await conn.execute(f"INSERT INTO public.{table} SELECT * FROM {replay.schema}.{table}")
    result.rebuilt = True
    if result.differing:
        # The live tables are now the replayed ones: those differences are repaired.
        findings.kept = [f for f in findings.kept if f.check != "projections"]
        findings.counts.pop("projections", None)
        await _record_rebuild(url, result)


async def _record_rebuild(url: str, result: AuditResult) -> None:
    pool = await create_pool(url, size=2)
    try:
        writer = LedgerWriter(pool)
        await writer.start()
        try:
            await writer.execute(
                c.RaiseWarning(
                    code="projections_rebuilt",
                    subject=f"audit at position {result.position}",
                    message=f"`concord audit --rebuild` replaced the projections with the ones "
                    f"replayed from the ledger; {result.differing} row(s) had differed",
                )
            )
        finally:
            await writer.stop()
    finally:
        await pool.close()
