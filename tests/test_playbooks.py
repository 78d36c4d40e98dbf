"""Playbooks: countermeasures agreed in advance in the plan (`playbook:` on a KPI). The alert offers
them; Adopt logs one in one click (owner and due date prefilled), Edit first opens the countermeasure
form prefilled; twice or by a non-member: one countermeasure, or refused. The review agenda names the
alerts without a countermeasure. Over signed HTTP against tests.fakeslack, on SQLite and PostgreSQL.

The example plan's clock is Monday 2026-11-30 10:00 JST.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from bot.database import transaction
from bot.models import Alert, Countermeasure, CountermeasureStatus, Department, Kpi, Source
from bot.plan.service import load_plan
from bot.plan.specs import PlanInvalid
from bot.reports.actuals import record_actual
from handlers.alerts.interactive import scan_and_post
from handlers.alerts.messages import ACTION_ADOPT, ACTION_ADOPT_EDIT
from handlers.client import make_web_client
from tests.fakeslack.harness import SlackHarness
from tests.fakeslack.server import Call
from tests.plans import import_plan

MARKETING_OWNER = "U0MKT2"  # owns cost_per_lead
PLAYBOOK_OWNER = "U0MKT1"
TODAY = dt.date(2026, 11, 30)

PLAYBOOK_PLAN = """\
kpis:
  - key: cost_per_lead
    department: marketing
    name: {ja: リード獲得単価, en: Cost per lead}
    owner: U0MKT2
    unit: JPY
    direction: lower
    cadence: monthly
    aggregation: average
    thresholds: {amber: 110, red: 130}
    target: 8000
    playbook:
      - text: 低効率チャネルの出稿を止め、予算をウェビナーへ移す
        owner: U0MKT1
        due_days: 10
      - 入札単価を 2 割下げる
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def alerted(slack: SlackHarness, tmp_path: Path) -> Alert:
    """Cost per lead with two playbooks, amber for October, its alert posted."""
    import_plan(slack.engine, write(tmp_path, PLAYBOOK_PLAN))
    return october_alert(slack)


def october_alert(slack: SlackHarness) -> Alert:
    """Cost per lead amber for October (9,200 JPY against 8,000), its alert posted by the scan."""
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "cost_per_lead")).one()
        record_actual(
            session, kpi=kpi, period="2026-10", value=Decimal(9200), reported_by="U0TEST", source=Source.CSV
        )
    scan_and_post(slack.engine, make_web_client(slack.settings))
    with slack.session() as session:
        alert = session.exec(
            select(Alert).join(Kpi).where(Kpi.key == "cost_per_lead", Alert.period == "2026-10")  # type: ignore[arg-type]
        ).one()
    assert alert.thread_ts is not None
    return alert


def root_of(slack: SlackHarness, alert: Alert) -> Call:
    [root] = [
        call
        for call in slack.fake.calls("chat.postMessage")
        if not call.failed and "thread_ts" not in call.args and "リード獲得単価" in str(call.args)
    ]
    return root


def buttons(call: Call) -> list[tuple[str, str]]:
    return [
        (element["action_id"], element["value"])
        for block in call.args.get("blocks") or []
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def countermeasures(slack: SlackHarness) -> list[Countermeasure]:
    with slack.session() as session:
        return list(session.exec(select(Countermeasure).order_by(col(Countermeasure.id))).all())


def click(slack: SlackHarness, action: str, value: str, user_id: str, alert: Alert) -> None:
    response = slack.client.block_action(
        action, value=value, user_id=user_id, channel_id="C0MARKETING", message_ts=alert.thread_ts
    )
    assert response.status == 200
    slack.settle()


def ephemeral(slack: SlackHarness) -> list[str]:
    return [str(call.args.get("text", "")) for call in slack.fake.calls("response_url")]


# -- the plan ----------------------------------------------------------------------------------------


def test_playbooks_are_read_from_the_plan(slack: SlackHarness, tmp_path: Path) -> None:
    import_plan(slack.engine, write(tmp_path, PLAYBOOK_PLAN))
    with slack.session() as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "cost_per_lead")).one()
    assert kpi.playbooks == [
        {
            "text": "低効率チャネルの出稿を止め、予算をウェビナーへ移す",
            "owner": PLAYBOOK_OWNER,
            "due_days": 10,
        },
        {"text": "入札単価を 2 割下げる", "owner": None, "due_days": 14},
    ]


