"""Weekly digest content: the example plan with known actuals, rendered into Block Kit in both locales.

The digest day is Monday 2026-11-30: it reviews 2026-10 (monthly KPIs) and 2026-W48 (weekly ones),
in fiscal year 2026 (April 2026 – March 2027, 365 days).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image
from slack_sdk import WebClient
from slack_sdk.models.blocks import Block
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bot.config import load_settings
from bot.database import transaction
from bot.digests.flows import build, post
from bot.digests.service import (
    CHART_PERIODS,
    Digest,
    build_digest,
    build_division_summary,
    goal_progress,
    sparkline,
    trend,
)
from bot.models import (
    Countermeasure,
    CountermeasureStatus,
    Department,
    Kpi,
    KpiKind,
    Post,
    Source,
    SuccessFactor,
    Target,
)
from bot.outbox import Message, Outbox
from bot.reports.actuals import record_actual
from bot.scoring import Status, ratio_pct
from handlers.blocks import WithFallback, check_chart
from handlers.digests import messages as slack_messages
from handlers.digests.messages import as_text, digest_messages, division_messages
from handlers.poster import SlackPoster
from tests.fakeslack import FakeSlack
from tests.plans import count_kpi

DAY = dt.date(2026, 11, 30)
M = 1_000_000
# Revenue, Apr–Oct 2026: ¥600M so far. Seven months of 214 days out of 365 have ended.
REVENUE = {
    "2026-04": 70,
    "2026-05": 80,
    "2026-06": 80,
    "2026-07": 90,
    "2026-08": 90,
    "2026-09": 90,
    "2026-10": 100,
}
ACTUALS: dict[str, dict[str, int]] = {
    "revenue": {period: value * M for period, value in REVENUE.items()},
    "close_rate": {"2026-08": 18, "2026-09": 16, "2026-10": 12},  # 12 against 15–20 %: 80 %, amber
    "new_approaches": {"2026-10": 65},  # 65 of 100: red
    "pipeline_deals": {"2026-W47": 40, "2026-W48": 40},  # weekly: 2026-W48 is reviewed
    # average_deal_size: nothing reported
    "mqls": {"2026-09": 180, "2026-10": 200},
    "sqls": {"2026-09": 54, "2026-10": 50},  # Inside Sales; Marketing's sql_conversion = sqls / mqls * 100
    "cost_per_lead": {"2026-10": 10_000},  # lower is better, target 8,000, amber 110 / red 130
}


# -- helpers --------------------------------------------------------------------------------------------


def record(engine: Engine, actuals: dict[str, dict[str, int]]) -> None:
    with transaction(engine) as session:
        kpis = {kpi.key: kpi for kpi in session.exec(select(Kpi)).all()}
        for key, values in actuals.items():
            for period, value in values.items():
                record_actual(
                    session,
                    kpi=kpis[key],
                    period=period,
                    value=Decimal(value),
                    reported_by="U0SEED",
                    source=Source.CSV,
                )


def department(engine: Engine, key: str) -> Department:
    with transaction(engine) as session:
        return session.exec(select(Department).where(Department.key == key)).one()


def kpi_id(session: Session, key: str) -> int:
    found = session.exec(select(Kpi.id).where(Kpi.key == key)).one()
    assert found is not None
    return found


def digest_of(engine: Engine, key: str, day: dt.date = DAY) -> Digest:
    with transaction(engine) as session:
        dept = session.exec(select(Department).where(Department.key == key)).one()
        return build_digest(session, dept, day, goal_progress(session, day))


def texts(message: Message) -> list[str]:
    """What a reader sees in a message: header, sections and context lines, in order. A message with
    a table reads as its fallback, today's sections (test_digest_blocks.py checks they agree)."""
    if isinstance(message, WithFallback):
        return [text for part in message.fallback for text in texts(part)]
    found = []
    for block in message.blocks:
        if block["type"] in ("header", "section"):
            found.append(block["text"]["text"])
        elif block["type"] == "context":
            found.extend(element["text"] for element in block["elements"])
    return found


def lines(messages: list[Message]) -> list[str]:
    return [line for message in messages for text in texts(message) for line in text.split("\n")]


def line_of(messages: list[Message], name: str) -> str:
    """The scorecard line of a KPI (its name is bold there and nowhere else)."""
    found = [line for line in lines(messages) if f"*{name}*" in line]
    assert len(found) == 1, (name, found)
    return found[0]


def section_after(messages: list[Message], title: str) -> list[str]:
    """The lines under a section title such as "*Not reported yet*"."""
    all_lines = lines(messages)
    start = all_lines.index(title) + 1
    end = next(
        (i for i in range(start, len(all_lines)) if re.fullmatch(r"\*[^*]+\*", all_lines[i])), len(all_lines)
    )
    return all_lines[start:end]


