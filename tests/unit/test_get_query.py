"""The Get request: date keywords, integers, dates and every error, with a fixed "today"."""

from __future__ import annotations

from datetime import date

import pytest

from getfeed.query import (
    BOTH_DOCTYPES,
    GetQuery,
    GetQueryError,
    json_fields,
    keyword_range,
    parse_get,
)

SATURDAY = date(2019, 6, 15)  # the contract's example day


def get(today: date = SATURDAY, **fields: str) -> GetQuery:
    return parse_get({"action": "Get", **fields}, today)


def span(start: str, today: date = SATURDAY) -> tuple[date | None, date | None]:
    query = get(today, start=start)
    return query.start, query.end


def d(text: str) -> date:
    return date.fromisoformat(text)


@pytest.mark.parametrize(
    ("keyword", "first", "last"),
    [
        ("Today", "2019-06-15", "2019-06-15"),
        ("Yesterday", "2019-06-14", "2019-06-14"),
        ("Last 7 days", "2019-06-08", "2019-06-15"),
        ("Last week", "2019-06-10", "2019-06-16"),
        ("Week to date", "2019-06-10", "2019-06-15"),
        ("Month to date", "2019-06-01", "2019-06-15"),
        ("Previous month", "2019-05-01", "2019-05-31"),
        ("Year to date", "2019-01-01", "2019-06-15"),
        ("Last year", "2018-01-01", "2018-12-31"),
    ],
)
def test_every_keyword_selects_the_contracts_range(keyword: str, first: str, last: str) -> None:
    assert span(keyword) == (d(first), d(last))
    # Values are case-insensitive and forgiving about spacing.
    assert span(f"  {keyword.upper()} ") == (d(first), d(last))
    assert span(keyword.lower().replace(" ", "_")) == (d(first), d(last))


def test_all_and_empty_select_everything() -> None:
    assert span("All") == (None, None)
    assert span("") == (None, None)
    assert get() == GetQuery(doctypes=BOTH_DOCTYPES)


@pytest.mark.parametrize(
    ("today", "keyword", "first", "last"),
    [
        # A Monday: the week starts today, "Yesterday" is last week's Sunday.
        ("2024-01-01", "Week to date", "2024-01-01", "2024-01-01"),
        ("2024-01-01", "Last week", "2024-01-01", "2024-01-07"),
        ("2024-01-01", "Yesterday", "2023-12-31", "2023-12-31"),
        ("2024-01-01", "Previous month", "2023-12-01", "2023-12-31"),
        ("2024-01-01", "Last year", "2023-01-01", "2023-12-31"),
        ("2024-01-01", "Year to date", "2024-01-01", "2024-01-01"),
        # A Sunday still belongs to the week that began on Monday.
        ("2024-03-03", "Week to date", "2024-02-26", "2024-03-03"),
        ("2024-03-03", "Last week", "2024-02-26", "2024-03-03"),
        # Leap year: February has 29 days, and 7 days back from 1 March crosses the 29th.
        ("2024-03-01", "Previous month", "2024-02-01", "2024-02-29"),
        ("2024-03-01", "Last 7 days", "2024-02-23", "2024-03-01"),
        ("2024-02-29", "Month to date", "2024-02-01", "2024-02-29"),
        ("2023-03-01", "Previous month", "2023-02-01", "2023-02-28"),
        # A week across the turn of the year.
        ("2021-01-02", "Week to date", "2020-12-28", "2021-01-02"),
        ("2021-01-02", "Last week", "2020-12-28", "2021-01-03"),
        ("2025-01-15", "Previous month", "2024-12-01", "2024-12-31"),
    ],
)
def test_keywords_at_week_month_and_year_boundaries(today: str, keyword: str, first: str, last: str) -> None:
    assert span(keyword, d(today)) == (d(first), d(last))


@pytest.mark.parametrize(
    ("today", "days", "first"),
    [
        ("2019-06-15", "0", "2019-06-15"),
        ("2019-06-15", "5", "2019-06-10"),
        ("2024-03-01", "1", "2024-02-29"),
        ("2024-03-01", "366", "2023-03-01"),
        ("2023-03-01", "365", "2022-03-01"),
        ("2024-01-03", "10", "2023-12-24"),
    ],
)
def test_an_integer_selects_today_minus_n_to_today(today: str, days: str, first: str) -> None:
    assert span(days, d(today)) == (d(first), d(today))


