"""VIES, the EU's VAT number check: its REST wire format and the lookup policy of the feed.

Wire protocol: the European Commission's REST API, ``POST …/check-vat-number`` with
``{"countryCode": "IT", "vatNumber": "00950501007"}``; the reply carries ``"valid": true``
or ``false``. Failures arrive either as an HTTP error or as a 200 carrying
``{"actionSucceed": false, "errorWrappers": [{"error": "MS_UNAVAILABLE", …}]}``.

The transport (an HTTP POST) and the cache table are the caller's: the agent keeps its
cache in MySQL, the coordinator in PostgreSQL. This module holds no I/O of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import orjson

from coordinator.events.europe import client_territory, europe_block, vat_number, vies_key

DEFAULT_URL = "https://ec.europa.eu/taxation_customs/vies/rest-api/check-vat-number"
VatKey = tuple[str, str]  # (VIES country code, number without prefix)
# INVALID_INPUT is VIES's answer to a malformed number: a verdict, not an outage.
_VERDICT_ERRORS = frozenset(("INVALID_INPUT",))


def request_body(key: VatKey) -> bytes:
    return orjson.dumps({"countryCode": key[0], "vatNumber": key[1]})


def parse_reply(status: int, body: bytes) -> bool | None:
    """VIES's verdict on one number, or None when it gave none (service or member state
    unavailable, too many requests, a reply we cannot read)."""
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(reply, dict):
        return None
    errors = {str(e.get("error")) for e in reply.get("errorWrappers") or () if isinstance(e, dict)}
    if errors & _VERDICT_ERRORS:
        return False
    if errors or reply.get("actionSucceed") is False or not 200 <= status < 300:
        return None
    valid = reply.get("valid")
    return valid if isinstance(valid, bool) else None


@dataclass(frozen=True)
class ViesSettings:
    url: str  # "" = VIES off: only cached verdicts count
    timeout_seconds: float
    cache_days: int
    lookups_per_answer: int


@dataclass(frozen=True)
class Verdict:
    valid: bool
    checked_at: datetime


class VerdictCache(Protocol):
    async def load(self, keys: Collection[VatKey]) -> dict[VatKey, Verdict]: ...

    async def save(self, verdicts: Mapping[VatKey, Verdict]) -> None: ...


Ask = Callable[[VatKey], Awaitable[bool | None]]


class ViesLookup:
    """The VIES lookups of one feed answer.

    Cached verdicts younger than ``max_age`` are used as they are; other numbers are asked
    (``concurrency`` at a time, at most ``budget`` per answer). When VIES gives no verdict,
    an older cached verdict stands in; without one the number counts as unconfirmed. After
    the first failure the answer asks VIES no more, so an outage costs one timeout.
    ``ask`` None: VIES is switched off and only cached verdicts count.
    """

    def __init__(
        self,
        ask: Ask | None,
        cache: VerdictCache,
        *,
        max_age: timedelta,
        budget: int,
        now: Callable[[], datetime],
        concurrency: int = 4,
    ) -> None:
        self._ask = ask
        self._cache = cache
        self._max_age = max_age
        self._budget = budget
        self._now = now
        self._slots = asyncio.Semaphore(concurrency)
        self._known: dict[VatKey, bool] = {}
        self.failed = False

    async def confirmed(self, keys: Collection[VatKey]) -> set[VatKey]:
        wanted = {k for k in keys if k not in self._known}
        if wanted:
            cached = await self._cache.load(wanted)
            now = self._now()
            stale = sorted(k for k in wanted if k not in cached or now - cached[k].checked_at > self._max_age)
            answers = await self._ask_all(stale)
            fresh = {k: Verdict(v, now) for k, v in answers.items() if v is not None}
            if fresh:
                await self._cache.save(fresh)
            for key in wanted:
                verdict = fresh.get(key) or cached.get(key)
                self._known[key] = verdict.valid if verdict else False
        return {k for k in keys if self._known[k]}

    async def _ask_all(self, keys: Sequence[VatKey]) -> dict[VatKey, bool | None]:
        if self._ask is None or self.failed or not keys:
            return {}
        keys = keys[: self._budget]
        self._budget -= len(keys)
        ask = self._ask

        async def one(key: VatKey) -> bool | None:
            if self.failed:
                return None
            async with self._slots:
                if self.failed:
                    return None
                verdict = await ask(key)
            if verdict is None:
                self.failed = True
            return verdict

        return dict(zip(keys, await asyncio.gather(*(one(k) for k in keys)), strict=True))


def _document_day(document: Mapping[str, Any], today: date) -> date:
    try:
        return date.fromisoformat(str(document["DocData"].get("Date") or ""))
    except ValueError:
        return today


async def add_europe(
    documents: Sequence[dict[str, Any]], homes: Sequence[str], lookup: ViesLookup, today: date
) -> None:
    """Put the ``Europe`` block into each document's ClientData (at answer time: VIES and
    the store's own country, ``homes[i]``, are today's; the euro membership the document
    date's)."""
    places = [client_territory(d["ClientData"]) for d in documents]
    keys = [
        vies_key(vat_number(d["ClientData"]), place.member_state) if place else None
        for d, place in zip(documents, places, strict=True)
    ]
    confirmed = await lookup.confirmed({k for k in keys if k is not None})
    for document, home, place, key in zip(documents, homes, places, keys, strict=True):
        document["ClientData"]["Europe"] = europe_block(
            place, vies=key in confirmed, home=home, on=_document_day(document, today)
        )