def assert_block_kit_limits(messages: list[Message]) -> None:
    for message in messages:
        assert len(message.blocks) <= 50
        assert len(message.text) <= 4000
        assert sum(len(text) for text in texts(message)) <= 4000
        for data in message.blocks:
            if data["type"] == "header":
                assert len(data["text"]["text"]) <= 150
            if data["type"] == "section":
                assert len(data["text"]["text"]) <= 3000
            if data["type"] == "context":
                assert len(data["elements"]) <= 10
                assert all(len(element["text"]) <= 3000 for element in data["elements"])
            if data["type"] == "data_visualization":  # no slack_sdk model: Slack's documented limits
                check_chart(data)
                continue
            # slack_sdk's own model validates every limit it knows (header 150, section 3,000, ...).
            block = Block.parse(data)
            assert block is not None, data
            block.validate_json()
            assert block.to_dict() == data


@pytest.fixture
def plan(example_plan: Engine) -> Iterator[Engine]:
    """The example plan with the actuals above."""
    record(example_plan, ACTUALS)
    yield example_plan


# -- sparkline and trend --------------------------------------------------------------------------------


def test_sparkline_scales_to_its_own_range_and_shows_gaps() -> None:
    values = [Decimal(v) if v is not None else None for v in (10, None, 20, 15, None, 80)]
    assert sparkline(values) == "▁·▂▁·█"
    assert sparkline([Decimal(1), Decimal(8)]) == "▁█"
    assert sparkline([Decimal(5), Decimal(5), None]) == "▁▁·"
    assert sparkline([None, None]) == ""


# -- build_digest: the data ----------------------------------------------------------------------------


def test_sales_scorecard_rows_statuses_and_trends(plan: Engine) -> None:
    digest = digest_of(plan, "sales")

    assert [row.kpi.key for row in digest.results] == ["revenue", "close_rate", "average_deal_size"]
    assert [row.kpi.key for row in digest.processes] == ["new_approaches", "pipeline_deals"]
    assert all(row.kpi.kind is KpiKind.RESULT for row in digest.results)
    rows = {row.kpi.key: row for row in digest.rows}

    revenue = rows["revenue"]
    assert revenue.period.key == "2026-10"
    assert revenue.score.actual == 100 * M
    assert revenue.score.achievement_pct == Decimal(100 * M) / Decimal(84 * M) * 100
    assert revenue.score.status is Status.GREEN
    assert revenue.previous == 90 * M
    assert trend(revenue) == "up"
    assert len(revenue.history) == CHART_PERIODS
    assert revenue.history[-7:] == [value * M for value in REVENUE.values()]
    assert revenue.history[:6] == [None] * 6

    close_rate = rows["close_rate"]
    assert close_rate.score.target is not None
    assert (close_rate.score.target.low, close_rate.score.target.high) == (15, 20)
    assert close_rate.score.achievement_pct == 80  # against the low end: 12 / 15
    assert close_rate.score.status is Status.AMBER
    assert (close_rate.previous, trend(close_rate)) == (16, "down")
    assert sparkline(close_rate.history[-6:]) == "···█▅▁"

    new_approaches = rows["new_approaches"]
    assert new_approaches.score.achievement_pct == 65
    assert new_approaches.score.status is Status.RED
    assert new_approaches.previous is None and trend(new_approaches) is None

    pipeline = rows["pipeline_deals"]
    assert pipeline.period.key == "2026-W48"
    assert (pipeline.score.actual, pipeline.score.achievement_pct, pipeline.score.status) == (
        40,
        100,
        Status.GREEN,
    )
    assert trend(pipeline) == "flat"

    deal_size = rows["average_deal_size"]
    assert deal_size.score.actual is None and deal_size.score.achievement_pct is None
    assert deal_size.score.status is Status.NO_DATA
    assert sparkline(deal_size.history[-6:]) == ""

    assert [digest.count(s) for s in (Status.GREEN, Status.AMBER, Status.RED, Status.NO_DATA)] == [2, 1, 1, 1]


def test_kfs_roll_up_is_the_worst_status_with_the_slipping_kpis(plan: Engine) -> None:
    digest = digest_of(plan, "sales")

    factors = [
        (f.factor.key if f.factor else None, f.status, [row.kpi.key for row in f.slipping])
        for f in digest.factors
    ]
    # new_customers holds revenue (green) and new_approaches (red): the worst wins. Worst first.
    assert factors == [
        ("new_customers", Status.RED, ["new_approaches"]),
        ("deal_conversion", Status.AMBER, ["close_rate"]),
        ("pipeline", Status.GREEN, []),
        ("unit_price", Status.NO_DATA, []),
    ]


