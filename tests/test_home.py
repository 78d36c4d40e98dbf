"""App Home over signed HTTP against the fake Slack, on both databases: `app_home_opened` answered
200 and the tab published in the user's language, within Block Kit's limits; its Report and
Done / Dropped buttons; refreshed after a report; views.publish failing or rate-limited."""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from slack_sdk.models.views import View
from sqlmodel import Session, col, select

from bench.common import counting_statements
from bench.generate import generate_division
from bot.clock import set_clock
from bot.home.service import build_home
from bot.models import (
    Alert,
    AlertReason,
    AlertStatus,
    Countermeasure,
    CountermeasureStatus,
    Department,
    HomeOpened,
    Kpi,
    Severity,
)
from handlers.home import interactive as home
from handlers.work import POST_ACK_THREADS
from tests.fakeslack.harness import NOW, SlackHarness
from tests.plans import count_kpi

SALES1 = "U0SALES1"  # owns new_approaches and close_rate (monthly)
SALES_HEAD = "U0SALESHEAD"
DIVISION_HEAD = "U0DIVHEAD"
DAY = dt.date(2026, 11, 30)
JsonDict = dict[str, Any]


def open_home(slack: SlackHarness, user_id: str, count: int | None = None) -> JsonDict:
    before = len(slack.fake.calls("views.publish"))
    response = slack.client.event(
        {"type": "app_home_opened", "user": user_id, "channel": "D0HOME", "tab": "home"}
    )
    assert response.status == 200, response
    call = slack.fake.wait_for("views.publish", count=count or before + 1)[-1]
    assert call.args["user_id"] == user_id
    view: JsonDict = call.args["view"]
    return view


def texts(view: JsonDict) -> str:
    found: list[str] = []
    for block in view["blocks"]:
        if "text" in block:
            found.append(block["text"]["text"])
        for element in block.get("elements", []):
            if "text" in element and isinstance(element["text"], str):
                found.append(element["text"])
    return "\n".join(found)


def valid(view: JsonDict) -> None:
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    View(**view).validate_json()  # slack_sdk's own checks of Slack's limits


def buttons(view: JsonDict, action_id: str) -> list[JsonDict]:
    found = []
    for block in view["blocks"]:
        accessory = block.get("accessory")
        if accessory and accessory.get("action_id") == action_id:
            found.append(accessory)
        found += [e for e in block.get("elements", []) if e.get("action_id") == action_id]
    return found


def test_home_opened_is_answered_and_published_in_japanese(slack: SlackHarness) -> None:
    view = open_home(slack, SALES1)
    valid(view)
    shown = texts(view)
    assert "報告" in shown and "担当の対策" in shown and "所属部門" in shown
    # The month in progress and the two finished months nobody reported yet, oldest first.
    assert "新規アプローチ数" in shown
    assert "2026年11月" in shown and "2026年10月" in shown and "2026年9月" in shown
    mine = shown[shown.index("*報告*") : shown.index("*担当の対策*")]
    assert mine.index("2026年9月") < mine.index("2026年10月") < mine.index("2026年11月")
    reports = buttons(view, "home_report")
    assert {b["value"].split(":")[1] for b in reports} == {"2026-09", "2026-10", "2026-11"}
    assert "全部門" not in shown and "計画(管理者)" not in shown  # neither division head nor admin


def test_home_in_english_for_an_english_user(slack: SlackHarness) -> None:
    slack.fake.set_user(SALES1, locale="en-US")
    view = open_home(slack, SALES1)
    valid(view)
    shown = texts(view)
    assert "My reports" in shown and "New approaches" in shown and "finished, not reported" in shown


def test_messages_tab_opened_publishes_nothing(slack: SlackHarness) -> None:
    response = slack.client.event(
        {"type": "app_home_opened", "user": SALES1, "channel": "D0", "tab": "messages"}
    )
    assert response.status == 200
    slack.settle()
    assert slack.fake.calls("views.publish") == []


