"""`concord warnings`, run as an operator runs it: a table in a terminal, JSON when piped,
and --resolve as a ledger event."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from coordinator.db import connect
from coordinator.ledger import commands as c
from coordinator.ledger.writer import open_ledger

ZONE = "Europe/Amsterdam"
ENV = {**os.environ, "CONCORD_LOG_LEVEL": "warning", "CONCORD_TIMEZONE": ZONE}


def concord(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", "--database-url", database_url, "warnings", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )


def concord_on_a_terminal(database_url: str, *args: str) -> str:
    """What `concord warnings ARGS` prints with its standard output on a terminal."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "--database-url", database_url, "warnings", *args],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    os.close(follower)
    shown = b""
    try:
        while chunk := os.read(leader, 65536):
            shown += chunk
    except OSError:  # EIO: the program ended and closed the terminal
        pass
    finally:
        os.close(leader)
    assert process.wait(timeout=60) == 0
    return shown.decode().replace("\r\n", "\n")


async def _raise(database_url: str, subjects: list[str]) -> dict[str, str]:
    async with open_ledger(database_url, pool_size=2) as (pool, writer):
        for subject in subjects:
            await writer.execute(
                c.RaiseWarning(
                    code="billing_check", subject=subject, message=f"{subject}: Tax is not\nitems x rate"
                )
            )
        rows = await pool.fetch("SELECT subject, id::text FROM warnings")
    return {r["subject"]: r["id"] for r in rows}


def raise_warnings(database_url: str, *subjects: str) -> dict[str, str]:
    """Subject -> id of the warnings raised."""
    return asyncio.run(_raise(database_url, list(subjects)))


async def _resolutions(database_url: str) -> list[dict[str, str]]:
    conn = await connect(database_url)
    try:
        return [
            r["data"]
            for r in await conn.fetch(
                "SELECT data FROM events WHERE type = 'WarningResolved' ORDER BY position"
            )
        ]
    finally:
        await conn.close()


def test_open_warnings_as_json_when_piped_and_resolved_ones_with_all(database_url: str) -> None:
    ids = raise_warnings(database_url, "eu-1/invoice/7", "eu-1/invoice/8")
    assert concord(database_url, "--resolve", ids["eu-1/invoice/8"]).returncode == 0

    shown = json.loads(concord(database_url).stdout)
    assert [(w["warning_id"], w["state"]) for w in shown["warnings"]] == [(ids["eu-1/invoice/7"], "open")]
    assert shown["warnings"][0]["message"] == "eu-1/invoice/7: Tax is not\nitems x rate"
    every = json.loads(concord(database_url, "--all").stdout)["warnings"]
    assert sorted((w["subject"], w["state"]) for w in every) == [
        ("eu-1/invoice/7", "open"),
        ("eu-1/invoice/8", "resolved"),
    ]


@pytest.mark.slow
def test_a_table_in_a_terminal(database_url: str) -> None:
    assert concord_on_a_terminal(database_url) == "no open warnings\n"
    ids = raise_warnings(database_url, "eu-1/invoice/7")
    raised_at = json.loads(concord(database_url).stdout)["warnings"][0]["raised_at"]
    local = datetime.fromisoformat(raised_at).astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M")

    header, row, footer = concord_on_a_terminal(database_url).splitlines()
    assert header.split() == ["ID", "STATE", "RAISED", "CODE", "SUBJECT", "MESSAGE"]
    assert row.split() == [
        ids["eu-1/invoice/7"],
        "open",
        *local.split(),
        "billing_check",
        "eu-1/invoice/7",
        "eu-1/invoice/7:",
        "Tax",
        "is",
        "not",
        "items",
        "x",
        "rate",
    ]
    assert header.index("MESSAGE") == row.index("eu-1/invoice/7:")  # columns line up
    assert footer == f"1 warning(s), times in {ZONE}"
    assert (
        json.loads(concord_on_a_terminal(database_url, "--json"))["warnings"][0]["warning_id"]
        == ids["eu-1/invoice/7"]
    )

    concord(database_url, "--resolve", ids["eu-1/invoice/7"])
    header, row, _ = concord_on_a_terminal(database_url, "--all").splitlines()
    assert header.split()[:4] == ["ID", "STATE", "RAISED", "RESOLVED"]
    assert row.split()[1] == "resolved"


def test_resolve_is_a_ledger_event_and_bad_ids_change_nothing(database_url: str) -> None:
    ids = raise_warnings(database_url, "eu-1/invoice/7")
    warning_id = ids["eu-1/invoice/7"]

    resolved = concord(database_url, "--resolve", warning_id.upper())
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(resolved.stdout) == {"warning_id": warning_id, "state": "resolved"}
    assert asyncio.run(_resolutions(database_url)) == [{"warning_id": warning_id, "by": "operator"}]
    assert json.loads(concord(database_url).stdout) == {"warnings": []}

    unknown = concord(database_url, "--resolve", "00000000-0000-4000-8000-000000000000")
    assert unknown.returncode == 1
    assert unknown.stderr == "concord: no warning 00000000-0000-4000-8000-000000000000\n"
    malformed = concord(database_url, "--resolve", "7")
    assert malformed.returncode == 2
    assert "argument --resolve: '7' is not a warning id (a UUID)" in malformed.stderr
    both = concord(database_url, "--all", "--resolve", warning_id)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert len(asyncio.run(_resolutions(database_url))) == 1
