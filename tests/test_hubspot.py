"""POST /hooks/hubspot/<source> over real HTTP against the running app, on SQLite and PostgreSQL:
events built and signed exactly as HubSpot documents (v3: base64 HMAC-SHA256 over method + URI +
body + timestamp, keyed with the app's client secret), the answer and what the database holds."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlmodel import col, select

from bot.models import Actual, AuditEvent, ProcessedRequest, Source
from bot.sources import hubspot
from tests.fakeslack.harness import NOW, SlackHarness

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
MQL_RULE = "contact.propertyChange:lifecyclestage=marketingqualifiedlead->mqls"
NOW_MS = int(NOW.timestamp() * 1000)


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """Written from HubSpot's steps, independently of bot.sources.hubspot: the UTF-8 string
    requestMethod + requestUri + requestBody + timestamp, HMAC-SHA256 with the client secret, base64."""
    source = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def event(event_id: int, occurred: dt.datetime, **fields: Any) -> dict[str, Any]:
    """An event as the Webhooks API sends it (a contact's lifecycle stage changed)."""
    return {
        "eventId": event_id,
        "subscriptionId": 4711,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": int(occurred.timestamp() * 1000),
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 1000 + event_id,
        "propertyName": "lifecyclestage",
        "propertyValue": "marketingqualifiedlead",
        "changeSource": "CRM",
        **fields,
    }


@dataclass
class Reply:
    status: int
    body: dict[str, Any]

    @property
    def code(self) -> str:
        return self.body["error"]["code"]


@dataclass
class HubSpot:
    slack: SlackHarness
    name: str = "hs"

    def path(self, name: str | None = None) -> str:
        return f"/hooks/hubspot/{name or self.name}"

    def send(
        self,
        payload: bytes | list[Any] | dict[str, Any],
        *,
        timestamp: int = NOW_MS,
        secret: str = SECRET,
        signature: str | None = None,
        signed_body: bytes | None = None,
        path: str | None = None,
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        path = path or self.path()
        uri = self.slack.server.url + path
        sent = {
            "Content-Type": "application/json",
            "X-HubSpot-Request-Timestamp": str(timestamp),
            "X-HubSpot-Signature-v3": signature
            or hubspot_signature(secret, method, uri, signed_body or body, str(timestamp)),
            **(headers or {}),
        }
        url = urlsplit(self.slack.server.url)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return Reply(response.status, json.loads(data))


@pytest.fixture
def hub(slack: SlackHarness) -> Iterator[HubSpot]:
    with slack.session() as session:
        hubspot.configure(session, "hs", client_secret=SECRET, rules=[hubspot.parse_rule(MQL_RULE)])
        session.commit()
    yield HubSpot(slack)


def hubspot_rows(slack: SlackHarness) -> list[Actual]:
    with slack.session() as session:
        query = select(Actual).where(Actual.source == Source.HUBSPOT).order_by(col(Actual.id))
        return list(session.exec(query).all())


def ledger_keys(slack: SlackHarness) -> list[str]:
    with slack.session() as session:
        return [key for key in session.exec(select(ProcessedRequest.key)).all() if key.startswith("hubspot:")]


NOV_29 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def test_each_event_is_plus_one_for_its_period_and_the_running_count_keeps_its_history(hub: HubSpot) -> None:
    first = hub.send([event(1, NOV_29), event(2, NOV_29)])
    assert first.status == 200, first
    assert (first.body["received"], first.body["counted"], first.body["replayed"]) == (2, 2, 0)
    assert first.body["actuals"] == [{"kpi": "mqls", "period": "2026-11", "value": "2"}]
    second = hub.send(event(3, NOV_29))  # one event, not in a list: a workflow's webhook
    assert second.status == 200 and second.body["counted"] == 1
    rows = hubspot_rows(hub.slack)
    assert [Decimal(row.value) for row in rows] == [Decimal(2), Decimal(3)]
    assert rows[0].superseded_by_id == rows[1].id  # a correction: the count's history is kept
    assert {(row.reported_by, row.source_name) for row in rows} == {("source:hs", "hs")}
    assert (rows[0].external_id, rows[1].external_id) == ("2", "3")
    assert hub.slack.live_values("mqls") == {"2026-11": Decimal(3)}
    with hub.slack.session() as session:
        actions = session.exec(select(AuditEvent.action).where(AuditEvent.source == "hubspot")).all()
    assert sorted(actions) == ["actual.corrected", "actual.reported"]


def test_the_period_is_the_one_the_event_happened_in_in_the_departments_time_zone(hub: HubSpot) -> None:
    # 31 October 15:30 UTC is 1 November 00:30 in Tokyo (the marketing department's time zone).
    just_after_midnight = dt.datetime(2026, 10, 31, 15, 30, tzinfo=dt.UTC)
    just_before = dt.datetime(2026, 10, 31, 14, 59, tzinfo=dt.UTC)  # 23:59 on 31 October in Tokyo
    reply = hub.send([event(10, just_after_midnight), event(11, just_before), event(12, just_before)])
    assert reply.status == 200, reply
    assert hub.slack.live_values("mqls") == {"2026-11": Decimal(1), "2026-10": Decimal(2)}


def test_a_retried_delivery_counts_nothing_twice(hub: HubSpot) -> None:
    events = [event(20, NOV_29), event(21, NOV_29)]
    assert hub.send(events).body["counted"] == 2
    # HubSpot retries with the same events (a new attempt, signed again a minute later).
    again = hub.send([{**item, "attemptNumber": 1} for item in events], timestamp=NOW_MS + 60_000)
    assert again.status == 200, again
    assert (again.body["counted"], again.body["replayed"], again.body["actuals"]) == (0, 2, [])
    mixed = hub.send([event(21, NOV_29), event(22, NOV_29), event(22, NOV_29)])
    assert (mixed.body["counted"], mixed.body["replayed"]) == (1, 2)
    assert hub.slack.live_values("mqls") == {"2026-11": Decimal(3)}
    assert len(hubspot_rows(hub.slack)) == 2


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"signature": "c2lnbmVkIGJ5IHNvbWVvbmUgZWxzZQ=="}, "bad_signature"),
        ({"secret": "another-apps-secret"}, "bad_signature"),
        ({"signed_body": b'[{"eventId": 1}]'}, "bad_signature"),  # signed over a different body
        ({"timestamp": NOW_MS - 5 * 60 * 1000 - 1}, "stale_timestamp"),
        ({"timestamp": NOW_MS + 6 * 60 * 1000}, "stale_timestamp"),
        ({"headers": {"X-HubSpot-Request-Timestamp": "yesterday"}}, "bad_timestamp"),
        ({"headers": {"X-HubSpot-Signature-v3": ""}}, "missing_signature"),
    ],
)
def test_a_request_not_signed_by_the_app_now_is_refused_and_nothing_is_stored(
    hub: HubSpot, change: dict[str, Any], code: str
) -> None:
    reply = hub.send([event(30, NOV_29)], **change)
    assert (reply.status, reply.code) == (401, code), reply
    assert reply.body["error"]["message"]
    assert hubspot_rows(hub.slack) == [] and ledger_keys(hub.slack) == []


