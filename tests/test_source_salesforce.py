"""The Salesforce SOQL fetcher against a fake org over real HTTP: client-credentials token, the query
sent with its period bound as date literals, the one number read back, and the faults."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from bot.sources.fetching import FetchError, FetchRequest, SpecError
from bot.sources.remote import salesforce
from tests.fakeremote.salesforce import FakeSalesforce, error

NOV, DEC = dt.date(2026, 11, 1), dt.date(2026, 12, 1)
PERIOD = "CloseDate >= :period_start AND CloseDate < :period_end"
WON_COUNT: dict[str, Any] = {
    "connection": "SFDC",
    "soql": f"SELECT COUNT() FROM Opportunity WHERE IsWon = true AND {PERIOD}",
}
WON_AMOUNT: dict[str, Any] = {
    "connection": "SFDC",
    "soql": f"SELECT SUM(Amount) FROM Opportunity WHERE IsWon = true AND {PERIOD}",
}


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as fake:
        fake.add("Opportunity", IsWon=True, Amount=Decimal("1200.50"), CloseDate=dt.date(2026, 11, 1))
        fake.add("Opportunity", IsWon=True, Amount=Decimal("300.25"), CloseDate=dt.date(2026, 11, 30))
        fake.add(
            "Opportunity", IsWon=True, Amount=Decimal("999"), CloseDate=dt.date(2026, 12, 1)
        )  # next period
        fake.add("Opportunity", IsWon=True, Amount=Decimal("999"), CloseDate=dt.date(2026, 10, 31))
        fake.add("Opportunity", IsWon=False, Amount=Decimal("999"), CloseDate=dt.date(2026, 11, 15))
        yield fake  # type: ignore[misc]


@pytest.fixture
def env(org: FakeSalesforce) -> dict[str, str]:
    return {
        "KPIBOT_SALESFORCE_SFDC_URL": org.url,
        "KPIBOT_SALESFORCE_SFDC_CLIENT_ID": org.client_id,
        "KPIBOT_SALESFORCE_SFDC_CLIENT_SECRET": org.client_secret,
    }


def request(spec: dict[str, Any], start: dt.date = NOV, end: dt.date = DEC) -> FetchRequest:
    return FetchRequest("deals_won", "salesforce", spec, start, end, timeout_s=10)


def fails(spec: dict[str, Any], env: dict[str, str]) -> FetchError:
    with pytest.raises(FetchError) as raised:
        salesforce.fetch(request(spec), env)
    return raised.value


def test_count_is_total_size_with_the_period_bound_as_date_literals(org: FakeSalesforce, env: dict) -> None:
    assert salesforce.fetch(request(WON_COUNT), env) == Decimal(2)

    (token,) = org.token_requests()
    assert token.form() == {
        "grant_type": "client_credentials",
        "client_id": org.client_id,
        "client_secret": org.client_secret,
    }
    (query,) = org.queries()
    assert query.path == "/services/data/v62.0/query"
    assert query.query["q"] == (
        "SELECT COUNT() FROM Opportunity WHERE IsWon = true"
        " AND CloseDate >= 2026-11-01 AND CloseDate < 2026-12-01"
    )
    assert query.bearer in org.valid_tokens


def test_sum_reads_expr0_exactly(org: FakeSalesforce, env: dict) -> None:
    assert salesforce.fetch(request(WON_AMOUNT), env) == Decimal("1500.75")


def test_an_aliased_aggregate_is_read_under_its_alias(org: FakeSalesforce, env: dict) -> None:
    spec = {
        **WON_AMOUNT,
        "soql": f"SELECT SUM(Amount) total FROM Opportunity WHERE IsWon = true AND {PERIOD}",
    }
    assert salesforce.fetch(request(spec), env) == Decimal("1500.75")


def test_a_sum_over_no_rows_is_null(org: FakeSalesforce, env: dict) -> None:
    with pytest.raises(FetchError) as raised:
        salesforce.fetch(request(WON_AMOUNT, dt.date(2027, 1, 1), dt.date(2027, 2, 1)), env)
    assert raised.value.code == "null" and not raised.value.transient


def test_the_token_is_cached_for_the_process(org: FakeSalesforce, env: dict) -> None:
    salesforce.fetch(request(WON_COUNT), env)
    salesforce.fetch(request(WON_AMOUNT), env)
    assert len(org.token_requests()) == 1
    assert len(org.queries()) == 2


def test_an_expired_token_is_refreshed_once_and_the_query_run_again(org: FakeSalesforce, env: dict) -> None:
    salesforce.fetch(request(WON_COUNT), env)
    org.expire_tokens()
    assert salesforce.fetch(request(WON_COUNT), env) == Decimal(2)
    assert len(org.token_requests()) == 2
    first, refused, retried = org.queries()
    assert refused.bearer == first.bearer != retried.bearer


def test_a_second_401_is_auth(org: FakeSalesforce, env: dict) -> None:
    org.reject_every_token = True
    got = fails(WON_COUNT, env)
    assert got.code == "auth" and not got.transient
    assert len(org.token_requests()) == 2  # the first token and one refresh, no more
    assert len(org.queries()) == 2


def test_bad_client_credentials_are_auth_and_the_secret_is_not_repeated(
    org: FakeSalesforce, env: dict
) -> None:
    env = {**env, "KPIBOT_SALESFORCE_SFDC_CLIENT_SECRET": "wrong-secret-123"}
    got = fails(WON_COUNT, env)
    assert got.code == "auth" and not got.transient
    assert "invalid_client" in got.detail
    assert "wrong-secret-123" not in str(got)
    assert org.queries() == []


def test_request_limit_503_is_retried_then_answers(org: FakeSalesforce, env: dict) -> None:
    org.fail(
        error(503, "REQUEST_LIMIT_EXCEEDED", "ConcurrentRequests Limit exceeded.", {"Retry-After": "0"}),
        path_contains="/query",
    )
    assert salesforce.fetch(request(WON_COUNT), env) == Decimal(2)
    assert len(org.queries()) == 2


def test_429_past_the_retry_budget_is_rate_limited(org: FakeSalesforce, env: dict) -> None:
    org.fail(
        error(429, "REQUEST_LIMIT_EXCEEDED", "Too many requests", {"Retry-After": "0"}),
        times=9,
        path_contains="/query",
    )
    got = fails(WON_COUNT, env)
    assert got.code == "rate_limited" and got.transient
    assert len(org.queries()) == salesforce._policy.attempts


def test_the_daily_api_limit_is_rate_limited_at_once(org: FakeSalesforce, env: dict) -> None:
    org.fail(error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), path_contains="/query")
    got = fails(WON_COUNT, env)
    assert got.code == "rate_limited" and got.transient
    assert len(org.queries()) == 1


def test_missing_access_is_scope(org: FakeSalesforce, env: dict) -> None:
    org.fail(
        error(403, "INSUFFICIENT_ACCESS", "insufficient access rights on object"), path_contains="/query"
    )
    got = fails(WON_COUNT, env)
    assert got.code == "scope" and not got.transient


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_transient(org: FakeSalesforce, env: dict, status: int) -> None:
    org.fail(error(status, "SERVER_UNAVAILABLE", "Server unavailable"), path_contains="/query")
    got = fails(WON_COUNT, env)
    assert got.code == "server_error" and got.transient


def test_a_token_endpoint_outage_is_a_transient_server_error(org: FakeSalesforce, env: dict) -> None:
    org.fail(error(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred"), path_contains="/oauth2/token")
    got = fails(WON_COUNT, env)
    assert got.code == "server_error" and got.transient


def test_a_query_salesforce_cannot_parse_is_bad_spec(org: FakeSalesforce, env: dict) -> None:
    spec = {**WON_COUNT, "soql": f"SELECT COUNT() FROM Opportunity WHERE {PERIOD} GROUP BY StageName"}
    got = fails(spec, env)
    assert got.code == "bad_spec" and not got.transient and "MALFORMED_QUERY" in got.detail


def test_a_result_of_many_rows_is_refused_without_paging_through_it(org: FakeSalesforce, env: dict) -> None:
    for _ in range(2_500):
        org.add("Opportunity", IsWon=True, Amount=Decimal(1), CloseDate=dt.date(2026, 11, 2))
    spec = {**WON_AMOUNT, "soql": f"SELECT Amount FROM Opportunity WHERE IsWon = true AND {PERIOD}"}
    got = fails(spec, env)
    assert got.code == "many_rows" and "2502" in got.detail
    assert len(org.queries()) == 1  # totalSize says it; the next 2,000-record batch is not fetched


def test_one_row_of_one_field_is_the_value(org: FakeSalesforce, env: dict) -> None:
    org.add(
        "Opportunity", IsWon=True, Name="Big deal", Amount=Decimal("70000"), CloseDate=dt.date(2026, 11, 9)
    )
    spec = {**WON_AMOUNT, "soql": f"SELECT Amount FROM Opportunity WHERE Name = 'Big deal' AND {PERIOD}"}
    assert salesforce.fetch(request(spec), env) == Decimal("70000")


def test_no_row_is_no_row(org: FakeSalesforce, env: dict) -> None:
    spec = {**WON_AMOUNT, "soql": f"SELECT Amount FROM Opportunity WHERE Name = 'nobody' AND {PERIOD}"}
    assert fails(spec, env).code == "no_row"


def test_binds_inside_string_literals_are_left_alone() -> None:
    soql = "SELECT COUNT() FROM Task WHERE Subject = 'Due :period_start \\' :period_end' AND " + PERIOD
    assert salesforce.bind(soql, NOV, DEC) == (
        "SELECT COUNT() FROM Task WHERE Subject = 'Due :period_start \\' :period_end' AND "
        "CloseDate >= 2026-11-01 AND CloseDate < 2026-12-01"
    )


def test_a_missing_connection_variable_is_bad_spec_without_a_request(org: FakeSalesforce, env: dict) -> None:
    del env["KPIBOT_SALESFORCE_SFDC_CLIENT_SECRET"]
    got = fails(WON_COUNT, env)
    assert got.code == "bad_spec" and "KPIBOT_SALESFORCE_SFDC_CLIENT_SECRET" in got.detail
    assert org.requests == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"connection": None}, "connection"),
        ({"connection": "https://acme.my.salesforce.com"}, "connection"),
        ({"client_secret": "abc"}, "must not be in the plan"),
        ({"soql": None}, "soql"),
        ({"soql": "DELETE FROM Opportunity"}, "soql"),
        ({"soql": f"SELECT COUNT() FROM Opportunity WHERE OwnerId = :owner AND {PERIOD}"}, "unknown bind"),
        ({"soql": "SELECT COUNT() FROM Opportunity WHERE CloseDate >= :period_start"}, ":period_end"),
        ({"api_version": "latest"}, "api_version"),
    ],
)
def test_spec_errors(change: dict[str, Any], complaint: str) -> None:
    with pytest.raises(SpecError, match=complaint):
        salesforce.validate({**WON_COUNT, **change})


def test_the_examples_validate() -> None:
    salesforce.validate(WON_COUNT)
    salesforce.validate(WON_AMOUNT)
    assert salesforce.env_names("sfdc") == (
        "KPIBOT_SALESFORCE_SFDC_URL",
        "KPIBOT_SALESFORCE_SFDC_CLIENT_ID",
        "KPIBOT_SALESFORCE_SFDC_CLIENT_SECRET",
    )
