"""What a paid invoice of the ledger becomes in KashFlow: customer, invoice, one payment per
WHMCS transaction (a refund as a negative payment). Pure.

Input is the document snapshot the ledger keeps (ClientData / DocData, see
getfeed/snapshot.py); output is the fields of KashFlow's ``Customer``,
``Invoice``, ``InvoiceLine`` and ``Payment`` types, named as the WSDL names them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from getfeed.europe import client_territory

EXEMPT = Decimal(-1)  # KashFlow's VAT rate of an exempt line
CENT = Decimal("0.01")
_NOT_ALNUM = re.compile(r"[^A-Z0-9]")

# Required elements of Customer that the sync has nothing to say about.
_CUSTOMER_DEFAULTS: dict[str, Any] = {
    "Source": 0,
    "Discount": 0,
    "ShowDiscount": False,
    "PaymentTerms": 0,
    **{f"CheckBox{n}": 0 for n in range(1, 21)},
}


def store_prefix(name: str, taken: Iterable[str]) -> str:
    """A customer-code prefix for a store: its name's letters and digits, starting with a
    letter, made unique against the prefixes already given to other stores."""
    base = _NOT_ALNUM.sub("", name.upper())[:12]
    if not base[:1].isalpha():
        base = f"S{base}"[:12]
    used = set(taken)
    candidates = (base if n == 1 else f"{base}{n}" for n in range(1, len(used) + 2))
    return next(c for c in candidates if c not in used)


def customer_code(prefix: str, user_id: int) -> str:
    """Letters and digits only (KashFlow refuses anything else), stable per store and client.
    The client id follows the last ``C``; prefixes are unique, so codes are."""
    return f"{prefix}C{user_id}"


# KashFlow keeps UK books: its home is the UK VAT area (the Isle of Man belongs to it).
_KASHFLOW_HOME = frozenset(("GB", "UK", "IM"))


def ec_flags(client: Mapping[str, Any]) -> dict[str, int]:
    """KashFlow's ``EC`` (inside the EU VAT area) and ``OutsideEC`` (neither there nor at
    home), from the EU table behind the Get feed: an outermost region such as the Canary
    Islands is outside the VAT area, Monaco inside it. No country: neither flag."""
    country = str(client.get("Country") or "").strip().upper()
    place = client_territory(client)
    inside = place is not None and place.vat_area
    outside = bool(country) and not inside and country not in _KASHFLOW_HOME
    return {"EC": int(inside), "OutsideEC": int(outside)}


def customer_details(client: Mapping[str, Any], code: str, currency_id: int) -> dict[str, Any]:
    """The customer fields the sync owns; a change of any of them is sent as an update."""
    person = str(client.get("ClientName") or "")
    return {
        "Code": code,
        "Name": str(client.get("CompanyName") or person or client.get("Email") or code),
        "Contact": person,
        "Telephone": str(client.get("PhoneNumber") or ""),
        "Email": str(client.get("Email") or ""),
        "Address1": str(client.get("Address1") or ""),
        "Address2": str(client.get("Address2") or ""),
        "Address3": str(client.get("City") or ""),
        "Address4": str(client.get("State") or ""),
        "CountryCode": str(client.get("Country") or ""),
        "Postcode": str(client.get("PostCode") or ""),
        "CurrencyID": currency_id,
        "ContactFirstName": str(client.get("Firstname") or ""),
        "ContactLastName": str(client.get("Lastname") or ""),
        "VATNumber": str(client.get("TaxID") or ""),
        **ec_flags(client),
    }


def customer_record(details: Mapping[str, Any], customer_id: int, now: datetime) -> dict[str, Any]:
    """A whole ``Customer``: 0 as the id inserts, KashFlow's id updates."""
    stamp = now.replace(microsecond=0, tzinfo=None).isoformat()
    return {**_CUSTOMER_DEFAULTS, **details, "CustomerID": customer_id, "Created": stamp, "Updated": stamp}


