"""HTTP load against running coordinators: each number is a reserve then a confirm.

Closed loop (throughput): ``concurrency`` workers, each starting its next number as soon as
the previous one is confirmed, for a fixed time. Open loop (latency): numbers start on a
timer at a fixed rate whatever the server does, and latency counts from the scheduled start,
so a stalled server cannot hide its backlog (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson
import uvloop

from bench import http1
from bench.stats import summary_ms

T = TypeVar("T")

REQUEST_TIMEOUT = 15.0
DOC_DATE = "2026-03-02"
# A snapshot as the agent sends it, and one the billing checks find right: the benchmark's
# documents must not each raise warnings the real ones would not.
DOCUMENT = {
    "ClientData": {
        "ClientID": "4711",
        "CompanyName": "Example B.V.",
        "FirstName": "Ada",
        "LastName": "Lovelace",
        "Address1": "Keizersgracht 1",
        "City": "Amsterdam",
        "Postcode": "1015 AA",
        "Country": "NL",
        "VATNumber": "NL123456789B01",
    },
    "DocData": {
        "Date": DOC_DATE,
        "DueDate": "2026-03-16",
        "DatePaid": f"{DOC_DATE} 10:00:00",
        "Currency": "EUR",
        "Subtotal": "100.00",
        "TaxRate": "21.00",
        "Tax": "21.00",
        "Total": "121.00",
        "Status": "Paid",
        "PaymentMethod": "banktransfer",
        "Items": [{"Description": "Hosting, March 2026", "Amount": "100.00", "Taxed": True}],
    },
}
CONFIRM_BODY = orjson.dumps({"document": DOCUMENT})
FAILURES = (http1.HttpError, aiohttp.ClientError, ConnectionError, TimeoutError)

Gate = Callable[[], Awaitable[None]]  # awaited once everything is set up, right before the load


class LoadError(Exception):
    pass


class Poster(Protocol):
    async def post(self, target: int, path: str, body: bytes) -> tuple[int, bytes]: ...


class _RawPoster:
    def __init__(self, targets: Sequence[str], token: str) -> None:
        self._clients = [http1.Client(url, token) for url in targets]

    async def post(self, target: int, path: str, body: bytes) -> tuple[int, bytes]:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await self._clients[target % len(self._clients)].post(path, body)

    def close(self) -> None:
        for client in self._clients:
            client.close()


class _AiohttpPoster:
    def __init__(self, session: aiohttp.ClientSession, targets: Sequence[str], token: str) -> None:
        self._session = session
        self._targets = list(targets)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def post(self, target: int, path: str, body: bytes) -> tuple[int, bytes]:
        url = self._targets[target % len(self._targets)] + path
        async with self._session.post(url, data=body, headers=self._headers) as resp:
            return resp.status, await resp.read()


@contextlib.asynccontextmanager
async def poster(kind: str, targets: Sequence[str], token: str, connections: int) -> AsyncIterator[Poster]:
    """``raw`` (bench.http1, cheap) or ``aiohttp`` (ClientSession, as a typical client)."""
    if kind == "raw":
        raw = _RawPoster(targets, token)
        try:
            yield raw
        finally:
            raw.close()
        return
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    ) as session:
        yield _AiohttpPoster(session, targets, token)


class Issuer:
    """Issues numbers: reserve, then confirm with a document snapshot."""

    def __init__(self, poster: Poster, prefix: str) -> None:
        self._poster = poster
        self._prefix = prefix
        self._seq = itertools.count()

    async def _post(self, target: int, path: str, body: bytes, expect: int) -> bytes:
        status, payload = await self._poster.post(target, path, body)
        if status != expect:
            raise LoadError(f"POST {path} -> {status}: {payload[:200]!r}")
        return payload

    async def issue(self, target: int) -> tuple[float, float]:
        """Reserve and confirm one number; return (reserve done, confirm done) monotonic times."""
        body = orjson.dumps(
            {"doctype": "invoice", "doc_id": f"{self._prefix}-{next(self._seq)}", "date": DOC_DATE}
        )
        reply = orjson.loads(await self._post(target, "/v1/reservations", body, 201))
        reserved = time.monotonic()
        await self._post(target, f"/v1/reservations/{reply['reservation_id']}/confirm", CONFIRM_BODY, 200)
        return reserved, time.monotonic()


@dataclass
class Tally:
    numbers: int = 0
    errors: int = 0
    first_error: str | None = None
    reserve: list[float] = field(default_factory=list)
    confirm: list[float] = field(default_factory=list)

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"[:300]


async def _no_gate() -> None:
    return None


async def closed_loop(
    targets: Sequence[str],
    token: str,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    prefix: str,
    http: str = "raw",
    gate: Gate = _no_gate,
) -> dict[str, Any]:
    """Numbers confirmed within [warmup, warmup + duration] by ``concurrency`` workers."""
    tally = Tally()
    async with poster(http, targets, token, concurrency) as post:
        issuer = Issuer(post, prefix)
        await gate()
        begin = time.monotonic()
        window = (begin + warmup, begin + warmup + duration)

        async def worker(index: int) -> None:
            while time.monotonic() < window[1]:
                started = time.monotonic()
                try:
                    reserved, done = await issuer.issue(index)
                except (LoadError, *FAILURES) as exc:
                    tally.failed(exc)
                    await asyncio.sleep(0.01)  # an erroring server must not turn this into a spin
                    continue
                if window[0] <= done <= window[1]:
                    tally.numbers += 1
                    tally.reserve.append(reserved - started)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return {
        "numbers": tally.numbers,
        "window": duration,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "reserve_ms": summary_ms(tally.reserve),
    }


@contextlib.asynccontextmanager
async def collector_paused() -> AsyncIterator[None]:
    """No garbage collection in this process while it times requests: a collection (up to
    30 ms measured in ``bench.batches``, after the baseline's 256 clients) would count as
    the server's latency for every request in flight. What earlier runs left is frozen, so
    later collections do not scan it either."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run a load on uvloop, as the coordinator runs: the clients' own event loop then adds
    least to what they time (and the same for the baselines)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def open_loop(
    targets: Sequence[str],
    token: str,
    *,
    rate: float,
    duration: float,
    warmup: float,
    prefix: str,
    http: str = "raw",
    gate: Gate = _no_gate,
) -> dict[str, Any]:
    """Start ``rate`` numbers per second for ``warmup + duration``; latencies after warmup."""
    tally = Tally()
    total = round(rate * (warmup + duration))
    async with poster(http, targets, token, max(int(rate), 64)) as post, collector_paused():
        issuer = Issuer(post, prefix)
        await gate()
        begin = time.monotonic()

        async def one(index: int, scheduled: float) -> None:
            try:
                reserved, done = await issuer.issue(index)
            except (LoadError, *FAILURES) as exc:
                tally.failed(exc)
                return
            if scheduled >= begin + warmup:
                tally.numbers += 1
                tally.reserve.append(reserved - scheduled)
                tally.confirm.append(done - reserved)

        tasks = []
        for index in range(total):
            scheduled = begin + index / rate
            await asyncio.sleep(max(scheduled - time.monotonic(), 0.0))
            tasks.append(asyncio.create_task(one(index, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - begin
    return {
        "offered": round(rate * duration),
        "numbers": tally.numbers,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "elapsed": round(elapsed, 2),
        "reserve_ms": summary_ms(tally.reserve),
        "confirm_ms": summary_ms(tally.confirm),
    }
