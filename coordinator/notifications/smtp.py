"""The e-mail channel: one message per warning change over SMTP, with the standard library's
smtplib in a worker thread (no dependency beyond Python)."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
import threading
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, TypeVar

import structlog

from coordinator.notifications.channel import DeliveryError
from coordinator.notifications.options import NotifyOptions

log = structlog.get_logger(__name__)
T = TypeVar("T")


def compose(payload: dict[str, Any], delivery_id: str, sender: str, recipients: list[str]) -> EmailMessage:
    """The e-mail of one warning change. Its Message-ID is the same on every try, so a mail
    system that sees it twice may keep one."""
    message = EmailMessage()
    subject = f"[Concord] warning {payload['change']}: {payload['code']} ({payload['subject']})"
    message["Subject"] = " ".join(subject.split())  # a header holds no line break
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = f"<{delivery_id.replace('/', '.')}@concord>"
    lines = [
        f"A Concord warning was {payload['change']}.",
        "",
        f"code:        {payload['code']}",
        f"subject:     {payload['subject']}",
        f"message:     {payload['message']}",
        f"raised at:   {payload['raised_at']}",
    ]
    if payload["change"] == "resolved":
        lines.append(f"resolved at: {payload['resolved_at']} ({payload['resolved_by']})")
    lines += [
        f"warning id:  {payload['warning_id']}",
        "",
        "Open warnings: `concord warnings`, GET /v1/warnings or the console.",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """``work`` in a thread of its own, which the process does not wait for when it stops
    (the default executor's threads are waited for when the event loop closes, and a stuck
    SMTP conversation would hold up a stop for its socket timeouts)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the caller stopped waiting
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (work(), None)
        except BaseException as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="concord-smtp", daemon=True).start()
    return await done


class EmailChannel:
    name = "email"

    def __init__(self, options: NotifyOptions) -> None:
        self._options = options

    async def send(self, payload: dict[str, Any], delivery_id: str) -> None:
        o = self._options
        message = compose(payload, delivery_id, o.notify_email_from, o.notify_email_to)
        try:
            refused = await in_daemon_thread(lambda: self._send_blocking(message))
        except (smtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
            raise DeliveryError(f"the SMTP server did not take the e-mail: {exc!r}") from exc
        if refused:  # taken for the others: sending again would repeat it to them
            log.warning("notification_recipients_refused", refused=sorted(refused))

    def _send_blocking(self, message: EmailMessage) -> dict[str, Any]:
        o = self._options
        context = ssl.create_default_context()
        timeout = o.notify_timeout_seconds  # per socket operation; the notifier bounds the whole
        smtp = (
            smtplib.SMTP_SSL(o.notify_smtp_host, o.smtp_port, timeout=timeout, context=context)
            if o.notify_smtp_tls == "tls"
            else smtplib.SMTP(o.notify_smtp_host, o.smtp_port, timeout=timeout)
        )
        with smtp:
            if o.notify_smtp_tls == "starttls":
                smtp.starttls(context=context)
            if o.notify_smtp_user:
                smtp.login(o.notify_smtp_user, o.notify_smtp_password.get_secret_value())
            return smtp.send_message(message)
