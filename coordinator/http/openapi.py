"""The OpenAPI document, generated from the route table and the request models."""

from __future__ import annotations

import re
from typing import Any

from coordinator.http.routes import ROUTES

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}},
}


def openapi_document(version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                "200": {"description": "OK"},
                "4XX": {"description": "Refused; nothing changed",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        if route.roles:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Roles: {', '.join(route.roles)}."
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"\{(\w+)\}", route.path)
        ] + [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
             for name in route.query]
        if params:
            op["parameters"] = params
        if route.body is not None:
            schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[route.body.__name__] = schema
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    paths["/openapi.json"] = {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Concord coordinator", "version": version,
                 "description": "Gapless, hash-chained invoice numbering for several WHMCS "
                                "stores."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
