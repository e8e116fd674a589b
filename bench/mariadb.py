"""The MariaDB (or MySQL) server the benchmarks' WHMCS stores live in."""

from __future__ import annotations

import os

from simulator.whmcs import MySQLURL, connection, fetch_all

# The server the tests use too (tests/support/mysql_fixtures.py): root on 127.0.0.1, no password.
ADMIN_URL = os.environ.get("CONCORD_TEST_MYSQL_URL", "").strip() or "mysql://root@127.0.0.1:3306/"


async def server_facts(url: str | MySQLURL) -> dict[str, str]:
    """The server's version and the settings that decide what a commit costs."""
    async with connection(url) as conn:
        rows = await fetch_all(
            conn,
            "SELECT VERSION() AS version, @@innodb_flush_log_at_trx_commit AS flush, @@log_bin AS binlog",
        )
    return {
        "version": str(rows[0]["version"]),
        "innodb_flush_log_at_trx_commit": str(rows[0]["flush"]),
        "log_bin": "on" if rows[0]["binlog"] else "off",
    }
