"""The billing-error checks on snapshots (pure), with WHMCS's own figures and rounding."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from coordinator.monitors.billing_checks import (
    ITEMS_SUBTOTAL,
    PAID_WITHOUT_DATE,
    TAX,
    TAX2,
    TOTAL_SIGN,
    DocumentRef,
    TaxSettings,
    date_order_finding,
    document_date,
    duplicate_numbers,
    snapshot_findings,
    vat_to_check,
)
from getfeed.snapshot import document
from simulator.generator import StoreGenerator

INVOICE = DocumentRef("eu-1", "invoice", "1042", "INV-2026-00050")
CREDIT_NOTE = DocumentRef("eu-1", "creditnote", "1043", "CN-2026-00007")
EXCLUSIVE_ON_TOTAL = TaxSettings(enabled=True, inclusive=False, compound=False, per_line=False)
EXCLUSIVE_PER_LINE = TaxSettings(enabled=True, inclusive=False, compound=False, per_line=True)
UNKNOWN = TaxSettings()


def snapshot(
    items: list[tuple[str, bool]],
    *,
    subtotal: str,
    tax: str = "0.00",
    tax2: str = "0.00",
    rate: str = "0.00",
    rate2: str = "0.00",
    total: str | None = None,
    status: str = "Unpaid",
    date_paid: str = "",
    exempt: bool = False,
    country: str = "NL",
    vat: str = "",
) -> dict[str, Any]:
    """A snapshot as the agent sends it (amounts as strings with two decimals)."""
    if total is None:
        total = f"{float(subtotal) + float(tax) + float(tax2):.2f}"
    return {
        "ClientData": {
            "UserID": 7,
            "CompanyName": "Example BV",
            "ClientName": "Ann Smit",
            "Country": country,
            "State": "",
            "PostCode": "1011 AB",
            "TaxExempt": "1" if exempt else "0",
            "TaxID": vat,
            "CustomFields": [],
        },
        "DocData": {
            "Type": "Invoice",
            "ID": 1042,
            "Num": "INV-2026-00050",
            "Status": status,
            "Date": "2026-03-02",
            "DueDate": "2026-03-16",
            "DatePaid": date_paid,
            "Subtotal": subtotal,
            "Credit": "0.00",
            "Tax": tax,
            "Tax2": tax2,
            "TaxRate": rate,
            "TaxRate2": rate2,
            "Total": total,
            "PaymentMethod": "paypal",
            "Items": [
                {
                    "ID": n,
                    "Type": "Hosting",
                    "RelID": 0,
                    "Description": "VPS",
                    "Amount": amount,
                    "Taxed": taxed,
                }
                for n, (amount, taxed) in enumerate(items, 1)
            ],
        },
    }


def test_a_generated_store_has_no_billing_errors() -> None:
    """Hundreds of documents whose figures WHMCS's way computed (exclusive tax on the total;
    Québec's 5 % + 9.975 %, seen as 9.98 in the snapshot; tax-exempt clients, credit notes,
    credit): no finding, whether the store's settings are known or not."""
    store = StoreGenerator(3, "eu-1", clients=60, invoices=400).base()
    items: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in store["tblinvoiceitems"]:
        items[row["invoiceid"]].append(row)
    clients = {row["id"]: row for row in store["tblclients"]}
    invoicedata = {row["invoiceid"]: row for row in store["mod_invoicedata"]}
    rates = set()
    for invoice in store["tblinvoices"]:
        doctype = "creditnote" if invoice["total"] < 0 else "invoice"
        snap = document(
            doctype,
            "X-1",
            invoice,
            items[invoice["id"]],
            clients[invoice["userid"]],
            invoicedata.get(invoice["id"]),
            [],
        )
        rates.add(snap["DocData"]["TaxRate2"])
        ref = DocumentRef("eu-1", doctype, str(invoice["id"]), "X-1")
        assert snapshot_findings(ref, snap, EXCLUSIVE_ON_TOTAL) == {}
        assert snapshot_findings(ref, snap, UNKNOWN) == {}
    assert "9.98" in rates  # the three-decimal rate was among them


def test_items_that_do_not_sum_to_the_subtotal() -> None:
    snap = snapshot([("40.00", False), ("59.90", False)], subtotal="100.00")
    found = snapshot_findings(INVOICE, snap, EXCLUSIVE_ON_TOTAL)
    assert set(found) == {ITEMS_SUBTOTAL}
    message = found[ITEMS_SUBTOTAL]
    assert "store eu-1" in message and "invoice 1042 (INV-2026-00050)" in message
    assert "Subtotal is 100.00" in message and "sum to 99.90" in message