def test_a_value_reported_disappears_from_the_late_list_and_the_tab_is_refreshed(slack: SlackHarness) -> None:
    for user in (SALES1, SALES_HEAD, DIVISION_HEAD):  # whoever sees the KPI, each on their tab
        open_home(slack, user)
    answer = slack.command("report new_approaches 90 2026-10", user_id=SALES1)
    assert "90" in answer.args["text"]  # the report is confirmed whatever the Home tab does
    slack.settle()  # the refresh runs after the report, debounced
    calls = slack.fake.calls("views.publish")[3:]
    refreshed = [c for c in calls if c.args["user_id"] == SALES1]
    assert len(refreshed) == 1, [c.args["user_id"] for c in calls]
    # Whoever else sees the KPI: its department's head and the division head.
    assert sorted(c.args["user_id"] for c in calls) == sorted({SALES1, SALES_HEAD, DIVISION_HEAD})
    reports = {b["value"] for b in buttons(refreshed[-1].args["view"], "home_report")}
    kpi_id = _kpi_id(slack, "new_approaches")
    assert f"{kpi_id}:2026-10" not in reports and f"{kpi_id}:2026-09" in reports


def test_the_refresh_after_a_report_publishes_on_the_post_ack_pool(
    slack: SlackHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The report changes three users' tabs (its owner, the department head, the division head). On
    # Bolt's listener pool the publishes ran beside the next acks, one thread each; on the worker's
    # post-ack pool (two threads, shared with the saves) a burst queues behind the acks instead.
    threads: list[str] = []
    publish = home.HomeRefresher.publish

    def recorded(self: home.HomeRefresher, user: str) -> bool:
        threads.append(threading.current_thread().name)
        return publish(self, user)

    for user in (SALES1, SALES_HEAD, DIVISION_HEAD):
        open_home(slack, user)
    monkeypatch.setattr(home.HomeRefresher, "publish", recorded)
    slack.fake.latency = 0.2  # every call takes a while: three publishes at once would overlap
    slack.fake.max_in_flight = 0
    slack.command("report new_approaches 90 2026-10", user_id=SALES1)
    slack.settle()
    published = {c.args["user_id"] for c in slack.fake.calls("views.publish")[3:]}
    assert published == {SALES1, SALES_HEAD, DIVISION_HEAD}
    assert len(threads) == 3 and all(name.startswith("kpibot-after-ack") for name in threads), threads
    assert slack.fake.max_in_flight <= POST_ACK_THREADS


def test_a_change_refreshes_only_the_tabs_opened_within_the_hour(slack: SlackHarness) -> None:
    # The division head opened the tab 61 minutes ago, the department head 59: a tab opened again
    # is published afresh, so only one that may still be open is refreshed. The owner never opened it.
    for user, minutes_ago in ((DIVISION_HEAD, 61), (SALES_HEAD, 59)):
        set_clock(lambda minutes=minutes_ago: NOW.astimezone(dt.UTC) - dt.timedelta(minutes=minutes))
        open_home(slack, user)
    set_clock(lambda: NOW.astimezone(dt.UTC))
    slack.command("report new_approaches 90 2026-10", user_id=SALES1)
    slack.settle()
    assert [c.args["user_id"] for c in slack.fake.calls("views.publish")[2:]] == [SALES_HEAD]
    with slack.session() as session:
        opened = {row.user_id: row.opened_at for row in session.exec(select(HomeOpened)).all()}
    assert opened == {
        DIVISION_HEAD: NOW.astimezone(dt.UTC) - dt.timedelta(minutes=61),
        SALES_HEAD: NOW.astimezone(dt.UTC) - dt.timedelta(minutes=59),
    }

    open_home(slack, DIVISION_HEAD)  # opened again: the next change refreshes it too
    slack.command("report new_approaches 91 2026-10", user_id=SALES1)
    slack.settle()
    assert sorted(c.args["user_id"] for c in slack.fake.calls("views.publish")[4:]) == sorted(
        [DIVISION_HEAD, SALES_HEAD]
    )


def test_report_button_opens_the_form_on_that_period(slack: SlackHarness) -> None:
    view = open_home(slack, SALES1)
    button = next(b for b in buttons(view, "home_report") if b["value"].endswith(":2026-10"))
    response = slack.client.block_action(
        "home_report", value=button["value"], user_id=SALES1, view={"id": "VHOME", "type": "home"}
    )
    assert response.status == 200
    form = slack.fake.wait_for("views.open")[0].args["view"]
    assert form["callback_id"] == "report_modal"
    metadata = json.loads(form["private_metadata"])
    assert list(metadata["periods"]) == ["2026-10"]
    picker = form["blocks"][0]["accessory"]
    assert picker["initial_option"]["value"] == "2026-10"


def test_views_publish_rate_limited_is_retried(slack: SlackHarness) -> None:
    slack.fake.fail("views.publish", "ratelimited", retry_after=0)
    view = open_home(slack, SALES1, count=2)  # refused once, then published
    valid(view)


def test_views_publish_failing_never_blocks_a_report(slack: SlackHarness) -> None:
    slack.fake.fail("views.publish", "internal_error", times=None)
    answer = slack.command("report new_approaches 91", user_id=SALES1)
    assert "91" in answer.args["text"]
    slack.settle()
    assert slack.live_values("new_approaches") == {"2026-11": Decimal(91)}


def test_countermeasures_overdue_first_with_done_and_dropped(slack: SlackHarness) -> None:
    kpi_id = _kpi_id(slack, "new_approaches")
    with slack.session() as session:
        for text, due in (("later", dt.date(2026, 12, 20)), ("late", dt.date(2026, 11, 20))):
            session.add(
                Countermeasure(
                    kpi_id=kpi_id,
                    text=text,
                    owner_user_id=SALES1,
                    due_date=due,
                    status=CountermeasureStatus.PLANNED,
                    logged_by=SALES_HEAD,
                )
            )
        session.commit()
    view = open_home(slack, SALES1)
    valid(view)
    shown = texts(view)
    assert shown.index("late") < shown.index("later") and "期限切れ" in shown
    done = buttons(view, "home_countermeasure_done")
    assert len(done) == 2 and len(buttons(view, "home_countermeasure_dropped")) == 2

    response = slack.client.block_action(
        "home_countermeasure_done",
        value=done[0]["value"],
        user_id=SALES1,
        view={"id": "VHOME", "type": "home"},
    )
    assert response.status == 200
    slack.settle()
    with slack.session() as session:
        closed = session.get(Countermeasure, int(done[0]["value"]))
        assert closed is not None and closed.status is CountermeasureStatus.DONE
    mine = [call for call in slack.fake.calls("views.publish") if call.args["user_id"] == SALES1]
    assert len(mine) == 2  # opened, then refreshed once
    assert len(buttons(mine[-1].args["view"], "home_countermeasure_done")) == 1


def test_someone_else_cannot_close_from_the_home_tab(slack: SlackHarness) -> None:
    kpi_id = _kpi_id(slack, "new_approaches")
    with slack.session() as session:
        cm = Countermeasure(
            kpi_id=kpi_id,
            text="x",
            owner_user_id=SALES1,
            status=CountermeasureStatus.PLANNED,
            logged_by=SALES1,
        )
        session.add(cm)
        session.commit()
        cm_id = cm.id
    response = slack.client.block_action(
        "home_countermeasure_done", value=str(cm_id), user_id="U0STRANGER", view={"id": "V", "type": "home"}
    )
    assert response.status == 200
    answer = slack.fake.wait_for("chat.postMessage")[0].args
    assert answer["channel"] == "U0STRANGER"
    slack.settle()
    with slack.session() as session:
        kept = session.get(Countermeasure, cm_id)
        assert kept is not None and kept.status is CountermeasureStatus.PLANNED


def test_department_line_links_open_alerts_and_division_head_sees_every_department(
    slack: SlackHarness,
) -> None:
    kpi_id = _kpi_id(slack, "new_approaches")
    _open_alert(slack, kpi_id, "1700000000.000100")
    view = open_home(slack, SALES_HEAD)
    valid(view)
    assert "https://fake.slack.com/archives/C0SALES/p1700000000000100" in texts(view)

    division = open_home(slack, DIVISION_HEAD)
    valid(division)
    shown = texts(division)
    assert "全部門" in shown
    for name in ("マーケティング", "インサイドセールス", "営業", "カスタマーサクセス"):
        assert name in shown


def test_a_department_line_puts_its_counts_and_its_alerts_on_lines_of_their_own(slack: SlackHarness) -> None:
    # The department section once ran its parts together: 「…(直近に終了した期間)未解決のアラート…」.
    _open_alert(slack, _kpi_id(slack, "new_approaches"), "1700000000.000100")
    view = open_home(slack, SALES_HEAD)
    sections = [block["text"]["text"] for block in view["blocks"] if block["type"] == "section"]
    [line] = [text for text in sections if "未解決のアラート" in text]
    head, _, rest = line.partition("(直近に終了した期間)")
    assert head.startswith("*営業部* ・ 🟢 ")
    assert rest.startswith(
        "\n未解決のアラート(1件): <https://fake.slack.com/archives/C0SALES/p1700000000000100|"
    )


def test_an_admin_with_hundreds_of_kpis_gets_a_tab_within_the_limits(slack: SlackHarness) -> None:
    with slack.session() as session:
        sales = session.exec(select(Department).where(Department.key == "sales")).one()
        assert sales.id is not None
        for n in range(200):
            session.add(count_kpi(f"extra_{n:03d}", sales.id, owner_user_id="U0ADMIN", position=100 + n))
        session.commit()
    slack.fake.set_user("U0ADMIN", is_admin=True)
    view = open_home(slack, "U0ADMIN")
    valid(view)
    shown = texts(view)
    assert "計画(管理者)" in shown and "`/kpi list`" in shown  # collapsed, pointing to the full list


def _open_alert(slack: SlackHarness, kpi_id: int, thread_ts: str) -> int:
    """A red alert on new_approaches for 2026-10, posted in the sales channel."""
    with slack.session() as session:
        alert = Alert(
            kpi_id=kpi_id,
            period="2026-10",
            severity=Severity.RED,
            status=AlertStatus.OPEN,
            reason=AlertReason.MISSING,
            channel_id="C0SALES",
            thread_ts=thread_ts,
        )
        session.add(alert)
        session.commit()
        assert alert.id is not None
        return alert.id


def _kpi_id(slack: SlackHarness, key: str) -> int:
    with slack.session() as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == key)).one()
        assert kpi.id is not None
        return kpi.id


