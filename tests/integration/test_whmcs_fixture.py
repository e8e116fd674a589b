"""The WHMCS test fixture: schema as WHMCS 8.7 creates it, realistic generated data, WHMCS actions."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from datetime import date, datetime
from decimal import Decimal

import pytest

from simulator.generator import (
    INVOICE_STATUSES,
    ITEM_TYPES,
    TABLES,
    VAT_NUMBER_FIELD,
    ZERO_DATETIME,
    StoreGenerator,
    iter_documents,
    money,
    php_serialize,
)
from simulator.whmcs import (
    add_payment,
    connection,
    create_invoice,
    fetch_all,
    fetch_invoice,
    get_config,
    load_store,
    mark_paid,
    parse_mysql_url,
    publish_draft,
    schema_statements,
    set_config,
    set_status,
    update_client,
)
from tests.support.mysql_fixtures import find_mysql_admin_url, unreachable_message

OUTERMOST = {"GP", "MQ", "RE", "YT", "GF", "MF"}
AMOUNT_COLUMNS = ("subtotal", "credit", "tax", "tax2", "total")


@pytest.fixture(scope="module")
def store() -> StoreGenerator:
    return StoreGenerator(7, "eu-shop")


@pytest.fixture(scope="module")
def tables(store: StoreGenerator) -> dict[str, list[dict]]:
    return store.base()


# -- generator (pure) --------------------------------------------------------------------------


def test_same_seed_and_store_give_the_same_data() -> None:
    assert (
        StoreGenerator(3, "a", clients=10, invoices=50).base()
        == StoreGenerator(3, "a", clients=10, invoices=50).base()
    )
    assert (
        StoreGenerator(3, "a", clients=10, invoices=50).base()
        != StoreGenerator(3, "b", clients=10, invoices=50).base()
    )


def test_base_has_every_table_in_load_order(tables: dict[str, list[dict]]) -> None:
    assert tuple(tables) == TABLES
    assert all(tables[table] for table in TABLES)


def test_every_status_item_type_and_credit_notes(tables: dict[str, list[dict]]) -> None:
    assert set(INVOICE_STATUSES) <= {row["status"] for row in tables["tblinvoices"]}
    assert set(ITEM_TYPES) <= {row["type"] for row in tables["tblinvoiceitems"]}
    credit_notes = [row for row in tables["tblinvoices"] if row["total"] < 0]
    assert credit_notes
    assert all(row["subtotal"] < 0 and row["tax"] <= 0 for row in credit_notes)
    assert any(row["notes"].startswith("Credit note for invoice #") for row in credit_notes)
    assert any(item["amount"] < 0 for item in tables["tblinvoiceitems"] if item["type"] == "PromoHosting")


def test_clients_in_eu_outermost_regions_and_outside(tables: dict[str, list[dict]]) -> None:
    clients = tables["tblclients"]
    countries = {row["country"] for row in clients}
    assert countries >= OUTERMOST | {"US", "CH", "NO", "GB", "NL", "DE", "FR", "IT", "ES", "PT"}
    postcodes = {(row["country"], row["postcode"][:2]) for row in clients}
    assert {("ES", "35"), ("ES", "38"), ("PT", "95"), ("PT", "90")} <= postcodes  # Canaries, Azores, Madeira
    assert any(row["companyname"] for row in clients) and any(not row["companyname"] for row in clients)
    assert {0, 1} == {row["taxexempt"] for row in clients}
    assert any(row["tax_id"] for row in clients)
    vat_field = next(row for row in tables["tblcustomfields"] if row["fieldname"] == VAT_NUMBER_FIELD)
    assert vat_field["type"] == "client" and vat_field["showinvoice"] == "on"
    assert any(
        row["fieldid"] == vat_field["id"] and row["value"].strip() for row in tables["tblcustomfieldsvalues"]
    )


def test_several_currencies_with_euro_default(tables: dict[str, list[dict]]) -> None:
    currencies = tables["tblcurrencies"]
    assert [row["code"] for row in currencies if row["default"]] == ["EUR"]
    assert {"EUR", "USD", "GBP", "XCD"} <= {row["code"] for row in currencies}
    used = {row["currency"] for row in tables["tblclients"]}
    assert len(used) >= 4


def test_amounts_are_consistent_decimals(tables: dict[str, list[dict]]) -> None:
    for document in iter_documents(tables):
        invoice = document.invoice
        for column in AMOUNT_COLUMNS:
            assert isinstance(invoice[column], Decimal) and invoice[column].as_tuple().exponent == -2
        assert invoice["subtotal"] == sum((item["amount"] for item in document.items), Decimal(0))
        taxable = sum((item["amount"] for item in document.items if item["taxed"]), Decimal(0))
        assert invoice["tax"] == money(taxable * invoice["taxrate"] / 100)
        assert invoice["tax2"] == money(taxable * invoice["taxrate2"] / 100)
        assert invoice["total"] == invoice["subtotal"] + invoice["tax"] + invoice["tax2"] - invoice["credit"]
    invoices = tables["tblinvoices"]
    assert any(row["credit"] > 0 for row in invoices)
    assert any(row["tax2"] > 0 for row in invoices)
    assert {Decimal("21.000"), Decimal("0.000")} <= {row["taxrate"] for row in invoices}


def test_payments_follow_statuses(tables: dict[str, list[dict]]) -> None:
    for document in iter_documents(tables):
        invoice = document.invoice
        received = sum((row["amountin"] for row in document.payments), Decimal(0))
        refunded = sum((row["amountout"] for row in document.payments), Decimal(0))
        if invoice["status"] == "Paid" and invoice["total"] > 0:
            assert received == invoice["total"] and isinstance(invoice["datepaid"], datetime)
        if invoice["status"] == "Refunded" and invoice["total"] > 0:
            assert refunded == invoice["total"] and isinstance(invoice["date_refunded"], datetime)
            refund = next(row for row in document.payments if row["amountout"] > 0)
            assert refund["refundid"] == document.payments[0]["id"]
        if invoice["status"] in ("Draft", "Unpaid", "Collections", "Payment Pending", "Cancelled"):
            assert invoice["datepaid"] == ZERO_DATETIME
            assert received < max(invoice["total"], Decimal("0.01"))
        if invoice["status"] == "Cancelled":
            assert isinstance(invoice["date_cancelled"], datetime)
    assert {"paypal", "stripe", "banktransfer"} <= {row["gateway"] for row in tables["tblaccounts"]}


def test_snapshots_missing_legacy_and_differing_from_live_clients(tables: dict[str, list[dict]]) -> None:
    snapshots = {row["invoiceid"]: row for row in tables["mod_invoicedata"]}
    assert len(snapshots) < len(tables["tblinvoices"])  # some invoices have none
    assert any(row["clientsdetails"].startswith("a:") for row in snapshots.values())  # PHP-serialized
    live = {row["id"]: row for row in tables["tblclients"]}
    differing = 0
    for invoice in tables["tblinvoices"]:
        snapshot = snapshots.get(invoice["id"])
        if snapshot is None or snapshot["clientsdetails"].startswith("a:"):
            continue
        details = json.loads(snapshot["clientsdetails"])
        fields = json.loads(snapshot["customfields"])
        assert details["userid"] == invoice["userid"]
        assert all(set(field) == {"id", "fieldname", "value"} for field in fields)
        assert VAT_NUMBER_FIELD in {field["fieldname"] for field in fields}
        client = live[invoice["userid"]]
        keys = ("companyname", "address1", "city", "postcode", "country")
        differing += any(details[key] != client[key] for key in keys)
    assert differing >= 5


def test_no_eu_vat_outside_the_eu_vat_area(tables: dict[str, list[dict]]) -> None:
    outside = OUTERMOST | {"US", "CH", "NO", "GB", "AG"}
    checked = 0
    for document in iter_documents(tables):
        snapshot = document.snapshot
        if snapshot is None or snapshot["clientsdetails"].startswith("a:"):
            continue
        details = json.loads(snapshot["clientsdetails"])
        canary = details["country"] == "ES" and details["postcode"].strip()[:2] in ("35", "38")
        if details["country"] in outside or canary:
            assert document.invoice["taxrate"] == document.invoice["tax"] == 0
            checked += 1
    assert checked


def test_strings_with_surrounding_whitespace(tables: dict[str, list[dict]]) -> None:
    def padded(value: object) -> bool:
        return isinstance(value, str) and value != value.strip()

    assert any(padded(row["city"]) or padded(row["companyname"]) for row in tables["tblclients"])
    assert any(padded(row["description"]) for row in tables["tblinvoiceitems"])
    assert any(padded(row["value"]) for row in tables["tblcustomfieldsvalues"])


def test_numbering_settings_are_whmcs_defaults(store: StoreGenerator) -> None:
    config = store.config()
    assert config["SequentialInvoiceNumbering"] == ""
    for setting in (
        "SequentialInvoiceNumberFormat",
        "SequentialInvoiceNumberValue",
        "InvoiceIncrement",
        "TaxAutoResetPaidNumbering",
        "TaxCustomInvoiceNumbering",
        "TaxCustomInvoiceNumberFormat",
        "TaxNextCustomInvoiceNumber",
        "TaxAutoResetNumbering",
    ):
        assert setting in config
    assert all(row["invoicenum"] == "" for row in store.base()["tblinvoices"])


def test_new_invoices_have_no_ids_and_no_number(store: StoreGenerator) -> None:
    rows = store.new_invoice(status="Paid", date=date(2025, 1, 15))
    assert "id" not in rows.invoice and rows.invoice["invoicenum"] == ""
    assert all("invoiceid" not in item for item in rows.items) and rows.payments
    assert rows.snapshot is not None and "invoiceid" not in rows.snapshot
    note = store.new_invoice(status="Paid", credit_note=True, original_id=5)
    assert note.credit_note and note.invoice["total"] < 0
    assert note.invoice["notes"] == "Credit note for invoice #5"
    numbered = store.new_invoice(numbered=True, date=date(2025, 1, 16))
    assert numbered.invoice["invoicenum"].startswith("2025-")
    assert store.new_invoice(invoicenum="2024-0007").invoice["invoicenum"] == "2024-0007"
    for item_type in ITEM_TYPES:
        made = store.new_invoice(item_types=[item_type])
        assert item_type in {item["type"] for item in made.items}
    with pytest.raises(ValueError, match="unknown status"):
        store.new_invoice(status="Overdue")


def test_pre_concord_numbers_follow_payment_order() -> None:
    store = StoreGenerator(5, "legacy", clients=20, invoices=80, numbered_until=date(2024, 6, 1))
    invoices = store.base()["tblinvoices"]
    numbered = sorted((row for row in invoices if row["invoicenum"]), key=lambda r: (r["datepaid"], r["id"]))
    assert numbered and all(row["datepaid"].date() < date(2024, 6, 1) for row in numbered)
    assert [int(row["invoicenum"].split("-")[1]) for row in numbered] == list(range(1, len(numbered) + 1))
    assert store.config()["SequentialInvoiceNumberValue"] == f"{len(numbered) + 1:04d}"


def test_php_serialize() -> None:
    serialized = php_serialize({"a": "é", "b": [1, True, None]})
    assert serialized == 'a:2:{s:1:"a";s:2:"é";s:1:"b";a:3:{i:0;i:1;i:1;b:1;i:2;N;}}'


def test_mysql_url_parsing() -> None:
    url = parse_mysql_url("mysql://us%40er:p%3Ass@db.example:3307/whmcs")
    parsed = (url.user, url.password, url.host, url.port, url.database)
    assert parsed == ("us@er", "p:ss", "db.example", 3307, "whmcs")
    assert parse_mysql_url(str(url)) == url
    assert parse_mysql_url("mysql://root@127.0.0.1/").database == ""
    with pytest.raises(ValueError, match="not a MySQL URL"):
        parse_mysql_url("postgresql://x@y/z")


def test_unreachable_server_is_reported_in_one_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url, reason = find_mysql_admin_url({"CONCORD_TEST_MYSQL_URL": f"mysql://root@127.0.0.1:{port}/"})
    assert url is None
    message = unreachable_message(reason)
    assert message.startswith("MySQL/MariaDB not reachable: set CONCORD_TEST_MYSQL_URL")
    assert "\n" not in message


def test_schema_statements_are_the_whmcs_tables() -> None:
    created = [statement.split("`")[1] for statement in schema_statements()]
    assert sorted(created) == sorted(TABLES)


# -- real MariaDB/MySQL ------------------------------------------------------------------------


async def test_schema_column_types(whmcs_database: str) -> None:
    name = parse_mysql_url(whmcs_database).database
    async with connection(whmcs_database) as conn:
        columns = await fetch_all(
            conn,
            "SELECT TABLE_NAME AS t, COLUMN_NAME AS c, COLUMN_TYPE AS type, IS_NULLABLE AS nullable "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s",
            (name,),
        )
        indexes = await fetch_all(
            conn,
            "SELECT INDEX_NAME AS i, COLUMN_NAME AS c FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'tblinvoices'",
            (name,),
        )
    types = {(row["t"], row["c"]): (row["type"].lower(), row["nullable"]) for row in columns}
    assert {row["t"] for row in columns} == set(TABLES)
    assert types["tblinvoices", "invoicenum"] == ("text", "NO")
    assert types["tblinvoices", "datepaid"] == ("datetime", "NO")
    assert types["tblinvoices", "date"] == ("date", "YES")
    assert types["tblinvoices", "status"][0] == "text"
    for column in AMOUNT_COLUMNS:
        assert types["tblinvoices", column][0] == "decimal(16,2)"
    assert types["tblinvoices", "taxrate"][0] == types["tblinvoices", "taxrate2"][0] == "decimal(10,3)"
    for column in ("last_capture_attempt", "date_refunded", "date_cancelled"):
        assert types["tblinvoices", column][0] == "datetime"
    assert types["tblinvoices", "created_at"][0] == "timestamp"
    assert types["tblinvoiceitems", "type"][0] == "varchar(30)"
    assert types["tblinvoiceitems", "amount"][0] == "decimal(16,2)"
    assert types["tblinvoiceitems", "taxed"][0] == "int(1)"
    assert types["tblclients", "tax_id"][0] == "varchar(128)"
    assert types["tblclients", "taxexempt"][0] == "tinyint(1)"
    assert types["tblcurrencies", "rate"][0] == "decimal(10,5)"
    assert types["tblaccounts", "amountin"][0] == "decimal(16,2)"
    assert types["tblaccounts", "date"][0] == "datetime"
    assert types["mod_invoicedata", "clientsdetails"][0] == "text"
    assert not [row for row in indexes if row["c"] == "invoicenum"]  # no unique index on invoicenum


async def test_store_loads_and_reads_back(
    whmcs_database: str, store: StoreGenerator, tables: dict[str, list[dict]]
) -> None:
    async with connection(whmcs_database) as conn:
        counts = await load_store(conn, store)
        assert counts == {table: len(tables[table]) for table in TABLES}
        for table in TABLES:
            (row,) = await fetch_all(conn, f"SELECT COUNT(*) AS n FROM {table}")
            assert row["n"] == len(tables[table])
        unpaid = next(row for row in tables["tblinvoices"] if row["status"] == "Unpaid")
        read = await fetch_invoice(conn, unpaid["id"])
    assert read["datepaid"] == ZERO_DATETIME
    for column in (*AMOUNT_COLUMNS, "taxrate", "taxrate2", "date", "duedate", "invoicenum", "status"):
        assert read[column] == unpaid[column]


async def test_create_publish_and_pay_like_whmcs(whmcs_database_factory, store: StoreGenerator) -> None:
    url = whmcs_database_factory(store)
    highest = max(row["id"] for row in store.base()["tblinvoices"])
    async with connection(url) as conn:
        rows = store.new_invoice(status="Draft", item_types=["Hosting", "Setup"])
        draft_id = await create_invoice(conn, rows)
        assert draft_id == highest + 1
        draft = await fetch_invoice(conn, draft_id)
        assert (draft["status"], draft["invoicenum"], draft["datepaid"]) == ("Draft", "", ZERO_DATETIME)
        items = await fetch_all(conn, "SELECT type FROM tblinvoiceitems WHERE invoiceid = %s", (draft_id,))
        assert [row["type"] for row in items] == ["Hosting", "Setup"]
        (snapshot,) = await fetch_all(conn, "SELECT * FROM mod_invoicedata WHERE invoiceid = %s", (draft_id,))
        assert json.loads(snapshot["clientsdetails"])["userid"] == draft["userid"]

        with pytest.raises(ValueError, match="Draft"):
            await mark_paid(conn, draft_id)
        await publish_draft(conn, draft_id, datetime(2025, 1, 16, 9, 0))
        assert (await fetch_invoice(conn, draft_id))["status"] == "Unpaid"
        with pytest.raises(ValueError, match="not a Draft"):
            await publish_draft(conn, draft_id)

        half = money(draft["total"] / 2)
        await add_payment(conn, draft_id, half, datetime(2025, 1, 16, 10, 0), "stripe")
        assert (await fetch_invoice(conn, draft_id))["status"] == "Unpaid"  # partial payment
        paid_at = datetime(2025, 1, 17, 11, 30, 5)
        await mark_paid(conn, draft_id, paid_at, "paypal", transid="TX1")
        paid = await fetch_invoice(conn, draft_id)
        assert (paid["status"], paid["datepaid"], paid["invoicenum"]) == ("Paid", paid_at, "")
        payments = await fetch_all(
            conn, "SELECT amountin, gateway FROM tblaccounts WHERE invoiceid = %s ORDER BY id", (draft_id,)
        )
        assert [row["amountin"] for row in payments] == [half, draft["total"] - half]
        assert payments[-1]["gateway"] == "paypal"

        await set_status(conn, draft_id, "Refunded", datetime(2025, 1, 20, 8, 0))
        refunded = await fetch_invoice(conn, draft_id)
        assert refunded["status"] == "Refunded" and refunded["date_refunded"] == datetime(2025, 1, 20, 8, 0)
        (refund,) = await fetch_all(
            conn, "SELECT amountout FROM tblaccounts WHERE invoiceid = %s AND amountout > 0", (draft_id,)
        )
        assert refund["amountout"] == draft["total"]

        note_id = await create_invoice(conn, store.new_invoice(status="Refunded", credit_note=False))
        links = await fetch_all(
            conn,
            "SELECT id, refundid, amountout FROM tblaccounts WHERE invoiceid = %s ORDER BY id",
            (note_id,),
        )
        assert links[1]["refundid"] == links[0]["id"]


async def test_whmcs_own_numbering_when_switched_on(whmcs_database_factory, store: StoreGenerator) -> None:
    url = whmcs_database_factory(store)
    async with connection(url) as conn:
        await set_config(conn, "SequentialInvoiceNumbering", "on")
        await set_config(conn, "SequentialInvoiceNumberValue", "0041")
        await set_config(conn, "ConcordTestSetting", "x")  # a new setting is inserted
        assert await get_config(conn, "ConcordTestSetting") == "x"
        first = await create_invoice(conn, store.new_invoice())
        second = await create_invoice(conn, store.new_invoice())
        await mark_paid(conn, first, datetime(2025, 2, 1, 12, 0))
        await mark_paid(conn, second, datetime(2025, 2, 1, 12, 1))
        numbers = [(await fetch_invoice(conn, invoice_id))["invoicenum"] for invoice_id in (first, second)]
        assert numbers == ["2025-0041", "2025-0042"]
        assert await get_config(conn, "SequentialInvoiceNumberValue") == "0043"

        await set_config(conn, "TaxCustomInvoiceNumbering", "on")
        draft = await create_invoice(conn, store.new_invoice(status="Draft"))
        await publish_draft(conn, draft)
        assert (await fetch_invoice(conn, draft))["invoicenum"] == "1"


async def test_invoices_created_and_paid_concurrently(whmcs_database_factory, store: StoreGenerator) -> None:
    url = whmcs_database_factory(store)
    documents = [store.new_invoice(date=date(2025, 1, 16)) for _ in range(12)]

    async def create_then_pay(rows) -> int:
        async with connection(url) as conn:
            invoice_id = await create_invoice(conn, rows)
            await mark_paid(conn, invoice_id, datetime(2025, 1, 16, 12, 0))
            return invoice_id

    ids = await asyncio.gather(*(create_then_pay(rows) for rows in documents))
    assert len(set(ids)) == len(ids)
    async with connection(url) as conn:
        statuses = await fetch_all(
            conn, f"SELECT status FROM tblinvoices WHERE id IN ({', '.join(map(str, ids))})"
        )
    assert Counter(row["status"] for row in statuses) == {"Paid": len(ids)}


async def test_three_stores_and_a_client_that_moves(whmcs_database_factory) -> None:
    stores = [StoreGenerator(1, name, clients=12, invoices=60) for name in ("eu", "us", "uk")]
    urls = [whmcs_database_factory(generator) for generator in stores]
    assert len(set(urls)) == 3
    generator, url = stores[0], urls[0]
    moved = generator.relocate_client(1, date(2025, 1, 15))
    async with connection(url) as conn:
        await update_client(conn, moved)
        (client,) = await fetch_all(conn, "SELECT country, city FROM tblclients WHERE id = 1")
        assert (client["country"], client["city"]) == (moved["country"], moved["city"])
        invoice_id = await create_invoice(conn, generator.new_invoice(client_id=1))
        (snapshot,) = await fetch_all(
            conn, "SELECT clientsdetails FROM mod_invoicedata WHERE invoiceid = %s", (invoice_id,)
        )
    assert json.loads(snapshot["clientsdetails"])["country"] == moved["country"]
