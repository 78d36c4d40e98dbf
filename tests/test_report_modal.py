"""`/kpi report` alone: the report modal, opened and submitted over signed HTTP against the fake Slack."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from bot.alerts import service as alerts
from bot.clock import set_clock
from bot.models import Actual, Cadence, Department, Kpi, Source
from bot.reports.actuals import Recorded
from handlers import users
from tests.fakeslack.client import Response
from tests.fakeslack.harness import SlackHarness
from tests.plans import count_kpi

SALES1 = "U0SALES1"  # owns new_approaches (count, monthly) and close_rate (%, monthly)
SALES2 = "U0SALES2"  # owns pipeline_deals (count, weekly) and average_deal_size (JPY, monthly)
SALES_HEAD = "U0SALESHEAD"  # heads sales and owns revenue (JPY, monthly)
JST = dt.timezone(dt.timedelta(hours=9))

JsonDict = dict[str, Any]


# -- helpers: what the user sees and does ---------------------------------------------------------


def open_modal(slack: SlackHarness, user_id: str, channel_id: str = "C0SALES") -> JsonDict:
    """Type `/kpi report` and return the view Slack was asked to open (checking the trigger_id)."""
    before = len(slack.fake.calls("views.open"))
    trigger_id = f"trigger-{user_id}-{before}"
    response = slack.send("report", user_id=user_id, channel_id=channel_id, trigger_id=trigger_id)
    assert response.status == 200
    call = slack.fake.wait_for("views.open", count=before + 1)[before]
    assert call.args["trigger_id"] == trigger_id
    view: JsonDict = call.args["view"]
    return view


def pick_period(slack: SlackHarness, view: JsonDict, user_id: str, period: str) -> JsonDict:
    """Choose `period` in the form's picker ("current": the periods in progress) and return the
    form Slack was asked to show instead (views.update on the same view, guarded by its hash)."""
    before = len(slack.fake.calls("views.update"))
    shown = dict(view, id=f"VFORM{before}", hash=f"hash-{before}")
    option = next(o for o in view["blocks"][0]["accessory"]["options"] if o["value"] == period)
    response = slack.client.block_action(
        "report_period", user_id=user_id, block_id="period", selected_option=option, view=shown
    )
    assert response.status == 200
    call = slack.fake.wait_for("views.update", count=before + 1)[before]
    assert call.args["view_id"] == shown["id"] and call.args["hash"] == shown["hash"]
    updated: JsonDict = call.args["view"]
    return updated


def open_in_progress(slack: SlackHarness, user_id: str, channel_id: str = "C0SALES") -> JsonDict:
    """`/kpi report`, then the periods in progress chosen in the picker (the form opens on the
    oldest finished period with something unreported)."""
    return pick_period(slack, open_modal(slack, user_id, channel_id), user_id, "current")


def picked(view: JsonDict) -> str:
    return str(view["blocks"][0]["accessory"]["initial_option"]["value"])


def inputs(view: JsonDict) -> dict[str, JsonDict]:
    return {block["block_id"]: block for block in view["blocks"] if block["type"] == "input"}


def kpi_fields(view: JsonDict) -> list[str]:
    return [block_id.removeprefix("kpi:") for block_id in inputs(view) if block_id.startswith("kpi:")]


def submit(
    slack: SlackHarness,
    view: JsonDict,
    user_id: str,
    typed: dict[str, str] | None = None,
    note: str | None = None,
    view_id: str | None = None,
) -> Response:
    """Press Save. Like Slack, every input is sent: what was typed, else what was prefilled."""
    values: dict[str, dict[str, JsonDict]] = {}
    for block_id, block in inputs(view).items():
        element = block["element"]
        key = block_id.removeprefix("kpi:")
        value = note if block_id == "note" else (typed or {}).get(key, element.get("initial_value"))
        values[block_id] = {element["action_id"]: {"type": "plain_text_input", "value": value}}
    for key, value in (typed or {}).items():  # fields the form did not have (a forged submission)
        values.setdefault(f"kpi:{key}", {"value": {"type": "plain_text_input", "value": value}})
    return slack.client.view_submission(
        "report_modal",
        values,
        user_id=user_id,
        private_metadata=view["private_metadata"],
        view_id=view_id,
    )


def confirmation(slack: SlackHarness, count: int = 1) -> JsonDict:
    call = slack.fake.wait_for("chat.postEphemeral", count=count)[count - 1]
    return call.args


def all_actuals(slack: SlackHarness) -> list[Actual]:
    with slack.session() as session:
        return list(session.exec(select(Actual).order_by(col(Actual.id))).all())


def wait_for_actuals(slack: SlackHarness, count: int, timeout: float = 5.0) -> list[Actual]:
    """Saving happens after the modal closes (after ack), so the database catches up a moment later."""
    deadline = time.monotonic() + timeout
    while len(rows := all_actuals(slack)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return rows


# -- opening --------------------------------------------------------------------------------------


def test_opens_with_the_owners_kpis_prefilled(slack: SlackHarness) -> None:
    slack.command("report new_approaches 85", user_id=SALES1)
    view = open_in_progress(slack, SALES1)
    slack.settle()
    assert len(slack.fake.calls("response_url")) == 1  # the form, not a message, answers the command

    assert view["type"] == "modal" and view["callback_id"] == "report_modal"
    assert view["title"]["text"] == "KPI の報告" and len(view["title"]["text"]) <= 24
    assert view["submit"]["text"] == "保存" and view["close"]["text"] == "キャンセル"
    assert kpi_fields(view) == ["new_approaches", "close_rate"]
    fields = inputs(view)
    approaches = fields["kpi:new_approaches"]
    assert approaches["label"]["text"] == "新規アプローチ数"
    assert approaches["optional"] is True
    assert approaches["element"]["action_id"] == "value"
    assert approaches["element"]["initial_value"] == "85"
    assert "2026年11月" in approaches["hint"]["text"] and "目標 100件" in approaches["hint"]["text"]
    assert "件数" in approaches["hint"]["text"]
    close_rate = fields["kpi:close_rate"]
    assert "initial_value" not in close_rate["element"]
    assert "目標 15〜20%" in close_rate["hint"]["text"]
    assert fields["note"]["element"]["multiline"] is True
    metadata = json.loads(view["private_metadata"])
    assert metadata["channel"] == "C0SALES" and list(metadata["periods"]) == ["2026-11"]

    weekly = open_in_progress(slack, SALES2)
    assert kpi_fields(weekly) == ["pipeline_deals", "average_deal_size"]
    assert "第49週(11/30〜12/6)" in inputs(weekly)["kpi:pipeline_deals"]["hint"]["text"]
    assert sorted(json.loads(weekly["private_metadata"])["periods"]) == ["2026-11", "2026-W49"]


def test_the_form_opens_on_the_oldest_period_with_something_unreported(slack: SlackHarness) -> None:
    # Monday 2026-11-30: September and October are finished and still open, and nothing is in.
    view = open_modal(slack, SALES1)
    assert picked(view) == "2026-09"
    assert list(json.loads(view["private_metadata"])["periods"]) == ["2026-09"]
    assert kpi_fields(view) == ["new_approaches", "close_rate"]
    assert "2026年9月" in inputs(view)["kpi:new_approaches"]["hint"]["text"]
    assert "*2026年9月*" in view["blocks"][0]["text"]["text"]
    options = [option["text"]["text"] for option in view["blocks"][0]["accessory"]["options"]]
    assert options == ["進行中の期間", "2026年9月 ・ 未報告 2件", "2026年10月 ・ 未報告 2件"]

    # September reported (one by the command, one by the form): October is next, then the month in progress.
    slack.command("report new_approaches 80 2026-09", user_id=SALES1)
    submit(slack, view, SALES1, {"close_rate": "14"})
    confirmation(slack)
    assert picked(october := open_modal(slack, SALES1)) == "2026-10"
    assert list(json.loads(october["private_metadata"])["periods"]) == ["2026-10"]
    slack.command("report new_approaches 90 2026-10", user_id=SALES1)
    slack.command("report close_rate 16 2026-10", user_id=SALES1)
    in_progress = open_modal(slack, SALES1)
    assert picked(in_progress) == "current"
    assert list(json.loads(in_progress["private_metadata"])["periods"]) == ["2026-11"]
    assert slack.live_values("close_rate") == {"2026-09": Decimal(14), "2026-10": Decimal(16)}


def test_the_oldest_unreported_period_is_found_across_months_and_weeks(slack: SlackHarness) -> None:
    # U0SALES2 reports a month (average deal size) and a week (deals in pipeline).
    slack.command("report average_deal_size 300万 2026-09", user_id=SALES2)
    slack.command("report average_deal_size 310万 2026-10", user_id=SALES2)
    view = open_modal(slack, SALES2)
    assert picked(view) == "2026-W45"  # the four finished weeks still open start on 2 November
    assert kpi_fields(view) == ["pipeline_deals"]
    assert "第45週(11/2〜11/8)" in inputs(view)["kpi:pipeline_deals"]["hint"]["text"]


def test_changing_the_picker_shows_the_period_picked(slack: SlackHarness) -> None:
    slack.fake.set_user(SALES1, locale="en-US")
    view = open_modal(slack, SALES1)
    assert picked(view) == "2026-09"
    october = pick_period(slack, view, SALES1, "2026-10")
    assert picked(october) == "2026-10"
    assert list(json.loads(october["private_metadata"])["periods"]) == ["2026-10"]
    assert "Oct 2026" in inputs(october)["kpi:close_rate"]["hint"]["text"]
    in_progress = pick_period(slack, october, SALES1, "current")
    assert picked(in_progress) == "current"
    assert "Values for the current period" in in_progress["blocks"][0]["text"]["text"]
    assert "Nov 2026" in inputs(in_progress)["kpi:close_rate"]["hint"]["text"]


def test_a_department_head_sees_every_kpi_of_the_department(slack: SlackHarness) -> None:
    view = open_in_progress(slack, SALES_HEAD)
    assert kpi_fields(view) == [
        "revenue",
        "new_approaches",
        "close_rate",
        "pipeline_deals",
        "average_deal_size",
    ]
    # Marketing's head: sql_conversion is calculated from other KPIs, so it is not in the form.
    assert kpi_fields(open_in_progress(slack, "U0MKTHEAD", "C0MARKETING")) == [
        "mqls",
        "cost_per_lead",
        "website_visits",
    ]


def test_english_speakers_get_an_english_form(slack: SlackHarness) -> None:
    slack.fake.set_user("U0CS1", locale="en-US")
    view = open_in_progress(slack, "U0CS1", "C0CS")
    assert view["title"]["text"] == "Report KPIs"
    assert view["submit"]["text"] == "Save" and view["close"]["text"] == "Cancel"
    assert kpi_fields(view) == ["nps", "retention_rate", "churn_rate"]
    assert inputs(view)["kpi:churn_rate"]["label"]["text"] == "Churn rate"
    assert "target 2%" in inputs(view)["kpi:churn_rate"]["hint"]["text"]


def test_a_user_with_nothing_to_report_gets_an_explanation_not_a_form(slack: SlackHarness) -> None:
    answer = slack.command("report", user_id="U0NOBODY")
    assert answer.args["response_type"] == "ephemeral"
    assert "報告できる KPI がありません" in answer.args["text"]
    assert "担当者" in answer.args["text"] and "部門長" in answer.args["text"]
    slack.settle()
    assert slack.fake.calls("views.open") == []


def test_an_expired_trigger_gets_an_ephemeral_answer(slack: SlackHarness) -> None:
    slack.fake.fail("views.open", "expired_trigger_id")
    answer = slack.command("report", user_id=SALES1)
    assert "expired_trigger_id" in answer.args["text"] and "/kpi report" in answer.args["text"]


def test_an_admin_with_many_kpis_gets_a_form_inside_slacks_limits(slack: SlackHarness) -> None:
    with slack.session() as session:
        sales = session.exec(select(Department).where(Department.key == "sales")).one()
        assert sales.id is not None
        for n in range(150):
            session.add(extra_kpi(sales.id, n))
        session.commit()
    slack.fake.set_user("U0ADMIN", is_admin=True)

    view = open_in_progress(slack, "U0ADMIN")

    assert len(view["blocks"]) <= 100
    assert len(view["title"]["text"]) <= 24
    assert len(view["private_metadata"]) <= 3000
    shown = kpi_fields(view)
    reportable = 15 + 150  # every plan KPI but the derived one, and the extra ones
    assert len(shown) == 97
    notice = next(block for block in view["blocks"] if block["type"] == "context")
    assert f"あと{reportable - len(shown)}件" in notice["elements"][0]["text"]
    assert "/kpi report <KPI> <値>" in notice["elements"][0]["text"]

    # The last field shown still saves, into the period recorded for it.
    last = shown[-1]
    response = submit(slack, view, "U0ADMIN", {last: "7"})
    assert response.status == 200 and response.body == ""
    assert wait_for_actuals(slack, 1) and slack.live_values(last) == {"2026-W49": Decimal(7)}


def extra_kpi(department_id: int, n: int) -> Kpi:
    return count_kpi(
        f"extra_{n:03d}_" + "x" * 54,  # 64 characters: the longest key the plan allows
        department_id,
        name_ja=f"追加 KPI {n}",
        name_en=f"Extra KPI {n}",
        cadence=Cadence.WEEKLY,
        position=100 + n,
    )


# -- submitting -----------------------------------------------------------------------------------


def test_a_submission_saves_every_value_in_one_go_and_confirms(slack: SlackHarness) -> None:
    view = open_in_progress(slack, SALES_HEAD)
    response = submit(
        slack,
        view,
        SALES_HEAD,
        {"new_approaches": "85", "close_rate": "16.5%", "pipeline_deals": "1.2k", "average_deal_size": ""},
        note="CRM の取り込みが遅れた",
    )
    assert response.status == 200 and response.body == ""  # ack(): the modal closes

    said = confirmation(slack)
    assert said["channel"] == "C0SALES" and said["user"] == SALES_HEAD
    text = said["text"]
    assert "• 2026年11月の *新規アプローチ数*: *85件*" in text
    assert "目標 100件" in text and "達成率 85%" in text and "注意" in text
    assert "• 2026年11月の *成約率*: *16.5%*" in text and "目標 15〜20%" in text and "順調" in text
    assert "• 第49週(11/30〜12/6)の *パイプライン商談数*: *1,200件*" in text
    assert "平均受注単価" not in text  # left empty: left as it is
    assert "> CRM の取り込みが遅れた" in text

    rows = wait_for_actuals(slack, 3)
    assert {(row.period, Decimal(row.value)) for row in rows} == {
        ("2026-11", Decimal(85)),
        ("2026-11", Decimal("16.5")),
        ("2026-W49", Decimal(1200)),
    }
    assert all(row.source is Source.MODAL for row in rows)
    assert all(row.note == "CRM の取り込みが遅れた" and row.reported_by == SALES_HEAD for row in rows)


def test_english_confirmation(slack: SlackHarness) -> None:
    slack.fake.set_user(SALES1, locale="en-US")
    submit(slack, open_in_progress(slack, SALES1), SALES1, {"new_approaches": "120"})
    text = confirmation(slack)["text"]
    assert "Saved from the report form" in text
    assert "• *New approaches* for Nov 2026: *120* · target 100 · 120% of target · 🟢 on track" in text


def test_a_correction_supersedes_and_keeps_the_history(slack: SlackHarness) -> None:
    slack.command("report new_approaches 85", user_id=SALES1)
    slack.command("report close_rate 15", user_id=SALES1)
    view = open_in_progress(slack, SALES1)
    fields = inputs(view)
    assert fields["kpi:new_approaches"]["element"]["initial_value"] == "85"
    assert fields["kpi:close_rate"]["element"]["initial_value"] == "15"

    submit(slack, view, SALES1, {"new_approaches": "90"})  # close_rate sent back as prefilled

    text = confirmation(slack)["text"]
    assert "• :pencil2: 修正 2026年11月の *新規アプローチ数*: 85件 → *90件*" in text
    assert "修正前の値も履歴に残ります" in text
    assert "報告済みの1件は変更ありません" in text
    assert slack.live_values("new_approaches") == {"2026-11": Decimal(90)}
    with slack.session() as session:
        approaches = session.exec(select(Kpi).where(Kpi.key == "new_approaches")).one()
        history = session.exec(
            select(Actual).where(Actual.kpi_id == approaches.id).order_by(col(Actual.id))
        ).all()
        assert [Decimal(row.value) for row in history] == [Decimal(85), Decimal(90)]
        assert history[0].superseded_by_id == history[1].id and history[1].source is Source.MODAL
    # The unchanged value was not stored again.
    assert len(all_actuals(slack)) == 3


@pytest.mark.parametrize(
    ("user", "typed", "field", "fragments"),
    [
        (SALES1, {"new_approaches": "eighty", "close_rate": "15"}, "new_approaches", ["eighty", "数値"]),
        (SALES1, {"new_approaches": "-5", "close_rate": "15"}, "new_approaches", ["-5", "マイナス"]),
        (SALES1, {"new_approaches": "8.5", "close_rate": "15"}, "new_approaches", ["8.5", "整数"]),
        (SALES1, {"new_approaches": "85", "close_rate": "150%"}, "close_rate", ["150%", "100%"]),
        (SALES1, {"new_approaches": "15%", "close_rate": "15"}, "new_approaches", ["15%", "単位"]),
        (
            SALES2,
            {"pipeline_deals": "40", "average_deal_size": "$12k"},
            "average_deal_size",
            ["$12k", "単位"],
        ),
    ],
)
def test_an_invalid_value_gets_a_field_error_and_nothing_is_saved(
    slack: SlackHarness, user: str, typed: dict[str, str], field: str, fragments: list[str]
) -> None:
    response = submit(slack, open_in_progress(slack, user), user, typed)
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert list(answer["errors"]) == [f"kpi:{field}"]
    for fragment in fragments:
        assert fragment in answer["errors"][f"kpi:{field}"]
    slack.settle()
    assert all_actuals(slack) == []  # not even the valid field
    assert slack.fake.calls("chat.postEphemeral") == []


def test_every_problem_is_shown_at_once_in_the_users_language(slack: SlackHarness) -> None:
    slack.fake.set_user(SALES_HEAD, locale="en-US")
    view = open_in_progress(slack, SALES_HEAD)
    typed = {"new_approaches": "1,20", "close_rate": "150", "pipeline_deals": "40"}
    answer = submit(slack, view, SALES_HEAD, typed, note="x" * 2001).json()
    assert answer["response_action"] == "errors"
    errors = answer["errors"]
    assert set(errors) == {"kpi:new_approaches", "kpi:close_rate", "note"}
    assert "thousands separator" in errors["kpi:new_approaches"]
    assert "over 100%" in errors["kpi:close_rate"]
    assert "2001" in errors["note"] and "2000" in errors["note"]
    assert all_actuals(slack) == []


def test_a_refusal_is_in_the_forms_language_without_asking_slack_before_the_ack(
    slack: SlackHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing cached (as in another worker, or an hour later): any lookup would be a users.info call.
    monkeypatch.setattr(users, "TTL_SECONDS", 0)
    slack.fake.set_user(SALES1, locale="en-US")
    view = open_in_progress(slack, SALES1)
    slack.fake.set_user(SALES1, locale="ja-JP")  # changed since: the form is still in English
    asked = len(slack.fake.calls("users.info"))
    answer = submit(slack, view, SALES1, {"new_approaches": "1,20"}).json()
    assert len(slack.fake.calls("users.info")) == asked  # the refusal is the ack: no lookup first
    assert answer["response_action"] == "errors"
    assert "thousands separator" in answer["errors"]["kpi:new_approaches"]
    assert all_actuals(slack) == []


def test_permission_is_checked_again_at_submission(slack: SlackHarness) -> None:
    view = open_in_progress(slack, SALES1)
    # A forged or stale form: a KPI of another department, and a derived one.
    answer = submit(
        slack, view, SALES1, {"new_approaches": "85", "mqls": "200", "sql_conversion": "30"}
    ).json()
    assert answer["response_action"] == "errors"
    assert set(answer["errors"]) == {"kpi:mqls", "kpi:sql_conversion"}
    assert "U0MKT1" in answer["errors"]["kpi:mqls"] and "U0MKTHEAD" in answer["errors"]["kpi:mqls"]
    assert "sqls / mqls * 100" in answer["errors"]["kpi:sql_conversion"]
    assert all_actuals(slack) == []


def test_a_retried_submission_saves_once(slack: SlackHarness) -> None:
    view = open_in_progress(slack, SALES1)
    typed = {"new_approaches": "85", "close_rate": "15"}
    first = submit(slack, view, SALES1, typed, view_id="V0RETRIED")
    retry = submit(slack, view, SALES1, typed, view_id="V0RETRIED")
    assert first.status == retry.status == 200
    confirmation(slack)
    slack.settle()
    assert len(all_actuals(slack)) == 2
    assert len(slack.fake.calls("chat.postEphemeral")) == 1


def test_a_form_opened_before_midnight_saves_into_the_period_it_showed(slack: SlackHarness) -> None:
    set_clock(lambda: dt.datetime(2026, 11, 30, 23, 59, 50, tzinfo=JST).astimezone(dt.UTC))
    view = open_in_progress(slack, SALES2)
    set_clock(lambda: dt.datetime(2026, 12, 1, 0, 0, 10, tzinfo=JST).astimezone(dt.UTC))
    submit(slack, view, SALES2, {"average_deal_size": "300万", "pipeline_deals": "40"})
    assert "• 2026年11月の *平均受注単価*: *300万円*" in confirmation(slack)["text"]
    assert slack.live_values("average_deal_size") == {"2026-11": Decimal(3_000_000)}
    assert slack.live_values("pipeline_deals") == {"2026-W49": Decimal(40)}


def test_an_unavailable_database_is_an_error_in_the_form(slack: SlackHarness) -> None:
    view = open_in_progress(slack, SALES1)

    def down(*args: Any) -> None:
        raise OperationalError("SELECT ...", {}, Exception("server closed the connection"))

    sa.event.listen(slack.engine, "before_cursor_execute", down)
    try:
        answer = submit(slack, view, SALES1, {"close_rate": "15"}).json()
    finally:
        sa.event.remove(slack.engine, "before_cursor_execute", down)
    assert answer["response_action"] == "errors"
    assert list(answer["errors"]) == ["kpi:new_approaches"]  # the first field
    assert "データベースに接続できない" in answer["errors"]["kpi:new_approaches"]
    assert all_actuals(slack) == []


def test_a_failure_while_saving_writes_nothing(slack: SlackHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def breaks_on_the_second(session: Session, kpi: Kpi, recorded: Recorded) -> None:
        seen.append(kpi.key)
        if len(seen) == 2:
            raise OperationalError("INSERT INTO alert ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(alerts, "check_after_report", breaks_on_the_second)
    submit(slack, open_in_progress(slack, SALES1), SALES1, {"new_approaches": "85", "close_rate": "15"})
    assert "データベースに接続できない" in confirmation(slack)["text"]
    assert seen == ["new_approaches", "close_rate"]
    assert all_actuals(slack) == []  # the first value was rolled back with the second


def test_a_failed_confirmation_keeps_the_saved_values(
    slack: SlackHarness, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fake.fail("chat.postEphemeral", "channel_not_found")
    view = open_in_progress(slack, SALES1)
    with caplog.at_level(logging.ERROR):
        submit(slack, view, SALES1, {"new_approaches": "85"})
        slack.fake.wait_for("chat.postEphemeral")
        deadline = time.monotonic() + 5
        while "channel_not_found" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "ephemeral answer to U0SALES1 in C0SALES failed: channel_not_found" in caplog.text
    assert slack.live_values("new_approaches") == {"2026-11": Decimal(85)}