def test_the_signature_covers_the_uri_as_hubspot_decodes_it(hub: HubSpot) -> None:
    # HubSpot signs the URI with %3A, %2F, %40 … decoded (not the ? that starts the query).
    path = hub.path() + "?portal=62515%3Amain&by=ops%40example.com"
    decoded = hub.slack.server.url + hub.path() + "?portal=62515:main&by=ops@example.com"
    body = json.dumps([event(40, NOV_29)]).encode()
    signature = hubspot_signature(SECRET, "POST", decoded, body, str(NOW_MS))
    reply = hub.send(body, path=path, signature=signature)
    assert reply.status == 200, reply
    assert hubspot.canonical_uri("https://x.test/a%2Fb%3Fc%2cd%3b?q=%3a") == "https://x.test/a/b?c,d;?q=:"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'[{"eventId": 1, "occurredAt": ', 400, "malformed_json"),
        (b"\xff\xfe[]", 400, "json_not_utf8"),
        (b"[]", 400, "not_events"),
        (b'"contact.creation"', 400, "not_events"),
        (json.dumps([event(50, NOV_29, propertyValue="lead")]).encode(), 422, "invalid_events"),
        (json.dumps([event(51, NOV_29, subscriptionType="deal.creation")]).encode(), 422, "invalid_events"),
        (json.dumps([event(52, NOV_29, occurredAt="soon")]).encode(), 422, "invalid_events"),
        (
            json.dumps([{k: v for k, v in event(53, NOV_29).items() if k != "eventId"}]).encode(),
            422,
            "invalid_events",
        ),
        # An event of next month (a sender's clock far ahead): its period has not started.
        (
            json.dumps([event(54, NOV_29), event(55, NOV_29 + dt.timedelta(days=30))]).encode(),
            422,
            "invalid_events",
        ),
    ],
)
def test_bad_bodies_get_a_clear_json_error_and_nothing_is_counted(
    hub: HubSpot, body: bytes, status: int, code: str
) -> None:
    reply = hub.send(body)
    assert (reply.status, reply.code) == (status, code), reply
    if status == 422:
        problem = reply.body["error"]["problems"][-1]
        assert problem["event"] >= 1 and problem["field"] and problem["message"]
    assert hubspot_rows(hub.slack) == [] and ledger_keys(hub.slack) == []


