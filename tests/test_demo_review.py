"""`/kpi review` lists the countermeasures closed since the last review with their verdicts (over
signed HTTP, on SQLite and PostgreSQL); `kpibot demo` shows the funnel with its leaking hand-off, a
streak alert, a playbook adopted from an alert and a countermeasure's effect with its verdict."""

from __future__ import annotations

import datetime as dt

from bot.models import Countermeasure, CountermeasureStatus
from tests.fakeslack.harness import SlackHarness
from tests.test_effects import SALES1, countermeasure_on_october, on, report

SALES = "C0SALES"
CLOSED_JA = "前回のレビュー以降に終了した対策"


def posted_in(slack: SlackHarness, channel: str, marker: str) -> list[str]:
    return [
        str(call.args["text"])
        for call in slack.fake.calls("chat.postMessage")
        if call.args.get("channel") == channel and marker in str(call.args.get("text"))
    ]


def press_done(slack: SlackHarness, cm: Countermeasure) -> None:
    # The confirmation's ts: the permalink kpibot asked for right after posting it.
    [link] = [c for c in slack.fake.calls("chat.getPermalink") if c.args.get("channel") == SALES][-1:]
    response = slack.client.block_action(
        "countermeasure_done",
        value=str(cm.id),
        user_id=SALES1,
        channel_id=SALES,
        message_ts=str(link.args["message_ts"]),
        thread_ts=cm.thread_ts,
    )
    assert response.status == 200
    slack.settle()


def test_the_review_lists_countermeasures_closed_since_the_last_review_with_their_verdicts(
    slack: SlackHarness,
) -> None:
    cm, _ = countermeasure_on_october(slack)
    on(dt.date(2026, 12, 2))
    report(slack, "new_approaches 95 2026-11")  # November's final figure: back on track, it worked
    press_done(slack, cm)
    with slack.session() as session:
        row = session.get(Countermeasure, cm.id)
    assert row is not None and row.status is CountermeasureStatus.DONE and row.closed_at is not None

    slack.command("review", user_id=SALES1, channel_id=SALES)
    slack.settle()
    [closed] = posted_in(slack, SALES, CLOSED_JA)
    assert "既存顧客の紹介を依頼する" in closed and "完了" in closed and "効果あり" in closed

    # A week later: it was closed before that review, so this one does not list it again.
    on(dt.date(2026, 12, 9))
    slack.command("review", user_id=SALES1, channel_id=SALES)
    slack.settle()
    assert len(posted_in(slack, SALES, CLOSED_JA)) == 1
    assert len(posted_in(slack, SALES, "週次レビュー")) >= 2  # both agendas were posted
