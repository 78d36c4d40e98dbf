"""Alert messages for real: `/kpi report` and the scan over the signed HTTP path, the app's
WebClient against tests.fakeslack, the Post ledger in SQLite or PostgreSQL.

The example plan's clock is Monday 2026-11-30 10:00 JST: the last day of November, so a
running total's pace is its total. Tests that need mid-month move the clock.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from slack_sdk import WebClient
from slack_sdk.models.blocks import Block
from sqlmodel import col, select

import bot.alerts.flows
import bot.alerts.service
import handlers.report.interactive
from bot.alerts.flows import STORM
from bot.clock import set_clock
from bot.database import transaction
from bot.models import (
    Aggregation,
    Alert,
    AlertReason,
    AlertStatus,
    AuditEvent,
    Department,
    Kpi,
    Post,
    PostKind,
    PostStatus,
    Severity,
    Source,
    Target,
)
from bot.reports.actuals import record_actual
from bot.schedule.scheduler import Scheduler
from handlers.alerts.interactive import scan_and_post
from handlers.alerts.messages import ACTION_ACKNOWLEDGE, ACTION_COUNTERMEASURE
from handlers.blocks import MAX_BLOCKS
from handlers.cli import main
from handlers.client import make_web_client
from handlers.digests.interactive import make_jobs
from tests.fakeslack.harness import SlackHarness
from tests.fakeslack.server import Call, FakeSlack
from tests.plans import count_kpi

TOKYO = dt.timezone(dt.timedelta(hours=9))
SALES_OWNER = "U0SALES1"  # owns new_approaches and close_rate
CS_OWNER = "U0CS1"  # owns churn_rate (Customer Success speaks English)


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def followups(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """`wait(n)`: until the n-th report's follow-up (alerts posted) has finished."""
    done = threading.Semaphore(0)
    real = handlers.report.interactive.after_reports

    def counted(*args: Any, **kwargs: Any) -> None:
        try:
            real(*args, **kwargs)
        finally:
            done.release()

    monkeypatch.setattr(handlers.report.interactive, "after_reports", counted)

    def wait(count: int = 1) -> None:
        for _ in range(count):
            assert done.acquire(timeout=10), "the report's follow-up did not finish"

    return wait


@pytest.fixture
def report(slack: SlackHarness, followups: Callable[[int], None]) -> Callable[..., None]:
    def send(text: str, user_id: str = SALES_OWNER) -> None:
        slack.command(f"report {text}", user_id=user_id)
        followups(1)

    return send


def at(when: dt.datetime) -> None:
    now = when.astimezone(dt.UTC)
    set_clock(lambda: now)


def client_of(slack: SlackHarness) -> WebClient:
    return make_web_client(slack.settings)


def roots(fake: FakeSlack, channel: str | None = None) -> list[Call]:
    """Messages posted to a channel, not in a thread."""
    return [
        call
        for call in fake.calls("chat.postMessage")
        if not call.failed
        and "thread_ts" not in call.args
        and (channel is None or call.args["channel"] == channel)
    ]


def replies(fake: FakeSlack, thread_ts: str) -> list[Call]:
    return [
        call
        for call in fake.calls("chat.postMessage")
        if not call.failed and call.args.get("thread_ts") == thread_ts
    ]


def updates(fake: FakeSlack) -> list[Call]:
    return [call for call in fake.calls("chat.update") if not call.failed]


def text_of(call: Call) -> str:
    parts = [str(call.args.get("text", ""))]
    for block in call.args.get("blocks") or []:
        if "text" in block:
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            text = element.get("text")
            parts.append(text if isinstance(text, str) else (text or {}).get("text", ""))
    return "\n".join(parts)