@pytest.mark.parametrize(
    ("playbook", "code"),
    [
        ("{owner: U0MKT1, due_days: 5}", "playbook_no_text"),
        ('""', "playbook_no_text"),
        ("[{text: '  '}]", "playbook_no_text"),
        ("{text: 予算を移す, when: red}", "playbook_shape"),
        # The text per language: an unknown language, an empty text.
        ("{text: {ja: 予算を移す, fr: Déplacer le budget}}", "playbook_unknown_locale"),
        ("{text: {ja: '', en: Move the budget}}", "playbook_no_text"),
        ("{text: {}}", "playbook_no_text"),
    ],
)
def test_a_playbook_without_text_or_in_an_unknown_language_is_refused_with_its_line(
    slack: SlackHarness, tmp_path: Path, playbook: str, code: str
) -> None:
    text = PLAYBOOK_PLAN.split("    playbook:")[0] + f"    playbook: {playbook}\n"
    with slack.session() as session, pytest.raises(PlanInvalid) as refused:
        load_plan(write(tmp_path, text), session)
    [problem] = refused.value.problems
    assert (problem.where, problem.field, problem.code) == ("line 12", "playbook", code)
    assert problem.describe("ja") and problem.describe("en")
    if code == "playbook_unknown_locale":
        assert problem.describe("en") == (
            "line 12, `playbook`: a playbook's text is given in an unknown language fr;"
            " use ja, en (e.g. {ja: …, en: …})"
        )


# -- the alert offers them ---------------------------------------------------------------------------


def test_the_alert_offers_its_playbooks(slack: SlackHarness, alerted: Alert) -> None:
    root = root_of(slack, alerted)
    text = str(root.args["blocks"])
    assert "事前に合意した対策" in text
    assert "低効率チャネルの出稿を止め、予算をウェビナーへ移す" in text and f"<@{PLAYBOOK_OWNER}>" in text
    assert "期限 10日後" in text and "期限 14日後" in text
    offered = [b for b in buttons(root) if b[0] in (ACTION_ADOPT, ACTION_ADOPT_EDIT)]
    assert offered == [
        (ACTION_ADOPT, f"{alerted.id}:0"),
        (ACTION_ADOPT_EDIT, f"{alerted.id}:0"),
        (ACTION_ADOPT, f"{alerted.id}:1"),
        (ACTION_ADOPT_EDIT, f"{alerted.id}:1"),
    ]


# -- Adopt -------------------------------------------------------------------------------------------


def test_adopt_logs_the_countermeasure_in_one_click(slack: SlackHarness, alerted: Alert) -> None:
    click(slack, ACTION_ADOPT, f"{alerted.id}:0", MARKETING_OWNER, alerted)
    [cm] = countermeasures(slack)
    assert cm.text == "低効率チャネルの出稿を止め、予算をウェビナーへ移す"
    assert cm.owner_user_id == PLAYBOOK_OWNER
    assert cm.due_date == TODAY + dt.timedelta(days=10)
    assert cm.alert_id == alerted.id and cm.logged_by == MARKETING_OWNER
    assert cm.status is CountermeasureStatus.PLANNED
    # Confirmed in the alert's thread, like any countermeasure.
    confirmations = [
        call
        for call in slack.fake.calls("chat.postMessage")
        if call.args.get("thread_ts") == alerted.thread_ts and "低効率チャネル" in str(call.args)
    ]
    assert len(confirmations) == 1

    # A playbook without its own owner goes to the KPI's owner, due in the default 14 days.
    click(slack, ACTION_ADOPT, f"{alerted.id}:1", "U0MKTHEAD", alerted)
    second = countermeasures(slack)[1]
    assert (second.owner_user_id, second.due_date) == (MARKETING_OWNER, TODAY + dt.timedelta(days=14))


def test_adopt_clicked_twice_logs_one_countermeasure(slack: SlackHarness, alerted: Alert) -> None:
    click(slack, ACTION_ADOPT, f"{alerted.id}:0", MARKETING_OWNER, alerted)
    click(slack, ACTION_ADOPT, f"{alerted.id}:0", "U0MKTHEAD", alerted)
    assert len(countermeasures(slack)) == 1
    assert any("採用済み" in text and f"<@{MARKETING_OWNER}>" in text for text in ephemeral(slack))


def test_adopt_clicked_at_once_by_two_logs_one_countermeasure(slack: SlackHarness, alerted: Alert) -> None:
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def press(user_id: str) -> None:
        try:
            start.wait()
            response = slack.client.block_action(
                ACTION_ADOPT,
                value=f"{alerted.id}:0",
                user_id=user_id,
                channel_id="C0MARKETING",
                message_ts=alerted.thread_ts,
            )
            assert response.status == 200
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=press, args=(user,)) for user in (MARKETING_OWNER, "U0MKTHEAD")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slack.settle()
    assert errors == []
    assert len(countermeasures(slack)) == 1


