"""`/kpi report <kpi> <value> [period] [note]` over the signed HTTP path, against the fake Slack."""

from __future__ import annotations

import logging
import re
import time
from decimal import Decimal

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from bot.alerts import service as alerts
from bot.database import make_engine
from bot.formats import period_label
from bot.models import Actual, AuditEvent, Kpi, ProcessedRequest
from bot.reports.actuals import Recorded
from tests.fakeslack.harness import SlackHarness, start_harness, stop_harness

OWNER = "U0SALES1"  # owns new_approaches and close_rate in the example plan


def test_report_stores_the_actual_and_confirms(slack: SlackHarness) -> None:
    answer = slack.command("report new_approaches 85", user_id=OWNER)
    assert answer.args["response_type"] == "ephemeral"
    text = answer.args["text"]
    assert "新規アプローチ数" in text and "2026年11月の *新規アプローチ数* を報告しました" in text
    assert "*85件*" in text
    assert "目標 100件" in text and "達成率 85%" in text and "注意" in text  # target, % of target, amber
    assert slack.live_values("new_approaches") == {"2026-11": Decimal(85)}
    with slack.session() as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "actual.reported")).one()
        assert event.actor == OWNER and event.details["value"] == "85"


def test_correction_supersedes_and_says_what_changed(slack: SlackHarness) -> None:
    slack.command("report new_approaches 85", user_id=OWNER)
    answer = slack.command("report new_approaches 92 CRM import was late", user_id=OWNER)
    assert "85" in answer.args["text"] and "92" in answer.args["text"] and "修正" in answer.args["text"]
    assert "CRM import was late" in answer.args["text"]
    assert slack.live_values("new_approaches") == {"2026-11": Decimal(92)}
    with slack.session() as session:
        history = session.exec(select(Actual).order_by(col(Actual.id))).all()
        assert [Decimal(a.value) for a in history] == [Decimal(85), Decimal(92)]
        assert history[0].superseded_by_id == history[1].id


# Every way of typing a value and a period: tests/unit/test_report_text.py. Over HTTP, one of each
# kind: a unit word and a relative period, a Japanese name and a percent, an ISO week.
@pytest.mark.parametrize(
    ("text", "user", "key", "period", "value"),
    [
        ("report mqls 1.2万 先月", "U0MKT1", "mqls", "2026-10", Decimal(12000)),
        ("report 成約率 18%", OWNER, "close_rate", "2026-11", Decimal(18)),
        ("report pipeline_deals 38 2026-W48", "U0SALES2", "pipeline_deals", "2026-W48", Decimal(38)),
    ],
)
def test_values_and_periods_as_people_type_them(
    slack: SlackHarness, text: str, user: str, key: str, period: str, value: Decimal
) -> None:
    answer = slack.command(text, user_id=user)
    assert slack.live_values(key) == {period: value}, answer.args["text"]
    label = re.escape(period_label(period, "ja"))
    confirmed = answer.args["text"]
    assert re.match(rf":white_check_mark: {label}の \*[^*]+\* を報告しました: \*", confirmed), confirmed


def test_department_head_and_admin_may_report(slack: SlackHarness) -> None:
    slack.command("report new_approaches 50", user_id="U0SALESHEAD")
    assert slack.live_values("new_approaches") == {"2026-11": Decimal(50)}
    slack.fake.set_user("U0ADMIN", is_admin=True)
    slack.command("report new_approaches 60", user_id="U0ADMIN")
    assert slack.live_values("new_approaches") == {"2026-11": Decimal(60)}


def test_english_speaking_user_gets_english(slack: SlackHarness) -> None:
    slack.fake.set_user(OWNER, locale="en-US")
    answer = slack.command("report new_approaches 85", user_id=OWNER)
    assert "Reported *New approaches* for Nov 2026: *85*" in answer.args["text"]
    assert "at risk" in answer.args["text"]


# Why each value, period or note is refused: tests/unit/test_report_text.py. Over HTTP, one case
# per answer: a near miss, a value, a period, who may report, a derived KPI, the form, the usage.
@pytest.mark.parametrize(
    ("text", "user", "expected"),
    [
        ("report new_aproaches 85", OWNER, ["new_approaches", "もしかして"]),
        ("report new_approaches eighty", OWNER, ["新規アプローチ数 の値「eighty」は数値として読めません"]),
        ("report new_approaches 85 2027-01", OWNER, ["2027-01", "まだ始まっていない"]),
        ("report mqls 200", OWNER, ["MQL 数", "U0MKT1", "U0MKTHEAD"]),
        ("report sql_conversion 30", "U0MKT1", ["sqls / mqls * 100"]),
        ("report", "U0NOBODY", []),  # handled by the modal; just must not store anything
        ("report new_approaches", OWNER, ["KPI と値を指定してください"]),
    ],
)
def test_bad_input_gets_a_clear_answer_and_stores_nothing(
    slack: SlackHarness, text: str, user: str, expected: list[str]
) -> None:
    if not expected:
        slack.send(text, user_id=user)
    else:
        answer = slack.command(text, user_id=user)
        assert answer.args["response_type"] == "ephemeral"
        for fragment in expected:
            assert fragment in answer.args["text"]
    with slack.session() as session:
        assert session.exec(select(Actual)).all() == []


