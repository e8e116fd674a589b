"""The `concord` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from coordinator.migrations import function_files, migration_files
from tests.support.concord_cli import concord
from tests.support.service_process import free_port


def test_migrate_is_repeatable(database_url: str) -> None:
    names = [f.name for f in migration_files() + function_files()]
    assert f"applied {len(names)} migration(s): {', '.join(names)}" in concord(database_url, "migrate").stdout
    assert "up to date" in concord(database_url, "migrate").stdout


@pytest.mark.slow
def test_series_set_and_show(database_url: str) -> None:
    concord(
        database_url,
        "series",
        "set",
        "invoice",
        "--format",
        "{YY}/{NUMBER:5}",
        "--reset",
        "yearly",
        "--next",
        "40",
        "--period",
        "2026",
    )
    shown = json.loads(concord(database_url, "series", "show").stdout)
    invoice = next(s for s in shown if s["name"] == "invoice")
    assert invoice["settings"]["format"] == "{YY}/{NUMBER:5}"
    assert invoice["periods"] == [{"period": "2026", "next": 40, "highest": None, "released": []}]
    refused = concord(database_url, "series", "set", "invoice", "--increment", "0", check=False)
    assert refused.returncode == 1
    assert "increment" in refused.stderr
    nothing = concord(database_url, "series", "set", "invoice", check=False)
    assert nothing.returncode == 1 and "nothing to change" in nothing.stderr


@pytest.mark.slow
def test_peers_lifecycle(database_url: str) -> None:
    added = json.loads(concord(database_url, "peers", "add", "eu-1", "--url", "http://10.0.0.5:8701").stdout)
    assert len(added["token"]) >= 43
    listed = json.loads(concord(database_url, "peers", "list").stdout)
    assert [(p["name"], p["state"]) for p in listed] == [("eu-1", "active")]
    rotated = json.loads(concord(database_url, "peers", "rotate", added["peer_id"]).stdout)
    assert rotated["token"] != added["token"]
    concord(database_url, "peers", "retire", added["peer_id"])
    assert json.loads(concord(database_url, "peers", "list").stdout)[0]["state"] == "retired"
    duplicate = concord(database_url, "peers", "add", "eu-1", "--url", "http://x.test", check=False)
    assert duplicate.returncode == 1 and "exists" in duplicate.stderr
    bad_id = concord(database_url, "peers", "retire", "nope", check=False)
    assert bad_id.returncode == 2 and "UUID" in bad_id.stderr


def test_tokens_create_prints_a_working_token(database_url: str) -> None:
    token = concord(database_url, "tokens", "create", "--role", "reader").stdout.strip()
    assert len(token) >= 43
    import asyncio

    import asyncpg

    from coordinator.peers.tokens import token_sha256

    async def role() -> str:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(
                "SELECT role FROM api_tokens WHERE token_sha256 = $1", token_sha256(token)
            )
        finally:
            await conn.close()

    assert asyncio.run(role()) == "reader"


def test_serve_without_url_runs_embedded_postgres_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CONCORD_DATABASE_URL")}
    env.update(CONCORD_DATA_DIR=str(tmp_path / "var"), CONCORD_PORT=str(port), CONCORD_LOG_LEVEL="warning")
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    health = json.load(r)
                    break
            except OSError:
                time.sleep(0.3)
        assert health is not None and health["status"] == "ok", proc.stderr.read()
        token_file = tmp_path / "var" / "operator.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/series", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.count(token) == 1  # printed once, on the first start
    pgdata = tmp_path / "var" / "pgdata"
    assert not (pgdata / "postmaster.pid").exists(), "the embedded PostgreSQL is still running"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CONCORD_LOG_LEVEL": "warning"},
    )


@pytest.mark.slow
def test_global_options_stand_before_or_after_the_command(database_url: str, tmp_path: Path) -> None:
    after = _run("series", "set", "invoice", "--format", "A-{NUMBER}", "--database-url", database_url)
    assert after.returncode == 0, after.stderr
    config = tmp_path / "concord.toml"
    config.write_text(f'database_url = "{database_url}"\n')
    for args in (
        ("series", "show", "--config", str(config)),
        ("--config", str(config), "series", "show"),
        ("series", "--database-url", database_url, "show"),
    ):
        shown = _run(*args)
        assert shown.returncode == 0, (args, shown.stderr)
        invoice = next(s for s in json.loads(shown.stdout) if s["name"] == "invoice")
        assert invoice["settings"]["format"] == "A-{NUMBER}"
    missing = _run("series", "show", "--database-url")
    assert missing.returncode == 2
    assert "--database-url: expected one argument" in missing.stderr


@pytest.mark.slow
def test_database_and_port_problems_are_named_as_such(database_url: str) -> None:
    absent = database_url.rsplit("/", 1)[0] + "/concord_no_such_database"
    refused = _run("series", "show", "--database-url", absent)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        'concord: the database refused: database "concord_no_such_database" does not exist'
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = _run("serve", "--database-url", database_url, "--port", str(port))
    assert busy.returncode == 1
    assert f"concord: cannot listen on 127.0.0.1:{port}: " in busy.stderr
    assert "database" not in busy.stderr.splitlines()[-1]
