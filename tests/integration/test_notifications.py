"""Warning notifications as a receiver sees them: a local HTTP receiver that checks the
HMAC and counts deliveries, and a local SMTP server (aiosmtpd), both started by the test,
against a real PostgreSQL ledger."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from coordinator.app import create_app
from coordinator.http.keys import WRITER
from coordinator.ledger import commands as c
from coordinator.ledger import queries
from coordinator.ledger.writer import LedgerWriter, open_ledger
from coordinator.notifications import outbox
from coordinator.notifications.notifier import configured_channels, notify_round, run_channel
from coordinator.notifications.options import NotifyOptions
from coordinator.settings import Settings, load_settings
from tests.conftest import bearer
from tests.support.service_process import free_port

SECRET = "s3cret-shared-with-the-receiver"
CODE = "test_warning"


@dataclass
class Receiver:
    """A webhook receiver as an operator would write one: it checks the signature over the
    exact body and keeps what it accepted."""

    fail_first: int = 0  # answer 503 to this many signed requests first
    delay_seconds: float = 0.0  # then take this long before answering
    requests: int = 0
    bad_signatures: int = 0
    taken: list[dict[str, Any]] = field(default_factory=list)
    delivery_ids: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("Concord-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.requests <= self.fail_first:
            return web.Response(status=503)
        await asyncio.sleep(self.delay_seconds)  # a slow receiver, as the test asks
        self.taken.append(orjson.loads(body))
        self.delivery_ids.append(request.headers["Concord-Delivery"])
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app

    def changes(self) -> list[tuple[str, str]]:
        return [(p["change"], p["subject"]) for p in self.taken]


def webhook_options(url: str, **overrides: Any) -> NotifyOptions:
    return NotifyOptions(
        **{
            "notify_webhook_url": url,
            "notify_webhook_secret": SecretStr(SECRET),
            "notify_timeout_seconds": 2.0,
            "notify_retry_seconds": 0.05,
            "notify_interval_seconds": 0.05,
            **overrides,
        }
    )


async def raise_warning(writer: LedgerWriter, pool: asyncpg.Pool, subject: str) -> str:
    await writer.execute(c.RaiseWarning(code=CODE, subject=subject, message=f"{subject} needs a look"))
    return await pool.fetchval(
        "SELECT id::text FROM warnings WHERE code = $1 AND subject = $2 AND state = 'open'", CODE, subject
    )


async def resolve(writer: LedgerWriter, warning_id: str) -> None:
    await writer.execute(c.ResolveWarning(warning_id=warning_id, by="operator"))


async def until(
    condition: Callable[[], bool], seconds: float = 15.0, step: Callable[[], Awaitable[object]] | None = None
) -> None:
    """Wait (running ``step`` each time, if given) until ``condition`` holds; fail after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        if step is not None:
            await step()
        await asyncio.sleep(0.02)


@asynccontextmanager
async def ledger(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, LedgerWriter]]:
    async with open_ledger(database_url, pool_size=4) as opened:
        yield opened


async def test_each_warning_change_is_posted_once_signed(database_url: str, aiohttp_server) -> None:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app())
    options = webhook_options(str(server.make_url("/hook")))
    [channel] = configured_channels(options)
    async with ledger(database_url) as (pool, writer):
        # Before the channel's first round: what was resolved is not news, what is open is.
        await resolve(writer, await raise_warning(writer, pool, "long-gone"))
        open_before = await raise_warning(writer, pool, "open-before")
        assert await notify_round(pool, channel, options) == 1
        await raise_warning(writer, pool, "later")
        await resolve(writer, open_before)
        assert await notify_round(pool, channel, options) == 2
        assert await notify_round(pool, channel, options) == 0
        async with pool.acquire() as conn:
            listed = {w["warning_id"]: w for w in await queries.warnings(conn, None)}

    assert receiver.bad_signatures == 0
    assert receiver.changes() == [("raised", "open-before"), ("raised", "later"), ("resolved", "open-before")]
    raised, _, resolved = receiver.taken
    as_listed = listed[open_before]  # the warning as GET /v1/warnings shows it, at each change
    assert {k: raised[k] for k in as_listed} == {**as_listed, "state": "open", "resolved_at": None}
    assert {k: resolved[k] for k in as_listed} == as_listed
    assert (raised["change"], resolved["change"], resolved["resolved_by"]) == (
        "raised",
        "resolved",
        "operator",
    )
    assert receiver.delivery_ids[0] == f"{open_before}/raised"
    assert len(set(receiver.delivery_ids)) == 3


