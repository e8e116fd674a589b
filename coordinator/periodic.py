"""Runs a background job every N seconds until cancelled; a failed run is logged, not fatal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


async def run_every(name: str, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
    while True:
        try:
            await job()
        except Exception as exc:  # the database away, or a bug: the next run tries again
            log.warning("background_job_failed", job=name, error=repr(exc))
        await asyncio.sleep(seconds)
