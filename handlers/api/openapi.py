"""The OpenAPI 3.1 description of the push API, served at GET /api/v1/openapi.json.

Built here, beside the endpoint it describes (handlers/api/endpoint.py), from the same
constants; tests/test_push_api_schema.py runs schemathesis against the running server with it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from bot.reports.rows import MAX_ROWS
from handlers.api.endpoint import ACTUALS_PATH, IDEMPOTENCY_KEY_MAX, LIMIT_BYTES

_TEXT_OR_NUMBER = {"oneOf": [{"type": "string", "maxLength": 100}, {"type": "number"}]}
_ACTUAL = {
    "type": "object",
    "required": ["kpi", "value"],
    "additionalProperties": False,
    "properties": {
        "kpi": {"type": "string", "description": "the KPI key, e.g. mqls", "maxLength": 200},
        "period": {
            "type": ["string", "null"],
            "description": "2026-11 (month) or 2026-W48 (ISO week); omitted: the current period",
        },
        "value": {**_TEXT_OR_NUMBER, "description": "as people type it: 1200, 1,200, 1.2万, 15%, ¥3,000万"},
        "note": {"type": ["string", "null"], "maxLength": 2000},
        "external_id": {"type": ["string", "null"], "maxLength": 200},
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["row", "field", "code", "message"],
                        "properties": {
                            "row": {"type": "integer", "minimum": 0},
                            "field": {"type": "string"},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}
_STORED = {
    "type": "object",
    "required": ["received", "created", "corrected", "unchanged", "actuals"],
    "properties": {
        "received": {"type": "integer"},
        "created": {"type": "integer"},
        "corrected": {"type": "integer"},
        "unchanged": {"type": "integer"},
        "actuals": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kpi", "period", "value", "status", "id"],
                "properties": {
                    "kpi": {"type": "string"},
                    "period": {"type": "string"},
                    "value": {"type": "string"},
                    "status": {"enum": ["created", "corrected", "unchanged"]},
                    "id": {"type": ["integer", "null"]},
                },
            },
        },
    },
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}


@cache
def document() -> dict[str, Any]:
    header = {
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kpibot push API",
            "version": "1.0.0",
            "description": (
                f"Actuals pushed by other systems. At most {MAX_ROWS} values and "
                f"{LIMIT_BYTES // (1024 * 1024)} MB per request; a batch is stored all or nothing."
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Actual": _ACTUAL, "Error": _ERROR, "Stored": _STORED},
        },
        "security": [{"bearer": []}],
        "paths": {
            ACTUALS_PATH: {
                "post": {
                    "operationId": "pushActuals",
                    "parameters": [
                        {"name": "Idempotency-Key", **header},
                        {"name": "webhook-id", **header},
                        {"name": "webhook-timestamp", **header},
                        {"name": "webhook-signature", **header},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Actual"},
                                        {
                                            "type": "object",
                                            "required": ["actuals"],
                                            "additionalProperties": False,
                                            "properties": {
                                                "actuals": {
                                                    "type": "array",
                                                    "minItems": 1,
                                                    "maxItems": MAX_ROWS,
                                                    "items": {"$ref": "#/components/schemas/Actual"},
                                                }
                                            },
                                        },
                                    ]
                                }
                            },
                            "text/csv": {
                                "schema": {
                                    "type": "string",
                                    "description": "kpi,period,value,note,external_id",
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "stored (or replayed: Idempotent-Replayed: true)",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Stored"}}
                            },
                        },
                        "400": _error("the body cannot be read (malformed JSON or CSV, bad header)"),
                        "401": _error("bad, missing or revoked token; bad signature"),
                        "403": _error("a KPI outside the source's scope"),
                        "411": _error("Content-Length not a number"),
                        "413": _error("body over the size limit"),
                        "415": _error("not application/json or text/csv"),
                        "422": _error("rows refused; every problem listed by row and field"),
                        "429": _error("over the source's rate", _RETRY_AFTER),
                        "500": _error("a fault of ours; nothing stored"),
                        "503": _error("database unavailable", _RETRY_AFTER),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": {
                        "200": {"description": "this document", "content": {"application/json": {}}}
                    },
                }
            },
        },
    }
