"""A populated ledger and the ways a database superuser could tamper with it (for the audit,
export/verify and chain-check tests)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from coordinator.audit.export_format import event_line, header_line
from coordinator.db import connect
from coordinator.events.canonical import (
    GENESIS_HASH,
    canonical_event,
    canonical_json,
    format_recorded_at,
)
from tests.conftest import bearer
from tests.support.api_helpers import add_store, confirm, reserve


async def populate(client: Any, operator: str) -> dict[str, Any]:
    """Two stores; issued, released-and-reused, pending, voided and updated numbers; a
    released number left in the pool. Returns what the stores were told (their receipts)."""
    alpha = await add_store(client, operator, "alpha")
    beta = await add_store(client, operator, "beta")
    receipts: list[dict[str, Any]] = []
    for doc_id in ("1", "2", "3"):
        r = await reserve(client, alpha["token"], doc_id)
        c = await confirm(client, alpha["token"], r["reservation_id"])
        receipts.append(_receipt("alpha", doc_id, r, c))
    dropped = await reserve(client, beta["token"], "10")  # number 4, released: into the pool
    resp = await client.post(
        f"/v1/reservations/{dropped['reservation_id']}/release",
        headers=bearer(beta["token"]),
        json={"reason": "write failed"},
    )
    assert resp.status == 200
    reused = await reserve(client, beta["token"], "11")  # takes 4 back from the pool
    assert reused["number"] == dropped["number"]
    c = await confirm(client, beta["token"], reused["reservation_id"])
    receipts.append(_receipt("beta", "11", reused, c))
    pending = await reserve(client, beta["token"], "12")  # 5, still pending
    receipts.append(_receipt("beta", "12", pending, None))
    for doc_id in ("13", "14"):
        r = await reserve(client, beta["token"], doc_id)
        c = await confirm(client, beta["token"], r["reservation_id"])
        receipts.append(_receipt("beta", doc_id, r, c))
    voided = receipts[-2]
    resp = await client.post(
        f"/v1/numbers/invoice/all/{voided['number']}/void",
        headers=bearer(operator),
        json={"reason": "cancelled"},
    )
    assert resp.status == 200
    resp = await client.put(
        "/v1/documents/invoice/14",
        headers=bearer(beta["token"]),
        json={"document": {"ClientData": {"Name": "Bo"}, "DocData": {"Total": "99.00"}}},
    )
    assert resp.status == 200
    spare = await reserve(client, alpha["token"], "4")  # released below: stays in the pool
    resp = await client.post(
        f"/v1/reservations/{spare['reservation_id']}/release",
        headers=bearer(alpha["token"]),
        json={"reason": "not needed"},
    )
    assert resp.status == 200
    return {"alpha": alpha, "beta": beta, "receipts": receipts, "pool": spare["number"]}


def _receipt(
    store: str, doc_id: str, reserved: dict[str, Any], issued: dict[str, Any] | None
) -> dict[str, Any]:
    """A line as `concord-agent receipts export` writes it."""
    return {
        "store": store,
        "reservation_id": reserved["reservation_id"],
        "invoice_id": int(doc_id),
        "doctype": "invoice",
        "series": reserved["series"],
        "period": reserved["period"],
        "number": reserved["number"],
        "formatted": reserved["formatted"],
        "reserved": reserved["receipt"],
        "issued": issued["receipt"] if issued else None,
    }


def write_receipts(directory: Path, receipts: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "receipts-stores.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in receipts))
    return directory


async def superuser(database_url: str, sql: str, *args: Any) -> None:
    """Run SQL with the append-only triggers off, as a superuser could."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("ALTER TABLE events DISABLE TRIGGER ALL")
            await conn.execute(sql, *args)
            await conn.execute("ALTER TABLE events ENABLE TRIGGER ALL")
    finally:
        await conn.close()


async def rewrite_tail(
    database_url: str, keep: int, forge: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    """Delete the events after position ``keep`` and append ``forge(them)`` instead, with
    positions and the whole hash chain recomputed: a rewrite only receipts can reveal."""
    conn = await connect(database_url)
    try:
        async with conn.transaction():
            prev = bytes(await conn.fetchval("SELECT hash FROM events WHERE position = $1", keep))
            rows = [
                dict(r)
                for r in await conn.fetch("SELECT * FROM events WHERE position > $1 ORDER BY position", keep)
            ]
            await conn.execute("ALTER TABLE events DISABLE TRIGGER ALL")
            await conn.execute("DELETE FROM events WHERE position > $1", keep)
            for position, row in enumerate(forge(rows), keep + 1):
                stamp = format_recorded_at(row["recorded_at"])
                body = canonical_event(
                    position,
                    str(row["event_id"]),
                    row["type"],
                    row["stream"],
                    canonical_json(row["data"]),
                    stamp,
                )
                digest = hashlib.sha256(prev + body).digest()
                await conn.execute(
                    "INSERT INTO events (position, event_id, type, stream, data, recorded_at,"
                    " prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    position,
                    row["event_id"],
                    row["type"],
                    row["stream"],
                    row["data"],
                    row["recorded_at"],
                    prev,
                    digest,
                )
                prev = digest
            await conn.execute("ALTER TABLE events ENABLE TRIGGER ALL")
    finally:
        await conn.close()


def rechain_export(path: Path, forge: Callable[[list[dict[str, Any]]], None]) -> None:
    """Rewrite an export file with ``forge`` applied to its events and every hash and the
    header recomputed: a file whose chain holds, as a forger would write it."""
    events = [orjson.loads(line)["event"] for line in path.read_bytes().splitlines()[1:]]
    forge(events)
    prev, lines = GENESIS_HASH, []
    for event in events:
        body = canonical_json(event)
        prev = hashlib.sha256(prev + body).digest()
        lines.append(event_line(body, prev))
    path.write_bytes(header_line(len(events), prev) + b"".join(lines))
