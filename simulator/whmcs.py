"""A WHMCS database for tests, benchmarks and the demo: create, load, and act like WHMCS.

Every action runs as one transaction of its own and commits, as a WHMCS request does. Connections
use the sql_mode WHMCS itself runs with (no strict mode, zero dates allowed): WHMCS writes zero
dates and omits NOT NULL columns that have no default.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import asyncmy
import asyncmy.errors
from asyncmy.cursors import DictCursor

from agent.whmcs.database import in_transaction
from simulator.generator import TABLES, InvoiceRows, Row, StoreGenerator, money

SCHEMA = Path(__file__).with_name("whmcs_schema.sql")  # the WHMCS tables, not the agent's own
WHMCS_SQL_MODE = "NO_ENGINE_SUBSTITUTION"
ON_VALUES = ("on", "1", "true", "yes")

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]{1,64}$")


# -- URLs and connections ----------------------------------------------------------------------


@dataclass(frozen=True)
class MySQLURL:
    """`mysql://user:pass@host:port/db`; the database may be empty for an admin URL."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str = ""

    def with_database(self, database: str) -> MySQLURL:
        return replace(self, database=database)

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        if self.database:
            kwargs["database"] = self.database
        return kwargs

    def __str__(self) -> str:
        credentials = quote(self.user, safe="")
        if self.password:
            credentials += ":" + quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mysql://{credentials}@{host}:{self.port}/{quote(self.database, safe='')}"


def parse_mysql_url(url: str) -> MySQLURL:
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb", "mysql+asyncmy"):
        raise ValueError(f"not a MySQL URL (mysql://user:pass@host:port/db): {url!r}")
    try:
        port = parts.port or 3306
    except ValueError as error:
        raise ValueError(f"bad port in MySQL URL {url!r}") from error
    return MySQLURL(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username) if parts.username else "root",
        password=unquote(parts.password) if parts.password else "",
        database=unquote(parts.path.lstrip("/")),
    )


async def connect(url: str | MySQLURL, *, autocommit: bool = True, connect_timeout: float = 5) -> Any:
    """A connection as WHMCS opens one. Autocommit by default so that a reader sees other
    connections' commits; actions below open their own transactions."""
    target = url if isinstance(url, MySQLURL) else parse_mysql_url(url)
    return await asyncmy.connect(
        **target.connect_kwargs(),
        charset="utf8mb4",
        sql_mode=WHMCS_SQL_MODE,
        autocommit=autocommit,
        connect_timeout=connect_timeout,
    )


