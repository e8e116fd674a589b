"""The coordinator as the agent sees it: HTTP calls with patient, idempotent retries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import aiohttp
import orjson
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

log = structlog.get_logger(__name__)


class CoordinatorUnavailable(Exception):
    """No answer, or a 5xx: nothing was acknowledged; the same request may be sent again."""


class CoordinatorRefused(Exception):
    """A 4xx: the coordinator understood and said no."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


# One item of a batch answer: the item's answer, or its own error.
ItemResult = dict[str, Any] | CoordinatorUnavailable | CoordinatorRefused


def item_result(answer: dict[str, Any]) -> ItemResult:
    """An item of a batch answer as the single request would have ended: its answer, or the
    exception the single request would have raised."""
    status = int(answer.get("status", 0))
    if 200 <= status < 300:
        return answer
    error = answer.get("error") or {}
    code, message = str(error.get("code", "refused")), str(error.get("message", ""))
    if status >= 500 or status == 0:
        return CoordinatorUnavailable(f"HTTP {status} {code}: {message}")
    return CoordinatorRefused(status, code, message)


# Half the coordinator's 8 MiB body limit: a batch of large snapshots (invoices of hundreds
# of items) goes in several requests rather than being refused whole.
BODY_LIMIT = 4 * 1024 * 1024


def _within_body_limit(items: Sequence[dict[str, Any]]) -> list[Sequence[dict[str, Any]]]:
    chunks: list[Sequence[dict[str, Any]]] = []
    start, size = 0, 0
    for index, item in enumerate(items):
        item_size = len(orjson.dumps(item)) + 1
        if index > start and size + item_size > BODY_LIMIT:
            chunks.append(items[start:index])
            start, size = index, 0
        size += item_size
    if start < len(items):
        chunks.append(items[start:])
    return chunks


# The coordinator refuses (400 agent_protocol_unsupported) an agent whose protocol it does not speak
# (coordinator/http/agent_protocol.py); raise it with every change the two must agree on.
PROTOCOL_HEADER = "Concord-Agent-Protocol"
PROTOCOL = 2


class CoordinatorClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 15.0, patience: float = 60.0) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            PROTOCOL_HEADER: str(PROTOCOL),
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._patience = patience
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CoordinatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=32)
            )
        return self._session

    async def once(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One attempt; raises CoordinatorUnavailable or CoordinatorRefused."""
        data = None if body is None else orjson.dumps(body)
        try:
            async with self._client().request(
                method, self._base + path, data=data, headers=self._headers
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CoordinatorUnavailable(f"{method} {path}: {exc!r}") from exc
        try:
            payload = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            payload = {}
        if status >= 500:
            raise CoordinatorUnavailable(f"{method} {path}: HTTP {status}")
        if status >= 400:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise CoordinatorRefused(
                status, error.get("code", "refused"), error.get("message", raw.decode(errors="replace"))
            )
        return payload

    async def call(
        self, method: str, path: str, body: Any = None, patience: float | None = None
    ) -> dict[str, Any]:
        """Retry while the coordinator is unavailable, for up to ``patience`` seconds."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(CoordinatorUnavailable),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
            stop=stop_after_delay(self._patience if patience is None else patience),
            reraise=True,
        ):
            with attempt:
                return await self.once(method, path, body)
        raise AssertionError("unreachable")

    async def batch(self, path: str, key: str, items: Sequence[dict[str, Any]]) -> list[ItemResult]:
        """One result per item, in order, in as few requests as the coordinator's body limit
        allows. Items the coordinator answered 503 (or a whole request, unanswered) are sent
        again, as they were, for up to ``patience`` seconds; what is still unavailable then
        comes back as CoordinatorUnavailable (raised when no item was answered at all)."""
        results: list[ItemResult] = []
        for chunk in _within_body_limit(items):
            try:
                results += await self._batch_request(path, key, chunk)
            except CoordinatorUnavailable as exc:
                if not results:
                    raise
                results += [exc] * (len(items) - len(results))
                break
        return results

    async def _batch_request(self, path: str, key: str, items: Sequence[dict[str, Any]]) -> list[ItemResult]:
        results: list[ItemResult] = [CoordinatorUnavailable("not sent")] * len(items)
        todo = list(range(len(items)))
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(CoordinatorUnavailable),
                wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
                stop=stop_after_delay(self._patience),
                reraise=True,
            ):
                with attempt:
                    answer = await self.once("POST", path, {key: [items[i] for i in todo]})
                    answers = answer.get("results")
                    if not isinstance(answers, list) or len(answers) != len(todo):
                        raise CoordinatorUnavailable(
                            f"POST {path}: {len(todo)} items sent, answer holds "
                            f"{len(answers) if isinstance(answers, list) else 'no'} results"
                        )
                    for index, one in zip(todo, answers, strict=True):
                        results[index] = item_result(one)
                    todo = [i for i in todo if isinstance(results[i], CoordinatorUnavailable)]
                    if todo:
                        raise CoordinatorUnavailable(
                            f"POST {path}: {len(todo)} of {len(items)} items unavailable"
                        )
        except CoordinatorUnavailable:
            if len(todo) == len(items):
                raise
        return results

    async def reserve(self, doctype: str, doc_id: str, on: date) -> dict[str, Any]:
        return await self.call(
            "POST", "/v1/reservations", {"doctype": doctype, "doc_id": doc_id, "date": on.isoformat()}
        )

    async def confirm(self, reservation_id: str, document: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", f"/v1/reservations/{reservation_id}/confirm", {"document": document})

    async def reserve_many(self, documents: Sequence[tuple[str, str, date]]) -> list[ItemResult]:
        """Reserve numbers for (doctype, doc_id, date) documents in one request (≤ 500)."""
        return await self.batch(
            "/v1/reservations/batch",
            "documents",
            [
                {"doctype": doctype, "doc_id": doc_id, "date": on.isoformat()}
                for doctype, doc_id, on in documents
            ],
        )

    async def confirm_many(self, confirmations: Sequence[tuple[str, dict[str, Any]]]) -> list[ItemResult]:
        """Confirm (reservation id, document snapshot) pairs in one request (≤ 500)."""
        return await self.batch(
            "/v1/reservations/confirm",
            "confirmations",
            [{"reservation_id": rid, "document": document} for rid, document in confirmations],
        )

    async def release(self, reservation_id: str, reason: str) -> dict[str, Any]:
        return await self.call("POST", f"/v1/reservations/{reservation_id}/release", {"reason": reason[:500]})

    async def update_document(self, doctype: str, doc_id: str, document: dict[str, Any]) -> dict[str, Any]:
        return await self.call("PUT", f"/v1/documents/{doctype}/{doc_id}", {"document": document})

    async def import_documents(self, documents: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("POST", "/v1/documents/import", {"documents": documents})

    async def heartbeat(self, agent_version: str, settings: dict[str, Any]) -> dict[str, Any]:
        return await self.call(
            "POST", "/v1/heartbeat", {"agent_version": agent_version, "settings": settings}, patience=0
        )
