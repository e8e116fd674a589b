"""A warning for a store that went silent: its last heartbeat (peers/liveness.py) is too old."""

from __future__ import annotations

import asyncio

import asyncpg

from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerWriter


async def flag_silent(pool: asyncpg.Pool, writer: LedgerWriter, interval: float, missed: int) -> int:
    """Warn about active stores whose last heartbeat is more than ``missed`` intervals old.

    The warning resolves itself with the store's next heartbeat.
    """
    rows = await pool.fetch(
        "SELECT p.id::text, p.name, l.last_heartbeat_at FROM peers p"
        " JOIN peer_liveness l ON l.peer_id = p.id"
        " WHERE p.state = 'active' AND l.last_heartbeat_at < now() - make_interval(secs => $1)"
        "   AND NOT EXISTS (SELECT 1 FROM warnings w WHERE w.code = 'peer_silent'"
        "                   AND w.subject = p.id::text AND w.state = 'open')",
        interval * missed,
    )
    await asyncio.gather(
        *(
            writer.execute(
                c.RaiseWarning(
                    code="peer_silent",
                    subject=row["id"],
                    message=f"store {row['name']} missed {missed} heartbeats; last one at "
                    f"{row['last_heartbeat_at'].isoformat(timespec='seconds')}",
                )
            )
            for row in rows
        )
    )
    return len(rows)