def test_an_acknowledged_alert_refreshes_the_heads_tab(slack: SlackHarness) -> None:
    kpi_id = _kpi_id(slack, "new_approaches")
    alert_id = _open_alert(slack, kpi_id, "1700000000.000200")
    for user in (SALES1, SALES_HEAD, DIVISION_HEAD):
        open_home(slack, user)
    response = slack.client.block_action("alert_acknowledge", value=str(alert_id), user_id=SALES_HEAD)
    assert response.status == 200
    slack.settle()
    published = {call.args["user_id"] for call in slack.fake.calls("views.publish")[3:]}
    assert {SALES_HEAD, SALES1, DIVISION_HEAD} <= published


def test_the_demo_preview_shows_a_home_tab(tmp_path: Any, monkeypatch: Any) -> None:
    from bot.clock import set_clock
    from handlers.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "KPIBOT_LOCALE", "KPIBOT_TIMEZONE", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    set_clock(lambda: dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC))
    assert main(["--locale", "en", "demo"]) == 0
    page = (tmp_path / "kpibot-demo.html").read_text(encoding="utf-8")
    home = page[page.index('class="channel home"') :]
    home = home[: home.index('<div class="channel" ')]
    assert "App Home of" in home and "My reports" in home and "My departments" in home
    assert '<button class="default">Report</button>' in home
    assert '<a href="https://' in home  # an open alert, linked to its thread


