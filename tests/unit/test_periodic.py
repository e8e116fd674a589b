"""Background jobs: a run is deferred while the caller says so, never beyond the bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from coordinator.periodic import run_every


async def _first_run(defer_while: Callable[[], bool] | None, longest_deferral: float = 60.0) -> None:
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    task = asyncio.create_task(
        run_every("test", 0.001, job, defer_while=defer_while, longest_deferral=longest_deferral)
    )
    try:
        await asyncio.wait_for(ran.wait(), 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_job_runs_at_once_when_nothing_defers_it() -> None:
    await _first_run(None)
    await _first_run(lambda: False)


async def test_a_job_waits_while_deferred_and_runs_once_it_is_not() -> None:
    asked = 0

    def burst() -> bool:
        nonlocal asked
        asked += 1
        return asked <= 5  # a burst for the first five looks

    await _first_run(burst)
    assert asked == 6  # it ran at the first look that found no burst


async def test_a_deferral_ends_after_the_longest_wait() -> None:
    await _first_run(lambda: True, longest_deferral=0.05)
