"""A minimal HTTP/1.1 keep-alive client for the load generator.

aiohttp's client spends about as much CPU per request as the coordinator does serving it,
and on a 2-core machine that CPU is taken from the server being measured. This client does
only what the benchmark needs (POST a JSON body, read a Content-Length answer, reuse the
connection), at a fraction of the cost, like wrk or h2load would.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self.broken = True
            waiter.set_exception(HttpError("answer without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop > 0 else None])
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        body = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        waiter.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._waiter


class Client:
    """POSTs to one server over a pool of keep-alive connections (one per concurrent request)."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._head = (
            f"Host: {self._host}:{self._port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self._idle: list[_Connection] = []
        self._all: list[_Connection] = []

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.broken:
                return conn
        _, conn = await asyncio.get_running_loop().create_connection(_Connection, self._host, self._port)
        self._all.append(conn)
        return conn

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body); bound it with ``asyncio.timeout`` (a timed-out connection is dropped)."""
        request = b"".join(
            (
                b"POST ",
                path.encode(),
                b" HTTP/1.1\r\n",
                self._head,
                b"Content-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )
        conn = await self._connection()
        try:
            answer = await conn.exchange(request)
        except BaseException:
            conn.broken = True  # an answer may still arrive on it: never reuse
            if conn.transport is not None:
                conn.transport.close()
            raise
        self._idle.append(conn)
        return answer

    def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()
