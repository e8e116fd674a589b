"""The OpenAPI document, generated from the route table, the request and answer models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from coordinator.http import agent_protocol
from coordinator.http.errors import MAX_BODY_MIB
from coordinator.http.routes import FEED_PATHS, PATH_PARAMETERS, ROUTES, Route
from getfeed.query import MAX_FIELD_LENGTH

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
# The Get feed answers in the contract's shape (docs/api.md, "WebService Get feed").
_FEED_ERROR = {
    "type": "object",
    "required": ["result", "message"],
    "properties": {"result": {"const": "error"}, "message": {"type": "string"}},
}
_FEED_ANSWER = {
    "type": "object",
    "description": "The documents by key (STORE/ID), each {Store, ClientData, DocData, …}",
    "additionalProperties": {"type": "object"},
}
_FEED_TEXT = {"type": "string", "maxLength": MAX_FIELD_LENGTH}
_FEED_VALUE = {"anyOf": [_FEED_TEXT, {"type": "integer"}]}  # JSON may send numbers as numbers
_FEED_FIELDS = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {**_FEED_TEXT, "description": "Get (any case)"},
        "token": {**_FEED_TEXT, "description": "A reader or operator token (or send it as Bearer)"},
        "ws": {**_FEED_TEXT, "description": "einvoice, on the Billing Extension path"},
        "doctype": {**_FEED_TEXT, "description": "Invoice or CreditNote; empty: both"},
        "start": {**_FEED_VALUE, "description": "YYYY-MM-DD, a number of days, or a keyword"},
        "end": {**_FEED_TEXT, "description": "YYYY-MM-DD, with a date start"},
        "invoicenum": {**_FEED_TEXT, "description": "One document by its number"},
        "invoiceid": {**_FEED_VALUE, "description": "One document by its ID"},
        "store": {**_FEED_TEXT, "description": "Only this store's documents"},
    },
    "propertyNames": {"maxLength": MAX_FIELD_LENGTH},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Components:
    """The named schemas the document refers to, gathered while the paths are built."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {
            "Error": _ERROR,
            "FeedError": _FEED_ERROR,
            "FeedAnswer": _FEED_ANSWER,
            "FeedFields": _FEED_FIELDS,
        }

    def model(self, model: type[BaseModel], mode: str) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
        self.schemas.update(schema.pop("$defs", {}))
        self.schemas[model.__name__] = schema
        return _ref(model.__name__)


def _refused(feed: bool, writes: bool) -> dict[str, Any]:
    error = _json(_ref("Error"))
    refused = {
        "4XX": {
            "description": "Refused; nothing changed",
            "content": _json(_ref("FeedError")) if feed else error,
        },
        "503": {
            "description": "The ledger database is unavailable"
            + ("; the write was not made: send the same request again" if writes else ""),
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying",
                    "schema": {"type": "integer"},
                }
            },
            "content": error,
        },
    }
    if feed:  # refused by the HTTP layer before the feed reads the request
        refused["413"] = {"description": f"The body is larger than {MAX_BODY_MIB} MiB", "content": error}
    return refused


def _operation(route: Route, components: _Components) -> dict[str, Any]:
    feed = route.path in FEED_PATHS
    if route.answer is not None:
        ok: dict[str, Any] = {"content": _json(components.model(route.answer, "serialization"))}
    elif feed:
        ok = {"content": _json(_ref("FeedAnswer"))}
    elif route.path == "/metrics":
        ok = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    else:
        ok = {}
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.operation_id,
        "responses": {
            **{
                str(status): {"description": "OK" if status == 200 else "Created", **ok}
                for status in route.statuses
            },
            **(_refused(feed, route.writes) if route.path != "/metrics" else {}),
        },
    }
    if route.path == "/healthz":  # unhealthy: the health answer saying why, or an error
        op["responses"]["503"]["content"] = _json(
            {"anyOf": [ok["content"]["application/json"]["schema"], _ref("Error")]}
        )
    if route.roles:
        op["security"] = [{"bearer": []}]
        op["description"] = f"Roles: {', '.join(route.roles)}."
    params = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]}
        for name in re.findall(r"\{(\w+)\}", route.path)
    ] + [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in route.query.items()
    ]
    if route.roles and "peer" in route.roles:
        params.append(
            {
                "name": agent_protocol.HEADER,
                "in": "header",
                "required": False,
                "description": "The agent's protocol (agents send it); outside these "
                "bounds: 400 agent_protocol_unsupported",
                "schema": {
                    "type": "integer",
                    "minimum": agent_protocol.OLDEST,
                    "maximum": agent_protocol.NEWEST,
                },
            }
        )
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": _json(components.model(route.body, "validation"))}
    if feed:
        op["security"] = [{"bearer": []}, {}]  # or the token in the `token` field
        fields = _ref("FeedFields")
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": fields},
                "multipart/form-data": {"schema": fields},
                "application/json": {"schema": fields},
            },
        }
    return op


def openapi_document(version: str) -> dict[str, Any]:
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, components)
    paths["/openapi.json"] = {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {"200": {"description": "OK", "content": _json({"type": "object"})}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Concord coordinator",
            "version": version,
            "description": "Gapless, hash-chained invoice numbering for several WHMCS "
            "stores. Input rules: docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
