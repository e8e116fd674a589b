"""The agent runs a WHMCS transaction again when InnoDB rolled it back whole (a deadlock
victim, a lock wait that timed out), a bounded number of times, and nothing else."""

from __future__ import annotations

import pytest
from asyncmy.errors import OperationalError

from agent.whmcs import queries


def _failing(errors: list[int]):
    calls: list[int] = []

    async def run() -> str:
        calls.append(1)
        if errors:
            code = errors.pop(0)
            raise OperationalError(code, f"error {code}")
        return "done"

    return run, calls


@pytest.mark.parametrize("code", queries.LOCK_CONFLICTS)
async def test_a_rolled_back_transaction_runs_again(code: int) -> None:
    run, calls = _failing([code] * (queries.WRITE_ATTEMPTS - 1))
    assert await queries._again_on_lock_conflict(run) == "done"
    assert len(calls) == queries.WRITE_ATTEMPTS


async def test_it_gives_up_after_its_attempts() -> None:
    run, calls = _failing([1213] * queries.WRITE_ATTEMPTS)
    with pytest.raises(OperationalError):
        await queries._again_on_lock_conflict(run)
    assert len(calls) == queries.WRITE_ATTEMPTS


async def test_other_errors_are_not_retried() -> None:
    run, calls = _failing([2013])  # lost connection: not known to be rolled back
    with pytest.raises(OperationalError):
        await queries._again_on_lock_conflict(run)
    assert len(calls) == 1