def test_marketing_lower_is_better_and_a_kpi_derived_from_another_department(plan: Engine) -> None:
    rows = {row.kpi.key: row for row in digest_of(plan, "marketing").rows}

    cost = rows["cost_per_lead"]
    assert cost.score.target is not None
    assert cost.score.achievement_pct == 80  # 8,000 / 10,000
    assert ratio_pct(Decimal(10_000), cost.score.target, cost.kpi.direction) == 125
    assert (cost.kpi.amber_pct, cost.kpi.red_pct) == (110, 130)
    assert cost.score.status is Status.AMBER  # 125 % of target: past amber (110), not yet red (130)

    conversion = rows["sql_conversion"]  # sqls / mqls * 100, sqls reported by Inside Sales
    assert conversion.score.actual == 25  # 50 / 200
    assert conversion.previous == 30  # 54 / 180
    assert conversion.score.achievement_pct == Decimal(25) / Decimal(30) * 100
    assert conversion.score.status is Status.AMBER
    assert trend(conversion) == "down"

    assert rows["mqls"].score.status is Status.GREEN and trend(rows["mqls"]) == "up"
    assert rows["website_visits"].score.status is Status.NO_DATA


def test_goal_progress_is_the_fiscal_year_total_against_target_and_plan_pace(plan: Engine) -> None:
    with transaction(plan) as session:
        goal = goal_progress(session, DAY)
    assert goal is not None and goal.measure is not None
    assert goal.measure.key == "revenue"
    assert goal.actual == 600 * M  # Apr–Oct; November has not ended
    assert goal.pct_of_target == 60
    # The plan's pace over the same seven months (214 of 365 days), not up to the digest day:
    # a revenue exactly on pace must not read as a month behind.
    assert goal.expected == Decimal(1_000_000_000) * 214 / 365
    assert goal.pct_of_plan == Decimal(600 * M) / goal.expected * 100
    assert not goal.behind_plan

    record(plan, {"revenue": {"2026-10": 40 * M}})  # a correction supersedes October's value
    with transaction(plan) as session:
        goal = goal_progress(session, DAY)
        before_march = goal_progress(session, dt.date(2026, 3, 31))  # fiscal 2025: no KGI
        first_day = goal_progress(session, dt.date(2026, 4, 1))
    assert goal is not None and goal.actual == 540 * M
    assert goal.behind_plan
    assert before_march is None
    assert first_day is not None and first_day.actual is None and first_day.expected == 0


def test_a_march_actual_of_the_previous_fiscal_year_does_not_count(plan: Engine) -> None:
    record(plan, {"revenue": {"2026-03": 500 * M, "2026-11": 100 * M}})  # FY2025, and the month in progress
    with transaction(plan) as session:
        goal = goal_progress(session, DAY)
    assert goal is not None and goal.actual == 600 * M


def test_missing_reports_are_grouped_by_owner(plan: Engine) -> None:
    missing = {
        item.owner_user_id: [kpi.key for kpi in item.kpis] for item in digest_of(plan, "sales").missing
    }
    assert missing == {"U0SALES2": ["average_deal_size"]}

    # Marketing: sql_conversion has a value (derived); a derived KPI is never anyone's to report.
    missing = {
        item.owner_user_id: [kpi.key for kpi in item.kpis] for item in digest_of(plan, "marketing").missing
    }
    assert missing == {"U0MKT2": ["website_visits"]}


def seed_countermeasures(engine: Engine) -> None:
    with transaction(engine) as session:

        def add(
            key: str, text: str, status: CountermeasureStatus, due: dt.date | None, owner: str | None
        ) -> None:
            session.add(
                Countermeasure(
                    kpi_id=kpi_id(session, key),
                    text=text,
                    owner_user_id=owner,
                    due_date=due,
                    status=status,
                    logged_by="U0SALESHEAD",
                )
            )

        add("close_rate", "Review lost deals weekly", CountermeasureStatus.PLANNED, None, None)
        add(
            "new_approaches",
            "Call 30 dormant accounts",
            CountermeasureStatus.DOING,
            dt.date(2026, 12, 15),
            "U0SALES1",
        )
        add(
            "new_approaches",
            "Partner webinar",
            CountermeasureStatus.PLANNED,
            dt.date(2026, 11, 20),
            "U0SALES2",
        )
        add(
            "new_approaches",
            "Trade show follow-up",
            CountermeasureStatus.DONE,
            dt.date(2026, 11, 1),
            "U0SALES1",
        )
        add("new_approaches", "Cold mailing", CountermeasureStatus.DROPPED, dt.date(2026, 11, 2), "U0SALES1")
        add(
            "cost_per_lead",
            "Pause low-yield ads",
            CountermeasureStatus.DOING,
            dt.date(2026, 11, 10),
            "U0MKT2",
        )