def test_tax_rounds_half_away_from_zero_like_php() -> None:
    # 0.50 at 21 % is 0.105: WHMCS charges 0.11 (banker's rounding would give 0.10).
    right = snapshot([("0.50", True)], subtotal="0.50", tax="0.11", rate="21.00")
    assert snapshot_findings(INVOICE, right, EXCLUSIVE_ON_TOTAL) == {}
    wrong = snapshot([("0.50", True)], subtotal="0.50", tax="0.10", rate="21.00")
    found = snapshot_findings(INVOICE, wrong, EXCLUSIVE_ON_TOTAL)
    assert set(found) == {TAX}
    assert "Tax is 0.10" in found[TAX] and "0.50 at 21.00 %" in found[TAX]
    assert "gives 0.11" in found[TAX]
    # A credit note, negated: -0.105 rounds to -0.11.
    credit = snapshot([("-0.50", True)], subtotal="-0.50", tax="-0.11", rate="21.00")
    assert snapshot_findings(CREDIT_NOTE, credit, EXCLUSIVE_ON_TOTAL) == {}


def test_per_line_and_on_the_total_round_differently() -> None:
    # Three items of 0.35 at 19 %: per line 3 x round(0.0665) = 0.21; on the total
    # round(1.05 x 0.19 = 0.1995) = 0.20.
    lines = [("0.35", True)] * 3
    per_line = snapshot(lines, subtotal="1.05", tax="0.21", rate="19.00")
    on_total = snapshot(lines, subtotal="1.05", tax="0.20", rate="19.00")
    assert snapshot_findings(INVOICE, per_line, EXCLUSIVE_PER_LINE) == {}
    assert snapshot_findings(INVOICE, on_total, EXCLUSIVE_ON_TOTAL) == {}
    assert set(snapshot_findings(INVOICE, on_total, EXCLUSIVE_PER_LINE)) == {TAX}
    assert set(snapshot_findings(INVOICE, per_line, EXCLUSIVE_ON_TOTAL)) == {TAX}
    # Settings not reported: either way is WHMCS's.
    assert snapshot_findings(INVOICE, per_line, UNKNOWN) == {}
    assert snapshot_findings(INVOICE, on_total, UNKNOWN) == {}


def test_compound_level_two_tax_at_a_three_decimal_rate() -> None:
    # 100.00 at 5 % then 9.975 % (the snapshot shows 9.98). Compound: Tax2 on 105.00 =
    # 10.47375 -> 10.47 (at 9.98 it would be 10.48). Not compound: 9.975 -> 9.98.
    compound = TaxSettings(enabled=True, inclusive=False, compound=True, per_line=False)
    stacked = snapshot(
        [("100.00", True)], subtotal="100.00", tax="5.00", tax2="10.47", rate="5.00", rate2="9.98"
    )
    side_by_side = snapshot(
        [("100.00", True)], subtotal="100.00", tax="5.00", tax2="9.98", rate="5.00", rate2="9.98"
    )
    assert snapshot_findings(INVOICE, stacked, compound) == {}
    assert snapshot_findings(INVOICE, side_by_side, EXCLUSIVE_ON_TOTAL) == {}
    assert set(snapshot_findings(INVOICE, stacked, EXCLUSIVE_ON_TOTAL)) == {TAX2}
    found = snapshot_findings(INVOICE, side_by_side, compound)
    assert set(found) == {TAX2} and "Tax2 is 9.98" in found[TAX2]


def test_inclusive_tax_takes_the_tax_out_of_the_items() -> None:
    inclusive = TaxSettings(enabled=True, inclusive=True, compound=False, per_line=False)
    # 10.00 including 21 %: 10 / 1.21 x 0.21 = 1.7355 -> 1.74; Subtotal 8.26; Total 10.00.
    snap = snapshot([("10.00", True)], subtotal="8.26", tax="1.74", rate="21.00")
    assert snapshot_findings(INVOICE, snap, inclusive) == {}
    assert snapshot_findings(INVOICE, snap, UNKNOWN) == {}
    found = snapshot_findings(INVOICE, snap, EXCLUSIVE_ON_TOTAL)
    assert set(found) == {ITEMS_SUBTOTAL, TAX}


def test_tax_on_a_tax_exempt_client_or_with_tax_support_off() -> None:
    exempt = snapshot([("100.00", True)], subtotal="100.00", tax="21.00", rate="21.00", exempt=True)
    found = snapshot_findings(INVOICE, exempt, EXCLUSIVE_ON_TOTAL)
    assert set(found) == {TAX} and "tax exempt" in found[TAX] and "gives 0.00" in found[TAX]
    untaxed = snapshot([("100.00", True)], subtotal="100.00", rate="21.00")
    assert set(snapshot_findings(INVOICE, untaxed, EXCLUSIVE_ON_TOTAL)) == {TAX}
    tax_off = TaxSettings(enabled=False, inclusive=False, compound=False, per_line=False)
    assert snapshot_findings(INVOICE, untaxed, tax_off) == {}


