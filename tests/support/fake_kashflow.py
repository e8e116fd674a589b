"""A fake KashFlow: an aiohttp app speaking KashFlow's SOAP 1.1 on loopback.

It checks every request against the WSDL on its own (ElementTree, not zeep, so a mistake in
the client's library use cannot hide behind the same code): the SOAPAction header, the
``KashFlow`` namespace, element names, their order, required elements, typed invoice lines.
A malformed request gets HTTP 500 with a SOAP fault, as the real service answers. Answers
are rendered in WSDL order too, and invoices carry the three CIS fields newer versions add.

State: customers, invoices, payments, with KashFlow's rules (unique letters-and-digits
customer code, known customer, currency, payment method and bank account; a payment is not
zero, and a negative one, a refund, never takes more than the invoice's payments). Failures are
injected per operation: ``status_no``, ``zero`` (Status OK with 0 for the new id),
``http_500``, ``timeout`` (the write is applied, the answer comes too late),
``applied_500`` (the write is applied, the answer is lost) and what a proxy in front of
KashFlow answers instead of SOAP: ``text_500`` (a plain-text 500), ``empty_500`` (a 500
without a body) and ``html_502`` (the write is applied, then the proxy gives up with an
HTML error page).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

WSDL = Path(__file__).resolve().parents[2] / "coordinator" / "accounting" / "KashFlow.wsdl"
XS = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
KF = "KashFlow"
CIS_FIELDS = ("CISRCNetAmount", "CISRCVatAmount", "IsCISReverseCharge")
_SIMPLE = {
    "int": re.compile(r"-?\d+"),
    "integer": re.compile(r"-?\d+"),
    "decimal": re.compile(r"-?\d+(\.\d+)?"),
    "boolean": re.compile(r"true|false|0|1"),
    "dateTime": re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?"),
    "string": re.compile(r".*", re.S),
}
_ZERO = {"int": "0", "integer": "0", "decimal": "0", "boolean": "false", "dateTime": "0001-01-01T00:00:00"}


@dataclass(frozen=True)
class Slot:
    name: str
    type: str  # "s:int", "tns:Customer", "" for anyType
    required: bool
    many: bool


def _schema() -> dict[str, list[Slot]]:
    """Sequences of the WSDL's complex types and operation elements, by name."""
    root = ET.parse(WSDL).getroot()
    schema = root.find(f"{{http://schemas.xmlsoap.org/wsdl/}}types/{{{XS}}}schema")
    assert schema is not None
    out: dict[str, list[Slot]] = {}
    for node in schema:
        sequence = node.find(f".//{{{XS}}}sequence")
        if node.get("name") and sequence is not None:
            out[node.get("name", "")] = [
                Slot(
                    e.get("name", ""),
                    e.get("type", ""),
                    e.get("minOccurs") == "1",
                    e.get("maxOccurs") == "unbounded",
                )
                for e in sequence.findall(f"{{{XS}}}element")
            ]
    return out


SCHEMA = _schema()


class BadRequest(Exception):
    pass


def check(element: ET.Element, type_name: str) -> dict[str, Any]:
    """Validate ``element`` against the WSDL type; return its content as plain values."""
    slots = SCHEMA[type_name]
    index = {s.name: i for i, s in enumerate(slots)}
    out: dict[str, Any] = {}
    last = -1
    for child in element:
        ns, _, name = child.tag[1:].partition("}")
        if ns != KF or name not in index:
            raise BadRequest(f"unexpected element {child.tag} in {type_name}")
        at = index[name]
        slot = slots[at]
        if at < last or (at == last and not slot.many):
            raise BadRequest(f"element {name} out of order in {type_name}")
        last = at
        value = _value(child, slot)
        if slot.many:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    missing = [s.name for s in slots if s.required and s.name not in out]
    if missing:
        raise BadRequest(f"{type_name} lacks required {', '.join(missing)}")
    return out


def _value(child: ET.Element, slot: Slot) -> Any:
    prefix, _, local = slot.type.partition(":")
    if not slot.type:  # anyType: only an element typed InvoiceLine is accepted
        declared = child.get(f"{{{XSI}}}type", "")
        if declared.rpartition(":")[2] != "InvoiceLine":
            raise BadRequest(f"untyped or wrongly typed line {declared!r}")
        return check(child, "InvoiceLine")
    if prefix == "tns":
        return check(child, local)
    text = child.text or ""
    if not _SIMPLE[local].fullmatch(text):
        raise BadRequest(f"{slot.name}: {text!r} is not an xsd:{local}")
    return text


def render(parent: ET.Element, name: str, type_name: str, value: Any) -> None:
    node = ET.SubElement(parent, f"{{{KF}}}{name}")
    if value is None:
        return
    prefix, _, local = type_name.partition(":")
    if prefix != "tns":
        node.text = str(value)
        return
    for slot in SCHEMA[local]:
        given = value.get(slot.name)
        if slot.many:
            for item in given or []:
                render(node, slot.name, slot.type, item)
        elif given is not None:
            render(node, slot.name, slot.type, given)
        elif slot.required:
            render(node, slot.name, slot.type, _ZERO[slot.type.partition(":")[2]])
    if local == "Invoice":  # what newer service versions add after the WSDL's fields
        for extra in CIS_FIELDS:
            ET.SubElement(node, f"{{{KF}}}{extra}").text = "false" if extra.startswith("Is") else "0"