def test_a_date_start_runs_to_today_or_to_end() -> None:
    assert span("2019-06-01") == (d("2019-06-01"), SATURDAY)
    query = get(start="2019-06-01", end="2019-06-15")
    assert (query.start, query.end) == (d("2019-06-01"), d("2019-06-15"))
    query = get(start="2024-02-29", end="2024-02-29")
    assert (query.start, query.end) == (d("2024-02-29"), d("2024-02-29"))


def test_invoicenum_and_invoiceid_ignore_start_and_end() -> None:
    assert get(invoiceid="42", start="nonsense", end="x") == GetQuery(invoiceid=42)
    assert get(invoicenum=" 2019-150 ", start="Today") == GetQuery(invoicenum="2019-150")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Invoice", {"invoice"}),
        ("invoices", {"invoice"}),
        ("CREDITNOTE", {"creditnote"}),
        ("CreditNotes", {"creditnote"}),
        ("", {"invoice", "creditnote"}),
    ],
)
def test_doctype_values(value: str, expected: set[str]) -> None:
    assert get(doctype=value).doctypes == expected


def test_action_is_case_insensitive_and_store_is_read() -> None:
    # Only the coordinator's source uses the store; the agent's, one store, ignores it.
    assert parse_get({"action": "get"}, SATURDAY) == GetQuery()
    assert parse_get({"action": "Get", "store": "alpha"}, SATURDAY).store == "alpha"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"action": ""}, ["action is missing", "action=Get"]),
        ({"action": "List"}, ["'List'", "action=Get"]),
        ({"start": "2019-13-01"}, ["start", "'2019-13-01'", "YYYY-MM-DD"]),
        ({"start": "2023-02-29"}, ["start", "'2023-02-29'", "calendar date"]),
        ({"start": "15/06/2019"}, ["start", "'15/06/2019'", "YYYY-MM-DD", "Last 7 days"]),
        ({"start": "-5"}, ["start", "'-5'", "number of days"]),
        ({"start": "next week"}, ["start", "'next week'", "Month to date"]),
        ({"start": "99999999"}, ["start", "'99999999'", "smaller"]),
        ({"end": "2019-06-15"}, ["end", "'2019-06-15'", "no start", "YYYY-MM-DD"]),
        ({"start": "Yesterday", "end": "2019-06-15"}, ["end", "'Yesterday'", "date start"]),
        ({"start": "5", "end": "2019-06-15"}, ["end", "'5'", "date start"]),
        ({"start": "2019-06-01", "end": "June 15"}, ["end", "'June 15'", "YYYY-MM-DD"]),
        ({"start": "2019-06-10", "end": "2019-06-01"}, ["end", "before start", "'2019-06-10'"]),
        ({"invoicenum": "A-1", "invoiceid": "7"}, ["invoicenum", "invoiceid", "'A-1'", "'7'", "only one"]),
        ({"invoiceid": "7a"}, ["invoiceid", "'7a'", "whole number"]),
        ({"invoiceid": "-7"}, ["invoiceid", "'-7'", "whole number"]),
        ({"invoiceid": "٣"}, ["invoiceid", "whole number"]),
        ({"doctype": "Quote"}, ["doctype", "'Quote'", "Invoice", "CreditNote"]),
        ({"doctype": True}, ["doctype", "must be a string", "true"]),
        ({"start": ["2019-06-01"]}, ["start", "must be a string"]),
    ],
)
def test_errors_name_the_parameter_the_value_and_what_is_accepted(fields: dict, named: list[str]) -> None:
    with pytest.raises(GetQueryError) as caught:
        parse_get({"action": "Get", **fields}, SATURDAY)
    assert caught.value.status == 400
    for part in named:
        assert part in caught.value.message, (part, caught.value.message)


def test_unknown_keyword_is_none_and_json_bodies() -> None:
    assert keyword_range("fortnight", SATURDAY) is None
    assert json_fields(b'{"action":"Get","invoiceid":7}') == {"action": "Get", "invoiceid": 7}
    assert get(invoiceid=7).invoiceid == 7  # type: ignore[arg-type]  # a JSON number works too
    for body in (b"[1]", b"{nope"):
        with pytest.raises(GetQueryError, match="JSON"):
            json_fields(body)
