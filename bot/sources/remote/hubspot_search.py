"""`source: {kind: hubspot, …}`: a KPI's value from HubSpot's CRM search API.

    source:
      kind: hubspot
      object: contacts                     # contacts, companies, deals, tickets, or a custom object's type id
      token_env: HUBSPOT_TOKEN             # the private app's access token is read from this variable
      filters:                             # one filter group (AND); `filter_groups:` for several (OR)
        - {property: lifecyclestage, operator: EQ, value: marketingqualifiedlead}
      date_property: hs_v2_date_entered_marketingqualifiedlead   # the date that puts a record in a period
      sum: null                            # a property to add up (amount on deals); without it, the count
      timezone: Asia/Tokyo                 # optional: where the period's days start (see below)

What HubSpot documents, and what we do about it:

- The request is `POST {base}/crm/v3/objects/{object}/search` with `filterGroups` (groups OR-ed, filters
  within a group AND-ed), `properties`, `limit` (at most 200) and the paging cursor `after`; the answer
  has `total`, `results` and `paging.next.after` ("Search the CRM",
  https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm). The base URL is
  `HUBSPOT_API_BASE` (default https://api.hubapi.com), so the tests point it at a fake.
- Filter values for dates are UNIX timestamps in milliseconds
  (https://developers.hubspot.com/docs/faq/how-should-timestamps-be-formatted-for-hubspots-apis). The
  period is half-open: `date_property GTE <start> AND date_property LT <end>`, added to every filter group,
  with the bounds at midnight in the period's time zone: the spec's `timezone`, else the one the caller
  passes in `FetchRequest.extra["timezone"]` (the department's), else UTC. Date-only HubSpot properties
  (date pickers) hold midnight UTC: give such a KPI `timezone: UTC`.
- Limits on filters: 5 filter groups, 10 filters per group, 25 in all, counting our two date filters
  (changelog, August 2024: https://developers.hubspot.com/changelog/breaking-change-expanded-filtering-capabilities-and-error-messaging-in-hubspots-search-api).
- Rate: the search endpoints allow 4 requests per second per token (changelog "CRM Search API Rate Limit
  Increase", https://developers.hubspot.com/changelog/crm-search-api-rate-limit-increase); we space
  requests in-process to `HUBSPOT_SEARCH_RPS` per second (default 4). A `429` is retried after its
  `Retry-After` (1 s when absent) up to 3 times within the fetch; then, or when `Retry-After` is over 10 s
  (the daily limit), FetchError("rate_limited", retry_after=…), left to the scheduler's backoff.
- A query returns at most 10,000 results; paging past them is a 400 (the search guide's limits; also
  https://docs.aws.amazon.com/glue/latest/dg/hubspot-connector-limitations.html). A count reads `total`
  from one request of one result, which is exact above 10,000. A sum must page through the results, so
  when `total` is over 10,000 we **split the period** into halves (half-open, so no record counts twice)
  until each window holds at most 10,000 and add the windows up; a window narrower than one second that
  still holds more raises too_many_results.
- Errors (https://developers.hubspot.com/docs/api-reference/error-handling): 401 → auth, 403 (the
  token lacks the object's scope, `category: MISSING_SCOPES`) → scope, 400/404 (unknown property or
  object) → bad_spec, none of them transient; 5xx → server_error, transient.

The token is read only from the environment variable the spec names, sent only in the Authorization
header, and appears in no log line or error.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.sources.fetching import FetchError, FetchRequest, SpecError
from bot.sources.remote import transport

KIND = "hubspot"

DEFAULT_BASE = "https://api.hubapi.com"
BASE_ENV = "HUBSPOT_API_BASE"
RPS_ENV = "HUBSPOT_SEARCH_RPS"
DEFAULT_RPS = 4.0
PAGE_LIMIT = 200
MAX_RESULTS = 10_000
MAX_GROUPS, MAX_PER_GROUP, MAX_FILTERS = 5, 10, 25
MIN_WINDOW_MS = 1_000

# The search API's operators, by what each takes besides the property.
_SINGLE = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}
_MANY = {"IN", "NOT_IN"}
_NONE = {"HAS_PROPERTY", "NOT_HAS_PROPERTY"}
_RANGE = {"BETWEEN"}
OPERATORS = _SINGLE | _MANY | _NONE | _RANGE

_OBJECT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # contacts, deals, p_custom, 2-1234567
_PROPERTY = re.compile(r"^[A-Za-z0-9_]{1,100}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_INLINE_SECRET_KEYS = ("token", "access_token", "api_key", "apikey", "hapikey", "private_app_token")

_throttle = transport.Throttle()
_policy = transport.RetryPolicy()


def validate(spec: Mapping[str, object]) -> None:
    for key in _INLINE_SECRET_KEYS:
        if key in spec:
            raise SpecError(
                f"`{key}` must not be in the plan: put the token in the environment variable token_env names"
            )
    obj = spec.get("object")
    if not isinstance(obj, str) or not _OBJECT.match(obj):
        raise SpecError("`object` is required: contacts, companies, deals, tickets or a custom object type")
    token_env = spec.get("token_env")
    if not isinstance(token_env, str) or not token_env:
        raise SpecError("`token_env` is required: the environment variable holding the private app token")
    if token_env.startswith("pat-") or not _ENV_NAME.match(token_env):
        raise SpecError(
            "`token_env` is the NAME of an environment variable (e.g. HUBSPOT_TOKEN), not the token"
        )
    _property(spec.get("date_property"), "date_property")
    if spec.get("sum") is not None:
        _property(spec.get("sum"), "sum")
    timezone = spec.get("timezone")
    if timezone is not None:
        _zone(timezone)
    groups = _filter_groups(spec)
    if len(groups) > MAX_GROUPS:
        raise SpecError(f"at most {MAX_GROUPS} filter groups")
    for group in groups:
        if len(group) + 2 > MAX_PER_GROUP:
            raise SpecError(f"at most {MAX_PER_GROUP - 2} filters per group (the period adds two)")
    if sum(len(group) + 2 for group in groups) > MAX_FILTERS:
        raise SpecError(f"at most {MAX_FILTERS} filters in all, counting the period's two per group")


def fetch(request: FetchRequest, env: Mapping[str, str]) -> Decimal:
    spec = request.spec
    try:
        validate(spec)
        zone = _zone(spec.get("timezone") or request.extra.get("timezone") or "UTC")
    except SpecError as error:
        raise FetchError("bad_spec", str(error), transient=False) from error
    base = transport.base_url(env.get(BASE_ENV) or DEFAULT_BASE, BASE_ENV)
    search = _Search(
        url=f"{base}/crm/v3/objects/{spec['object']}/search",
        token=transport.secret(env, str(spec["token_env"])),
        per_second=_rate(env),
        timeout=request.timeout_s,
    )
    groups = [[_filter(item) for item in group] for group in _filter_groups(spec)]
    date_property = str(spec["date_property"])
    start, end = _epoch_ms(request.period_start, zone), _epoch_ms(request.period_end, zone)

    def body(
        low: int, high: int, *, limit: int, properties: list[str], after: str | None = None
    ) -> dict[str, Any]:
        period = [
            {"propertyName": date_property, "operator": "GTE", "value": str(low)},
            {"propertyName": date_property, "operator": "LT", "value": str(high)},
        ]
        payload: dict[str, Any] = {
            "filterGroups": [{"filters": [*group, *period]} for group in groups or [[]]],
            "properties": properties,
            "limit": limit,
        }
        if after is not None:
            payload["after"] = after
        return payload

    sum_property = spec.get("sum")
    if sum_property is None:
        return Decimal(_total(search.post(body(start, end, limit=1, properties=["hs_object_id"]))))
    return _sum_window(search, body, str(sum_property), start, end)


def _sum_window(search: _Search, body: Any, prop: str, low: int, high: int) -> Decimal:
    first = search.post(body(low, high, limit=PAGE_LIMIT, properties=[prop]))
    if _total(first) > MAX_RESULTS:
        if high - low < 2 * MIN_WINDOW_MS:
            raise FetchError(
                "too_many_results", f"more than {MAX_RESULTS} records within one second", transient=False
            )
        middle = (low + high) // 2
        return _sum_window(search, body, prop, low, middle) + _sum_window(search, body, prop, middle, high)
    total, page = Decimal(0), first
    while True:
        total += sum((_number(record, prop) for record in _results(page)), Decimal(0))
        after = _next_after(page)
        if after is None:
            return total
        page = search.post(body(low, high, limit=PAGE_LIMIT, properties=[prop], after=after))


class _Search:
    def __init__(self, *, url: str, token: str, per_second: float, timeout: float) -> None:
        self.url, self.per_second, self.timeout = url, per_second, timeout
        self._token = token
        self._key = transport.Throttle.key(token)

    def post(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        data = json.dumps(payload).encode()
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

        def call() -> transport.Reply:
            _throttle.wait(self._key, self.per_second)
            return transport.send("POST", self.url, headers=headers, data=data, timeout=self.timeout)

        reply = transport.with_rate_limit_retries(
            call,
            limited=lambda reply: reply.status == 429,
            policy=_policy,
            vendor="HubSpot",
            on_wait=lambda seconds: _throttle.defer(self._key, seconds),
        )
        if reply.status == 200:
            answer = reply.json()
            if not isinstance(answer, dict):
                raise FetchError("bad_response", "HubSpot's search answer is not an object")
            return answer
        raise _error(reply)


def _error(reply: transport.Reply) -> FetchError:
    message = _message(reply)
    if reply.status == 401:
        return FetchError("auth", f"HubSpot refused the token: {message}", transient=False)
    if reply.status == 403:
        return FetchError("scope", f"the token lacks a scope: {message}", transient=False)
    if reply.status in (400, 404):
        return FetchError(
            "bad_spec", f"HubSpot refused the search ({reply.status}): {message}", transient=False
        )
    if reply.status >= 500:
        return FetchError("server_error", f"HubSpot answered {reply.status}: {message}")
    return FetchError("bad_response", f"HubSpot answered {reply.status}: {message}")


def _message(reply: transport.Reply) -> str:
    try:
        body = json.loads(reply.body)
    except ValueError:
        return reply.body[:200].decode(errors="replace")
    if not isinstance(body, dict):
        return str(body)[:200]
    scopes = [
        scope
        for error in body.get("errors") or []
        if isinstance(error, dict)
        for scope in (error.get("context") or {}).get("requiredGranularScopes") or []
    ]
    text = str(body.get("message") or body.get("category") or "")
    return f"{text} (required: {', '.join(scopes)})" if scopes else text


def _total(answer: Mapping[str, Any]) -> int:
    total = answer.get("total")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise FetchError("bad_response", "HubSpot's search answer has no `total`")
    return total


def _results(answer: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    results = answer.get("results")
    if not isinstance(results, list):
        raise FetchError("bad_response", "HubSpot's search answer has no `results`")
    return results


def _next_after(answer: Mapping[str, Any]) -> str | None:
    after = ((answer.get("paging") or {}).get("next") or {}).get("after")
    return None if after in (None, "") else str(after)


def _number(record: Mapping[str, Any], prop: str) -> Decimal:
    raw = (record.get("properties") or {}).get(prop) if isinstance(record, dict) else None
    if raw in (None, ""):
        return Decimal(0)  # a deal without an amount adds nothing
    try:
        value = Decimal(str(raw))
    except InvalidOperation as error:
        raise FetchError(
            "not_a_number", f"{prop} of record {record.get('id')} is {str(raw)[:40]!r}", transient=False
        ) from error
    if not value.is_finite():
        raise FetchError("not_a_number", f"{prop} of record {record.get('id')} is {raw!r}", transient=False)
    return value


def _filter_groups(spec: Mapping[str, object]) -> list[list[Mapping[str, object]]]:
    if "filters" in spec and "filter_groups" in spec:
        raise SpecError("give `filters` (one group) or `filter_groups` (several), not both")
    if "filter_groups" in spec:
        groups = spec["filter_groups"]
        if not isinstance(groups, list) or not groups or not all(isinstance(g, list) and g for g in groups):
            raise SpecError("`filter_groups` is a list of non-empty lists of filters")
    else:
        filters = spec.get("filters") or []
        if not isinstance(filters, list):
            raise SpecError("`filters` is a list of {property, operator, value}")
        groups = [filters] if filters else []
    for group in groups:
        for item in group:
            _filter(item)
    return groups


def _filter(item: object) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise SpecError("each filter is {property, operator, value}")
    prop = _property(item.get("property"), "filter property")
    operator = item.get("operator")
    if not isinstance(operator, str) or operator.upper() not in OPERATORS:
        raise SpecError(f"unknown operator {operator!r}: one of {', '.join(sorted(OPERATORS))}")
    operator = operator.upper()
    built: dict[str, Any] = {"propertyName": prop, "operator": operator}
    if operator in _SINGLE | _RANGE:
        if not _scalar(item.get("value")):
            raise SpecError(f"filter on {prop}: {operator} needs a `value`")
        built["value"] = _text(item["value"])
    if operator in _RANGE:
        if not _scalar(item.get("high_value")):
            raise SpecError(f"filter on {prop}: BETWEEN needs `value` and `high_value`")
        built["highValue"] = _text(item["high_value"])
    if operator in _MANY:
        values = item.get("values")
        if not isinstance(values, list) or not values or not all(_scalar(v) for v in values):
            raise SpecError(f"filter on {prop}: {operator} needs a list of `values`")
        built["values"] = [_text(v) for v in values]
    return built


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | Decimal | bool) and value != ""


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _property(value: object, what: str) -> str:
    if not isinstance(value, str) or not _PROPERTY.match(value):
        raise SpecError(f"`{what}` is required: a HubSpot property's internal name")
    return value


def _zone(name: object) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise SpecError(f"unknown time zone {name!r}") from error


def _rate(env: Mapping[str, str]) -> float:
    raw = env.get(RPS_ENV)
    if not raw:
        return DEFAULT_RPS
    try:
        rate = float(raw)
    except ValueError:
        rate = 0.0
    if not 0 < rate <= 1000:
        raise FetchError("bad_spec", f"{RPS_ENV} must be a number of requests per second", transient=False)
    return rate


def _epoch_ms(day: dt.date, zone: ZoneInfo) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=zone).timestamp() * 1000)
