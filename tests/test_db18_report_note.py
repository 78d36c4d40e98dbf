"""A NUL (or another control character, or half a surrogate pair) in the report form's note or a
value: refused in the form at its field, in the user's language, nothing stored, on both databases
(PostgreSQL cannot store a NUL in text at all). A note's line breaks and tabs are kept as typed."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from bot import render
from bot.models import Actual, Kpi
from tests.fakeslack.client import Response
from tests.fakeslack.harness import SlackHarness

OWNER = "U0SALES1"  # owns new_approaches (count, monthly, target 100)


def submit(slack: SlackHarness, value: str, note: str | None) -> Response:
    with slack.session() as session:
        kpi_id = session.exec(select(Kpi.id).where(Kpi.key == "new_approaches")).one()
    metadata = json.dumps({"channel": "C0SALES", "periods": {"2026-11": [kpi_id]}})
    values = {
        "kpi:new_approaches": {"value": {"type": "plain_text_input", "value": value}},
        "note": {"note": {"type": "plain_text_input", "value": note}},
    }
    return slack.client.view_submission("report_modal", values, user_id=OWNER, private_metadata=metadata)


def stored(slack: SlackHarness) -> list[Actual]:
    with slack.session() as session:
        return list(session.exec(select(Actual)).all())


@pytest.mark.parametrize("locale", ["ja", "en"])
@pytest.mark.parametrize(
    ("note", "count"),
    [("架電が\x00少なかった", 1), ("\x00", 1), ("bell\x07 and escape\x1b", 2), ("見込み\ud83dあり", 1)],
)
def test_a_note_with_control_characters_is_refused_at_the_note(
    slack: SlackHarness, note: str, count: int, locale: str
) -> None:
    if locale == "en":
        slack.fake.set_user(OWNER, locale="en-US")
    response = submit(slack, "85", note)
    assert response.status == 200
    body = response.json()
    assert body == {
        "response_action": "errors",
        "errors": {"note": render.message("report.error.note_control_characters", locale, count=count)},
    }
    slack.settle()
    assert stored(slack) == []


def test_a_nul_in_a_value_is_refused_at_its_field(slack: SlackHarness) -> None:
    response = submit(slack, "8\x005", None)
    assert response.status == 200
    body = response.json()
    assert body["response_action"] == "errors" and list(body["errors"]) == ["kpi:new_approaches"]
    assert "\x00" not in body["errors"]["kpi:new_approaches"]
    slack.settle()
    assert stored(slack) == []


def test_line_breaks_and_tabs_in_a_note_are_kept(slack: SlackHarness) -> None:
    note = "先週は展示会:\n\t- 架電 40 件\n\t- 訪問 5 件"
    response = submit(slack, "85", note)
    assert (response.status, response.body) == (200, "")
    slack.fake.wait_for("chat.postEphemeral")
    slack.settle()
    (row,) = stored(slack)
    assert (row.value, row.note) == (85, note)


def test_a_nul_in_a_typed_value_is_not_quoted_back(slack: SlackHarness) -> None:
    answer = slack.command("report new_approaches 8\x005", user_id=OWNER)
    assert "「85」" in answer.args["text"] and "\x00" not in answer.args["text"]
    assert stored(slack) == []
