"""`/kpi status [department]` and `/kpi list` over the signed HTTP path, against the fake Slack.

The clock is Monday 2026-11-30 10:00 JST: the periods in progress are 2026-11 and 2026-W49.
"""

from __future__ import annotations

import re
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from bot.database import transaction
from bot.formats import period_label
from bot.models import Department, Kpi, Source
from bot.reports.actuals import record_actual
from handlers.blocks import MAX_BLOCKS, pack, split_text
from handlers.status import interactive as status
from handlers.work import POST_ACK_THREADS
from tests.fakeslack.harness import SlackHarness
from tests.fakeslack.server import Call
from tests.plans import count_kpi

SALES_OWNER = "U0SALES1"  # new_approaches, close_rate
MARKETING_OWNER = "U0MKT1"  # mqls, sql_conversion (derived)
SALES_KPIS = ["revenue", "new_approaches", "close_rate", "pipeline_deals", "average_deal_size"]
MARKETING_KPIS = ["mqls", "sql_conversion", "cost_per_lead", "website_visits"]
DEPARTMENT_KEYS = ["marketing", "inside_sales", "sales", "customer_success"]


def texts(call: Call) -> list[str]:
    """Every piece of text in an answer: its sections and context lines, or its plain text."""
    blocks: list[dict[str, Any]] = call.args.get("blocks") or []
    if not blocks:
        return [call.args["text"]]
    found = []
    for block in blocks:
        if block["type"] == "section":
            found.append(block["text"]["text"])
        elif block["type"] == "context":
            found.extend(element["text"] for element in block["elements"])
    return found


def entry(call: Call, key: str) -> str:
    """The section of a scorecard that shows one KPI."""
    matches = [text for text in texts(call) if f"`{key}`" in text]
    assert len(matches) == 1, (key, texts(call))
    return matches[0]


def listed_keys(call: Call) -> list[str]:
    return re.findall(r"^• `([a-z0-9_]+)`", "\n".join(texts(call)), flags=re.MULTILINE)


def assert_within_block_kit_limits(call: Call) -> None:
    blocks = call.args.get("blocks") or []
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000


def seed(slack: SlackHarness, key: str, period: str, value: int) -> None:
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == key)).one()
        record_actual(
            session, kpi=kpi, period=period, value=Decimal(value), reported_by="U0SEED", source=Source.CSV
        )


# -- /kpi status ---------------------------------------------------------------------------------------


def test_status_shows_value_target_percent_and_status(slack: SlackHarness) -> None:
    seed(slack, "new_approaches", "2026-10", 70)
    slack.command("report new_approaches 85", user_id=SALES_OWNER)

    answer = slack.command("status sales", user_id=SALES_OWNER, channel_id="C0MARKETING")

    assert answer.args["response_type"] == "ephemeral"
    assert_within_block_kit_limits(answer)
    assert "営業部" in texts(answer)[0] and "11月30日(月)時点" in texts(answer)[0]
    approaches = entry(answer, "new_approaches")
    assert "新規アプローチ数" in approaches and "2026年11月" in approaches
    assert "*85件*" in approaches and "目標 100件" in approaches and "達成率 85%" in approaches
    assert "🟡" in approaches and "注意" in approaches
    assert "↑ 前月 70件 から" in approaches  # trend against 2026-10
    close_rate = entry(answer, "close_rate")
    assert "目標 15〜20%" in close_rate and "未報告" in close_rate and "⚪" in close_rate
    # A weekly KPI: the week in progress.
    assert period_label("2026-W49", "ja") in entry(answer, "pipeline_deals")
    for key in SALES_KPIS:
        entry(answer, key)
    assert not any(f"`{key}`" in text for text in texts(answer) for key in MARKETING_KPIS)


def test_status_without_argument_uses_the_channels_department(slack: SlackHarness) -> None:
    # A marketing owner typing in the sales channel sees Sales: the channel decides.
    answer = slack.command("status", user_id=MARKETING_OWNER, channel_id="C0SALES")
    assert "営業部" in texts(answer)[0]
    for key in SALES_KPIS:
        entry(answer, key)


def test_status_outside_a_department_channel_uses_the_users_department(slack: SlackHarness) -> None:
    assert "マーケティング部" in texts(slack.command("status", user_id=MARKETING_OWNER, channel_id="D0DM"))[0]
    assert (
        "インサイドセールス部" in texts(slack.command("status", user_id="U0ISHEAD", channel_id="C0RANDOM"))[0]
    )

    answer = slack.command("status", user_id="U0NOBODY", channel_id="C0RANDOM")
    assert not answer.args.get("blocks")
    assert "/kpi status" in answer.args["text"]
    for key in DEPARTMENT_KEYS:
        assert f"`{key}`" in answer.args["text"]