def test_an_unknown_event_is_named_and_the_whole_batch_waits_for_a_fix(hub: HubSpot) -> None:
    reply = hub.send([event(60, NOV_29), event(61, NOV_29, propertyValue="salesqualifiedlead")])
    assert reply.status == 422
    [problem] = reply.body["error"]["problems"]
    assert (problem["event"], problem["code"]) == (2, "unknown_event")
    assert "salesqualifiedlead" in problem["message"]
    # Fixed by a rule for it: HubSpot's retry of the same events is counted then, each once.
    with hub.slack.session() as session:
        rules = [
            hubspot.parse_rule(MQL_RULE),
            hubspot.parse_rule("contact.propertyChange:lifecyclestage=salesqualifiedlead->sqls"),
        ]
        hubspot.configure(session, "hs", client_secret=SECRET, rules=rules)
        session.commit()
    again = hub.send([event(60, NOV_29), event(61, NOV_29, propertyValue="salesqualifiedlead")])
    assert again.status == 200 and again.body["counted"] == 2
    assert hub.slack.live_values("sqls") == {"2026-11": Decimal(1)}


def test_unknown_or_revoked_sources_and_other_methods(hub: HubSpot) -> None:
    assert hub.send([event(70, NOV_29)], path=hub.path("nobody")).status == 404
    assert hub.send([event(70, NOV_29)], path="/hooks/hubspot/%00bad").status == 404
    assert hub.send(b"", method="GET").status == 405
    with hub.slack.session() as session:
        from bot.sources import service as sources

        sources.revoke(session, "hs")
        session.commit()
    reply = hub.send([event(70, NOV_29)])
    assert (reply.status, reply.code) == (404, "unknown_source")
    assert hubspot_rows(hub.slack) == []


def test_a_japanese_server_answers_in_japanese(hub: HubSpot) -> None:
    reply = hub.send([event(80, NOV_29)], signature="AAAA")
    assert reply.code == "bad_signature"
    assert "X-HubSpot-Signature-v3" in reply.body["error"]["message"]
    assert "一致しません" in reply.body["error"]["message"]  # the harness's default locale is ja
