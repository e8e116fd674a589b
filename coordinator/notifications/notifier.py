"""The notifier: a background job per configured channel that queues the ledger's warning
changes and delivers them, each try bounded in time, retried with backoff (tenacity).

It never touches the ledger writer and holds a database connection only for short
statements, so a receiver that is down or slow delays its own notifications and nothing else.
A failed delivery ends the channel's round (its receiver is likely down); the notification
is tried again after a backoff that doubles with every try, up to an hour.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from coordinator.notifications import outbox
from coordinator.notifications.channel import Channel, DeliveryError
from coordinator.notifications.options import NotifyOptions
from coordinator.notifications.smtp import EmailChannel
from coordinator.notifications.webhook import WebhookChannel
from coordinator.periodic import run_every

log = structlog.get_logger(__name__)


def configured_channels(options: NotifyOptions) -> list[Channel]:
    channels: list[Channel] = []
    if options.notify_webhook_url:
        channels.append(
            WebhookChannel(options.notify_webhook_url, options.notify_webhook_secret.get_secret_value())
        )
    if options.notify_smtp_host:
        channels.append(EmailChannel(options))
    return channels


async def run_channel(pool: asyncpg.Pool, channel: Channel, options: NotifyOptions) -> None:
    """Until cancelled: every notify_interval_seconds, one round of the channel."""
    await run_every(
        f"notify_{channel.name}",
        options.notify_interval_seconds,
        lambda: notify_round(pool, channel, options),
    )


async def notify_round(pool: asyncpg.Pool, channel: Channel, options: NotifyOptions) -> int:
    """Queue the new warning changes, then deliver what is due in ledger order until nothing
    is or a delivery fails; return how many were delivered."""
    await outbox.catch_up(pool, channel.name)
    sent = 0
    while (item := await outbox.claim(pool, channel.name, options.delivery_seconds)) is not None:
        tries, error = await _deliver(channel, item, options)
        if error is None:
            await outbox.delivered(pool, item, tries)
            sent += 1
            continue
        retry_in = options.backoff_seconds(item.attempts + tries)
        await outbox.failed(pool, item, tries, error, retry_in)
        log.warning(
            "notification_failed",
            channel=channel.name,
            warning_id=item.warning_id,
            change=item.change,
            tries=item.attempts + tries,
            retry_in_seconds=retry_in,
            error=error,
        )
        break
    if sent:
        log.info("notifications_delivered", channel=channel.name, count=sent)
    return sent


async def _deliver(channel: Channel, item: outbox.Claimed, options: NotifyOptions) -> tuple[int, str | None]:
    """Up to notify_tries tries, each within notify_timeout_seconds: (tries made, None when
    delivered, else the last error). Only a DeliveryError is tried again at once."""
    tries = 0

    def wait(state: RetryCallState) -> float:
        return options.backoff_seconds(state.attempt_number)

    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(options.notify_tries),
            wait=wait,
            retry=retry_if_exception_type(DeliveryError),
            reraise=True,
        ):
            with attempt:
                tries += 1
                await _try_once(channel, item, options.notify_timeout_seconds)
    except DeliveryError as exc:
        return tries, str(exc)
    except Exception as exc:  # a notification the channel cannot even form: wait like a failure
        log.exception(
            "notification_not_sendable", channel=channel.name, warning_id=item.warning_id, change=item.change
        )
        return tries, f"cannot be sent: {exc!r}"
    return tries, None


async def _try_once(channel: Channel, item: outbox.Claimed, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await channel.send(item.payload, item.delivery_id)
    except TimeoutError:
        raise DeliveryError(f"no answer within {seconds:g} s") from None