def buttons(call: Call) -> list[tuple[str, str]]:
    return [
        (element["action_id"], element["value"])
        for block in call.args.get("blocks") or []
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def assert_block_kit_limits(call: Call) -> None:
    blocks = call.args.get("blocks") or []
    assert 0 < len(blocks) <= MAX_BLOCKS
    assert len(text_of(call)) < 8000
    for data in blocks:
        Block.parse(data).validate_json()  # type: ignore[union-attr]
        if data["type"] == "section":
            assert len(data["text"]["text"]) <= 3000
        if data["type"] == "actions":
            assert len(data["elements"]) <= 25


def alert_rows(slack: SlackHarness, key: str | None = None) -> list[Alert]:
    with slack.session() as session:
        query = select(Alert).join(Kpi, col(Kpi.id) == Alert.kpi_id).order_by(col(Alert.id))
        if key is not None:
            query = query.where(Kpi.key == key)
        return list(session.exec(query).all())


def the_alert(slack: SlackHarness, key: str) -> Alert:
    (alert,) = alert_rows(slack, key)
    return alert


def ledger(slack: SlackHarness) -> dict[str, Post]:
    with slack.session() as session:
        return {post.subject: post for post in session.exec(select(Post).where(Post.kind == PostKind.ALERT))}


# -- one alert, from a report ----------------------------------------------------------------------


def test_a_red_report_posts_one_alert_root_with_both_buttons(
    slack: SlackHarness, report: Callable[..., None]
) -> None:
    report("close_rate 10")  # 10 % against 15–20 %: 67 % of the low end, red

    (root,) = roots(slack.fake)
    assert root.args["channel"] == "C0SALES"
    assert_block_kit_limits(root)
    text = text_of(root)
    assert "🔴" in text and "*成約率*" in text and "2026年11月" in text and "営業部" in text
    assert "10%(目標 15〜20%): *達成率 67%* です。" in text
    assert "要対策" in text  # 🔴: the one word of the digest's legend
    alert = the_alert(slack, "close_rate")
    assert buttons(root) == [(ACTION_COUNTERMEASURE, str(alert.id)), (ACTION_ACKNOWLEDGE, str(alert.id))]
    assert alert.channel_id == "C0SALES" and alert.thread_ts is not None
    assert (alert.posted_severity, alert.posted_status) == (Severity.RED, AlertStatus.OPEN)
    post = ledger(slack)["close_rate"]
    assert (post.status, post.period, post.ts) == (PostStatus.SENT, "2026-11", alert.thread_ts)


def test_english_department_gets_english_and_lower_is_better_wording(
    slack: SlackHarness, report: Callable[..., None]
) -> None:
    report("churn_rate 4", user_id=CS_OWNER)  # target 2 %, lower is better: 200 %, red

    (root,) = roots(slack.fake)
    assert root.args["channel"] == "C0CS"
    text = text_of(root)
    assert "*Churn rate*" in text and "Customer Success" in text
    assert "4% against a target of 2%: *100% over its ceiling*." in text  # not "50% of target"
    assert "off track" in text and "Log countermeasure" in text and "Acknowledge" in text
    assert root.args["text"].startswith("🔴 *Churn rate*")


def test_the_same_severity_again_posts_nothing(slack: SlackHarness, report: Callable[..., None]) -> None:
    report("close_rate 10")
    report("close_rate 9")
    report("close_rate 8")
    slack.settle()
    assert len(roots(slack.fake)) == 1
    assert updates(slack.fake) == []
    assert the_alert(slack, "close_rate").value == Decimal(8)


def test_worse_updates_the_same_message_and_says_so_in_its_thread(
    slack: SlackHarness, report: Callable[..., None]
) -> None:
    report("close_rate 12")  # 80 %: amber
    root_ts = the_alert(slack, "close_rate").thread_ts
    assert root_ts is not None and "🟡" in text_of(roots(slack.fake)[0])

    report("close_rate 10")  # red
    (update,) = updates(slack.fake)
    assert (update.args["channel"], update.args["ts"]) == ("C0SALES", root_ts)
    assert "🔴" in text_of(update) and "*達成率 67%*" in text_of(update)
    assert len(roots(slack.fake)) == 1
    (note,) = replies(slack.fake, root_ts)
    assert note.args["text"] == "🟡 → 🔴 *成約率* は要注意から *要対策* になりました(達成率 67%)。"

    report("close_rate 12")  # better: amber again, the same message
    assert [u.args["ts"] for u in updates(slack.fake)] == [root_ts, root_ts]
    assert "🔴 → 🟡" in replies(slack.fake, root_ts)[-1].args["text"]

    report("close_rate 16")  # inside the range: resolved
    resolved = updates(slack.fake)[-1]
    assert resolved.args["ts"] == root_ts
    assert buttons(resolved) == [] and "✅" in text_of(resolved) and "解決済み" in text_of(resolved)
    assert "目標水準に戻りました" in replies(slack.fake, root_ts)[-1].args["text"]
    assert len(roots(slack.fake)) == 1
    alert = the_alert(slack, "close_rate")
    assert (alert.status, alert.posted_status) == (AlertStatus.RESOLVED, AlertStatus.RESOLVED)
    assert {"close_rate", "close_rate:red", "close_rate:amber", "close_rate:resolved"} <= set(ledger(slack))


def test_a_deleted_root_is_posted_again_and_the_thread_moves(
    slack: SlackHarness, report: Callable[..., None]
) -> None:
    report("close_rate 12")
    old_ts = the_alert(slack, "close_rate").thread_ts
    slack.fake.fail("chat.update", "message_not_found")  # someone deleted the alert in Slack

    report("close_rate 10")
    first, second = roots(slack.fake)
    alert = the_alert(slack, "close_rate")
    assert alert.thread_ts not in (None, old_ts)
    assert "🔴" in text_of(second) and buttons(second)[1] == (ACTION_ACKNOWLEDGE, str(alert.id))
    (note,) = replies(slack.fake, alert.thread_ts)  # type: ignore[arg-type]
    assert "🟡 → 🔴" in note.args["text"]
    assert ledger(slack)["close_rate"].ts == alert.thread_ts
    assert (alert.posted_severity, alert.posted_status) == (Severity.RED, AlertStatus.OPEN)

    report("close_rate 16")  # later changes go to the new message
    assert updates(slack.fake)[-1].args["ts"] == alert.thread_ts
    assert len(roots(slack.fake)) == 2


def test_a_department_without_channel_posts_nothing_and_logs_it(
    slack: SlackHarness, report: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    with transaction(slack.engine) as session:
        session.execute(sa.update(Department).where(col(Department.key) == "sales").values(channel_id=None))
    caplog.set_level(logging.WARNING, logger="bot.alerts.flows")
    report("close_rate 10")
    slack.settle()
    assert slack.fake.calls("chat.postMessage") == []
    assert "alerts of sales not posted: the department has no channel" in caplog.text
    alert = the_alert(slack, "close_rate")  # raised all the same: posted once a channel is set
    assert (alert.severity, alert.thread_ts, alert.posted_severity) == (Severity.RED, None, None)

    with transaction(slack.engine) as session:
        session.execute(
            sa.update(Department).where(col(Department.key) == "sales").values(channel_id="C0SALES")
        )
    scan_and_post(slack.engine, client_of(slack))
    assert [call.args["channel"] for call in roots(slack.fake)] == ["C0SALES"]


# -- the scan --------------------------------------------------------------------------------------


def test_the_scan_raises_a_pace_alert_mid_month_once(
    slack: SlackHarness, report: Callable[..., None]
) -> None:
    at(dt.datetime(2026, 11, 10, 18, tzinfo=TOKYO))
    report("new_approaches 30")  # day 10 of 30: on course for 90, no alert
    slack.settle()
    assert roots(slack.fake) == []

    at(dt.datetime(2026, 11, 20, 9, tzinfo=TOKYO))  # no report since: on course for 45
    result = scan_and_post(slack.engine, client_of(slack))
    assert [(c.kpi, c.kind, c.severity) for c in result.changes] == [
        ("new_approaches", "raised", Severity.RED)
    ]
    (root,) = roots(slack.fake, "C0SALES")
    text = text_of(root)
    assert "このペースだと月末の着地は *達成率 45%* の見込みです" in text
    assert "ここまで 30件、着地見込み 45件(目標 100件)" in text
    alert = the_alert(slack, "new_approaches")
    assert (alert.reason, alert.value) == (AlertReason.PACE, Decimal(45))

    again = scan_and_post(slack.engine, client_of(slack))
    assert again.changes == [] and (again.slack.posted, again.slack.updated) == (0, 0)
    assert len(slack.fake.calls("chat.postMessage")) == 1 and updates(slack.fake) == []


def test_the_scan_escalates_a_missing_streak_to_the_head(
    slack: SlackHarness, report: Callable[..., None]
) -> None:
    at(dt.datetime(2027, 1, 5, 9, tzinfo=TOKYO))  # November and December have ended unreported
    result = scan_and_post(slack.engine, client_of(slack))
    assert result.failed == [] and result.slack.failed == 0
    missing = {c.kpi for c in result.changes if c.severity is Severity.MISSING}
    # Every KPI typed in (not the derived sql_conversion), each in its own message: none has more than STORM.
    assert missing == {
        "mqls",
        "cost_per_lead",
        "website_visits",
        "sqls",
        "appointments",
        "revenue",
        "new_approaches",
        "close_rate",
        "pipeline_deals",
        "average_deal_size",
        "nps",
        "retention_rate",
        "churn_rate",
        "upsell_rate",
        "cross_sell_rate",
    }
    assert len(roots(slack.fake)) == 15
    (approaches,) = [call for call in roots(slack.fake, "C0SALES") if "新規アプローチ数" in text_of(call)]
    text = text_of(approaches)
    assert "⚠️" in text and "2026年11月と2026年12月の2期連続で未報告です" in text
    assert "<@U0SALESHEAD> さん、<@U0SALES1> さんに確認をお願いします" in text
    (churn,) = [call for call in roots(slack.fake, "C0CS") if "Churn rate" in text_of(call)]
    assert "Not reported for Nov 2026 or Dec 2026: two periods in a row." in text_of(
        churn
    ) and "<@U0CSHEAD>, please follow up" in text_of(churn)

    calls = len(slack.fake.calls())
    again = scan_and_post(slack.engine, client_of(slack))
    assert again.changes == [] and len(slack.fake.calls()) == calls

    # A late report for December (on its target of 80) resolves its missing alert, in its thread.
    report("new_approaches 100 2026-12")
    alert = next(a for a in alert_rows(slack, "new_approaches") if a.period == "2026-12")
    assert (alert.status, alert.posted_status) == (AlertStatus.RESOLVED, AlertStatus.RESOLVED)
    assert "目標水準に戻りました" in replies(slack.fake, alert.thread_ts or "")[-1].args["text"]


# -- storms ----------------------------------------------------------------------------------------


def add_kpis(slack: SlackHarness, count: int, value: int) -> None:
    """`count` more KPIs for Sales, each reported at `value` against 100 for November."""
    with transaction(slack.engine) as session:
        sales = session.exec(select(Department).where(Department.key == "sales")).one()
        for index in range(count):
            kpi = count_kpi(
                f"extra_{index:02d}",
                sales.id,
                name_ja=f"追加の指標 {index:02d}(新規顧客向け提案のフォローアップ完了数)",
                aggregation=Aggregation.LAST,
                owner_user_id=SALES_OWNER,
                position=100 + index,
            )
            session.add(kpi)
            session.flush()
            assert kpi.id is not None
            session.add(Target(kpi_id=kpi.id, period="*", value=Decimal(100)))
            record_actual(
                session,
                kpi=kpi,
                period="2026-11",
                value=Decimal(value),
                reported_by="U0SEED",
                source=Source.CSV,
            )


def test_fifty_red_kpis_in_one_channel_make_one_grouped_message(slack: SlackHarness) -> None:
    add_kpis(slack, 50, 10)
    result = scan_and_post(slack.engine, client_of(slack))
    assert result.slack.failed == 0 and len(alert_rows(slack)) == 50

    (root,) = roots(slack.fake)
    assert root.args["channel"] == "C0SALES"
    assert "*営業部の KPI 50件に注意が必要です* ・ 🔴 50" in text_of(root)
    alerts = alert_rows(slack)
    root_ts = alerts[0].thread_ts
    assert root_ts is not None and all(a.thread_ts == root_ts and a.channel_id == "C0SALES" for a in alerts)
    continued = replies(slack.fake, root_ts)
    assert continued and "(続き 2/" in text_of(continued[0])
    messages = [root, *continued]
    for message in messages:
        assert_block_kit_limits(message)
        assert len(text_of(message)) <= 4000
    # Every alert is listed once, with its buttons: nothing truncated.
    listed = [
        value for message in messages for action, value in buttons(message) if action == ACTION_ACKNOWLEDGE
    ]
    assert sorted(listed, key=int) == [str(a.id) for a in alerts]
    assert all(f"追加の指標 {i:02d}" in "".join(text_of(m) for m in messages) for i in range(50))

    calls = len(slack.fake.calls())
    assert scan_and_post(slack.engine, client_of(slack)).changes == []
    assert len(slack.fake.calls()) == calls

    # One of them recovers: the message listing it is updated, the thread told.
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "extra_49")).one()
        record_actual(
            session, kpi=kpi, period="2026-11", value=Decimal(95), reported_by="U0", source=Source.CSV
        )
    scan_and_post(slack.engine, client_of(slack))
    (update,) = updates(slack.fake)
    message_ts = ledger(slack)["extra_49"].ts
    assert update.args["ts"] == message_ts and message_ts != root_ts  # listed in a continuation
    assert_block_kit_limits(update)
    assert ("alert_acknowledge", str(alerts[-1].id)) not in buttons(update)
    assert "(続き " in text_of(update)
    assert "目標水準に戻りました" in replies(slack.fake, root_ts)[-1].args["text"]
    assert len(roots(slack.fake)) == 1


