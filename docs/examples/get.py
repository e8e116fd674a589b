#!/usr/bin/env python3
"""Concord WebService "Get": a sample client, standard library only (Python 3.8 or later).

It asks a Get feed for invoices and credit notes and prints one line per document,
tab-separated (ID, Type, Num, Status, Date, Client, Subtotal, Tax, Tax2) after a header
line, so the output goes straight into a spreadsheet, awk or cut.

    python3 get.py URL TOKEN [field=value ...]

    # an agent: this store's documents, numbered or not (Num is empty until numbered)
    python3 get.py http://127.0.0.1:8701/webservice "$AGENT_WEBSERVICE_TOKEN" start="Month to date"
    # the coordinator: the issued documents of every store (keys are STORE/ID)
    python3 get.py http://127.0.0.1:8700/v1/webservice "$READER_TOKEN" store=eu-1 doctype=Invoices

URL and TOKEN may come from the environment instead: CONCORD_GET_URL, CONCORD_GET_TOKEN.
The fields are the contract's filters (docs/api.md, "The WebService Get feed"): start, end,
invoicenum, invoiceid, doctype, and store on the coordinator. Exit status 0 on success;
1 with a line on stderr when the command line is wrong, the feed cannot be reached, or it
refused the request (its message says what to fix).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

FILTERS = ("start", "end", "invoicenum", "invoiceid", "doctype", "store")
COLUMNS = ("ID", "Type", "Num", "Status", "Date", "Client", "Subtotal", "Tax", "Tax2")
# A tab or line break inside a value would shift the columns: each is printed as a space.
ONE_CELL = str.maketrans("\t\r\n", "   ")


def parse_arguments(arguments: list[str]) -> tuple[str, str, dict[str, str]]:
    """URL and TOKEN (positional, else from the environment) and the filter fields."""
    positional: list[str] = []
    fields: dict[str, str] = {}
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if equals and name in FILTERS:
            fields[name] = value
        else:
            positional.append(argument)
    if len(positional) > 2:
        raise SystemExit(
            f"usage: get.py URL TOKEN [field=value ...]; unknown: {positional[2]!r}"
            f" (fields: {', '.join(FILTERS)})"
        )
    url = positional[0] if positional else os.environ.get("CONCORD_GET_URL", "")
    token = positional[1] if len(positional) > 1 else os.environ.get("CONCORD_GET_TOKEN", "")
    if not url or not token:
        raise SystemExit(
            "usage: get.py URL TOKEN [field=value ...] (or set CONCORD_GET_URL and CONCORD_GET_TOKEN)"
        )
    return url, token, fields


def get_documents(url: str, token: str, fields: dict[str, str]) -> dict[str, dict]:
    """POST the Get request as a form, the way the contract's PHP sample does with curl."""
    body = urllib.parse.urlencode({"action": "Get", "token": token, **fields}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        # Errors have the contract's shape: {"result": "error", "message": "..."}.
        try:
            answer = json.load(error)
        except ValueError:
            answer = {}
        message = answer.get("message") if isinstance(answer, dict) else None
        raise SystemExit(f"the feed answered HTTP {error.code}: {message or error.reason}") from None
    except urllib.error.URLError as error:
        raise SystemExit(f"cannot reach {url}: {error.reason}") from None


def row(key: str, document: dict) -> tuple[str, ...]:
    """The printed columns of one document. ClientData comes from the invoice snapshot."""
    client, doc = document["ClientData"], document["DocData"]
    name = client["CompanyName"] or client["ClientName"]
    return (
        key,
        doc["Type"],
        doc["Num"],
        doc["Status"],
        doc["Date"],
        name,
        doc["Subtotal"],
        doc["Tax"],
        doc["Tax2"],
    )


def main() -> None:
    url, token, fields = parse_arguments(sys.argv[1:])
    documents = get_documents(url, token, fields)
    # The answer is one JSON object keyed by document ID, in date then ID order.
    print("\t".join(COLUMNS))
    for key, document in documents.items():
        print("\t".join(value.translate(ONE_CELL) for value in row(key, document)))
    print(f"{len(documents)} documents", file=sys.stderr)


if __name__ == "__main__":
    main()
