"""`/kpi chart [department]` over the signed HTTP path: the PNG grid uploaded to the channel where it
was asked for (files_upload_v2 against the fake Slack, which keeps the bytes), or a clear ephemeral
answer in the asker's language.

The clock is the harness's: Monday 2026-11-30 10:00 JST.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal

from PIL import Image
from sqlmodel import select

from bot.database import transaction
from bot.models import Department, Kpi, Source
from bot.reports.actuals import record_actual
from tests.fakeslack.harness import SlackHarness

DEPARTMENT_KEYS = ["marketing", "inside_sales", "sales", "customer_success"]


def kpi_names(slack: SlackHarness, department: str, locale: str) -> set[str]:
    with transaction(slack.engine) as session:
        found = session.exec(
            select(Kpi).join(Department).where(Department.key == department, Kpi.retired_at.is_(None))  # type: ignore[union-attr]
        ).all()
        return {kpi.name(locale) for kpi in found}


# Drawing the grid (matplotlib, imported on first use) takes seconds on a busy machine: the waits
# below are an upper bound for the work to end, not a measure of it.
DRAWN_WITHIN = 60.0


def uploaded(slack: SlackHarness) -> None:
    slack.fake.wait_for("files.completeUploadExternal", timeout=DRAWN_WITHIN)
    slack.settle()


def answer_after_drawing(slack: SlackHarness, text: str, *, user_id: str, channel_id: str) -> dict:
    """The ephemeral answer to a command that draws the chart before it can answer."""
    before = len(slack.fake.calls("response_url"))
    slack.send(text, user_id=user_id, channel_id=channel_id)
    return slack.fake.wait_for("response_url", count=before + 1, timeout=DRAWN_WITHIN)[before].args


def uploaded_chart(slack: SlackHarness) -> tuple[dict, dict]:
    """The one file completed at the fake, and the chart data the PNG carries (bot/digests/charts.py)."""
    [completed] = slack.fake.calls("files.completeUploadExternal")
    [(file_id, png)] = slack.fake.uploads.items()
    assert completed.args["files"][0]["id"] == file_id
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return completed.args, json.loads(image.text["kpibot"])  # type: ignore[attr-defined]


def test_chart_of_the_channels_department_is_posted_in_that_channel(slack: SlackHarness) -> None:
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "new_approaches")).one()
        record_actual(
            session,
            kpi=kpi,
            period="2026-10",
            value=Decimal(85),
            reported_by="U0SALES1",
            source=Source.COMMAND,
        )
    slack.send("chart", user_id="U0SALES1", channel_id="C0SALES")
    uploaded(slack)

    completed, chart = uploaded_chart(slack)
    assert completed["channel_id"] == "C0SALES"
    assert "thread_ts" not in completed  # in the channel, not in a digest's thread
    [asked] = slack.fake.calls("files.getUploadURLExternal")
    assert asked.args["filename"] == "kpibot-sales.png"
    assert "営業部" in chart["title"]
    assert {series["name"] for series in chart["series"]} == kpi_names(slack, "sales", "ja")
    assert "推移" in completed["initial_comment"]
    assert slack.fake.calls("response_url") == []  # the file is the answer


def test_chart_of_a_named_department_is_in_that_departments_language(slack: SlackHarness) -> None:
    # Customer Success reads English (the plan's locale); the chart is for its team, asked from Sales.
    slack.send("グラフ カスタマーサクセス部", user_id="U0SALES1", channel_id="C0SALES")
    uploaded(slack)

    completed, chart = uploaded_chart(slack)
    assert completed["channel_id"] == "C0SALES"
    assert "Customer Success" in chart["title"]
    assert {series["name"] for series in chart["series"]} == kpi_names(slack, "customer_success", "en")
    assert "Trend over the last" in completed["initial_comment"]


def test_an_unknown_department_is_answered_in_japanese_and_english(slack: SlackHarness) -> None:
    slack.fake.set_user("U0EN", locale="en-US")
    ja = slack.command("chart 総務部", user_id="U0SALES1")
    en = slack.command("chart nowhere", user_id="U0EN")

    assert ja.args["response_type"] == "ephemeral"
    assert "「総務部」という部署は見つかりません" in ja.args["text"]
    assert "No department called “nowhere”" in en.args["text"]
    for answer in (ja, en):
        for key in DEPARTMENT_KEYS:
            assert f"`{key}`" in answer.args["text"]
        assert "`division`" not in answer.args["text"]  # it has no chart to offer
    slack.settle()
    assert slack.fake.calls("files.getUploadURLExternal") == []


def test_a_channel_without_a_department_asks_which_one(slack: SlackHarness) -> None:
    answer = slack.command("chart", user_id="U0SALES1", channel_id="C0RANDOM")
    assert "どの部署のグラフですか?" in answer.args["text"]
    assert "`marketing`" in answer.args["text"]


def test_the_division_has_no_chart_of_its_own(slack: SlackHarness) -> None:
    slack.fake.set_user("U0EN", locale="en-US")
    answer = slack.command("chart division", user_id="U0EN")
    assert "Division has no KPIs of its own, so no chart" in answer.args["text"]
    assert "`sales`" in answer.args["text"]
    slack.settle()
    assert slack.fake.uploads == {}


def test_a_channel_kpibot_is_not_in_gets_the_way_to_invite_it(slack: SlackHarness) -> None:
    slack.fake.fail("files.completeUploadExternal", "not_in_channel")
    ja = answer_after_drawing(slack, "chart sales", user_id="U0SALES1", channel_id="C0ELSEWHERE")
    assert "このチャンネルに kpibot が参加していない" in ja["text"]
    assert "`/invite @kpibot`" in ja["text"]

    slack.fake.set_user("U0EN", locale="en-US")
    slack.fake.fail("files.completeUploadExternal", "restricted_action")
    en = answer_after_drawing(slack, "chart sales", user_id="U0EN", channel_id="C0SALES")
    assert "Could not post the chart for Sales (Slack said `restricted_action`)" in en["text"]
    slack.settle()
