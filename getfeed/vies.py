"""VIES, the EU's VAT number check: its REST wire format, its verdicts, and the ``Europe``
block of a feed answer's documents.

Wire protocol: the European Commission's REST API, ``POST …/check-vat-number`` with
``{"countryCode": "IT", "vatNumber": "00950501007"}``; the reply carries ``"valid": true``
or ``false``. Failures arrive either as an HTTP error or as a 200 carrying
``{"actionSucceed": false, "errorWrappers": [{"error": "MS_UNAVAILABLE", …}]}``.

The transport (an HTTP POST: getfeed/http.py) and the cache table are the caller's: the
agent keeps its cache in MySQL, the coordinator in PostgreSQL; which numbers are asked, and
when, is getfeed/lookup.py's. Pure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

import orjson

from getfeed.europe import client_territory, europe_block, vat_number, vies_key

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


class Confirmations(Protocol):
    """Which VAT numbers VIES confirms (getfeed/lookup.py: cache, budget and asking)."""

    async def confirmed(self, keys: Collection[VatKey]) -> set[VatKey]: ...


def _document_day(document: Mapping[str, Any], today: date) -> date:
    try:
        return date.fromisoformat(str(document["DocData"].get("Date") or ""))
    except ValueError:
        return today


async def add_europe(
    documents: Sequence[dict[str, Any]], homes: Sequence[str], lookup: Confirmations, today: date
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