def test_only_open_countermeasures_of_the_department_in_due_order(plan: Engine) -> None:
    seed_countermeasures(plan)
    digest = digest_of(plan, "sales")

    listed = [(item.countermeasure.text, item.kpi.key) for item in digest.countermeasures]
    assert listed == [
        ("Partner webinar", "new_approaches"),
        ("Call 30 dormant accounts", "new_approaches"),
        ("Review lost deals weekly", "close_rate"),  # no due date: last
    ]

    en = digest_messages(digest, "en")
    assert section_after(en, "*Open countermeasures*") == [
        "• Partner webinar — New approaches · <@U0SALES2> · due Fri, Nov 20 ⚠️ *overdue* · planned",
        "• Call 30 dormant accounts — New approaches · <@U0SALES1> · due Tue, Dec 15 · doing",
        "• Review lost deals weekly — Close rate · no owner · no due date · planned",
    ]
    ja = digest_messages(digest, "ja")
    assert section_after(ja, "*進行中の対策*") == [
        "• Partner webinar — 新規アプローチ数 ・ <@U0SALES2> ・ 期限 11月20日(金) ⚠️ *期限超過* ・ 予定",
        "• Call 30 dormant accounts — 新規アプローチ数 ・ <@U0SALES1> ・ 期限 12月15日(火) ・ 実行中",
        "• Review lost deals weekly — 成約率 ・ 担当者なし ・ 期限なし ・ 予定",
    ]
    assert "Trade show" not in as_text(en) and "Cold mailing" not in as_text(en)
    assert "Pause low-yield ads" not in as_text(en)


# -- digest_messages: what the channel reads -----------------------------------------------------------


def test_sales_digest_in_english(plan: Engine) -> None:
    messages = digest_messages(digest_of(plan, "sales"), "en")

    assert len(messages) == 1
    assert_block_kit_limits(messages)
    message = messages[0]
    assert message.text.split("\n")[0] == "Weekly KPI digest for Sales: 🟢 2 · 🟡 1 · 🔴 1"
    assert message.blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "📊 Sales — weekly KPI digest, Mon, Nov 30, 2026",
            "emoji": True,
        },
    }
    assert texts(message)[1] == (
        "🟢 2 on track · 🟡 1 at risk · 🔴 1 off track · ⚪ 1 not reported · "
        "reviewing Oct 2026 / week 48 (Nov 23–29)"
    )
    assert lines(messages)[2:4] == [
        "*🎯 Annual revenue ¥1bn* (FY2026)",
        "Revenue so far: *¥600M* of ¥1bn (60% of target). "
        "The plan expects ¥586.3M by now: ✅ 102% of plan.",
    ]
    assert section_after(messages, "*Result KPIs*") == [
        "🟢 *Revenue* ¥100M / ¥84M (119% of target) ↗ `▁▁▄▄▄█` _Oct 2026_",
        "🟡 *Close rate* 12% / 15–20% (80% of target) ↘ `···█▅▁` _Oct 2026_",
        "⚪ *Average deal size* — / ¥3M (—)  `·` _Oct 2026_",
    ]
    assert section_after(messages, "*Process KPIs*") == [
        "🔴 *New approaches* 65 / 100 (65% of target)  `·····▁` _Oct 2026_",
        "🟢 *Deals in pipeline* 40 / 40 (100% of target) → `····▁▁` _week 48 (Nov 23–29)_",
        ":chart_with_upwards_trend: Every KPI's trend as a PNG chart: `/kpi chart sales`",
    ]
    assert section_after(messages, "*Success factors (KFS)*") == [
        "🔴 New customer acquisition — slipping: New approaches 65% of target",
        "🟡 Better deal conversion — slipping: Close rate 80% of target",
        "🟢 Pipeline building",
        "⚪ Higher unit price",
    ]
    assert section_after(messages, "*Not reported yet*") == [
        "• <@U0SALES2>: Average deal size — `/kpi report` to fill in",
    ]
    assert "*Open countermeasures*" not in lines(messages)


