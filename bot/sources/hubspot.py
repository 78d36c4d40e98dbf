"""HubSpot: events a HubSpot app sends to `POST /hooks/hubspot/<source>`, each one +1 on a KPI.

A HubSpot source is a DataSource (bot.sources.service) whose `config` holds the app's client
secret and its rules: which event counts on which KPI, e.g. a contact whose `lifecyclestage`
becomes `marketingqualifiedlead` → +1 on `mqls`, for the period the event happened in (its
`occurredAt`, in the KPI's department's time zone, by the KPI's cadence).

The signature is HubSpot's v3 scheme, as HubSpot documents it ("Validate the v3 request
signature", https://developers.hubspot.com/docs/apps/developer-platform/build-apps/authentication/request-validation,
same text for legacy apps at https://developers.hubspot.com/docs/api/webhooks/validating-requests):

- refuse the request if `X-HubSpot-Request-Timestamp` (milliseconds since the epoch) is older than 5 minutes;
- in the request URI, decode the URL-encoded characters %3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B
  (not the `?` that starts the query string);
- HMAC-SHA256, keyed with the app's client secret, over the UTF-8 string
  requestMethod + requestUri + requestBody + timestamp; base64 of it is `X-HubSpot-Signature-v3`.

We also refuse a timestamp more than 5 minutes in the future (a clock that far ahead is not HubSpot's)
and compare in constant time.

The body is the Webhooks API's list of events (`eventId`, `occurredAt`, `subscriptionType`,
`objectId`, `propertyName`, `propertyValue`, …), or one such object; a workflow's webhook may send
`callbackId` instead of `eventId`. Each event counts once (the idempotency ledger, per source and
event id), and the +1 is a correction of the running count, so the count's history is kept.
Everything is stored through bot.reports.batch.ingest, the one way in for values from systems.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from bot.idempotency import first_time
from bot.models import DataSource, Department, Kpi, Source
from bot.periods import Period, period_of
from bot.reports.actuals import live_actual, wait_for_other_writers
from bot.reports.batch import Sender, Stored, ingest
from bot.reports.rows import FormatError, Problem, Row
from bot.reports.service import all_kpis, plain_number
from bot.sources import service as sources

KIND = "hubspot"
SIGNATURE_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"
TOLERANCE_MS = 5 * 60 * 1000
MAX_EVENTS = 1000  # HubSpot batches up to 100 events per request
EVENT_ID_MAX = 100
# HubSpot's table of characters to decode in the request URI (the ? of the query string stays).
_DECODED = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_ENCODED = re.compile("|".join(_DECODED), re.IGNORECASE)
_RULE = re.compile(
    r"^\s*(?P<subscription>[A-Za-z0-9_.\-]+)(?::(?P<property>[A-Za-z0-9_.\-]+)(?:=(?P<value>[^>]+?))?)?"
    r"\s*->\s*(?P<kpi>[A-Za-z0-9_.\-]+)\s*$"
)


class HubSpotError(Exception):
    """A refused request or configuration: `code` is stable, `params` fill the message."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


# -- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """An event that counts +1 on `kpi`: its subscription type, and optionally the property
    that changed and the value it changed to."""

    subscription: str
    kpi: str
    property: str | None = None
    value: str | None = None

    def matches(self, event: Event) -> bool:
        return (
            event.subscription == self.subscription
            and (self.property is None or event.property == self.property)
            and (self.value is None or event.value == self.value)
        )

    def text(self) -> str:
        where = (
            f":{self.property}" + (f"={self.value}" if self.value is not None else "")
            if self.property
            else ""
        )
        return f"{self.subscription}{where}->{self.kpi}"


def parse_rule(text: str) -> Rule:
    """`contact.propertyChange:lifecyclestage=marketingqualifiedlead->mqls`, `contact.creation->leads`."""
    match = _RULE.match(text)
    if match is None:
        raise HubSpotError("bad_rule", text=text)
    return Rule(match["subscription"], match["kpi"].lower(), match["property"], match["value"])


@dataclass(frozen=True)
class Config:
    client_secret: str
    rules: tuple[Rule, ...]


def config_of(source: DataSource) -> Config | None:
    """The source's HubSpot configuration, or None for a source that is not a HubSpot one."""
    raw = (source.config or {}).get(KIND)
    if not isinstance(raw, dict) or not raw.get("client_secret"):
        return None
    rules = tuple(Rule(**rule) for rule in raw.get("rules", []))
    return Config(raw["client_secret"], rules)


