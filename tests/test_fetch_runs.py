"""Fetch runs on both databases: a sourced KPI fetched from a real SQLite warehouse by the
scheduler's job, stored once through the ingest path (a correction when the source changes its
mind, nothing but the run when it does not), two schedulers at once storing once, retries with
backoff, a source removed from the plan mid-fetch, and the admins told once per failure and once
per recovery in the fake Slack.

A tiny test-only kind (`scripted`, this module) stands in for a source whose answers a test
chooses; everything else is the real thing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bot.alerts.service import scan_department
from bot.clock import set_clock
from bot.database import make_engine, transaction
from bot.digests.service import build_digest
from bot.models import (
    Actual,
    Alert,
    AlertReason,
    Countermeasure,
    Department,
    FetchRun,
    FetchState,
    Kpi,
    Post,
    PostKind,
    Source,
)
from bot.schedule.jobs import ScheduledJobs
from bot.sources import registry, runs
from bot.sources.fetching import FetchError, FetchRequest
from handlers.client import make_web_client
from handlers.digests.interactive import make_jobs
from tests.fakeslack.harness import SlackHarness, start_harness, stop_harness
from tests.plans import import_plan

JST = dt.timezone(dt.timedelta(hours=9))
NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=JST)  # a Monday: 2026-11 in progress, 2026-10 finished
ADMIN = "U0ADMIN"
QUERY = "SELECT COUNT(*) FROM deals WHERE won_on >= :period_start AND won_on < :period_end"

# -- the test-only kind ------------------------------------------------------------------------------

KIND = "scripted"
SCRIPT: list[Callable[[FetchRequest], Decimal]] = []
CALLS: list[FetchRequest] = []


def validate(spec: Mapping[str, object]) -> None:
    """Anything goes."""


def fetch(request: FetchRequest, env: Mapping[str, str]) -> Decimal:
    CALLS.append(request)
    step = SCRIPT.pop(0) if len(SCRIPT) > 1 else SCRIPT[0]
    return step(request)


def value(number: int | str) -> Callable[[FetchRequest], Decimal]:
    return lambda request: Decimal(number)


def fails(code: str, *, transient: bool = True, retry_after: float | None = None) -> Callable[..., Decimal]:
    def raise_(request: FetchRequest) -> Decimal:
        raise FetchError(code, f"scripted {code}", transient=transient, retry_after=retry_after)

    return raise_


@pytest.fixture(autouse=True)
def _scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(registry.MODULES, KIND, __name__)
    SCRIPT[:] = [value(1)]
    CALLS.clear()
    yield
    SCRIPT.clear()


# -- a plan with sourced KPIs, and a warehouse ---------------------------------------------------------


def write_plan(folder: Path, *, won_source: str | None = None, extra: str = "") -> Path:
    source = won_source or f'{{kind: sql, connection: WAREHOUSE, query: "{QUERY}"}}'
    path = folder / "plan.yaml"
    path.write_text(
        f"""
departments:
  - {{key: division, name: {{ja: 事業部, en: Division}}, channel: C0DIVISION, division: true}}
  - {{key: marketing, name: {{ja: マーケ部, en: Marketing}}, channel: C0MARKETING, head: U0MKTHEAD}}