def test_sales_digest_in_japanese(plan: Engine) -> None:
    messages = digest_messages(digest_of(plan, "sales"), "ja")

    assert_block_kit_limits(messages)
    assert messages[0].text.split("\n")[0] == "営業部 の週次 KPI ダイジェスト: 🟢 2 ・ 🟡 1 ・ 🔴 1"
    assert texts(messages[0])[:2] == [
        "📊 営業部 週次 KPI ダイジェスト ・ 2026年11月30日(月)",
        "🟢 順調 2 ・ 🟡 要注意 1 ・ 🔴 要対策 1 ・ ⚪ 未報告 1 ・ "
        "対象期間: 2026年10月 / 第48週(11/23〜11/29)",
    ]
    assert lines(messages)[2:4] == [
        "*🎯 年間売上 10 億円*(2026年度)",
        "売上の累計: *6億円* / 目標 10億円(達成率 60%)。"
        "現時点の計画値 5億8,630万円 に対し ✅ 計画比 102%。",
    ]
    assert section_after(messages, "*結果指標*") == [
        "🟢 *売上* 1億円 / 8,400万円(達成率 119%) ↗ `▁▁▄▄▄█` _2026年10月_",
        "🟡 *成約率* 12% / 15〜20%(達成率 80%) ↘ `···█▅▁` _2026年10月_",
        "⚪ *平均受注単価* — / 300万円(—)  `·` _2026年10月_",
    ]
    assert section_after(messages, "*プロセス指標*") == [
        "🔴 *新規アプローチ数* 65件 / 100件(達成率 65%)  `·····▁` _2026年10月_",
        "🟢 *パイプライン商談数* 40件 / 40件(達成率 100%) → `····▁▁` _第48週(11/23〜11/29)_",
        ":chart_with_upwards_trend: 全 KPI の推移グラフ(PNG)は `/kpi chart sales` で表示できます。",
    ]
    assert section_after(messages, "*重要成功要因(KFS)*") == [
        "🔴 新規顧客の獲得 — 遅れ: 新規アプローチ数 達成率 65%",
        "🟡 商談成約率の向上 — 遅れ: 成約率 達成率 80%",
        "🟢 パイプラインの構築",
        "⚪ 顧客単価の向上",
    ]
    assert section_after(messages, "*未報告*") == [
        "• <@U0SALES2>: 平均受注単価 — `/kpi report` で報告してください"
    ]


def test_goal_behind_plan_is_flagged_in_both_languages(plan: Engine) -> None:
    record(plan, {"revenue": {"2026-10": 40 * M}})  # YTD ¥540M against ¥586.3M expected: 92 %
    digest = digest_of(plan, "sales")
    assert (
        "Revenue so far: *¥540M* of ¥1bn (54% of target). "
        "The plan expects ¥586.3M by now: ⚠️ *92% of plan — behind*."
        in lines(digest_messages(digest, "en"))
    )
    assert (
        "売上の累計: *5億4,000万円* / 目標 10億円(達成率 54%)。"
        "現時点の計画値 5億8,630万円 に対し ⚠️ *計画比 92% — 計画より遅れ*。"
        in lines(digest_messages(digest, "ja"))
    )
    # October fell from ¥90M to ¥40M: 48 % of its ¥84M target, red.
    assert line_of(digest_messages(digest, "en"), "Revenue").startswith(
        "🔴 *Revenue* ¥40M / ¥84M (48% of target) ↘"
    )


def test_marketing_digest_values_and_units(plan: Engine) -> None:
    digest = digest_of(plan, "marketing")
    en, ja = digest_messages(digest, "en"), digest_messages(digest, "ja")

    # Lower is better: the cost is 25% over its ceiling, not "80% of target".
    assert line_of(en, "Cost per lead") == (
        "🟡 *Cost per lead* ¥10K / ¥8,000 (25% over its ceiling)  `·····▁` _Oct 2026_"
    )
    assert line_of(en, "SQL conversion") == (
        "🟡 *SQL conversion* 25% / 30% (83% of target) ↘ `····█▁` _Oct 2026_"
    )
    assert line_of(en, "MQLs") == "🟢 *MQLs* 200 / 200 (100% of target) ↗ `····▁█` _Oct 2026_"
    assert line_of(en, "Website visits") == "⚪ *Website visits* — / 5,000 (—)  `·` _week 48 (Nov 23–29)_"
    assert line_of(ja, "リード獲得単価") == (
        "🟡 *リード獲得単価* 1万円 / 8,000円(上限を25%超過)  `·····▁` _2026年10月_"
    )
    assert line_of(ja, "SQL 化率") == "🟡 *SQL 化率* 25% / 30%(達成率 83%) ↘ `····█▁` _2026年10月_"
    assert en[0].text.split("\n")[0] == "Weekly KPI digest for Marketing: 🟢 1 · 🟡 2 · 🔴 0"


