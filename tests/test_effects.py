"""Effects measured to the end: a countermeasure's KPI is followed each period until it is back on
track (or the countermeasure is closed). While a period runs its effect is said once, judged on the
pace of a running total and marked provisional; the period's final figure gets a verdict (worked /
not yet / did not work), and a correction that changes the verdict is said once more. The thread
shows the series since the baseline. Reports over signed HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlmodel import select

from bot.clock import set_clock, utcnow
from bot.database import transaction
from bot.models import Alert, Countermeasure, Kpi, Post, PostKind, Source
from bot.reports.actuals import record_actual
from handlers.client import make_web_client
from handlers.digests.interactive import make_jobs
from tests.fakeslack.harness import SlackHarness
from tests.fakeslack.server import Call

TOKYO = dt.timezone(dt.timedelta(hours=9))
SALES1 = "U0SALES1"
EFFECT = ":bar_chart:"


def on(day: dt.date) -> None:
    now = dt.datetime.combine(day, dt.time(10), tzinfo=TOKYO).astimezone(dt.UTC)
    set_clock(lambda: now)


def countermeasure_on_october(slack: SlackHarness) -> tuple[Countermeasure, str]:
    """New approaches at 60 of 100 in October: the scan raises the alert, the owner logs a
    countermeasure in reply (measured from October's 60)."""
    with transaction(slack.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "new_approaches")).one()
        record_actual(
            session, kpi=kpi, period="2026-10", value=Decimal(60), reported_by="U0SEED", source=Source.CSV
        )
    scan(slack)
    slack.command("countermeasure new_approaches 既存顧客の紹介を依頼する", user_id=SALES1)
    slack.settle()
    with slack.session() as session:
        [cm] = session.exec(select(Countermeasure)).all()
        alert = session.get(Alert, cm.alert_id)
    assert alert is not None and cm.thread_ts == alert.thread_ts and cm.baseline_value == Decimal(60)
    return cm, str(cm.thread_ts)


def scan(slack: SlackHarness) -> None:
    """The hourly scan as `kpibot scheduler` runs it."""
    make_jobs(make_web_client(slack.settings), slack.engine, slack.settings).scan(utcnow())


def report(slack: SlackHarness, text: str) -> None:
    slack.command(f"report {text}", user_id=SALES1)
    slack.settle()


def effects_in(slack: SlackHarness, thread_ts: str) -> list[str]:
    calls: list[Call] = slack.fake.calls("chat.postMessage")
    return [
        str(c.args["text"])
        for c in calls
        if c.args.get("thread_ts") == thread_ts and EFFECT in c.args["text"]
    ]


def effect_subjects(slack: SlackHarness) -> list[str]:
    with slack.session() as session:
        posts = session.exec(select(Post).where(Post.kind == PostKind.FOLLOWUP).order_by(Post.id)).all()  # type: ignore[arg-type]
    return [post.subject for post in posts if post.subject.startswith("effect:")]


def verdict_of(slack: SlackHarness, cm: Countermeasure) -> str | None:
    with slack.session() as session:
        row = session.get(Countermeasure, cm.id)
        return None if row is None else row.verdict


def test_a_running_period_is_provisional_and_the_final_figure_gets_a_verdict_a_correction_changes_once(
    slack: SlackHarness,
) -> None:
    cm, thread = countermeasure_on_october(slack)  # the harness's clock: Monday 2026-11-30, November runs

    report(slack, "new_approaches 70")
    [running] = effects_in(slack, thread)
    assert "2026年10月 60件(達成率 60%) → 2026年11月 *70件*" in running
    assert "まだ途中" in running and "期中の暫定" in running
    assert verdict_of(slack, cm) is None  # a running period decides nothing

    on(dt.date(2026, 12, 2))  # November has ended: its figure is final
    report(slack, "new_approaches 75 2026-11")
    report(slack, "new_approaches 76 2026-11")  # a correction with the same verdict: nothing new
    final = effects_in(slack, thread)[1:]
    assert len(final) == 1 and "2026年11月 *75件*" in final[0] and "まだ途中" in final[0]
    assert "期中の暫定" not in final[0]
    assert verdict_of(slack, cm) == "not_yet"

    report(slack, "new_approaches 95 2026-11")  # corrected: back on track
    report(slack, "new_approaches 97 2026-11")
    worked = effects_in(slack, thread)[2:]
    assert len(worked) == 1 and "2026年11月 *95件*" in worked[0] and "効果あり" in worked[0]
    assert verdict_of(slack, cm) == "worked"
    assert effect_subjects(slack) == [
        f"effect:{cm.id}:2026-11",
        f"effect:{cm.id}:2026-11:not_yet",
        f"effect:{cm.id}:2026-11:worked",
    ]

    # Back on track: December is not followed any more.
    on(dt.date(2027, 1, 5))
    report(slack, "new_approaches 50 2026-12")
    assert len(effects_in(slack, thread)) == 3


def test_the_thread_shows_the_series_since_the_baseline_and_a_did_not_work_verdict(
    slack: SlackHarness,
) -> None:
    cm, thread = countermeasure_on_october(slack)
    on(dt.date(2026, 12, 2))
    report(slack, "new_approaches 65 2026-11")  # better than October, not on track
    on(dt.date(2027, 1, 5))
    report(slack, "new_approaches 40 2026-12")  # December's target is 80: 40 is no better than 60
    last = effects_in(slack, thread)[-1]
    assert "2026年10月 60件(達成率 60%) → 2026年11月 65件 → 2026年12月 *40件*" in last
    assert "効果なし" in last
    assert verdict_of(slack, cm) == "did_not_work"


def test_a_period_that_ends_after_its_last_report_gets_its_verdict_from_the_hourly_scan_once(
    slack: SlackHarness,
) -> None:
    cm, thread = countermeasure_on_october(slack)
    report(slack, "new_approaches 92")  # on 30 November, November's last day: provisional
    assert len(effects_in(slack, thread)) == 1

    on(dt.date(2026, 12, 1))  # November has ended with no new report: the scan judges its figure
    scan(slack)
    scan(slack)
    final = effects_in(slack, thread)[1:]
    assert len(final) == 1 and "2026年11月 *92件*" in final[0] and "効果あり" in final[0]
    assert "期中の暫定" not in final[0]
    assert verdict_of(slack, cm) == "worked"


def test_a_verdict_slack_refused_is_said_the_next_time_it_is_judged_and_only_once(
    slack: SlackHarness,
) -> None:
    def said() -> list[str]:
        calls = slack.fake.calls("chat.postMessage")
        in_thread = [c for c in calls if not c.failed and c.args.get("thread_ts") == thread]
        return [str(c.args["text"]) for c in in_thread if EFFECT in c.args["text"]]

    cm, thread = countermeasure_on_october(slack)
    report(slack, "new_approaches 92")  # provisional, said at once
    assert len(said()) == 1

    on(dt.date(2026, 12, 1))  # November has ended: the scan judges its final figure...
    slack.fake.fail("chat.postMessage", "internal_error", times=None)  # ...while Slack fails every post
    scan(slack)
    assert len(said()) == 1 and verdict_of(slack, cm) is None
    refused = [
        c for c in slack.fake.calls("chat.postMessage") if c.failed and c.args.get("thread_ts") == thread
    ]
    assert refused and EFFECT in refused[-1].args["text"]

    slack.fake.clear_failures()  # the next hour: Slack is back
    scan(slack)
    scan(slack)
    final = said()[1:]
    assert len(final) == 1 and "2026年11月 *92件*" in final[0] and "効果あり" in final[0]
    assert verdict_of(slack, cm) == "worked"
