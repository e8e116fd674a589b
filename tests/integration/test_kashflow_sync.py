"""The KashFlow sync against a fake KashFlow speaking the WSDL's SOAP on loopback, with the
ledger in a real PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from coordinator.accounting.sync import SYNC_LOCK, SyncBusy
from coordinator.ledger import commands
from tests.support.fake_kashflow import FakeKashFlow
from tests.support.kashflow_ledger import (
    Ledger,
    issue_many,
    mapping,
    open_ledger,
    serve_fake,
    sync,
    tblaccounts,
)


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(database_url) as opened:
        yield opened


@pytest.fixture
def fake() -> FakeKashFlow:
    return FakeKashFlow()


@pytest.fixture
async def url(fake: FakeKashFlow) -> AsyncIterator[str]:
    async with serve_fake(fake) as served:
        yield served


def assert_no_duplicates(fake: FakeKashFlow) -> None:
    codes = Counter(c["Code"] for c in fake.customers.values())
    references = Counter(i["CustomerReference"] for i in fake.invoices.values())
    paid = Counter((p["PayInvoice"], p["PayNote"]) for p in fake.payments.values())
    assert [k for k, n in codes.items() if n > 1] == []
    assert [k for k, n in references.items() if n > 1] == []
    assert [k for k, n in paid.items() if n > 1] == []


@pytest.mark.slow
async def test_back_fill_of_450_paid_invoices_takes_three_runs_in_ledger_order(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    await issue_many(ledger, alpha, 450)
    first_paid = [
        r["formatted"]
        for r in await ledger.pool.fetch(
            "SELECT data->>'formatted' AS formatted FROM events WHERE type = 'NumberIssued' ORDER BY position"
        )
    ]

    reports = [await sync(ledger, url) for _ in range(4)]

    assert [r.posted for r in reports] == [200, 200, 50, 0]
    assert [r.remaining for r in reports] == [250, 50, 0, 0]
    by_kashflow_number = [fake.invoices[n]["CustomerReference"] for n in sorted(fake.invoices)]
    assert by_kashflow_number == first_paid
    assert len(fake.payments) == 450
    assert len(fake.customers) == 30  # one per client, reused by its other invoices
    assert fake.count("InsertCustomer") == 30
    assert fake.count("GetCustomer") == 30
    assert_no_duplicates(fake)


async def test_unpaid_draft_credit_notes_and_voided_are_never_posted(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    await ledger.issue(alpha, 1, status="Unpaid")
    await ledger.issue(alpha, 2, status="Draft")
    await ledger.issue(alpha, 3, doctype="creditnote", items=(("Refund", "-100.00", True),))
    later = await ledger.issue(alpha, 4, status="Unpaid")

    assert (await sync(ledger, url)).posted == 0
    assert fake.invoices == {}

    await ledger.update(alpha, 4, later, status="Paid")  # paid after issue: now it goes
    report = await sync(ledger, url)
    assert (report.posted, report.remaining) == (1, 0)
    assert [i["CustomerReference"] for i in fake.invoices.values()] == [later]


async def test_paid_then_reopened_or_cancelled_before_the_run_is_dropped_with_a_warning(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    reopened = await ledger.issue(alpha, 1)
    await ledger.update(alpha, 1, reopened, status="Unpaid", transactions=[])
    cancelled = await ledger.issue(alpha, 2, user_id=2)
    await ledger.update(alpha, 2, cancelled, status="Cancelled", transactions=[])

    report = await sync(ledger, url)
    assert (report.posted, report.dropped, report.remaining) == (0, 2, 0)
    assert fake.invoices == {} and fake.calls == ["GetCurrencies"]
    dropped = {w["subject"]: w["message"] for w in await ledger.warnings("kashflow_document_dropped")}
    assert len(dropped) == 2
    assert any(reopened in m and "Unpaid" in m for m in dropped.values())
    assert any(cancelled in m and "Cancelled" in m for m in dropped.values())
    assert (await sync(ledger, url)).dropped == 0  # an outcome, not queued forever

    await ledger.update(alpha, 1, reopened, status="Paid")  # paid again: posted after all
    report = await sync(ledger, url)
    assert (report.posted, report.dropped, report.remaining) == (1, 0, 0)
    assert [i["CustomerReference"] for i in fake.invoices.values()] == [reopened]
    [still_dropped] = await ledger.warnings("kashflow_document_dropped")
    assert cancelled in still_dropped["message"]


async def test_paid_then_refunded_before_the_run_is_posted_with_its_refund(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    refunded = await ledger.issue(alpha, 1)
    await ledger.update(alpha, 1, refunded, status="Refunded")

    report = await sync(ledger, url)
    assert (report.posted, report.payments, report.refunds, report.remaining) == (1, 1, 1, 0)
    [invoice] = fake.invoice_by_reference(refunded)
    amounts = [Decimal(p["PayAmount"]) for p in fake.payments_of(int(invoice["InvoiceNumber"]))]
    assert amounts == [Decimal("120.00"), Decimal("-120.00")]
    assert await ledger.warnings("kashflow_document_dropped") == []


async def test_customer_is_looked_up_by_code_then_inserted_reused_and_updated(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    beta = await ledger.add_store("be-ta")
    # A customer that exists in KashFlow already (an earlier sync lost its bookkeeping).
    fake.customers[500] = {"CustomerID": "500", "Code": "ALPHAC7", "Name": "Old"}
    await ledger.issue(alpha, 1, user_id=7)
    await ledger.issue(alpha, 2, user_id=8)
    await ledger.issue(alpha, 3, user_id=8)
    await ledger.issue(beta, 1, user_id=8)  # same WHMCS id, another store: another customer
    await sync(ledger, url)

    assert sorted(c["Code"] for c in fake.customers.values()) == ["ALPHAC7", "ALPHAC8", "BETAC8"]
    assert fake.count("InsertCustomer") == 2
    assert fake.count("UpdateCustomer") == 1  # ALPHAC7 brought up to date, not inserted
    assert fake.customers[500]["Name"] == "Ada Client7"
    alpha8 = fake.customer_by_code("ALPHAC8")
    assert alpha8 is not None
    assert {
        i["CustomerID"]
        for i in fake.invoices.values()
        if i["CustomerReference"] in ("INV-00002", "INV-00003")
    } == {alpha8["CustomerID"]}

    moved = await ledger.issue(alpha, 4, user_id=8, address="2 Low Road")
    await sync(ledger, url)
    assert fake.count("InsertCustomer") == 2 and fake.count("UpdateCustomer") == 2
    assert fake.customer_by_code("ALPHAC8")["Address1"] == "2 Low Road"  # type: ignore[index]
    assert fake.invoice_by_reference(moved)[0]["CustomerID"] == alpha8["CustomerID"]
    assert_no_duplicates(fake)


@pytest.mark.slow
async def test_customers_carry_kashflow_ec_flags_from_the_eu_table(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    places = {  # user id: (country, postcode, EC, OutsideEC)
        1: ("GB", "N1 9GU", "0", "0"),
        2: ("DE", "10115", "1", "0"),
        3: ("ES", "28001", "1", "0"),
        4: ("ES", "35001", "0", "1"),  # Canary Islands
        5: ("MC", "98000", "1", "0"),
        6: ("US", "10001", "0", "1"),
        7: ("", "", "0", "0"),
        8: ("CH", "8001", "0", "1"),
        9: ("IM", "IM1 1AA", "0", "0"),
    }
    for user, (country, postcode, _, _) in places.items():
        await ledger.issue(alpha, user, user_id=user, country=country, postcode=postcode)
    assert (await sync(ledger, url)).posted == len(places)
    flags = {int(c["Code"].rpartition("C")[2]): (c["EC"], c["OutsideEC"]) for c in fake.customers.values()}
    assert flags == {user: (ec, outside) for user, (_, _, ec, outside) in places.items()}

    # A client who moves from Germany to Switzerland is updated.
    await ledger.issue(alpha, 10, user_id=2, country="CH", postcode="8001")
    await sync(ledger, url)
    assert (fake.customer_by_code("ALPHAC2") or {}).get("OutsideEC") == "1"


async def test_invoice_lines_vat_credit_and_payment_are_posted_as_kashflow_wants(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    mixed = await ledger.issue(
        alpha,
        1,
        gateway="stripe",
        credit="15.00",
        items=(("Web hosting", "100.00", True), ("Domain transfer", "10.00", False)),
    )
    exempt = await ledger.issue(alpha, 2, tax_exempt=True, user_id=2)
    by_credit = await ledger.issue(alpha, 3, credit="120.00", user_id=3)
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request)

    async with httpx.AsyncClient(timeout=5, event_hooks={"request": [record]}) as http:
        assert (await sync(ledger, url, http=http)).posted == 3

    [invoice] = fake.invoice_by_reference(mixed)
    assert (invoice["InvoiceDate"], invoice["DueDate"], invoice["CurrencyCode"]) == (
        "2026-03-01T00:00:00",
        "2026-03-15T00:00:00",
        "GBP",
    )
    assert [
        (line["Description"], Decimal(line["Rate"]), Decimal(line["VatRate"]), Decimal(line["VatAmount"]))
        for line in invoice["Lines"]
    ] == [
        ("Web hosting", Decimal(100), Decimal(20), Decimal(20)),
        ("Domain transfer", Decimal(10), Decimal(-1), Decimal(0)),
        ("Credit applied", Decimal(-15), Decimal(-1), Decimal(0)),
    ]
    [pay] = fake.payments_of(int(invoice["InvoiceNumber"]))
    assert (pay["PayDate"], Decimal(pay["PayAmount"]), pay["PayMethod"], pay["PayAccount"]) == (
        "2026-03-02T10:11:12",
        Decimal("115.00"),
        "21",
        "11",
    )
    assert pay["PayNote"] == f"{mixed} WHMCS payment 10 via stripe"

    [exempt_invoice] = fake.invoice_by_reference(exempt)
    assert {Decimal(line["VatRate"]) for line in exempt_invoice["Lines"]} == {Decimal(-1)}
    # Credit paid it all: the invoice is posted, there is no gateway payment to post.
    [credit_invoice] = fake.invoice_by_reference(by_credit)
    assert fake.payments_of(int(credit_invoice["InvoiceNumber"])) == []

    actions = [r.headers["SOAPAction"] for r in seen]
    assert '"KashFlow/InsertInvoice"' in actions and '"KashFlow/GetCurrencies"' in actions
    assert {r.headers["Content-Type"].split(";")[0] for r in seen} == {"text/xml"}


async def test_each_whmcs_transaction_becomes_one_kashflow_payment_and_refunds_negative_ones(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    # 120.00 paid in two parts through two gateways, with fees and gateway ids.
    number = await ledger.issue(
        alpha,
        1,
        transactions=[
            tblaccounts(
                501, "20.00", gateway="stripe", when="2026-03-01 09:00:00", transid="ch_1", fees="0.88"
            ),
            tblaccounts(502, "100.00", when="2026-03-02 10:11:12", transid="PP-9", fees="3.20"),
        ],
    )
    report = await sync(ledger, url)
    assert (report.posted, report.payments, report.refunds) == (1, 2, 0)
    [invoice] = fake.invoice_by_reference(number)
    payments = fake.payments_of(int(invoice["InvoiceNumber"]))
    assert [
        (p["PayDate"], Decimal(p["PayAmount"]), p["PayMethod"], p["PayAccount"], p["PayNote"])
        for p in payments
    ] == [
        (
            "2026-03-01T09:00:00",
            Decimal("20.00"),
            "21",
            "11",
            f"{number} WHMCS payment 501 via stripe, gateway transaction ch_1, gateway fees 0.88",
        ),
        (
            "2026-03-02T10:11:12",
            Decimal("100.00"),
            "22",
            "12",
            f"{number} WHMCS payment 502 via paypal, gateway transaction PP-9, gateway fees 3.20",
        ),
    ]

    # A partial refund later: the invoice stays Paid in WHMCS, one negative payment follows.
    refund = tblaccounts(503, "0", out="30.00", when="2026-03-05 08:00:00", refund_of=502)
    await ledger.update(
        alpha,
        1,
        number,
        transactions=[
            tblaccounts(
                501, "20.00", gateway="stripe", when="2026-03-01 09:00:00", transid="ch_1", fees="0.88"
            ),
            tblaccounts(502, "100.00", when="2026-03-02 10:11:12", transid="PP-9", fees="3.20"),
            refund,
        ],
    )
    report = await sync(ledger, url)
    assert (report.posted, report.payments, report.refunds) == (1, 0, 1)
    last = fake.payments_of(int(invoice["InvoiceNumber"]))[-1]
    assert (last["PayDate"], Decimal(last["PayAmount"]), last["PayNote"]) == (
        "2026-03-05T08:00:00",
        Decimal("-30.00"),
        f"{number} WHMCS refund 503 via paypal",
    )
    assert len(fake.invoices) == 1 and len(fake.payments) == 3
    assert await ledger.warnings("kashflow_changed_after_posting") == []  # still Paid


async def without_transactions(ledger: Ledger, peer_id: str, doc_id: int) -> None:
    """The document's snapshot as an agent older than the transactions report sends it."""
    snapshot = await ledger.pool.fetchval(
        "SELECT snapshot FROM documents WHERE peer_id = $1 AND doc_id = $2", peer_id, str(doc_id)
    )
    await ledger.writer.execute(
        commands.UpdateDocument(
            peer_id=peer_id,
            doctype="invoice",
            doc_id=str(doc_id),
            document={k: v for k, v in snapshot.items() if k != "Transactions"},
        )
    )


