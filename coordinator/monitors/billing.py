"""The billing-error monitor: every document snapshot the ledger records (issued, updated,
imported) is checked for billing errors (coordinator/monitors/billing_checks.py), and each
error is a warning of its own, resolved once a later snapshot corrects it.

It reads the ledger after its checkpoint (migration 0011) in position order, a batch per
transaction, and moves the checkpoint in the transaction that recorded what the batch taught
it (each store's tax settings, each number's date). Replicas share the work: a run goes on
only while it holds the checkpoint's row lock; another replica's run meanwhile skips. The
warnings go through the ledger writer (``RaiseWarning``, ``ResolveWarning``), after the
batch's reads and before its commit: a crash in between checks the batch again, and raising
an open warning again changes nothing. A warning is kept per check and document (its subject
``peer/doctype/doc_id``); a duplicate number's per number (``peer/number/NUM``), from the
store's own report of its WHMCS in the heartbeat.

VIES verdicts come from the feed's cache or VIES itself; a number VIES did not judge (it was
away, or the run's lookups were spent) waits in ``billing_vies_pending`` for a later run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import structlog

from coordinator.events import catalogue as ev
from coordinator.events.store_report import TAX_SETTINGS
from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerWriter
from coordinator.monitors import billing_checks as checks
from coordinator.webservice.vies import PgVerdictCache
from getfeed.http import vies_asker
from getfeed.lookup import ViesLookup
from getfeed.vies import VatKey, ViesSettings

log = structlog.get_logger(__name__)

# The monitor runs in the requests' event loop. A batch's events arrive as text and each is
# parsed just before its checks (~0.3 ms a snapshot), one snapshot between turns of the loop,
# so a request waits at most that long behind the monitor at each of its turns. The
# transaction's dozen queries are per batch: at 25 events a batch they cost the loop and
# PostgreSQL as much per event as writing the ledger did (docs/benchmarks.md, "Batches").
BATCH = 500  # ledger events per transaction
# Ledger positions a transaction looks at, at most: a range bounded by the head alone let
# PostgreSQL, with no statistics of the ledger yet (a new installation's first burst),
# fetch and sort every event up to the head for each batch: a catch-up was quadratic.
WINDOW = 4 * BATCH
COMMANDS_PER_WRITE = 256  # warnings raised or resolved per call to the writer
VIES_RETRIES = 100  # pending VIES checks taken up per run
_EVENTS = [ev.NUMBER_ISSUED, ev.DOCUMENT_UPDATED, ev.DOCUMENT_IMPORTED, ev.PEER_CONFIG_REPORTED]
CORRECTED = "billing check: corrected"
SUPERSEDED = "billing check: figures changed"

Wanted = dict[tuple[str, str], str | None]  # (code, subject) -> message, None: resolved


@dataclass(frozen=True)
class _Checked:
    """A document as the batch leaves it: its last snapshot."""

    ref: checks.DocumentRef
    peer_id: str
    snapshot: Mapping[str, Any]
    position: int

    @property
    def subject(self) -> str:
        return f"{self.peer_id}/{self.ref.doctype}/{self.ref.doc_id}"


class BillingMonitor:
    def __init__(self, pool: asyncpg.Pool, writer: LedgerWriter, vies: ViesSettings) -> None:
        self._pool = pool
        self._writer = writer
        self._vies = vies
        self._cache = PgVerdictCache(pool)

    async def check(self) -> int:
        """Check every document event committed since the last run; return how many events
        this run read (0 also when another replica is checking)."""
        head = await self._pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._vies.timeout_seconds)
        ) as session:
            lookup = ViesLookup(
                vies_asker(session, self._vies.url) if self._vies.url else None,
                self._cache,
                max_age=timedelta(days=self._vies.cache_days),
                budget=self._vies.lookups_per_answer,
                now=lambda: datetime.now(UTC),
            )
            read = 0
            while True:
                count, done = await self._batch(head, lookup)
                read += count
                if done:
                    break
            await self._retry_vies(lookup)
        return read

    async def _batch(self, head: int, lookup: ViesLookup) -> tuple[int, bool]:
        """Check the next batch after the checkpoint; (events read, whether up to ``head``)."""
        async with self._pool.acquire() as conn, conn.transaction():
            cursor = await conn.fetchval("SELECT position FROM billing_checkpoint FOR UPDATE SKIP LOCKED")
            if cursor is None or cursor >= head:  # another replica is at it, or nothing new
                return 0, True
            upper = min(head, cursor + WINDOW)
            rows = await conn.fetch(
                "SELECT position, type, data->>'peer_id' AS peer_id, data->>'doctype' AS doctype,"
                " data->>'doc_id' AS doc_id, data::text AS data FROM events"
                " WHERE position > $1 AND position <= $2"
                " AND type = ANY($3::text[]) ORDER BY position LIMIT $4",
                cursor,
                upper,
                _EVENTS,
                BATCH,
            )
            wanted: Wanted = {}
            docs = await self._read(conn, rows, wanted)
            await self._check_date_order(conn, docs, wanted)
            await self._check_vat(conn, docs, lookup, wanted)
            await self._apply(conn, wanted)
            done_to = rows[-1]["position"] if len(rows) == BATCH else upper
            await conn.execute("UPDATE billing_checkpoint SET position = $1", done_to)
        findings = sum(1 for message in wanted.values() if message is not None)
        if rows:  # a catch-up of a long history logs its progress at debug level
            (log.info if findings else log.debug)(
                "billing_checked", events=len(rows), up_to=done_to, findings=findings
            )
        return len(rows), done_to >= head

    async def _read(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], wanted: Wanted
    ) -> list[_Checked]:
        """Record what the events teach (tax settings, numbers' dates), run the snapshot
        checks and the duplicate-number report; the documents as the batch leaves them."""
        names = {r["id"]: r["name"] for r in await conn.fetch("SELECT id::text, name FROM peers")}
        settings = {
            r["peer_id"]: r["tax"]
            for r in await conn.fetch("SELECT peer_id::text, tax FROM billing_store_settings")
        }
        updated = [
            (r["peer_id"], r["doctype"], r["doc_id"]) for r in rows if r["type"] == ev.DOCUMENT_UPDATED
        ]
        formatted = {
            (r["peer_id"], r["doctype"], r["doc_id"]): r["formatted"]
            for r in await conn.fetch(
                "SELECT d.peer_id::text, d.doctype, d.doc_id, d.formatted"
                "  FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(p, t, i)"
                "  JOIN documents d ON d.peer_id = k.p AND d.doctype = k.t"
                "   AND d.doc_id = k.i",
                *_columns(updated, 3),
            )
        }
        docs: dict[tuple[str, str, str], _Checked] = {}
        numbers: list[tuple[Any, ...]] = []
        dates: list[tuple[Any, ...]] = []
        reported_duplicates: list[str] = []
        taxes: dict[str, checks.TaxSettings] = {}  # each store's, as the batch leaves them
        for row in rows:
            await asyncio.sleep(0)  # the checks run in the requests' event loop
            data = orjson.loads(row["data"])
            peer_id = row["peer_id"]
            store = names.get(peer_id, peer_id)
            if row["type"] == ev.PEER_CONFIG_REPORTED:
                reported = data.get("settings") or {}
                settings[peer_id] = {k: reported[k] for k in TAX_SETTINGS if k in reported}
                taxes.pop(peer_id, None)
                await conn.execute(
                    "INSERT INTO billing_store_settings (peer_id, tax) VALUES ($1, $2)"
                    " ON CONFLICT (peer_id) DO UPDATE SET tax = excluded.tax",
                    peer_id,
                    settings[peer_id],
                )
                duplicates = checks.duplicate_numbers(reported)
                if duplicates is not None:
                    reported_duplicates.append(peer_id)
                    for number, ids in duplicates.items():
                        wanted[checks.DUPLICATE_NUMBER, f"{peer_id}/number/{number}"] = (
                            checks.duplicate_message(store, number, ids)
                        )
                continue
            key = (peer_id, data["doctype"], data["doc_id"])
            number = data.get("formatted") or formatted.get(key, "")
            ref = checks.DocumentRef(store, data["doctype"], data["doc_id"], number)
            doc = docs[key] = _Checked(ref, peer_id, data["document"], row["position"])
            if peer_id not in taxes:
                taxes[peer_id] = checks.TaxSettings.from_reported(settings.get(peer_id))
            found = checks.snapshot_findings(ref, doc.snapshot, taxes[peer_id])
            for code in checks.SNAPSHOT_CODES:
                wanted[code, doc.subject] = found.get(code)
            day = checks.document_date(doc.snapshot)
            if row["type"] == ev.NUMBER_ISSUED:
                numbers.append(
                    (
                        peer_id,
                        data["series"],
                        data["period"],
                        data["number"],
                        data["doctype"],
                        data["doc_id"],
                        number,
                        day,
                    )
                )
            elif row["type"] == ev.DOCUMENT_UPDATED:
                dates.append((*key, day))
        # One statement for the batch's numbers rather than one per number; the last of a
        # number's rows counts, as in event order. Then the dates changed, so a number
        # issued and its date changed in one batch end up right.
        await conn.execute(
            "INSERT INTO billing_numbers (peer_id, series, period, number, doctype, doc_id,"
            " formatted, doc_date)"
            " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[],"
            " $6::text[], $7::text[], $8::text[])"
            " ON CONFLICT (peer_id, series, period, number) DO UPDATE SET"
            " doctype = excluded.doctype, doc_id = excluded.doc_id,"
            " formatted = excluded.formatted, doc_date = excluded.doc_date",
            *_columns(list({row[:4]: row for row in numbers}.values()), 8),
        )
        await conn.executemany(
            "UPDATE billing_numbers SET doc_date = $4 WHERE peer_id = $1 AND doctype = $2 AND doc_id = $3",
            dates,
        )
        await self._resolve_unreported_duplicates(conn, reported_duplicates, wanted)
        return list(docs.values())

    async def _resolve_unreported_duplicates(
        self, conn: asyncpg.Connection, peers: Iterable[str], wanted: Wanted
    ) -> None:
        """A store's duplicate numbers not in its latest report are fixed."""
        for peer_id in peers:
            for r in await conn.fetch(
                "SELECT subject FROM warnings WHERE state = 'open' AND code = $1 AND subject LIKE $2",
                checks.DUPLICATE_NUMBER,
                f"{peer_id}/number/%",
            ):
                wanted.setdefault((checks.DUPLICATE_NUMBER, r["subject"]), None)

    async def _check_date_order(
        self, conn: asyncpg.Connection, docs: Sequence[_Checked], wanted: Wanted
    ) -> None:
        """Each numbered document against the previous number of its series in its store,
        and the next number against it (its date may be what changed)."""
        if not docs:
            return
        keys = [(d.peer_id, d.ref.doctype, d.ref.doc_id) for d in docs]
        neighbour = (
            "SELECT x.doctype, x.doc_id, x.formatted, x.doc_date FROM billing_numbers x"
            " WHERE x.peer_id = b.peer_id AND x.series = b.series"
            " AND x.period = b.period AND x.number {} b.number ORDER BY x.number {}"
            " LIMIT 1"
        )
        rows = await conn.fetch(
            "SELECT b.peer_id::text, b.series, b.period, b.doctype, b.doc_id, b.formatted,"
            "       b.doc_date, p.doctype AS p_doctype, p.doc_id AS p_doc_id,"
            "       p.formatted AS p_formatted, p.doc_date AS p_date, n.doctype AS n_doctype,"
            "       n.doc_id AS n_doc_id, n.formatted AS n_formatted, n.doc_date AS n_date"
            "  FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(p, t, i)"
            "  JOIN billing_numbers b ON b.peer_id = k.p AND b.doctype = k.t AND b.doc_id = k.i"
            f"  LEFT JOIN LATERAL ({neighbour.format('<', 'DESC')}) p ON true"
            f"  LEFT JOIN LATERAL ({neighbour.format('>', 'ASC')}) n ON true",
            *_columns(keys, 3),
        )
        stores = {d.peer_id: d.ref.store for d in docs}
        for r in rows:
            store, peer_id = stores[r["peer_id"]], r["peer_id"]
            doc = checks.DocumentRef(store, r["doctype"], r["doc_id"], r["formatted"])
            subject = f"{peer_id}/{doc.doctype}/{doc.doc_id}"
            if r["p_doc_id"] is None:
                wanted[checks.DATE_ORDER, subject] = None
            else:
                previous = checks.DocumentRef(store, r["p_doctype"], r["p_doc_id"], r["p_formatted"])
                wanted[checks.DATE_ORDER, subject] = checks.date_order_finding(
                    doc, r["doc_date"], previous, r["p_date"], r["series"], r["period"]
                )
            if r["n_doc_id"] is not None:
                following = checks.DocumentRef(store, r["n_doctype"], r["n_doc_id"], r["n_formatted"])
                wanted[checks.DATE_ORDER, f"{peer_id}/{following.doctype}/{following.doc_id}"] = (
                    checks.date_order_finding(
                        following, r["n_date"], doc, r["doc_date"], r["series"], r["period"]
                    )
                )

    async def _check_vat(
        self, conn: asyncpg.Connection, docs: Sequence[_Checked], lookup: ViesLookup, wanted: Wanted
    ) -> None:
        """Each EU client's VAT number against VIES; a number VIES did not judge waits."""
        if not self._vies.url:  # VIES off: nobody would ever judge them
            return
        asks: list[tuple[_Checked, str, VatKey]] = []
        judged: list[_Checked] = []
        for doc in docs:
            vat = checks.vat_to_check(doc.snapshot)
            if vat is None or vat[1] is None:
                wanted[checks.VAT_REJECTED, doc.subject] = (
                    None if vat is None else checks.vat_rejected_message(doc.ref, doc.snapshot, vat[0], None)
                )
                judged.append(doc)
            else:
                asks.append((doc, vat[0], vat[1]))
        keys = {key for _, _, key in asks}
        confirmed = await lookup.confirmed(keys)
        doubtful = keys - confirmed
        verdicts = await self._cache.load(doubtful) if doubtful else {}
        waiting: list[_Checked] = []
        for doc, number, key in asks:
            if key in confirmed or key in verdicts:
                wanted[checks.VAT_REJECTED, doc.subject] = (
                    None
                    if key in confirmed
                    else checks.vat_rejected_message(doc.ref, doc.snapshot, number, key)
                )
                judged.append(doc)
            else:
                waiting.append(doc)
        # ``docs`` has one entry per document: no key twice in one statement.
        await conn.execute(
            "INSERT INTO billing_vies_pending (peer_id, doctype, doc_id, position)"
            " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[])"
            " ON CONFLICT (peer_id, doctype, doc_id) DO UPDATE SET position = excluded.position",
            *_columns([(d.peer_id, d.ref.doctype, d.ref.doc_id, d.position) for d in waiting], 4),
        )
        await conn.execute(
            "DELETE FROM billing_vies_pending v"
            " USING unnest($1::uuid[], $2::text[], $3::text[]) AS k(p, t, i)"
            " WHERE v.peer_id = k.p AND v.doctype = k.t AND v.doc_id = k.i",
            *_columns([(d.peer_id, d.ref.doctype, d.ref.doc_id) for d in judged], 3),
        )

    async def _retry_vies(self, lookup: ViesLookup) -> None:
        """Ask VIES again about the oldest numbers it has not judged yet."""
        if not self._vies.url or lookup.failed:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT position FROM billing_checkpoint FOR UPDATE SKIP LOCKED") is None:
                return
            rows = await conn.fetch(
                "SELECT v.peer_id::text, v.doctype, v.doc_id, v.position, d.formatted,"
                "       d.snapshot, p.name FROM billing_vies_pending v"
                "  JOIN documents d ON d.peer_id = v.peer_id AND d.doctype = v.doctype"
                "   AND d.doc_id = v.doc_id"
                "  JOIN peers p ON p.id = v.peer_id ORDER BY v.position LIMIT $1",
                VIES_RETRIES,
            )
            if not rows:
                return
            docs = [
                _Checked(
                    checks.DocumentRef(r["name"], r["doctype"], r["doc_id"], r["formatted"]),
                    r["peer_id"],
                    r["snapshot"],
                    r["position"],
                )
                for r in rows
            ]
            wanted: Wanted = {}
            await self._check_vat(conn, docs, lookup, wanted)
            await self._apply(conn, wanted)

    async def _apply(self, conn: asyncpg.Connection, wanted: Wanted) -> None:
        """Raise the findings not open yet (again when the figures changed) and resolve the
        open warnings of checks that now pass."""
        if not wanted:
            return
        codes = sorted({code for code, _ in wanted})
        subjects = sorted({subject for _, subject in wanted})
        open_ = {
            (r["code"], r["subject"]): r
            for r in await conn.fetch(
                "SELECT id::text, code, subject, message FROM warnings WHERE state = 'open'"
                " AND code = ANY($1::text[]) AND subject = ANY($2::text[])",
                codes,
                subjects,
            )
        }
        commands: list[c.Command] = []
        for (code, subject), message in wanted.items():
            current = open_.get((code, subject))
            if current is not None and current["message"] != message:
                commands.append(
                    c.ResolveWarning(warning_id=current["id"], by=SUPERSEDED if message else CORRECTED)
                )
            if message is not None and (current is None or current["message"] != message):
                commands.append(c.RaiseWarning(code=code, subject=subject, message=message))
        for start in range(0, len(commands), COMMANDS_PER_WRITE):
            for answer in await self._writer.execute_many(commands[start : start + COMMANDS_PER_WRITE]):
                if isinstance(answer, Exception):  # the batch is checked again next run
                    raise answer


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as columns, for ``unnest`` of parallel arrays."""
    return [[row[i] for row in rows] for i in range(width)]