def test_a_kpi_without_target_says_no_target_never_zero_percent(plan: Engine) -> None:
    with transaction(plan) as session:
        session.execute(delete(Target).where(Target.kpi_id == kpi_id(session, "average_deal_size")))
    record(plan, {"average_deal_size": {"2026-09": 2_000_000, "2026-10": 2_500_000}})
    digest = digest_of(plan, "sales")

    row = next(row for row in digest.rows if row.kpi.key == "average_deal_size")
    assert (row.score.target, row.score.achievement_pct, row.score.status) == (None, None, Status.NO_TARGET)
    en, ja = digest_messages(digest, "en"), digest_messages(digest, "ja")
    assert (
        line_of(en, "Average deal size")
        == "⚪ *Average deal size* ¥2.5M · no target ↗ `····▁█` _Oct 2026_"
    )
    assert line_of(ja, "平均受注単価") == "⚪ *平均受注単価* 250万円 ・ 目標なし ↗ `····▁█` _2026年10月_"
    for messages, name in ((en, "Average deal size"), (ja, "平均受注単価")):
        assert "%" not in line_of(messages, name)
        assert not any(name in line and "%" in line for line in lines(messages))  # nor among the slipping
    # Reported, so not missing; no target, so not counted as on track, at risk or off track.
    assert digest.missing == []
    assert [digest.count(s) for s in (Status.GREEN, Status.AMBER, Status.RED, Status.NO_DATA)] == [2, 1, 1, 0]
    assert ("unit_price", Status.NO_DATA, []) in [
        (f.factor.key if f.factor else None, f.status, f.slipping) for f in digest.factors
    ]


def test_a_department_with_no_actuals_lists_every_owner_as_not_reported(example_plan: Engine) -> None:
    digest = digest_of(example_plan, "customer_success")  # nothing recorded anywhere
    assert digest.goal is not None and digest.goal.actual is None

    en = digest_messages(digest, "en")
    assert_block_kit_limits(en)
    assert (
        texts(en[0])[1]
        == "🟢 0 on track · 🟡 0 at risk · 🔴 0 off track · ⚪ 5 not reported · reviewing Oct 2026"
    )
    assert lines(en)[2:4] == [
        "*🎯 Annual revenue ¥1bn* (FY2026)",
        "Target ¥1bn. No Revenue reported yet this fiscal year.",
    ]
    assert line_of(en, "Cross-sell rate") == "⚪ *Cross-sell rate* — / 20–30% (—)  `·` _Oct 2026_"
    assert section_after(en, "*Not reported yet*") == [
        "• <@U0CS1>: NPS, Retention rate, Churn rate — `/kpi report` to fill in",
        "• <@U0CS2>: Upsell rate, Cross-sell rate — `/kpi report` to fill in",
    ]
    ja = digest_messages(digest, "ja")
    assert_block_kit_limits(ja)
    assert section_after(ja, "*未報告*") == [
        "• <@U0CS1>: NPS、継続率、解約率 — `/kpi report` で報告してください",
        "• <@U0CS2>: アップセル率、クロスセル率 — `/kpi report` で報告してください",
    ]
    assert "目標 10億円。今年度の売上はまだ報告がありません。" in lines(ja)
    assert not any(zero in line for zero in (" 0%", "(0%") for line in lines(en) + lines(ja))


# -- the division head's summary -----------------------------------------------------------------------


def test_division_summary_one_line_per_department(plan: Engine) -> None:
    seed_countermeasures(plan)
    with transaction(plan) as session:
        division = session.exec(select(Department).where(Department.is_division)).one()
        summary = build_division_summary(session, division, DAY)
    assert [d.department.key for d in summary.digests] == [
        "marketing",
        "inside_sales",
        "sales",
        "customer_success",
    ]

    en = division_messages(summary, "en")
    assert_block_kit_limits(en)
    assert en[0].text == "Division KPI summary: 4 departments"
    assert lines(en) == [
        "📊 Division KPI summary, Mon, Nov 30, 2026",
        "*🎯 Annual revenue ¥1bn* (FY2026)",
        "Revenue so far: *¥600M* of ¥1bn (60% of target). "
        "The plan expects ¥586.3M by now: ✅ 102% of plan.",
        # Marketing's overdue countermeasure is on cost per lead; Sales' on new approaches.
        "*Marketing* 🟢 1 🟡 2 🔴 0 ⚪ 1 — 🟡 Cost per lead 25% over its ceiling,"
        " 🟡 SQL conversion 83% of target"
        " · ⚠️ 1 overdue countermeasure",
        "*Inside Sales* 🟢 0 🟡 1 🔴 0 ⚪ 1 — 🟡 SQLs 83% of target",
        "*Sales* 🟢 2 🟡 1 🔴 1 ⚪ 1 — 🔴 New approaches 65% of target, 🟡 Close rate 80% of target"
        " · ⚠️ 1 overdue countermeasure",
        "*Customer Success* 🟢 0 🟡 0 🔴 0 ⚪ 5",
    ]
    ja = division_messages(summary, "ja")
    assert_block_kit_limits(ja)
    assert ja[0].text == "事業部 KPI サマリー: 4 部署"
    assert lines(ja)[0] == "📊 事業部 KPI サマリー ・ 2026年11月30日(月)"
    assert lines(ja)[3:] == [
        "*マーケティング部* 🟢 1 🟡 2 🔴 0 ⚪ 1 — 🟡 リード獲得単価 上限を25%超過、🟡 SQL 化率 達成率 83%"
        " ・ ⚠️ 期限超過の対策 1件",
        "*インサイドセールス部* 🟢 0 🟡 1 🔴 0 ⚪ 1 — 🟡 SQL 数 達成率 83%",
        "*営業部* 🟢 2 🟡 1 🔴 1 ⚪ 1 — 🔴 新規アプローチ数 達成率 65%、🟡 成約率 達成率 80%"
        " ・ ⚠️ 期限超過の対策 1件",
        "*カスタマーサクセス部* 🟢 0 🟡 0 🔴 0 ⚪ 5",
    ]