@dataclass
class FakeKashFlow:
    username: str = "concord"
    password: str = "secret"
    timeout_delay: float = 1.5  # longer than the client timeout the tests use
    currencies: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"CurrencyId": 1, "CurrencyCode": "GBP", "ExchangeRate": "1", "isDefault": 1},
            {"CurrencyId": 2, "CurrencyCode": "EUR", "ExchangeRate": "1.17", "isDefault": 0},
        ]
    )
    bank_accounts: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"AccountID": 11, "AccountName": "Current Account", "AccountCode": 1200},
            {"AccountID": 12, "AccountName": "PayPal", "AccountCode": 1210},
        ]
    )
    pay_methods: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"MethodID": 21, "MethodName": "Credit/Debit Card"},
            {"MethodID": 22, "MethodName": "PayPal"},
            {"MethodID": 23, "MethodName": "BACS"},
        ]
    )
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[int, dict[str, Any]] = field(default_factory=dict)
    payments: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    _failures: dict[str, list[str]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _next_invoice: Any = field(default_factory=lambda: itertools.count(1001))

    def fail(self, operation: str, kind: str, times: int = 1) -> None:
        assert kind in (
            "status_no",
            "zero",
            "http_500",
            "timeout",
            "applied_500",
            "text_500",
            "empty_500",
            "html_502",
        )
        self._failures.setdefault(operation, []).extend([kind] * times)

    def count(self, operation: str) -> int:
        return Counter(self.calls)[operation]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/service.asmx", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            envelope = ET.fromstring(body)
            operation_node = envelope.find(f"{{{SOAP}}}Body")[0]  # type: ignore[index]
            operation = operation_node.tag.removeprefix(f"{{{KF}}}")
            if request.headers.get("SOAPAction", "").strip('"') != f"KashFlow/{operation}":
                raise BadRequest(
                    f"SOAPAction {request.headers.get('SOAPAction')!r} does not name {operation}"
                )
            if not request.content_type == "text/xml":
                raise BadRequest(f"content type {request.content_type} is not SOAP 1.1's text/xml")
            arguments = check(operation_node, operation)
        except (BadRequest, ET.ParseError, IndexError, TypeError, KeyError) as exc:
            return _fault(f"Server was unable to read request. {exc}")
        self.calls.append(operation)
        queue = self._failures.get(operation)
        failure = queue.pop(0) if queue else None
        if failure == "http_500":
            return _fault("Server was unable to process request. Object reference not set.")
        if failure == "text_500":
            return web.Response(status=500, text="Internal Server Error")
        if failure == "empty_500":
            return web.Response(status=500)
        if failure in ("status_no", "zero"):
            result = 0 if failure == "zero" else None
            status = "OK" if failure == "zero" else "NO"
            return _answer(operation, result, status, "" if failure == "zero" else "Injected refusal")
        if arguments.get("UserName") != self.username or arguments.get("Password") != self.password:
            return _answer(operation, None, "NO", "Incorrect username or password")
        try:
            result = getattr(self, f"_op_{operation}")(arguments)
            status, detail = "OK", ""
        except BadRequest as refused:
            result, status, detail = None, "NO", str(refused)
        if failure == "timeout":
            await asyncio.sleep(self.timeout_delay)
        if failure == "applied_500":
            return _fault("Server was unable to process request. Timeout expired.")
        if failure == "html_502":
            return web.Response(
                status=502,
                content_type="text/html",
                text=(
                    "<html><head><title>502 Bad Gateway</title></head><body><center>"
                    "<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
                ),
            )
        return _answer(operation, result, status, detail)

    # -- operations ------------------------------------------------------------------------

    def _op_GetCurrencies(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        return self.currencies

    def _op_GetBankAccounts(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        return self.bank_accounts

    def _op_GetInvPayMethods(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        return self.pay_methods

    def customer_by_code(self, code: str) -> dict[str, Any] | None:
        return next((c for c in self.customers.values() if c["Code"] == code), None)

    def _op_GetCustomer(self, args: dict[str, Any]) -> dict[str, Any]:
        found = self.customer_by_code(args.get("CustomerCode", ""))
        if found is None:
            raise BadRequest("No customer found with that code")
        return found

    def _op_InsertCustomer(self, args: dict[str, Any]) -> int:
        customer = args["custr"]
        code = customer.get("Code", "")
        if not re.fullmatch(r"[A-Za-z0-9]+", code):
            raise BadRequest("Customer Code may only contain letters and digits")
        if self.customer_by_code(code) is not None:
            raise BadRequest("Customer Code is not unique")
        new_id = next(self._ids)
        self.customers[new_id] = {**customer, "CustomerID": str(new_id)}
        return new_id

    def _op_UpdateCustomer(self, args: dict[str, Any]) -> str:
        customer = args["custr"]
        key = int(customer["CustomerID"])
        if key not in self.customers:
            raise BadRequest("Customer not found")
        self.customers[key] = {**customer, "Code": self.customers[key]["Code"]}
        return "OK"

    def _op_InsertInvoice(self, args: dict[str, Any]) -> int:
        invoice = args["Inv"]
        if int(invoice["CustomerID"]) not in self.customers:
            raise BadRequest("Customer not found")
        if invoice.get("CurrencyCode") not in {c["CurrencyCode"] for c in self.currencies}:
            raise BadRequest(f"Currency {invoice.get('CurrencyCode')} is not set up")
        lines = (invoice.get("Lines") or {}).get("anyType") or []
        if not lines:
            raise BadRequest("An invoice needs at least one line")
        number = int(invoice["InvoiceNumber"]) or next(self._next_invoice)
        if number in self.invoices:
            raise BadRequest("InvoiceNumber is not unique")
        self.invoices[number] = {**invoice, "InvoiceNumber": str(number), "Lines": lines}
        return number

    def _op_GetInvoicesForCustomer(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in inv.items() if k != "Lines"}
            for inv in self.invoices.values()
            if inv["CustomerID"] == args["CustID"]
        ]

    def _op_InsertInvoicePayment(self, args: dict[str, Any]) -> int:
        payment = args["InvoicePayment"]
        if int(payment["PayInvoice"]) not in self.invoices:
            raise BadRequest("Invoice not found")
        if int(payment["PayMethod"]) not in {m["MethodID"] for m in self.pay_methods}:
            raise BadRequest("Invalid payment method")
        if int(payment["PayAccount"]) not in {a["AccountID"] for a in self.bank_accounts}:
            raise BadRequest("Invalid bank account")
        amount = Decimal(payment["PayAmount"])
        if amount == 0:
            raise BadRequest("Payment amount must not be zero")
        paid = sum(
            (Decimal(p["PayAmount"]) for p in self.payments_of(int(payment["PayInvoice"]))), Decimal(0)
        )
        if paid + amount < 0:  # a refund (negative payment) of more than was paid
            raise BadRequest("Refund exceeds the payments of the invoice")
        new_id = next(self._ids)
        self.payments[new_id] = {**payment, "PayID": str(new_id)}
        return new_id

    def _op_GetInvoicePayment(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in self.payments.values() if p["PayInvoice"] == args["InvoiceNumber"]]

    # -- what tests look at ----------------------------------------------------------------

    def invoice_by_reference(self, reference: str) -> list[dict[str, Any]]:
        return [i for i in self.invoices.values() if i.get("CustomerReference") == reference]

    def payments_of(self, invoice_number: int) -> list[dict[str, Any]]:
        return [p for p in self.payments.values() if int(p["PayInvoice"]) == invoice_number]


_RESULT_TYPES = {
    "GetCurrencies": "tns:ArrayOfCurrencies",
    "GetBankAccounts": "tns:ArrayOfBankAccount",
    "GetInvPayMethods": "tns:ArrayOfPaymentMethod",
    "GetCustomer": "tns:Customer",
    "InsertCustomer": "s:int",
    "UpdateCustomer": "s:string",
    "InsertInvoice": "s:int",
    "GetInvoicesForCustomer": "tns:ArrayOfInvoice",
    "InsertInvoicePayment": "s:int",
    "GetInvoicePayment": "tns:ArrayOfPayment",
}
_ARRAY_ITEM = {
    "tns:ArrayOfCurrencies": "Currencies",
    "tns:ArrayOfBankAccount": "BankAccount",
    "tns:ArrayOfPaymentMethod": "PaymentMethod",
    "tns:ArrayOfInvoice": "Invoice",
    "tns:ArrayOfPayment": "Payment",
}


def _answer(operation: str, result: Any, status: str, detail: str) -> web.Response:
    envelope = ET.Element(f"{{{SOAP}}}Envelope")
    response = ET.SubElement(ET.SubElement(envelope, f"{{{SOAP}}}Body"), f"{{{KF}}}{operation}Response")
    result_type = _RESULT_TYPES[operation]
    if result_type in _ARRAY_ITEM and result is not None:
        result = {_ARRAY_ITEM[result_type]: result}
    if result is not None or result_type in ("s:int",):
        render(response, f"{operation}Result", result_type, 0 if result is None else result)
    render(response, "Status", "s:string", status)
    render(response, "StatusDetail", "s:string", detail)
    return web.Response(
        body=ET.tostring(envelope, xml_declaration=True, encoding="utf-8"),
        content_type="text/xml",
        charset="utf-8",
    )


def _fault(message: str) -> web.Response:
    envelope = ET.Element(f"{{{SOAP}}}Envelope")
    fault = ET.SubElement(ET.SubElement(envelope, f"{{{SOAP}}}Body"), f"{{{SOAP}}}Fault")
    ET.SubElement(fault, "faultcode").text = "soap:Server"
    ET.SubElement(fault, "faultstring").text = message
    return web.Response(
        status=500, body=ET.tostring(envelope, encoding="utf-8"), content_type="text/xml", charset="utf-8"
    )
