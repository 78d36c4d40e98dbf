"""A fake HubSpot CRM search API (`POST /crm/v3/objects/{object}/search`), answering as HubSpot documents:
filterGroups (OR of ANDs) over the records it holds, `limit` at most 200, `after` paging, `total`, the
10,000-result cap (a 400 when paging past it), private-app tokens with scopes (401, 403 MISSING_SCOPES),
and queued faults (429 with Retry-After and HubSpot's RATE_LIMIT body, 5xx)."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from tests.fakeremote.server import Answer, FakeServer, Request

MAX_RESULTS = 10_000
_SEARCH = re.compile(r"^/crm/v3/objects/([^/]+)/search$")


def epoch_ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def iso(value: dt.datetime) -> str:
    """A datetime property as HubSpot returns it."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def rate_limited(retry_after: int | None = 1) -> Answer:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Answer(
        429,
        {
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": "SECONDLY",
        },
        headers,
    )


def server_error(status: int = 500) -> Answer:
    return Answer(
        status,
        {
            "status": "error",
            "message": "internal error",
            "correlationId": str(uuid.uuid4()),
            "category": "INTERNAL_ERROR",
        },
    )


class FakeHubSpot(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.tokens: dict[str, set[str]] = {}  # token -> granted scopes
        self._ids = itertools.count(1001)

    def grant(self, token: str, *objects: str) -> None:
        self.tokens[token] = {f"crm.objects.{obj}.read" for obj in objects}

    def add(self, obj: str, **properties: Any) -> str:
        record_id = str(next(self._ids))
        values = {name: _stored(value) for name, value in properties.items()}
        values["hs_object_id"] = record_id
        self.records.setdefault(obj, []).append({"id": record_id, "properties": values})
        return record_id

    def searches(self) -> list[Request]:
        return [r for r in self.requests if _SEARCH.match(r.path)]

    def answer(self, request: Request) -> Answer:
        match = _SEARCH.match(request.path)
        if request.method != "POST" or not match:
            return Answer(404, {"status": "error", "message": "not found", "category": "OBJECT_NOT_FOUND"})
        obj = match.group(1)
        token = request.bearer
        if token not in self.tokens:
            return Answer(
                401,
                {
                    "status": "error",
                    "message": "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    "correlationId": str(uuid.uuid4()),
                    "category": "INVALID_AUTHENTICATION",
                },
            )
        scope = f"crm.objects.{obj}.read"
        if scope not in self.tokens[token]:
            return Answer(
                403,
                {
                    "status": "error",
                    "message": "This app hasn't been granted all required scopes to make this call. "
                    "Read more about required scopes here: https://developers.hubspot.com/scopes.",
                    "correlationId": str(uuid.uuid4()),
                    "errors": [
                        {
                            "message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": [scope]},
                        }
                    ],
                    "category": "MISSING_SCOPES",
                },
            )
        body = request.json()
        limit = int(body.get("limit", 10))
        after = int(body.get("after") or 0)
        if not 1 <= limit <= 200:
            return validation_error("limit must be between 1 and 200")
        if after + limit > MAX_RESULTS:
            return validation_error(f"Paging past {MAX_RESULTS} results is not supported")
        groups = body.get("filterGroups") or []
        if len(groups) > 5 or any(len(g.get("filters", [])) > 10 for g in groups):
            return validation_error("too many filters")
        matches = [
            r for r in self.records.get(obj, []) if not groups or any(_all(r, g["filters"]) for g in groups)
        ]
        wanted = set(body.get("properties") or []) | {"hs_object_id"}
        page = matches[after : after + limit]
        answer: dict[str, Any] = {
            "total": len(matches),
            "results": [
                {
                    "id": r["id"],
                    "properties": {k: v for k, v in r["properties"].items() if k in wanted},
                    "archived": False,
                }
                for r in page
            ],
        }
        if after + limit < len(matches):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return Answer(200, answer)


def validation_error(message: str) -> Answer:
    return Answer(
        400,
        {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": "VALIDATION_ERROR",
        },
    )


def _stored(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return iso(value)
    return str(value)


@functools.lru_cache(maxsize=65536)
def _comparable(value: str) -> Decimal | str:
    """Numbers and dates compare as numbers (dates as epoch ms, as filter values are sent)."""
    try:
        return Decimal(value)
    except InvalidOperation:
        pass
    try:
        return Decimal(epoch_ms(dt.datetime.fromisoformat(value.replace("Z", "+00:00"))))
    except ValueError:
        return value.lower()


def _all(record: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
    return all(_matches(record["properties"].get(f["propertyName"]), f) for f in filters)


def _matches(stored: str | None, f: dict[str, Any]) -> bool:
    op = f["operator"]
    if op == "HAS_PROPERTY":
        return stored is not None
    if op == "NOT_HAS_PROPERTY":
        return stored is None
    if stored is None:
        return op in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN")
    have = _comparable(stored)
    if op in ("IN", "NOT_IN"):
        found = any(_comparable(v) == have for v in f["values"])
        return found if op == "IN" else not found
    want = _comparable(f["value"])
    if op == "BETWEEN":
        return _le(want, have) and _le(have, _comparable(f["highValue"]))
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        found = str(f["value"]).lower() in stored.lower().split()
        return found if op == "CONTAINS_TOKEN" else not found
    if op == "EQ":
        return have == want
    if op == "NEQ":
        return have != want
    if type(have) is not type(want):
        return False
    return {"LT": have < want, "LTE": have <= want, "GT": have > want, "GTE": have >= want}[op]  # type: ignore[operator]


def _le(a: Decimal | str, b: Decimal | str) -> bool:
    return type(a) is type(b) and a <= b  # type: ignore[operator]
