"""The SOAP contract the fake holds the client to, the customer codes and the schedule."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time

import aiohttp
import pytest

from coordinator.accounting.posting import customer_code, invoice_lines, store_prefix
from coordinator.accounting.schedule import next_run
from coordinator.settings import load_settings
from tests.support.fake_kashflow import FakeKashFlow
from tests.support.kashflow_ledger import serve_fake, snapshot

ENVELOPE = (
    '<?xml version="1.0" encoding="utf-8"?><soap:Envelope '
    'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soap:Body>{}</soap:Body>'
    "</soap:Envelope>"
)
LINE = (
    "<Quantity>1</Quantity><Description>Hosting</Description><Rate>10</Rate>"
    "<ChargeType>0</ChargeType><VatRate>20</VatRate><VatAmount>2</VatAmount>"
    "<ProductID>0</ProductID><Sort>1</Sort><ProjID>0</ProjID><LineID>0</LineID>"
)
INVOICE = (
    '<InsertInvoice xmlns="KashFlow"><UserName>concord</UserName>'
    "<Password>secret</Password><Inv><InvoiceDBID>0</InvoiceDBID>"
    "<InvoiceNumber>0</InvoiceNumber><InvoiceDate>2026-03-01T00:00:00</InvoiceDate>"
    "<DueDate>2026-03-01T00:00:00</DueDate><CustomerID>{customer}</CustomerID>"
    "<Paid>0</Paid><CustomerReference>INV-1</CustomerReference>"
    "<SuppressTotal>0</SuppressTotal><ProjectID>0</ProjectID>"
    "<CurrencyCode>GBP</CurrencyCode><ExchangeRate>1</ExchangeRate>"
    "<Lines>{lines}</Lines><NetAmount>0</NetAmount><VATAmount>0</VATAmount>"
    "<AmountPaid>0</AmountPaid>"
    "<UseCustomDeliveryAddress>false</UseCustomDeliveryAddress></Inv></InsertInvoice>"
)


@pytest.fixture
async def fake_url() -> AsyncIterator[tuple[FakeKashFlow, str]]:
    fake = FakeKashFlow()
    fake.customers[1] = {"CustomerID": "1", "Code": "ALPHAC1"}
    async with serve_fake(fake) as url:
        yield fake, url


def status_of(answer: str) -> tuple[str, str]:
    """Status and StatusDetail of an answer."""
    root = ET.fromstring(answer)
    return (root.findtext(".//{KashFlow}Status") or "", root.findtext(".//{KashFlow}StatusDetail") or "")


async def post(url: str, body: str, action: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=ENVELOPE.format(body).encode(),
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": action},
        ) as resp,
    ):
        return resp.status, await resp.text()


async def test_fake_accepts_the_wsdl_form_and_rejects_what_kashflow_rejects(fake_url) -> None:
    fake, url = fake_url
    typed = f'<anyType xsi:type="InvoiceLine">{LINE}</anyType>'
    status, text = await post(url, INVOICE.format(customer=1, lines=typed), '"KashFlow/InsertInvoice"')
    assert status == 200 and status_of(text) == ("OK", "")
    assert len(fake.invoices) == 1

    untyped = f"<anyType>{LINE}</anyType>"
    swapped = INVOICE.replace(
        "<Paid>0</Paid><CustomerReference>INV-1</CustomerReference>",
        "<CustomerReference>INV-1</CustomerReference><Paid>0</Paid>",
    )
    refused = [
        (INVOICE.format(customer=1, lines=untyped), '"KashFlow/InsertInvoice"', "typed line"),
        (swapped.format(customer=1, lines=typed), '"KashFlow/InsertInvoice"', "out of order"),
        (INVOICE.format(customer=1, lines=typed), '"KashFlow/InsertCustomer"', "SOAPAction"),
        (
            INVOICE.format(customer=1, lines=typed).replace(' xmlns="KashFlow"', ""),
            '"KashFlow/InsertInvoice"',
            "unexpected element",
        ),
        (
            INVOICE.format(customer=1, lines=typed).replace("<Paid>0</Paid>", ""),
            '"KashFlow/InsertInvoice"',
            "lacks required Paid",
        ),
    ]
    for body, action, reason in refused:
        status, text = await post(url, body, action)
        assert status == 500 and "Server was unable to read request" in text, reason
        assert reason in text, text
    assert len(fake.invoices) == 1


async def test_fake_keeps_kashflow_business_rules(fake_url) -> None:
    fake, url = fake_url
    typed = f'<anyType xsi:type="InvoiceLine">{LINE}</anyType>'
    status, text = await post(url, INVOICE.format(customer=99, lines=typed), '"KashFlow/InsertInvoice"')
    assert status == 200 and status_of(text) == ("NO", "Customer not found")
    assert ET.fromstring(text).findtext(".//{KashFlow}InsertInvoiceResult") == "0"
    assert fake.invoices == {}


def test_customer_codes_are_letters_and_digits_and_unique_per_store() -> None:
    assert store_prefix("shop-1.example", []) == "SHOP1EXAMPLE"
    assert store_prefix("shop1", ["SHOP1"]) == "SHOP12"
    assert store_prefix("1st store", []) == "S1STSTORE"
    assert store_prefix("---", []) == "S"
    codes = {customer_code("SHOP1", 25), customer_code("SHOP12", 5), customer_code("SHOP1", 2)}
    assert len(codes) == 3 and all(code.isalnum() for code in codes)


def test_invoice_lines_take_both_tax_levels_and_round_vat_per_line() -> None:
    data = snapshot(1, "INV-1", items=(("A", "9.99", True), ("B", "1.00", False)), tax_rate="21.00")[
        "DocData"
    ]
    data["TaxRate2"] = "1.00"
    client = {"TaxExempt": "0"}
    assert [(str(line["VatRate"]), str(line["VatAmount"])) for line in invoice_lines(data, client)] == [
        ("22.00", "2.20"),
        ("-1", "0"),
    ]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 6, 1, 23, 59, tzinfo=UTC), datetime(2026, 6, 2, 0, 0, tzinfo=UTC)),  # 02:00 CEST
        (datetime(2026, 6, 2, 0, 0, tzinfo=UTC), datetime(2026, 6, 3, 0, 0, tzinfo=UTC)),
        (datetime(2026, 1, 10, 12, 0, tzinfo=UTC), datetime(2026, 1, 11, 1, 0, tzinfo=UTC)),
        # 02:00 does not exist on 29 March (clocks go 02:00 -> 03:00): the run is at 03:00.
        (datetime(2026, 3, 28, 12, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    ],
)
def test_daily_run_time_is_wall_clock_in_the_configured_zone(now: datetime, expected: datetime) -> None:
    assert next_run(now, time(2, 0), "Europe/Amsterdam") == expected


def test_mappings_load_from_the_settings_file_and_bad_ones_are_refused(tmp_path) -> None:
    config = tmp_path / "concord.toml"
    config.write_text(
        '[kashflow_gateways.paypal]\nmethod = 2\naccount = 7\n[kashflow_currencies.shop-uk]\n1 = "GBP"\n'
    )
    settings = load_settings(config)
    assert (settings.kashflow_gateways["paypal"].method, settings.kashflow_gateways["paypal"].account) == (
        2,
        7,
    )
    assert settings.kashflow_currencies == {"shop-uk": {"1": "GBP"}}
    assert (settings.kashflow_limit, settings.kashflow_daily_at) == (200, time(2, 0))
    assert settings.kashflow_url == "https://securedwebapp.com/api/service.asmx"
    for bad, where in (
        ("[kashflow_gateways.paypal]\nmethod = 0\naccount = 7\n", "method"),
        ("[kashflow_gateways.paypal]\nmethod = 2\n", "account"),
        ('[kashflow_currencies.shop]\n1 = "pounds"\n', "kashflow_currencies"),
    ):
        config.write_text(bad)
        with pytest.raises(ValueError, match=where):
            load_settings(config)