async def test_a_failing_receiver_is_tried_again_with_backoff(database_url: str, aiohttp_server) -> None:
    receiver = Receiver(fail_first=2)
    server = await aiohttp_server(receiver.app())
    options = webhook_options(str(server.make_url("/hook")), notify_tries=3)
    [channel] = configured_channels(options)
    async with ledger(database_url) as (pool, writer):
        await notify_round(pool, channel, options)  # the channel begins with nothing open
        first = await raise_warning(writer, pool, "flaky-1")
        assert await notify_round(pool, channel, options) == 1  # the third try took it
        assert (receiver.requests, receiver.changes()) == (3, [("raised", "flaky-1")])

        # Failing beyond one round's tries: recorded, then tried again once it is due.
        receiver.fail_first = receiver.requests + 4
        await resolve(writer, first)
        assert await notify_round(pool, channel, options) == 0
        row = await pool.fetchrow(
            "SELECT attempts, last_error, due_at > now() AS waiting,"
            " delivered_at FROM notifications WHERE change = 'resolved'"
        )
        assert (row["attempts"], row["waiting"], row["delivered_at"]) == (3, True, None)
        assert "HTTP 503" in row["last_error"]
        await until(lambda: len(receiver.taken) == 2, step=lambda: notify_round(pool, channel, options))
        assert receiver.changes()[1] == ("resolved", "flaky-1")
        assert receiver.requests == 3 + 5
        assert await pool.fetchval("SELECT attempts FROM notifications WHERE change = 'resolved'") == 5


@pytest.mark.parametrize("receiver_state", ["down", "slow"])
async def test_a_receiver_down_or_slow_is_bounded_and_never_holds_up_the_ledger(
    database_url: str, aiohttp_server, receiver_state: str
) -> None:
    receiver = Receiver(delay_seconds=30.0)
    if receiver_state == "down":
        url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    else:
        url = str((await aiohttp_server(receiver.app())).make_url("/hook"))
    options = webhook_options(url, notify_timeout_seconds=0.5, notify_tries=2)
    [channel] = configured_channels(options)
    async with ledger(database_url) as (pool, writer):
        await notify_round(pool, channel, options)
        await raise_warning(writer, pool, "unheard")
        started = time.monotonic()
        round_ = asyncio.create_task(notify_round(pool, channel, options))
        # While the notifier waits on the receiver, the ledger writes as fast as ever.
        for n in range(20):
            begun = time.monotonic()
            await raise_warning(writer, pool, f"meanwhile-{n}")
            assert time.monotonic() - begun < 1.0
        if receiver_state == "slow":
            assert not round_.done()  # those writes happened while it waited
        assert await round_ == 0
        took = time.monotonic() - started
        assert took <= options.delivery_seconds + 1.0
        if receiver_state == "slow":
            assert took >= 2 * options.notify_timeout_seconds  # each try waited its limit
        row = await pool.fetchrow(
            "SELECT attempts, last_error, delivered_at, claimed_until"
            "  FROM notifications n JOIN warnings w ON w.id = n.warning_id"
            " WHERE w.subject = 'unheard'"
        )
    assert (row["attempts"], row["delivered_at"], row["claimed_until"]) == (2, None, None)
    expected = "no answer within 0.5 s" if receiver_state == "slow" else "cannot be reached"
    assert expected in row["last_error"]
    assert receiver.taken == []