def test_status_of_a_department_named_in_the_command(slack: SlackHarness) -> None:
    # By key, Japanese or English name, `#key` or channel: tests/unit/test_departments.py.
    answer = slack.command("status <#C0SALES|sales>", user_id=MARKETING_OWNER, channel_id="C0MARKETING")
    assert "営業部" in texts(answer)[0]


def test_english_speaking_user_gets_english(slack: SlackHarness) -> None:
    slack.fake.set_user("U0ENGLISH", locale="en-US")
    slack.command("report new_approaches 85", user_id=SALES_OWNER)

    answer = slack.command("status 営業部", user_id="U0ENGLISH")

    assert "*Sales*: scorecard as of Mon, Nov 30" in texts(answer)[0]
    approaches = entry(answer, "new_approaches")
    assert "New approaches" in approaches
    assert "*85* / target 100 · 85% of target · at risk" in approaches
    assert "not reported" in entry(answer, "close_rate")
    assert not re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", "\n".join(texts(answer)))  # no Japanese left


def test_unknown_department_lists_the_valid_keys(slack: SlackHarness) -> None:
    answer = slack.command("status finance", user_id=SALES_OWNER)
    assert "「finance」" in answer.args["text"]
    for key in DEPARTMENT_KEYS:
        assert f"`{key}`" in answer.args["text"]

    slack.fake.set_user("U0ENGLISH", locale="en-US")
    english = slack.command("status finance", user_id="U0ENGLISH")
    assert "I don't know a department called “finance”" in english.args["text"]
    assert "`customer_success` (Customer Success)" in english.args["text"]


def test_derived_kpi_is_computed_from_its_inputs(slack: SlackHarness) -> None:
    slack.command("report mqls 200", user_id=MARKETING_OWNER)
    before = entry(slack.command("status marketing", user_id=MARKETING_OWNER), "sql_conversion")
    assert "—" in before and "未報告" in before  # sqls not reported yet: nothing to compute

    slack.command("report sqls 50", user_id="U0IS1")  # Inside Sales reports the numerator
    after = entry(slack.command("status marketing", user_id=MARKETING_OWNER), "sql_conversion")

    # 50 / 200 * 100 = 25 % against a 30 % target: 83 % of target, amber.
    assert "*25%*" in after and "目標 30%" in after and "達成率 83%" in after and "注意" in after
    assert "自動計算" in after


def test_lower_is_better_kpi_has_direction_aware_percent_of_target(slack: SlackHarness) -> None:
    owner = "U0MKT2"  # cost_per_lead: target ¥8,000, lower is better, amber above 110 %, red above 130 %
    slack.command("report cost_per_lead 10000", user_id=owner)
    over = entry(slack.command("status marketing", user_id=owner), "cost_per_lead")
    assert "*1万円*" in over and "目標 8,000円" in over
    assert "上限を25%超過" in over and "注意" in over  # 10,000 / 8,000: 125 % of target cost, amber

    slack.command("report cost_per_lead 6000", user_id=owner)
    under = entry(slack.command("status marketing", user_id=owner), "cost_per_lead")
    # 6,000 / 8,000: 75 % of target cost. No previous month, so no trend.
    assert "上限より25%低い" in under and "順調" in under and "↓" not in under


def test_a_large_department_stays_inside_block_kit_limits(slack: SlackHarness) -> None:
    keys = add_department(slack, "big", kpis=300)

    answer = slack.command("status big", user_id=SALES_OWNER)

    assert_within_block_kit_limits(answer)
    shown = "\n".join(texts(answer))
    assert all(f"`{key}`" in shown for key in keys)  # packed several to a section, none dropped


# -- /kpi list -----------------------------------------------------------------------------------------


def test_list_shows_exactly_the_users_kpis_and_whether_they_are_reported(slack: SlackHarness) -> None:
    slack.command("report new_approaches 85", user_id=SALES_OWNER)

    answer = slack.command("list", user_id=SALES_OWNER)

    assert answer.args["response_type"] == "ephemeral"
    assert listed_keys(answer) == ["new_approaches", "close_rate"]
    body = "\n".join(texts(answer))
    assert "*営業部* (`sales`)" in body
    assert (
        "`new_approaches` 新規アプローチ数 · 月次 · 件数 · 目標 100件 · 2026年11月: :white_check_mark: 85件"
        in body
    )
    assert "`close_rate` 成約率 · 月次 · % · 目標 15〜20% · 2026年11月: 未報告" in body