def test_build_of_the_division_is_the_summary_without_a_chart(plan: Engine) -> None:
    built = build(plan, department(plan, "division"), DAY, slack_messages)
    assert built.chart is None
    assert built.locale == "ja"
    assert lines(built.messages)[0] == "📊 事業部 KPI サマリー ・ 2026年11月30日(月)"
    assert "*営業部* 🟢 2 🟡 1 🔴 1 ⚪ 1 — 🔴 新規アプローチ数 達成率 65%、🟡 成約率 達成率 80%" in lines(
        built.messages
    )


# -- Block Kit limits: a long scorecard continues in the thread ------------------------------------------


def long_name(i: int) -> str:
    return (
        f"{i:03d}番 オンライン商談から受注に至るまでの新規顧客向け提案資料の送付後"
        "フォローアップ完了率(週次集計)"
    )


@pytest.fixture
def big(engine: Engine) -> Iterator[Engine]:
    """120 KPIs with long Japanese names, one owner, one KFS: even ones reported at 50 % (red,
    slipping), odd ones not reported; so the KFS line and the owner's "not reported" line are each
    too long for one section."""
    with transaction(engine) as session:
        dept = Department(
            key="big",
            name_ja="大規模法人営業本部 第一営業統括部 首都圏エンタープライズ営業部 " * 3,
            name_en="Enterprise Sales, Greater Tokyo " * 6,
            channel_id="C0BIG",
            locale="ja",
        )
        factor = SuccessFactor(key="big_factor", name_ja="大口顧客の深耕", name_en="Key accounts")
        session.add_all([dept, factor])
        session.flush()
        for i in range(120):
            kpi = count_kpi(
                f"big_{i:03d}",
                dept.id,
                name_ja=long_name(i),
                name_en=f"{i:03d} Follow-up completion rate after proposal to new enterprise customers",
                kind=KpiKind.RESULT if i % 3 else KpiKind.PROCESS,
                owner_user_id="U0BIGOWNER",
                success_factor_id=factor.id,
                position=i,
            )
            session.add(kpi)
            session.flush()
            assert kpi.id is not None
            session.add(Target(kpi_id=kpi.id, period="*", value=Decimal(100)))
            if i % 2 == 0:
                record_actual(
                    session,
                    kpi=kpi,
                    period="2026-10",
                    value=Decimal(50),
                    reported_by="U0SEED",
                    source=Source.CSV,
                )
    yield engine


@pytest.mark.parametrize("locale", ["ja", "en"])
def test_a_long_scorecard_is_split_into_thread_replies_and_nothing_is_lost(big: Engine, locale: str) -> None:
    digest = digest_of(big, "big")
    messages = digest_messages(digest, locale)

    assert len(messages) >= 3
    assert_block_kit_limits(messages)
    assert messages[0].blocks[0]["type"] == "header"
    continued = "(続き {}/{})" if locale == "ja" else "(continued {}/{})"
    for number, message in enumerate(messages[1:], start=2):
        assert message.blocks[0]["type"] == "context"
        assert texts(message)[0] == continued.format(number, len(messages))
        assert continued.format(number, len(messages)) in message.text
    # Every KPI is in the scorecard exactly once, whole, in its order, and no line was cut.
    all_lines = lines(messages)
    names = [
        kpi.name(locale) for kpi in (row.kpi for row in sorted(digest.rows, key=lambda r: r.kpi.position))
    ]
    for name in names:
        assert sum(line.count(f"*{name}*") for line in all_lines) == 1, name
    row_lines = [line for line in all_lines if line.startswith(("🔴 *", "⚪ *"))]
    result_names = [row.kpi.name(locale) for row in digest.results]
    process_names = [row.kpi.name(locale) for row in digest.processes]
    assert [re.sub(r"^\S+ \*(.*?)\* .*$", r"\1", line) for line in row_lines] == result_names + process_names
    # The KFS line lists the 60 slipping KPIs, the owner's line the 60 unreported ones, each whole:
    # every name appears exactly twice (its row, then the KFS or the "not reported" line).
    text = "\n".join(all_lines)
    for i, name in enumerate(names):
        assert text.count(name) == 2, name
        slipping_entry = f"{name} 達成率 50%" if locale == "ja" else f"{name} 50% of target"
        assert (slipping_entry in text) == (i % 2 == 0)


