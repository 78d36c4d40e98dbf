"""The funnel's own alert: a leaking hand-off (conversion under its `leak_below` % of plan) is said
once per period in the division channel, naming the heads of both departments, and its message
starts its own thread. Through the hourly scan, posting over HTTP to the fake Slack, on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

from sqlmodel import select

from bot.clock import set_clock, utcnow
from bot.database import transaction
from bot.models import Countermeasure, Department, Kpi, Post, PostKind, Source
from bot.plan.service import apply_plan, load_plan
from bot.reports.actuals import record_actual
from bot.reports.batch import Sender, Stored, ingest
from bot.reports.rows import Row
from bot.resources import EXAMPLE_FUNNEL
from handlers.client import make_web_client
from handlers.digests.interactive import make_jobs
from tests.fakeslack.harness import SlackHarness
from tests.fakeslack.server import BOT_USER_ID, Call

TOKYO = dt.timezone(dt.timedelta(hours=9))
DIVISION = "C0DIVISION"
# November: 60 of 200 MQLs became SQLs (30 %, as planned), but only 10 of the 60 SQLs became deals
# (17 % against a plan of 40 ÷ 60 = 67 %): the Inside Sales → Sales hand-off leaks.
NOVEMBER = {"mqls": "200", "sqls": "60", "deals": "10", "won_deals": "3", "upsells": "2"}


def at(day: dt.date) -> None:
    now = dt.datetime.combine(day, dt.time(10), tzinfo=TOKYO).astimezone(dt.UTC)
    set_clock(lambda: now)


def with_funnel(slack: SlackHarness, locale: str = "ja") -> None:
    with transaction(slack.engine) as session:
        apply_plan(session, load_plan(EXAMPLE_FUNNEL, session), actor="test")
        division = session.exec(select(Department).where(Department.key == "division")).one()
        division.locale = locale
        session.add(division)


def seed(slack: SlackHarness, period: str, values: dict[str, str]) -> None:
    with transaction(slack.engine) as session:
        for key, value in values.items():
            kpi = session.exec(select(Kpi).where(Kpi.key == key)).one()
            record_actual(
                session, kpi=kpi, period=period, value=Decimal(value), reported_by="U0TEST", source=Source.CSV
            )


def scan(slack: SlackHarness) -> None:
    """The hourly scan as `kpibot scheduler` runs it."""
    make_jobs(make_web_client(slack.settings), slack.engine, slack.settings).scan(utcnow())


def division_roots(slack: SlackHarness) -> list[Call]:
    return [
        call
        for call in slack.fake.calls("chat.postMessage")
        if not call.failed and call.args["channel"] == DIVISION and "thread_ts" not in call.args
    ]


def funnel_posts(slack: SlackHarness) -> list[Post]:
    with slack.session() as session:
        return list(
            session.exec(
                select(Post).where(Post.kind == PostKind.ALERT, Post.subject.startswith("funnel:"))  # type: ignore[attr-defined]
            ).all()
        )


def text_of(call: Call) -> str:
    return " ".join([str(call.args.get("text", "")), str(call.args.get("blocks", ""))])


def test_a_leaking_hand_off_is_said_once_in_the_division_channel_naming_both_heads(
    slack: SlackHarness,
) -> None:
    with_funnel(slack)
    seed(slack, "2026-11", NOVEMBER)
    at(dt.date(2026, 12, 7))  # reviews November

    scan(slack)
    scan(slack)  # the next hour's scan: nothing new to say

    [root] = [call for call in division_roots(slack) if "ファネル" in text_of(call)]
    text = text_of(root)
    assert "インサイドセールス部 → 営業部" in text
    assert "<@U0ISHEAD>" in text and "<@U0SALESHEAD>" in text
    assert "転換率 16.7%、計画 66.7%" in text  # converted, against plan
    # The one leaking hand-off, once, and its ledger row holds the thread its discussion happens in.
    [post] = funnel_posts(slack)
    assert (post.period, post.subject, post.channel_id) == ("2026-11", "funnel:deals", DIVISION)
    assert post.ts is not None


def test_the_next_period_leaking_again_is_a_new_alert_and_a_healthy_funnel_says_nothing(
    slack: SlackHarness,
) -> None:
    with_funnel(slack, locale="en")
    seed(slack, "2026-11", {**NOVEMBER, "deals": "40", "won_deals": "8", "upsells": "4"})
    at(dt.date(2026, 12, 7))
    scan(slack)
    assert funnel_posts(slack) == []  # every hand-off converts as planned: no alert

    seed(slack, "2026-12", {**NOVEMBER, "deals": "40", "won_deals": "2", "upsells": "1"})
    at(dt.date(2027, 1, 11))  # reviews December: 2 of 40 deals won (5 % against 20 %)
    scan(slack)
    [root] = [call for call in division_roots(slack) if "funnel leaks" in text_of(call)]
    assert "Sales → Sales" in text_of(root) and "<@U0SALESHEAD>" in text_of(root)
    assert text_of(root).count("<@U0SALESHEAD>") <= 2  # one head named once (text and blocks)
    assert [(p.period, p.subject) for p in funnel_posts(slack)] == [("2026-12", "funnel:won_deals")]


def mention(slack: SlackHarness, text: str, *, user_id: str, thread_ts: str) -> None:
    """`@kpibot <text>` in the thread, as Slack delivers it (signed)."""
    ts = f"{time.time():.6f}"
    words = f"<@{BOT_USER_ID}> {text}"
    event = dict(type="app_mention", user=user_id, text=words, channel=DIVISION, thread_ts=thread_ts)
    assert slack.client.event({**event, "ts": ts, "event_ts": ts}).status == 200
    slack.settle()


def november_alert(slack: SlackHarness, locale: str = "ja") -> Post:
    """November leaks at Inside Sales → Sales (10 of 60 SQLs: 16.7 % against 66.7 %): its alert,
    posted by the scan of 2026-12-07."""
    with_funnel(slack, locale)
    seed(slack, "2026-11", NOVEMBER)
    at(dt.date(2026, 12, 7))
    scan(slack)
    [post] = funnel_posts(slack)
    return post


def test_a_countermeasure_is_logged_in_the_funnel_alerts_thread_by_either_departments_members(
    slack: SlackHarness,
) -> None:
    post = november_alert(slack)
    assert post.ts is not None

    # Customer Success is neither side of the Inside Sales → Sales hand-off: refused, nothing logged.
    mention(slack, "対策: 毎週の引き継ぎ会議", user_id="U0CS1", thread_ts=post.ts)
    with slack.session() as session:
        assert session.exec(select(Countermeasure)).all() == []
    # Inside Sales' head (the department handing off) logs one; it is confirmed in the thread and
    # followed on the stage the hand-off leads into.
    mention(
        slack,
        "対策: SQL 引き渡し時に営業同席の初回商談を設定 <@U0SALES1>",
        user_id="U0ISHEAD",
        thread_ts=post.ts,
    )
    with slack.session() as session:
        [cm] = session.exec(select(Countermeasure)).all()
        kpi = session.get(Kpi, cm.kpi_id)
    assert kpi is not None and kpi.key == "deals"
    assert (cm.channel_id, cm.thread_ts, cm.owner_user_id) == (DIVISION, post.ts, "U0SALES1")
    confirmations = [
        call
        for call in slack.fake.calls("chat.postMessage")
        if call.args.get("thread_ts") == post.ts and "SQL 引き渡し時" in text_of(call)
    ]
    assert len(confirmations) == 1


def thread_replies(slack: SlackHarness, thread_ts: str, words: str) -> list[Call]:
    return [
        call
        for call in slack.fake.calls("chat.postMessage")
        if not call.failed and call.args.get("thread_ts") == thread_ts and words in text_of(call)
    ]


def test_a_correction_that_closes_the_leak_resolves_the_alert_in_its_thread_once(slack: SlackHarness) -> None:
    with_funnel(slack)
    # Only Inside Sales → Sales leaks (8 won of 10 deals, 4 upsells of 8 won: as planned or better).
    seed(slack, "2026-11", {**NOVEMBER, "won_deals": "8", "upsells": "4"})
    at(dt.date(2026, 12, 7))
    scan(slack)
    [post] = funnel_posts(slack)
    assert post.ts is not None

    # A correction that leaves the hand-off leaking (20 of 60: 33 % against 67 %) resolves nothing.
    slack.command("report deals 20 2026-11", user_id="U0SALES1")
    slack.settle()
    assert thread_replies(slack, post.ts, "漏れがなくなりました") == []

    # Sales' owner corrects November's deals: 38 of 60 SQLs (63 %, 95 % of plan) — no longer leaking.
    slack.command("report deals 38 2026-11", user_id="U0SALES1")
    slack.settle()
    scan(slack)  # the next hour's scan: already said
    slack.command("report deals 39 2026-11", user_id="U0SALES1")
    slack.settle()

    [note] = thread_replies(slack, post.ts, "漏れがなくなりました")
    assert "インサイドセールス部 → 営業部" in text_of(note)
    assert "転換率 *63.3%*(計画 66.7%、計画比 95%)" in text_of(note)
    assert note.args["channel"] == DIVISION
    # Still one alert for November: its root is not posted again.
    assert [(p.period, p.subject) for p in funnel_posts(slack)] == [("2026-11", "funnel:deals")]


def test_a_leak_closed_after_the_next_period_began_is_resolved_by_the_scan(slack: SlackHarness) -> None:
    with_funnel(slack, locale="en")
    seed(slack, "2026-11", NOVEMBER)
    at(dt.date(2026, 12, 7))
    scan(slack)
    [post] = funnel_posts(slack)
    assert post.ts is not None

    # January: December is reviewed now; November's deals are corrected in the warehouse (no Slack report).
    at(dt.date(2027, 1, 11))
    seed(slack, "2026-11", {"deals": "40"})
    scan(slack)
    scan(slack)

    [note] = thread_replies(slack, post.ts, "no longer leaks")
    assert "Inside Sales → Sales" in text_of(note) and "(Nov 2026)" in text_of(note)
    assert "*SQLs* 60 → *Deals opened* 40, *66.7%* converted against a plan of 66.7%" in text_of(note)


def log_in_thread(slack: SlackHarness, locale: str = "ja") -> Post:
    """November's alert, and Inside Sales' head logs a countermeasure in its thread."""
    post = november_alert(slack, locale)
    assert post.ts is not None
    mention(slack, "対策: SQL 引き渡し時に営業同席の初回商談を設定", user_id="U0ISHEAD", thread_ts=post.ts)
    return post


def effect_notes(slack: SlackHarness, thread_ts: str) -> list[str]:
    """The effect follow-ups in the thread (funnel's or single-KPI's), oldest first."""
    return [text_of(call) for call in thread_replies(slack, thread_ts, ":bar_chart:")]


def the_countermeasure(slack: SlackHarness) -> Countermeasure:
    """The one countermeasure stored (logged in the alert's thread)."""
    with slack.session() as session:
        [cm] = session.exec(select(Countermeasure)).all()
    return cm


def report(slack: SlackHarness, words: str, user_id: str) -> None:
    """`/kpi report <words>` by `user_id`, and its follow-ups done."""
    slack.command(f"report {words}", user_id=user_id)
    slack.settle()


def test_a_funnel_countermeasure_is_followed_on_the_hand_offs_conversion_once_per_verdict(
    slack: SlackHarness,
) -> None:
    post = log_in_thread(slack)
    assert post.ts is not None
    at(dt.date(2027, 1, 12))  # December has ended: its figures are final

    # December's SQLs alone: the hand-off has no conversion yet, nothing is judged.
    report(slack, "sqls 50 2026-12", "U0IS1")
    assert effect_notes(slack, post.ts) == []

    # 20 deals of 50 SQLs: 40 %, better than November's 16.7 % but under 90 % of the 66.7 % plan.
    report(slack, "deals 20 2026-12", "U0SALES1")
    [first] = effect_notes(slack, post.ts)
    assert "*インサイドセールス部 → 営業部* の転換率(SQL 数 → 商談化数)" in first
    assert "2026年11月 16.7% → 2026年12月 *40%*(計画 66.7%、計画比 60%)" in first
    assert "判定: *まだ途中*" in first and "期中の暫定" not in first
    # Not the single-KPI effect of deals (which would say 商談化数's count against its target).
    assert "以降の *商談化数*" not in first

    # A correction with the same verdict says nothing; one that closes the leak says "worked", once.
    report(slack, "deals 22 2026-12", "U0SALES1")
    assert len(effect_notes(slack, post.ts)) == 1
    report(slack, "deals 35 2026-12", "U0SALES1")
    scan(slack)  # the hourly scan says nothing more
    report(slack, "deals 36 2026-12", "U0SALES1")
    notes = effect_notes(slack, post.ts)
    assert len(notes) == 2
    assert "2026年11月 16.7% → 2026年12月 *70%*(計画 66.7%、計画比 105%)" in notes[1]
    assert "判定: *効果あり*(引き渡しの漏れがなくなりました)" in notes[1]
    assert the_countermeasure(slack).verdict == "worked"


def test_a_report_of_the_stage_before_moves_the_funnel_effect_too_with_the_series_between(
    slack: SlackHarness,
) -> None:
    post = log_in_thread(slack, locale="en")
    assert post.ts is not None
    seed(slack, "2026-12", {"sqls": "60", "deals": "5"})  # December: 8.3 %, unreported to Slack
    at(dt.date(2027, 1, 12))  # during January: its figures are provisional

    # January: 6 deals of 60 SQLs (10 %): still worse than November — did not work.
    slack.command("report deals 6 2027-01", user_id="U0SALES1")
    report(slack, "sqls 60 2027-01", "U0IS1")
    [first] = effect_notes(slack, post.ts)
    assert "*Inside Sales → Sales* conversion (SQLs → Deals opened)" in first
    assert "Nov 2026 16.7% → Dec 2026 8.3% → Jan 2027 *10%* (plan 66.7%, 15% of plan)" in first
    assert "Verdict: *did not work*" in first and "provisional" in first

    # Inside Sales corrects January's SQLs to 12: 6 of 12 is 50 %, better, still leaking.
    report(slack, "sqls 12 2027-01", "U0IS1")
    notes = effect_notes(slack, post.ts)
    assert len(notes) == 2
    assert "→ Jan 2027 *50%* (plan 66.7%, 75% of plan)" in notes[1]
    assert "Verdict: *not yet*" in notes[1]
    # The hourly scan judges January (the period the thread last spoke of), not December's older figure.
    scan(slack)
    assert len(effect_notes(slack, post.ts)) == 2


def fetched(slack: SlackHarness, rows: dict[str, str], period: str) -> None:
    """Values stored as a scheduled fetch stores them (bot.sources.runs → bot.reports.batch.ingest):
    no Slack report, so no follow-up of their own."""
    sender = Sender(reported_by="source:warehouse", source=Source.FETCH, source_name="warehouse")
    with transaction(slack.engine) as session:
        stored = ingest(session, [Row(key, value, period) for key, value in rows.items()], sender=sender)
    assert isinstance(stored, Stored) and len(stored.saved) == len(rows)


def test_figures_fetched_without_a_slack_report_move_the_funnel_effect_in_the_hourly_scan_once(
    slack: SlackHarness,
) -> None:
    post = log_in_thread(slack, locale="en")
    assert post.ts is not None
    at(dt.date(2027, 1, 12))  # December has ended: its figures are final

    # December arrives from the warehouse: 20 deals of 50 SQLs (40 %), better than November, still leaking.
    fetched(slack, {"sqls": "50", "deals": "20"}, "2026-12")
    assert effect_notes(slack, post.ts) == []  # no Slack report: nothing said until the scan
    scan(slack)
    scan(slack)  # the next hour's scan: nothing new
    [first] = effect_notes(slack, post.ts)
    assert "*Inside Sales → Sales* conversion (SQLs → Deals opened)" in first
    assert "Nov 2026 16.7% → Dec 2026 *40%* (plan 66.7%, 60% of plan)" in first
    assert "Verdict: *not yet*" in first and "provisional" not in first

    # The warehouse corrects December's deals to 36 (72 %): the leak is closed, "worked" is said once.
    fetched(slack, {"deals": "36"}, "2026-12")
    scan(slack)
    scan(slack)
    notes = effect_notes(slack, post.ts)
    assert len(notes) == 2
    assert "Nov 2026 16.7% → Dec 2026 *72%* (plan 66.7%, 108% of plan)" in notes[1]
    assert "Verdict: *worked*" in notes[1]
    cm = the_countermeasure(slack)
    with slack.session() as session:
        said = session.exec(
            select(Post.subject).where(Post.kind == PostKind.FOLLOWUP, Post.subject.startswith("effect:"))  # type: ignore[attr-defined]
        ).all()
    assert cm.verdict == "worked"
    assert sorted(said) == [f"effect:{cm.id}:2026-12:not_yet", f"effect:{cm.id}:2026-12:worked"]


def test_a_funnel_effect_slack_refuses_is_said_by_the_next_scan_once(slack: SlackHarness) -> None:
    post = log_in_thread(slack, locale="en")
    assert post.ts is not None
    at(dt.date(2027, 1, 12))
    fetched(slack, {"sqls": "50", "deals": "20"}, "2026-12")

    # Slack fails the follow-up (not a rate limit: nothing for the client to wait out and retry).
    slack.fake.fail("chat.postMessage", "internal_error", times=None)
    scan(slack)
    assert effect_notes(slack, post.ts) == []
    assert slack.fake.calls("chat.postMessage")[-1].failed  # it was tried, and refused

    # Slack is back: the next hourly scan says it, once; the scans after it say nothing more.
    slack.fake.clear_failures()
    scan(slack)
    scan(slack)
    [note] = effect_notes(slack, post.ts)
    assert "Nov 2026 16.7% → Dec 2026 *40%* (plan 66.7%, 60% of plan)" in note
    assert "Verdict: *not yet*" in note
    in_slack = [m for m in slack.fake.messages(DIVISION) if m.get("thread_ts") == post.ts]
    assert sum(":bar_chart:" in str(m.get("text", "")) for m in in_slack) == 1