async def test_replicas_and_a_restart_deliver_every_change_exactly_once(
    database_url: str, aiohttp_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver(delay_seconds=0.01)
    server = await aiohttp_server(receiver.app())
    options = webhook_options(str(server.make_url("/hook")), notify_timeout_seconds=1.0, notify_tries=1)
    monkeypatch.setattr(outbox, "CLAIM_MARGIN_SECONDS", 0.5)  # an abandoned claim runs out soon
    [channel] = configured_channels(options)
    async with ledger(database_url) as (pool, writer), ledger(database_url) as (pool_b, _):
        replicas = [asyncio.create_task(run_channel(p, channel, options)) for p in (pool, pool_b)]
        ids = [await raise_warning(writer, pool, f"w{n}") for n in range(10)]
        for warning_id in ids[:5]:
            await resolve(writer, warning_id)
        await until(lambda: len(receiver.taken) == 15)

        # A replica stopped in the middle of a delivery: its claim runs out after the restart.
        receiver.delay_seconds = 30.0
        await raise_warning(writer, pool, "interrupted")
        await until(lambda: receiver.requests == 16)
        for task in replicas:
            task.cancel()
        await asyncio.gather(*replicas, return_exceptions=True)
        receiver.delay_seconds = 0.01

        restarted = asyncio.create_task(run_channel(pool_b, channel, options))
        try:
            ids.append(await raise_warning(writer, pool, "after-restart"))
            await resolve(writer, ids[7])
            await until(lambda: len(receiver.taken) == 18)
            assert await pool.fetchval("SELECT count(*) FROM notifications WHERE delivered_at IS NULL") == 0
        finally:
            restarted.cancel()
            await asyncio.gather(restarted, return_exceptions=True)

    assert len(receiver.delivery_ids) == len(set(receiver.delivery_ids)) == 18
    assert sorted(receiver.changes()) == sorted(
        [("raised", f"w{n}") for n in range(10)]
        + [("resolved", f"w{n}") for n in range(5)]
        + [("raised", "interrupted"), ("raised", "after-restart"), ("resolved", "w7")]
    )
    for warning_id in ids:  # a resolution never overtakes its raising
        changes = [p["change"] for p in receiver.taken if p["warning_id"] == warning_id]
        assert changes in (["raised"], ["raised", "resolved"])


async def test_the_running_service_notifies_a_resolution_from_the_api(
    aiohttp_client, aiohttp_server, settings: Settings, tokens
) -> None:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app())
    hooked = settings.model_copy(update=webhook_options(str(server.make_url("/hook"))).model_dump())
    client = await aiohttp_client(create_app(hooked))
    await client.app[WRITER].execute(c.RaiseWarning(code=CODE, subject="api", message="look"))
    await until(lambda: receiver.changes() == [("raised", "api")])
    [warning] = (await (await client.get("/v1/warnings", headers=bearer(tokens.operator))).json())["warnings"]
    answer = await client.post(
        f"/v1/warnings/{warning['warning_id']}/resolve", headers=bearer(tokens.operator)
    )
    assert answer.status == 200
    await until(lambda: len(receiver.taken) == 2)
    assert receiver.taken[1] == {
        **warning,
        "change": "resolved",
        "state": "resolved",
        "resolved_at": receiver.taken[1]["resolved_at"],
        "resolved_by": "operator",
    }


# -- e-mail over SMTP ------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the local SMTP server was given."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            b"concord",
            b"mail-password",
        )
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # not handled: the server answers 535


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), trusted through SSL_CERT_FILE."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def smtp_server(
    request: pytest.FixtureRequest, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Mailbox, int, str]]:
    """A local SMTP server in the TLS mode the test names; login concord / mail-password."""
    tls_mode: str = request.param
    mailbox = Mailbox()
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts the test's certificate
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_require_tls=tls_mode == "starttls",  # "tls": the whole session is TLS anyway
        tls_context=server_tls if tls_mode == "starttls" else None,
        ssl_context=server_tls if tls_mode == "tls" else None,
    )
    controller.start()
    try:
        yield mailbox, port, tls_mode
    finally:
        controller.stop()


def email_options(port: int, tls_mode: str) -> NotifyOptions:
    return NotifyOptions(
        notify_smtp_host="127.0.0.1",
        notify_smtp_port=port,
        notify_smtp_tls=tls_mode,
        notify_smtp_user="concord",
        notify_smtp_password=SecretStr("mail-password"),
        notify_email_from="concord@example.test",
        notify_email_to=["ops@example.test", "billing@example.test"],
        notify_timeout_seconds=5.0,
        notify_retry_seconds=0.05,
    )


