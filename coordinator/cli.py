"""`concord`: the coordinator's command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import structlog

from concord_logs import configure_logging
from coordinator.audit.cli import VERIFY_HELP, add_verify_arguments
from coordinator.db import connect
from coordinator.embedded import embedded_service_url, start_embedded, stop_embedded
from coordinator.ledger import commands as c
from coordinator.ledger.commands import DomainError
from coordinator.migrations import MigrationError, migrate
from coordinator.peers.tokens import create_api_token, new_token, token_sha256
from coordinator.settings import Settings, load_settings

log = structlog.get_logger("concord")


class CliError(Exception):
    pass


class DatabaseUrls(NamedTuple):
    service: str  # the service's login: may read and append to the ledger, not change it
    owner: str  # the ledger's owner: migrates, and audits in a scratch schema of its own


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[DatabaseUrls]:
    """The configured PostgreSQL, or the embedded one for as long as the command runs."""
    if settings.database_url:
        yield DatabaseUrls(settings.database_url, settings.migration_database_url or settings.database_url)
        return
    server, owner = start_embedded(settings.data_dir)
    try:
        yield DatabaseUrls(embedded_service_url(server), owner)
    finally:
        stop_embedded(server)


def _print(payload: Any) -> None:
    sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")


# -- serve -------------------------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    with database(settings) as urls:
        settings = settings.model_copy(
            update={"database_url": urls.service, "migration_database_url": urls.owner}
        )
        token = asyncio.run(_first_operator_token(urls.owner))
        if token is not None:
            _save_operator_token(token, settings.data_dir)
        # uvloop: a faster event loop for the HTTP server (stdlib asyncio where unavailable).
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(settings))
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _first_operator_token(url: str) -> str | None:
    """Migrate, and create the first operator token when the database has none."""
    conn = await connect(url)
    try:
        await migrate(conn)
        if await conn.fetchval("SELECT 1 FROM api_tokens WHERE role = 'operator' LIMIT 1"):
            return None
        return await create_api_token(conn, "operator", "first start")
    finally:
        await conn.close()


def _save_operator_token(token: str, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "operator.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.chmod(path, 0o600)
    sys.stdout.write(f"Operator token (shown once, also saved to {path}):\n{token}\n")
    sys.stdout.flush()


SHUTDOWN_SECONDS = 2.0  # for requests in flight at SIGTERM
STOP_SECONDS = 3.0  # for the writer, the monitors and the pool


async def _serve(settings: Settings) -> None:
    from aiohttp import web

    from coordinator.app import create_app

    # Requests in flight get SHUTDOWN_SECONDS to finish; the ledger answers each within
    # answer_timeout anyway, and whatever it had not written is refused with 503.
    runner = web.AppRunner(
        create_app(settings), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:  # not the database: main() would say it is
        await runner.cleanup()
        raise CliError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    # What start-up made lives as long as the process: out of the collector's sight, so a
    # full collection scans only what requests made (a pause of tens of milliseconds
    # otherwise, in every request's way). And a young generation of 50,000 objects rather
    # than 700: a request's objects die before a collection looks at them instead of being
    # promoted and scanned again. Measured under batches beside single requests: collection
    # time fell from about 2.5 % of the process's time to 0.6 %, the longest young-generation
    # pauses from 2 and 7 ms to 0.3 and 2 ms.
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    # A batch body is parsed in a worker thread (coordinator/http/json.py) for ~10 ms; the
    # event loop then gets the GIL back only once the thread has held it this long, and
    # every request it serves meanwhile waits that much at each step. 1 ms, not 5.
    sys.setswitchinterval(0.001)
    log.info("serving", host=settings.host, port=settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    try:
        await asyncio.wait_for(runner.cleanup(), SHUTDOWN_SECONDS + STOP_SECONDS)
    except TimeoutError:  # a stuck cleanup never keeps the process alive
        log.error("stop_timed_out", seconds=SHUTDOWN_SECONDS + STOP_SECONDS)


# -- database commands -------------------------------------------------------------------


def _with_db(settings: Settings, work: Callable[[str], Awaitable[int]], *, as_owner: bool = False) -> int:
    """Run ``work`` with the service's URL, on a database the owner migrated first; or with
    the owner's URL (``as_owner``), as it is."""
    with database(settings) as urls:
        if as_owner:
            return asyncio.run(work(urls.owner))
        asyncio.run(_migrate(urls.owner))
        return asyncio.run(work(urls.service))


