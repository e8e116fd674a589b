"""The coordinator's background chain check: every new event's hash is recomputed soon after
it is committed, and a mismatch raises a warning.

It starts from the genesis when the process starts (in small batches, yielding between
them, so requests are not held up) and then follows the head. It stops at the first event
whose seal or link is broken — that position and everything after it stay unverified — and
raises the warning ``ledger_chain_broken`` once; ``/healthz`` reports how far it got. Each
run also re-reads the last verified event, so a tail rewritten after it was verified is
caught even before a new event follows it.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from coordinator.audit.chain import EVENT_COLUMNS, ChainVerifier, stored_body
from coordinator.audit.findings import Findings
from coordinator.events.canonical import GENESIS_HASH
from coordinator.ledger import commands as c
from coordinator.ledger.writer import LedgerWriter

log = structlog.get_logger(__name__)

BATCH = 100  # events per query: about a millisecond of CPU between two yields


class ChainWatch:
    CHECK_SECONDS = 2.0  # how soon a committed event is verified

    def __init__(self, pool: asyncpg.Pool, writer: LedgerWriter) -> None:
        self._pool = pool
        self._writer = writer
        self.position = 0  # last verified event
        self.hash = GENESIS_HASH
        self.broken_at: int | None = None
        self._running = asyncio.Lock()  # one run at a time (the loop, or a caller)

    def health(self) -> dict[str, int | None]:
        return {"verified_position": self.position, "broken_at": self.broken_at}

    async def check(self) -> int:
        """Verify every event committed since the last run; return how many were verified."""
        async with self._running:
            return await self._check()

    async def _check(self) -> int:
        if self.broken_at is not None:
            return 0
        if self.position:
            # A rewrite of what was verified already shows in its last event.
            async with self._pool.acquire() as conn:
                stored = await conn.fetchval("SELECT hash FROM events WHERE position = $1", self.position)
            if stored is None or bytes(stored) != self.hash:
                await self._broken(
                    self.position, "the event was changed or removed after it had been verified"
                )
                return 0
        verified = 0
        while True:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
                    self.position,
                    BATCH,
                )
            findings = Findings()
            chain = ChainVerifier(findings, position=self.position, hash_=self.hash)
            for row in rows:
                chain.feed(row["position"], stored_body(row), bytes(row["hash"]), bytes(row["prev_hash"]))
                if findings.counts:
                    await self._broken(row["position"], findings.kept[0].message)
                    return verified
                self.position, self.hash = chain.position, chain.hash
                verified += 1
            if len(rows) < BATCH:
                return verified
            await asyncio.sleep(0)

    async def _broken(self, position: int, message: str) -> None:
        self.broken_at = position
        log.error("ledger_chain_broken", position=position, problem=message)
        await self._writer.execute(
            c.RaiseWarning(
                code="ledger_chain_broken",
                subject="ledger",
                message=f"the background chain check found position {position} broken: {message}. "
                f"Events up to {self.position} are verified. Run `concord audit` "
                "(with the stores' receipts) to see what changed.",
            )
        )
