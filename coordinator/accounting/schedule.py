"""The daily KashFlow sync: at a wall-clock time in the configured zone, until cancelled."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from coordinator.accounting.kashflow import KashFlowClient
from coordinator.accounting.options import SyncMapping
from coordinator.accounting.queue import claim_daily_run
from coordinator.accounting.sync import Progress, RunReport, SyncBusy, run_sync
from coordinator.ledger.writer import LedgerWriter
from coordinator.settings import Settings

log = structlog.get_logger(__name__)


def next_run(now: datetime, at: time, zone: str) -> datetime:
    """The first ``at`` in ``zone`` strictly after ``now`` (aware), in UTC. On the day a
    clock change skips ``at``, the run is that much later (02:00 becomes 03:00)."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    when = datetime.combine(local.date(), at, tzinfo=tz)
    if when.astimezone(UTC) <= now:
        when = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=tz)
    return when.astimezone(UTC)


def kashflow_client(settings: Settings) -> KashFlowClient:
    return KashFlowClient(
        settings.kashflow_url,
        settings.kashflow_username,
        settings.kashflow_password.get_secret_value(),
        timeout=settings.kashflow_timeout_seconds,
    )


def mapping_of(settings: Settings) -> SyncMapping:
    return SyncMapping(gateways=settings.kashflow_gateways, currencies=settings.kashflow_currencies)


async def run_once(
    pool: asyncpg.Pool,
    writer: LedgerWriter,
    settings: Settings,
    limit: int | None = None,
    progress: Progress | None = None,
) -> RunReport:
    kashflow = kashflow_client(settings)
    try:
        return await run_sync(
            pool, writer, kashflow, mapping_of(settings), limit or settings.kashflow_limit, progress
        )
    finally:
        await kashflow.aclose()


async def run_daily(pool: asyncpg.Pool, writer: LedgerWriter, settings: Settings) -> None:
    """Sleeps until the next run time, runs, repeats; ends when cancelled. A failed run is
    logged (and raised as a warning by the run itself where KashFlow refused)."""
    while True:
        now = datetime.now(UTC)
        when = next_run(now, settings.kashflow_daily_at, settings.timezone)
        log.info("kashflow_sync_scheduled", at=when.isoformat())
        await asyncio.sleep((when - now).total_seconds())
        try:
            if await claim_daily_run(pool, when):
                await run_once(pool, writer, settings)
            else:
                log.info("kashflow_sync_skipped", reason="another replica ran it")
        except SyncBusy:
            log.info("kashflow_sync_skipped", reason="another process is running it")
        except Exception as exc:  # a daily job must outlive any one failure
            log.error("kashflow_sync_failed", error=repr(exc))
