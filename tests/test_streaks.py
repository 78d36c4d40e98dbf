"""Streaks: a KPI under amber for its `streak` finished periods in a row (default 3) says so in its
alert, escalates to the department head once, and is marked in the digest. Over the signed HTTP
path against tests.fakeslack, on SQLite and PostgreSQL.

The example plan's clock is Monday 2026-11-30 10:00 JST (November in progress).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import select

from bot.alerts.rules import below_streak
from bot.clock import set_clock
from bot.database import transaction
from bot.digests.service import build_digest
from bot.models import Alert, AlertReason, Department, Kpi, Source
from bot.plan.service import load_plan
from bot.plan.specs import PlanInvalid
from bot.reports.actuals import record_actual
from bot.scoring import TargetValue
from handlers.alerts.interactive import scan_and_post
from handlers.client import make_web_client
from handlers.digests.messages import as_text, digest_messages
from tests.fakeslack.harness import SlackHarness
from tests.fakeslack.server import Call, FakeSlack
from tests.unit.plan import kpi as example_kpi

TOKYO = dt.timezone(dt.timedelta(hours=9))
SALES_HEAD = "U0SALESHEAD"
MARKETING_HEAD = "U0MKTHEAD"
STREAK_JA = "3期連続で目標未達"


def at(when: dt.datetime) -> None:
    now = when.astimezone(dt.UTC)
    set_clock(lambda: now)


def seed(slack: SlackHarness, key: str, values: dict[str, str]) -> None:
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == key)).one()
        for period, value in values.items():
            record_actual(
                session, kpi=kpi, period=period, value=Decimal(value), reported_by="U0TEST", source=Source.CSV
            )


def scan(slack: SlackHarness) -> None:
    scan_and_post(slack.engine, make_web_client(slack.settings))


def alert_of(slack: SlackHarness, key: str, period: str) -> Alert | None:
    with slack.session() as session:
        return session.exec(
            select(Alert).join(Kpi).where(Kpi.key == key, Alert.period == period)  # type: ignore[arg-type]
        ).first()


def roots(fake: FakeSlack, channel: str) -> list[Call]:
    return [
        call
        for call in fake.calls("chat.postMessage")
        if not call.failed and "thread_ts" not in call.args and call.args["channel"] == channel
    ]


def replies(fake: FakeSlack, thread_ts: str) -> list[Call]:
    return [
        call
        for call in fake.calls("chat.postMessage")
        if not call.failed and call.args.get("thread_ts") == thread_ts
    ]


def text_of(call: Call) -> str:
    return " ".join([str(call.args.get("text", "")), str(call.args.get("blocks", ""))])


# -- the rule, pure ----------------------------------------------------------------------------------


def test_a_streak_counts_periods_under_amber_direction_and_range_aware() -> None:
    close_rate = example_kpi("close_rate")  # higher is better, target 15–20 %: the low end counts
    cost = example_kpi("cost_per_lead")  # lower is better: over 110 % of 8,000 is amber
    band = TargetValue(Decimal(15), Decimal(20))
    assert below_streak(close_rate, [Decimal(12), Decimal(13), Decimal(10)], [band] * 3) == 3
    # 16 % is inside the band: on target, the streak ends there.
    assert below_streak(close_rate, [Decimal(12), Decimal(16), Decimal(10)], [band] * 3) == 1
    limit = TargetValue.exact(Decimal(8000))
    assert below_streak(cost, [Decimal(9000), Decimal(9500), Decimal(12000)], [limit] * 3) == 3
    # A low cost is good, not a shortfall.
    assert below_streak(cost, [Decimal(9000), Decimal(5000), Decimal(9000)], [limit] * 3) == 1
    # A period without a value breaks the streak.
    assert below_streak(cost, [Decimal(9000), None, Decimal(9000)], [limit] * 3) == 1


# -- alerts ------------------------------------------------------------------------------------------


def test_three_periods_under_amber_raise_a_streak_alert_that_mentions_the_head(slack: SlackHarness) -> None:
    # Cost per lead (lower is better) above 110 % of its 8,000 target in August, September, October.
    seed(slack, "cost_per_lead", {"2026-08": "9000", "2026-09": "9500", "2026-10": "9200"})
    scan(slack)

    alert = alert_of(slack, "cost_per_lead", "2026-10")
    assert alert is not None and alert.reason is AlertReason.STREAK
    [root] = [call for call in roots(slack.fake, "C0MARKETING") if "リード獲得単価" in text_of(call)]
    assert STREAK_JA in text_of(root)
    assert f"<@{MARKETING_HEAD}>" in text_of(root)
    # Shown as a streak from the start: no separate escalation in its thread.
    scan(slack)
    assert alert.thread_ts is not None
    assert replies(slack.fake, alert.thread_ts) == []


def test_a_streak_that_completes_later_escalates_the_posted_alert_once(slack: SlackHarness) -> None:
    seed(slack, "close_rate", {"2026-09": "10", "2026-10": "11"})
    # November in progress: the report raises November's alert (a rate: representative already).
    answer = slack.command("report close_rate 12", user_id="U0SALES1")
    assert "12" in str(answer.args)
    slack.settle()
    november = alert_of(slack, "close_rate", "2026-11")
    assert november is not None and november.reason is AlertReason.BELOW_TARGET
    thread = november.thread_ts
    assert thread is not None
    [root] = [call for call in roots(slack.fake, "C0SALES") if "2026年11月" in text_of(call)]
    assert STREAK_JA not in text_of(root)

    # December 1st: November is finished, the third period in a row under amber.
    at(dt.datetime(2026, 12, 1, 10, 0, tzinfo=TOKYO))
    scan(slack)
    scan(slack)  # a second scan says nothing again

    november = alert_of(slack, "close_rate", "2026-11")
    assert november is not None and november.reason is AlertReason.STREAK
    notes = [call for call in replies(slack.fake, thread) if STREAK_JA in text_of(call)]
    assert len(notes) == 1
    assert f"<@{SALES_HEAD}>" in text_of(notes[0])
    updates = [call for call in slack.fake.calls("chat.update") if call.args.get("ts") == thread]
    assert updates and STREAK_JA in text_of(updates[-1])


def test_an_on_target_period_breaks_the_streak(slack: SlackHarness) -> None:
    seed(slack, "cost_per_lead", {"2026-08": "9000", "2026-09": "7000", "2026-10": "9200"})
    scan(slack)
    alert = alert_of(slack, "cost_per_lead", "2026-10")
    assert alert is not None and alert.reason is AlertReason.BELOW_TARGET
    assert all(STREAK_JA not in text_of(call) for call in roots(slack.fake, "C0MARKETING"))


def test_english_department_says_it_in_english(slack: SlackHarness) -> None:
    # Churn rate (lower is better, target 2 %, amber above 120 %) at 3 % three months running.
    seed(slack, "churn_rate", {"2026-08": "3", "2026-09": "3", "2026-10": "3.1"})
    scan(slack)
    [root] = [call for call in roots(slack.fake, "C0CS") if "Churn rate" in text_of(call)]
    assert "below target 3 periods running" in text_of(root)
    assert "<@U0CSHEAD>" in text_of(root)


# -- the plan's `streak` -----------------------------------------------------------------------------


def _plan(tmp_path: Path, streak: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "departments:\n"
        "  - key: marketing\n"
        "    channel: C0MARKETING\n"
        "kpis:\n"
        "  - key: cost_per_lead\n"
        "    department: marketing\n"
        "    name: Cost per lead\n"
        "    unit: JPY\n"
        "    direction: lower\n"
        "    cadence: monthly\n"
        f"    streak: {streak}\n"
        "    target: 8000\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("streak", ["0", "100", "three"])
def test_a_streak_of_0_or_100_is_refused_with_its_line(
    slack: SlackHarness, tmp_path: Path, streak: str
) -> None:
    with slack.session() as session, pytest.raises(PlanInvalid) as refused:
        load_plan(_plan(tmp_path, streak), session)
    [problem] = refused.value.problems
    assert (problem.where, problem.field, problem.code) == ("line 11", "streak", "out_of_range")
    assert "2" in problem.describe("en") and "99" in problem.describe("en")
    assert "2 から 99" in problem.describe("ja")


def test_a_streak_of_two_alerts_after_two_periods(slack: SlackHarness, tmp_path: Path) -> None:
    from tests.plans import import_plan

    import_plan(slack.engine, _plan(tmp_path, "2"))
    seed(slack, "cost_per_lead", {"2026-09": "9500", "2026-10": "9200"})
    scan(slack)
    alert = alert_of(slack, "cost_per_lead", "2026-10")
    assert alert is not None and alert.reason is AlertReason.STREAK
    [root] = [call for call in roots(slack.fake, "C0MARKETING") if "2期連続で目標未達" in text_of(call)]
    assert f"<@{MARKETING_HEAD}>" in text_of(root)


# -- the digest --------------------------------------------------------------------------------------


def test_the_digest_marks_a_kpi_on_a_streak(slack: SlackHarness) -> None:
    seed(slack, "cost_per_lead", {"2026-08": "9000", "2026-09": "9500", "2026-10": "9200"})
    seed(slack, "mqls", {"2026-09": "150", "2026-10": "210"})  # on target in October: no mark
    with slack.session() as session:
        marketing = session.exec(select(Department).where(Department.key == "marketing")).one()
        digest = build_digest(session, marketing, dt.date(2026, 11, 2), None)
    text = as_text(digest_messages(digest, "ja"))
    [cost_line] = [line for line in text.splitlines() if "リード獲得単価" in line and "_2026年10月_" in line]
    assert STREAK_JA in cost_line
    [mql_line] = [line for line in text.splitlines() if "MQL 数" in line and "_2026年10月_" in line]
    assert "期連続" not in mql_line
    english = as_text(digest_messages(digest, "en"))
    assert "below target 3 periods running" in english
