"""A realistic ledger of N valid events, built in this process and COPYed into a database.

The events carry the real canonical form and hash chain (coordinator/events/canonical.py)
and document snapshots built by the real snapshot code, so `concord audit --rebuild` turns
them into projections and `concord serve` continues the chain from them: how the audit
benchmark gets its 1M-event ledger, and how the ledger-size and agent benchmarks start from
a ledger that is already large.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from coordinator.events.canonical import (
    GENESIS_HASH,
    canonical_event,
    canonical_json,
    format_recorded_at,
)
from coordinator.ledger.numbering import SeriesSettings, period_of, render
from getfeed.snapshot import document

STORES = ("north", "south", "west")
INVOICE = SeriesSettings(format="INV-{YEAR}-{NUMBER:6}", reset="yearly", assign_on="payment")
EVENTS_PER_DAY = 1500  # the documents' date moves on by a day every this many events
COPY_ROWS = 20_000
EVENT_COLUMNS = ["position", "event_id", "type", "stream", "data", "recorded_at", "prev_hash", "hash"]

Record = tuple[Any, ...]  # one row of ``events``, in EVENT_COLUMNS order


@dataclass(frozen=True)
class Peer:
    """A store the ledger registers: its id, name and the SHA-256 of its bearer token."""

    peer_id: str
    name: str
    token_sha256: str


def _templates(rng: random.Random) -> list[dict[str, Any]]:
    """Document snapshots built by the real snapshot code from WHMCS-like rows."""
    out = []
    for n in range(40):
        items = [
            {
                "id": 9000 + n * 10 + i,
                "type": rng.choice(("Hosting", "Domain", "Addon", "")),
                "relid": rng.randrange(1, 5000),
                "description": rng.choice(
                    (
                        "Shared hosting - Starter",
                        "Domain renewal - example.com - 1 Year/s",
                        "VPS M (monthly)",
                        "SSL certificate",
                    )
                )
                + f" #{i}",
                "amount": f"{rng.randrange(100, 20000) / 100:.2f}",
                "taxed": rng.randrange(2),
            }
            for i in range(rng.randrange(1, 6))
        ]
        client = {
            "firstname": rng.choice(("Ada", "Jan", "Marie", "Luc")),
            "lastname": rng.choice(("Lovelace", "de Vries", "Curie", "Dupont")),
            "companyname": rng.choice(("", "Analytical Engines Ltd", "Radium BV")),
            "email": f"client{n}@example.com",
            "address1": f"{n} Main Street",
            "address2": "",
            "city": rng.choice(("Amsterdam", "Lyon", "London")),
            "state": "",
            "postcode": "1011 AB",
            "country": rng.choice(("NL", "FR", "GB")),
            "phonenumber": "+31.201234567",
            "tax_id": "NL123456789B01",
            "currency": 1,
            "taxexempt": 0,
        }
        invoice = {
            "id": 1,
            "userid": 100 + n,
            "status": "Paid",
            "date": date(2026, 1, 1),
            "duedate": date(2026, 1, 15),
            "datepaid": datetime(2026, 1, 2, 10, 11, 12),
            "subtotal": "100.00",
            "credit": "0.00",
            "tax": "21.00",
            "tax2": "0.00",
            "taxrate": "21.00",
            "taxrate2": "0.00",
            "total": "121.00",
            "paymentmethod": rng.choice(("stripe", "paypal", "banktransfer")),
        }
        out.append(
            document(
                "invoice",
                "",
                invoice,
                items,
                client,
                None,
                [{"id": 3, "fieldname": "VAT Number", "value": "NL123456789B01"}],
            )
        )
    return out


class LedgerBuilder:
    """Valid events, chained as the writer chains them, as COPY records.

    By default three stores (``STORES``, tokens unknown) number invoices as ``INVOICE`` and
    credit notes, with churn: 1% of numbers released and reused, 1% of documents updated, a
    few voided. ``peers``, ``invoice``, ``first_day`` and ``churn=False`` (invoices reserved
    and issued, nothing else) shape a ledger that given stores can go on using.
    """

    def __init__(
        self,
        seed: int = 5,
        *,
        peers: Sequence[Peer] | None = None,
        invoice: SeriesSettings = INVOICE,
        first_day: date = date(2025, 1, 1),
        churn: bool = True,
    ) -> None:
        self.rng = random.Random(seed)
        self.position = 0
        self.hash = GENESIS_HASH
        self.moment = datetime(first_day.year, first_day.month, first_day.day, 8, tzinfo=UTC)
        self.peers: list[Peer] | None = list(peers) if peers is not None else None
        self.invoice = invoice
        self.first_day = first_day
        self.churn = churn

    def event(self, type_: str, stream: str, data: dict[str, Any]) -> Record:
        self.position += 1
        self.moment += timedelta(microseconds=self.rng.randrange(200, 40_000))
        event_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        data_json = canonical_json(data)
        body = canonical_event(
            self.position, event_id, type_, stream, data_json, format_recorded_at(self.moment)
        )
        prev, self.hash = self.hash, hashlib.sha256(self.hash + body).digest()
        return (self.position, event_id, type_, stream, data_json.decode(), self.moment, prev, self.hash)

    def ledger(self, count: int, *, finish_pending: bool = False) -> Iterator[Record]:
        """Yields ``count`` events; with ``finish_pending``, then issues the (at most three)
        numbers still reserved, so no document is left half-numbered."""
        rng = self.rng
        templates = _templates(rng)
        peers = (
            self.peers
            if self.peers is not None
            else [
                Peer(
                    str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    name,
                    hashlib.sha256(name.encode()).hexdigest(),
                )
                for name in STORES
            ]
        )
        self.peers = peers
        for peer in peers:
            yield self.event(
                "PeerRegistered",
                f"peer-{peer.peer_id}",
                {
                    "peer_id": peer.peer_id,
                    "name": peer.name,
                    "url": f"http://{peer.name}.example:8701",
                    "token_sha256": peer.token_sha256,
                },
            )
        yield self.event(
            "SeriesConfigured",
            "series-invoice",
            {"series": "invoice", "settings": self.invoice.model_dump(), "next": None},
        )
        settings = {"invoice": self.invoice, "creditnote": SeriesSettings()}
        counters: dict[tuple[str, str], int] = {}
        pools: dict[tuple[str, str], list[int]] = {}
        pending: deque[dict[str, Any]] = deque()
        issued: deque[dict[str, Any]] = deque(maxlen=5000)
        doc_ids = [0] * len(peers)
        day = self.first_day
        emitted = len(peers) + 1

        def issue(done: dict[str, Any]) -> Record:
            snapshot = templates[rng.randrange(len(templates))]
            doc = {
                "ClientData": snapshot["ClientData"],
                "DocData": {
                    **snapshot["DocData"],
                    "ID": int(done["doc_id"]),
                    "Num": done["formatted"],
                    "Date": day.isoformat(),
                    "Type": "CreditNote" if done["doctype"] == "creditnote" else "Invoice",
                },
            }
            issued.append({**done, "document": doc})
            return self.event(
                "NumberIssued", f"reservation-{done['reservation_id']}", {**done, "document": doc}
            )

        while emitted < count:
            store = rng.randrange(len(peers))
            doctype = "creditnote" if self.churn and rng.random() < 0.05 else "invoice"
            if emitted % EVENTS_PER_DAY == 0 and day < date(2026, 12, 31):
                day += timedelta(days=1)
            series_settings = settings[doctype]
            period = period_of(series_settings, day)
            key = (doctype, period)
            pool = pools.setdefault(key, [])
            if pool:
                number, from_pool = pool.pop(0), True
                next_number = counters.get(key, series_settings.start)
            else:
                number, from_pool = counters.get(key, series_settings.start), False
                next_number = number + series_settings.increment
            counters[key] = next_number
            doc_ids[store] += 1
            peer = peers[store]
            rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            r = {
                "reservation_id": rid,
                "peer_id": peer.peer_id,
                "doctype": doctype,
                "doc_id": str(doc_ids[store]),
                "series": doctype,
                "period": period,
                "number": number,
                "formatted": render(series_settings.format, number, day, peer.name),
            }
            yield self.event(
                "NumberReserved",
                f"reservation-{rid}",
                {**r, "date": day.isoformat(), "from_pool": from_pool, "next": next_number},
            )
            pending.append(r)
            emitted += 1
            while len(pending) > rng.randrange(0, 4) and emitted < count:
                done = pending.popleft()
                rid = done["reservation_id"]
                if self.churn and rng.random() < 0.01:  # the WHMCS write failed: number back
                    yield self.event(
                        "NumberReleased",
                        f"reservation-{rid}",
                        {
                            "reservation_id": rid,
                            "series": done["series"],
                            "period": done["period"],
                            "number": done["number"],
                            "reason": "write failed",
                            "by": done["peer_id"],
                        },
                    )
                    pools[(done["series"], done["period"])].append(done["number"])
                    pools[(done["series"], done["period"])].sort()
                else:
                    yield issue(done)
                emitted += 1
            if not self.churn:
                continue
            if issued and emitted < count and rng.random() < 0.01:
                doc = issued[rng.randrange(len(issued))]
                changed = {**doc["document"], "DocData": {**doc["document"]["DocData"], "Status": "Refunded"}}
                yield self.event(
                    "DocumentUpdated",
                    f"document-{doc['peer_id']}-{doc['doctype']}-{doc['doc_id']}",
                    {
                        "peer_id": doc["peer_id"],
                        "doctype": doc["doctype"],
                        "doc_id": doc["doc_id"],
                        "document": changed,
                    },
                )
                emitted += 1
            if issued and emitted < count and rng.random() < 0.002:
                doc = issued.popleft()
                yield self.event(
                    "NumberVoided",
                    f"reservation-{doc['reservation_id']}",
                    {
                        "reservation_id": doc["reservation_id"],
                        "series": doc["series"],
                        "period": doc["period"],
                        "number": doc["number"],
                        "reason": "cancelled",
                        "was": "issued",
                    },
                )
                emitted += 1
        while finish_pending and pending:
            yield issue(pending.popleft())


async def copy_events(conn: asyncpg.Connection, records: Iterable[Record]) -> int:
    """COPY ``records`` into ``events`` in chunks; returns how many were written."""
    batch: list[Record] = []
    written = 0
    for record in records:
        batch.append(record)
        if len(batch) == COPY_ROWS:
            await conn.copy_records_to_table("events", records=batch, columns=EVENT_COLUMNS)
            written += len(batch)
            batch.clear()
    if batch:
        await conn.copy_records_to_table("events", records=batch, columns=EVENT_COLUMNS)
        written += len(batch)
    return written