async def _migrate(url: str) -> list[str]:
    conn = await connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    async def work(url: str) -> int:
        applied = await _migrate(url)
        print(
            f"applied {len(applied)} migration(s): {', '.join(applied)}"
            if applied
            else "the database is up to date"
        )
        return 0

    return _with_db(settings, work, as_owner=True)


async def _run_command(url: str, command: c.Command) -> dict[str, Any]:
    from coordinator.ledger.writer import open_ledger

    async with open_ledger(url, pool_size=2) as (_, writer):
        return await writer.execute(command)


def _ledger_command(
    settings: Settings, make: Callable[[], c.Command], show: Callable[[dict[str, Any]], None] = _print
) -> int:
    async def work(url: str) -> int:
        try:
            show(await _run_command(url, make()))
        except DomainError as exc:
            raise CliError(exc.message) from None
        return 0

    return _with_db(settings, work)


def _read(
    settings: Settings, query: Callable[[Any], Awaitable[Any]], show: Callable[[Any], None] = _print
) -> int:
    async def work(url: str) -> int:
        conn = await connect(url)
        try:
            await migrate(conn)
            show(await query(conn))
        finally:
            await conn.close()
        return 0

    return _with_db(settings, work)


def cmd_series_show(settings: Settings, args: argparse.Namespace) -> int:
    from coordinator.ledger.queries import series_overview

    return _read(settings, series_overview)


def cmd_series_set(settings: Settings, args: argparse.Namespace) -> int:
    changes = {
        k: v
        for k, v in {
            "start": args.start,
            "increment": args.increment,
            "format": args.format,
            "reset": args.reset,
            "assign_on": args.assign_on,
            "dedicated": args.dedicated,
        }.items()
        if v is not None
    }
    if not changes and args.next is None:
        raise CliError(
            "nothing to change: give at least one of --start --next --increment "
            "--format --reset --assign-on --dedicated"
        )
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    return _ledger_command(
        settings,
        lambda: c.ConfigureSeries(
            series=args.name, changes=changes, next=args.next, period=args.period, today=today
        ),
    )


def cmd_peers_add(settings: Settings, args: argparse.Namespace) -> int:
    token = new_token()

    def show(result: dict[str, Any]) -> None:
        _print({**result, "token": token})
        sys.stderr.write("The token is shown once: give it to the store's agent now.\n")

    return _ledger_command(
        settings, lambda: c.RegisterPeer(name=args.name, url=args.url, token_sha256=token_sha256(token)), show
    )


def cmd_peers_list(settings: Settings, args: argparse.Namespace) -> int:
    from coordinator.ledger.queries import peers

    return _read(settings, peers)


def cmd_peers_rotate(settings: Settings, args: argparse.Namespace) -> int:
    token = new_token()
    return _ledger_command(
        settings,
        lambda: c.RotatePeerToken(peer_id=args.id, token_sha256=token_sha256(token)),
        lambda result: _print({**result, "token": token}),
    )


def cmd_peers_retire(settings: Settings, args: argparse.Namespace) -> int:
    return _ledger_command(settings, lambda: c.RetirePeer(peer_id=args.id))


def cmd_tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    async def work(url: str) -> int:
        conn = await connect(url)
        try:
            await migrate(conn)
            token = await create_api_token(conn, args.role, args.label)
        finally:
            await conn.close()
        print(token)
        sys.stderr.write(f"A {args.role} token, shown once. Store it now.\n")
        return 0

    return _with_db(settings, work)


# -- warnings ----------------------------------------------------------------------------

WARNINGS_SHOWN = 1000  # queries.warnings answers at most this many, oldest first