def test_report_from_the_home_tab_is_confirmed_in_the_dm(slack: SlackHarness) -> None:
    view = open_home(slack, SALES1)
    button = next(b for b in buttons(view, "home_report") if b["value"].endswith(":2026-11"))
    slack.client.block_action(
        "home_report", value=button["value"], user_id=SALES1, view={"id": "VH", "type": "home"}
    )
    form = slack.fake.wait_for("views.open")[0].args["view"]
    assert list(json.loads(form["private_metadata"])["periods"]) == ["2026-11"]  # the month in progress only
    values = {
        block["block_id"]: {
            "value": {
                "type": "plain_text_input",
                "value": "77" if "new_approaches" in block["block_id"] else None,
            }
        }
        for block in form["blocks"]
        if block["type"] == "input"
    }
    response = slack.client.view_submission(
        "report_modal", values, user_id=SALES1, private_metadata=form["private_metadata"]
    )
    assert response.status == 200
    confirmation = slack.fake.wait_for("chat.postEphemeral")[0].args
    assert confirmation["user"] == SALES1 and confirmation["channel"].startswith("D")
    assert slack.live_values("new_approaches") == {"2026-11": Decimal(77)}


def test_a_division_heads_tab_costs_the_same_statements_for_2_or_12_departments(engine: Any) -> None:
    """The division head's tab is rebuilt after every report in the division: its department lines
    are read together, so its cost does not grow with the number of departments."""

    def statements_for_division_head(departments: int) -> tuple[int, int]:
        generate_division(engine, departments=departments, weeks=8, today=DAY)
        with Session(engine) as session:
            session.add(
                Department(
                    key="division", name_ja="事業部", name_en="Division", channel_id="C0DIV",
                    head_user_id="UDIVHEAD", is_division=True,
                )
            )  # fmt: skip
            session.commit()
        set_clock(lambda: dt.datetime.combine(DAY, dt.time(10), tzinfo=dt.UTC))
        with Session(engine) as session, counting_statements(engine) as statements:
            tab = build_home(session, "UDIVHEAD", lambda: False)
        with engine.begin() as connection:
            for table in ("actual", "target", "kpi", "department"):
                connection.execute(sa.text(f"DELETE FROM {table}"))
        assert len(tab.division) == departments
        assert all(sum(line.counts.values()) == 20 for line in tab.division)
        return len(statements), len(tab.division)

    small, large = statements_for_division_head(2), statements_for_division_head(12)
    assert small[0] == large[0], (small, large)


