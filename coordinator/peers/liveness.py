"""Heartbeats: when each store was last seen (read by the silent-stores monitor)."""

from __future__ import annotations

import asyncpg


async def record_heartbeat(conn: asyncpg.Connection, peer_id: str) -> None:
    await conn.execute(
        "INSERT INTO peer_liveness (peer_id, last_heartbeat_at) VALUES ($1, now())"
        " ON CONFLICT (peer_id) DO UPDATE SET last_heartbeat_at = now()",
        peer_id,
    )