def cmd_warnings(settings: Settings, args: argparse.Namespace) -> int:
    from coordinator.ledger.queries import warnings

    as_json = args.json or not sys.stdout.isatty()
    if args.resolve is not None:  # the API's command, so the resolution is a ledger event

        def resolved(result: dict[str, Any]) -> None:
            if as_json:
                _print(result)
            else:
                print(f"warning {result['warning_id']}: {result['state']}")

        return _ledger_command(
            settings, lambda: c.ResolveWarning(warning_id=args.resolve, by="operator"), resolved
        )

    def show(rows: list[dict[str, Any]]) -> None:
        if len(rows) == WARNINGS_SHOWN:
            sys.stderr.write(f"concord: showing the oldest {WARNINGS_SHOWN} warnings only\n")
        if as_json:
            _print({"warnings": rows})
        else:
            sys.stdout.write(warnings_table(rows, settings.timezone, with_resolved=args.all))

    return _read(settings, lambda conn: warnings(conn, None if args.all else "open"), show)


def warnings_table(rows: list[dict[str, Any]], zone: str, *, with_resolved: bool) -> str:
    """Warnings as aligned columns for a terminal, times in ``zone``, the message last."""
    if not rows:
        return "no warnings\n" if with_resolved else "no open warnings\n"
    tz = ZoneInfo(zone)

    def at(moment: str | None) -> str:
        return datetime.fromisoformat(moment).astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment else ""

    header = ["ID", "STATE", "RAISED", *(["RESOLVED"] if with_resolved else []), "CODE", "SUBJECT", "MESSAGE"]
    lines = [
        [
            w["warning_id"],
            w["state"],
            at(w["raised_at"]),
            *([at(w["resolved_at"])] if with_resolved else []),
            w["code"],
            w["subject"],
            " ".join(w["message"].split()),
        ]
        for w in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header) - 1)]
    text = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]])
        for line in [header, *lines]
    ]  # widths: all but the message
    return "\n".join(text) + f"\n{len(rows)} warning(s), times in {zone}\n"