# What a user sees for a value or period kpibot can't take: the word they typed, the KPI, how
# to write it; ja is the example plan's default, en is what an en-US Slack user gets.
EXAMPLES_JA = "`1200`、`1,200`、`１,２００`、`1.2万`、`15%`、`¥3,000万` のように入力してください。"
EXAMPLES_EN = "Write it like `1200`, `1,200`, `１,２００`, `1.2万`, `1.2k`, `15%` or `¥3,000万`."


# Every value and period a known KPI cannot take, in both languages: tests/unit/test_report_text.py.
# Over HTTP: the KPI named by key or by name, with the value mistyped or left out.
@pytest.mark.parametrize(
    ("text", "locale", "expected"),
    [
        (
            "report mqls abc",
            "ja-JP",
            f"MQL 数 の値「abc」は数値として読めません。{EXAMPLES_JA}例: `/kpi report mqls 1200`",
        ),
        (
            "report mqls abc",
            "en-US",
            f"“abc” is not a number I can read for MQLs. {EXAMPLES_EN} For example: `/kpi report mqls 1200`",
        ),
        (
            "report MQL数 abc 先月 メモ",
            "ja-JP",
            f"MQL 数 の値「abc」は数値として読めません。{EXAMPLES_JA}例: `/kpi report mqls 1200`",
        ),
        (
            "report mqls 先月",
            "ja-JP",
            "MQL 数 の値がありません。"
            "`/kpi report mqls 1200 先月` のように、KPI の次に値を入力してください。",
        ),
    ],
)
def test_a_known_kpi_with_a_value_or_period_it_cannot_take(
    slack: SlackHarness, text: str, locale: str, expected: str
) -> None:
    slack.fake.set_user("U0MKT1", locale=locale)
    answer = slack.command(text, user_id="U0MKT1")
    assert answer.args["response_type"] == "ephemeral"
    assert answer.args["text"] == expected
    with slack.session() as session:
        assert session.exec(select(Actual)).all() == []
        assert session.exec(select(AuditEvent).where(AuditEvent.action.startswith("actual."))).all() == []


def test_a_known_kpi_still_checks_who_may_report_before_the_value(slack: SlackHarness) -> None:
    answer = slack.command("report mqls abc", user_id=OWNER)  # OWNER is in Sales, mqls is Marketing's
    assert "U0MKT1" in answer.args["text"] and "U0MKTHEAD" in answer.args["text"]
    answer = slack.command("report sql_conversion abc", user_id="U0MKT1")
    assert "sqls / mqls * 100" in answer.args["text"]


# Not 99999999999999.999999: SQLite keeps NUMERIC as a float, exact to about 15 digits only.
@pytest.mark.parametrize("value", ["99999999999999", "-99999999999999", "123.456789"])
def test_the_largest_and_most_precise_storable_values_are_stored_exactly(
    slack: SlackHarness, value: str
) -> None:
    key = "nps" if value.startswith("-") else "cost_per_lead"  # only a score may be negative
    answer = slack.command(f"report {key} {value}", user_id="U0CS1" if key == "nps" else "U0MKT2")
    assert slack.live_values(key) == {"2026-11": Decimal(value)}, answer.args["text"]


def test_more_decimals_than_the_database_keeps_are_refused(slack: SlackHarness) -> None:
    slack.fake.set_user(OWNER, locale="en-US")
    answer = slack.command("report close_rate 15.1234567", user_id=OWNER)
    assert answer.args["text"] == (
        "“15.1234567” has more than 6 decimal places, more than can be stored. Round it to 6 places or fewer."
    )
    with slack.session() as session:
        assert session.exec(select(Actual)).all() == []


# PostgreSQL answered these with "numeric field overflow" (a 500-like "something went wrong");
# SQLite stored them. Both must refuse them at parsing, in words, and store nothing.
@pytest.mark.parametrize("value", ["100000000000000", "1000兆"])
def test_a_value_the_column_cannot_hold_is_refused_before_it_is_stored(
    slack: SlackHarness, value: str
) -> None:
    answer = slack.command(f"report revenue {value}", user_id="U0SALESHEAD")
    assert answer.args["response_type"] == "ephemeral"
    assert answer.args["text"] == (
        f"「{value}」は大きすぎて 売上 の値として保存できません。絶対値が 100兆 未満の値を入力してください。"
    )
    with slack.session() as session:
        assert session.exec(select(Actual)).all() == []
        assert session.exec(select(AuditEvent).where(AuditEvent.action.startswith("actual."))).all() == []


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("ja-JP", "メモに制御文字が 2個含まれています。取り除いてから送ってください。"),
        ("en-US", "The note contains 2 control character(s); remove them and send again."),
    ],
)
def test_a_note_with_control_characters_is_refused(slack: SlackHarness, locale: str, expected: str) -> None:
    # A NUL made PostgreSQL fail the whole report ("A string literal cannot contain NUL").
    slack.fake.set_user(OWNER, locale=locale)
    answer = slack.command("report new_approaches 85 great\x00 week\x1b", user_id=OWNER)
    assert answer.args["response_type"] == "ephemeral"
    assert answer.args["text"] == expected
    with slack.session() as session:
        assert session.exec(select(Actual)).all() == []


