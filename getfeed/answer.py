"""The Get feed's answer, encoded piece by piece so that it streams. Pure.

The answer is one JSON object keyed by document ID; it is produced page by page, each
page's documents completed with their ``Europe`` block, so memory holds one page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import orjson

from getfeed.europe import home_member_state
from getfeed.vies import Confirmations, add_europe

# (key in the answer, {"ClientData", "DocData"…}, member state of the store's own country)
FeedItem = tuple[str, dict[str, Any], str]


def feed_item(store: str, doc_id: str, snapshot: dict[str, Any], country: str) -> FeedItem:
    """A stored document as the feed answers it: keyed ``STORE/ID``, carrying ``Store``;
    ``country`` is the one the store's agent reports."""
    return f"{store}/{doc_id}", {"Store": store, **snapshot}, home_member_state(country)


async def complete(page: list[FeedItem], lookup: Confirmations, today: date) -> None:
    """Put the ``Europe`` block into each document of ``page``."""
    await add_europe([doc for _, doc, _ in page], [home for *_, home in page], lookup, today)


async def prepend(
    first: list[FeedItem], rest: AsyncIterator[list[FeedItem]]
) -> AsyncIterator[list[FeedItem]]:
    yield first
    async for page in rest:
        yield page


async def answer_chunks(
    pages: AsyncIterator[list[FeedItem]], lookup: Confirmations, today: date
) -> AsyncIterator[bytes]:
    yield b"{"
    first = True
    async for page in pages:
        if not page:
            continue
        await complete(page, lookup, today)
        # One dumps per page: the members of a JSON object, without its braces.
        body = orjson.dumps({key: doc for key, doc, _ in page})[1:-1]
        yield body if first else b"," + body
        first = False
    yield b"}"
