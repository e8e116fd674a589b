"""Read side: what the API shows from the projections and the event table."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
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
            {
                "period": r["period"],
                "next": r["next"],
                "highest": r["highest"],
                "released": list(r["released"]),
            }
            for r in counters
            if r["series"] == name
        ]
        out.append(
            {"name": name, "settings": settings[name].model_dump(), "counter": draws_from, "periods": periods}
        )
    return out


RESERVATION_STATES = ("reserved", "issued", "released", "void")
_BEFORE_ALL = (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))  # (reserved_at, id) below any


async def reservations(
    conn: asyncpg.Connection, state: str | None, limit: int, after: str | None
) -> list[dict[str, Any]]:
    """A page of reservations oldest first (by reserved_at, then id), after the reservation
    ``after`` (none when it does not exist): each state's range of ``reservations_listed``
    from there, merged, so a page reads at most ``limit`` rows per state."""
    cursor = _BEFORE_ALL
    if after is not None:
        found = await conn.fetchrow("SELECT reserved_at, id FROM reservations WHERE id = $1", after)
        if found is None:
            return []
        cursor = (found["reserved_at"], found["id"])
    rows = await conn.fetch(
        "SELECT r.id::text, r.peer_id::text, p.name AS store, r.doctype, r.doc_id, r.series,"
        " r.period, r.number, r.formatted, r.doc_date, r.state, r.reserved_at, r.position,"
        " r.hash FROM unnest($1::text[]) AS s(state)"
        " CROSS JOIN LATERAL (SELECT * FROM reservations x WHERE x.state = s.state"
        "     AND (x.reserved_at, x.id) > ($2, $3) ORDER BY x.reserved_at, x.id LIMIT $4) r"
        " LEFT JOIN peers p ON p.id = r.peer_id"
        " ORDER BY r.reserved_at, r.id LIMIT $4",
        [state] if state is not None else list(RESERVATION_STATES),
        *cursor,
        limit,
    )
    return [
        {
            "reservation_id": r["id"],
            "peer_id": r["peer_id"],
            "store": r["store"],
            "doctype": r["doctype"],
            "doc_id": r["doc_id"],
            "series": r["series"],
            "period": r["period"],
            "number": r["number"],
            "formatted": r["formatted"],
            "date": r["doc_date"].isoformat(),
            "state": r["state"],
            "reserved_at": r["reserved_at"].isoformat(),
            "receipt": {"position": r["position"], "hash": bytes(r["hash"]).hex()},
        }
        for r in rows
    ]


async def events(conn: asyncpg.Connection, after: int, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT position, event_id::text, type, stream, data, recorded_at, prev_hash, hash"
        " FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        after,
        limit,
    )
    return [
        {
            "position": r["position"],
            "event_id": r["event_id"],
            "type": r["type"],
            "stream": r["stream"],
            "data": r["data"],
            "recorded_at": format_recorded_at(r["recorded_at"]),
            "prev_hash": bytes(r["prev_hash"]).hex(),
            "hash": bytes(r["hash"]).hex(),
        }
        for r in rows
    ]


async def peers(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT p.id::text, p.name, p.url, p.state, p.agent_version, p.reported,"
        " l.last_heartbeat_at FROM peers p LEFT JOIN peer_liveness l ON l.peer_id = p.id"
        " ORDER BY p.name"
    )
    return [
        {
            "peer_id": r["id"],
            "name": r["name"],
            "url": r["url"],
            "state": r["state"],
            "agent_version": r["agent_version"],
            "reported_settings": r["reported"],
            "last_heartbeat_at": r["last_heartbeat_at"] and r["last_heartbeat_at"].isoformat(),
        }
        for r in rows
    ]


async def warnings(conn: asyncpg.Connection, state: str | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id::text, code, subject, message, state, raised_at, resolved_at FROM warnings"
        " WHERE ($1::text IS NULL OR state = $1) ORDER BY raised_at, id LIMIT 1000",
        state,
    )
    return [
        {
            "warning_id": r["id"],
            "code": r["code"],
            "subject": r["subject"],
            "message": r["message"],
            "state": r["state"],
            "raised_at": r["raised_at"].isoformat(),
            "resolved_at": r["resolved_at"] and r["resolved_at"].isoformat(),
        }
        for r in rows
    ]


async def overdue_reservations(conn: asyncpg.Connection, minutes: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT id::text FROM reservations WHERE state = 'reserved' AND warning_id IS NULL"
        " AND reserved_at < now() - make_interval(mins => $1) ORDER BY reserved_at LIMIT 500",
        minutes,
    )
    return [r["id"] for r in rows]


# -- the operator console's reads (coordinator/console/); indexes in migration 0008 --------


async def positions_at(conn: asyncpg.Connection, moments: Sequence[datetime]) -> list[int]:
    """For each moment, the first position recorded at or after it (the head + 1 when none):
    one index probe each, so a time range becomes a position range."""
    rows = await conn.fetch(
        "SELECT coalesce((SELECT e.position FROM events e WHERE e.recorded_at >= m.at"
        "                 ORDER BY e.recorded_at, e.position LIMIT 1),"
        "                (SELECT coalesce(max(position), 0) + 1 FROM events)) AS position"
        " FROM unnest($1::timestamptz[]) WITH ORDINALITY AS m(at, n) ORDER BY m.n",
        list(moments),
    )
    return [r["position"] for r in rows]


async def issued_counts(conn: asyncpg.Connection, bounds: Sequence[int]) -> list[dict[str, Any]]:
    """Numbers issued (and not voided since) between consecutive ``bounds`` positions: one
    row per interval (0 = from bounds[0] to bounds[1]), series and store. An index-only
    count over the interval's issued numbers, whatever the ledger's size."""
    rows = await conn.fetch(
        "SELECT c.interval, c.series, p.name AS store, c.issued FROM ("
        "  SELECT width_bucket(position, $1::bigint[]) - 1 AS interval, series, peer_id,"
        "         count(*) AS issued FROM reservations"
        "  WHERE state = 'issued' AND position >= $2 AND position < $3 GROUP BY 1, 2, 3) c"
        " LEFT JOIN peers p ON p.id = c.peer_id ORDER BY 1, 2, 3",
        list(bounds),
        bounds[0],
        bounds[-1],
    )
    return [dict(r) for r in rows]


async def voided_count(conn: asyncpg.Connection) -> int:
    """How many numbers were voided (an index-only count over the few voided ones)."""
    return await conn.fetchval("SELECT count(*) FROM reservations WHERE state = 'void'")


async def newest_events(conn: asyncpg.Connection, before: int, limit: int) -> list[dict[str, Any]]:
    """The events below position ``before``, newest first, without their data."""
    rows = await conn.fetch(
        "SELECT position, event_id::text, type, stream, recorded_at, hash FROM events"
        " WHERE position < $1 ORDER BY position DESC LIMIT $2",
        before,
        limit,
    )
    return [{**dict(r), "hash": bytes(r["hash"]).hex()} for r in rows]


async def stream_events(conn: asyncpg.Connection, streams: Sequence[str]) -> list[dict[str, Any]]:
    """Every event of the given streams (a reservation's, a document's), in ledger order."""
    rows = await conn.fetch(
        "SELECT position, type, stream, data - 'document' AS data, recorded_at, hash FROM events"
        " WHERE stream = ANY($1::text[]) ORDER BY position LIMIT 1000",
        list(streams),
    )
    return [{**dict(r), "hash": bytes(r["hash"]).hex()} for r in rows]


_UUID_TEXT = "'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"


async def recent_warnings(
    conn: asyncpg.Connection, state: str, code: str | None, peer_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """Warnings in ``state``, newest first, optionally of one kind and one store: the store
    a warning is about (its subject) or whose reservation it is about."""
    subject_id = f"CASE WHEN w.subject ~ {_UUID_TEXT} THEN w.subject::uuid END"
    rows = await conn.fetch(
        "SELECT w.id::text, w.code, w.subject, w.message, w.state, w.raised_at, w.resolved_at,"
        " p.id::text AS peer_id, p.name AS store FROM warnings w"
        f" LEFT JOIN reservations r ON r.id = {subject_id}"
        f" LEFT JOIN peers p ON p.id = coalesce(r.peer_id, {subject_id})"
        " WHERE w.state = $1 AND ($2::text IS NULL OR w.code = $2)"
        "   AND ($3::uuid IS NULL OR p.id = $3)"
        " ORDER BY w.raised_at DESC LIMIT $4",
        state,
        code,
        peer_id,
        limit,
    )
    return [dict(r) for r in rows]


_FOUND = (
    "SELECT r.id::text AS reservation_id, r.peer_id::text, p.name AS store, r.doctype,"
    " r.doc_id, r.series, r.period, r.number, r.formatted, r.state, r.doc_date, r.position"
    " FROM reservations r LEFT JOIN peers p ON p.id = r.peer_id"
)
_DOCUMENTS = (
    "SELECT d.peer_id::text, p.name AS store, d.doctype, d.doc_id, d.formatted,"
    " d.reservation_id::text, d.voided, d.imported, d.position, d.snapshot,"
    " coalesce(p.reported->>'country', '') AS country"  # the store's own, for the Europe block
    " FROM documents d LEFT JOIN peers p ON p.id = d.peer_id"
)


async def reservations_numbered(conn: asyncpg.Connection, formatted: str) -> list[dict[str, Any]]:
    """Every reservation that handed out ``formatted``, released ones included."""
    rows = await conn.fetch(f"{_FOUND} WHERE r.formatted = $1 ORDER BY r.position LIMIT 100", formatted)
    return [dict(r) for r in rows]


async def documents_numbered(conn: asyncpg.Connection, formatted: str) -> list[dict[str, Any]]:
    """The documents (issued or imported) that carry ``formatted``."""
    rows = await conn.fetch(f"{_DOCUMENTS} WHERE d.formatted = $1 ORDER BY d.position LIMIT 100", formatted)
    return [dict(r) for r in rows]


async def documents_by_id(conn: asyncpg.Connection, doc_id: str, peer_id: str | None) -> list[dict[str, Any]]:
    """Documents with WHMCS id ``doc_id``, in one store or in each (by the primary key)."""
    rows = await conn.fetch(
        f"{_DOCUMENTS} WHERE d.peer_id = ANY(CASE WHEN $2::uuid IS NULL"
        "   THEN array(SELECT id FROM peers) ELSE ARRAY[$2::uuid] END)"
        " AND d.doctype = ANY($3::text[]) AND d.doc_id = $1 ORDER BY p.name, d.doctype LIMIT 100",
        doc_id,
        peer_id,
        list(SERIES_NAMES),
    )
    return [dict(r) for r in rows]


async def documents_of_client(
    conn: asyncpg.Connection, user_id: str, peer_id: str | None
) -> list[dict[str, Any]]:
    """The newest documents of WHMCS client ``user_id``, in one store or in each."""
    rows = await conn.fetch(
        f"{_DOCUMENTS} WHERE d.snapshot->'ClientData'->>'UserID' = $1"
        " AND ($2::uuid IS NULL OR d.peer_id = $2) ORDER BY d.position DESC LIMIT 100",
        user_id,
        peer_id,
    )
    return [dict(r) for r in rows]
