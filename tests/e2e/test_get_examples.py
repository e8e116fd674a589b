"""The example clients docs/examples/get.php and get.py, run against a live agent and a live
coordinator: what they print is what the feeds hold."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Tokens
from tests.e2e.test_agent_tools import php  # noqa: F401  # a fixture: php-cli with curl
from tests.e2e.test_webservice_end_to_end import STORE, TOKEN, LiveFeeds, live_feeds, post
from tests.support.mysql_fixtures import WhmcsDatabaseFactory

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
HEADER = ["ID", "Type", "Num", "Status", "Date", "Client", "Subtotal", "Tax", "Tax2"]


def printed(answer: dict[str, Any]) -> list[list[str]]:
    """The lines an example prints for a feed answer, split at the tabs."""
    lines = [HEADER]
    for key, document in answer.items():
        client, doc = document["ClientData"], document["DocData"]
        lines.append(
            [
                key,
                doc["Type"],
                doc["Num"],
                doc["Status"],
                doc["Date"],
                client["CompanyName"] or client["ClientName"],
                doc["Subtotal"],
                doc["Tax"],
                doc["Tax2"],
            ]
        )
    return lines


class Example:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    async def run(
        self, *arguments: str, env: dict[str, str] | None = None
    ) -> tuple[int, list[list[str]], str]:
        """Exit status, stdout split into lines and tabs, stderr."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_GET_")}
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            *arguments,
            env={**environment, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
        assert proc.returncode is not None
        text = out.decode()
        assert text == "" or text.endswith("\n")
        return proc.returncode, [line.split("\t") for line in text.split("\n")[:-1]], err.decode()


@pytest.fixture(params=["php", "python"])
def example(request: pytest.FixtureRequest) -> Example:
    if request.param == "php":
        return Example([request.getfixturevalue("php"), str(EXAMPLES / "get.php")])
    return Example([sys.executable, str(EXAMPLES / "get.py")])


async def _feed(http: aiohttp.ClientSession, url: str, token: str, **fields: str) -> dict[str, Any]:
    status, answer = await post(http, url, data={"action": "Get", "token": token, **fields})
    assert status == 200, answer
    return answer


async def test_the_examples_print_what_the_feeds_hold(
    example: Example,
    database_url: str,
    tokens: Tokens,
    whmcs_database_factory: WhmcsDatabaseFactory,
    tmp_path: Path,
) -> None:
    async with (
        live_feeds(database_url, tokens, whmcs_database_factory, tmp_path) as feeds,
        aiohttp.ClientSession() as http,
    ):
        await _check(example, feeds, http)


async def _check(example: Example, feeds: LiveFeeds, http: aiohttp.ClientSession) -> None:
    # The agent, URL and token as arguments: every document, the unnumbered ones too.
    local = await _feed(http, feeds.agent_url, TOKEN)
    status, lines, err = await example.run(feeds.agent_url, TOKEN)
    assert status == 0, err
    assert lines == printed(local)
    assert any(line[2] == "" for line in lines[1:]) and any(line[2] for line in lines[1:])
    assert err.strip() == f"{len(local)} documents"
    # Filters, with a space in a value: one day's documents.
    day = next(iter(local.values()))["DocData"]["Date"]
    status, lines, err = await example.run(
        feeds.agent_url, TOKEN, f"start={day}", f"end={day}", "doctype=Invoices"
    )
    assert status == 0, err
    assert (
        lines
        == printed(await _feed(http, feeds.agent_url, TOKEN, start=day, end=day, doctype="Invoices"))
        != [HEADER]
    )
    # The coordinator, URL and token from the environment: one store's credit notes.
    env = {"CONCORD_GET_URL": feeds.coordinator_url, "CONCORD_GET_TOKEN": feeds.reader_token}
    status, lines, err = await example.run(f"store={STORE}", "doctype=CreditNotes", env=env)
    assert status == 0, err
    central = await _feed(http, feeds.coordinator_url, feeds.reader_token, store=STORE, doctype="CreditNotes")
    assert lines == printed(central) != [HEADER]
    assert all(line[0].startswith(f"{STORE}/") and line[1] == "CreditNote" for line in lines[1:])
    # A refusal: nothing on stdout, the feed's message on stderr, exit status 1.
    status, lines, err = await example.run(feeds.coordinator_url, "wrong-token", "start=All")
    assert (status, lines) == (1, [])
    assert "401" in err and "token" in err
    status, lines, err = await example.run(feeds.agent_url, TOKEN, "start=2019-02-30")
    assert (status, lines) == (1, [])
    assert "400" in err and "'2019-02-30'" in err