def test_a_long_department_name_keeps_the_header_inside_its_limit(big: Engine) -> None:
    messages = digest_messages(digest_of(big, "big"), "en")
    header = messages[0].blocks[0]["text"]["text"]
    assert len(header) <= 150
    assert header.startswith("📊 Enterprise Sales, Greater Tokyo")


# -- the chart: the department's own data -----------------------------------------------------------------


def chart_data(png: bytes) -> dict[str, Any]:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size[0] == 1200
    return json.loads(image.text["kpibot"])  # type: ignore[attr-defined]


def test_the_chart_carries_the_departments_kpis_and_values(plan: Engine) -> None:
    built = build(plan, department(plan, "sales"), DAY, slack_messages)
    assert built.chart is not None and built.locale == "ja"
    data = chart_data(built.chart)

    assert data["title"] == "営業部: 実績と目標の推移 ・ 2026年11月30日(月)"
    assert data["no_data"] is False and data["omitted"] == 0
    series = {item["name"]: item for item in data["series"]}
    assert sorted(series) == sorted(
        ["売上", "成約率", "平均受注単価", "新規アプローチ数", "パイプライン商談数"]
    )

    revenue = series["売上"]
    assert revenue["unit"] == "jpy"
    assert revenue["periods"] == [f"2025-{m}" for m in ("10", "11", "12")] + [
        f"2026-{m:02d}" for m in range(1, 11)
    ]
    actuals = [None if value is None else Decimal(value) for value in revenue["actuals"]]
    assert actuals == [None] * 6 + [Decimal(value * M) for value in REVENUE.values()]
    assert all(Decimal(low) == Decimal(high) == 84 * M for low, high in revenue["targets"])

    close_rate = series["成約率"]
    assert [None if v is None else Decimal(v) for v in close_rate["actuals"][-3:]] == [18, 16, 12]
    assert {(Decimal(low), Decimal(high)) for low, high in close_rate["targets"]} == {(15, 20)}

    pipeline = series["パイプライン商談数"]
    assert pipeline["periods"][-2:] == ["2026-W47", "2026-W48"]
    assert [Decimal(v) for v in pipeline["actuals"][-2:]] == [40, 40]
    assert all(value is None for value in series["平均受注単価"]["actuals"])


def test_two_departments_get_different_charts(plan: Engine) -> None:
    sales = chart_data(build(plan, department(plan, "sales"), DAY, slack_messages).chart or b"")
    marketing = chart_data(build(plan, department(plan, "marketing"), DAY, slack_messages).chart or b"")

    assert {item["name"] for item in marketing["series"]} == {
        "MQL 数",
        "SQL 化率",
        "リード獲得単価",
        "Web サイト訪問数",
    }
    assert not {item["name"] for item in marketing["series"]} & {item["name"] for item in sales["series"]}
    by_name = {item["name"]: item for item in marketing["series"]}
    assert [Decimal(v) for v in by_name["SQL 化率"]["actuals"][-2:]] == [30, 25]
    assert [Decimal(v) for v in by_name["リード獲得単価"]["actuals"][-1:]] == [10_000]


def test_the_chart_follows_the_locale_asked_for(plan: Engine) -> None:
    built = build(plan, department(plan, "sales"), DAY, slack_messages, locale="en")
    assert built.chart is not None
    assert {item["name"] for item in chart_data(built.chart)["series"]} == {
        "Revenue",
        "Close rate",
        "Average deal size",
        "New approaches",
        "Deals in pipeline",
    }
    assert texts(built.messages[0])[0] == "📊 Sales — weekly KPI digest, Mon, Nov 30, 2026"


# -- a department without a channel ---------------------------------------------------------------------


def test_a_department_without_a_channel_builds_but_is_not_posted(plan: Engine) -> None:
    with transaction(plan) as session:
        sales = session.exec(select(Department).where(Department.key == "sales")).one()
        sales.channel_id = None
        session.add(sales)
    sales = department(plan, "sales")

    built = build(plan, sales, DAY, slack_messages)  # the dry run still shows it
    assert built.chart is not None
    assert "🟡 *成約率* 12% / 15〜20%(達成率 80%) ↘ `···█▅▁` _2026年10月_" in as_text(built.messages)

    with FakeSlack() as fake:
        client = WebClient(token="xoxb-test", base_url=fake.url)
        settings = load_settings({}, env_file=None)
        outcome = post(
            Outbox(plan, SlackPoster(client)), slack_messages, settings, sales, DAY, period="2026-W49"
        )
        assert outcome.status == "no_channel"
        assert outcome.department.key == "sales"
        assert fake.calls() == []
    with transaction(plan) as session:
        assert session.exec(select(Post)).all() == []
