"""The document snapshot (ClientData / DocData) of the WebService Get contract. Pure.

Built by the agent from WHMCS rows when a number is confirmed or a document changes, and
stored in the ledger. Field names, types and formats are the contract's: amounts are
strings with two decimals and a dot, dates ``YYYY-MM-DD``, ``DatePaid``
``YYYY-MM-DD hh:mm:ss`` (empty when unpaid), ``TaxExempt`` "1"/"0", ``Taxed`` a boolean,
strings trimmed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

DOC_TYPES = {"invoice": "Invoice", "creditnote": "CreditNote"}

_CLIENT_FIELDS = (  # contract name, WHMCS column
    ("Firstname", "firstname"), ("Lastname", "lastname"), ("CompanyName", "companyname"),
    ("Email", "email"), ("Address1", "address1"), ("Address2", "address2"), ("City", "city"),
    ("State", "state"), ("PostCode", "postcode"), ("Country", "country"),
    ("PhoneNumber", "phonenumber"),
)


def amount(value: Any) -> str:
    try:
        number = Decimal(str(value if value not in (None, "") else 0))
    except InvalidOperation:
        number = Decimal(0)
    return format(number.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), "f")


def text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raw = text(value)[:10]
    return "" if not raw or raw.startswith("0000") else raw


def moment(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    raw = text(value)[:19]
    return "" if not raw or raw.startswith("0000") else raw


def snapshot_client(invoicedata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The client details saved with the invoice, or None when absent or not JSON (rows of
    very old WHMCS versions are PHP-serialized; the live client stands in for them)."""
    if not invoicedata:
        return None
    try:
        details = json.loads(invoicedata.get("clientsdetails") or "")
    except (TypeError, ValueError):
        return None
    return details if isinstance(details, dict) else None


def snapshot_custom_fields(invoicedata: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    if not invoicedata:
        return None
    try:
        fields = json.loads(invoicedata.get("customfields") or "")
    except (TypeError, ValueError):
        return None
    return fields if isinstance(fields, list) else None


def client_data(
    user_id: int, live: Mapping[str, Any], invoicedata: Mapping[str, Any] | None,
    live_custom_fields: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    source = snapshot_client(invoicedata) or live
    fields = snapshot_custom_fields(invoicedata)
    if fields is None:
        fields = list(live_custom_fields)
    out: dict[str, Any] = {"UserID": user_id}
    for name, column in _CLIENT_FIELDS:
        out[name] = text(source.get(column))
    out["Country"] = out["Country"].upper()
    out["ClientName"] = " ".join(p for p in (out["Firstname"], out["Lastname"]) if p)
    currency = source.get("currency", live.get("currency"))
    out["Currency"] = int(currency) if str(currency or "").strip().isdigit() else 0
    exempt = text(source.get("taxexempt", live.get("taxexempt"))).lower()
    out["TaxExempt"] = "1" if exempt in ("1", "on", "true", "yes") else "0"
    out["CustomFields"] = [
        {"id": int(f.get("id") or 0), "fieldname": text(f.get("fieldname")),
         "value": text(f.get("value"))}
        for f in fields if isinstance(f, Mapping)
    ]
    return out


def doc_data(doctype: str, invoice: Mapping[str, Any], items: Sequence[Mapping[str, Any]],
             number: str) -> dict[str, Any]:
    return {
        "Type": DOC_TYPES[doctype],
        "ID": int(invoice["id"]),
        "Num": text(number),
        "Status": text(invoice.get("status")),
        "Date": day(invoice.get("date")),
        "DueDate": day(invoice.get("duedate")),
        "DatePaid": moment(invoice.get("datepaid")),
        "Subtotal": amount(invoice.get("subtotal")),
        "Credit": amount(invoice.get("credit")),
        "Tax": amount(invoice.get("tax")),
        "Tax2": amount(invoice.get("tax2")),
        "TaxRate": amount(invoice.get("taxrate")),
        "TaxRate2": amount(invoice.get("taxrate2")),
        "Total": amount(invoice.get("total")),
        "PaymentMethod": text(invoice.get("paymentmethod")),
        "Items": [
            {"ID": int(i["id"]), "Type": text(i.get("type")), "RelID": int(i.get("relid") or 0),
             "Description": text(i.get("description")), "Amount": amount(i.get("amount")),
             "Taxed": bool(int(i.get("taxed") or 0))}
            for i in items
        ],
    }


def document(doctype: str, number: str, invoice: Mapping[str, Any],
             items: Sequence[Mapping[str, Any]], client: Mapping[str, Any],
             invoicedata: Mapping[str, Any] | None,
             live_custom_fields: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "ClientData": client_data(int(invoice["userid"]), client, invoicedata,
                                  live_custom_fields),
        "DocData": doc_data(doctype, invoice, items, number),
    }