@asynccontextmanager
async def connection(url: str | MySQLURL, *, autocommit: bool = True) -> AsyncIterator[Any]:
    conn = await connect(url, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return f"`{name}`"


# -- databases and schema ----------------------------------------------------------------------


async def create_database(admin_url: str | MySQLURL, name: str) -> str:
    """Creates an empty database; returns its URL."""
    admin = admin_url if isinstance(admin_url, MySQLURL) else parse_mysql_url(admin_url)
    async with connection(admin.with_database("")) as conn, conn.cursor() as cursor:
        await cursor.execute(
            f"CREATE DATABASE {_identifier(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )
    return str(admin.with_database(name))


async def drop_database(admin_url: str | MySQLURL, name: str) -> None:
    """Drops the database, first ending connections still using it (they would block the DROP)."""
    admin = admin_url if isinstance(admin_url, MySQLURL) else parse_mysql_url(admin_url)
    async with connection(admin.with_database("")) as conn, conn.cursor() as cursor:
        await cursor.execute(
            "SELECT id FROM information_schema.PROCESSLIST WHERE db = %s AND id <> CONNECTION_ID()", (name,)
        )
        for (thread_id,) in await cursor.fetchall():
            with suppress(asyncmy.errors.OperationalError, asyncmy.errors.InternalError):
                await cursor.execute(f"KILL {int(thread_id)}")
        await cursor.execute(f"DROP DATABASE IF EXISTS {_identifier(name)}")


def schema_statements() -> list[str]:
    text = SCHEMA.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in re.split(r";\s*$", body, flags=re.M) if statement.strip()]


async def load_schema(conn: Any) -> None:
    """Creates the WHMCS tables in the connection's database."""
    async with conn.cursor() as cursor:
        await cursor.execute("SET SESSION sql_mode = %s", (WHMCS_SQL_MODE,))
        for statement in schema_statements():
            await cursor.execute(statement)


# -- rows --------------------------------------------------------------------------------------


async def _insert(cursor: Any, table: str, rows: Sequence[Row]) -> None:
    # Rows with the same columns go in one multi-row INSERT (executemany rewrites it so).
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for columns, group in groups.items():
        names = ", ".join(_identifier(column) for column in columns)
        placeholders = ", ".join(["%s"] * len(columns))
        await cursor.executemany(
            f"INSERT INTO {_identifier(table)} ({names}) VALUES ({placeholders})",
            [tuple(row[column] for column in columns) for row in group],
        )


async def insert_rows(conn: Any, table: str, rows: Iterable[Row]) -> int:
    """Bulk insert of dict rows (columns by key); returns the number of rows."""
    batch = list(rows)
    if batch:
        async with in_transaction(conn) as cursor:
            await _insert(cursor, table, batch)
    return len(batch)


async def load_store(conn: Any, store: StoreGenerator | dict[str, list[Row]]) -> dict[str, int]:
    """Loads a generated store's base data in one transaction; returns rows per table."""
    tables = store.base() if isinstance(store, StoreGenerator) else store
    async with in_transaction(conn) as cursor:
        for table in TABLES:
            if tables.get(table):
                await _insert(cursor, table, tables[table])
    return {table: len(tables.get(table, [])) for table in TABLES}


async def fetch_all(conn: Any, sql: str, args: Sequence[Any] | None = None) -> list[Row]:
    async with conn.cursor(DictCursor) as cursor:
        await cursor.execute(sql, args)
        return list(await cursor.fetchall())


async def fetch_invoice(conn: Any, invoice_id: int) -> Row:
    rows = await fetch_all(conn, "SELECT * FROM tblinvoices WHERE id = %s", (invoice_id,))
    if not rows:
        raise LookupError(f"no invoice {invoice_id}")
    return rows[0]


# -- what WHMCS does ---------------------------------------------------------------------------


async def create_invoice(conn: Any, rows: InvoiceRows) -> int:
    """Inserts a document from `StoreGenerator.new_invoice` with its items, snapshot and payments;
    returns the new tblinvoices.id (auto-increment, unless the rows carry one)."""
    async with in_transaction(conn) as cursor:
        columns = list(rows.invoice)
        await cursor.execute(
            f"INSERT INTO tblinvoices ({', '.join(_identifier(c) for c in columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))})",
            tuple(rows.invoice[c] for c in columns),
        )
        invoice_id = int(rows.invoice.get("id") or cursor.lastrowid)
        if rows.items:
            items = [{**item, "invoiceid": invoice_id} for item in rows.items]
            await _insert(cursor, "tblinvoiceitems", items)
        if rows.snapshot is not None:
            await _insert(cursor, "mod_invoicedata", [{**rows.snapshot, "invoiceid": invoice_id}])
        first_payment_id = 0
        for payment in rows.payments:
            row = {**payment, "invoiceid": invoice_id}
            if row.get("amountout", 0) > 0 and not row.get("refundid"):
                row["refundid"] = first_payment_id
            await _insert(cursor, "tblaccounts", [row])
            if not first_payment_id and row.get("amountin", 0) > 0:
                first_payment_id = int(row.get("id") or cursor.lastrowid)
    return invoice_id


def invoice_tables(documents: Iterable[tuple[int, InvoiceRows]]) -> dict[str, list[Row]]:
    """Documents from `StoreGenerator.new_invoice` with the ids to give them, as rows for
    `load_store`: all created in one transaction, as WHMCS's cron creates a run of invoices.
    Refunds need `create_invoice` (their refundid names a payment only known once inserted)."""
    tables: dict[str, list[Row]] = {
        "tblinvoices": [],
        "tblinvoiceitems": [],
        "tblaccounts": [],
        "mod_invoicedata": [],
    }
    for invoice_id, rows in documents:
        tables["tblinvoices"].append({**rows.invoice, "id": invoice_id})
        tables["tblinvoiceitems"] += [{**item, "invoiceid": invoice_id} for item in rows.items]
        for payment in rows.payments:
            if payment.get("amountout", 0) > 0:
                raise ValueError(f"invoice {invoice_id} holds a refund: use create_invoice")
            tables["tblaccounts"].append({**payment, "invoiceid": invoice_id})
        if rows.snapshot is not None:
            tables["mod_invoicedata"].append({**rows.snapshot, "invoiceid": invoice_id})
    return tables


async def get_config(conn: Any, setting: str) -> str | None:
    rows = await fetch_all(conn, "SELECT value FROM tblconfiguration WHERE setting = %s LIMIT 1", (setting,))
    return rows[0]["value"] if rows else None


async def set_config(conn: Any, setting: str, value: str) -> None:
    # tblconfiguration has no unique key on setting, so no INSERT … ON DUPLICATE KEY.
    async with in_transaction(conn) as cursor:
        await cursor.execute("SELECT COUNT(*) FROM tblconfiguration WHERE setting = %s", (setting,))
        (count,) = await cursor.fetchone()
        if count:
            await cursor.execute(
                "UPDATE tblconfiguration SET value = %s, updated_at = NOW() WHERE setting = %s",
                (value, setting),
            )
        else:
            await cursor.execute(
                "INSERT INTO tblconfiguration (setting, value, created_at, updated_at) "
                "VALUES (%s, %s, NOW(), NOW())",
                (setting, value),
            )


def format_whmcs_number(number_format: str, number: str, when: datetime) -> str:
    return (
        number_format.replace("{YEAR}", f"{when:%Y}")
        .replace("{MONTH}", f"{when:%m}")
        .replace("{DAY}", f"{when:%d}")
        .replace("{NUMBER}", number)
    )


async def _config_values(cursor: Any, settings: Sequence[str]) -> dict[str, str]:
    await cursor.execute(
        f"SELECT setting, value FROM tblconfiguration WHERE setting IN ({', '.join(['%s'] * len(settings))})",
        tuple(settings),
    )
    return {setting: value for setting, value in await cursor.fetchall()}


async def _whmcs_number(
    cursor: Any,
    invoice_id: int,
    when: datetime,
    *,
    enabled: str,
    number_format: str,
    next_value: str,
    increment: str | None,
) -> None:
    """WHMCS's own numbering, faithfully racy: read the next value, write the number, write the value
    back, with no lock. Does nothing unless the setting `enabled` is on."""
    config = await _config_values(cursor, [s for s in (enabled, number_format, next_value, increment) if s])
    if config.get(enabled, "").strip().lower() not in ON_VALUES:
        return
    current = config.get(next_value, "1") or "1"
    step = int(config.get(increment or "", "1") or "1") if increment else 1
    number = format_whmcs_number(config.get(number_format, "{NUMBER}"), current, when)
    await cursor.execute(
        "UPDATE tblinvoices SET invoicenum = %s WHERE id = %s AND invoicenum = ''", (number, invoice_id)
    )
    following = str(int(current) + step).zfill(len(current))
    await cursor.execute("UPDATE tblconfiguration SET value = %s WHERE setting = %s", (following, next_value))


async def _balance(cursor: Any, invoice_id: int, total: Decimal) -> Decimal:
    await cursor.execute(
        "SELECT COALESCE(SUM(amountin), 0) - COALESCE(SUM(amountout), 0) FROM tblaccounts "
        "WHERE invoiceid = %s",
        (invoice_id,),
    )
    (paid,) = await cursor.fetchone()
    return money(total - Decimal(paid))


async def add_payment(
    conn: Any,
    invoice_id: int,
    amount: Decimal | None = None,
    when: datetime | None = None,
    gateway: str | None = None,
    *,
    transid: str = "",
    fees: Decimal = Decimal("0.00"),
) -> int:
    """Records a payment (the balance when `amount` is None); when it settles the balance the invoice
    becomes Paid with `datepaid`, and WHMCS's own number is given if its sequential numbering is on.
    Returns the tblaccounts id. Drafts take no payment."""
    when = when or datetime.now().replace(microsecond=0)
    async with in_transaction(conn) as cursor:
        await cursor.execute(
            "SELECT userid, total, status, paymentmethod FROM tblinvoices WHERE id = %s", (invoice_id,)
        )
        found = await cursor.fetchone()
        if found is None:
            raise LookupError(f"no invoice {invoice_id}")
        userid, total, status, method = found
        if status == "Draft":
            raise ValueError(f"invoice {invoice_id} is a Draft: drafts take no payment")
        balance = await _balance(cursor, invoice_id, total)
        paid = money(balance if amount is None else amount)
        if paid <= 0:
            raise ValueError(f"invoice {invoice_id}: nothing to pay (balance {balance}, amount {paid})")
        await cursor.execute(
            "SELECT rate FROM tblcurrencies c JOIN tblclients u ON u.currency = c.id WHERE u.id = %s",
            (userid,),
        )
        rate_row = await cursor.fetchone()
        await _insert(
            cursor,
            "tblaccounts",
            [
                {
                    "userid": userid,
                    "currency": 0,
                    "gateway": gateway or method,
                    "date": when,
                    "description": "Invoice Payment",
                    "amountin": paid,
                    "fees": money(fees),
                    "amountout": money(0),
                    "rate": rate_row[0] if rate_row else Decimal(1),
                    "transid": transid,
                    "invoiceid": invoice_id,
                    "refundid": 0,
                    "created_at": when,
                    "updated_at": when,
                }
            ],
        )
        payment_id = int(cursor.lastrowid)
        if paid >= balance and status != "Paid":
            await cursor.execute(
                "UPDATE tblinvoices SET status = 'Paid', datepaid = %s, updated_at = %s WHERE id = %s",
                (when, when, invoice_id),
            )
            await _whmcs_number(
                cursor,
                invoice_id,
                when,
                enabled="SequentialInvoiceNumbering",
                number_format="SequentialInvoiceNumberFormat",
                next_value="SequentialInvoiceNumberValue",
                increment="InvoiceIncrement",
            )
    return payment_id


async def mark_paid(
    conn: Any,
    invoice_id: int,
    when: datetime | None = None,
    gateway: str | None = None,
    *,
    transid: str = "",
    fees: Decimal = Decimal("0.00"),
) -> int:
    """Pays the whole balance, as a gateway callback or "Mark Paid" does; returns the tblaccounts id."""
    return await add_payment(conn, invoice_id, None, when, gateway, transid=transid, fees=fees)


async def publish_draft(conn: Any, invoice_id: int, when: datetime | None = None) -> None:
    """Draft → Unpaid; gives the custom (Unpaid) number if TaxCustomInvoiceNumbering is on."""
    when = when or datetime.now().replace(microsecond=0)
    async with in_transaction(conn) as cursor:
        await cursor.execute(
            "UPDATE tblinvoices SET status = 'Unpaid', updated_at = %s WHERE id = %s AND status = 'Draft'",
            (when, invoice_id),
        )
        if cursor.rowcount != 1:
            raise ValueError(f"invoice {invoice_id} is not a Draft")
        await _whmcs_number(
            cursor,
            invoice_id,
            when,
            enabled="TaxCustomInvoiceNumbering",
            number_format="TaxCustomInvoiceNumberFormat",
            next_value="TaxNextCustomInvoiceNumber",
            increment=None,
        )


async def set_status(conn: Any, invoice_id: int, status: str, when: datetime | None = None) -> None:
    """Cancelled, Refunded (with a refund row for what was paid), Collections, Unpaid, Payment Pending."""
    when = when or datetime.now().replace(microsecond=0)
    async with in_transaction(conn) as cursor:
        await cursor.execute(
            "SELECT userid, total, paymentmethod FROM tblinvoices WHERE id = %s", (invoice_id,)
        )
        found = await cursor.fetchone()
        if found is None:
            raise LookupError(f"no invoice {invoice_id}")
        userid, total, method = found
        extra = ""
        if status == "Cancelled":
            extra = ", date_cancelled = %(when)s"
        elif status == "Refunded":
            extra = ", date_refunded = %(when)s"
            paid = money(total - await _balance(cursor, invoice_id, total))
            await cursor.execute(
                "SELECT id, rate FROM tblaccounts WHERE invoiceid = %s AND amountin > 0 ORDER BY id LIMIT 1",
                (invoice_id,),
            )
            payment = await cursor.fetchone()
            if paid > 0 and payment is not None:
                await _insert(
                    cursor,
                    "tblaccounts",
                    [
                        {
                            "userid": userid,
                            "currency": 0,
                            "gateway": method,
                            "date": when,
                            "description": f"Refund of invoice {invoice_id}",
                            "amountin": money(0),
                            "fees": money(0),
                            "amountout": paid,
                            "rate": payment[1],
                            "transid": "",
                            "invoiceid": invoice_id,
                            "refundid": payment[0],
                            "created_at": when,
                            "updated_at": when,
                        }
                    ],
                )
        await cursor.execute(
            f"UPDATE tblinvoices SET status = %(status)s, updated_at = %(when)s{extra} WHERE id = %(id)s",
            {"status": status, "when": when, "id": invoice_id},
        )


async def update_invoice(conn: Any, invoice_id: int, values: Row) -> None:
    """Sets columns of one invoice (an admin's edit)."""
    assignments = ", ".join(f"{_identifier(column)} = %s" for column in values)
    async with in_transaction(conn) as cursor:
        await cursor.execute(
            f"UPDATE tblinvoices SET {assignments} WHERE id = %s", (*values.values(), invoice_id)
        )


async def update_client(conn: Any, values: Row) -> None:
    """Applies `StoreGenerator.relocate_client` output (a dict with "id") to tblclients."""
    changes = {column: value for column, value in values.items() if column != "id"}
    assignments = ", ".join(f"{_identifier(column)} = %s" for column in changes)
    async with in_transaction(conn) as cursor:
        await cursor.execute(
            f"UPDATE tblclients SET {assignments}, updated_at = NOW() WHERE id = %s",
            (*changes.values(), values["id"]),
        )