def test_the_sign_of_the_total() -> None:
    refund = snapshot([("-20.00", False)], subtotal="-20.00")
    assert snapshot_findings(CREDIT_NOTE, refund, UNKNOWN) == {}
    found = snapshot_findings(INVOICE, refund, UNKNOWN)
    assert set(found) == {TOTAL_SIGN} and "negative Total, -20.00" in found[TOTAL_SIGN]
    charge = snapshot([("20.00", False)], subtotal="20.00")
    found = snapshot_findings(CREDIT_NOTE, charge, UNKNOWN)
    assert set(found) == {TOTAL_SIGN}
    assert "credit note 1043 (CN-2026-00007)" in found[TOTAL_SIGN]
    assert "positive Total, 20.00" in found[TOTAL_SIGN]
    zero = snapshot([], subtotal="0.00")
    assert snapshot_findings(CREDIT_NOTE, zero, UNKNOWN) == {}
    assert snapshot_findings(INVOICE, zero, UNKNOWN) == {}


def test_paid_needs_a_payment_date() -> None:
    unpaid_date = snapshot([("9.00", False)], subtotal="9.00", status="Paid")
    found = snapshot_findings(INVOICE, unpaid_date, UNKNOWN)
    assert set(found) == {PAID_WITHOUT_DATE} and "Total 9.00" in found[PAID_WITHOUT_DATE]
    paid = snapshot([("9.00", False)], subtotal="9.00", status="Paid", date_paid="2026-03-02 10:11:12")
    assert snapshot_findings(INVOICE, paid, UNKNOWN) == {}


def test_a_number_dated_before_the_previous_one() -> None:
    previous = DocumentRef("eu-1", "invoice", "1041", "INV-2026-00049")
    message = date_order_finding(INVOICE, "2026-03-01", previous, "2026-03-02", "invoice", "2026")
    assert message is not None
    assert "invoice 1042 (INV-2026-00050) is dated 2026-03-01" in message
    assert "invoice 1041 (INV-2026-00049), dated 2026-03-02" in message
    assert date_order_finding(INVOICE, "2026-03-02", previous, "2026-03-02", "invoice", "2026") is None
    assert date_order_finding(INVOICE, "", previous, "2026-03-02", "invoice", "2026") is None


@pytest.mark.parametrize(
    ("country", "vat", "expected"),
    [
        ("NL", "NL123456789B01", ("NL123456789B01", ("NL", "123456789B01"))),
        ("DE", "123456789", ("123456789", ("DE", "123456789"))),
        ("GR", "EL094259216", ("EL094259216", ("EL", "094259216"))),
        ("NL", "not a number!", ("not a number!", None)),  # VIES cannot accept it
        ("NL", "", None),  # a consumer
        ("US", "12-3456789", None),  # outside the EU
    ],
)
def test_which_vat_numbers_go_to_vies(country: str, vat: str, expected: Any) -> None:
    assert vat_to_check(snapshot([], subtotal="0.00", country=country, vat=vat)) == expected


def test_duplicate_numbers_as_the_agent_reports_them() -> None:
    assert duplicate_numbers({"DuplicateNumbers": {"INV-58": [12, 40]}}) == {"INV-58": [12, 40]}
    assert duplicate_numbers({"DuplicateNumbers": {}}) == {}
    assert duplicate_numbers({"SequentialInvoiceNumbering": ""}) is None  # an older agent
    assert duplicate_numbers(None) is None


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"ClientData": [], "DocData": "x"},
        {
            "ClientData": {"CustomFields": 5, "Country": 7, "TaxID": ["a"]},
            "DocData": {"Items": 5, "Subtotal": "abc", "Tax": None, "TaxRate": "1e400", "Date": 3},
        },
        {
            "ClientData": {},
            "DocData": {
                "TaxRate": "-100.00",
                "TaxRate2": "-50",
                "Tax": "1.00",
                "Items": [{"Amount": "10.00", "Taxed": True}],
            },
        },
        {
            "ClientData": {"Country": "DE", "CustomFields": [1, {"fieldname": None, "value": 2}]},
            "DocData": {"Items": [1, "x", {"Amount": "NaN", "Taxed": "yes"}], "Status": ["Paid"]},
        },
    ],
)
def test_any_json_snapshot_is_checked_without_failing(document: dict[str, Any]) -> None:
    """The monitor checks whatever a store sent: a snapshot of an unexpected shape gives
    findings or none, never an exception that would hold the monitor at that event."""
    for settings in (UNKNOWN, EXCLUSIVE_PER_LINE, TaxSettings(inclusive=True, compound=True)):
        assert isinstance(snapshot_findings(INVOICE, document, settings), dict)
    assert vat_to_check(document) is None or isinstance(vat_to_check(document), tuple)
    assert isinstance(document_date(document), str)