@pytest.mark.parametrize("smtp_server", ["none", "starttls", "tls"], indirect=True)
async def test_each_warning_change_is_mailed_once(
    database_url: str, smtp_server: tuple[Mailbox, int, str]
) -> None:
    mailbox, port, tls_mode = smtp_server
    options = email_options(port, tls_mode)
    [channel] = configured_channels(options)
    async with ledger(database_url) as (pool, writer):
        warning_id = await raise_warning(writer, pool, "store eu-1/invoice/7")
        assert await notify_round(pool, channel, options) == 1
        await resolve(writer, warning_id)
        assert await notify_round(pool, channel, options) == 1
        assert await notify_round(pool, channel, options) == 0

    assert mailbox.logins == ["concord", "concord"]
    assert [(sender, to) for sender, to, _ in mailbox.messages] == [
        ("concord@example.test", ["ops@example.test", "billing@example.test"])
    ] * 2
    raised, resolved = (message_from_bytes(content) for _, _, content in mailbox.messages)
    assert raised["Subject"] == f"[Concord] warning raised: {CODE} (store eu-1/invoice/7)"
    assert resolved["Subject"] == f"[Concord] warning resolved: {CODE} (store eu-1/invoice/7)"
    assert raised["Message-ID"] == f"<{warning_id}.raised@concord>"
    body = raised.get_payload(decode=True).decode()
    assert "store eu-1/invoice/7 needs a look" in body and warning_id in body
    assert "resolved at:" in resolved.get_payload(decode=True).decode()


@pytest.mark.parametrize("smtp_server", ["none"], indirect=True)
async def test_a_refused_login_is_a_failed_delivery_tried_again(
    database_url: str, smtp_server: tuple[Mailbox, int, str]
) -> None:
    mailbox, port, tls_mode = smtp_server
    options = email_options(port, tls_mode).model_copy(
        update={"notify_smtp_password": SecretStr("wrong"), "notify_tries": 2}
    )
    [channel] = configured_channels(options)
    async with ledger(database_url) as (pool, writer):
        await raise_warning(writer, pool, "mail")
        assert await notify_round(pool, channel, options) == 0
        row = await pool.fetchrow("SELECT attempts, last_error, delivered_at FROM notifications")
    assert (row["attempts"], row["delivered_at"], mailbox.messages) == (2, None, [])
    assert "SMTPAuthenticationError" in row["last_error"]


# -- settings ------------------------------------------------------------------------------


def test_notification_settings_are_checked_and_keep_secrets(monkeypatch) -> None:
    monkeypatch.setenv("CONCORD_NOTIFY_WEBHOOK_URL", "https://hooks.example.test/concord")
    with pytest.raises(ValueError, match="notify_webhook_url needs notify_webhook_secret"):
        load_settings()
    monkeypatch.setenv("CONCORD_NOTIFY_WEBHOOK_SECRET", "webhook-secret")
    monkeypatch.setenv("CONCORD_NOTIFY_SMTP_HOST", "mail.example.test")
    with pytest.raises(ValueError, match="needs notify_email_from and notify_email_to"):
        load_settings()
    monkeypatch.setenv("CONCORD_NOTIFY_EMAIL_FROM", "concord@example.test")
    monkeypatch.setenv("CONCORD_NOTIFY_EMAIL_TO", "ops@example.test, billing@example.test")
    monkeypatch.setenv("CONCORD_NOTIFY_SMTP_PASSWORD", "smtp-secret")
    settings = load_settings()
    assert settings.notify_email_to == ["ops@example.test", "billing@example.test"]
    assert (settings.notify_smtp_tls, settings.smtp_port) == ("starttls", 587)
    assert [ch.name for ch in configured_channels(settings)] == ["webhook", "email"]
    shown = repr(settings) + str(settings)
    assert "webhook-secret" not in shown and "smtp-secret" not in shown
    monkeypatch.setenv("CONCORD_NOTIFY_WEBHOOK_URL", "hooks.example.test")
    with pytest.raises(ValueError, match="must start with http"):
        load_settings()


async def test_a_silent_smtp_server_is_bounded(database_url: str) -> None:
    """A server that takes the connection and never speaks: each try ends at its limit."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    options = email_options(port, "none").model_copy(
        update={"notify_timeout_seconds": 0.3, "notify_tries": 2}
    )
    [channel] = configured_channels(options)
    try:
        async with ledger(database_url) as (pool, writer):
            await raise_warning(writer, pool, "mail")
            started = time.monotonic()
            assert await notify_round(pool, channel, options) == 0
            assert time.monotonic() - started <= options.delivery_seconds + 1.0
            row = await pool.fetchrow("SELECT attempts, last_error FROM notifications")
    finally:
        server.close()
    assert row["attempts"] == 2
    # The notifier's limit, or smtplib's own socket timeout when that one fires first.
    assert row["last_error"] == "no answer within 0.3 s" or "TimeoutError" in row["last_error"]