async def test_a_snapshot_without_transactions_pays_its_total_once_and_later_refunds_follow(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    """Snapshots of an older agent carry no transactions: one payment of the total, as the
    sync did before; once the agent reports transactions, only what is new is posted."""
    alpha = await ledger.add_store("alpha")
    number = await ledger.issue(alpha, 1)
    await without_transactions(ledger, alpha, 1)
    report = await sync(ledger, url)
    assert (report.posted, report.payments) == (1, 1)
    [pay] = fake.payments.values()
    assert (Decimal(pay["PayAmount"]), pay["PayNote"]) == (Decimal("120.00"), f"{number} paid via paypal")

    await ledger.update(alpha, 1, number, status="Refunded")  # now with transactions
    report = await sync(ledger, url)
    assert (report.payments, report.refunds) == (0, 1)
    assert sorted(Decimal(p["PayAmount"]) for p in fake.payments.values()) == [
        Decimal("-120.00"),
        Decimal("120.00"),
    ]


async def test_a_whole_payment_whose_answer_was_lost_is_found_once_transactions_arrive(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    number = await ledger.issue(alpha, 1)
    await without_transactions(ledger, alpha, 1)

    async def lose_payment_answer(response: httpx.Response) -> None:
        if response.request.headers["SOAPAction"] == '"KashFlow/InsertInvoicePayment"':
            raise Crash("the process dies after KashFlow took the payment")

    async with httpx.AsyncClient(timeout=5, event_hooks={"response": [lose_payment_answer]}) as http:
        with pytest.raises(Crash):
            await sync(ledger, url, http=http)
    assert len(fake.payments) == 1
    await ledger.update(alpha, 1, number, status="Refunded")  # the agent reports transactions

    report = await sync(ledger, url)
    assert (report.posted, report.payments, report.refunds) == (1, 1, 1)  # found, not re-sent
    assert sorted(Decimal(p["PayAmount"]) for p in fake.payments.values()) == [
        Decimal("-120.00"),
        Decimal("120.00"),
    ]


async def test_currency_missing_in_kashflow_or_unmapped_holds_the_invoice_with_a_warning(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    pounds = await ledger.issue(alpha, 1, currency=1)
    dollars = await ledger.issue(alpha, 2, currency=2)
    unmapped = await ledger.issue(alpha, 3, currency=3)
    currencies = {"alpha": {"1": "GBP", "2": "USD"}}

    report = await sync(ledger, url, mapping(currencies=currencies))
    assert (report.posted, report.held, report.remaining) == (1, 2, 2)
    assert [i["CustomerReference"] for i in fake.invoices.values()] == [pounds]
    [missing] = await ledger.warnings("kashflow_currency_missing")
    assert missing["subject"] == "USD" and "USD" in missing["message"]
    [no_code] = await ledger.warnings("kashflow_currency_unmapped")
    assert no_code["subject"] == "alpha/3"

    fake.currencies.append({"CurrencyId": 3, "CurrencyCode": "USD", "ExchangeRate": "1.3", "isDefault": 0})
    report = await sync(ledger, url, mapping(currencies={"alpha": {"1": "GBP", "2": "USD", "3": "EUR"}}))
    assert (report.posted, report.held, report.remaining) == (2, 0, 0)
    assert fake.invoice_by_reference(dollars)[0]["CurrencyCode"] == "USD"
    assert fake.invoice_by_reference(unmapped)[0]["CurrencyCode"] == "EUR"
    assert await ledger.warnings("kashflow_currency_missing") == []
    assert await ledger.warnings("kashflow_currency_unmapped") == []


async def test_currencies_match_by_the_code_each_agent_reports_and_the_setting_overrides(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    await ledger.writer.execute(
        commands.ReportPeerConfig(
            peer_id=alpha,
            agent_version="0.1.0",
            settings={"Currencies": {"1": "GBP", "2": "EUR", "3": "USD"}},
        )
    )  # as the heartbeat
    pounds = await ledger.issue(alpha, 1, currency=1)
    euros = await ledger.issue(alpha, 2, user_id=2, currency=2)
    dollars = await ledger.issue(alpha, 3, user_id=3, currency=3)
    unknown = await ledger.issue(alpha, 4, user_id=4, currency=4)

    report = await sync(ledger, url, mapping(currencies={}))  # no kashflow_currencies at all
    assert (report.posted, report.held) == (2, 2)
    assert [fake.invoice_by_reference(n)[0]["CurrencyCode"] for n in (pounds, euros)] == ["GBP", "EUR"]
    assert fake.customer_by_code("ALPHAC2")["CurrencyID"] == "2"  # type: ignore[index]
    [missing] = await ledger.warnings("kashflow_currency_missing")
    assert missing["subject"] == "USD"  # reported by the store, not set up in KashFlow
    [unmapped] = await ledger.warnings("kashflow_currency_unmapped")
    assert unmapped["subject"] == "alpha/4" and "heartbeat" in unmapped["message"]

    # The setting overrides one entry of what the store reports and adds another.
    report = await sync(ledger, url, mapping(currencies={"alpha": {"3": "EUR", "4": "GBP"}}))
    assert (report.posted, report.held) == (2, 0)
    assert fake.invoice_by_reference(dollars)[0]["CurrencyCode"] == "EUR"
    assert fake.invoice_by_reference(unknown)[0]["CurrencyCode"] == "GBP"
    assert await ledger.warnings("kashflow_currency_unmapped") == []


async def test_unmapped_gateway_skips_only_that_payment_until_it_is_mapped(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    by_paypal = await ledger.issue(alpha, 1, gateway="paypal")
    by_cheque = await ledger.issue(alpha, 2, gateway="cheque")

    report = await sync(ledger, url)
    assert (report.posted, report.held) == (1, 1)
    assert len(fake.invoices) == 2  # the invoice is posted, only its payment waits
    [cheque_invoice] = fake.invoice_by_reference(by_cheque)
    assert fake.payments_of(int(cheque_invoice["InvoiceNumber"])) == []
    assert len(fake.payments_of(int(fake.invoice_by_reference(by_paypal)[0]["InvoiceNumber"]))) == 1
    [warning] = await ledger.warnings("kashflow_gateway_unmapped")
    assert warning["subject"] == "cheque" and by_cheque in warning["message"]

    calls = len(fake.calls)
    assert (await sync(ledger, url)).held == 1
    assert fake.calls[calls:] == ["GetCurrencies"]  # held without a call

    with_cheque = mapping(
        gateways={"paypal": {"method": 22, "account": 12}, "cheque": {"method": 23, "account": 11}}
    )
    assert (await sync(ledger, url, with_cheque)).posted == 1
    [pay] = fake.payments_of(int(cheque_invoice["InvoiceNumber"]))
    assert (pay["PayMethod"], pay["PayAccount"]) == ("23", "11")
    assert len(fake.invoices) == 2
    assert await ledger.warnings("kashflow_gateway_unmapped") == []


@pytest.mark.parametrize(
    "kind", ["status_no", "zero", "http_500", "timeout", "applied_500", "text_500", "empty_500", "html_502"]
)
async def test_a_failed_document_is_warned_about_and_retried_while_the_run_goes_on(
    ledger: Ledger, fake: FakeKashFlow, url: str, kind: str
) -> None:
    alpha = await ledger.add_store("alpha")
    first, second, third = await issue_many(ledger, alpha, 3, clients=3)
    fake.fail("InsertInvoice", kind)

    report = await sync(ledger, url)
    assert (report.posted, report.failed, report.remaining) == (2, 1, 1)
    [warning] = await ledger.warnings("kashflow_document_failed")
    assert first in warning["message"]
    if kind == "status_no":
        assert "Injected refusal" in warning["message"]  # KashFlow's StatusDetail
    assert {i["CustomerReference"] for i in fake.invoices.values()} >= {second, third}

    report = await sync(ledger, url)
    assert (report.posted, report.failed, report.remaining) == (1, 0, 0)
    assert len(fake.invoice_by_reference(first)) == 1  # also when the lost write had happened
    assert len(fake.payments) == 3
    assert await ledger.warnings("kashflow_document_failed") == []
    assert_no_duplicates(fake)


async def test_a_run_stops_early_when_kashflow_stops_answering(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    await issue_many(ledger, alpha, 6, clients=6)
    fake.fail("GetCustomer", "http_500", times=6)
    report = await sync(ledger, url)
    assert (report.posted, report.failed, report.remaining) == (0, 3, 6)
    assert fake.count("GetCustomer") == 3
    assert len(await ledger.warnings("kashflow_unavailable")) == 1
    assert (await sync(ledger, url)).failed == 3
    assert (await sync(ledger, url)).posted == 6
    assert await ledger.warnings("kashflow_unavailable") == []


async def test_refused_credentials_stop_the_run_with_a_warning(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    await ledger.issue(alpha, 1)
    with pytest.raises(Exception, match="Incorrect username or password"):
        await sync(ledger, url, password="wrong")
    [warning] = await ledger.warnings("kashflow_unavailable")
    assert "Incorrect username or password" in warning["message"]


async def test_refund_after_posting_is_posted_and_the_status_change_reported(
    ledger: Ledger, fake: FakeKashFlow, url: str
) -> None:
    alpha = await ledger.add_store("alpha")
    number = await ledger.issue(alpha, 1)
    await sync(ledger, url)
    await ledger.update(alpha, 1, number, status="Refunded")
    calls = len(fake.calls)
    report = await sync(ledger, url)
    assert (report.posted, report.refunds) == (1, 1)
    assert fake.calls[calls:] == ["GetCurrencies", "InsertInvoicePayment"]
    [warning] = await ledger.warnings("kashflow_changed_after_posting")
    assert number in warning["message"] and "Refunded" in warning["message"]
    assert len(fake.invoices) == 1
    assert sorted(Decimal(p["PayAmount"]) for p in fake.payments.values()) == [
        Decimal("-120.00"),
        Decimal("120.00"),
    ]
    calls = len(fake.calls)
    assert (await sync(ledger, url)).refunds == 0  # each once
    assert fake.calls[calls:] == ["GetCurrencies"]


async def test_one_run_at_a_time(ledger: Ledger, url: str) -> None:
    async with ledger.pool.acquire() as other:
        await other.execute("SELECT pg_advisory_lock($1)", SYNC_LOCK)
        with pytest.raises(SyncBusy):
            await sync(ledger, url)
        await other.execute("SELECT pg_advisory_unlock($1)", SYNC_LOCK)
    await sync(ledger, url)


class Crash(Exception):
    """Stands for the process dying: nothing after it runs."""


@pytest.mark.slow
async def test_a_crash_between_any_two_calls_never_duplicates_anything(
    ledger: Ledger, url: str, fake: FakeKashFlow
) -> None:
    """Crash before each request is sent and after each answer arrived (the write done,
    its id not recorded), then run again: everything is posted exactly once."""
    alpha = await ledger.add_store("alpha")
    await issue_many(ledger, alpha, 2, clients=1)  # the second invoice reuses the customer
    await ledger.issue(
        alpha,
        3,
        user_id=9,
        gateway="stripe",
        transactions=[
            tblaccounts(31, "20.00", gateway="stripe"),
            tblaccounts(32, "100.00", gateway="stripe"),
            tblaccounts(33, "0", out="50.00", gateway="stripe"),
        ],
    )
    await ledger.issue(alpha, 4, user_id=9)
    await without_transactions(ledger, alpha, 4)  # one payment of its total

    async def run_with_crash(when: str, at: int) -> bool:
        count = 0

        async def hook(_: object) -> None:
            nonlocal count
            count += 1
            if count == at:
                raise Crash(f"{when} call {at}")

        async with httpx.AsyncClient(timeout=5, event_hooks={when: [hook]}) as http:
            try:
                await sync(ledger, url, http=http)
            except Crash:
                return True
        return False

    async def fresh_state() -> None:
        fake.customers.clear(), fake.invoices.clear(), fake.payments.clear(), fake.calls.clear()
        await ledger.pool.execute(
            "DELETE FROM kashflow_transactions; DELETE FROM kashflow_invoices;"
            " DELETE FROM kashflow_customers; DELETE FROM kashflow_stores;"
            " UPDATE kashflow_checkpoint SET position = 0"
        )

    await sync(ledger, url)
    calls = len(fake.calls)
    assert calls >= 14 and len(fake.payments) == 6
    for when in ("request", "response"):
        for at in range(1, calls + 1):
            await fresh_state()
            assert await run_with_crash(when, at)
            await sync(ledger, url)
            assert_no_duplicates(fake)
            assert (len(fake.customers), len(fake.invoices), len(fake.payments)) == (2, 4, 6), (when, at)