def test_adopt_by_a_non_member_is_refused(slack: SlackHarness, alerted: Alert) -> None:
    click(slack, ACTION_ADOPT, f"{alerted.id}:0", "U0SALES1", alerted)  # Sales, not Marketing
    assert countermeasures(slack) == []
    [answer] = ephemeral(slack)
    assert "マーケティング部の対策を採用できるのは" in answer and "何も記録していません" in answer


def test_adopt_of_a_playbook_that_is_not_offered_is_refused(slack: SlackHarness, alerted: Alert) -> None:
    click(slack, ACTION_ADOPT, f"{alerted.id}:7", MARKETING_OWNER, alerted)
    click(slack, ACTION_ADOPT, "not-a-value", MARKETING_OWNER, alerted)
    assert countermeasures(slack) == []
    assert any("もう提示されていません" in text for text in ephemeral(slack))


def test_edit_first_opens_the_form_prefilled(slack: SlackHarness, alerted: Alert) -> None:
    click(slack, ACTION_ADOPT_EDIT, f"{alerted.id}:0", MARKETING_OWNER, alerted)
    view: dict[str, Any] = slack.fake.wait_for("views.open")[0].args["view"]
    if isinstance(view, str):
        import json

        view = json.loads(view)
    elements = {block.get("block_id"): block.get("element", {}) for block in view["blocks"]}
    texts = [e.get("initial_value") for e in elements.values()]
    assert "低効率チャネルの出稿を止め、予算をウェビナーへ移す" in texts
    assert PLAYBOOK_OWNER in [e.get("initial_user") for e in elements.values()]
    assert (TODAY + dt.timedelta(days=10)).isoformat() in [e.get("initial_date") for e in elements.values()]
    assert countermeasures(slack) == []  # nothing is logged until the form is submitted


# -- the review agenda -------------------------------------------------------------------------------


def test_the_review_agenda_names_alerts_without_a_countermeasure(slack: SlackHarness, alerted: Alert) -> None:
    slack.command("review marketing", user_id="U0MKTHEAD", channel_id="C0MARKETING")
    slack.settle()
    header = next(
        call
        for call in slack.fake.calls("chat.postMessage")
        if call.args.get("channel") == "C0MARKETING" and "対策が未登録のアラート" in str(call.args)
    )
    assert "2026年10月のリード獲得単価" in str(header.args)

    # Once a playbook is adopted, the alert is covered: the next day's agenda does not name it.
    click(slack, ACTION_ADOPT, f"{alerted.id}:0", MARKETING_OWNER, alerted)
    from bot.review.service import uncovered_alerts

    with slack.session() as session:
        from bot.models import Department

        marketing = session.exec(select(Department).where(Department.key == "marketing")).one()
        assert [item.kpi.key for item in uncovered_alerts(session, marketing)] == []


# -- in the department's language --------------------------------------------------------------------

BILINGUAL_PLAN = PLAYBOOK_PLAN.replace(
    "      - 入札単価を 2 割下げる\n", "      - text: {ja: 入札単価を 2 割下げる, en: Cut bids by 20 %}\n"
)


@pytest.mark.parametrize("locale", ["ja", "en"])
def test_a_playbook_per_language_is_offered_and_adopted_in_the_departments_language(
    slack: SlackHarness, tmp_path: Path, locale: str
) -> None:
    import_plan(slack.engine, write(tmp_path, BILINGUAL_PLAN))
    with transaction(slack.engine) as session:
        marketing = session.exec(select(Department).where(Department.key == "marketing")).one()
        marketing.locale = locale
        session.add(marketing)
        kpi = session.exec(select(Kpi).where(Kpi.key == "cost_per_lead")).one()
        assert kpi.playbooks[1]["text"] == {"ja": "入札単価を 2 割下げる", "en": "Cut bids by 20 %"}
    alert = october_alert(slack)
    shown, other = ("入札単価を 2 割下げる", "Cut bids by 20 %")[:: 1 if locale == "ja" else -1]
    [root] = [
        call
        for call in slack.fake.calls("chat.postMessage")
        if not call.failed and "thread_ts" not in call.args and call.args.get("channel") == "C0MARKETING"
    ]
    blocks = str(root.args["blocks"])
    assert shown in blocks and other not in blocks
    # A playbook written in one language shows it whatever the department's.
    assert "低効率チャネルの出稿を止め、予算をウェビナーへ移す" in blocks

    click(slack, ACTION_ADOPT_EDIT, f"{alert.id}:1", MARKETING_OWNER, alert)
    view: Any = slack.fake.wait_for("views.open")[0].args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert shown in [block.get("element", {}).get("initial_value") for block in view["blocks"]]

    click(slack, ACTION_ADOPT, f"{alert.id}:1", MARKETING_OWNER, alert)
    click(slack, ACTION_ADOPT, f"{alert.id}:1", "U0MKTHEAD", alert)
    [cm] = countermeasures(slack)
    assert cm.text == shown
