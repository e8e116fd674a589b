"""`concord-agent check`: one clear line per problem in the agent's surroundings."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from agent.settings import AgentSettings
from agent.whmcs import queries
from agent.whmcs.database import MysqlTarget, create_agent_tables, create_pool

REQUIRED_COLUMNS = {
    "tblinvoices": (
        "id",
        "userid",
        "invoicenum",
        "date",
        "duedate",
        "datepaid",
        "subtotal",
        "credit",
        "tax",
        "tax2",
        "total",
        "taxrate",
        "taxrate2",
        "status",
        "paymentmethod",
    ),
    "tblinvoiceitems": ("id", "invoiceid", "type", "relid", "description", "amount", "taxed"),
    "tblclients": (
        "id",
        "firstname",
        "lastname",
        "companyname",
        "email",
        "address1",
        "address2",
        "city",
        "state",
        "postcode",
        "country",
        "phonenumber",
        "tax_id",
        "currency",
        "taxexempt",
    ),
    "tblcustomfields": ("id", "type", "fieldname", "showinvoice"),
    "tblcustomfieldsvalues": ("fieldid", "relid", "value"),
    "tblconfiguration": ("setting", "value"),
}
MAX_SKEW_SECONDS = 5.0
ON_VALUES = ("on", "1", "true", "yes")


async def check(settings: AgentSettings, target: MysqlTarget | None, target_error: str | None) -> list[str]:
    problems: list[str] = []
    if target is None:
        problems.append(f"WHMCS database not configured: {target_error}")
    else:
        problems += await _check_database(target)
    problems += await _check_coordinator(settings)
    return problems


async def _check_database(target: MysqlTarget) -> list[str]:
    where = f"{target.user}@{target.host}:{target.port}/{target.database}"
    try:
        pool = await create_pool(target, size=1)
    except Exception as exc:
        return [f"WHMCS database {where} unreachable: {exc}"]
    problems: list[str] = []
    try:
        async with pool.acquire() as conn:
            rows = await queries.fetch(
                conn,
                "SELECT table_name AS t, column_name AS c FROM information_schema.columns"
                " WHERE table_schema = DATABASE()",
            )
            present: dict[str, set[str]] = {}
            for row in rows:
                present.setdefault(row["t"], set()).add(row["c"])
            for table, columns in REQUIRED_COLUMNS.items():
                if table not in present:
                    problems.append(f"WHMCS table {table} is missing in {where}")
                    continue
                for column in columns:
                    if column not in present[table]:
                        problems.append(f"column {table}.{column} is missing in {where}")
            if "tblinvoices" in present:
                problems += await _check_privileges(conn, where)
            if "tblconfiguration" in present:
                settings = await queries.configuration(conn, queries.NUMBERING_SETTINGS)
                if settings.get("SequentialInvoiceNumbering", "").lower() in ON_VALUES:
                    problems.append(
                        "WHMCS sequential invoice numbering is on: it races with "
                        "Concord; switch it off in Setup > General Settings > Invoices"
                    )
                if settings.get("TaxCustomInvoiceNumbering", "").lower() in ON_VALUES:
                    problems.append(
                        "WHMCS custom invoice numbering (TaxCustomInvoiceNumbering) "
                        "is on: WHMCS then numbers invoices itself when they become "
                        "Unpaid; switch it off in Setup > Payments > Tax Configuration"
                    )
            now = await queries.fetch(conn, "SELECT UTC_TIMESTAMP(6) AS now")
            skew = abs((now[0]["now"].replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds())
            if skew > MAX_SKEW_SECONDS:
                problems.append(
                    f"clock skew of {skew:.1f} s between this machine and the WHMCS database (more than 5 s)"
                )
        try:
            await create_agent_tables(pool)
        except Exception as exc:
            problems.append(f"cannot create the agent's mod_concord_* tables in {where}: {exc}")
    finally:
        pool.close()
        await pool.wait_closed()
    return problems


async def _check_privileges(conn: Any, where: str) -> list[str]:
    try:
        async with conn.cursor() as cur:
            # Touches no row: fails only when UPDATE on tblinvoices is not granted.
            await cur.execute("UPDATE tblinvoices SET invoicenum = invoicenum WHERE id < 0")
    except Exception as exc:
        return [f"missing privilege: cannot UPDATE tblinvoices in {where}: {exc}"]
    return []


async def _check_coordinator(settings: AgentSettings) -> list[str]:
    base = settings.coordinator_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            started = time.time()
            async with session.get(
                base + "/v1/series", headers={"Authorization": f"Bearer {settings.token}"}
            ) as resp:
                status, date_header = resp.status, resp.headers.get("Date")
                finished = time.time()
            role_problem = ""
            if status == 200:
                role_problem = await _check_store_token(session, base, settings.token)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return [f"coordinator {base} unreachable: {exc!r}"]
    problems = []
    if status in (401, 403):
        problems.append(f"coordinator {base} refused the token (HTTP {status}); check CONCORD_AGENT_TOKEN")
    elif status != 200:
        problems.append(f"coordinator {base} answered HTTP {status}")
    elif role_problem:
        problems.append(role_problem)
    if date_header:
        theirs = parsedate_to_datetime(date_header).timestamp()
        # The Date header has one-second resolution: allow for it and for the round trip.
        skew = min(abs(theirs - started), abs(theirs - finished), abs(theirs + 1 - finished))
        if skew > MAX_SKEW_SECONDS:
            problems.append(
                f"clock skew of {skew:.1f} s between this machine and the coordinator (more than 5 s)"
            )
    return problems


async def _check_store_token(session: aiohttp.ClientSession, base: str, token: str) -> str:
    """Whether the token is a store's: an empty reservation request is refused for its body
    (400) when it is, for its role (403) when it is an operator's or a reader's token."""
    async with session.post(
        base + "/v1/reservations", json={}, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        if resp.status != 403:
            return ""
        payload = await resp.json(content_type=None)
    message = payload.get("error", {}).get("message", "") if isinstance(payload, dict) else ""
    return (
        "CONCORD_AGENT_TOKEN is not a store's token, so the agent cannot reserve numbers "
        f"({message or 'HTTP 403'}); use the token `concord peers add` printed for this "
        "store (an operator or reader token does not work)"
    )
