"""The webhook channel: one POST of the warning change as JSON, signed with HMAC-SHA256.

A receiver checks ``Concord-Signature: sha256=<hex>`` against the HMAC-SHA256 of the exact
request body under the shared secret (docs/operations.md, "Notifications"), and may drop a
repeat by ``Concord-Delivery``, the same on every try of one change.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import aiohttp
import orjson

from coordinator.notifications.channel import DeliveryError

SIGNATURE_HEADER = "Concord-Signature"
DELIVERY_HEADER = "Concord-Delivery"


def signature(secret: str, body: bytes) -> str:
    """The Concord-Signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, secret: str) -> None:
        self._url = url
        self._secret = secret

    async def send(self, payload: dict[str, Any], delivery_id: str) -> None:
        body = orjson.dumps(payload)
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: delivery_id,
            SIGNATURE_HEADER: signature(self._secret, body),
        }
        try:
            # The notifier bounds each try (notify_timeout_seconds).
            async with (
                aiohttp.ClientSession() as session,
                session.post(self._url, data=body, headers=headers) as answer,
            ):
                if not 200 <= answer.status < 300:
                    raise DeliveryError(f"the receiver answered HTTP {answer.status}")
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"the receiver cannot be reached: {exc!r}") from exc