def test_a_few_new_alerts_are_posted_one_by_one(slack: SlackHarness) -> None:
    add_kpis(slack, STORM, 10)
    scan_and_post(slack.engine, client_of(slack))
    assert len(roots(slack.fake, "C0SALES")) == STORM
    assert len({a.thread_ts for a in alert_rows(slack)}) == STORM


# -- acknowledge -----------------------------------------------------------------------------------


def click(slack: SlackHarness, alert: Alert, user_id: str) -> None:
    response = slack.client.block_action(
        ACTION_ACKNOWLEDGE, value=str(alert.id), user_id=user_id, message_ts=alert.thread_ts
    )
    assert response.status == 200


def test_two_people_acknowledging_at_once_change_it_once(
    slack: SlackHarness, report: Callable[..., None]
) -> None:
    report("close_rate 10")
    alert = the_alert(slack, "close_rate")
    start = threading.Barrier(2)

    def press(user_id: str) -> None:
        start.wait()
        click(slack, alert, user_id)

    threads = [threading.Thread(target=press, args=(user,)) for user in ("U0SALES1", "U0SALESHEAD")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slack.fake.wait_for("chat.update")
    slack.fake.wait_for("response_url", count=2)  # the report's confirmation and one "already"
    slack.settle()

    acknowledged = the_alert(slack, "close_rate")
    winner = acknowledged.acknowledged_by
    loser = ({"U0SALES1", "U0SALESHEAD"} - {winner}).pop()
    assert (
        acknowledged.status is AlertStatus.ACKNOWLEDGED
        and acknowledged.posted_status is AlertStatus.ACKNOWLEDGED
    )
    (update,) = updates(slack.fake)
    assert update.args["ts"] == alert.thread_ts
    assert f"<@{winner}> が確認済み" in text_of(update)
    assert buttons(update) == [(ACTION_COUNTERMEASURE, str(alert.id))]
    (note,) = replies(slack.fake, alert.thread_ts or "")
    assert f"<@{winner}> が *成約率* のアラートを確認済みにしました" in note.args["text"]
    told = slack.fake.calls("response_url")[-1]
    assert told.args["response_type"] == "ephemeral" and told.args["replace_original"] in (False, "false")
    assert f"<@{winner}> がすでに確認済み" in told.args["text"]
    with slack.session() as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "alert.acknowledged")).all()
    assert [(e.actor, e.entity_id) for e in events] == [(winner, str(alert.id))]

    click(slack, alert, loser)  # clicking again later: told again, nothing changes
    slack.fake.wait_for("response_url", count=3)
    slack.settle()
    assert len(updates(slack.fake)) == 1 and len(replies(slack.fake, alert.thread_ts or "")) == 1


