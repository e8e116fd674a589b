"""The notifications' durable queue in PostgreSQL (migration 0010).

Each channel follows the ledger's warning changes after its checkpoint (appends are
serialised, so ``position > checkpoint`` never skips an event) and queues one row per
(warning, change, channel) in the transaction that moves its checkpoint; the primary key
makes a change queued twice one row. A channel's first run queues the warnings open at that
moment, then follows the changes after. Deliveries are claimed one row at a time with
``FOR UPDATE SKIP LOCKED`` and a claim that runs out, so among several replicas exactly one
delivers a row, and none holds a connection or a lock while it talks to a receiver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

READ_BATCH = 500  # warning changes queued per transaction
CLAIM_MARGIN_SECONDS = 30.0  # a claim outlives the delivery's own time limit by this much

# Literal types: the partial index events_warning_changes serves only a query that names them.
_CHANGES_AFTER = """
SELECT e.position, e.type = 'WarningRaised' AS raised, e.recorded_at, e.data->>'by' AS by,
       w.id::text AS warning_id, w.code, w.subject, w.message, w.raised_at
  FROM events e JOIN warnings w ON w.id = (e.data->>'warning_id')::uuid
 WHERE e.position > $1 AND e.position <= $2
   AND e.type IN ('WarningRaised', 'WarningResolved')
 ORDER BY e.position LIMIT $3
"""
_QUEUE = """
INSERT INTO notifications (warning_id, change, channel, position, payload)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
"""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def warning_payload(
    row: asyncpg.Record, *, raised: bool, changed_at: datetime | None, by: str | None
) -> dict[str, Any]:
    """The warning as GET /v1/warnings shows it, as it was at this change, and the change."""
    return {
        "change": "raised" if raised else "resolved",
        "warning_id": row["warning_id"],
        "code": row["code"],
        "subject": row["subject"],
        "message": row["message"],
        "state": "open" if raised else "resolved",
        "raised_at": _iso(row["raised_at"]),
        "resolved_at": None if raised else _iso(changed_at),
        "resolved_by": by,
    }


async def catch_up(pool: asyncpg.Pool, channel: str) -> int:
    """Queue the channel's warning changes up to the ledger's head; return how many were
    read. Another replica already at it: nothing to do now."""
    head = await pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
    read = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            if await _begin(conn, channel, head):
                return 0
            cursor = await conn.fetchval(
                "SELECT position FROM notification_checkpoints WHERE channel = $1 FOR UPDATE SKIP LOCKED",
                channel,
            )
            if cursor is None or cursor >= head:
                return read
            rows = await conn.fetch(_CHANGES_AFTER, cursor, head, READ_BATCH)
            await conn.executemany(
                _QUEUE,
                [
                    (
                        r["warning_id"],
                        "raised" if r["raised"] else "resolved",
                        channel,
                        r["position"],
                        warning_payload(r, raised=r["raised"], changed_at=r["recorded_at"], by=r["by"]),
                    )
                    for r in rows
                ],
            )
            done_to = rows[-1]["position"] if len(rows) == READ_BATCH else head
            await conn.execute(
                "UPDATE notification_checkpoints SET position = $2 WHERE channel = $1", channel, done_to
            )
            read += len(rows)


async def _begin(conn: asyncpg.Connection, channel: str, head: int) -> bool:
    """On the channel's first run: its checkpoint at ``head`` and the warnings open now
    queued; True. A change committed between reading ``head`` and the open warnings is
    queued once either way (the primary key)."""
    if not await conn.fetchval(
        "INSERT INTO notification_checkpoints (channel, position) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING true",
        channel,
        head,
    ):
        return False
    rows = await conn.fetch(
        "SELECT id::text AS warning_id, code, subject, message, raised_at FROM warnings"
        " WHERE state = 'open' ORDER BY raised_at, id"
    )
    await conn.executemany(
        _QUEUE,
        [
            (
                r["warning_id"],
                "raised",
                channel,
                head,
                warning_payload(r, raised=True, changed_at=None, by=None),
            )
            for r in rows
        ],
    )
    return True


@dataclass(frozen=True)
class Claimed:
    warning_id: str
    change: str
    channel: str
    payload: dict[str, Any]
    attempts: int  # tries before this claim

    @property
    def delivery_id(self) -> str:
        """The same for every try of this notification: receivers may drop repeats by it."""
        return f"{self.warning_id}/{self.change}"


async def claim(pool: asyncpg.Pool, channel: str, claim_seconds: float) -> Claimed | None:
    """The channel's next due notification in ledger order, now claimed by this replica for
    ``claim_seconds`` (+ a margin); None when nothing is due. A warning's resolution waits
    for its raising to be delivered."""
    row = await pool.fetchrow(
        "UPDATE notifications n SET claimed_until = now() + make_interval(secs => $2)"
        "  FROM (SELECT warning_id, change FROM notifications d"
        "         WHERE d.channel = $1 AND d.delivered_at IS NULL AND d.due_at <= now()"
        "           AND (d.claimed_until IS NULL OR d.claimed_until < now())"
        "           AND NOT (d.change = 'resolved' AND EXISTS ("
        "                SELECT 1 FROM notifications r WHERE r.warning_id = d.warning_id"
        "                   AND r.channel = d.channel AND r.change = 'raised'"
        "                   AND r.delivered_at IS NULL))"
        "         ORDER BY d.position, d.change LIMIT 1 FOR UPDATE SKIP LOCKED) due"
        " WHERE n.warning_id = due.warning_id AND n.change = due.change AND n.channel = $1"
        " RETURNING n.warning_id::text, n.change, n.payload, n.attempts",
        channel,
        claim_seconds + CLAIM_MARGIN_SECONDS,
    )
    if row is None:
        return None
    return Claimed(row["warning_id"], row["change"], channel, row["payload"], row["attempts"])


async def delivered(pool: asyncpg.Pool, item: Claimed, tries: int) -> None:
    await pool.execute(
        "UPDATE notifications SET delivered_at = now(), claimed_until = NULL, last_error = NULL,"
        "       attempts = attempts + $4 WHERE warning_id = $1 AND change = $2 AND channel = $3",
        item.warning_id,
        item.change,
        item.channel,
        tries,
    )


async def failed(pool: asyncpg.Pool, item: Claimed, tries: int, error: str, retry_in_seconds: float) -> None:
    await pool.execute(
        "UPDATE notifications SET claimed_until = NULL, last_error = $5, attempts = attempts + $4,"
        "       due_at = now() + make_interval(secs => $6)"
        " WHERE warning_id = $1 AND change = $2 AND channel = $3",
        item.warning_id,
        item.change,
        item.channel,
        tries,
        error,
        retry_in_seconds,
    )