# -- audit, export, verify ---------------------------------------------------------------


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from coordinator.audit.cli import read_receipts, run_audit

    try:
        receipts = read_receipts(args.receipts)
        return _with_db(
            settings, lambda url: run_audit(url, receipts, args.rebuild, args.json), as_owner=True
        )  # its scratch schema: the service may create none
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from coordinator.audit.cli import run_export

    return _with_db(settings, lambda url: run_export(url, args.file))


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Offline: reads the file (and receipts) only, never a database."""
    from coordinator.audit.cli import verify_command

    return verify_command(args)


# -- sync kashflow -----------------------------------------------------------------------


def cmd_sync_kashflow(settings: Settings, args: argparse.Namespace) -> int:
    from coordinator.accounting.cli import show_options, sync_daily, sync_once
    from coordinator.accounting.kashflow import KashFlowError
    from coordinator.accounting.sync import SyncBusy

    if not settings.kashflow_username:
        raise CliError(
            "KashFlow is not configured: set CONCORD_KASHFLOW_USERNAME and "
            "CONCORD_KASHFLOW_PASSWORD (or kashflow_username / kashflow_password in "
            "the settings file)"
        )
    try:
        if args.show_options:
            return asyncio.run(show_options(settings))
        if args.once:
            return _with_db(settings, lambda url: sync_once(url, settings, args.limit))
        return _with_db(settings, lambda url: sync_daily(url, settings))
    except (KashFlowError, SyncBusy) as exc:
        raise CliError(str(exc)) from None


# -- parser ------------------------------------------------------------------------------


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 1 or more")
    return int(value)


def _uuid_of(what: str) -> Callable[[str], str]:
    """An argument type: a UUID in its canonical text, else an error naming ``what``."""

    def parse(value: str) -> str:
        import uuid

        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what} (a UUID)") from None

    return parse


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--database-url", help="PostgreSQL URL (default: embedded under ./var)")


def _global_options() -> argparse.ArgumentParser:
    """The options every command takes, read wherever they stand: `concord serve
    --database-url URL` as well as `concord --database-url URL serve`."""
    parser = argparse.ArgumentParser(prog="concord", add_help=False, allow_abbrev=False)
    _add_global_options(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="concord", description=__doc__)
    _add_global_options(parser)  # for --help; main() reads them first, wherever they stand
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the coordinator HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    series = sub.add_parser("series", help="numbering series").add_subparsers(
        dest="series_command", required=True
    )
    series.add_parser("show").set_defaults(func=cmd_series_show)
    sset = series.add_parser("set", help="change a series' settings")
    sset.add_argument("name", choices=["invoice", "creditnote"])
    sset.add_argument("--start", type=int)
    sset.add_argument("--next", type=int)
    sset.add_argument("--period", help="period for --next (default: the current one)")
    sset.add_argument("--increment", type=int)
    sset.add_argument("--format")
    sset.add_argument("--reset", choices=["never", "yearly"])
    sset.add_argument("--assign-on", choices=["creation", "payment"])
    sset.add_argument("--dedicated", type=_bool, help="credit notes only: true or false")
    sset.set_defaults(func=cmd_series_set)

    peers = sub.add_parser("peers", help="stores").add_subparsers(dest="peers_command", required=True)
    add = peers.add_parser("add", help="register a store and print its token once")
    add.add_argument("name")
    add.add_argument("--url", required=True, help="the store agent's URL")
    add.set_defaults(func=cmd_peers_add)
    peers.add_parser("list").set_defaults(func=cmd_peers_list)
    rotate = peers.add_parser("rotate", help="give a store a new token")
    rotate.add_argument("id", type=_uuid_of("a store id"))
    rotate.set_defaults(func=cmd_peers_rotate)
    retire = peers.add_parser("retire", help="retire a store")
    retire.add_argument("id", type=_uuid_of("a store id"))
    retire.set_defaults(func=cmd_peers_retire)

    tokens = sub.add_parser("tokens", help="operator and reader tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser("create", help="create a token and print it once")
    create.add_argument("--role", required=True, choices=["operator", "reader"])
    create.add_argument("--label", default="")
    create.set_defaults(func=cmd_tokens_create)

    sync = sub.add_parser("sync", help="accounting sync").add_subparsers(dest="sync_command", required=True)
    kashflow = sync.add_parser(
        "kashflow", help="post paid invoices to KashFlow (default: on the daily schedule, in the foreground)"
    )
    kashflow.add_argument("--once", action="store_true", help="one run now, with progress")
    kashflow.add_argument(
        "--limit", type=_positive, help="most invoices this run (default CONCORD_KASHFLOW_LIMIT, 200)"
    )
    kashflow.add_argument(
        "--show-options",
        action="store_true",
        help="list KashFlow's payment methods, bank accounts and currencies for the mapping, and exit",
    )
    kashflow.set_defaults(func=cmd_sync_kashflow)

    warning_list = sub.add_parser("warnings", help="open warnings: a table in a terminal, else JSON")
    shown = warning_list.add_mutually_exclusive_group()
    shown.add_argument("--all", action="store_true", help="resolved warnings too")
    shown.add_argument(
        "--resolve",
        type=_uuid_of("a warning id"),
        metavar="ID",
        help="resolve one warning (a ledger event, as through the API)",
    )
    warning_list.add_argument("--json", action="store_true", help="JSON, also in a terminal")
    warning_list.set_defaults(func=cmd_warnings)

    audit = sub.add_parser(
        "audit",
        help="replay the ledger and check chain, invariants, "
        "projections (and receipts); exit 0 only when every check holds",
    )
    audit.add_argument(
        "--receipts",
        type=Path,
        metavar="DIR",
        help="receipts exported by the stores (concord-agent receipts export)",
    )
    audit.add_argument(
        "--rebuild",
        action="store_true",
        help="after a successful check, replace the projections by the replay",
    )
    audit.add_argument("--json", action="store_true", help="the report as JSON")
    audit.set_defaults(func=cmd_audit)
    export = sub.add_parser("export", help="write the ledger to a JSON-lines file")
    export.add_argument("file", type=Path, metavar="FILE.jsonl")
    export.set_defaults(func=cmd_export)
    verify = sub.add_parser("verify", help=VERIFY_HELP)
    add_verify_arguments(verify)
    verify.set_defaults(func=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    options, rest = _global_options().parse_known_args(argv)
    args = build_parser().parse_args(rest, namespace=options)
    try:
        settings = load_settings(
            args.config,
            database_url=args.database_url,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
        )
    except (FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"concord: {exc}\n")
        return 2
    configure_logging(json=settings.log_json, level=settings.log_level)
    try:
        return args.func(settings, args)
    except (CliError, MigrationError) as exc:
        sys.stderr.write(f"concord: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"concord: cannot reach the database: {exc}\n")
        return 1
    except asyncpg.PostgresError as exc:  # reached, but refused: no such database, role…
        sys.stderr.write(f"concord: the database refused: {exc}\n")
        return 1
