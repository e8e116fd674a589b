"""`concord sync kashflow` as a user runs it, and the coordinator's daily schedule."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from coordinator.app import create_app
from coordinator.settings import Settings, load_settings
from tests.support.fake_kashflow import FakeKashFlow
from tests.support.kashflow_ledger import Ledger, issue_many, open_ledger, serve_fake

CONFIG = """
kashflow_username = "concord"
kashflow_timeout_seconds = 5

[kashflow_gateways.paypal]
method = 22
account = 12

[kashflow_currencies.alpha]
1 = "GBP"
"""


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(database_url) as opened:
        yield opened


async def concord(
    database_url: str, config: Path, url: str, *args: str, password: str = "secret"
) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "CONCORD_LOG_LEVEL": "warning",
        "CONCORD_KASHFLOW_URL": url,
        "CONCORD_KASHFLOW_PASSWORD": password,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coordinator",
        "--config",
        str(config),
        "--database-url",
        database_url,
        "sync",
        "kashflow",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_sync_once_with_limit_shows_progress_and_options(
    ledger: Ledger, database_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "concord.toml"
    config.write_text(CONFIG)
    fake = FakeKashFlow()
    alpha = await ledger.add_store("alpha")
    await issue_many(ledger, alpha, 5)
    async with serve_fake(fake) as url:
        code, out, err = await concord(database_url, config, url, "--once", "--limit", "3")
        assert code == 0, err
        assert json.loads(out) == {
            "posted": 3,
            "failed": 0,
            "held": 0,
            "dropped": 0,
            "payments": 3,
            "refunds": 0,
            "remaining": 2,
        }
        assert "KashFlow" in err and "3/3" in err  # the progress bar
        code, out, _ = await concord(database_url, config, url, "--once")
        assert json.loads(out)["posted"] == 2
        assert len(fake.invoices) == 5

        code, out, err = await concord(database_url, config, url, "--show-options")
        assert code == 0, err
        assert "22  PayPal" in out and "11  Current Account (1200)" in out and "GBP" in out
        assert "paypal -> PayPal / PayPal" in out

        code, _, err = await concord(database_url, config, url, "--once", password="wrong")
        assert code == 1 and "Incorrect username or password" in err
    code, _, err = await concord(database_url, config, url, "--once", "--limit", "0")
    assert code == 2 and "--limit" in err
    config.write_text("")
    code, _, err = await concord(database_url, config, url, "--once")
    assert code == 1 and "CONCORD_KASHFLOW_USERNAME" in err


@pytest.mark.slow
async def test_replicas_run_the_daily_sync_once_at_the_scheduled_time(
    ledger: Ledger, database_url: str, tmp_path: Path, aiohttp_client
) -> None:
    fake = FakeKashFlow()
    alpha = await ledger.add_store("alpha")
    await issue_many(ledger, alpha, 4)
    zone = "Europe/Amsterdam"
    soon = (datetime.now(ZoneInfo(zone)) + timedelta(seconds=2.5)).time()
    config = tmp_path / "concord.toml"
    config.write_text(CONFIG)
    with capture_logs() as logs:
        async with serve_fake(fake) as url:
            settings: Settings = load_settings(
                config,
                database_url=database_url,
                timezone=zone,
                kashflow_url=url,
                kashflow_password="secret",
                kashflow_daily_at=soon,
                data_dir=tmp_path,
            )
            for _ in range(2):  # two replicas of one database
                await aiohttp_client(create_app(settings))

            def decided() -> list[str]:
                """What each replica did at the time: a replica schedules tomorrow's run once it
                has run today's or left it to the other."""
                return [e["event"] for e in logs if e["event"].startswith("kashflow_sync_")]

            deadline = asyncio.get_running_loop().time() + 15
            while decided().count("kashflow_sync_scheduled") < 4:
                assert asyncio.get_running_loop().time() < deadline, decided()
                await asyncio.sleep(0.1)
        assert decided().count("kashflow_sync_skipped") == 1, decided()
    assert len(fake.payments) == 4 and len(fake.invoices) == 4
    assert fake.count("GetCurrencies") == 1
