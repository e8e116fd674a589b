"""What the notifier asks of a channel: send one warning change, or say why it could not."""

from __future__ import annotations

from typing import Any, Protocol


class DeliveryError(Exception):
    """The receiver did not take the notification; a later try may succeed."""


class Channel(Protocol):
    name: str  # as recorded in notifications.channel: "webhook" or "email"

    async def send(self, payload: dict[str, Any], delivery_id: str) -> None:
        """Deliver ``payload`` once; raise DeliveryError when the receiver did not take it."""
        ...