def test_english_errors(slack: SlackHarness) -> None:
    slack.fake.set_user(OWNER, locale="en-US")
    answer = slack.command("report new_aproaches 85", user_id=OWNER)
    assert "Did you mean `new_approaches` (New approaches)" in answer.args["text"]


def test_forged_or_stale_requests_are_refused(slack: SlackHarness) -> None:
    body = b"command=%2Fkpi&text=report+new_approaches+85&user_id=U0SALES1&trigger_id=t1&team_id=T0TEST"
    forged = slack.client.raw(body, "application/x-www-form-urlencoded", signature="v0=" + "0" * 64)
    assert forged.status == 401
    stale_ts = str(int(time.time()) - 6 * 60)
    stale = slack.client.raw(
        body,
        "application/x-www-form-urlencoded",
        timestamp=stale_ts,
        signature=slack.client.sign(stale_ts, body),
    )
    assert stale.status == 401
    with slack.session() as session:
        assert session.exec(select(Actual)).all() == []
    assert slack.fake.calls("response_url") == []


def test_a_retried_command_is_recorded_once(slack: SlackHarness) -> None:
    first = slack.command("report new_approaches 85", user_id=OWNER, trigger_id="trigger-1")
    retry = slack.send("report new_approaches 85", user_id=OWNER, trigger_id="trigger-1", retry_num=1)
    assert retry.status == 200
    assert "85" in first.args["text"]
    slack.settle()
    with slack.session() as session:
        assert len(session.exec(select(Actual)).all()) == 1
        assert len(session.exec(select(AuditEvent).where(AuditEvent.action.startswith("actual."))).all()) == 1
    assert len(slack.fake.calls("response_url")) == 1


def test_failure_mid_transaction_writes_nothing(slack: SlackHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_listener(session: Session, kpi: Kpi, recorded: Recorded) -> None:
        raise OperationalError("INSERT INTO alert ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(alerts, "check_after_report", broken_listener)
    answer = slack.command("report new_approaches 85", user_id=OWNER)
    assert "データベース" in answer.args["text"]
    with slack.session() as session:
        assert session.exec(select(Actual)).all() == []
        assert session.exec(select(ProcessedRequest)).all() == []
        assert session.exec(select(AuditEvent).where(AuditEvent.action.startswith("actual."))).all() == []


def test_unreachable_database_gets_an_ephemeral_error() -> None:
    engine = make_engine(
        "postgresql+psycopg://kpibot:secret@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 2}
    )
    harness = start_harness(engine, plan=None)
    try:
        answer = harness.command("report new_approaches 85", user_id=OWNER)
        assert answer.args["response_type"] == "ephemeral"
        assert "データベースに接続できない" in answer.args["text"]
        assert "secret" not in answer.args["text"]
    finally:
        stop_harness(harness)


def test_a_slack_error_while_replying_keeps_the_actual(
    slack: SlackHarness, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fake.fail("response_url", "http_500", times=None)
    with caplog.at_level(logging.ERROR):
        slack.send("report new_approaches 85", user_id=OWNER)
        slack.fake.wait_for("response_url")
        deadline = time.monotonic() + 5
        while "reply to U0SALES1 failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "reply to U0SALES1 failed" in caplog.text
    assert slack.live_values("new_approaches") == {"2026-11": Decimal(85)}


def test_the_alert_hook_sees_every_saved_actual(slack: SlackHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str, Decimal, bool]] = []

    def listener(session: Session, kpi: Kpi, recorded: Recorded) -> None:
        seen.append((kpi.key, recorded.actual.period, Decimal(recorded.actual.value), recorded.is_correction))

    monkeypatch.setattr(alerts, "check_after_report", listener)
    slack.command("report new_approaches 85", user_id=OWNER)
    slack.command("report new_approaches 90", user_id=OWNER)
    assert seen == [
        ("new_approaches", "2026-11", Decimal(85), False),
        ("new_approaches", "2026-11", Decimal(90), True),
    ]


def test_help_and_unknown_subcommands(slack: SlackHarness) -> None:
    assert "/kpi report" in slack.command("help", user_id=OWNER).args["text"]
    slack.fake.set_user("U0EN", locale="en-US")
    assert "I don't know `/kpi frobnicate`" in slack.command("frobnicate", user_id="U0EN").args["text"]
