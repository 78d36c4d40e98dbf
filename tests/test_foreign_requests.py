"""Requests whose parts kpibot wrote itself, coming back as something else: a report form whose
private_metadata is not the one kpibot gave it. Each is answered 200 with a clear error in the form
(in the user's language), and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlmodel import select

from bot import render
from bot.models import Actual, Kpi
from tests.fakeslack.client import Response
from tests.fakeslack.harness import SlackHarness

SALES1 = "U0SALES1"  # owns new_approaches (count, monthly) and close_rate (%, monthly)


def _kpi_id(slack: SlackHarness, key: str) -> int:
    with slack.session() as session:
        kpi_id = session.exec(select(Kpi.id).where(Kpi.key == key)).one()
    assert kpi_id is not None
    return kpi_id


def submit(slack: SlackHarness, private_metadata: str) -> Response:
    values: dict[str, dict[str, dict[str, Any]]] = {
        "kpi:new_approaches": {"value": {"type": "plain_text_input", "value": "85"}},
        "note": {"note": {"type": "plain_text_input", "value": None}},
    }
    return slack.client.view_submission(
        "report_modal", values, user_id=SALES1, private_metadata=private_metadata
    )


def stored(slack: SlackHarness) -> list[Actual]:
    with slack.session() as session:
        return list(session.exec(select(Actual)).all())


FOREIGN: dict[str, Any] = {
    "empty": "",
    "garbage": "garbage",
    "not kpibot's keys": json.dumps({"x": 1}),
    "a list": "[1, 2]",
    "periods not a mapping": json.dumps({"channel": "C0SALES", "periods": "2026-11"}),
    "ids not numbers": json.dumps({"channel": "C0SALES", "periods": {"2026-11": ["new_approaches"]}}),
    "a period not a period": json.dumps({"channel": "C0SALES", "periods": {"いつか": [0]}}),
    "a wrong kpi id": lambda slack: json.dumps({"channel": "C0SALES", "periods": {"2026-11": [999_999]}}),
    "another kpi's id": lambda slack: json.dumps(
        {"channel": "C0SALES", "periods": {"2026-11": [_kpi_id(slack, "close_rate")]}}
    ),
    "a channel not a string": lambda slack: json.dumps(
        {"channel": ["C0SALES"], "periods": {"2026-11": [_kpi_id(slack, "new_approaches")]}}
    ),
    "a language kpibot does not speak": lambda slack: json.dumps(
        {"channel": "C0SALES", "periods": {"2026-11": [_kpi_id(slack, "new_approaches")]}, "locale": "fr"}
    ),
    "huge": lambda slack: json.dumps(
        {
            "channel": "C0SALES",
            "periods": {"2026-11": [_kpi_id(slack, "new_approaches")]},
            "pad": "x" * 200_000,
        }
    ),
}


@pytest.mark.parametrize("locale", ["ja", "en"])
@pytest.mark.parametrize("case", list(FOREIGN))
def test_a_report_form_whose_metadata_kpibot_did_not_write_is_refused_in_the_form(
    slack: SlackHarness, case: str, locale: str
) -> None:
    if locale == "en":
        slack.fake.set_user(SALES1, locale="en-US")
    metadata = FOREIGN[case]
    response = submit(slack, metadata(slack) if callable(metadata) else metadata)
    assert response.status == 200, response
    body = response.json()
    assert body["response_action"] == "errors", body
    assert list(body["errors"].values()) == [render.message("modal.foreign", locale)]
    slack.settle()
    assert stored(slack) == []
    assert slack.fake.calls("chat.postEphemeral") == [] and slack.fake.calls("response_url") == []


def test_the_form_as_kpibot_wrote_it_is_still_saved(slack: SlackHarness) -> None:
    metadata = json.dumps({"channel": "C0SALES", "periods": {"2026-11": [_kpi_id(slack, "new_approaches")]}})
    response = submit(slack, metadata)
    assert (response.status, response.body) == (200, "")
    slack.fake.wait_for("chat.postEphemeral")
    slack.settle()
    assert slack.live_values("new_approaches") == {"2026-11": 85}
