"""`concord-agent`: the agent beside one WHMCS."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

# Each command imports its own modules when it runs: `serve`, started with every agent and
# restarted with it, loads none of the other commands' (a process start is mostly imports).
if TYPE_CHECKING:
    from agent.settings import AgentSettings
    from agent.whmcs.database import MysqlTarget


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading the modules allocates a few hundred thousand objects that live as long as the
    process; the cyclic collector would walk them again and again meanwhile (some 15% of the
    agent's start-up CPU). It runs again once they are loaded."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def database_target(settings: AgentSettings) -> MysqlTarget:
    from agent.whmcs.database import parse_mysql_url, read_configuration_php

    if settings.whmcs_url:
        return parse_mysql_url(settings.whmcs_url)
    if settings.whmcs_config:
        return read_configuration_php(settings.whmcs_config)
    raise ValueError(
        "set CONCORD_AGENT_WHMCS_URL (mysql://user:pass@host:port/db) or "
        "CONCORD_AGENT_WHMCS_CONFIG (path of WHMCS's configuration.php)"
    )


def cmd_serve(settings: AgentSettings, args: argparse.Namespace) -> int:
    with _collector_paused():
        from agent.service import run_agent

    # uvloop, as `concord serve` uses: about 12% less CPU for a large Get answer.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run_agent(settings, database_target(settings)))
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # stdlib asyncio where uvloop is not available (Windows)
        return None
    return uvloop.new_event_loop


def cmd_check(settings: AgentSettings, args: argparse.Namespace) -> int:
    from agent.check import check

    try:
        target, error = database_target(settings), None
    except (ValueError, OSError) as exc:
        target, error = None, str(exc)
    problems = asyncio.run(check(settings, target, error))
    for line in problems:
        print(line)
    if not problems:
        print("all checks passed")
    return 1 if problems else 0


def cmd_backfill(settings: AgentSettings, args: argparse.Namespace) -> int:
    from agent.backfill import backfill
    from agent.client import CoordinatorClient
    from agent.heartbeat import beat
    from agent.rules import RulesHolder
    from agent.whmcs import queries
    from agent.whmcs.database import create_agent_tables, create_pool

    async def work() -> dict[str, int]:
        pool = await create_pool(database_target(settings))
        try:
            await create_agent_tables(pool)
            async with pool.acquire() as conn:
                has_invoicedata = await queries.has_table(conn, "mod_invoicedata")
            rules = RulesHolder(settings.credit_note_rule)
            async with CoordinatorClient(settings.coordinator_url, settings.token) as client:
                await beat(pool, client, rules, settings.reported())
                return await backfill(
                    pool, client, rules, has_invoicedata, args.since, progress=not args.quiet
                )
        finally:
            pool.close()
            await pool.wait_closed()

    totals = asyncio.run(work())
    print(
        f"imported {totals['imported']}, already known {totals['already_imported']}, "
        f"collisions {totals['collisions']} (see the coordinator's warnings)"
    )
    return 0


def cmd_receipts_export(settings: AgentSettings, args: argparse.Namespace) -> int:
    from agent.receipts import export_receipts
    from agent.whmcs.database import create_agent_tables, create_pool

    async def work() -> tuple[Path, int]:
        pool = await create_pool(database_target(settings))
        try:
            await create_agent_tables(pool)
            return await export_receipts(pool, args.directory, settings.store)
        finally:
            pool.close()
            await pool.wait_closed()

    args.directory.mkdir(parents=True, exist_ok=True)
    path, count = asyncio.run(work())
    print(f"exported {count} receipt(s) to {path}")
    return 0


def cmd_webservice_token(config: Path | None) -> int:
    from agent.webservice_token import new_token, store_token

    if config is None:
        sys.stderr.write(
            "concord-agent: webservice-token writes the token into the settings "
            "file: pass --config FILE, the TOML file the agent runs with\n"
        )
        return 2
    token = new_token()
    try:
        store_token(config, token)
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        sys.stderr.write(f"concord-agent: {exc}\n")
        return 1
    print(token)
    sys.stderr.write(
        f"stored as webservice_token in {config}; restart the agent to use it, and "
        "give it to the clients of the Get feed\n"
    )
    return 0


def _config_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="concord-agent", description=__doc__)
    _config_option(parser)  # for --help; main() reads it first, wherever it stands
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="number documents, relay confirms, serve hooks")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("check", help="report problems, one per line").set_defaults(func=cmd_check)
    fill = sub.add_parser("backfill", help="import documents numbered before Concord")
    fill.add_argument("--since", type=date.fromisoformat, help="only documents dated from")
    fill.add_argument("--quiet", action="store_true", help="no progress bar")
    fill.set_defaults(func=cmd_backfill)
    receipts = sub.add_parser(
        "receipts", help="the coordinator's receipts for this store's numbers"
    ).add_subparsers(dest="receipts_command", required=True)
    export = receipts.add_parser(
        "export", help="write them to a new JSON-lines file in DIR, for `concord audit --receipts DIR`"
    )
    export.add_argument("directory", type=Path, metavar="DIR")
    export.set_defaults(func=cmd_receipts_export)
    sub.add_parser(
        "webservice-token",
        help="make a new token for the WebService Get feed and store it in the --config file",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    # --config before or after the command: `concord-agent serve --config FILE` too.
    options, rest = _config_option(
        argparse.ArgumentParser(prog="concord-agent", add_help=False, allow_abbrev=False)
    ).parse_known_args(argv)
    args = build_parser().parse_args(rest, namespace=options)
    if args.command == "webservice-token":  # needs no other setting: it may write the first
        return cmd_webservice_token(args.config)
    with _collector_paused():
        from asyncmy.errors import Error as MysqlError

        from agent.client import CoordinatorRefused, CoordinatorUnavailable
        from agent.settings import load_agent_settings
        from concord_logs import configure_logging

    try:
        settings = load_agent_settings(
            args.config, host=getattr(args, "host", None), port=getattr(args, "port", None)
        )
    except (FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"concord-agent: {exc}\n")
        return 2
    configure_logging(json=settings.log_json, level=settings.log_level)
    try:
        return args.func(settings, args)
    except (ValueError, OSError, MysqlError, CoordinatorUnavailable, CoordinatorRefused) as exc:
        sys.stderr.write(f"concord-agent: {exc}\n")
        return 1