def invoice_lines(doc: Mapping[str, Any], client: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One line per WHMCS item at its net amount, and the credit applied as a last line.

    VAT: the invoice's rate (both WHMCS tax levels added) on taxed items; -1 (exempt) on
    untaxed items and for a tax-exempt client. The credit line is exempt: credit pays part
    of the gross total, it is not a supply.
    """
    exempt_client = str(client.get("TaxExempt") or "0") == "1"
    rate = Decimal(doc.get("TaxRate") or 0) + Decimal(doc.get("TaxRate2") or 0)
    lines = []
    for sort, item in enumerate(doc.get("Items") or [], start=1):
        net = Decimal(item.get("Amount") or 0)
        vat_rate = rate if item.get("Taxed") and not exempt_client else EXEMPT
        vat = (net * vat_rate / 100).quantize(CENT) if vat_rate >= 0 else Decimal(0)
        lines.append(_line(sort, str(item.get("Description") or "Item"), net, vat_rate, vat))
    credit = Decimal(doc.get("Credit") or 0)
    if credit > 0:
        lines.append(_line(len(lines) + 1, "Credit applied", -credit, EXEMPT, Decimal(0)))
    return lines


def _line(sort: int, description: str, rate: Decimal, vat_rate: Decimal, vat: Decimal) -> dict[str, Any]:
    return {
        "Quantity": Decimal(1),
        "Description": description,
        "Rate": rate,
        "ChargeType": 0,
        "VatRate": vat_rate,
        "VatAmount": vat,
        "ProductID": 0,
        "Sort": sort,
        "ProjID": 0,
        "LineID": 0,
    }


def invoice_header(
    doc: Mapping[str, Any], formatted: str, customer_id: int, currency: str, exchange_rate: Decimal
) -> dict[str, Any]:
    """InvoiceNumber 0: KashFlow gives the next of its own numbers; ours is the customer
    reference, which is also how a possibly inserted invoice is found again."""
    issued = _day(doc.get("Date")) or _day(doc.get("DatePaid"))
    return {
        "InvoiceDBID": 0,
        "InvoiceNumber": 0,
        "InvoiceDate": issued,
        "DueDate": _day(doc.get("DueDate")) or issued,
        "CustomerID": customer_id,
        "Paid": 0,
        "CustomerReference": formatted,
        "SuppressTotal": 0,
        "ProjectID": 0,
        "CurrencyCode": currency,
        "ExchangeRate": exchange_rate,
        "NetAmount": 0,
        "VATAmount": 0,
        "AmountPaid": 0,
        "UseCustomDeliveryAddress": False,
    }


@dataclass(frozen=True)
class Movement:
    """Money in (a payment) or out (a refund) of one WHMCS transaction: one KashFlow payment."""

    transaction_id: int  # tblaccounts.id; 0: the total of a snapshot without transactions
    direction: Literal["in", "out"]
    amount: Decimal  # what KashFlow's PayAmount gets: a refund is negative
    date: str  # xsd:dateTime
    gateway: str
    fees: Decimal
    gateway_reference: str  # the gateway's own transaction id


def movements(snapshot: Mapping[str, Any]) -> list[Movement]:
    """The document's payments and refunds in WHMCS's order (by transaction id), from the
    ``Transactions`` the agent reports with the snapshot (WHMCS's ``tblaccounts``); a
    snapshot without them (an older agent) has its whole payment only."""
    if "Transactions" not in snapshot:
        whole = whole_payment(snapshot)
        return [whole] if whole else []
    data = snapshot.get("DocData") or {}
    out = []
    for row in sorted(snapshot["Transactions"], key=lambda t: int(t["ID"])):
        when = _moment(row.get("Date")) or _day(data.get("Date"))
        gateway = str(row.get("Gateway") or data.get("PaymentMethod") or "")
        common = (when, gateway, Decimal(row.get("Fees") or 0), str(row.get("TransID") or ""))
        if Decimal(row.get("AmountIn") or 0) > 0:
            out.append(Movement(int(row["ID"]), "in", Decimal(row["AmountIn"]), *common))
        if Decimal(row.get("AmountOut") or 0) > 0:
            out.append(Movement(int(row["ID"]), "out", -Decimal(row["AmountOut"]), *common))
    return out


def whole_payment(snapshot: Mapping[str, Any]) -> Movement | None:
    """One payment of the ``Total`` on ``DatePaid`` once paid (transaction 0): what the sync
    posted before WHMCS's transactions were reported."""
    data = snapshot.get("DocData") or {}
    total = Decimal(data.get("Total") or 0)
    if data.get("Status") not in ("Paid", "Refunded") or total <= 0:
        return None
    return Movement(
        0,
        "in",
        total,
        _moment(data.get("DatePaid")) or _day(data.get("Date")),
        str(data.get("PaymentMethod") or ""),
        Decimal(0),
        "",
    )


def movement_key(formatted: str, movement: Movement) -> str:
    """What a payment's note starts with: finds it among the invoice's payments after a
    crash. Transaction 0 keeps the note of the sync's one-payment-per-invoice days."""
    if movement.transaction_id == 0:
        return f"{formatted} paid via {movement.gateway or 'unknown gateway'}"
    kind = "payment" if movement.direction == "in" else "refund"
    return f"{formatted} WHMCS {kind} {movement.transaction_id}"


def is_note_of(note: str, key: str) -> bool:
    return note == key or note.startswith(f"{key} ")


def movement_payment(
    movement: Movement, formatted: str, invoice_number: int, method: int, account: int
) -> dict[str, Any]:
    """KashFlow's ``Payment`` has no fee field: the gateway's fees and its transaction id
    are named in the note, for the accountant to book the fee."""
    note = movement_key(formatted, movement)
    if movement.transaction_id:
        note += f" via {movement.gateway or 'unknown gateway'}"
    if movement.gateway_reference:
        note += f", gateway transaction {movement.gateway_reference}"
    if movement.fees:
        note += f", gateway fees {movement.fees}"
    return {
        "PayID": 0,
        "PayInvoice": invoice_number,
        "PayDate": movement.date,
        "PayNote": note,
        "PayMethod": method,
        "PayAccount": account,
        "PayAmount": movement.amount,
    }


def _moment(value: Any) -> str:
    text = str(value or "")
    return text.replace(" ", "T") if len(text) == 19 else ""


def _day(value: Any) -> str:
    text = str(value or "")[:10]
    return f"{text}T00:00:00" if len(text) == 10 else ""
