"""The plan changed in Slack, over signed HTTP against the fake Slack, on both databases:
`/kpi target` (value, range, period, from period; text, negative, reversed; a past period with
actuals), who may change what, the audit trail, alerts following, the KPI form with two editors
at once, and a department's channel and head."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlmodel import col, select

from bot.alerts import service as alerts
from bot.models import EVERY_PERIOD, Alert, AlertStatus, AuditEvent, Department, Kpi, Target
from bot.scorecard import build_scorecard
from tests.fakeslack.harness import SlackHarness

SALES1 = "U0SALES1"  # owns new_approaches (count, monthly, higher is better)
SALES_HEAD = "U0SALESHEAD"
MKT_HEAD = "U0MKTHEAD"
ADMIN = "U0ADMIN"
JsonDict = dict[str, Any]
PLANNED = {EVERY_PERIOD: Decimal(100), "2026-12": Decimal(80)}  # new_approaches in the example plan


def targets(slack: SlackHarness, key: str) -> dict[str, Any]:
    with slack.session() as session:
        rows = session.exec(select(Target).join(Kpi).where(Kpi.key == key)).all()
        return {
            row.period: Decimal(row.value)
            if row.value is not None
            else (Decimal(row.min_value), Decimal(row.max_value))
            for row in rows
        }


def audit(slack: SlackHarness) -> list[AuditEvent]:
    with slack.session() as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.source == "slack").order_by(col(AuditEvent.id)))
        )


def test_head_sets_a_target_from_the_period_in_progress(slack: SlackHarness) -> None:
    assert targets(slack, "new_approaches") == PLANNED
    slack.command("report new_approaches 80 2026-10", user_id=SALES1)  # October was scored against 100

    answer = slack.command("target new_approaches 120", user_id=SALES_HEAD).args["text"]
    assert "新規アプローチ数" in answer and "100" in answer and "120" in answer and "2026年11月以降" in answer
    # October keeps what it was scored against; December's own target gives way to the new one.
    assert targets(slack, "new_approaches") == {EVERY_PERIOD: Decimal(120), "2026-10": Decimal(100)}
    [event] = audit(slack)
    assert event.actor == SALES_HEAD and event.action == "target.set" and event.entity_id == "new_approaches"
    assert event.details["before"] == "100" and event.details["after"] == "120"


def test_a_range_for_one_period_in_english(slack: SlackHarness) -> None:
    slack.fake.set_user(SALES_HEAD, locale="en-US")
    answer = slack.command("target close_rate 18-22 2026-12", user_id=SALES_HEAD).args["text"]
    assert "for Dec 2026" in answer and "18" in answer and "22" in answer
    assert targets(slack, "close_rate")["2026-12"] == (Decimal(18), Decimal(22))


def test_a_past_period_with_actuals_is_allowed_and_says_the_scorecard_is_recomputed(
    slack: SlackHarness,
) -> None:
    slack.command("report new_approaches 80 2026-10", user_id=SALES1)
    answer = slack.command("target new_approaches 80 2026-10", user_id=SALES_HEAD).args["text"]
    assert "2026年10月" in answer and "再計算" in answer
    assert targets(slack, "new_approaches")["2026-10"] == Decimal(80)


def test_a_lowered_target_resolves_the_alert(slack: SlackHarness) -> None:
    slack.command("report new_approaches 50 2026-10", user_id=SALES1)  # 50 % of 100: red
    slack.settle()
    with slack.session() as session:
        raised = session.exec(
            select(Alert).join(Kpi).where(Kpi.key == "new_approaches", Alert.period == "2026-10")
        ).one()
        assert raised.status is AlertStatus.OPEN
    slack.command("target new_approaches 50 2026-10", user_id=SALES_HEAD)
    slack.settle()
    with slack.session() as session:
        after = session.exec(
            select(Alert).join(Kpi).where(Kpi.key == "new_approaches", Alert.period == "2026-10")
        ).one()
        assert after.status is AlertStatus.RESOLVED and after.posted_status is AlertStatus.RESOLVED


def test_bad_targets_are_refused_and_nothing_is_written(slack: SlackHarness) -> None:
    for text, words in (
        ("target new_approaches lots", "目標として読めません"),
        ("target new_approaches -5", "マイナス"),
        ("target close_rate 20-15", "順序が逆"),
        ("target", "KPI と新しい目標"),
        ("target new_aproaches 10", "new_approaches"),
    ):
        answer = slack.command(text, user_id=SALES_HEAD).args
        assert words in answer["text"], (text, answer["text"])
        assert answer["response_type"] == "ephemeral"
    assert targets(slack, "new_approaches") == PLANNED
    assert audit(slack) == []


def test_a_head_cannot_change_another_departments_kpi(slack: SlackHarness) -> None:
    answer = slack.command("target new_approaches 10", user_id=MKT_HEAD).args["text"]
    assert "営業部" in answer and "何も変更していません" in answer
    answer = slack.command("target new_approaches 10", user_id=SALES1).args["text"]  # an owner is not a head
    assert "何も変更していません" in answer
    assert targets(slack, "new_approaches") == PLANNED


def test_an_admin_changes_any_department(slack: SlackHarness) -> None:
    slack.fake.set_user(ADMIN, is_admin=True)
    slack.command("target mqls 130 from 2027-01", user_id=ADMIN)
    found = targets(slack, "mqls")
    assert found[EVERY_PERIOD] == Decimal(130)
    assert audit(slack)[0].details["period"] == "2027-01"


# -- the KPI form ---------------------------------------------------------------------------------


def open_form(slack: SlackHarness, user_id: str, key: str) -> JsonDict:
    before = len(slack.fake.calls("views.open"))
    slack.send(f"edit {key}", user_id=user_id, trigger_id=f"t-{user_id}-{before}")
    view: JsonDict = slack.fake.wait_for("views.open", count=before + 1)[before].args["view"]
    return view


def submit_form(slack: SlackHarness, view: JsonDict, user_id: str, **typed: str) -> Any:
    values: dict[str, dict[str, JsonDict]] = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        element, name = block["element"], block["block_id"]
        if element["type"] == "users_select":
            values[name] = {
                "value": {
                    "type": "users_select",
                    "selected_user": typed.get(name, element.get("initial_user")),
                }
            }
        else:
            values[name] = {
                "value": {"type": "plain_text_input", "value": typed.get(name, element.get("initial_value"))}
            }
    return slack.client.view_submission(
        "kpi_edit_modal", values, user_id=user_id, private_metadata=view["private_metadata"]
    )


def test_the_form_changes_owner_and_thresholds_with_before_and_after(slack: SlackHarness) -> None:
    view = open_form(slack, SALES_HEAD, "new_approaches")
    assert view["callback_id"] == "kpi_edit_modal" and len(view["title"]["text"]) <= 24
    response = submit_form(slack, view, SALES_HEAD, owner_user_id="U0SALES2", amber_pct="85", red_pct="60")
    assert response.status == 200 and response.body == ""
    answer = slack.fake.wait_for("chat.postEphemeral")[0].args["text"]
    assert "<@U0SALES1> → *<@U0SALES2>*" in answer and "90 → *85*" in answer
    with slack.session() as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "new_approaches")).one()
        assert kpi.owner_user_id == "U0SALES2" and Decimal(kpi.amber_pct) == 85 and Decimal(kpi.red_pct) == 60
    assert audit(slack)[0].action == "kpi.update"


def test_thresholds_that_make_no_sense_are_shown_in_the_form(slack: SlackHarness) -> None:
    view = open_form(slack, SALES_HEAD, "new_approaches")
    response = submit_form(slack, view, SALES_HEAD, amber_pct="60", red_pct="80")
    assert response.status == 200
    errors = response.json()["errors"]
    assert "red_pct" in errors
    assert audit(slack) == []


def test_two_editors_at_once_one_wins_the_other_is_told(slack: SlackHarness) -> None:
    slack.fake.set_user(ADMIN, is_admin=True)
    first = open_form(slack, SALES_HEAD, "new_approaches")
    second = open_form(slack, ADMIN, "new_approaches")
    assert submit_form(slack, first, SALES_HEAD, name_en="New approaches (first)").body == ""
    slack.settle()
    response = submit_form(slack, second, ADMIN, name_en="New approaches (second)")
    errors = response.json()["errors"]
    assert "<@U0SALESHEAD>" in errors["name_ja"]
    with slack.session() as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "new_approaches")).one()
        assert kpi.name_en == "New approaches (first)"
    assert [event.actor for event in audit(slack)] == [SALES_HEAD]


def test_someone_else_cannot_open_the_form(slack: SlackHarness) -> None:
    answer = slack.command("edit new_approaches", user_id=MKT_HEAD).args["text"]
    assert "何も変更していません" in answer
    assert slack.fake.calls("views.open") == []


# -- departments ----------------------------------------------------------------------------------


def test_an_admin_moves_a_department_to_another_channel_and_head(slack: SlackHarness) -> None:
    slack.fake.set_user(ADMIN, is_admin=True)
    answer = slack.command("department sales channel <#C0NEWSALES|new-sales>", user_id=ADMIN).args["text"]
    assert "<#C0SALES> → *<#C0NEWSALES>*" in answer
    answer = slack.command("department sales head <@U0NEWHEAD>", user_id=ADMIN).args["text"]
    assert "<@U0SALESHEAD> → *<@U0NEWHEAD>*" in answer
    with slack.session() as session:
        sales = session.exec(select(Department).where(Department.key == "sales")).one()
        assert sales.channel_id == "C0NEWSALES" and sales.head_user_id == "U0NEWHEAD"
    assert [event.action for event in audit(slack)] == ["department.channel", "department.head"]


def test_a_head_cannot_change_a_departments_channel(slack: SlackHarness) -> None:
    answer = slack.command("department sales channel <#C0X|x>", user_id=SALES_HEAD).args["text"]
    assert "管理者だけ" in answer
    assert audit(slack) == []


def test_alert_view_of_the_unchanged_plan_is_untouched(slack: SlackHarness) -> None:
    # A refused change moves no alert (nothing half-written).
    slack.command("report new_approaches 50 2026-10", user_id=SALES1)
    slack.settle()
    slack.command("target new_approaches -1 2026-10", user_id=SALES_HEAD)
    slack.settle()
    with slack.session() as session:
        views = alerts.load(session, col(Alert.period) == "2026-10")
        assert [view.alert.status for view in views if view.kpi.key == "new_approaches"] == [AlertStatus.OPEN]
    assert targets(slack, "new_approaches") == PLANNED


# -- retiring a KPI -------------------------------------------------------------------------------


def test_a_retired_kpi_keeps_its_history_and_refuses_reports(slack: SlackHarness) -> None:
    slack.command("report new_approaches 50 2026-10", user_id=SALES1)  # red: an open alert
    slack.settle()
    answer = slack.command("retire new_approaches", user_id=SALES_HEAD).args["text"]
    assert "廃止しました" in answer and "履歴は残ります" in answer and "1件" in answer
    slack.settle()

    refused = slack.command("report new_approaches 90", user_id=SALES1).args["text"]
    assert "廃止" in refused and "何も保存していません" in refused
    assert slack.live_values("new_approaches") == {"2026-10": Decimal(50)}  # history kept
    with slack.session() as session:
        sales = session.exec(select(Department).where(Department.key == "sales")).one()
        card = build_scorecard(session, sales, dt.date(2026, 11, 30))
        assert "new_approaches" not in [row.kpi.key for row in card.rows]
        alert = session.exec(select(Alert).join(Kpi).where(Kpi.key == "new_approaches")).one()
        assert alert.status is AlertStatus.RESOLVED
    assert [event.action for event in audit(slack)] == ["kpi.retire"]


def test_a_kpi_in_another_kpis_formula_is_not_retired(slack: SlackHarness) -> None:
    slack.fake.set_user(ADMIN, is_admin=True)
    answer = slack.command("retire sqls", user_id=ADMIN).args["text"]
    assert "sql_conversion" in answer and "何も変更していません" in answer
    assert audit(slack) == []


# -- adding a KPI ---------------------------------------------------------------------------------


def submit_add(slack: SlackHarness, view: JsonDict, user_id: str, **typed: str) -> Any:
    values: dict[str, dict[str, JsonDict]] = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        element, name = block["element"], block["block_id"]
        if element["type"] == "static_select":
            chosen = typed.get(name, element["initial_option"]["value"])
            values[name] = {"value": {"type": "static_select", "selected_option": {"value": chosen}}}
        elif element["type"] == "users_select":
            values[name] = {"value": {"type": "users_select", "selected_user": typed.get(name)}}
        else:
            values[name] = {"value": {"type": "plain_text_input", "value": typed.get(name)}}
    return slack.client.view_submission(
        "kpi_add_modal", values, user_id=user_id, private_metadata=view["private_metadata"]
    )


def test_a_head_adds_a_kpi_to_their_department(slack: SlackHarness) -> None:
    slack.send("add", user_id=SALES_HEAD, channel_id="C0SALES", trigger_id="t-add")
    view = slack.fake.wait_for("views.open")[0].args["view"]
    assert view["callback_id"] == "kpi_add_modal" and "営業部" in view["blocks"][0]["text"]["text"]

    bad = submit_add(slack, view, SALES_HEAD, key="New Approaches", name_ja="デモ", name_en="", target="-3")
    errors = bad.json()["errors"]
    assert set(errors) == {"key", "name_en", "target"}

    taken = submit_add(slack, view, SALES_HEAD, key="revenue", name_ja="デモ", name_en="Demos")
    assert "revenue" in taken.json()["errors"]["key"]

    done = submit_add(
        slack,
        view,
        SALES_HEAD,
        key="demo_requests",
        name_ja="デモ依頼数",
        name_en="Demo requests",
        owner_user_id=SALES1,
        target="12",
    )
    assert done.status == 200 and done.body == ""
    answer = slack.fake.wait_for("chat.postEphemeral")[0].args["text"]
    assert "デモ依頼数" in answer and "`/kpi report demo_requests <値>`" in answer
    assert targets(slack, "demo_requests") == {EVERY_PERIOD: Decimal(12)}
    reported = slack.command("report demo_requests 3", user_id=SALES1).args["text"]
    assert "3" in reported and "デモ依頼数" in reported
    assert [event.action for event in audit(slack)] == ["kpi.add"]


def test_adding_to_another_department_is_refused(slack: SlackHarness) -> None:
    answer = slack.command("add marketing", user_id=SALES_HEAD).args["text"]
    assert "マーケティング部" in answer and "何も変更していません" in answer
    assert slack.fake.calls("views.open") == []


# -- targets period by period (the form) ------------------------------------------------------------


def test_the_targets_form_sets_periods_its_own_targets(slack: SlackHarness) -> None:
    slack.command("report new_approaches 90 2026-10", user_id=SALES1)
    slack.send("targets new_approaches", user_id=SALES_HEAD, trigger_id="t-targets")
    view = slack.fake.wait_for("views.open")[0].args["view"]
    assert view["callback_id"] == "kpi_targets_modal" and len(view["blocks"]) <= 100
    fields = {block["block_id"]: block for block in view["blocks"] if block["type"] == "input"}
    assert list(fields)[:3] == ["period:2026-09", "period:2026-10", "period:2026-11"]
    assert fields["period:2026-12"]["element"]["initial_value"] == "80"  # the plan's December target

    def submit(**typed: str) -> Any:
        values = {
            block_id: {
                "value": {
                    "type": "plain_text_input",
                    "value": typed.get(block_id.removeprefix("period:").replace("-", "_")),
                }
            }
            for block_id in fields
        }
        return slack.client.view_submission(
            "kpi_targets_modal", values, user_id=SALES_HEAD, private_metadata=view["private_metadata"]
        )

    refused = submit(**{"2027_01": "20-10", "2027_02": "many"})
    assert set(refused.json()["errors"]) == {"period:2027-01", "period:2027-02"}
    assert audit(slack) == []

    assert submit(**{"2026_10": "90", "2027_01": "110-130"}).body == ""
    answer = slack.fake.wait_for("chat.postEphemeral")[0].args["text"]
    assert "2026年10月" in answer and "再計算" in answer and "110" in answer
    found = targets(slack, "new_approaches")
    assert found["2026-10"] == Decimal(90) and found["2027-01"] == (Decimal(110), Decimal(130))
    assert [event.details["period"] for event in audit(slack)] == ["2026-10", "2027-01"]
