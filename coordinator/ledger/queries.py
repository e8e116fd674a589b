"""Read side: what the API shows from the projections and the event table."""

from __future__ import annotations

from typing import Any

import asyncpg

from coordinator.events.canonical import format_recorded_at
from coordinator.ledger.numbering import SERIES_NAMES, SeriesSettings, counter_series
from coordinator.ledger.store import head


async def ledger_head(conn: asyncpg.Connection) -> dict[str, Any]:
    position, hash_ = await head(conn)
    return {"position": position, "hash": hash_.hex()}


async def series_overview(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    stored = {r["name"]: r["settings"] for r in await conn.fetch("SELECT name, settings FROM series")}
    settings = {n: SeriesSettings.model_validate(stored.get(n, {})) for n in SERIES_NAMES}
    counters = await conn.fetch(
        "SELECT c.series, c.period, c.next, c.highest,"
        " array(SELECT number FROM released_numbers r WHERE r.series = c.series"
        "       AND r.period = c.period ORDER BY number) AS released"
        " FROM counters c ORDER BY c.series, c.period"
    )
    out = []
    for name in SERIES_NAMES:
        draws_from = counter_series(name, settings)
        periods = [
            {"period": r["period"], "next": r["next"], "highest": r["highest"],
             "released": list(r["released"])}
            for r in counters if r["series"] == name
        ]
        out.append({"name": name, "settings": settings[name].model_dump(),
                    "counter": draws_from, "periods": periods})
    return out


async def reservations(conn: asyncpg.Connection, state: str | None, limit: int,
                       after: str | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT r.id::text, r.peer_id::text, p.name AS store, r.doctype, r.doc_id, r.series,"
        " r.period, r.number, r.formatted, r.doc_date, r.state, r.reserved_at, r.position,"
        " r.hash FROM reservations r LEFT JOIN peers p ON p.id = r.peer_id"
        " WHERE ($1::text IS NULL OR r.state = $1)"
        "   AND ($2::uuid IS NULL OR (r.reserved_at, r.id) > (SELECT reserved_at, id"
        "        FROM reservations WHERE id = $2))"
        " ORDER BY r.reserved_at, r.id LIMIT $3",
        state, after, limit,
    )
    return [
        {"reservation_id": r["id"], "peer_id": r["peer_id"], "store": r["store"],
         "doctype": r["doctype"], "doc_id": r["doc_id"], "series": r["series"],
         "period": r["period"], "number": r["number"], "formatted": r["formatted"],
         "date": r["doc_date"].isoformat(), "state": r["state"],
         "reserved_at": r["reserved_at"].isoformat(),
         "receipt": {"position": r["position"], "hash": bytes(r["hash"]).hex()}}
        for r in rows
    ]


async def events(conn: asyncpg.Connection, after: int, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT position, event_id::text, type, stream, data, recorded_at, prev_hash, hash"
        " FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        after, limit,
    )
    return [
        {"position": r["position"], "event_id": r["event_id"], "type": r["type"],
         "stream": r["stream"], "data": r["data"],
         "recorded_at": format_recorded_at(r["recorded_at"]),
         "prev_hash": bytes(r["prev_hash"]).hex(), "hash": bytes(r["hash"]).hex()}
        for r in rows
    ]


async def peers(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT p.id::text, p.name, p.url, p.state, p.agent_version, p.reported,"
        " l.last_heartbeat_at FROM peers p LEFT JOIN peer_liveness l ON l.peer_id = p.id"
        " ORDER BY p.name"
    )
    return [
        {"peer_id": r["id"], "name": r["name"], "url": r["url"], "state": r["state"],
         "agent_version": r["agent_version"], "reported_settings": r["reported"],
         "last_heartbeat_at": r["last_heartbeat_at"] and r["last_heartbeat_at"].isoformat()}
        for r in rows
    ]


async def warnings(conn: asyncpg.Connection, state: str | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id::text, code, subject, message, state, raised_at, resolved_at FROM warnings"
        " WHERE ($1::text IS NULL OR state = $1) ORDER BY raised_at, id LIMIT 1000",
        state,
    )
    return [
        {"warning_id": r["id"], "code": r["code"], "subject": r["subject"],
         "message": r["message"], "state": r["state"], "raised_at": r["raised_at"].isoformat(),
         "resolved_at": r["resolved_at"] and r["resolved_at"].isoformat()}
        for r in rows
    ]


async def overdue_reservations(conn: asyncpg.Connection, minutes: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT id::text FROM reservations WHERE state = 'reserved' AND warning_id IS NULL"
        " AND reserved_at < now() - make_interval(mins => $1) ORDER BY reserved_at LIMIT 500",
        minutes,
    )
    return [r["id"] for r in rows]