def configure(
    session: Session, name: str, *, client_secret: str, rules: Sequence[Rule], actor: str = "cli"
) -> sources.Issued | DataSource:
    """Create the HubSpot source `name` (scope: the rules' KPIs), or set its secret and rules.
    Returns what `source add` issues for a new source, the source itself for an existing one."""
    client_secret = client_secret.strip()
    if not client_secret or not client_secret.isprintable():
        raise HubSpotError("bad_secret")
    if not rules:
        raise HubSpotError("no_rules")
    kpis = {kpi.key: kpi for kpi, _ in all_kpis(session)}
    for rule in rules:
        if rule.kpi not in kpis:
            raise HubSpotError("unknown_kpi", kpi=rule.kpi)
        if kpis[rule.kpi].formula:
            raise HubSpotError("derived_kpi", kpi=rule.kpi)
    keys = sorted({rule.kpi for rule in rules})
    try:
        source: DataSource = sources.by_name(session, name)
        issued: sources.Issued | None = None
        source.kpi_keys = keys
    except sources.SourceError:
        issued = sources.create(session, name, kpis=keys, actor=actor)
        source = issued.source
    source.config = {
        **(source.config or {}),
        KIND: {"client_secret": client_secret, "rules": [rule.__dict__ for rule in rules]},
    }
    session.add(source)
    session.flush()
    return issued or source


# -- the signature -----------------------------------------------------------------------------------


def canonical_uri(uri: str) -> str:
    """The request URI as HubSpot signs it: the characters of its table decoded."""
    return _ENCODED.sub(lambda match: _DECODED[match[0].upper()], uri)


