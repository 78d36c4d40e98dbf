"""`/kpi review` lists the countermeasures closed since the last review with their verdicts (over
signed HTTP, on SQLite and PostgreSQL); `kpibot demo` shows the funnel with its leaking hand-off, a
streak alert, a playbook adopted from an alert and a countermeasure's effect with its verdict."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.clock import set_clock
from bot.models import Countermeasure, CountermeasureStatus
from handlers.cli import main
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


def test_the_demo_shows_the_funnel_a_streak_a_playbook_adopted_and_an_effect_with_its_verdict(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "KPIBOT_LOCALE", "KPIBOT_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    set_clock(lambda: dt.datetime(2026, 12, 7, 10, 0, tzinfo=ZoneInfo("Asia/Tokyo")))
    assert main(["demo", "--locale", "en"]) == 0
    out = capsys.readouterr().out
    division, _, slack = out.partition("Alerts, threads and countermeasures")

    # The division digest: the funnel's stages and the hand-off that leaks most.
    assert "*Funnel* · Nov 2026" in division
    assert "*Deals opened* (Sales)" in division and "*Upsells* (Customer Success)" in division
    assert "leaks most: Sales → Sales" in division
    # Its own alert in the division channel, naming the head.
    assert "#C0DIVISION" in slack and "*The funnel leaks: Sales → Sales* (Nov 2026)" in slack
    # Deals won below target three months running: the streak alert, escalated to the head, with the
    # countermeasures agreed in the plan; the head adopted the first in one click.
    assert "*below target 3 periods running* <@U0SALESHEAD>" in slack
    assert "*Agreed in advance* for this KPI" in slack
    assert "*Countermeasure for Deals won*, logged by <@U0SALESHEAD>" in slack
    # The story's countermeasure: its effect from before to now, and the verdict.
    assert "Oct 2026 128 (64% of target) → Nov 2026 *186*" in slack
    assert "Verdict: *worked*" in slack
    assert (tmp_path / "kpibot-demo.html").read_text(encoding="utf-8").count("The funnel leaks") >= 1