def _a_department_head_of_twelve(engine: Any) -> tuple[str, str]:
    """A generated division of 12 departments, the clock on its review day: the fourth
    department's head and the department's key."""
    generate_division(engine, departments=12, weeks=8, today=DAY)
    set_clock(lambda: dt.datetime.combine(DAY, dt.time(10), tzinfo=dt.UTC))
    with Session(engine) as session:
        row = session.exec(
            select(Department.head_user_id, Department.key).order_by(col(Department.id)).offset(3)
        ).first()
    assert row is not None and row[0] is not None
    return row[0], row[1]


def test_a_department_heads_tab_reads_no_other_department(engine: Any) -> None:
    """A department head's (or an owner's) tab is rebuilt after each of their reports: it reads
    their own departments, not the division's, so its cost does not grow with the division."""
    head, key = _a_department_head_of_twelve(engine)
    loaded: list[str] = []

    def on_load(department: Department, _context: object) -> None:
        loaded.append(department.key)

    sa.event.listen(Department, "load", on_load)
    try:
        with Session(engine) as session:
            tab = build_home(session, head, lambda: False)
    finally:
        sa.event.remove(Department, "load", on_load)
    assert [line.department.key for line in tab.departments] == [key]
    assert not tab.division and not tab.plan and not tab.is_division_head
    assert loaded == [key]


def test_a_department_heads_tab_reads_kpis_and_departments_by_index(engine: Any) -> None:
    """Which KPIs a user may report, and their departments, are found by index (migration 0012),
    not by reading every KPI of the division: each statement of the tab is asked for its plan."""
    head, _ = _a_department_head_of_twelve(engine)
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with Session(engine) as session:
            build_home(session, head, lambda: False)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    sqlite = engine.dialect.name == "sqlite"
    full_reads: list[str] = []
    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        cursor = raw.cursor()
        if not sqlite:
            cursor.execute("SET enable_seqscan = off")  # a tiny table would be read whole anyway
        for statement, parameters in statements:
            cursor.execute(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, parameters)
            for row in cursor.fetchall():
                step = str(row[-1] if sqlite else row[0])
                if any(
                    read in step
                    for read in ("SCAN kpi", "SCAN department", "Seq Scan on kpi", "Seq Scan on department")
                ):
                    full_reads.append(f"{step.strip()} in {statement[:60]}")
    assert len(statements) >= 5
    assert full_reads == []