def sign_v3(client_secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """`X-HubSpot-Signature-v3` as HubSpot computes it."""
    source = method.encode() + canonical_uri(uri).encode() + body + timestamp.encode()
    digest = hmac.new(client_secret.encode(), source, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_v3(
    client_secret: str, method: str, uri: str, body: bytes, headers: Mapping[str, str], now: dt.datetime
) -> None:
    """Raise HubSpotError (missing_signature, bad_timestamp, stale_timestamp, bad_signature)
    unless the request is signed by the app. `headers` have lower-case names."""
    signature = headers.get(SIGNATURE_HEADER, "").strip()
    timestamp = headers.get(TIMESTAMP_HEADER, "").strip()
    if not signature or not timestamp:
        raise HubSpotError("missing_signature")
    if not re.fullmatch(r"\d{1,15}", timestamp):
        raise HubSpotError("bad_timestamp")
    if abs(now.timestamp() * 1000 - int(timestamp)) > TOLERANCE_MS:
        raise HubSpotError("stale_timestamp")
    expected = sign_v3(client_secret, method, uri, body, timestamp)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise HubSpotError("bad_signature")


# -- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str  # eventId, or a workflow's callbackId
    occurred_at: dt.datetime
    subscription: str
    property: str | None = None
    value: str | None = None
    object_id: str | None = None

    def describe(self) -> str:
        if self.property is None:
            return self.subscription
        return f"{self.subscription}:{self.property}={self.value}"


def parse_events(body: bytes) -> tuple[list[Event], list[Problem]]:
    """The events of a body; FormatError when it is not JSON, or not events at all."""
    try:
        document = json.loads(body.decode("utf-8"), parse_float=str, parse_constant=str)
    except UnicodeDecodeError as error:
        raise FormatError("json_not_utf8", offset=error.start) from None
    except json.JSONDecodeError as error:
        raise FormatError("malformed_json", line=error.lineno, column=error.colno, reason=error.msg) from None
    except RecursionError:
        raise FormatError("malformed_json", line=1, column=1, reason="nested too deeply") from None
    items = document if isinstance(document, list) else [document]
    if not items or not all(isinstance(item, dict) for item in items):
        raise FormatError("not_events")
    if len(items) > MAX_EVENTS:
        raise FormatError("too_many_events", count=len(items), max=MAX_EVENTS)
    events: list[Event] = []
    problems: list[Problem] = []
    for number, item in enumerate(items, start=1):
        event = _event(number, item, problems)
        if event is not None:
            events.append(event)
    return events, problems


def _text(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        return text if text and text.isprintable() else None
    return None


def _event(number: int, item: dict[str, Any], problems: list[Problem]) -> Event | None:
    before = len(problems)
    event_id = _text(item, "eventId") or _text(item, "callbackId")
    if event_id is None or len(event_id) > EVENT_ID_MAX:
        problems.append(Problem(number, "eventId", "missing_event_id"))
    subscription = _text(item, "subscriptionType") or _text(item, "eventType")
    if subscription is None:
        problems.append(Problem(number, "subscriptionType", "missing_field"))
    occurred = item.get("occurredAt")
    occurred_at = None
    if isinstance(occurred, int) and not isinstance(occurred, bool) and 0 < occurred < 10**14:
        occurred_at = dt.datetime.fromtimestamp(occurred / 1000, dt.UTC)
    else:
        problems.append(Problem(number, "occurredAt", "bad_occurred_at"))
    if len(problems) > before:
        return None
    assert event_id is not None and subscription is not None and occurred_at is not None
    return Event(
        id=event_id,
        occurred_at=occurred_at,
        subscription=subscription,
        property=_text(item, "propertyName"),
        value=_text(item, "propertyValue"),
        object_id=_text(item, "objectId"),
    )


# -- counting ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    events: int  # in the request
    counted: int  # new events, each +1
    replayed: int  # events counted before (HubSpot retries), not counted again
    stored: Stored | None  # None when every event was a replay


@dataclass
class _Slot:
    kpi: Kpi
    department: Department
    period: Period
    event_ids: list[str]
    first: int  # the number of its first event in the request, for problems


def receive(session: Session, source: DataSource, events: Sequence[Event]) -> Received | list[Problem]:
    """Count the events in the caller's transaction: each new one +1 on its rule's KPI for the
    period it happened in. Any problem (an event no rule maps, a KPI gone from the plan, one out
    of the source's scope, a period not open) → the problems, and the caller rolls back."""
    config = config_of(source)
    assert config is not None
    by_key = {kpi.key: (kpi, department) for kpi, department in all_kpis(session)}
    problems: list[Problem] = []
    placed: list[tuple[int, Event, Kpi, Department, Period]] = []
    for number, event in enumerate(events, start=1):
        rule = next((rule for rule in config.rules if rule.matches(event)), None)
        if rule is None:
            problems.append(Problem(number, "subscriptionType", "unknown_event", {"event": event.describe()}))
            continue
        if rule.kpi not in by_key:
            problems.append(Problem(number, "kpi", "rule_kpi_missing", {"kpi": rule.kpi}))
            continue
        kpi, department = by_key[rule.kpi]
        day = event.occurred_at.astimezone(ZoneInfo(department.timezone)).date()
        placed.append((number, event, kpi, department, period_of(day, kpi.cadence)))
    if problems:
        return problems
    slots: dict[tuple[int, str], _Slot] = {}
    replayed = 0
    for number, event, kpi, department, period in placed:
        assert kpi.id is not None
        if not first_time(session, f"hubspot:{source.id}:{event.id}"):
            replayed += 1
            continue
        slot = slots.setdefault((kpi.id, period.key), _Slot(kpi, department, period, [], number))
        slot.event_ids.append(event.id)
    if not slots:
        return Received(len(events), 0, replayed, None)
    rows, ordered = [], sorted(slots.items())
    # One lock order for every writer (as save_reports), taken before the running count is read:
    # two requests counting on one KPI at once each add to what the other committed.
    for (kpi_id, period_key), slot in ordered:
        wait_for_other_writers(session, kpi_id, period_key)
        live = live_actual(session, kpi_id, period_key)
        count = (Decimal(live.value) if live is not None else Decimal(0)) + len(slot.event_ids)
        rows.append(
            Row(
                kpi=slot.kpi.key, value=plain_number(count), period=period_key, external_id=slot.event_ids[-1]
            )
        )
    sender = Sender(
        reported_by=f"source:{source.name}",
        source=Source.HUBSPOT,
        source_name=source.name,
        may_write=lambda kpi, department: sources.in_scope(source, kpi, department),
    )
    result = ingest(session, rows, sender=sender)
    if isinstance(result, list):  # numbered by event, not by the rows built here
        return [
            Problem(ordered[p.row - 1][1].first if p.row else 0, p.field, p.code, p.params) for p in result
        ]
    return Received(len(events), sum(len(slot.event_ids) for slot in slots.values()), replayed, result)
