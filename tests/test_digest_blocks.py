"""The digest's scorecard as Slack's table block, its native line chart, and the fallback to today's
rendering when Slack refuses a new block type — checked on the payloads and over the wire against
the fake Web API (tests/fakeslack), with the post ledger on SQLite and PostgreSQL.

The digest day is Monday 2026-11-30: it reviews 2026-10 (monthly KPIs) and 2026-W48 (weekly ones).
Cells are compared with what bot/render.py's own filters make of the same values, so a row and its cell
read alike; a few cells are pinned as the reader sees them in ja and en (bot/formats.py's locale rules).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from slack_sdk.models.blocks import Block, TableBlock
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bot import formats, render
from bot.clock import set_clock
from bot.config import load_settings
from bot.database import transaction
from bot.digests.flows import build
from bot.digests.service import Digest, build_digest
from bot.models import Department, Kpi, Post, PostKind, PostStatus, Source
from bot.reports.actuals import record_actual
from bot.scoring import Status, achievement_pct
from handlers.blocks import (
    NEW_BLOCK_TYPES,
    BlockLimitError,
    WithFallback,
    check_chart,
    check_message,
    line_chart,
    table,
)
from handlers.client import make_web_client
from handlers.digests import interactive as digests_surface
from handlers.digests import messages as slack_messages
from handlers.digests.messages import as_text
from handlers.poster import metadata
from tests.fakeslack import FakeSlack
from tests.fakeslack.server import DROP_AFTER_SEND
from tests.plans import count_kpi
from tests.test_digest import record

DAY = dt.date(2026, 11, 30)
SLOT = dt.datetime(2026, 11, 30, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo")).astimezone(dt.UTC)
M = 1_000_000
ACTUALS: dict[str, dict[str, int]] = {
    "revenue": {"2026-08": 90 * M, "2026-09": 85 * M, "2026-10": 60 * M},  # 60 of 84: amber
    "new_approaches": {"2026-09": 95, "2026-10": 60},  # 60 of 100: red
    "close_rate": {"2026-10": 12},  # 12 against 15–20 %: amber
    "pipeline_deals": {"2026-W47": 40, "2026-W48": 20},  # weekly, 20 of 40: red
    # average_deal_size: not reported
}


@pytest.fixture
def plan(example_plan: Engine) -> Engine:
    record(example_plan, ACTUALS)
    return example_plan


def department(engine: Engine, key: str) -> Department:
    with transaction(engine) as session:
        return session.exec(select(Department).where(Department.key == key)).one()


def sales_digest(engine: Engine, locale: str = "ja") -> list[Any]:
    return build(
        engine, department(engine, "sales"), DAY, slack_messages, with_chart=False, locale=locale
    ).messages


def sales_scorecard(engine: Engine) -> Digest:
    sales = department(engine, "sales")
    with transaction(engine) as session:
        return build_digest(session, sales, DAY, None)


def blocks_of(messages: list[Any], kind: str) -> list[dict[str, Any]]:
    return [block for message in messages for block in message.blocks if block["type"] == kind]


def cell_texts(block: dict[str, Any]) -> list[list[str]]:
    return [[cell["text"] for cell in row] for row in block["rows"]]


def section_texts(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(block["text"]["text"] for block in blocks if block["type"] == "section")


# -- the table ------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["ja", "en"])
def test_the_scorecard_is_one_table_row_per_kpi_with_the_templates_formats(plan: Engine, locale: str) -> None:
    messages = sales_digest(plan, locale)
    [block] = blocks_of(messages, "table")
    assert block in messages[0].blocks  # in the root message, where the fallback can replace it
    parsed = Block.parse(block)
    assert isinstance(parsed, TableBlock)
    parsed.validate_json()
    header, *rows = cell_texts(block)
    columns = ("kpi", "actual", "target", "achievement", "trend", "status")
    assert header == [render.message(f"digest.table.{column}", locale) for column in columns]
    assert [setting["align"] for setting in block["column_settings"]] == [
        "left", "right", "right", "right", "left", "left",
    ]  # fmt: skip

    filters = render._environment().filters
    digest = sales_scorecard(plan)
    kpis = [row.kpi for row in digest.rows]
    assert sorted(row[0] for row in rows) == sorted(kpi.name(locale) for kpi in kpis)
    by_name = {row[0]: row for row in rows}
    for score_row in digest.rows:
        cells = by_name[score_row.kpi.name(locale)]
        unit = score_row.kpi.unit
        assert cells[1] == filters["localized"](score_row.score.actual, unit, locale)
        assert cells[2] == filters["localized_target"](score_row.score.target, unit, locale)
        status = score_row.score.status
        assert cells[5] == f"{filters['status_emoji'](status)} {render.message(f'status.{status}', locale)}"
    new_approaches = by_name[next(r.kpi.name(locale) for r in digest.rows if r.kpi.key == "new_approaches")]
    assert new_approaches[3] == "60%"  # 60 of 100, no space before the sign
    revenue = by_name[next(r.kpi.name(locale) for r in digest.rows if r.kpi.key == "revenue")]
    # Money rounded for reading by the locale's rules; a range keeps its unit once.
    assert revenue[1:4] == (["6,000万円", "8,400万円", "71%"] if locale == "ja" else ["¥60M", "¥84M", "71%"])
    close_rate = by_name[next(r.kpi.name(locale) for r in digest.rows if r.kpi.key == "close_rate")]
    assert close_rate[2] == ("15〜20%" if locale == "ja" else "15–20%")
    assert new_approaches[1:3] == (["60件", "100件"] if locale == "ja" else ["60", "100"])
    assert new_approaches[5] == ("🔴 要対策" if locale == "ja" else "🔴 off track")
    assert new_approaches[5].startswith("🔴")
    assert by_name[next(r.kpi.name(locale) for r in digest.rows if r.kpi.key == "average_deal_size")][1] == (
        "—"
    )  # not reported: shown as such, not as 0


@pytest.mark.parametrize("locale", ["ja", "en"])
def test_the_division_summary_is_one_table_row_per_department_with_todays_lines_as_fallback(
    plan: Engine, locale: str
) -> None:
    messages = build(
        plan, department(plan, "division"), DAY, slack_messages, with_chart=False, locale=locale
    ).messages
    root = messages[0]
    assert isinstance(root, WithFallback)
    [block] = blocks_of(messages, "table")
    assert block in root.blocks
    Block.parse(block).validate_json()  # type: ignore[union-attr]
    check_message(root.blocks)
    header, *rows = cell_texts(block)
    columns = ("department", "achievement", "status", "kpis", "slipping", "overdue")
    assert header == [render.message(f"digest.division_table.{column}", locale) for column in columns]
    by_name = {row[0]: row for row in rows}
    with transaction(plan) as session:
        departments = session.exec(select(Department).where(col(Department.is_division).is_(False))).all()
    assert sorted(by_name) == sorted(d.name(locale) for d in departments)
    sales = by_name[department(plan, "sales").name(locale)]
    # 達成率 60/84, 60/100, 80 (12 against 15–20 %), 20/40; average deal size not reported: 65 on average.
    assert sales[1] == "65%"  # no space before the sign
    assert sales[2] == f"🔴 {render.message('status.red', locale)}"
    assert sales[3] == "🟢 0 🟡 2 🔴 2 ⚪ 1"
    pipeline, new_approaches = (
        next(r.kpi.name(locale) for r in sales_scorecard(plan).rows if r.kpi.key == key)
        for key in ("pipeline_deals", "new_approaches")
    )
    # The worst first: pipeline deals at 50 %, new approaches at 60 %, then revenue.
    assert sales[4].startswith(f"{pipeline} 達成率 50%" if locale == "ja" else f"{pipeline} 50% of target")
    assert new_approaches in sales[4]
    assert sales[5] == "—"  # no overdue countermeasure
    marketing = by_name[department(plan, "marketing").name(locale)]
    assert marketing[1] == "—" and marketing[2] == f"⚪ {render.message('status.no_data', locale)}"
    # The fallback is today's sections, one line per department, and carries no new block.
    assert not any(block["type"] in NEW_BLOCK_TYPES for part in root.fallback for block in part.blocks)
    fallback_text = section_texts(root.fallback[0].blocks)
    assert f"*{department(plan, 'sales').name(locale)}* 🟢 0 🟡 2 🔴 2 ⚪ 1" in fallback_text


def test_the_message_text_keeps_todays_rendering_and_the_fallback_has_no_new_blocks(plan: Engine) -> None:
    messages = sales_digest(plan)
    root = messages[0]
    assert isinstance(root, WithFallback)
    fallback_blocks = [block for message in root.fallback for block in message.blocks]
    assert not any(block["type"] in NEW_BLOCK_TYPES for block in fallback_blocks)
    for message in root.fallback:
        check_message(message.blocks)
        for block in message.blocks:
            Block.parse(block).validate_json()  # type: ignore[union-attr]
    with transaction(plan) as session:
        names = session.exec(
            select(Kpi.name_ja).where(Kpi.department_id == department(plan, "sales").id)
        ).all()
    shown = section_texts(fallback_blocks)
    for name in names:
        # Each KPI has its mrkdwn line in the fallback, and the same line in the root's text.
        [line] = [line for line in shown.split("\n") if f"*{name}*" in line]
        assert line in root.text
    # Every other section (KGI, KFS, missing reports) is in both renderings, in the same order.
    notes = render.message("digest.table.notes", "ja")
    kept = [
        b["text"]["text"]
        for b in root.blocks
        if b["type"] == "section" and not b["text"]["text"].startswith(notes)
    ]
    fallback_sections = [block["text"]["text"] for block in fallback_blocks if block["type"] == "section"]
    assert len(kept) >= 3 and [text for text in fallback_sections if text in kept] == kept


def test_a_department_over_99_kpis_gets_todays_sections_instead_of_a_table(plan: Engine) -> None:
    sales = department(plan, "sales")
    with transaction(plan) as session:
        for i in range(100):
            session.add(count_kpi(f"many_{i:03d}", sales.id, position=100 + i))
    messages = sales_digest(plan)
    assert not any(block["type"] in NEW_BLOCK_TYPES for message in messages for block in message.blocks)
    assert not any(isinstance(message, WithFallback) for message in messages)
    everything = "\n".join(section_texts(message.blocks) for message in messages)
    assert all(f"*指標 many_{i:03d}*" in everything for i in range(100))


# -- the native chart ----------------------------------------------------------------------------


def test_the_native_chart_is_the_kpis_needing_attention_in_percent_of_target(plan: Engine) -> None:
    messages = sales_digest(plan)
    charts = blocks_of(messages, "data_visualization")
    assert charts and all(chart in messages[0].blocks for chart in charts)
    check_message(messages[0].blocks)
    digest = sales_scorecard(plan)
    needing = [row for row in digest.rows if row.score.status in (Status.RED, Status.AMBER)]
    # One chart per cadence (weekly and monthly periods share no axis), monthly first.
    assert [chart["title"] for chart in charts] == [
        render.message(
            "digest.native_chart.title",
            "ja",
            cadence=render.message(f"digest.native_chart.cadence.{c}", "ja"),
        )
        for c in ("monthly", "weekly")
    ]
    monthly, weekly = (chart["chart"] for chart in charts)
    assert monthly["type"] == "line"
    target, *series = monthly["series"]
    assert target["name"] == render.message("digest.native_chart.target", "ja")
    assert {point["value"] for point in target["data"]} == {100.0}
    worst_first = sorted(
        (row for row in needing if row.kpi.cadence.value == "monthly"),
        key=lambda row: row.score.achievement_pct or 0,
    )
    assert [item["name"] for item in series] == [row.kpi.name("ja") for row in worst_first]
    assert [row.kpi.key for row in worst_first] == ["new_approaches", "revenue", "close_rate"]
    # Only the periods somebody reported: 2026-08 is revenue's first figure.
    assert monthly["axis_config"]["categories"] == ["2026年8月", "2026年9月", "2026年10月"]
    revenue = next(item for item in series if item["name"] == worst_first[1].kpi.name("ja"))
    row = worst_first[1]
    keys = [formats.axis_label(period, "ja") for period in row.period.last(len(row.history))]
    expected = {
        key: round(float(achievement_pct(actual, goal, row.kpi.direction)), 1)  # type: ignore[arg-type]
        for key, actual, goal in zip(keys, row.history, row.targets, strict=True)
        if actual is not None and goal is not None
    }
    assert {point["label"]: point["value"] for point in revenue["data"]} == expected
    close_rate = next(item for item in series if item["name"] == worst_first[2].kpi.name("ja"))
    assert [point["label"] for point in close_rate["data"]] == ["2026年10月"]  # no made-up earlier points
    [pipeline] = weekly["series"][1:]
    assert {point["label"]: point["value"] for point in pipeline["data"]} == {
        "第47週": 100.0,
        "第48週": 50.0,
    }
    # The terminal (demo, --dry-run) renders no chart: it shows the fallback, every KPI's line.
    assert all(f"*{row.kpi.name('ja')}*" in as_text(messages) for row in digest.rows)
    assert "第48週(11/23〜11/29)" in as_text(messages)


def test_no_chart_when_every_kpi_is_on_track(example_plan: Engine) -> None:
    with transaction(example_plan) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "new_approaches")).one()
        record_actual(
            session, kpi=kpi, period="2026-10", value=Decimal(120), reported_by="U0SEED", source=Source.CSV
        )
    messages = sales_digest(example_plan)
    assert blocks_of(messages, "table") and not blocks_of(messages, "data_visualization")


# -- Slack's documented limits -------------------------------------------------------------------


def chart_block(**changes: Any) -> dict[str, Any]:
    block = line_chart(
        "達成率", ["2026-09", "2026-10"], [("目標 100%", [100.0, 100.0]), ("売上", [90.0, None])]
    )
    data = block.to_dict()
    data["chart"].update(changes)
    return data


@pytest.mark.parametrize(
    "broken",
    [
        {"title": "x" * 51},
        {"chart": {**chart_block()["chart"], "type": "scatter"}},
        {
            "chart": {
                **chart_block()["chart"],
                "series": [{"name": f"s{i}", "data": [{"label": "2026-09", "value": 1}]} for i in range(7)],
            }
        },  # noqa: E501
        {
            "chart": {
                **chart_block()["chart"],
                "series": [{"name": "x" * 21, "data": [{"label": "2026-09", "value": 1}]}],
            }
        },  # noqa: E501
        {
            "chart": {
                **chart_block()["chart"],
                "series": [{"name": "a", "data": [{"label": "2026-11", "value": 1}]}],
            }
        },  # noqa: E501
        {
            "chart": {
                **chart_block()["chart"],
                "series": [{"name": "a", "data": [{"label": "2026-09", "value": float("nan")}]}],
            }
        },  # noqa: E501
        {"chart": {**chart_block()["chart"], "series": [{"name": "a", "data": []}]}},
        {"chart": {**chart_block()["chart"], "axis_config": {"categories": [f"c{i}" for i in range(21)]}}},
        {"chart": {**chart_block()["chart"], "axis_config": {"categories": ["x" * 21]}}},
    ],
)
def test_a_chart_over_slacks_limits_is_refused_before_posting(broken: dict[str, Any]) -> None:
    check_chart(chart_block())
    with pytest.raises(BlockLimitError):
        check_chart({**chart_block(), **broken})


def test_a_message_holds_two_charts_and_one_table_at_most() -> None:
    one_table = table(["a"], [["1"]], ["left"]).to_dict()
    check_message([one_table, chart_block(), chart_block()])
    with pytest.raises(BlockLimitError):
        check_message([one_table, chart_block(), chart_block(), chart_block()])
    with pytest.raises(BlockLimitError):
        check_message([one_table, one_table])
    with pytest.raises(BlockLimitError):
        table(["a"], [["1"]] * 100, ["left"])  # 100 rows and the header
    with pytest.raises(BlockLimitError):
        table([str(i) for i in range(21)], [], ["left"] * 21)


# -- over the wire: posted once, in either rendering --------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def make_jobs(engine: Engine, fake: FakeSlack) -> Any:
    settings = load_settings(
        {
            "DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": fake.url,
            "KPIBOT_ADMINS": "U0ADMIN",
        },
        env_file=None,
    )
    return digests_surface.make_jobs(make_web_client(settings), engine, settings)


def digest_post(engine: Engine, key: str) -> Post:
    with transaction(engine) as session:
        return session.exec(
            select(Post)
            .join(Department, col(Department.id) == Post.department_id)
            .where(Department.key == key, Post.kind == PostKind.DIGEST)
        ).one()


def channel_roots(fake: FakeSlack, channel: str) -> list[dict[str, Any]]:
    """What Slack holds in the channel, outside threads."""
    return [message for message in fake.messages(channel) if not message.get("thread_ts")]


@pytest.fixture
def at_slot() -> None:
    now = SLOT + dt.timedelta(seconds=30)
    set_clock(lambda: now)


@pytest.mark.usefixtures("at_slot")
def test_a_workspace_that_takes_the_new_blocks_gets_the_table_and_chart(
    plan: Engine, fake: FakeSlack
) -> None:
    make_jobs(plan, fake).digest("sales", SLOT)
    [root] = channel_roots(fake, "C0SALES")
    kinds = [block["type"] for block in root["blocks"]]
    assert kinds.count("table") == 1 and kinds.count("data_visualization") == 2
    assert root["ts"] == digest_post(plan, "sales").ts
    assert not [call for call in fake.calls("chat.postMessage") if call.failed]


@pytest.mark.usefixtures("at_slot")
@pytest.mark.parametrize(
    ("refused", "error"),
    [("table", "invalid_blocks"), ("data_visualization", "invalid_blocks"), ("table", "invalid_arguments")],
)
def test_a_refused_block_type_posts_the_same_digest_in_todays_rendering_once(
    plan: Engine, fake: FakeSlack, refused: str, error: str
) -> None:
    fake.refuse_blocks(refused, error=error)
    jobs = make_jobs(plan, fake)
    jobs.digest("sales", SLOT)

    [refusal] = [call for call in fake.calls("chat.postMessage") if call.failed]
    assert any(block["type"] == refused for block in refusal.args["blocks"])
    [root] = channel_roots(fake, "C0SALES")
    assert not any(block["type"] in NEW_BLOCK_TYPES for block in root["blocks"])
    post = digest_post(plan, "sales")
    assert (
        post.status is PostStatus.SENT and post.ts == root["ts"] and post.attempts == 1 and post.error is None
    )
    assert root["metadata"] == metadata(f"{post.department_id}:digest:{post.period}:{post.subject}")
    # The same digest: every KPI's line, as the root's text had it in the refused message.
    with transaction(plan) as session:
        names = session.exec(select(Kpi.name_ja).where(Kpi.department_id == post.department_id)).all()
    shown = "\n".join(
        block["text"]["text"]
        for message in fake.messages("C0SALES")
        for block in message.get("blocks") or []
        if block["type"] == "section"
    )
    for name in names:
        [line] = [line for line in shown.split("\n") if f"*{name}*" in line]
        assert line in refusal.args["text"]
    # The chart still follows in the thread.
    assert fake.calls("files.completeUploadExternal")[0].args["thread_ts"] == post.ts

    # Asked again, nothing is sent twice; the next digest of this process goes straight to the fallback.
    posted = len(fake.calls("chat.postMessage"))
    jobs.digest("sales", SLOT)
    assert len(fake.calls("chat.postMessage")) == posted
    jobs.digest("marketing", SLOT)
    marketing = [
        call for call in fake.calls("chat.postMessage")[posted:] if call.args["channel"] == "C0MARKETING"
    ]
    assert marketing and not any(call.failed for call in marketing)
    assert not any(block["type"] in NEW_BLOCK_TYPES for call in marketing for block in call.args["blocks"])


@pytest.mark.usefixtures("at_slot")
def test_a_fallback_whose_answer_is_lost_is_found_in_slack_not_posted_again(
    plan: Engine, fake: FakeSlack
) -> None:
    # The table is refused; the fallback is carried out, but its answer is lost on the way back.
    fake.refuse_blocks("table")
    dropped: list[bytes] = []
    original = fake._dispatch

    def drop_the_fallbacks_answer(raw_path: str, raw: bytes, headers: Any) -> Any:
        if raw_path.endswith("chat.postMessage") and b"raw_text" not in raw and not dropped:
            dropped.append(raw)
            fake.fail("chat.postMessage", DROP_AFTER_SEND, times=1)
        return original(raw_path, raw, headers)

    fake._dispatch = drop_the_fallbacks_answer  # type: ignore[method-assign]
    make_jobs(plan, fake).digest("sales", SLOT)

    [root] = channel_roots(fake, "C0SALES")
    assert not any(block["type"] in NEW_BLOCK_TYPES for block in root["blocks"])
    post = digest_post(plan, "sales")
    assert dropped and fake.calls("conversations.history")  # looked for before sending again
    assert post.status is PostStatus.SENT and post.ts == root["ts"]
