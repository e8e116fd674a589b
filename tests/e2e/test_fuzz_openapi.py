"""schemathesis over the coordinator's own OpenAPI document, against a live coordinator.

Every operation gets generated requests, valid and invalid (wrong types, out-of-range
numbers, NUL characters, missing fields, unknown methods, …), each sent with every role's
token. Each answer must not be a 5xx and must match the document: its status and headers
are declared and its body has the declared schema (the error body on 4xx, the Get feed's
own error on the feed); a request the document says is invalid is refused, and so is one
without a token where the document asks for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from coordinator.db import connect
from coordinator.http.openapi import openapi_document
from coordinator.http.routes import FEED_PATHS
from coordinator.migrations import migrate
from coordinator.peers.tokens import create_api_token
from simulator.scratch_postgres import fresh_database
from tests.conftest import bearer
from tests.support.coordinator_process import CoordinatorProcess

EXAMPLES_PER_OPERATION = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    response_headers_conformance,
    missing_required_header,
    unsupported_method,
    ignored_auth,
]

# The document /openapi.json serves (the live one is compared with it below). Loaded at
# import: schemathesis' lazy fixture loader does not work with this pytest.
DOCUMENT = openapi_document(version("concord"))
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION, deterministic=True)


@dataclass(frozen=True)
class Live:
    url: str
    tokens: dict[str, str]  # role: token


async def _api_tokens(database_url: str) -> dict[str, str]:
    conn = await connect(database_url)
    try:
        await migrate(conn)
        return {role: await create_api_token(conn, role) for role in ("operator", "reader")}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def live(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One coordinator process on a fresh database, with an operator, a reader and a store."""
    with fresh_database(postgres_admin_url, "concord_fuzz") as database_url:
        tokens = asyncio.run(_api_tokens(database_url))
        process = CoordinatorProcess(database_url, Path(tmp_path_factory.mktemp("fuzz")), "coordinator")
        asyncio.run(process.start())
        try:
            store = requests.post(
                f"{process.url}/v1/peers",
                headers=bearer(tokens["operator"]),
                json={"name": "alpha", "url": "http://127.0.0.1:8701"},
                timeout=10,
            )
            assert store.status_code == 201, store.text
            yield Live(process.url, {**tokens, "peer": store.json()["token"]})
        finally:
            process.stop()


def test_the_fuzzed_document_is_the_one_served(live: Live) -> None:
    assert requests.get(f"{live.url}/openapi.json", timeout=10).json() == DOCUMENT


@pytest.mark.slow
@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_every_answer_is_declared_and_never_a_server_error(case: schemathesis.Case, live: Live) -> None:
    # A generated Authorization header is replaced by each role's real token in turn; a case
    # that leaves it out on purpose (the request must then be refused) is sent without. The
    # Get feed takes a token optionally (or in its `token` field): it always gets each one.
    if "Authorization" not in (case.headers or {}) and case.path not in FEED_PATHS:
        case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=10)
        return
    for token in live.tokens.values():
        case.call_and_validate(base_url=live.url, headers=bearer(token), checks=CHECKS, timeout=10)