kpis:
  - key: won
    department: marketing
    name: {{ja: 受注数, en: Deals won}}
    owner: U0MKT1
    unit: count
    direction: higher
    cadence: monthly
    target: 10
    source: {source}
    every: 1h
    max_age: 26h
  - key: calls
    department: marketing
    name: {{ja: 架電数, en: Calls}}
    owner: U0MKT1
    unit: count
    direction: higher
    cadence: monthly
    target: 100
{extra}""",
        encoding="utf-8",
    )
    return path


def warehouse(folder: Path, days: list[str]) -> str:
    path = folder / "warehouse.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS deals (won_on TEXT)")
        connection.execute("DELETE FROM deals")
        connection.executemany("INSERT INTO deals VALUES (?)", [(day,) for day in days])
    connection.close()
    return f"sqlite:///{path}"


def at(moment: dt.datetime) -> None:
    set_clock(lambda: moment.astimezone(dt.UTC))


@pytest.fixture
def harness(engine: Engine, tmp_path: Path) -> Iterator[SlackHarness]:
    harness = start_harness(engine, plan=write_plan(tmp_path), now=NOW, environ={"KPIBOT_ADMINS": ADMIN})
    try:
        yield harness
    finally:
        stop_harness(harness)


def jobs_for(slack: SlackHarness, env: Mapping[str, str]) -> ScheduledJobs:
    jobs = make_jobs(make_web_client(slack.settings), slack.engine, slack.settings)
    # Retries without waiting: what they do is tested on fetch_once below.
    return dataclasses.replace(jobs, fetching=lambda: runs.Fetching(env=dict(env), base_delay=0))


def actuals(engine: Engine, key: str) -> list[tuple[str, Decimal, Source, str | None, bool]]:
    with transaction(engine) as session:
        rows = session.exec(
            select(Actual)
            .join(Kpi, col(Kpi.id) == Actual.kpi_id)
            .where(Kpi.key == key)
            .order_by(col(Actual.id))
        ).all()
        return [(a.period, Decimal(a.value), a.source, a.source_name, a.superseded_at is None) for a in rows]


def fetch_runs(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    with transaction(engine) as session:
        rows = session.exec(select(FetchRun).order_by(col(FetchRun.id))).all()
        return [(run.period, run.slot, run.status, run.error_code) for run in rows]


def notices(slack: SlackHarness) -> list[str]:
    return [
        call.args["text"] for call in slack.fake.calls("chat.postMessage") if call.args["channel"] == ADMIN
    ]


# -- the tests ---------------------------------------------------------------------------------------------


def test_a_fetched_value_is_stored_once_then_corrected_when_the_source_changes(
    harness: SlackHarness, tmp_path: Path
) -> None:
    env = {"KPIBOT_SQL_WAREHOUSE": warehouse(tmp_path, ["2026-10-05", "2026-11-02", "2026-11-20"])}
    jobs = jobs_for(harness, env)
    jobs.fetch(NOW.astimezone(dt.UTC))
    label = "sql (WAREHOUSE)"
    assert actuals(harness.engine, "won") == [
        ("2026-11", Decimal(2), Source.FETCH, label, True),
        ("2026-10", Decimal(1), Source.FETCH, label, True),
    ]
    assert [status for _, _, status, _ in fetch_runs(harness.engine)] == ["stored", "stored"]

    # The same hour again: its slot has its runs; nothing fetched, nothing stored.
    at(NOW + dt.timedelta(minutes=20))
    jobs.fetch((NOW + dt.timedelta(minutes=20)).astimezone(dt.UTC))
    assert len(fetch_runs(harness.engine)) == 2

    # The next hour, same numbers: two runs more, no value more.
    at(NOW + dt.timedelta(hours=1))
    jobs.fetch((NOW + dt.timedelta(hours=1)).astimezone(dt.UTC))
    assert [status for _, _, status, _ in fetch_runs(harness.engine)][2:] == ["unchanged", "unchanged"]
    assert len(actuals(harness.engine, "won")) == 2

    # A late deal in November: a correction with history, October untouched.
    warehouse(tmp_path, ["2026-10-05", "2026-11-02", "2026-11-20", "2026-11-29"])
    at(NOW + dt.timedelta(hours=2))
    jobs.fetch((NOW + dt.timedelta(hours=2)).astimezone(dt.UTC))
    assert harness.live_values("won") == {"2026-11": Decimal(3), "2026-10": Decimal(1)}
    november = [row for row in actuals(harness.engine, "won") if row[0] == "2026-11"]
    assert [(row[1], row[4]) for row in november] == [(Decimal(2), False), (Decimal(3), True)]
    assert actuals(harness.engine, "calls") == []  # a reported KPI is never fetched


def test_two_schedulers_at_once_store_one_value_per_kpi_and_period(
    harness: SlackHarness, database_url: Any
) -> None:
    with transaction(harness.engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == "won")).one()
        kpi.fetch_source = {"kind": KIND}
        session.add(kpi)

    def slow(request: FetchRequest) -> Decimal:
        time.sleep(0.3)  # both processes are inside the slot at once
        return Decimal(7)

    SCRIPT[:] = [slow]
    now = NOW.astimezone(dt.UTC)
    engines = [make_engine(database_url), make_engine(database_url)]
    results: list[list[runs.RunOutcome]] = []
    start = threading.Barrier(2)

    def scheduler(engine: Engine) -> None:
        start.wait()
        results.append(runs.fetch_kpis(engine, now, fetching=runs.Fetching(env={})))

    threads = [threading.Thread(target=scheduler, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    statuses = sorted(outcome.status for result in results for outcome in result)
    assert statuses == ["skipped", "skipped", "stored", "stored"]
    assert len(CALLS) == 2  # one fetch per period, not two
    assert harness.live_values("won") == {"2026-11": Decimal(7), "2026-10": Decimal(7)}
    assert len(actuals(harness.engine, "won")) == 2


def test_admins_are_told_once_per_failure_and_once_on_recovery(harness: SlackHarness, tmp_path: Path) -> None:
    env = {"KPIBOT_SQL_WAREHOUSE": f"sqlite:///{tmp_path / 'no-such-warehouse.db'}"}
    jobs = jobs_for(harness, env)
    for hour in range(3):  # three failing hours: one notice
        at(NOW + dt.timedelta(hours=hour))
        jobs.fetch((NOW + dt.timedelta(hours=hour)).astimezone(dt.UTC))
    harness.settle()
    assert [code for _, _, _, code in fetch_runs(harness.engine)] == ["connect"] * 6
    assert actuals(harness.engine, "won") == []
    (failed,) = notices(harness)
    assert "受注数" in failed and "`won`" in failed and "接続できませんでした" in failed
    assert "no-such-warehouse.db" in failed

    env["KPIBOT_SQL_WAREHOUSE"] = warehouse(tmp_path, ["2026-11-02"])
    for hour in (3, 4):  # recovered: one notice
        at(NOW + dt.timedelta(hours=hour))
        jobs.fetch((NOW + dt.timedelta(hours=hour)).astimezone(dt.UTC))
    assert len(notices(harness)) == 2 and "復旧しました" in notices(harness)[1]

    env["KPIBOT_SQL_WAREHOUSE"] = f"sqlite:///{tmp_path / 'gone.db'}"
    at(NOW + dt.timedelta(hours=5))
    jobs.fetch((NOW + dt.timedelta(hours=5)).astimezone(dt.UTC))
    assert len(notices(harness)) == 3  # a new failure is a new notice
    with transaction(harness.engine) as session:
        posts = session.exec(select(Post).where(Post.kind == PostKind.NOTICE)).all()
        assert sorted(post.period for post in posts) == ["e1", "e2", "e3"]
        (state,) = session.exec(select(FetchState)).all()
        assert state.failing and state.error_code == "connect" and state.episode == 3


def test_retries_back_off_and_honour_retry_after() -> None:
    request = FetchRequest("won", KIND, {}, dt.date(2026, 11, 1), dt.date(2026, 12, 1))
    waits: list[float] = []
    fetching = runs.Fetching(env={}, wait=lambda seconds: bool(waits.append(seconds)))

    SCRIPT[:] = [fails("rate_limited", retry_after=7), value(5)]
    assert runs.fetch_once(request, fetching) == (Decimal(5), 2)
    assert waits == [7]

    waits.clear()
    SCRIPT[:] = [fails("server_error"), fails("server_error"), fails("server_error")]
    with pytest.raises(FetchError) as caught:
        runs.fetch_once(request, fetching)
    assert caught.value.code == "server_error" and waits == [5.0, 10.0]  # base doubling, 3 attempts

    waits.clear()
    SCRIPT[:] = [fails("rate_limited", retry_after=3600)]  # longer than a tick waits: the next tick retries
    with pytest.raises(FetchError):
        runs.fetch_once(request, fetching)
    assert waits == []

    SCRIPT[:] = [fails("no_row", transient=False)]
    with pytest.raises(FetchError):
        runs.fetch_once(request, fetching)
    assert waits == []  # not transient: no retry


def test_a_source_removed_from_the_plan_while_fetching_stores_nothing(
    harness: SlackHarness, tmp_path: Path
) -> None:
    plan_with = write_plan(tmp_path, won_source=f"{{kind: {KIND}}}")
    import_plan(harness.engine, plan_with)
    removed = tmp_path / "removed"
    removed.mkdir()
    plan_without = write_plan(removed).read_text(encoding="utf-8")
    plan_without = plan_without.replace(
        '    source: {kind: sql, connection: WAREHOUSE, query: "'
        + QUERY
        + '"}\n    every: 1h\n    max_age: 26h\n',
        "",
    )
    (removed / "plan.yaml").write_text(plan_without, encoding="utf-8")

    def removed_meanwhile(request: FetchRequest) -> Decimal:
        import_plan(harness.engine, removed / "plan.yaml")
        return Decimal(4)

    SCRIPT[:] = [removed_meanwhile]
    outcomes = runs.fetch_kpis(harness.engine, NOW.astimezone(dt.UTC), fetching=runs.Fetching(env={}))
    assert [(outcome.status, outcome.error and outcome.error.code) for outcome in outcomes] == [
        ("failed", "removed"),
        ("failed", "removed"),
    ]
    assert actuals(harness.engine, "won") == []
    # Without a source it is no longer fetched at all.
    assert runs.fetch_kpis(harness.engine, NOW.astimezone(dt.UTC), fetching=runs.Fetching(env={})) == []


def test_a_value_the_kpi_cannot_store_is_a_failed_run(harness: SlackHarness, tmp_path: Path) -> None:
    import_plan(harness.engine, write_plan(tmp_path, won_source=f"{{kind: {KIND}}}"))
    SCRIPT[:] = [value("1e20")]  # beyond what kpibot stores exactly
    outcomes = runs.fetch_kpis(harness.engine, NOW.astimezone(dt.UTC), fetching=runs.Fetching(env={}))
    assert {(outcome.status, outcome.error and outcome.error.code) for outcome in outcomes} == {
        ("failed", "refused")
    }
    assert actuals(harness.engine, "won") == []


def test_kpi_list_says_which_kpis_are_fetched_and_from_where(harness: SlackHarness) -> None:
    body = "\n".join(
        block["text"]["text"]
        for block in harness.command("list", user_id="U0MKT1").args["blocks"]
        if block.get("type") == "section"
    )
    won = next(line for line in body.splitlines() if line.startswith("• `won`"))
    calls = next(line for line in body.splitlines() if line.startswith("• `calls`"))
    assert won.endswith(" · 取得元: sql (WAREHOUSE)(自動取得)")
    assert "取得元" not in calls  # reported by its owner


def test_a_fetched_kpi_is_neither_in_the_digests_not_reported_list_nor_a_missing_report_alert(
    harness: SlackHarness,
) -> None:
    # Both KPIs exist since January and neither has a value: `calls` is its owner's to report,
    # `won` its source's to deliver (a gap there is a stale mark and the admins' notice).
    with transaction(harness.engine) as session:
        for kpi in session.exec(select(Kpi)).all():
            kpi.created_at = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
            session.add(kpi)
    with transaction(harness.engine) as session:
        marketing = session.exec(select(Department).where(Department.key == "marketing")).one()
        digest = build_digest(session, marketing, NOW.date(), None)
        findings = scan_department(session, marketing, NOW.date())
        missing = [kpi.key for item in digest.missing for kpi in item.kpis]
        missing_alerts = [f.kpi.key for f in findings if f.reason is AlertReason.MISSING]
    assert missing == ["calls"]
    assert missing_alerts == ["calls"]


def test_the_digest_shows_a_failing_source_as_stale_with_the_reason_and_the_age(
    harness: SlackHarness, tmp_path: Path
) -> None:
    good = {"KPIBOT_SQL_WAREHOUSE": warehouse(tmp_path, ["2026-11-02", "2026-11-20"])}
    jobs_for(harness, good).fetch(NOW.astimezone(dt.UTC))
    later = NOW + dt.timedelta(hours=3)
    at(later)
    broken = {"KPIBOT_SQL_WAREHOUSE": f"sqlite:///{tmp_path / 'gone.db'}"}
    jobs_for(harness, broken).fetch(later.astimezone(dt.UTC))

    before = len(harness.fake.calls("chat.postMessage"))
    harness.command("digest marketing", user_id=ADMIN)
    harness.settle()
    posted = json.dumps(
        [
            call.args
            for call in harness.fake.calls("chat.postMessage")[before:]
            if call.args["channel"] != ADMIN
        ],
        ensure_ascii=False,
    )
    assert "受注数" in posted
    assert "取得失敗(接続できませんでした)・最後の正常値 3 時間前" in posted
    assert harness.live_values("won") == {
        "2026-11": Decimal(2),
        "2026-10": Decimal(0),
    }  # the last good values


def test_a_fetched_kpis_countermeasure_is_followed_by_the_schedulers_own_jobs(
    harness: SlackHarness, tmp_path: Path
) -> None:
    """No one reports `won`: its countermeasure's effect comes from the fetched figures alone, said by
    the fetch job while November runs (judged on its pace) and by the hourly scan once it ended."""

    def effects() -> list[str]:
        calls = harness.fake.calls("chat.postMessage")
        return [
            str(c.args["text"])
            for c in calls
            if c.args.get("thread_ts") == thread and ":bar_chart:" in c.args["text"]
        ]

    def tick(moment: dt.datetime, deals: list[str]) -> None:
        at(moment)
        warehouse(tmp_path, deals)
        jobs.fetch(moment.astimezone(dt.UTC))
        harness.settle()

    october = ["2026-10-05"]
    env = {"KPIBOT_SQL_WAREHOUSE": warehouse(tmp_path, october)}
    jobs = jobs_for(harness, env)
    # 5 November: October ended at 1 deal of 10 (an alert); November's 0 is too early to judge.
    tick(dt.datetime(2026, 11, 5, 10, tzinfo=JST), october)
    harness.command(
        "countermeasure won 紹介キャンペーンを実施する", user_id="U0MKT1", channel_id="C0MARKETING"
    )
    harness.settle()
    with harness.session() as session:
        [cm] = session.exec(select(Countermeasure)).all()
        alert = session.get(Alert, cm.alert_id)
    assert alert is not None and alert.period == "2026-10" and cm.baseline_value == Decimal(1)
    thread = str(cm.thread_ts)
    assert effects() == []

    # 20 November: 7 deals so far, 70 % of the month's target, but on pace for 10.5: provisional.
    november = [f"2026-11-{day:02d}" for day in (2, 4, 8, 11, 13, 16, 19)]
    tick(dt.datetime(2026, 11, 20, 10, tzinfo=JST), october + november)
    [running] = effects()
    assert "2026年10月 1件(達成率 10%) → 2026年11月 *7件*" in running
    assert "このペースなら期末 10.5件" in running
    assert "効果あり" in running and "期中の暫定" in running
    with harness.session() as session:
        assert session.get(Countermeasure, cm.id).verdict is None  # type: ignore[union-attr]

    # 1 December: November ended at 9 (two late deals fetched with it): the final verdict, once,
    # whether the fetch or the hourly scan gets there first; the next hour says nothing more.
    final_deals = october + november + ["2026-11-25", "2026-11-27"]
    tick(dt.datetime(2026, 12, 1, 10, tzinfo=JST), final_deals)
    at(dt.datetime(2026, 12, 1, 11, tzinfo=JST))
    jobs.scan(dt.datetime(2026, 12, 1, 11, tzinfo=JST).astimezone(dt.UTC))
    final = effects()[1:]
    assert len(final) == 1 and "2026年11月 *9件*" in final[0] and "効果あり" in final[0]
    assert "期中の暫定" not in final[0]
    with harness.session() as session:
        assert session.get(Countermeasure, cm.id).verdict == "worked"  # type: ignore[union-attr]
