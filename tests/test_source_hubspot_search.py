"""The HubSpot CRM search fetcher against a fake HubSpot over real HTTP: what it sends, what it adds up,
and how it takes HubSpot's limits and faults."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.sources.fetching import FetchError, FetchRequest, SpecError
from bot.sources.remote import hubspot_search
from tests.fakeremote.hubspot import FakeHubSpot, epoch_ms, rate_limited, server_error, validation_error

TOKYO = ZoneInfo("Asia/Tokyo")
NOV, DEC = dt.date(2026, 11, 1), dt.date(2026, 12, 1)
NOV_START = epoch_ms(dt.datetime(2026, 11, 1, tzinfo=TOKYO))
DEC_START = epoch_ms(dt.datetime(2026, 12, 1, tzinfo=TOKYO))
MQL_DATE = "hs_v2_date_entered_marketingqualifiedlead"
MQLS: dict[str, Any] = {
    "kind": "hubspot",
    "object": "contacts",
    "token_env": "HUBSPOT_TOKEN",
    "filters": [{"property": "lifecyclestage", "operator": "EQ", "value": "marketingqualifiedlead"}],
    "date_property": MQL_DATE,
    "sum": None,
}
WON_AMOUNT: dict[str, Any] = {
    "kind": "hubspot",
    "object": "deals",
    "token_env": "HUBSPOT_TOKEN",
    "filters": [{"property": "dealstage", "operator": "EQ", "value": "closedwon"}],
    "date_property": "closedate",
    "sum": "amount",
}


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    with FakeHubSpot() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def env(hubspot: FakeHubSpot) -> dict[str, str]:
    # A token of its own per test: the in-process throttle is per token.
    token = f"pat-na1-{uuid.uuid4()}"
    hubspot.grant(token, "contacts", "deals")
    return {"HUBSPOT_API_BASE": hubspot.url, "HUBSPOT_TOKEN": token, "HUBSPOT_SEARCH_RPS": "1000"}


def request(spec: dict[str, Any], start: dt.date = NOV, end: dt.date = DEC, **extra: Any) -> FetchRequest:
    return FetchRequest(
        "k", "hubspot", spec, start, end, timeout_s=10, extra={"timezone": "Asia/Tokyo", **extra}
    )


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=TOKYO)


def test_count_is_the_total_of_the_period_in_the_departments_time_zone(
    hubspot: FakeHubSpot, env: dict
) -> None:
    mql = {"lifecyclestage": "marketingqualifiedlead"}
    hubspot.add(
        "contacts", **mql, **{MQL_DATE: at(2026, 11, 1, 0, 30)}
    )  # 2026-10-31 15:30 UTC: November in Tokyo
    hubspot.add("contacts", **mql, **{MQL_DATE: at(2026, 11, 15, 12)})
    hubspot.add("contacts", **mql, **{MQL_DATE: at(2026, 11, 30, 23, 59)})
    hubspot.add("contacts", **mql, **{MQL_DATE: at(2026, 12, 1, 0, 0)})  # the end is excluded
    hubspot.add("contacts", **mql, **{MQL_DATE: at(2026, 10, 31, 23, 59)})
    hubspot.add("contacts", lifecyclestage="lead", **{MQL_DATE: at(2026, 11, 10)})

    assert hubspot_search.fetch(request(MQLS), env) == Decimal(3)

    (sent,) = hubspot.searches()
    assert sent.headers["authorization"] == f"Bearer {env['HUBSPOT_TOKEN']}"
    assert sent.path == "/crm/v3/objects/contacts/search"
    assert sent.json()["filterGroups"] == [
        {
            "filters": [
                {"propertyName": "lifecyclestage", "operator": "EQ", "value": "marketingqualifiedlead"},
                {"propertyName": MQL_DATE, "operator": "GTE", "value": str(NOV_START)},
                {"propertyName": MQL_DATE, "operator": "LT", "value": str(DEC_START)},
            ]
        }
    ]
    assert sent.json()["limit"] == 1  # a count needs `total`, not the records


def test_the_specs_timezone_wins_over_the_departments(hubspot: FakeHubSpot, env: dict) -> None:
    spec = {**MQLS, "timezone": "UTC"}
    hubspot_search.fetch(request(spec), env)
    gte = hubspot.searches()[0].json()["filterGroups"][0]["filters"][1]
    assert gte["value"] == str(epoch_ms(dt.datetime(2026, 11, 1, tzinfo=dt.UTC)))


def test_sum_pages_through_every_result_exactly(hubspot: FakeHubSpot, env: dict) -> None:
    for day in range(450):
        hubspot.add(
            "deals", dealstage="closedwon", amount="1200.10", closedate=at(2026, 11, 1 + day % 30, 10)
        )
    hubspot.add(
        "deals", dealstage="closedwon", amount=None, closedate=at(2026, 11, 2)
    )  # no amount: adds nothing
    hubspot.add("deals", dealstage="closedlost", amount="999", closedate=at(2026, 11, 2))
    hubspot.add("deals", dealstage="closedwon", amount="999", closedate=at(2026, 12, 2))

    assert hubspot_search.fetch(request(WON_AMOUNT), env) == Decimal("540045.00")

    bodies = [r.json() for r in hubspot.searches()]
    assert [b.get("after") for b in bodies] == [None, "200", "400"]
    assert {b["limit"] for b in bodies} == {200}
    assert all(b["properties"] == ["amount"] for b in bodies)


def test_filter_groups_are_ored_and_each_gets_the_period(hubspot: FakeHubSpot, env: dict) -> None:
    hubspot.add("deals", dealstage="closedwon", pipeline="new", amount="10", closedate=at(2026, 11, 3))
    hubspot.add("deals", dealstage="contractsent", pipeline="renewal", amount="5", closedate=at(2026, 11, 4))
    hubspot.add("deals", dealstage="contractsent", pipeline="new", amount="7", closedate=at(2026, 11, 4))
    spec = {
        **WON_AMOUNT,
        "filters": None,
        "filter_groups": [
            [{"property": "dealstage", "operator": "EQ", "value": "closedwon"}],
            [{"property": "pipeline", "operator": "IN", "values": ["renewal", "upsell"]}],
        ],
    }
    del spec["filters"]
    assert hubspot_search.fetch(request(spec), env) == Decimal(15)
    groups = hubspot.searches()[0].json()["filterGroups"]
    assert [[f["operator"] for f in g["filters"]] for g in groups] == [
        ["EQ", "GTE", "LT"],
        ["IN", "GTE", "LT"],
    ]


def test_a_count_above_ten_thousand_is_exact_in_one_request(hubspot: FakeHubSpot, env: dict) -> None:
    for i in range(10_050):
        hubspot.add(
            "contacts", lifecyclestage="marketingqualifiedlead", **{MQL_DATE: at(2026, 11, 1 + i % 30)}
        )
    assert hubspot_search.fetch(request(MQLS), env) == Decimal(10_050)
    assert len(hubspot.searches()) == 1


def test_a_sum_above_ten_thousand_splits_the_period_into_windows(hubspot: FakeHubSpot, env: dict) -> None:
    for i in range(10_050):
        hubspot.add("deals", dealstage="closedwon", amount="1", closedate=at(2026, 11, 1 + i % 30, i % 24))
    assert hubspot_search.fetch(request(WON_AMOUNT), env) == Decimal(10_050)
    windows = sorted(
        {
            (int(f[1]["value"]), int(f[2]["value"]))
            for f in (r.json()["filterGroups"][0]["filters"] for r in hubspot.searches())
        }
    )
    # The whole period was tried first; the windows summed meet exactly (half-open: nothing twice).
    assert (NOV_START, DEC_START) in windows
    halves = [w for w in windows if w != (NOV_START, DEC_START)]
    assert halves[0][0] == NOV_START and halves[-1][1] == DEC_START
    assert all(a[1] == b[0] for a, b in zip(halves, halves[1:], strict=False))


def test_more_than_ten_thousand_in_one_second_is_too_many_results(hubspot: FakeHubSpot, env: dict) -> None:
    for _ in range(10_001):
        hubspot.add("deals", dealstage="closedwon", amount="1", closedate=at(2026, 11, 5, 9))
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(WON_AMOUNT), env)
    assert raised.value.code == "too_many_results"
    assert not raised.value.transient


def test_429_is_retried_after_retry_after(hubspot: FakeHubSpot, env: dict) -> None:
    hubspot.add("contacts", lifecyclestage="marketingqualifiedlead", **{MQL_DATE: at(2026, 11, 5)})
    hubspot.fail(rate_limited(retry_after=1))
    assert hubspot_search.fetch(request(MQLS), env) == Decimal(1)
    first, second = hubspot.searches()
    assert second.at - first.at >= 0.9  # waited as HubSpot asked


def test_429_past_the_retry_budget_is_rate_limited(hubspot: FakeHubSpot, env: dict) -> None:
    hubspot.fail(rate_limited(retry_after=0), times=10)
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(MQLS), env)
    assert raised.value.code == "rate_limited" and raised.value.transient
    assert len(hubspot.searches()) == hubspot_search._policy.attempts


def test_a_long_retry_after_is_left_to_the_scheduler(hubspot: FakeHubSpot, env: dict) -> None:
    hubspot.fail(rate_limited(retry_after=3600))
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(MQLS), env)
    assert (raised.value.code, raised.value.retry_after) == ("rate_limited", 3600)
    assert len(hubspot.searches()) == 1


def test_requests_are_spaced_to_the_documented_rate(hubspot: FakeHubSpot, env: dict) -> None:
    env = {**env, "HUBSPOT_SEARCH_RPS": "4"}
    for _ in range(3):
        hubspot_search.fetch(request(MQLS), env)
    times = [r.at for r in hubspot.searches()]
    assert all(b - a >= 0.2 for a, b in zip(times, times[1:], strict=False))


def test_an_unknown_token_is_auth_and_not_transient(hubspot: FakeHubSpot, env: dict) -> None:
    env = {**env, "HUBSPOT_TOKEN": "pat-na1-revoked"}
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(MQLS), env)
    assert raised.value.code == "auth" and not raised.value.transient
    assert "pat-na1-revoked" not in str(raised.value)


def test_a_token_without_the_objects_scope_is_scope(hubspot: FakeHubSpot, env: dict) -> None:
    hubspot.grant(env["HUBSPOT_TOKEN"], "deals")
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(MQLS), env)
    assert raised.value.code == "scope" and not raised.value.transient
    assert "crm.objects.contacts.read" in raised.value.detail


@pytest.mark.parametrize("status", [500, 502])
def test_a_server_error_is_transient(hubspot: FakeHubSpot, env: dict, status: int) -> None:
    hubspot.fail(server_error(status))
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(MQLS), env)
    assert raised.value.code == "server_error" and raised.value.transient


def test_an_unknown_property_is_bad_spec(hubspot: FakeHubSpot, env: dict) -> None:
    hubspot.fail(validation_error("Property 'lifecycle_stage' does not exist"))
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(MQLS), env)
    assert raised.value.code == "bad_spec" and not raised.value.transient


def test_a_missing_token_variable_is_bad_spec_without_a_request(hubspot: FakeHubSpot, env: dict) -> None:
    del env["HUBSPOT_TOKEN"]
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(MQLS), env)
    assert raised.value.code == "bad_spec" and "HUBSPOT_TOKEN" in raised.value.detail
    assert hubspot.requests == []


def test_a_plain_http_base_url_elsewhere_is_refused(env: dict) -> None:
    env = {**env, "HUBSPOT_API_BASE": "http://api.hubapi.com"}
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(MQLS), env)
    assert raised.value.code == "bad_spec"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"object": None}, "object"),
        ({"object": "contacts/../owners"}, "object"),
        ({"token": "pat-na1-abc"}, "environment variable"),
        ({"token_env": "pat-na1-0000-1111"}, "NAME"),
        ({"token_env": None}, "token_env"),
        ({"date_property": None}, "date_property"),
        (
            {"filters": [{"property": "lifecyclestage", "operator": "EQUALS", "value": "x"}]},
            "unknown operator",
        ),
        ({"filters": [{"property": "lifecyclestage", "operator": "IN", "value": "x"}]}, "values"),
        ({"filters": [{"property": "lifecyclestage", "operator": "EQ"}]}, "value"),
        ({"filter_groups": [[{"property": "a", "operator": "EQ", "value": 1}]] * 6}, "filter groups"),
        ({"timezone": "Mars/Olympus"}, "time zone"),
    ],
)
def test_spec_errors(change: dict[str, Any], complaint: str) -> None:
    spec = {**MQLS, **change}
    if "filter_groups" in change:
        del spec["filters"]
    with pytest.raises(SpecError, match=complaint):
        hubspot_search.validate(spec)


def test_the_examples_validate() -> None:
    hubspot_search.validate(MQLS)
    hubspot_search.validate(WON_AMOUNT)


def test_a_peer_that_does_not_listen_is_a_transient_connect_error(env: dict) -> None:
    with FakeHubSpot() as gone:
        url = gone.url  # a port that was just free and is closed again below
    env = {**env, "HUBSPOT_API_BASE": url}
    with pytest.raises(FetchError) as raised:
        hubspot_search.fetch(request(MQLS), env)
    assert raised.value.code == "connect" and raised.value.transient