def test_acknowledging_a_resolved_alert_says_so(slack: SlackHarness, report: Callable[..., None]) -> None:
    report("close_rate 10")
    report("close_rate 17")
    alert = the_alert(slack, "close_rate")
    assert alert.status is AlertStatus.RESOLVED
    click(slack, alert, "U0SALESHEAD")
    told = slack.fake.wait_for("response_url", count=3)[-1]
    assert "すでに解決済み" in told.args["text"]


def test_only_the_departments_members_and_admins_may_acknowledge(
    slack: SlackHarness, report: Callable[..., None]
) -> None:
    report("close_rate 10")
    alert = the_alert(slack, "close_rate")
    click(slack, alert, CS_OWNER)  # owns a KPI of Customer Success, not of Sales
    told = slack.fake.wait_for("response_url", count=2)[-1]
    slack.settle()
    assert told.args["response_type"] == "ephemeral"
    assert "営業部のアラートを確認済みにできるのは" in told.args["text"]
    assert "<@U0SALESHEAD>" in told.args["text"] and "未対応のまま" in told.args["text"]
    unchanged = the_alert(slack, "close_rate")
    assert (unchanged.status, unchanged.acknowledged_by) == (AlertStatus.OPEN, None)
    assert updates(slack.fake) == [] and replies(slack.fake, alert.thread_ts or "") == []
    with slack.session() as session:
        assert session.exec(select(AuditEvent).where(AuditEvent.action == "alert.acknowledged")).all() == []

    slack.fake.set_user("U0ADMIN", is_admin=True)  # a workspace admin may, in any department
    click(slack, alert, "U0ADMIN")
    slack.fake.wait_for("chat.update")
    slack.settle()
    assert the_alert(slack, "close_rate").acknowledged_by == "U0ADMIN"


