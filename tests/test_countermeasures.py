"""Countermeasures and the review agenda over the signed HTTP path, against the fake Slack.

Every way to log one (button → form, message shortcut, `/kpi countermeasure`, `@kpibot 対策:`),
Done/Dropped, the effect when the next actual arrives, the due-date reminder, `/kpi countermeasures`
and `/kpi review`. The clock is Monday 2026-11-30 10:00 JST; alerts are rows inserted here with a
root message posted through the fake (the alert poster is handlers/alerts/interactive.py's business).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import col, select

from bot.database import transaction
from bot.models import (
    Alert,
    AlertReason,
    AlertStatus,
    AuditEvent,
    Countermeasure,
    CountermeasureStatus,
    Kpi,
    Post,
    PostKind,
    PostStatus,
    Severity,
    Source,
)
from bot.reports.actuals import record_actual
from handlers.client import make_web_client
from handlers.countermeasures.interactive import remind_due
from handlers.digests.interactive import make_jobs
from tests.fakeslack.client import Response
from tests.fakeslack.harness import NOW, SlackHarness
from tests.fakeslack.server import BOT_USER_ID, Call

SALES1 = "U0SALES1"  # owns new_approaches (count, monthly, target 100) and close_rate (%, 15–20)
SALES2 = "U0SALES2"  # owns pipeline_deals and average_deal_size
SALES_HEAD = "U0SALESHEAD"  # heads sales, owns revenue
OUTSIDER = "U0MKT1"  # owns marketing KPIs only
CHANNEL = "C0SALES"
JST = dt.timezone(dt.timedelta(hours=9))

JsonDict = dict[str, Any]


# -- helpers ---------------------------------------------------------------------------------------


def seed(slack: SlackHarness, key: str, period: str, value: int | str) -> None:
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == key)).one()
        record_actual(
            session, kpi=kpi, period=period, value=Decimal(value), reported_by="U0SEED", source=Source.CSV
        )


def make_alert(slack: SlackHarness, key: str = "new_approaches", period: str = "2026-10") -> Alert:
    """An alert as the alert sync leaves it: a root message in the channel, its row marked posted."""
    root = make_web_client(slack.settings).chat_postMessage(
        channel=CHANNEL, text=f":red_circle: {key} {period}"
    )
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == key)).one()
        # Seeding a low actual may have raised it already (bot.alerts.rules listens to every actual).
        alert = session.exec(select(Alert).where(Alert.kpi_id == kpi.id, Alert.period == period)).first()
        alert = alert or Alert(kpi_id=kpi.id, period=period, reason=AlertReason.BELOW_TARGET)
        alert.severity = alert.posted_severity = Severity.RED
        alert.status = alert.posted_status = AlertStatus.OPEN
        alert.value = alert.achievement_pct = Decimal(60)
        alert.channel_id, alert.thread_ts = CHANNEL, str(root["ts"])
        session.add(alert)
    return alert


def countermeasures(slack: SlackHarness) -> list[Countermeasure]:
    with slack.session() as session:
        return list(session.exec(select(Countermeasure).order_by(col(Countermeasure.id))).all())


def wait_for_rows(slack: SlackHarness, count: int, timeout: float = 5.0) -> list[Countermeasure]:
    """Logging happens after the ack, so the database catches up a moment later."""
    deadline = time.monotonic() + timeout
    while len(rows := countermeasures(slack)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return rows


def in_thread(slack: SlackHarness, thread_ts: str | None, marker: str = "") -> list[Call]:
    return [
        call
        for call in slack.fake.calls("chat.postMessage")
        if call.args.get("thread_ts") == thread_ts and marker in call_text(call)
    ]


def call_text(call: Call) -> str:
    """The text and every section and context line of a message."""
    pieces = [str(call.args.get("text", ""))]
    for block in call.args.get("blocks") or []:
        if block["type"] == "section":
            pieces.append(block["text"]["text"])
        elif block["type"] == "context":
            pieces += [element["text"] for element in block["elements"]]
    return "\n".join(pieces)


def buttons(call: Call) -> dict[str, str]:
    return {
        element["action_id"]: element["value"]
        for block in call.args.get("blocks") or []
        if block["type"] == "actions"
        for element in block["elements"]
    }


def wait_for_posts(slack: SlackHarness, thread_ts: str | None, marker: str, count: int = 1) -> list[Call]:
    """Follow-ups are posted after the reply to the command that caused them."""
    deadline = time.monotonic() + 5
    while len(found := in_thread(slack, thread_ts, marker)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def wait_for_confirmation(slack: SlackHarness, thread_ts: str | None, count: int = 1) -> Call:
    found = wait_for_posts(slack, thread_ts, ":memo:", count)
    assert len(found) >= count, slack.fake.calls("chat.postMessage")
    return found[count - 1]


def click_log(slack: SlackHarness, alert: Alert, user_id: str = SALES1) -> Response:
    return slack.client.block_action(
        "alert_log_countermeasure",
        value=str(alert.id),
        user_id=user_id,
        channel_id=CHANNEL,
        message_ts=alert.thread_ts,
    )


def form_values(
    text: str, owner: str | None = SALES1, due: str | None = None, effect: str | None = None
) -> dict[str, dict[str, JsonDict]]:
    return {
        "text": {"value": {"type": "plain_text_input", "value": text}},
        "owner": {"value": {"type": "users_select", "selected_user": owner}},
        "due": {"value": {"type": "datepicker", "selected_date": due}},
        "effect": {"value": {"type": "plain_text_input", "value": effect}},
    }


def submit(
    slack: SlackHarness, view: JsonDict, user_id: str = SALES1, view_id: str | None = None, **values: Any
) -> Response:
    return slack.client.view_submission(
        "countermeasure_modal",
        form_values(**values),
        user_id=user_id,
        private_metadata=view["private_metadata"],
        view_id=view_id,
    )


def inputs(view: JsonDict) -> dict[str, JsonDict]:
    return {block["block_id"]: block for block in view["blocks"] if block["type"] == "input"}


def mention(
    slack: SlackHarness,
    text: str,
    *,
    user_id: str = SALES1,
    thread_ts: str | None,
    event_id: str | None = None,
    retry_num: int | None = None,
) -> Response:
    ts = f"{time.time():.6f}"
    event = {
        "type": "app_mention",
        "user": user_id,
        "text": f"<@{BOT_USER_ID}> {text}",
        "ts": ts,
        "channel": CHANNEL,
        "event_ts": ts,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return slack.client.event(event, event_id=event_id, retry_num=retry_num)


def log_by_command(slack: SlackHarness, text: str, user_id: str = SALES1) -> Call:
    return slack.command(f"countermeasure {text}", user_id=user_id)


# -- the button and the form -----------------------------------------------------------------------


def test_button_opens_the_form_and_its_submission_logs_one_countermeasure(slack: SlackHarness) -> None:
    seed(slack, "new_approaches", "2026-10", 60)
    alert = make_alert(slack)

    started = time.time()
    response = click_log(slack, alert)
    assert response.status == 200
    (opened,) = slack.fake.wait_for("views.open")
    assert opened.timestamp - started < 3  # trigger_id lives ~3 s
    view = opened.args["view"]
    assert view["callback_id"] == "countermeasure_modal"
    assert view["title"]["text"] == "対策を記録" and len(view["title"]["text"]) <= 24
    fields = inputs(view)
    assert list(fields) == ["text", "owner", "due", "effect"]
    assert fields["text"]["element"]["multiline"] is True and not fields["text"].get("optional")
    assert fields["owner"]["element"]["type"] == "users_select"
    assert fields["owner"]["element"]["initial_user"] == SALES1  # the KPI's owner
    assert fields["due"]["element"]["type"] == "datepicker" and fields["due"]["optional"] is True
    assert fields["effect"]["optional"] is True
    assert "新規アプローチ数" in view["blocks"][0]["text"]["text"]
    metadata = json.loads(view["private_metadata"])
    assert metadata == {
        "alert": alert.id,
        "kpi": alert.kpi_id,
        "channel": CHANNEL,
        "thread_ts": alert.thread_ts,
    }

    answer = submit(
        slack,
        view,
        text="10 月のウェビナー参加者に全件架電",
        owner=SALES2,
        due="2026-12-15",
        effect="+20 件",
        view_id="V1",
    )
    assert answer.status == 200 and not answer.body  # the form closes

    confirmation = wait_for_confirmation(slack, alert.thread_ts)
    shown = call_text(confirmation)
    assert "10 月のウェビナー参加者に全件架電" in shown
    assert f"<@{SALES2}>" in shown and "12月15日(火)" in shown and "+20 件" in shown
    assert "予定" in shown and f"<@{SALES1}>" in shown
    (row,) = wait_for_rows(slack, 1)
    assert buttons(confirmation) == {
        "countermeasure_done": str(row.id),
        "countermeasure_dropped": str(row.id),
    }
    assert row.alert_id == alert.id and row.kpi_id == alert.kpi_id
    assert row.text == "10 月のウェビナー参加者に全件架電" and row.expected_effect == "+20 件"
    assert row.owner_user_id == SALES2 and row.due_date == dt.date(2026, 12, 15)
    assert row.status is CountermeasureStatus.PLANNED and row.logged_by == SALES1
    assert (row.channel_id, row.thread_ts) == (CHANNEL, alert.thread_ts)
    assert (row.baseline_period, row.baseline_value) == ("2026-10", Decimal(60))
    deadline = time.monotonic() + 5
    while countermeasures(slack)[0].permalink is None and time.monotonic() < deadline:
        time.sleep(0.02)
    ts = confirmation.args.get("ts") or _ts_of(slack, confirmation)
    assert (
        countermeasures(slack)[0].permalink
        == f"https://fake.slack.com/archives/{CHANNEL}/p{ts.replace('.', '')}"
    )

    # Slack retries the submission (same view id): still one countermeasure, one confirmation.
    assert submit(slack, view, text="10 月のウェビナー参加者に全件架電", view_id="V1").status == 200
    slack.settle()
    assert len(countermeasures(slack)) == 1
    assert len(in_thread(slack, alert.thread_ts, ":memo:")) == 1


def _ts_of(slack: SlackHarness, call: Call) -> str:
    """The ts the fake gave a posted message: the permalink requested right after it names it."""
    links = [c for c in slack.fake.calls("chat.getPermalink") if c.timestamp >= call.timestamp]
    return str(links[0].args["message_ts"])


def test_the_form_refuses_a_past_due_date_and_an_empty_text_field_by_field(slack: SlackHarness) -> None:
    alert = make_alert(slack)
    click_log(slack, alert)
    view = slack.fake.wait_for("views.open")[0].args["view"]

    answer = submit(slack, view, text="  ", due="2026-11-29")
    errors = answer.json()["errors"]
    assert answer.json()["response_action"] == "errors"
    assert set(errors) == {"text", "due"}
    assert "11月29日(日)" in errors["due"] and "過去" in errors["due"]
    assert "入力" in errors["text"]

    assert "errors" not in (
        submit(slack, view, text="今日から", due="2026-11-30").json() or {}
    )  # today is fine
    assert len(wait_for_rows(slack, 1)) == 1


def test_the_form_refuses_control_characters_in_the_text_and_the_effect(slack: SlackHarness) -> None:
    # A NUL made PostgreSQL refuse the insert after the form had closed: nothing logged, nothing said.
    alert = make_alert(slack)
    click_log(slack, alert)
    view = slack.fake.wait_for("views.open")[0].args["view"]

    answer = submit(slack, view, text="架電\x00を増やす", effect="+20 件\x1b[31m\x7f")
    assert answer.json()["response_action"] == "errors"
    assert answer.json()["errors"] == {
        "text": "制御文字(NUL など)が 1個含まれています。取り除いてからもう一度送ってください。",
        "effect": "制御文字(NUL など)が 2個含まれています。取り除いてからもう一度送ってください。",
    }
    slack.settle()
    assert countermeasures(slack) == []
    assert in_thread(slack, alert.thread_ts, ":memo:") == []


def test_a_command_or_mention_with_a_nul_is_refused_and_logs_nothing(slack: SlackHarness) -> None:
    alert = make_alert(slack)
    slack.fake.set_user(SALES1, locale="en-US")
    answer = log_by_command(slack, "new_approaches call\x00 back")
    assert answer.args["response_type"] == "ephemeral"
    assert answer.args["text"] == (
        "This contains 1 control character(s) (such as NUL); remove them and send again."
    )
    mention(slack, "対策: 架電を\x00増やす", thread_ts=alert.thread_ts)
    (refusal,) = slack.fake.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == SALES1 and refusal.args["thread_ts"] == alert.thread_ts
    assert "1 control character(s)" in refusal.args["text"]
    slack.settle()
    assert countermeasures(slack) == []
    assert in_thread(slack, alert.thread_ts, ":memo:") == []


def test_an_outsider_can_neither_open_nor_submit_the_form(slack: SlackHarness) -> None:
    alert = make_alert(slack)
    click_log(slack, alert, user_id=OUTSIDER)
    (refusal,) = slack.fake.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == OUTSIDER and refusal.args["thread_ts"] == alert.thread_ts
    assert "営業部" in refusal.args["text"] and "メンバー" in refusal.args["text"]
    assert slack.fake.calls("views.open") == []

    # A form opened by a member, submitted by someone else (or forged).
    click_log(slack, alert, user_id=SALES1)
    view = slack.fake.wait_for("views.open")[0].args["view"]
    answer = submit(slack, view, user_id=OUTSIDER, text="やります")
    assert answer.json()["response_action"] == "errors"
    assert "メンバー" in answer.json()["errors"]["text"]
    slack.settle()
    assert countermeasures(slack) == []


def test_an_admin_and_the_head_are_members(slack: SlackHarness) -> None:
    slack.fake.set_user("U0ADMIN", is_admin=True)
    alert = make_alert(slack)
    click_log(slack, alert, user_id="U0ADMIN")
    click_log(slack, alert, user_id=SALES_HEAD)
    assert len(slack.fake.wait_for("views.open", count=2)) == 2
    assert slack.fake.calls("chat.postEphemeral") == []


# -- the message shortcut --------------------------------------------------------------------------


def test_the_shortcut_on_a_reply_in_an_alert_thread_opens_the_form_prefilled(slack: SlackHarness) -> None:
    alert = make_alert(slack)
    reply = {
        "type": "message",
        "user": SALES2,
        "ts": "1800000000.000100",
        "thread_ts": alert.thread_ts,
        "text": "来週から既存顧客への紹介依頼を始めます",
    }
    assert (
        slack.client.message_shortcut("log_countermeasure", reply, channel_id=CHANNEL, user_id=SALES1).status
        == 200
    )
    view = slack.fake.wait_for("views.open")[0].args["view"]
    assert inputs(view)["text"]["element"]["initial_value"] == "来週から既存顧客への紹介依頼を始めます"
    assert json.loads(view["private_metadata"])["alert"] == alert.id

    submit(slack, view, text="来週から既存顧客への紹介依頼を始めます", owner=SALES2)
    confirmation = wait_for_confirmation(slack, alert.thread_ts)
    assert "紹介依頼" in call_text(confirmation)
    (row,) = wait_for_rows(slack, 1)
    assert row.alert_id == alert.id and row.owner_user_id == SALES2 and row.due_date is None


def test_the_shortcut_outside_an_alert_thread_explains_where_it_works(slack: SlackHarness) -> None:
    make_alert(slack)
    elsewhere = {"type": "message", "user": SALES2, "ts": "1800000000.000200", "text": "雑談です"}
    slack.client.message_shortcut("log_countermeasure", elsewhere, channel_id=CHANNEL, user_id=SALES1)
    (answer,) = slack.fake.wait_for("response_url")
    assert answer.args["response_type"] == "ephemeral"
    assert "アラートのスレッド" in answer.args["text"] and "/kpi countermeasure" in answer.args["text"]
    # A thread that is not an alert's is "outside" too.
    in_other_thread = {**elsewhere, "ts": "1800000000.000300", "thread_ts": "1800000000.000200"}
    slack.client.message_shortcut("log_countermeasure", in_other_thread, channel_id=CHANNEL, user_id=SALES1)
    slack.fake.wait_for("response_url", count=2)
    assert slack.fake.calls("views.open") == [] and countermeasures(slack) == []


# -- /kpi countermeasure ---------------------------------------------------------------------------


def test_the_command_logs_against_the_kpis_open_alert_and_links_to_it(slack: SlackHarness) -> None:
    seed(slack, "new_approaches", "2026-10", 60)
    alert = make_alert(slack)
    answer = log_by_command(slack, f"new_approaches 架電リストを見直す <@{SALES2}|sales2> 12/15")

    confirmation = wait_for_confirmation(slack, alert.thread_ts)
    assert "架電リストを見直す" in call_text(confirmation) and "12月15日(火)" in call_text(confirmation)
    (row,) = countermeasures(slack)
    assert row.alert_id == alert.id and row.owner_user_id == SALES2 and row.due_date == dt.date(2026, 12, 15)
    assert row.text == "架電リストを見直す" and row.logged_by == SALES1
    assert row.permalink and row.permalink in answer.args["text"]
    assert answer.args["response_type"] == "ephemeral" and "2026年10月" in answer.args["text"]


def test_the_command_without_an_alert_starts_a_thread_in_the_department_channel(slack: SlackHarness) -> None:
    # A KPI name with a space, the owner defaulting to the author, the due date as a word.
    answer = log_by_command(slack, "Close rate 提案書のテンプレートを刷新 tomorrow")
    confirmation = wait_for_confirmation(slack, None)
    assert confirmation.args["channel"] == CHANNEL
    (row,) = countermeasures(slack)
    assert row.alert_id is None and row.owner_user_id == SALES1 and row.due_date == dt.date(2026, 12, 1)
    assert row.text == "提案書のテンプレートを刷新"
    assert row.channel_id == CHANNEL and row.thread_ts is not None and row.permalink in answer.args["text"]
    assert row.baseline_period == "2026-11" and row.baseline_value is None


# Every refusal's rule (a past due date, an unresolved @name, the usage): tests/unit/
# test_countermeasure_text.py. Over HTTP, one of each: the KPI, who logs it, the due date.
@pytest.mark.parametrize(
    ("text", "user_id", "expected"),
    [
        ("new_aproaches 架電を増やす", SALES1, "`new_approaches`"),
        ("new_approaches 架電を増やす 2026-02-30", SALES1, "日付として読めません"),
        ("new_approaches 架電を増やす", OUTSIDER, "メンバー"),
    ],
)
def test_bad_commands_get_a_clear_answer_and_log_nothing(
    slack: SlackHarness, text: str, user_id: str, expected: str
) -> None:
    make_alert(slack)
    answer = log_by_command(slack, text, user_id=user_id)
    assert expected in answer.args["text"], answer.args["text"]
    assert answer.args["response_type"] == "ephemeral"
    slack.settle()
    assert countermeasures(slack) == []
    assert in_thread(slack, None, ":memo:") == []


def test_a_retried_command_logs_once(slack: SlackHarness) -> None:
    alert = make_alert(slack)
    slack.send("countermeasure new_approaches 架電を増やす", user_id=SALES1, trigger_id="t-1")
    slack.send("countermeasure new_approaches 架電を増やす", user_id=SALES1, trigger_id="t-1", retry_num=1)
    wait_for_confirmation(slack, alert.thread_ts)
    slack.settle()
    assert len(countermeasures(slack)) == 1


# -- @kpibot 対策: … -------------------------------------------------------------------------------


def test_a_mention_in_an_alert_thread_logs_once_even_when_retried(slack: SlackHarness) -> None:
    alert = make_alert(slack)
    text = f"対策: 休眠顧客リストに再アプローチ <@{SALES2}> 明日"
    assert mention(slack, text, thread_ts=alert.thread_ts, event_id="Ev1").status == 200
    assert mention(slack, text, thread_ts=alert.thread_ts, event_id="Ev1", retry_num=1).status == 200
    confirmation = wait_for_confirmation(slack, alert.thread_ts)
    assert "休眠顧客リストに再アプローチ" in call_text(confirmation)
    slack.settle()
    (row,) = countermeasures(slack)
    assert row.alert_id == alert.id and row.owner_user_id == SALES2 and row.due_date == dt.date(2026, 12, 1)
    assert row.text == "休眠顧客リストに再アプローチ" and row.permalink
    assert len(in_thread(slack, alert.thread_ts, ":memo:")) == 1

    # English prefix, full-width colon, no owner: the author owns it.
    mention(slack, "Countermeasure: weekly pipeline review", user_id=SALES_HEAD, thread_ts=alert.thread_ts)
    mention(slack, "対策:テレアポ台本の改善", thread_ts=alert.thread_ts)
    rows = wait_for_rows(slack, 3)
    assert {(r.text, r.owner_user_id) for r in rows[1:]} == {
        ("weekly pipeline review", SALES_HEAD),
        ("テレアポ台本の改善", SALES1),
    }


def test_a_mention_outside_an_alert_thread_gets_a_reply_explaining(slack: SlackHarness) -> None:
    make_alert(slack)
    mention(slack, "対策: 架電を増やす", thread_ts=None, event_id="Ev2")
    mention(slack, "対策: 架電を増やす", thread_ts=None, event_id="Ev2", retry_num=1)
    (reply,) = slack.fake.wait_for("chat.postMessage", count=2)[1:]
    assert reply.args["thread_ts"] and "アラートのスレッド" in reply.args["text"]
    slack.settle()
    assert len(slack.fake.calls("chat.postMessage")) == 2  # the alert root and one reply
    assert countermeasures(slack) == []


def test_a_mention_by_an_outsider_or_with_a_past_due_date_is_refused_privately(slack: SlackHarness) -> None:
    alert = make_alert(slack)
    mention(slack, "対策: 架電を増やす", user_id=OUTSIDER, thread_ts=alert.thread_ts)
    mention(slack, "対策: 架電を増やす 2026-11-01", thread_ts=alert.thread_ts)
    refusals = slack.fake.wait_for("chat.postEphemeral", count=2)
    by_user = {call.args["user"]: call.args["text"] for call in refusals}
    assert "メンバー" in by_user[OUTSIDER] and "過去" in by_user[SALES1]
    assert all(call.args["thread_ts"] == alert.thread_ts for call in refusals)
    assert countermeasures(slack) == []


# -- Done / Dropped --------------------------------------------------------------------------------


def logged(slack: SlackHarness) -> tuple[Alert, Countermeasure, Call]:
    alert = make_alert(slack)
    log_by_command(slack, "new_approaches 架電を増やす 12/15")
    confirmation = wait_for_confirmation(slack, alert.thread_ts)
    (row,) = countermeasures(slack)
    return alert, row, confirmation


def click(
    slack: SlackHarness, action: str, row: Countermeasure, alert: Alert, user_id: str, ts: str
) -> Response:
    return slack.client.block_action(
        action,
        value=str(row.id),
        user_id=user_id,
        channel_id=CHANNEL,
        message_ts=ts,
        thread_ts=alert.thread_ts,
    )


def test_done_clicked_by_two_people_at_once_changes_the_status_once(slack: SlackHarness) -> None:
    alert, row, confirmation = logged(slack)
    ts = _ts_of(slack, confirmation)
    barrier = threading.Barrier(2)
    results: list[Response] = []

    def press(user_id: str) -> None:
        barrier.wait()
        results.append(click(slack, "countermeasure_done", row, alert, user_id, ts))

    threads = [threading.Thread(target=press, args=(user,)) for user in (SALES1, SALES_HEAD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status for r in results] == [200, 200]

    (update,) = slack.fake.wait_for("chat.update")
    (told,) = slack.fake.wait_for("chat.postEphemeral")
    slack.settle()
    assert len(slack.fake.calls("chat.update")) == 1 and len(slack.fake.calls("chat.postEphemeral")) == 1
    assert update.args["ts"] == ts and update.args["channel"] == CHANNEL
    assert "完了" in call_text(update) and buttons(update) == {}
    winner = update.args["blocks"][-1]["elements"][0]["text"]
    assert "完了" in told.args["text"] and told.args["user"] in (SALES1, SALES_HEAD)
    assert told.args["user"] not in winner  # the loser is told who did it
    with slack.session() as session:
        assert session.get(Countermeasure, row.id).status is CountermeasureStatus.DONE
        changes = session.exec(select(AuditEvent).where(AuditEvent.action == "countermeasure.done")).all()
    assert (
        len(changes) == 1
        and f"<@{changes[0].actor}>" in winner
        and f"<@{changes[0].actor}>" in told.args["text"]
    )


def test_a_second_click_and_a_late_drop_change_nothing(slack: SlackHarness) -> None:
    alert, row, confirmation = logged(slack)
    ts = _ts_of(slack, confirmation)
    click(slack, "countermeasure_done", row, alert, SALES1, ts)
    slack.fake.wait_for("chat.update")
    click(slack, "countermeasure_done", row, alert, SALES1, ts)
    click(slack, "countermeasure_dropped", row, alert, SALES_HEAD, ts)
    told = slack.fake.wait_for("chat.postEphemeral", count=2)
    assert all(f"すでに「完了」です(<@{SALES1}>)" in call.args["text"] for call in told)
    slack.settle()
    assert len(slack.fake.calls("chat.update")) == 1
    assert countermeasures(slack)[0].status is CountermeasureStatus.DONE


def test_an_outsider_cannot_close_a_countermeasure(slack: SlackHarness) -> None:
    alert, row, confirmation = logged(slack)
    click(slack, "countermeasure_dropped", row, alert, OUTSIDER, _ts_of(slack, confirmation))
    (told,) = slack.fake.wait_for("chat.postEphemeral")
    assert told.args["user"] == OUTSIDER and "担当者" in told.args["text"]
    assert countermeasures(slack)[0].status is CountermeasureStatus.PLANNED
    assert slack.fake.calls("chat.update") == []


# -- follow-up -------------------------------------------------------------------------------------


def test_the_effect_is_posted_in_the_thread_when_the_next_actual_arrives_once(slack: SlackHarness) -> None:
    seed(slack, "new_approaches", "2026-10", 60)
    alert, row, _ = logged(slack)
    assert (row.baseline_period, row.baseline_value) == ("2026-10", Decimal(60))

    slack.command("report new_approaches 85", user_id=SALES1)
    (effect,) = wait_for_posts(slack, alert.thread_ts, ":bar_chart:")
    text = effect.args["text"]
    assert "2026年10月 60件(達成率 60%) → 2026年11月 *85件*(目標 100件、達成率 85%)" in text
    assert "🟡" in text and "改善" in text

    # A correction of the same period, and the same report again: the effect was already shown.
    slack.command("report new_approaches 90", user_id=SALES1)
    slack.command("report new_approaches 90", user_id=SALES1)
    slack.settle()
    assert len(in_thread(slack, alert.thread_ts, ":bar_chart:")) == 1
    with slack.session() as session:
        posts = session.exec(select(Post).where(Post.kind == PostKind.FOLLOWUP)).all()
    assert [(p.subject, p.status) for p in posts] == [(f"effect:{row.id}:2026-11", PostStatus.SENT)]


def test_a_corrected_baseline_period_shows_the_effect_and_a_dropped_countermeasure_none(
    slack: SlackHarness,
) -> None:
    seed(slack, "new_approaches", "2026-10", 60)
    alert, row, confirmation = logged(slack)
    slack.command("report new_approaches 70 2026-10", user_id=SALES1)  # a correction of the baseline period
    effects = wait_for_posts(slack, alert.thread_ts, ":bar_chart:")
    assert len(effects) == 1 and "2026年10月 60件" in effects[0].args["text"]  # corrected → shown once

    confirmation_ts = _ts_of(slack, confirmation)
    click(slack, "countermeasure_dropped", row, alert, SALES1, confirmation_ts)
    # The confirmation's own update (the correction may also have updated the alert message).
    deadline = time.monotonic() + 5
    while not any(c.args.get("ts") == confirmation_ts for c in slack.fake.calls("chat.update")):
        assert time.monotonic() < deadline, "the confirmation was not updated"
        time.sleep(0.01)
    slack.command("report new_approaches 85", user_id=SALES1)
    slack.settle()
    assert len(in_thread(slack, alert.thread_ts, ":bar_chart:")) == 1


def test_the_owner_is_reminded_in_the_thread_on_the_due_date_once(slack: SlackHarness) -> None:
    alert = make_alert(slack)
    log_by_command(slack, f"new_approaches 架電を増やす <@{SALES2}> 2026-12-01")
    wait_for_confirmation(slack, alert.thread_ts)
    client = make_web_client(slack.settings)

    def at(day: int, hour: int) -> dt.datetime:
        return dt.datetime(2026, 12, day, hour, tzinfo=JST)

    assert remind_due(slack.engine, client, at(1, 8)) == 0  # before 09:00 on the due date
    assert remind_due(slack.engine, client, NOW) == 0  # the day before
    jobs = make_jobs(client, slack.engine, slack.settings)
    jobs.followups(at(1, 9))
    assert remind_due(slack.engine, client, at(1, 15)) == 0  # already reminded
    assert remind_due(slack.engine, client, at(2, 9)) == 0  # overdue: the review shows it
    (reminder,) = in_thread(slack, alert.thread_ts, ":alarm_clock:")
    assert reminder.args["text"].startswith(f":alarm_clock: <@{SALES2}>")
    assert (
        "12月1日(火)" in reminder.args["text"]
        and countermeasures(slack)[0].permalink in reminder.args["text"]
    )


# -- /kpi countermeasures --------------------------------------------------------------------------


def test_the_list_groups_by_status_with_owner_due_and_overdue(slack: SlackHarness) -> None:
    alert, row, confirmation = logged(slack)  # due 12/15
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "close_rate")).one()
        session.add(
            Countermeasure(
                kpi_id=kpi.id,
                text="提案書の見直し",
                owner_user_id=SALES2,
                due_date=dt.date(2026, 11, 20),
                status=CountermeasureStatus.DOING,
                logged_by=SALES1,
            )
        )
    log_by_command(slack, "revenue 大型案件の前倒し", user_id=SALES_HEAD)
    wait_for_confirmation(slack, None)
    click(slack, "countermeasure_done", row, alert, SALES1, _ts_of(slack, confirmation))
    slack.fake.wait_for("chat.update")

    answer = slack.command("countermeasures sales", user_id=OUTSIDER, channel_id="C0MARKETING")
    assert answer.args["response_type"] == "ephemeral"
    text = call_text(answer)
    order = [text.index(word) for word in ("*実行中*(1件)", "*予定*(1件)", "*完了*(1件)")]
    assert order == sorted(order)
    assert "提案書の見直し" in text and "期限 11月20日(金) :warning: *期限超過*" in text
    assert f"<@{SALES_HEAD}>" in text and "期限なし" in text
    assert f"<{row.permalink}|スレッド>" in text and "新規アプローチ数" in text

    # In the department's channel the department is implied; elsewhere, with none, it asks.
    assert "実行中" in call_text(slack.command("対策一覧", user_id=OUTSIDER, channel_id=CHANNEL))
    assert (
        "`sales`" in slack.command("countermeasures", user_id="U0NOBODY", channel_id="C0OTHER").args["text"]
    )


def test_the_list_in_english_and_when_empty(slack: SlackHarness) -> None:
    slack.fake.set_user("U0EN", locale="en-US")
    answer = slack.command("countermeasures customer_success", user_id="U0EN")
    assert "Customer Success has no open countermeasures" in answer.args["text"]


# -- /kpi review -----------------------------------------------------------------------------------


def review_posts(slack: SlackHarness) -> list[Call]:
    return [
        call
        for call in slack.fake.calls("chat.postMessage")
        if call.args.get("channel") == CHANNEL
        and "thread_ts" not in call.args
        and ":memo:" not in call_text(call)
    ]


def test_review_posts_a_header_and_one_message_per_item_once_a_day(slack: SlackHarness) -> None:
    for key, period, value in [
        ("revenue", "2026-10", "90000000"),
        ("new_approaches", "2026-10", "60"),  # red (60 % of 100), the month that ended
        ("new_approaches", "2026-11", "20"),  # a running total in progress: not judged yet
        ("close_rate", "2026-10", "18"),
        ("close_rate", "2026-11", "12"),  # amber (80 % of the 15 % low end), as reported now
        ("average_deal_size", "2026-10", "3000000"),
    ]:
        seed(slack, key, period, value)
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "new_approaches")).one()
        for text, due, status in [
            ("今日が期限", dt.date(2026, 11, 30), CountermeasureStatus.PLANNED),
            ("期限切れ", dt.date(2026, 11, 20), CountermeasureStatus.DOING),
            ("来月", dt.date(2026, 12, 20), CountermeasureStatus.PLANNED),
            ("完了済み", dt.date(2026, 11, 1), CountermeasureStatus.DONE),
        ]:
            session.add(
                Countermeasure(
                    kpi_id=kpi.id,
                    text=text,
                    owner_user_id=SALES1,
                    due_date=due,
                    status=status,
                    logged_by=SALES1,
                )
            )
    before = len(slack.fake.calls("chat.postMessage"))

    answer = slack.command("review", user_id=SALES_HEAD, channel_id=CHANNEL)
    posts = review_posts(slack)
    assert len(slack.fake.calls("chat.postMessage")) - before == len(posts) == 6, [
        call_text(p) for p in posts
    ]
    header, *items = [call_text(call) for call in posts]
    assert "週次レビュー: 営業部" in header and "11月30日(月)" in header
    assert "要注意・要対策の KPI 2件" in header and "対策 2件" in header and "未報告の担当者 1名" in header
    assert "🔴 *新規アプローチ数* ・ 2026年10月: 60件" in items[0] and "未完了の対策 3件" in items[0]
    assert (
        "🟡 *成約率* ・ 2026年11月: 12%(目標 15〜20%、達成率 80%)" in items[1]
        and "対策はまだありません" in items[1]
    )
    assert "期限超過" in items[2] and "期限切れ" in items[2]
    assert "期限が今日" in items[3] and "今日が期限" in items[3]
    assert f"*未報告* ・ <@{SALES2}>" in items[4] and "第48週(11/23〜11/29)のパイプライン商談数" in items[4]
    assert "完了済み" not in "".join(items) and "来月" not in "".join(items)
    assert answer.args["response_type"] == "ephemeral" and "5件" in answer.args["text"]

    again = slack.command("レビュー sales", user_id=SALES_HEAD, channel_id="C0MARKETING")
    assert (
        "すでに投稿済み" in again.args["text"]
        and "https://fake.slack.com/archives/C0SALES/p" in again.args["text"]
    )
    assert len(review_posts(slack)) == 6
    with slack.session() as session:
        rows = session.exec(select(Post).where(Post.kind == PostKind.REVIEW)).all()
    assert len(rows) == 6 and {row.period for row in rows} == {"2026-11-30"}
    assert all(row.status is PostStatus.SENT and row.channel_id == CHANNEL for row in rows)


def test_review_with_nothing_to_discuss_and_by_an_outsider(slack: SlackHarness) -> None:
    refused = slack.command("review sales", user_id=OUTSIDER)
    assert "メンバー" in refused.args["text"] and review_posts(slack) == []

    slack.fake.set_user("U0CSHEAD", locale="en-US")
    for key in ("nps", "retention_rate", "churn_rate", "upsell_rate", "cross_sell_rate"):
        seed(slack, key, "2026-10", {"nps": 40, "retention_rate": 99, "churn_rate": 1}.get(key, 25))
        seed(slack, key, "2026-11", {"nps": 40, "retention_rate": 99, "churn_rate": 1}.get(key, 25))
    answer = slack.command("review", user_id="U0CSHEAD", channel_id="C0CS")
    (header,) = [c for c in slack.fake.calls("chat.postMessage") if c.args["channel"] == "C0CS"]
    assert "Nothing on the agenda" in header.args["text"]
    assert "Posted the review agenda for Customer Success" in answer.args["text"]


def test_a_review_item_slack_refused_is_posted_when_run_again(slack: SlackHarness) -> None:
    seed(slack, "new_approaches", "2026-10", "60")
    slack.fake.fail("chat.postMessage", error="channel_not_found")
    failed = slack.command("review", user_id=SALES_HEAD, channel_id=CHANNEL)
    assert "channel_not_found" in failed.args["text"]
    posted = slack.command("review", user_id=SALES_HEAD, channel_id=CHANNEL)
    assert "投稿しました" in posted.args["text"]
    assert len([c for c in slack.fake.calls("chat.postMessage") if not c.failed]) >= 2
