"""What escapes a listener (handlers/work.py, the app's `app.error`): told to the user once, in
their language, never a 500; a request Slack delivers again is dropped quietly."""

from __future__ import annotations

import logging

import pytest

from bot import render
from handlers import commands
from handlers.commands import CommandRequest
from handlers.work import AlreadyHandled
from tests.fakeslack.harness import SlackHarness

OWNER = "U0SALES1"


def test_an_unexpected_failure_is_told_and_logged(
    slack: SlackHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: CommandRequest) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setitem(commands.SUBCOMMANDS, "status", broken)
    caplog.set_level(logging.ERROR, logger="handlers.work")

    answer = slack.command("status", user_id=OWNER)

    assert answer.args["response_type"] == "ephemeral"
    assert answer.args["text"] == render.message("error.unexpected", "ja")
    assert "何も保存されていません" in answer.args["text"]
    assert any("/kpi from U0SALES1 failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_an_unexpected_failure_in_english(slack: SlackHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(request: CommandRequest) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setitem(commands.SUBCOMMANDS, "status", broken)
    slack.fake.set_user(OWNER, locale="en-US")
    answer = slack.command("status", user_id=OWNER)
    assert answer.args["text"].startswith(":warning: Something went wrong on kpibot's side")


def test_a_request_already_handled_gets_no_second_answer(
    slack: SlackHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def again(request: CommandRequest) -> None:
        raise AlreadyHandled("command:trigger-1")

    monkeypatch.setitem(commands.SUBCOMMANDS, "status", again)
    response = slack.send("status", user_id=OWNER)
    assert response.status == 200
    slack.command("help", user_id=OWNER)  # a later answer arrives; none came before it
    assert len(slack.fake.calls("response_url")) == 1


def test_a_listener_that_fails_right_after_its_ack_still_answers_slack_200(
    slack: SlackHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bolt resets the ack when a listener raises after ack(): unless the ack is kept, Slack may get
    # a 404 "unhandled request" three seconds later instead of the ack it was given.
    def again(request: CommandRequest) -> None:
        raise AlreadyHandled("command:trigger-1")

    monkeypatch.setitem(commands.SUBCOMMANDS, "status", again)
    statuses = [slack.send("status", user_id=OWNER).status for _ in range(10)]
    assert statuses == [200] * 10