# -- kpibot alerts ---------------------------------------------------------------------------------


def test_kpibot_alerts_dry_run_then_for_real(
    slack: SlackHarness,
    report: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    at(dt.datetime(2026, 11, 10, 18, tzinfo=TOKYO))
    report("new_approaches 30")
    at(dt.datetime(2026, 11, 20, 9, tzinfo=TOKYO))
    monkeypatch.setenv("DATABASE_URL", slack.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", slack.fake.url)
    capsys.readouterr()

    assert main(["--locale", "en", "alerts", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sales: new_approaches 2026-11: alert raised (off track)" in out
    assert "--dry-run: nothing was saved or posted." in out
    assert alert_rows(slack) == [] and slack.fake.calls("chat.postMessage") == []

    assert main(["--locale", "en", "alerts"]) == 0
    out = capsys.readouterr().out
    assert "sales: new_approaches 2026-11: alert raised (off track)" in out
    assert "Slack: 1 new message(s), 0 update(s), 0 thread note(s)." in out
    assert len(roots(slack.fake, "C0SALES")) == 1

    assert main(["--locale", "en", "alerts"]) == 0
    assert "No alert changed." in capsys.readouterr().out
    assert len(roots(slack.fake)) == 1


def test_one_failing_department_never_stops_the_others(
    slack: SlackHarness, report: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rules of one department fail, inside the scan's batch of departments.
    real = bot.alerts.service._check

    def broken(session: Any, rows: Any, department: Department, *args: Any, **kwargs: Any) -> Any:
        if department.key == "marketing":
            raise RuntimeError("marketing is broken")
        return real(session, rows, department, *args, **kwargs)

    monkeypatch.setattr(bot.alerts.service, "_check", broken)
    at(dt.datetime(2027, 1, 5, 9, tzinfo=TOKYO))
    result = scan_and_post(slack.engine, client_of(slack))
    assert result.failed == [("marketing", "marketing is broken")]
    assert {call.args["channel"] for call in roots(slack.fake)} == {"C0INSIDESALES", "C0SALES", "C0CS"}


def test_a_slack_error_is_retried_by_the_next_scan(slack: SlackHarness, report: Callable[..., None]) -> None:
    slack.fake.fail("chat.postMessage", "internal_error")
    report("close_rate 10")
    assert roots(slack.fake) == [] and the_alert(slack, "close_rate").thread_ts is None
    assert ledger(slack)["close_rate"].status is PostStatus.FAILED

    result = scan_and_post(slack.engine, client_of(slack))
    assert result.slack.posted == 1 and len(roots(slack.fake)) == 1
    assert ledger(slack)["close_rate"].status is PostStatus.SENT


def test_the_scheduler_scans_every_hour_on_the_leader(
    slack: SlackHarness, report: Callable[..., None]
) -> None:
    at(dt.datetime(2026, 11, 10, 18, tzinfo=TOKYO))
    report("new_approaches 30")
    at(dt.datetime(2026, 11, 25, 12, tzinfo=TOKYO))  # a Wednesday: no digest to catch up on
    jobs = make_jobs(client_of(slack), slack.engine, slack.settings)
    scheduler = Scheduler(slack.engine, jobs, lock_key=random.randrange(1, 2**31))
    scheduler.start()
    try:
        assert scheduler.is_leader
        job = scheduler.apscheduler.get_job("alert-scan")
        assert job is not None and job.trigger.interval == dt.timedelta(hours=1)
        assert job.next_run_time < dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
        scheduler.scan_alerts()  # what the job runs
    finally:
        scheduler.shutdown()
    (root,) = roots(slack.fake, "C0SALES")
    assert "*達成率 36%*" in text_of(root)  # 30 by the 25th
    assert the_alert(slack, "new_approaches").reason is AlertReason.PACE
