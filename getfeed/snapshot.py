"""The document snapshot (ClientData / DocData) of the WebService Get contract. Pure.

Built by the agent from WHMCS rows when a number is confirmed or a document changes, and
stored in the ledger. Field names, types and formats are the contract's: amounts are
strings with two decimals and a dot, dates ``YYYY-MM-DD``, ``DatePaid``
``YYYY-MM-DD hh:mm:ss`` (empty when unpaid), ``TaxExempt`` "1"/"0", ``Taxed`` a boolean,
strings trimmed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import orjson

DOC_TYPES = {"invoice": "Invoice", "creditnote": "CreditNote"}
_CENT = Decimal("0.01")

_CLIENT_FIELDS = (  # contract name, WHMCS column
    ("Firstname", "firstname"),
    ("Lastname", "lastname"),
    ("CompanyName", "companyname"),
    ("Email", "email"),
    ("Address1", "address1"),
    ("Address2", "address2"),
    ("City", "city"),
    ("State", "state"),
    ("PostCode", "postcode"),
    ("Country", "country"),
    ("PhoneNumber", "phonenumber"),
)


def amount(value: Any) -> str:
    if value.__class__ is not Decimal:  # the driver gives DECIMAL columns as Decimal already
        try:
            value = Decimal(str(value if value not in (None, "") else 0))
        except InvalidOperation:
            value = Decimal(0)
    # Two decimals: str() never uses an exponent then, and it is faster than format().
    return str(value.quantize(_CENT, ROUND_HALF_UP))


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
        return value.isoformat(" ", "seconds")
    raw = text(value)[:19]
    return "" if not raw or raw.startswith("0000") else raw


def snapshot_client(invoicedata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The client details saved with the invoice, or None when absent or not JSON (rows of
    very old WHMCS versions are PHP-serialized; the live client stands in for them)."""
    if not invoicedata:
        return None
    try:
        details = orjson.loads(invoicedata.get("clientsdetails") or "")
    except (TypeError, ValueError):
        return None
    return details if isinstance(details, dict) else None


def snapshot_custom_fields(invoicedata: Mapping[str, Any] | None) -> list[Any] | None:
    """The custom fields saved with the invoice, as parsed: the caller keeps the objects."""
    if not invoicedata:
        return None
    try:
        fields = orjson.loads(invoicedata.get("customfields") or "")
    except (TypeError, ValueError):
        return None
    return fields if isinstance(fields, list) else None


def client_data(
    user_id: int,
    live: Mapping[str, Any],
    invoicedata: Mapping[str, Any] | None,
    live_custom_fields: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    source = snapshot_client(invoicedata) or live
    fields = snapshot_custom_fields(invoicedata)
    if fields is None:
        fields = list(live_custom_fields)
    # Inlined text(): this runs for every document of a feed answer.
    out: dict[str, Any] = {"UserID": user_id}
    get = source.get
    for name, column in _CLIENT_FIELDS:
        value = get(column)
        out[name] = "" if value is None else str(value).strip()
    out["Country"] = out["Country"].upper()
    first, last = out["Firstname"], out["Lastname"]
    out["ClientName"] = f"{first} {last}" if first and last else first or last
    currency = source.get("currency", live.get("currency"))
    out["Currency"] = int(currency) if str(currency or "").strip().isdigit() else 0
    exempt = text(source.get("taxexempt", live.get("taxexempt"))).lower()
    out["TaxExempt"] = "1" if exempt in ("1", "on", "true", "yes") else "0"
    # Not a contract field: WHMCS 8's VAT number, kept so the feed can ask VIES about it.
    out["TaxID"] = text(source.get("tax_id"))
    out["CustomFields"] = [_custom_field(f) for f in fields if isinstance(f, dict)]
    return out


def _custom_field(field: Mapping[str, Any]) -> dict[str, Any]:
    name, value = field.get("fieldname"), field.get("value")
    return {
        "id": int(field.get("id") or 0),
        "fieldname": "" if name is None else str(name).strip(),
        "value": "" if value is None else str(value).strip(),
    }


def doc_data(
    doctype: str, invoice: Mapping[str, Any], items: Sequence[Mapping[str, Any]], number: str
) -> dict[str, Any]:
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
        "Items": [_item(i) for i in items],
    }


def _item(item: Mapping[str, Any]) -> dict[str, Any]:
    kind, description = item.get("type"), item.get("description")
    return {
        "ID": int(item["id"]),
        "Type": "" if kind is None else str(kind).strip(),
        "RelID": int(item.get("relid") or 0),
        "Description": "" if description is None else str(description).strip(),
        "Amount": amount(item.get("amount")),
        "Taxed": bool(int(item.get("taxed") or 0)),
    }


def document(
    doctype: str,
    number: str,
    invoice: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    client: Mapping[str, Any],
    invoicedata: Mapping[str, Any] | None,
    live_custom_fields: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "ClientData": client_data(int(invoice["userid"]), client, invoicedata, live_custom_fields),
        "DocData": doc_data(doctype, invoice, items, number),
    }
