"""`source: {kind: salesforce, …}`: a KPI's value from a SOQL aggregate through Salesforce's REST API.

    source:
      kind: salesforce
      connection: SFDC          # names the environment variables below
      soql: >-
        SELECT COUNT() FROM Opportunity
        WHERE IsWon = true AND CloseDate >= :period_start AND CloseDate < :period_end
      api_version: "62.0"       # optional

The connection lives in the environment, never in the plan: for `connection: SFDC`,
`KPIBOT_SALESFORCE_SFDC_URL` (the org's My Domain URL, https://acme.my.salesforce.com),
`KPIBOT_SALESFORCE_SFDC_CLIENT_ID` and `KPIBOT_SALESFORCE_SFDC_CLIENT_SECRET` (the connected or external
client app's consumer key and secret, with the client credentials flow enabled and a run-as user).

What Salesforce documents, and what we do about it:

- Token: OAuth 2.0 client credentials, `POST {My Domain}/services/oauth2/token` with
  `grant_type=client_credentials&client_id=…&client_secret=…` (form-encoded); the answer carries
  `access_token` and `instance_url` ("Connect REST API quick start: connect using OAuth",
  https://developer.salesforce.com/docs/atlas.en-us.262.0.chatterapi.meta/chatterapi/quickstart_connecting.htm).
  A refusal is `{"error": "invalid_client" | "invalid_grant" | …, "error_description": …}` → auth, not
  transient. The token is cached per process and connection; the flow issues no refresh token, so on a
  `401` (`INVALID_SESSION_ID`, "Session expired or invalid") we ask for a new one once and run the query
  again; a second `401` is auth.
- Query: `GET {instance_url}/services/data/vXX.X/query?q=…` answers `totalSize`, `done`, `records` and,
  when more than one batch, `nextRecordsUrl` ("Query",
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-query). `SELECT COUNT() …` returns
  no records and the count in `totalSize`; an aggregate such as `SUM(Amount)` returns one record with the
  value under `expr0`, or under its alias. The value is that one number: no record → no_row, a null
  aggregate (no rows matched a SUM) → null, more than one record → many_rows. We never follow
  `nextRecordsUrl`: a result that needs it has more than one row, which is already the wrong answer, and
  `totalSize` says so without fetching the rest.
- Binds: `:period_start` and `:period_end` (the half-open period, end = the first day after it) become
  SOQL date literals (`2026-11-01`, unquoted, as SOQL writes dates for Date fields such as CloseDate; a
  DateTime field compares with them through a date function: `DAY_ONLY(convertTimezone(CreatedDate))`).
  They are the only text put into the query: any other `:name` outside a string literal is refused at
  plan import, and both must appear (a query without the period would give every period the same value).
- Errors ("Status Codes and Error Responses",
  https://developer.salesforce.com/docs/platform/api-rest/guide/errorcodes): 400 (`MALFORMED_QUERY`,
  `INVALID_FIELD` …) and 404 → bad_spec; 403 `REQUEST_LIMIT_EXCEEDED` (the org's 24-hour API limit) →
  rate_limited at once; other 403 (`INSUFFICIENT_ACCESS` …) → scope; 429, or 503 with
  `REQUEST_LIMIT_EXCEEDED`, retried after `Retry-After` (1 s when absent) up to 3 times, then
  rate_limited; other 5xx → server_error, transient.

The client secret and the access token are sent only in the token request's body and the
Authorization header; no log line or error carries them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote_plus, urlencode

from bot.sources.fetching import FetchError, FetchRequest, SpecError
from bot.sources.remote import transport

KIND = "salesforce"

DEFAULT_API_VERSION = "62.0"
BINDS = ("period_start", "period_end")

_CONNECTION = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,40}$")
_VERSION = re.compile(r"^\d{2,3}\.0$")
_COUNT = re.compile(r"^\s*SELECT\s+COUNT\(\s*\)\s+FROM\b", re.IGNORECASE)
_SELECT = re.compile(r"^\s*SELECT\b", re.IGNORECASE)
_BIND = re.compile(r"(?<![\w:]):([A-Za-z_]\w*)")
_INLINE_SECRET_KEYS = ("client_secret", "client_id", "password", "token", "access_token", "url")

_policy = transport.RetryPolicy()


@dataclass(frozen=True)
class _Connection:
    domain: str
    client_id: str
    client_secret: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.client_id)


@dataclass(frozen=True)
class _Token:
    access_token: str
    instance_url: str


_tokens: dict[tuple[str, str], _Token] = {}
_tokens_lock = threading.Lock()


def env_names(connection: str) -> tuple[str, str, str]:
    """The variables a connection is read from: URL, client id, client secret."""
    prefix = f"KPIBOT_SALESFORCE_{connection.upper()}"
    return (f"{prefix}_URL", f"{prefix}_CLIENT_ID", f"{prefix}_CLIENT_SECRET")


def validate(spec: Mapping[str, object]) -> None:
    for key in _INLINE_SECRET_KEYS:
        if key in spec:
            raise SpecError(
                f"`{key}` must not be in the plan: the connection's URL and credentials come from "
                f"{', '.join(env_names('<connection>'))}"
            )
    connection = spec.get("connection")
    if not isinstance(connection, str) or not _CONNECTION.match(connection):
        raise SpecError("`connection` is required: a name such as SFDC (letters, digits, _)")
    version = spec.get("api_version", DEFAULT_API_VERSION)
    if not isinstance(version, str) or not _VERSION.match(version):
        raise SpecError('`api_version` is a REST API version such as "62.0"')
    soql = spec.get("soql")
    if not isinstance(soql, str) or not _SELECT.match(soql):
        raise SpecError(
            "`soql` is required: a SELECT with one aggregate, e.g. SELECT COUNT() FROM Opportunity …"
        )
    names = _bind_names(soql)
    unknown = sorted(names - set(BINDS))
    if unknown:
        raise SpecError(
            f"unknown bind(s) {', '.join(':' + n for n in unknown)}: only :period_start and :period_end"
        )
    missing = [f":{name}" for name in BINDS if name not in names]
    if missing:
        raise SpecError(f"`soql` must use {' and '.join(missing)} so that each period gets its own value")


def bind(soql: str, start: dt.date, end: dt.date) -> str:
    """The query with :period_start / :period_end replaced by date literals, outside string literals only."""
    values = {"period_start": start.isoformat(), "period_end": end.isoformat()}
    return "".join(
        chunk if quoted else _BIND.sub(lambda m: values.get(m.group(1), m.group(0)), chunk)
        for chunk, quoted in _chunks(soql)
    )


def fetch(request: FetchRequest, env: Mapping[str, str]) -> Decimal:
    spec = request.spec
    try:
        validate(spec)
    except SpecError as error:
        raise FetchError("bad_spec", str(error), transient=False) from error
    url_var, id_var, secret_var = env_names(str(spec["connection"]))
    connection = _Connection(
        domain=transport.base_url(transport.secret(env, url_var), url_var),
        client_id=transport.secret(env, id_var),
        client_secret=transport.secret(env, secret_var),
    )
    soql = bind(str(spec["soql"]), request.period_start, request.period_end)
    path = f"/services/data/v{spec.get('api_version', DEFAULT_API_VERSION)}/query?q={quote_plus(soql)}"

    token = _token(connection, request.timeout_s)
    reply = _query(token, path, request.timeout_s)
    if reply.status == 401:
        # Expired or revoked: one new token, one more try.
        token = _token(connection, request.timeout_s, stale=token)
        reply = _query(token, path, request.timeout_s)
        if reply.status == 401:
            raise FetchError("auth", f"Salesforce refused a new token: {_message(reply)}", transient=False)
    if reply.status != 200:
        raise _error(reply)
    answer = reply.json()
    if not isinstance(answer, dict):
        raise FetchError("bad_response", "Salesforce's query answer is not an object")
    return _value(answer, counts=bool(_COUNT.match(soql)))


def _token(connection: _Connection, timeout: float, *, stale: _Token | None = None) -> _Token:
    with _tokens_lock:
        cached = _tokens.get(connection.key)
        if cached is not None and cached != stale:
            return cached  # another thread may already have replaced the stale one
    data = urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": connection.client_id,
            "client_secret": connection.client_secret,
        }
    ).encode()
    reply = transport.with_rate_limit_retries(
        lambda: transport.send(
            "POST",
            f"{connection.domain}/services/oauth2/token",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            data=data,
            timeout=timeout,
        ),
        limited=lambda reply: reply.status == 429,
        policy=_policy,
        vendor="Salesforce",
    )
    if reply.status >= 500:
        raise FetchError("server_error", f"Salesforce's token endpoint answered {reply.status}")
    body = reply.json()
    if reply.status != 200:
        error = body.get("error") if isinstance(body, dict) else None
        detail = body.get("error_description") if isinstance(body, dict) else None
        raise FetchError(
            "auth", f"Salesforce refused the client credentials: {error}: {detail}", transient=False
        )
    if not isinstance(body, dict) or not body.get("access_token") or not body.get("instance_url"):
        raise FetchError("bad_response", "Salesforce's token answer has no access_token or instance_url")
    token = _Token(str(body["access_token"]), transport.base_url(str(body["instance_url"]), "instance_url"))
    with _tokens_lock:
        _tokens[connection.key] = token
    return token


def _query(token: _Token, path: str, timeout: float) -> transport.Reply:
    headers = {"Authorization": f"Bearer {token.access_token}", "Accept": "application/json"}
    return transport.with_rate_limit_retries(
        lambda: transport.send("GET", f"{token.instance_url}{path}", headers=headers, timeout=timeout),
        limited=lambda reply: (
            reply.status == 429 or (reply.status == 503 and _code(reply) == "REQUEST_LIMIT_EXCEEDED")
        ),
        policy=_policy,
        vendor="Salesforce",
    )


def _value(answer: Mapping[str, Any], *, counts: bool) -> Decimal:
    total = answer.get("totalSize")
    if not isinstance(total, int) or isinstance(total, bool):
        raise FetchError("bad_response", "Salesforce's query answer has no totalSize")
    if counts:
        return Decimal(total)
    records = answer.get("records")
    if not isinstance(records, list):
        raise FetchError("bad_response", "Salesforce's query answer has no records")
    if total > 1 or len(records) > 1 or answer.get("done") is False:
        raise FetchError("many_rows", f"the query returned {max(total, len(records))} rows", transient=False)
    if not records:
        raise FetchError("no_row", "the query returned no row", transient=False)
    fields = {name: value for name, value in records[0].items() if name != "attributes"}
    if len(fields) != 1:
        raise FetchError(
            "bad_spec", f"the query returns {len(fields)} columns; one number expected", transient=False
        )
    ((name, value),) = fields.items()
    if value is None:
        raise FetchError("null", f"{name} is null", transient=False)
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise FetchError("not_a_number", f"{name} is {str(value)[:40]!r}", transient=False)
    try:
        number = Decimal(value)
    except ArithmeticError as error:
        raise FetchError("not_a_number", f"{name} is {str(value)[:40]!r}", transient=False) from error
    if not number.is_finite():
        raise FetchError("not_a_number", f"{name} is {value!r}", transient=False)
    return number


def _error(reply: transport.Reply) -> FetchError:
    code, message = _code(reply), _message(reply)
    if reply.status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
        return FetchError("rate_limited", f"Salesforce: {message}", retry_after=transport.retry_after(reply))
    if reply.status == 403:
        return FetchError("scope", f"Salesforce refused the query ({code}): {message}", transient=False)
    if reply.status in (400, 404):
        return FetchError("bad_spec", f"Salesforce refused the query ({code}): {message}", transient=False)
    if reply.status >= 500:
        return FetchError("server_error", f"Salesforce answered {reply.status} ({code}): {message}")
    return FetchError("bad_response", f"Salesforce answered {reply.status} ({code}): {message}")


def _errors(reply: transport.Reply) -> list[Mapping[str, Any]]:
    # REST API errors are a JSON array of {message, errorCode, fields}.
    try:
        body = json.loads(reply.body)
    except ValueError:
        return []
    items = body if isinstance(body, list) else [body]
    return [item for item in items if isinstance(item, dict)]


def _code(reply: transport.Reply) -> str:
    return next((str(e.get("errorCode")) for e in _errors(reply) if e.get("errorCode")), "")


def _message(reply: transport.Reply) -> str:
    return next(
        (str(e.get("message"))[:300] for e in _errors(reply) if e.get("message")), f"HTTP {reply.status}"
    )


def _bind_names(soql: str) -> set[str]:
    return {name for chunk, quoted in _chunks(soql) if not quoted for name in _BIND.findall(chunk)}


def _chunks(soql: str) -> list[tuple[str, bool]]:
    """The query cut into (text, inside a '…' string literal) pieces; backslash escapes stay inside."""
    chunks: list[tuple[str, bool]] = []
    start, i, quoted = 0, 0, False
    while i < len(soql):
        char = soql[i]
        if quoted and char == "\\":
            i += 2
            continue
        if char == "'":
            if quoted:
                chunks.append((soql[start : i + 1], True))
                start = i + 1
            else:
                chunks.append((soql[start:i], False))
                start = i
            quoted = not quoted
        i += 1
    chunks.append((soql[start:], quoted))
    return chunks
