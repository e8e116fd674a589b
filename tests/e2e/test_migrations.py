"""Migrations you can trust: an applied file that changed is refused, a function is re-created
when its file changes, and a database migrated by an earlier version upgrades cleanly."""

from __future__ import annotations

import dataclasses
import subprocess
from datetime import date
from pathlib import Path

import pytest

from coordinator import migrations
from coordinator.db import connect
from coordinator.ledger import commands as c
from coordinator.ledger.writer import open_ledger
from coordinator.migrations import MigrationError, function_files, migrate, migration_files
from tests.support.concord_cli import concord

REPO = Path(__file__).resolve().parents[2]
# main before checksums and function files, and the first version of 0006 (edited later).
BEFORE_CHECKSUMS = "1625273"
FIRST_0006 = "8e27378"
OLD_FILES = (
    "0001_ledger.sql",
    "0002_batch_functions.sql",
    "0003_webservice.sql",
    "0005_kashflow.sql",
    "0006_documents_snapshot_from_ledger.sql",
)


@pytest.mark.slow
async def test_an_applied_migration_that_changed_is_refused(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conn = await connect(database_url)
    try:
        await migrate(conn)
        edited = [
            dataclasses.replace(f, sql=f.sql + "\n-- edited after it was applied\n")
            if f.name == "0003_webservice.sql"
            else f
            for f in migration_files()
        ]
        monkeypatch.setattr(migrations, "migration_files", lambda: edited)
        with pytest.raises(MigrationError, match=r"0003_webservice\.sql"):
            await migrate(conn)
        monkeypatch.undo()
        assert await migrate(conn) == []  # the file as applied: nothing to do
        # What the commands see of the same: the recorded checksum no longer matches.
        await conn.execute(
            "UPDATE concord_migrations SET sha256 = repeat('0', 64) WHERE name = '0005_kashflow.sql'"
        )
    finally:
        await conn.close()
    for command in (["migrate"], ["serve", "--port", "0"]):
        result = concord(database_url, *command, check=False)
        assert result.returncode == 1, result
        assert "migration 0005_kashflow.sql changed after it was applied" in result.stderr


async def test_a_changed_function_file_recreates_the_function(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await connect(database_url)
    try:
        await migrate(conn)
        fixed = [
            dataclasses.replace(
                f,
                sql=f.sql.replace(
                    "SET enable_seqscan = off", "SET enable_seqscan = off SET work_mem = '8MB'"
                ),
            )
            if f.name == "functions/concord_write_batch.sql"
            else f
            for f in function_files()
        ]
        monkeypatch.setattr(migrations, "function_files", lambda: fixed)
        assert await migrate(conn) == ["functions/concord_write_batch.sql"]
        assert await conn.fetchval("SELECT proconfig FROM pg_proc WHERE proname = 'concord_write_batch'") == [
            "enable_seqscan=off",
            "work_mem=8MB",
        ]
        assert await migrate(conn) == []  # re-created once, then recorded
        monkeypatch.undo()
        assert await migrate(conn) == ["functions/concord_write_batch.sql"]  # and back
    finally:
        await conn.close()


def _old_file(commit: str, name: str) -> str:
    shown = subprocess.run(
        ["git", "show", f"{commit}:coordinator/migrations/{name}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        pytest.skip(f"needs the git history of the repository ({shown.stderr.strip()})")
    return shown.stdout


@pytest.mark.parametrize("version_of_0006", [BEFORE_CHECKSUMS, FIRST_0006])
async def test_a_database_migrated_before_checksums_upgrades(database_url: str, version_of_0006: str) -> None:
    conn = await connect(database_url)
    try:
        # As the runner of that version did it: names only, no checksums.
        await conn.execute(
            "CREATE TABLE concord_migrations (name text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for name in OLD_FILES:
            commit = version_of_0006 if name.startswith("0006") else BEFORE_CHECKSUMS
            async with conn.transaction():
                await conn.execute(_old_file(commit, name))
                await conn.execute("INSERT INTO concord_migrations (name) VALUES ($1)", name)

        ran = await migrate(conn)
        assert [n for n in ran if not n.startswith("functions/")] == [
            f.name for f in migration_files() if f.name not in OLD_FILES
        ]
        assert [n for n in ran if n.startswith("functions/")] == [f.name for f in function_files()]
        recorded = dict(
            await conn.fetch(
                "SELECT name, sha256 FROM concord_migrations WHERE name <> $1", migrations.GRANTS
            )
        )
        assert recorded == {f.name: f.sha256 for f in migration_files() + function_files()}
        assert await migrate(conn) == []
        # Whatever version of 0006 it had run, the functions are now the files' ones.
        functions = {
            r["proname"]: (r["args"], r["proconfig"])
            for r in await conn.fetch(
                "SELECT proname, pg_get_function_identity_arguments(oid) AS args, proconfig"
                " FROM pg_proc WHERE proname LIKE 'concord\\_%\\_batch'"
            )
        }
        assert functions == {
            "concord_open_batch": ("req jsonb, holding boolean, ledger_lock bigint", ["enable_seqscan=off"]),
            "concord_read_batch": ("req jsonb", ["enable_seqscan=off"]),
            "concord_write_batch": ("b jsonb", ["enable_seqscan=off"]),
        }
    finally:
        await conn.close()
    async with open_ledger(database_url, pool_size=2) as (_, writer):
        peer = await writer.execute(
            c.RegisterPeer(name="north", url="http://127.0.0.1:1", token_sha256="0" * 64)
        )
        reserved = await writer.execute(
            c.Reserve(peer_id=peer["peer_id"], doctype="invoice", doc_id="1", date=date(2026, 3, 1))
        )
        issued = await writer.execute(
            c.Confirm(
                reservation_id=reserved["reservation_id"],
                peer_id=peer["peer_id"],
                document={"ClientData": {}, "DocData": {"Total": "1.00"}},
            )
        )
    assert (reserved["number"], issued["state"]) == (1, "issued")
