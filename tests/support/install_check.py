"""Checks a production install: ``python -m tests.support.install_check <venv>``.

``<venv>`` holds the project installed without the dev extras (.ci/install_check.sh makes
it). Run by the development venv, this starts the fake KashFlow and a fresh database with one
paid invoice in its ledger, then, with the installed programs only: each console command's
``--help``, and one ``concord sync kashflow --once`` that must post the invoice and its
payment. A dependency that only the dev extras bring in fails here, not in production.
It also checks what is installed: none of the checkout's test and benchmark support (the
simulator, its data generator and WHMCS database, the scratch PostgreSQL, the demo), and no
``demo`` command in ``concord --help``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
import tomllib
from pathlib import Path

from simulator.scratch_postgres import admin_url, fresh_database
from tests.support.fake_kashflow import FakeKashFlow
from tests.support.kashflow_ledger import open_ledger, serve_fake

ROOT = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT = 60.0
# Test and benchmark support, by top-level package or file name: the checkout only.
NOT_INSTALLED_PACKAGES = ("simulator", "tests", "bench")
NOT_INSTALLED_FILES = ("generator.py", "fixture.py", "scratch_postgres.py", "demo.py", "whmcs_schema.sql")
INSTALLED_FILES = "import importlib.metadata; print(*importlib.metadata.files('concord'), sep=chr(10))"
CONFIG = """
kashflow_username = "concord"
kashflow_timeout_seconds = 10

[kashflow_gateways.paypal]
method = 22
account = 12

[kashflow_currencies.alpha]
1 = "GBP"
"""


async def run(program: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """stdout of the program; its stderr and exit code on failure. Run from an empty
    directory, so nothing is imported from the source tree."""
    with tempfile.TemporaryDirectory(prefix="concord-install-check-") as cwd:
        process = await asyncio.create_subprocess_exec(
            str(program),
            *args,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    if process.returncode != 0:
        raise SystemExit(f"{program.name} {' '.join(args)} exited {process.returncode}:\n{err.decode()}")
    return out.decode()


async def check_contents(venv: Path) -> None:
    """The distribution's files (its RECORD) hold no test or benchmark support."""
    files = (await run(venv / "bin" / "python", "-c", INSTALLED_FILES)).splitlines()
    support = [
        f
        for f in files
        if f.split("/")[0] in NOT_INSTALLED_PACKAGES or f.rsplit("/", 1)[-1] in NOT_INSTALLED_FILES
    ]
    if not files or support:
        raise SystemExit(f"the installed package holds test or benchmark support: {support or 'no files'}")
    print(f"ok  {len(files)} installed files, no test or benchmark support among them")


async def check(venv: Path, url: str) -> None:
    await check_contents(venv)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    helps = {name: await run(venv / "bin" / name, "--help") for name in scripts}
    print(*(f"ok  {name} --help" for name in helps), sep="\n")
    if re.search(r"\bdemo\b", helps["concord"]):
        raise SystemExit(f"concord --help lists a demo; it runs from the checkout:\n{helps['concord']}")
    print("ok  concord --help lists no demo (make demo runs it from the checkout)")
    fake = FakeKashFlow()
    async with open_ledger(url) as ledger:
        formatted = await ledger.issue(await ledger.add_store("alpha"), 1)
    with tempfile.TemporaryDirectory(prefix="concord-install-check-") as tmp:
        config = Path(tmp) / "concord.toml"
        config.write_text(CONFIG)
        async with serve_fake(fake) as kashflow_url:
            out = await run(
                venv / "bin" / "concord",
                "--config",
                str(config),
                "--database-url",
                url,
                "sync",
                "kashflow",
                "--once",
                env={
                    "CONCORD_KASHFLOW_URL": kashflow_url,
                    "CONCORD_KASHFLOW_PASSWORD": fake.password,
                    "CONCORD_LOG_LEVEL": "warning",
                },
            )
    report = json.loads(out)
    [invoice] = fake.invoice_by_reference(formatted)
    if report["posted"] != 1 or len(fake.payments_of(int(invoice["InvoiceNumber"]))) != 1:
        raise SystemExit(f"concord sync kashflow --once did not post {formatted}: {out}")
    print(f"ok  concord sync kashflow --once posted {formatted} and its payment")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.support.install_check <venv without dev extras>")
    with admin_url() as (admin, _), fresh_database(admin, "concord_install_check") as database:
        asyncio.run(check(Path(sys.argv[1]), database))
