"""The database role the service works as: a group role that may read and append to the
ledger but not change it, granted its rights by the migrations
(migrations/functions/concord_grant_service.sql) and entered on each pool connection."""

from __future__ import annotations

import asyncpg
import structlog

log = structlog.get_logger(__name__)

SERVICE_ROLE = "concord_service"


async def enter_service_role(conn: asyncpg.Connection) -> None:
    """SET ROLE to the service's group role when this login may (a member, or a superuser).

    Defence in depth for a login with more rights than the service needs (a superuser, say):
    a bug, or a statement the service did not mean to run, then has only the group's rights.
    It is not a boundary against SQL chosen by an attacker, who could RESET ROLE; that
    boundary is a login role of the service's own (docs/operations.md). A login that owns
    the ledger and is not a member works as itself, with a warning.
    """
    # Columns are evaluated in order: the second asks as the role now in effect.
    owns_ledger = await conn.fetchval(
        "SELECT CASE WHEN to_regrole($1::text) IS NULL THEN NULL"
        " WHEN pg_has_role($1::text::name, 'MEMBER') THEN set_config('role', $1::text, false)"
        " END, pg_has_role((SELECT relowner FROM pg_class WHERE oid = to_regclass('events')),"
        " 'USAGE')",
        SERVICE_ROLE,
        column=1,
    )
    if owns_ledger:
        log.warning(
            "service_role_owns_ledger",
            role=await conn.fetchval("SELECT current_user"),
            detail="the service's database role owns the ledger and could switch its "
            "append-only guard off; give the service a role of its own "
            "(docs/operations.md, 'Database roles and migrations')",
        )
