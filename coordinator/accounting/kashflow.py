"""KashFlow's SOAP 1.1 API, the operations the sync needs.

zeep reads the WSDL shipped beside this module (KashFlow's own, unchanged), so element
names, their order, the ``KashFlow`` namespace and each SOAPAction come from the contract
and not from hand-typed envelopes; zeep also refuses a request that lacks a required
element before it is sent. Calls go one at a time through httpx with a timeout.

Every answer carries ``Status`` (``OK``/``NO``) and ``StatusDetail``; a ``NO`` arrives
with HTTP 200. Failures become two exceptions: ``KashFlowRefused`` (KashFlow answered and
said no, or returned 0 for an id, or zeep found the request invalid and did not send it)
and ``KashFlowUnavailable`` (no usable answer: HTTP error, SOAP fault, timeout, connection
error, or a body that is not a SOAP envelope, as proxies in front of KashFlow send: plain
text, HTML, nothing), after which a write may or may not have happened.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

import httpx
import zeep
from lxml import etree
from lxml.etree import XMLSyntaxError
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import TransportError, ValidationError
from zeep.helpers import serialize_object
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport
from zeep.wsdl import Document

BINDING = "{KashFlow}KashFlowAPISoap"  # the SOAP 1.1 binding of the WSDL


class KashFlowError(Exception):
    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(f"KashFlow {operation}: {detail}")
        self.operation = operation
        self.detail = detail


class KashFlowRefused(KashFlowError):
    """KashFlow answered and refused (Status NO, or 0 where an id was due)."""


class KashFlowUnavailable(KashFlowError):
    """No usable answer; a write may have taken effect or not."""


@dataclass(frozen=True)
class Currency:
    id: int
    code: str
    exchange_rate: Decimal


@functools.cache
def _wsdl() -> Document:
    # Parsed once per process (about 0.3 s): the document is read-only once built.
    path = resources.files(__package__).joinpath("KashFlow.wsdl")
    with resources.as_file(path) as local:
        return Document(str(local), zeep.Transport(), settings=_SETTINGS)


# strict=False: newer KashFlow versions add elements (the CIS fields of Invoice) that an
# older WSDL does not list; they are ignored instead of failing the parse of the answer.
_SETTINGS = zeep.Settings(strict=False)


# No entities, no network: the answer is only looked at, never trusted to fetch anything.
_ANSWER_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
_ENVELOPE = "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"


class _SoapOnlyTransport(AsyncTransport):
    """Lets through only answers that are a SOAP 1.1 envelope. zeep reads a plain-text body
    as an XML document of None and fails with an AttributeError, and an HTML page as an
    unknown fault; either way it is no answer from KashFlow."""

    async def post(self, address: str, message: bytes, headers: dict[str, str]) -> httpx.Response:
        response = await super().post(address, message, headers)
        try:
            root = etree.fromstring(response.content, parser=_ANSWER_PARSER)
        except XMLSyntaxError:
            root = None
        if root is None or root.tag != _ENVELOPE:
            raise TransportError(
                f"HTTP {response.status_code} with a body that is not a SOAP answer: "
                f"{response.content[:80]!r}",
                status_code=response.status_code,
            )
        return response


class KashFlowClient:
    """One account's API. ``http`` may be given (tests hook into it); it is then not closed."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        timeout: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._credentials = {"UserName": username, "Password": password}
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        transport = _SoapOnlyTransport(client=self._http, wsdl_client=httpx.Client())
        client = zeep.AsyncClient(wsdl=_wsdl(), transport=transport, settings=_SETTINGS)
        self._types = client.type_factory("ns0")
        self._service = AsyncServiceProxy(client, _wsdl().bindings[BINDING], address=url)
        self._transport = transport

    async def aclose(self) -> None:
        self._transport.wsdl_client.close()
        if self._own_http:
            await self._http.aclose()

    async def _call(self, operation: str, **arguments: Any) -> Any:
        try:
            reply = await getattr(self._service, operation)(**self._credentials, **arguments)
        except ValidationError as exc:  # zeep checked the request against the WSDL: not sent
            raise KashFlowRefused(operation, f"request not sent: {exc}") from exc
        except (httpx.HTTPError, ZeepError, XMLSyntaxError) as exc:
            raise KashFlowUnavailable(operation, str(exc) or type(exc).__name__) from exc
        if reply is None:
            raise KashFlowUnavailable(operation, "empty answer")
        if reply["Status"] != "OK":
            raise KashFlowRefused(operation, reply["StatusDetail"] or "Status NO without detail")
        return reply[f"{operation}Result"]

    async def _new_id(self, operation: str, **arguments: Any) -> int:
        result = await self._call(operation, **arguments)
        if not result:
            raise KashFlowRefused(operation, "returned 0 instead of a new id")
        return int(result)

    # -- reference lists ------------------------------------------------------------------

    async def currencies(self) -> dict[str, Currency]:
        """KashFlow's currencies by ISO code."""
        result = await self._call("GetCurrencies")
        return {
            c.CurrencyCode.strip().upper(): Currency(
                c.CurrencyId, c.CurrencyCode.strip().upper(), c.ExchangeRate
            )
            for c in _items(result, "Currencies")
            if c.CurrencyCode
        }

    async def bank_accounts(self) -> list[dict[str, Any]]:
        result = await self._call("GetBankAccounts")
        return [
            {"id": a.AccountID, "name": a.AccountName, "code": a.AccountCode}
            for a in _items(result, "BankAccount")
        ]

    async def payment_methods(self) -> list[dict[str, Any]]:
        result = await self._call("GetInvPayMethods")
        return [{"id": m.MethodID, "name": m.MethodName} for m in _items(result, "PaymentMethod")]

    # -- customers ------------------------------------------------------------------------

    async def customer_id(self, code: str) -> int | None:
        """The id of the customer with this code, None when KashFlow has none.

        KashFlow answers an unknown code with Status NO or an empty customer. Taking a NO
        for "absent" is safe: the insert that follows is refused for an existing code.
        """
        try:
            result = await self._call("GetCustomer", CustomerCode=code)
        except KashFlowRefused:
            return None
        return int(result.CustomerID) if result is not None and result.CustomerID else None

    async def insert_customer(self, fields: dict[str, Any]) -> int:
        return await self._new_id("InsertCustomer", custr=self._types.Customer(**fields))

    async def update_customer(self, fields: dict[str, Any]) -> None:
        await self._call("UpdateCustomer", custr=self._types.Customer(**fields))

    # -- invoices and payments ------------------------------------------------------------

    async def insert_invoice(self, header: dict[str, Any], lines: list[dict[str, Any]]) -> int:
        """Returns KashFlow's invoice number. Lines go as ``<anyType xsi:type="InvoiceLine">``,
        the only form KashFlow accepts in the untyped ``Lines`` array."""
        line_type = self._types.InvoiceLine
        typed = [zeep.xsd.AnyObject(line_type, line_type(**line)) for line in lines]
        invoice = self._types.Invoice(**header, Lines=self._types.ArrayOfAnyType(anyType=typed))
        return await self._new_id("InsertInvoice", Inv=invoice)

    async def invoice_numbers_for_customer(self, customer_id: int) -> dict[str, int]:
        """KashFlow invoice numbers of the customer by their customer reference."""
        result = await self._call("GetInvoicesForCustomer", CustID=customer_id)
        return {
            inv.CustomerReference: int(inv.InvoiceNumber)
            for inv in _items(result, "Invoice")
            if inv.CustomerReference
        }

    async def insert_payment(self, payment: dict[str, Any]) -> int:
        return await self._new_id("InsertInvoicePayment", InvoicePayment=self._types.Payment(**payment))

    async def payments(self, invoice_number: int) -> list[dict[str, Any]]:
        result = await self._call("GetInvoicePayment", InvoiceNumber=invoice_number)
        return [serialize_object(p, dict) for p in _items(result, "Payment")]


def _items(array: Any, name: str) -> list[Any]:
    """The entries of an ``ArrayOfX`` answer (absent when empty)."""
    if array is None:
        return []
    return [item for item in (getattr(array, name, None) or []) if item is not None]
