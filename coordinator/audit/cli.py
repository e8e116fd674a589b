"""`concord audit | export | verify`: run them and print their reports (coordinator/cli.py
parses the arguments; `concord verify` starts here directly, see coordinator/main.py). Exit
status 0 only when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from coordinator.audit.findings import render_json, render_text
from coordinator.audit.receipts import Receipt, load_receipts
from coordinator.audit.verify import verify_file


def read_receipts(directory: Path | None) -> list[Receipt] | None:
    """The receipts in ``directory`` (ReceiptsError, a ValueError, when unreadable)."""
    return None if directory is None else load_receipts(directory)


def _series_lines(series: list[dict[str, object]]) -> list[str]:
    lines = []
    for s in series:
        released = s["released"]
        lines.append(
            f"  {s['series']} {s['period']}: {s['handed_out']} handed out, highest "
            f"{s['highest']}, next {s['next']}, {s['pending']} pending"
            + (f", released in the pool: {released}" if released else ", no hole")
        )
    return lines


def _emit(text: str, payload: dict[str, object], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(text)


async def run_audit(url: str, receipts: list[Receipt] | None, rebuild: bool, as_json: bool) -> int:
    # Database modules load only in the commands that use one: verify starts fast.
    import asyncpg

    from coordinator.audit.replay import audit
    from coordinator.db import connect
    from coordinator.migrations import migrate

    conn = await connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        result = await audit(url, receipts=receipts, rebuild=rebuild)
    except asyncpg.PostgresError as exc:  # e.g. no right to create the scratch schema
        raise ValueError(f"the audit could not run: {exc}") from None
    summary = [
        f"ledger: {result.position} events, head hash {result.hash.hex()}",
        *_series_lines(result.series),
        "projections compared: " + ", ".join(f"{t} {n}" for t, n in result.rows.items()),
    ]
    if receipts is not None:
        summary.append(f"receipts checked: {result.receipts}")
    if rebuild:
        summary.append("projections rebuilt from the ledger" if result.rebuilt else "projections NOT rebuilt")
    _emit(
        render_text("concord audit", result.findings, summary),
        render_json(result.findings, result.summary()),
        as_json,
    )
    return 0 if result.findings.ok else 1


async def run_export(url: str, path: Path) -> int:
    from coordinator.audit.export import export_ledger
    from coordinator.db import connect
    from coordinator.migrations import migrate

    conn = await connect(url)
    try:
        await migrate(conn)
        position, hash_ = await export_ledger(conn, path)
    finally:
        await conn.close()
    sys.stdout.write(f"exported {position} events to {path}; head hash {hash_.hex()}\n")
    return 0


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE.jsonl")
    parser.add_argument("--receipts", type=Path, metavar="DIR", help="receipts to check as well")
    parser.add_argument("--json", action="store_true", help="the report as JSON")


VERIFY_HELP = "verify an exported ledger offline: chain, invariants (and receipts); needs no database"


def verify_main(argv: list[str]) -> int:
    """`concord verify …` with nothing else loaded: it needs no settings and no database."""
    parser = argparse.ArgumentParser(prog="concord verify", description=VERIFY_HELP)
    add_verify_arguments(parser)
    return verify_command(parser.parse_args(argv))


def verify_command(args: argparse.Namespace) -> int:
    try:
        return run_verify(args.file, read_receipts(args.receipts), args.json)
    except ValueError as exc:
        sys.stderr.write(f"concord: {exc}\n")
        return 1


def run_verify(path: Path, receipts: list[Receipt] | None, as_json: bool) -> int:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    verified = verify_file(path, receipts)
    summary = [
        f"file: {verified.position} events, head hash {verified.hash.hex()}",
        "compare the head hash with the live ledger's (GET /healthz) or a receipt",
        *_series_lines(verified.series),
    ]
    if receipts is not None:
        summary.append(f"receipts checked: {verified.receipts}")
    payload = {
        "position": verified.position,
        "hash": verified.hash.hex(),
        "series": verified.series,
        "receipts": verified.receipts,
    }
    _emit(
        render_text(f"concord verify {path}", verified.findings, summary),
        render_json(verified.findings, payload),
        as_json,
    )
    return 0 if verified.findings.ok else 1
