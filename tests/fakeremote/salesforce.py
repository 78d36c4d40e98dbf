"""A fake Salesforce org: the OAuth 2.0 token endpoint (client credentials) and the REST query resource.

It runs the small part of SOQL the tests use, over records it holds:
`SELECT COUNT() | SUM(Field) [alias] | AVG(Field) [alias] | Field FROM Object [WHERE cond AND cond …]`,
a cond being `Field op literal` (op = != < <= > >=; literal true, false, null, 'text', a number or a
date YYYY-MM-DD). Anything else is a 400 MALFORMED_QUERY, as Salesforce answers a query it cannot parse.
Answers as documented: `totalSize`/`done`/`records`, aggregates under `expr0` or their alias,
`nextRecordsUrl` batches, 401 INVALID_SESSION_ID for an unknown or expired token, and queued faults.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import uuid
from decimal import Decimal
from typing import Any

from tests.fakeremote.server import Answer, FakeServer, Request

_QUERY = re.compile(r"^/services/data/v(\d+\.\d)/query/?$")
_MORE = re.compile(r"^/services/data/v(\d+\.\d)/query/(01gFAKE\d+)-(\d+)$")
_STATEMENT = re.compile(
    r"^\s*SELECT\s+(?P<select>.+?)\s+FROM\s+(?P<object>\w+)(?:\s+WHERE\s+(?P<where>.+?))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_AGGREGATE = re.compile(r"^(SUM|AVG)\(\s*(\w+)\s*\)(?:\s+(\w+))?$", re.IGNORECASE)
_COND = re.compile(r"^\s*(\w+)\s*(=|!=|<=|>=|<|>)\s*('(?:[^'\\]|\\.)*'|\S+)\s*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, [{"message": message, "errorCode": code}], headers or {})


class FakeSalesforce(FakeServer):
    def __init__(
        self, *, client_id: str = "3MVG9fake", client_secret: str = "s3cr3t", batch_size: int = 2000
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret, self.batch_size = client_id, client_secret, batch_size
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.valid_tokens: set[str] = set()
        self.reject_every_token = False
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._serial = itertools.count(1)

    def add(self, obj: str, **fields: Any) -> None:
        self.records.setdefault(obj, []).append(fields)

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def token_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/services/oauth2/token"]

    def queries(self) -> list[Request]:
        return [r for r in self.requests if r.path.startswith("/services/data/")]

    def answer(self, request: Request) -> Answer:
        if request.path == "/services/oauth2/token" and request.method == "POST":
            return self._token(request.form())
        if request.method == "GET" and (_QUERY.match(request.path) or _MORE.match(request.path)):
            if self.reject_every_token or request.bearer not in self.valid_tokens:
                return error(401, "INVALID_SESSION_ID", "Session expired or invalid")
            more = _MORE.match(request.path)
            if more:
                return self._batch(more.group(1), more.group(2), int(more.group(3)))
            return self._query(_QUERY.match(request.path).group(1), request.query.get("q", ""))  # type: ignore[union-attr]
        return error(404, "NOT_FOUND", "The requested resource does not exist")

    def _token(self, form: dict[str, str]) -> Answer:
        if form.get("grant_type") != "client_credentials":
            return Answer(
                400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
            )
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return Answer(400, {"error": "invalid_client", "error_description": "invalid client credentials"})
        token = f"00DFAKE000000001!{uuid.uuid4().hex}"
        self.valid_tokens.add(token)
        return Answer(
            200,
            {
                "access_token": token,
                "signature": "fake-signature=",
                "token_format": "opaque",
                "instance_url": self.url,
                "id": f"{self.url}/id/00DFAKE000000001/005FAKE000000001",
                "token_type": "Bearer",
                "issued_at": str(int(dt.datetime.now(dt.UTC).timestamp() * 1000)),
            },
        )

    def _query(self, version: str, soql: str) -> Answer:
        statement = _STATEMENT.match(soql)
        if not statement:
            return error(400, "MALFORMED_QUERY", f"unexpected token in: {soql[:80]}")
        obj, select = statement.group("object"), statement.group("select").strip()
        try:
            conditions = [
                _condition(c) for c in re.split(r"\s+AND\s+", statement.group("where") or "", flags=re.I) if c
            ]
        except ValueError as exc:
            return error(400, "MALFORMED_QUERY", str(exc))
        rows = [r for r in self.records.get(obj, []) if all(test(r) for test in conditions)]
        if re.fullmatch(r"COUNT\(\s*\)", select, re.IGNORECASE):
            return Answer(200, {"totalSize": len(rows), "done": True, "records": []})
        aggregate = _AGGREGATE.match(select)
        if aggregate:
            function, field, alias = aggregate.groups()
            values = [Decimal(str(r[field])) for r in rows if r.get(field) is not None]
            value: Decimal | None = None
            if values:
                value = sum(values, Decimal(0)) / (len(values) if function.upper() == "AVG" else 1)
            record = {
                "attributes": {"type": "AggregateResult"},
                alias or "expr0": None if value is None else float(value),
            }
            return Answer(200, {"totalSize": 1, "done": True, "records": [record]})
        if not re.fullmatch(r"\w+", select):
            return error(400, "MALFORMED_QUERY", f"unsupported select list: {select}")
        records = [{"attributes": {"type": obj}, select: _as_json(r.get(select))} for r in rows]
        cursor = f"01gFAKE{next(self._serial)}"
        self._cursors[cursor] = records
        return self._batch(version, cursor, 0)

    def _batch(self, version: str, cursor: str, offset: int) -> Answer:
        records = self._cursors.get(cursor)
        if records is None:
            return error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        end = offset + self.batch_size
        answer: dict[str, Any] = {
            "totalSize": len(records),
            "done": end >= len(records),
            "records": records[offset:end],
        }
        if end < len(records):
            answer["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{end}"
        return Answer(200, answer)


def _as_json(value: Any) -> Any:
    """A field as Salesforce's JSON writes it: numbers as numbers, dates as YYYY-MM-DD."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _condition(text: str) -> Any:
    match = _COND.match(text)
    if not match:
        raise ValueError(f"unexpected token in condition: {text.strip()[:60]}")
    field, op, raw = match.groups()
    want = _literal(raw)

    def test(row: dict[str, Any]) -> bool:
        have = row.get(field)
        if op in ("=", "!="):
            return (have == want) == (op == "=")
        if have is None or want is None:
            return False
        return {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want}[op]

    return test


def _literal(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if raw.startswith("'"):
        return raw[1:-1].replace("\\'", "'")
    if _DATE.match(raw):
        return dt.date.fromisoformat(raw)
    if _NUMBER.match(raw):
        return Decimal(raw)
    raise ValueError(f"unexpected token: {raw[:40]}")