def test_list_for_a_head_an_admin_and_an_owner_of_a_derived_kpi(slack: SlackHarness) -> None:
    assert listed_keys(slack.command("list", user_id="U0MKTHEAD")) == MARKETING_KPIS

    owner = slack.command("list", user_id=MARKETING_OWNER)
    assert listed_keys(owner) == ["mqls", "sql_conversion"]
    assert "`sqls / mqls * 100` から自動計算" in "\n".join(texts(owner))

    slack.fake.set_user("U0ADMIN", locale="en-US", is_admin=True)
    admin = slack.command("list", user_id="U0ADMIN")
    with slack.session() as session:
        every_key = [kpi.key for kpi in session.exec(select(Kpi).order_by(Kpi.department_id, Kpi.position))]
    assert sorted(listed_keys(admin)) == sorted(every_key)
    body = "\n".join(texts(admin))
    assert "*Every KPI* (16)" in body and "*Customer Success* (`customer_success`)" in body
    assert (
        "`website_visits` Website visits · weekly · count · target 5,000 · week 49 (Nov 30–Dec 6): "
        "not reported yet" in body
    )


def test_list_when_the_user_may_report_nothing_says_who_to_ask(slack: SlackHarness) -> None:
    answer = slack.command("list", user_id="U0NOBODY", channel_id="C0SALES")
    assert "<@U0SALESHEAD>" in answer.args["text"] and "/kpi status" in answer.args["text"]

    slack.fake.set_user("U0ENGLISH", locale="en-US")
    english = slack.command("list", user_id="U0ENGLISH", channel_id="D0DM")
    assert "You can't report any KPI yet" in english.args["text"]
    assert "Ask your department head" in english.args["text"]


def test_a_long_list_is_summarised_not_cut(slack: SlackHarness) -> None:
    for number in range(60):
        add_department(slack, f"team{number:02d}", kpis=1)
    slack.fake.set_user("U0ADMIN", locale="en-US", is_admin=True)

    answer = slack.command("list", user_id="U0ADMIN")

    assert_within_block_kit_limits(answer)
    more = [text for text in texts(answer) if text.startswith("…and")]
    assert len(more) == 1, texts(answer)
    kpis, departments = map(int, re.findall(r"(\d+) more", more[0]))
    assert len(listed_keys(answer)) + kpis == 16 + 60
    assert departments >= 1


# -- fitting text into sections ------------------------------------------------------------------------


def test_pack_fills_sections_without_losing_or_overfilling() -> None:
    entries = [f"entry {number:03d} " + "x" * 180 for number in range(300)]

    texts_, left = pack(entries, max_sections=46)
    assert left == 0 and len(texts_) <= 46
    assert all(len(text) <= 2900 for text in texts_)
    assert "\n".join(texts_) == "\n".join(entries)

    few, left = pack(entries, max_sections=5)
    assert len(few) == 5 and left > 0
    assert "\n".join(few) == "\n".join(entries[: 300 - left])

    assert pack(["a", "b"], max_sections=10) == (["a", "b"], 0)  # one KPI per section when there is room


def test_split_text_keeps_every_character() -> None:
    text = "\n".join(["line " * 100] * 20 + ["y" * 7000])
    pieces = split_text(text, limit=2900)
    assert all(len(piece) <= 2900 for piece in pieces)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")


def add_department(slack: SlackHarness, key: str, *, kpis: int) -> list[str]:
    with transaction(slack.engine) as session:
        department = Department(key=key, name_ja=f"{key} 部", name_en=key.title())
        session.add(department)
        session.flush()
        assert department.id is not None
        keys = [f"{key}_kpi_{number:03d}" for number in range(kpis)]
        for position, kpi_key in enumerate(keys):
            session.add(count_kpi(kpi_key, department.id, owner_user_id="U0BIGOWNER", position=position))
    return keys


def test_a_burst_of_status_commands_is_computed_on_the_post_ack_pool(
    slack: SlackHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Six at once: each scorecard is built on one of the worker's post-ack threads, at most
    # POST_ACK_THREADS at a time, not on six listener threads beside the next requests' acks.
    lock, running = threading.Lock(), [0]
    seen: list[tuple[str, int]] = []
    build = status.build_scorecard

    def recorded(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            seen.append((threading.current_thread().name, running[0]))
        time.sleep(0.05)  # long enough for six to overlap if they could
        try:
            return build(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(status, "build_scorecard", recorded)
    before = len(slack.fake.calls("response_url"))
    senders = [
        threading.Thread(target=slack.send, args=("status",), kwargs={"user_id": SALES_OWNER})
        for _ in range(6)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(10)
    answers = slack.fake.wait_for("response_url", count=before + 6)[before:]
    assert len(answers) == 6 and all("新規アプローチ数" in str(a.args) for a in answers)
    assert len(seen) == 6 and all(name.startswith("kpibot-after-ack") for name, _ in seen), seen
    assert max(count for _, count in seen) <= POST_ACK_THREADS
