"""Raises a warning for reservations pending too long. It never reassigns a number."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from coordinator.ledger import commands as c
from coordinator.ledger import queries
from coordinator.ledger.writer import LedgerWriter

log = structlog.get_logger(__name__)


async def flag_overdue(pool: asyncpg.Pool, writer: LedgerWriter, minutes: int) -> int:
    async with pool.acquire() as conn:
        overdue = await queries.overdue_reservations(conn, minutes)
    await asyncio.gather(
        *(writer.execute(c.FlagPendingReservation(reservation_id=rid, minutes=minutes)) for rid in overdue)
    )
    if overdue:
        log.warning("reservations_pending", count=len(overdue), minutes=minutes)
    return len(overdue)
