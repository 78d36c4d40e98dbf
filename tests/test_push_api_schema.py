"""schemathesis against the running server with its own OpenAPI document (GET
/api/v1/openapi.json): generated requests, valid and not, with a real source token; no answer
is a 500 and every answer matches the document (status, content type, schema, headers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.sources import service as sources
from tests.fakeslack.harness import SlackHarness

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture
def api(slack: SlackHarness) -> Iterator[Any]:
    with slack.session() as session:
        issued = sources.create(
            session, "schema", departments=["marketing"], rate_per_minute=100_000, burst=100_000
        )
        session.commit()
    schema = schemathesis.openapi.from_url(f"{slack.server.url}/api/v1/openapi.json")
    schema.config.base_url = slack.server.url
    schema.config.headers = {"Authorization": f"Bearer {issued.token}"}
    yield schema


def test_the_api_matches_its_document(api: Any) -> None:
    operations = [result.ok() for result in api.get_all_operations()]
    assert "POST /api/v1/actuals" in {operation.label for operation in operations}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            # Not positive_data_acceptance: a schema-valid row still names a KPI that may not exist (422).
            case.call_and_validate(checks=CHECKS)

        check()
