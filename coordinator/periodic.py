"""Runs a background job every N seconds until cancelled; a failed run is logged, not fatal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


async def run_every(
    name: str,
    seconds: float,
    job: Callable[[], Awaitable[object]],
    *,
    defer_while: Callable[[], bool] | None = None,
    longest_deferral: float = 60.0,
) -> None:
    """``defer_while``: a run is skipped while it says so (work that must not wait is under
    way), but never for longer than ``longest_deferral`` seconds since the last run."""
    loop = asyncio.get_running_loop()
    last_run = loop.time()
    while True:
        if defer_while is None or not defer_while() or loop.time() - last_run >= longest_deferral:
            try:
                await job()
            except Exception as exc:  # the database away, or a bug: the next run tries again
                log.warning("background_job_failed", job=name, error=repr(exc))
            last_run = loop.time()
        await asyncio.sleep(seconds)
