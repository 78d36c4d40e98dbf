"""Posting digests and reminders for real: the scheduler and its jobs, `/kpi digest` and `kpibot digest`.

Every part is the real one except Slack: the app's WebClient talks HTTP to tests.fakeslack, the
ledger lives in SQLite or PostgreSQL, and time is whatever bot.clock is set to. Nothing waits for a
real schedule: the scheduler's catch-up and run are called at chosen instants.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import jpholiday
import pytest
from PIL import Image
from slack_sdk.http_retry import builtin_handlers
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.models.blocks import Block
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import col, select

import bot.digests.flows
from bot import outbox
from bot.clock import set_clock
from bot.config import load_settings
from bot.database import make_engine, transaction
from bot.models import Department, Kpi, Post, PostKind, PostStatus, Source
from bot.reports.actuals import record_actual
from bot.schedule import jobs as scheduled
from bot.schedule.jobs import ScheduledJobs
from bot.schedule.scheduler import Scheduler
from bot.scorecard import reviewed_period
from handlers.blocks import check_chart
from handlers.cli import main
from handlers.client import make_web_client
from handlers.digests import interactive as digests_surface
from tests.fakeslack.harness import SlackHarness
from tests.fakeslack.server import Call, FakeSlack
from tests.plans import count_kpi
from tests.test_digest import record

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")

# Monday 2026-11-30 09:00 JST: every department's default digest slot.
SLOT = dt.datetime(2026, 11, 30, 9, 0, tzinfo=TOKYO).astimezone(dt.UTC)
PERIOD = "2026-11-30"
CHANNELS = {
    "customer_success": "C0CS",
    "division": "C0DIVISION",
    "inside_sales": "C0INSIDESALES",
    "marketing": "C0MARKETING",
    "sales": "C0SALES",
}
ADMIN = "U0ADMIN"


# -- helpers ---------------------------------------------------------------------------------


def at(when: dt.datetime) -> dt.datetime:
    """Set the clock to `when` (aware); returns it in UTC."""
    now = when.astimezone(dt.UTC)
    set_clock(lambda: now)
    return now


def make_jobs(engine: Engine, fake: FakeSlack, **environ: str) -> ScheduledJobs:
    settings = load_settings(
        {
            "DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": fake.url,
            "KPIBOT_ADMINS": ADMIN,
            **environ,
        },
        env_file=None,
    )
    return digests_surface.make_jobs(make_web_client(settings), engine, settings)


def roots(fake: FakeSlack, channel: str | None = None, *, failed: bool = False) -> list[Call]:
    """Channel messages that start a digest (no thread_ts); successful ones unless `failed`."""
    return [
        call
        for call in fake.calls("chat.postMessage")
        if "thread_ts" not in call.args
        and str(call.args.get("channel", "")).startswith("C")
        and call.failed is failed
        and (channel is None or call.args["channel"] == channel)
    ]


def root_channels(fake: FakeSlack) -> Counter[str]:
    return Counter(call.args["channel"] for call in roots(fake))


def dms(fake: FakeSlack, user_id: str | None = None) -> list[Call]:
    return [
        call
        for call in fake.calls("chat.postMessage")
        if str(call.args.get("channel", "")).startswith("U")
        and not call.failed
        and (user_id is None or call.args["channel"] == user_id)
    ]


def department_id(engine: Engine, key: str) -> int:
    with transaction(engine) as session:
        found = session.exec(select(Department.id).where(Department.key == key)).one()
    assert found is not None
    return found


def posts(engine: Engine, kind: PostKind = PostKind.DIGEST) -> dict[tuple[str, str, str], Post]:
    """Ledger rows of `kind` by (department key, period, subject)."""
    with transaction(engine) as session:
        rows = session.exec(
            select(Post, Department.key)
            .join(Department, col(Department.id) == Post.department_id)
            .where(Post.kind == kind)
        ).all()
    return {(key, post.period, post.subject): post for post, key in rows}


def digest_post(engine: Engine, key: str, period: str = PERIOD) -> Post:
    return posts(engine)[(key, period, "")]


def update_department(engine: Engine, key: str, **fields: Any) -> None:
    with transaction(engine) as session:
        department = session.exec(select(Department).where(Department.key == key)).one()
        for name, value in fields.items():
            setattr(department, name, value)
        session.add(department)


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            else:
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def assert_within_block_kit_limits(call: Call) -> None:
    """Slack's limits (design §6), checked by hand and by slack_sdk's own validators."""
    blocks = call.args.get("blocks") or []
    assert call.args.get("text"), "a message needs fallback text"
    assert len(blocks) <= 50
    assert sum(len(text) for text in _texts(blocks)) < 4000
    for block in blocks:
        if block["type"] == "data_visualization":  # no slack_sdk model: Slack's documented limits
            check_chart(block)
            continue
        parsed = Block.parse(block)
        assert parsed is not None
        parsed.validate_json()
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= 3000
            assert len(block.get("fields", [])) <= 10
        if block["type"] == "context":
            assert len(block["elements"]) <= 10


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def plan(example_plan: Engine) -> Engine:
    return example_plan


@pytest.fixture
def jobs(plan: Engine, fake: FakeSlack) -> ScheduledJobs:
    return make_jobs(plan, fake)


@pytest.fixture
def make_scheduler(plan: Engine) -> Iterator[Callable[..., Scheduler]]:
    # A lock key of this test's own: other test runs may share the PostgreSQL server.
    lock_key = random.randrange(1, 2**31)
    made: list[Scheduler] = []

    def make(jobs: ScheduledJobs, engine: Engine | None = None) -> Scheduler:
        scheduler = Scheduler(engine or plan, jobs, retry_delays=(0, 0, 0), lock_key=lock_key)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown(wait=True)


@pytest.fixture
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk sleeps Retry-After plus up to 1 s of jitter; the fake says 0, no jitter here."""
    monkeypatch.setattr(builtin_handlers, "random", SimpleNamespace(random=lambda: 0.0))


# -- one digest --------------------------------------------------------------------------------


# Sales needing attention on 2026-11-30 (it reviews 2026-10): the digest shows a trend chart.
SLIPPING = {"new_approaches": {"2026-09": 95, "2026-10": 60}, "pipeline_deals": {"2026-W48": 20}}


def assert_png_grid_of_sales_in_thread(fake: FakeSlack, engine: Engine, post: Post) -> None:
    """The PNG grid uploaded once, in the digest's thread, drawn from every Sales KPI."""
    [asked] = fake.calls("files.getUploadURLExternal")
    assert asked.args["filename"] == "kpibot-sales.png"
    [completed] = fake.calls("files.completeUploadExternal")
    assert completed.args["channel_id"] == "C0SALES" and completed.args["thread_ts"] == post.ts
    [(file_id, png)] = fake.uploads.items()
    assert completed.args["files"][0]["id"] == file_id
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    chart = json.loads(image.text["kpibot"])  # type: ignore[attr-defined]
    with transaction(engine) as session:
        sales_kpis = session.exec(
            select(Kpi.name_ja).where(Kpi.department_id == department_id(engine, "sales"))
        ).all()
    assert {series["name"] for series in chart["series"]} == set(sales_kpis)
    assert "営業部" in chart["title"]


def test_digest_goes_to_its_channel_in_one_call_pointing_to_kpi_chart(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine
) -> None:
    at(SLOT + dt.timedelta(seconds=30))
    jobs.digest("sales", SLOT)

    [root] = roots(fake)
    assert root.args["channel"] == "C0SALES"
    assert "営業部" in root.args["text"]
    header = root.args["blocks"][0]
    assert header["type"] == "header" and "営業部" in header["text"]["text"]
    assert_within_block_kit_limits(root)

    post = digest_post(engine, "sales")
    assert post.status is PostStatus.SENT and post.ts and post.channel_id == "C0SALES"
    assert post.attempts == 1 and post.sent_at is not None and post.error is None
    # Everything after the root is in its thread.
    for reply in fake.calls("chat.postMessage")[1:]:
        assert reply.args == {**reply.args, "channel": "C0SALES", "thread_ts": post.ts}
        assert_within_block_kit_limits(reply)
    # No KPI needs attention: no chart posted; the PNG grid is one command away.
    assert [call.method for call in fake.calls()] == ["chat.postMessage"]
    assert "`/kpi chart sales`" in "\n".join(_texts(root.args["blocks"]))

    calls = len(fake.calls())
    jobs.digest("sales", SLOT)
    assert len(fake.calls()) == calls
    assert digest_post(engine, "sales").ts == post.ts


def test_a_digest_with_its_native_chart_is_one_web_api_call_and_draws_no_png(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine
) -> None:
    record(engine, SLIPPING)
    at(SLOT + dt.timedelta(seconds=30))
    jobs.digest("sales", SLOT)

    [root] = roots(fake)
    kinds = [block["type"] for block in root.args["blocks"]]
    assert "table" in kinds and "data_visualization" in kinds
    assert [call.method for call in fake.calls()] == ["chat.postMessage"]
    assert fake.uploads == {}
    assert "`/kpi chart sales`" in "\n".join(_texts(root.args["blocks"]))


def test_a_digest_whose_native_chart_is_refused_gets_the_png_grid_in_its_thread(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine
) -> None:
    record(engine, SLIPPING)
    fake.refuse_blocks("data_visualization")
    at(SLOT + dt.timedelta(seconds=30))
    jobs.digest("sales", SLOT)

    [root] = roots(fake)
    assert not any(block["type"] == "data_visualization" for block in root.args["blocks"])
    post = digest_post(engine, "sales")
    [held] = [message for message in fake.messages("C0SALES") if not message.get("thread_ts")]
    assert post.status is PostStatus.SENT and post.ts == held["ts"]
    assert_png_grid_of_sales_in_thread(fake, engine, post)
    # The refused message, its fallback, then files_upload_v2's three calls.
    assert [call.method for call in fake.calls()] == [
        "chat.postMessage",
        "chat.postMessage",
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]

    calls = len(fake.calls())
    jobs.digest("sales", SLOT)
    assert len(fake.calls()) == calls


def test_a_digest_too_big_for_one_message_continues_in_its_thread(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine
) -> None:
    record(engine, SLIPPING)  # a chart to show, and no room for a table: the PNG grid in the thread
    sales = department_id(engine, "sales")
    with transaction(engine) as session:
        for i in range(60):
            session.add(
                count_kpi(
                    f"big_{i:02d}",
                    sales,
                    name_ja=f"とても長い名前の指標 {i:02d} " + "あ" * 150,
                    name_en=f"A metric with a very long name {i:02d} " + "x" * 150,
                    owner_user_id=f"U0OWNER{i:02d}",
                    position=100 + i,
                )
            )
    at(SLOT + dt.timedelta(seconds=30))
    jobs.digest("sales", SLOT)

    [root] = roots(fake)
    post = digest_post(engine, "sales")
    messages = fake.calls("chat.postMessage")
    replies = messages[1:]
    assert replies, "60 more KPIs do not fit one message"
    assert all(reply.args["thread_ts"] == post.ts for reply in replies)
    assert all(reply.args["channel"] == "C0SALES" for reply in replies)
    for message in messages:
        assert_within_block_kit_limits(message)
    # Split, not truncated: every KPI is named somewhere in the digest.
    everything = "\n".join(text for message in messages for text in _texts(message.args["blocks"]))
    assert all(f"指標 {i:02d}" in everything for i in range(60))
    assert len(fake.calls("files.completeUploadExternal")) == 1


def test_a_thread_failure_after_the_root_is_logged_and_never_resent(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    record(engine, SLIPPING)
    fake.refuse_blocks("data_visualization")  # the PNG grid goes in the thread, and fails there
    fake.fail("files.completeUploadExternal", "internal_error", times=1)
    at(SLOT + dt.timedelta(seconds=30))
    jobs.digest("sales", SLOT)
    assert len(roots(fake, "C0SALES")) == 1
    assert digest_post(engine, "sales").status is PostStatus.SENT
    assert "incomplete: internal_error" in caplog.text
    assert dms(fake) == []
    jobs.digest("sales", SLOT)
    assert len(roots(fake, "C0SALES")) == 1


# -- the scheduler, end to end ---------------------------------------------------------------


def test_each_department_gets_its_digest_at_nine_local_time(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine, make_scheduler: Callable[..., Scheduler]
) -> None:
    scheduler = make_scheduler(jobs)
    # A minute early: nothing is due (last Monday's slots are too old and only logged).
    assert scheduler.catch_up(at(SLOT - dt.timedelta(seconds=30))) == []
    assert fake.calls() == []

    ran = scheduler.catch_up(at(SLOT + dt.timedelta(seconds=30)))
    assert sorted(ran) == sorted((key, SLOT) for key in CHANNELS)
    assert root_channels(fake) == Counter(CHANNELS.values())
    for key, channel in CHANNELS.items():
        post = digest_post(engine, key)
        assert (post.status, post.channel_id, post.attempts) == (PostStatus.SENT, channel, 1)
    division = roots(fake, "C0DIVISION")[0]
    assert division.args["blocks"][0]["type"] == "header"
    for message in fake.calls("chat.postMessage"):
        assert_within_block_kit_limits(message)

    # Again, and after a restart: nothing more.
    calls = len(fake.calls())
    assert scheduler.catch_up(at(SLOT + dt.timedelta(minutes=5))) == []
    assert make_scheduler(jobs).catch_up(at(SLOT + dt.timedelta(hours=1))) == []
    assert len(fake.calls()) == calls


def test_a_department_in_new_york_gets_its_digest_at_nine_in_new_york(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine, make_scheduler: Callable[..., Scheduler]
) -> None:
    update_department(engine, "customer_success", timezone="America/New_York")
    scheduler = make_scheduler(jobs)

    ran = scheduler.catch_up(at(SLOT + dt.timedelta(seconds=30)))
    assert "customer_success" not in {key for key, _ in ran}
    assert roots(fake, "C0CS") == []
    assert root_channels(fake) == Counter(c for k, c in CHANNELS.items() if k != "customer_success")

    new_york_nine = dt.datetime(2026, 11, 30, 9, 0, tzinfo=NEW_YORK).astimezone(dt.UTC)
    assert new_york_nine == dt.datetime(2026, 11, 30, 14, 0, tzinfo=dt.UTC)
    assert scheduler.catch_up(at(new_york_nine - dt.timedelta(seconds=30))) == []
    assert roots(fake, "C0CS") == []

    assert scheduler.catch_up(at(new_york_nine + dt.timedelta(seconds=30))) == [
        ("customer_success", new_york_nine)
    ]
    assert root_channels(fake) == Counter(CHANNELS.values())
    assert digest_post(engine, "customer_success", "2026-11-30").status is PostStatus.SENT


def test_after_three_hours_down_the_digest_is_posted_late_once(
    jobs: ScheduledJobs,
    fake: FakeSlack,
    make_scheduler: Callable[..., Scheduler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.schedule.scheduler")
    ran = make_scheduler(jobs).catch_up(at(SLOT + dt.timedelta(hours=3)))
    assert sorted(ran) == sorted((key, SLOT) for key in CHANNELS)
    assert root_channels(fake) == Counter(CHANNELS.values())
    assert "department sales: posting the digest of 2026-11-30T00:00:00+00:00 late" in caplog.text

    assert make_scheduler(jobs).catch_up(at(SLOT + dt.timedelta(hours=4))) == []
    assert root_channels(fake) == Counter(CHANNELS.values())


def test_after_thirty_hours_down_the_digest_is_skipped_and_logged(
    jobs: ScheduledJobs,
    fake: FakeSlack,
    make_scheduler: Callable[..., Scheduler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.schedule.scheduler")
    assert make_scheduler(jobs).catch_up(at(SLOT + dt.timedelta(hours=30))) == []
    assert fake.calls() == []
    for key in CHANNELS:
        assert f"department {key}: digest of 2026-11-30T00:00:00+00:00 skipped, older than" in caplog.text


def test_holiday_shift_moves_sales_to_tuesday_and_only_sales(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine, make_scheduler: Callable[..., Scheduler]
) -> None:
    holiday = dt.datetime(2027, 1, 11, 9, 0, tzinfo=TOKYO)  # 成人の日, a Monday
    assert holiday.weekday() == 0 and jpholiday.is_holiday(holiday.date())
    tuesday = holiday + dt.timedelta(days=1)
    scheduler = make_scheduler(jobs)

    ran = scheduler.catch_up(at(holiday + dt.timedelta(seconds=30)))
    assert {key for key, _ in ran} == set(CHANNELS) - {"sales"}
    assert roots(fake, "C0SALES") == []
    assert len(roots(fake, "C0MARKETING")) == 1

    ran = scheduler.catch_up(at(tuesday + dt.timedelta(seconds=30)))
    assert ran == [("sales", tuesday.astimezone(dt.UTC))]
    assert root_channels(fake) == Counter(CHANNELS.values())
    assert digest_post(engine, "sales", "2027-01-12").status is PostStatus.SENT
    assert ("sales", "2027-01-11", "") not in posts(engine)


# -- exactly once --------------------------------------------------------------------------------


def test_two_schedulers_post_each_digest_once(
    plan: Engine, fake: FakeSlack, engine: Engine, make_scheduler: Callable[..., Scheduler]
) -> None:
    other_engine = make_engine(engine.url)
    try:
        first = make_scheduler(make_jobs(engine, fake), engine)
        second = make_scheduler(make_jobs(other_engine, fake), other_engine)
        if engine.dialect.name == "postgresql":
            assert first.try_lead() and first.is_leader
            assert not second.try_lead() and not second.is_leader
        now = at(SLOT + dt.timedelta(seconds=30))
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def catch_up(scheduler: Scheduler) -> None:
            try:
                start.wait(timeout=10)
                scheduler.catch_up(now)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=catch_up, args=(s,)) for s in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []

        assert root_channels(fake) == Counter(CHANNELS.values())
        rows = posts(engine)
        assert len(rows) == len(CHANNELS)
        assert all(row.status is PostStatus.SENT and row.attempts == 1 for row in rows.values())
    finally:
        other_engine.dispose()


def test_a_claim_left_by_a_crash_is_taken_over_after_the_lease(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine, make_scheduler: Callable[..., Scheduler]
) -> None:
    now = SLOT + dt.timedelta(minutes=15)
    at(now - outbox.LEASE - dt.timedelta(minutes=1))
    crashed = outbox.claim(
        engine, outbox.Key(department_id(engine, "sales"), PostKind.DIGEST, PERIOD), channel_id="C0SALES"
    )
    assert crashed is not None

    at(now)
    assert make_scheduler(jobs).run("digest", "sales", SLOT)
    assert len(roots(fake, "C0SALES")) == 1
    post = digest_post(engine, "sales")
    assert (post.status, post.attempts) == (PostStatus.SENT, 2)
    jobs.digest("sales", SLOT)
    assert len(roots(fake, "C0SALES")) == 1


def test_a_fresh_claim_of_another_process_is_left_alone(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine
) -> None:
    sales = department_id(engine, "sales")
    now = SLOT + dt.timedelta(minutes=15)
    at(now - dt.timedelta(minutes=1))
    assert outbox.claim(engine, outbox.Key(sales, PostKind.DIGEST, PERIOD)) is not None

    at(now)
    jobs.digest("sales", SLOT)
    department = scheduled.department(engine, "sales")
    assert department is not None
    day = SLOT.astimezone(TOKYO).date()
    outcome = bot.digests.flows.post(
        jobs.outbox, jobs.digest_messages, jobs.settings, department, day, period=PERIOD
    )
    assert outcome.status == "busy"
    assert fake.calls() == []
    post = digest_post(engine, "sales")
    assert (post.status, post.attempts, post.ts) == (PostStatus.CLAIMED, 1, None)


def _db_error() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def complete_fails_once(monkeypatch: pytest.MonkeyPatch) -> list[OperationalError]:
    """The ledger's next `complete` (right after Slack took the post) fails as a lost database
    would; the returned list empties when it has."""
    real_complete = outbox.complete
    failures = [_db_error()]

    def flaky_complete(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        real_complete(*args, **kwargs)

    monkeypatch.setattr(outbox, "complete", flaky_complete)
    return failures


def test_database_unavailable_when_the_job_fires_is_retried_and_posts_once(
    jobs: ScheduledJobs,
    fake: FakeSlack,
    engine: Engine,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_build = bot.digests.flows.build
    failures = [_db_error()]

    def flaky_build(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_build(*args, **kwargs)

    monkeypatch.setattr(bot.digests.flows, "build", flaky_build)
    at(SLOT + dt.timedelta(seconds=30))
    assert make_scheduler(jobs).run("digest", "sales", SLOT) is True
    assert failures == []
    assert len(roots(fake, "C0SALES")) == 1
    post = digest_post(engine, "sales")
    assert (post.status, post.attempts) == (PostStatus.SENT, 1)
    assert "database unavailable (attempt 1/4)" in caplog.text


def test_database_unavailable_right_after_the_send_records_it_on_retry(
    jobs: ScheduledJobs,
    fake: FakeSlack,
    engine: Engine,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    complete_fails_once(monkeypatch)
    at(SLOT + dt.timedelta(seconds=30))
    scheduler = make_scheduler(jobs)
    assert scheduler.run("digest", "sales", SLOT) is True
    [root] = roots(fake, "C0SALES")
    post = digest_post(engine, "sales")
    # Recorded as sent by the retry, so no later catch-up (after the lease) sends it again.
    assert post.status is PostStatus.SENT and post.ts == "1700000000.000100"
    assert scheduler.catch_up(at(SLOT + dt.timedelta(hours=2))) != []  # the other departments
    assert len(roots(fake, "C0SALES")) == 1


# -- many at once ------------------------------------------------------------------------------


def assert_each_posted_once_and_the_shared_channel_in_order(fake: FakeSlack, engine: Engine) -> None:
    """Every department's digest once, Sales' in Marketing's channel (update_department) after
    Marketing's: one after the other, in the catch-up's (slot, key) order."""
    assert root_channels(fake) == Counter({"C0CS": 1, "C0DIVISION": 1, "C0INSIDESALES": 1, "C0MARKETING": 2})
    shared = [call.args["metadata"]["event_payload"]["key"] for call in roots(fake, "C0MARKETING")]
    marketing, sales = department_id(engine, "marketing"), department_id(engine, "sales")
    assert [key.split(":")[0] for key in shared] == [str(marketing), str(sales)]
    ledger = posts(engine)
    assert {key for key, _, _ in ledger} == set(CHANNELS)
    assert all(post.status is PostStatus.SENT and post.attempts == 1 for post in ledger.values())
    assert len({post.ts for post in ledger.values()}) == len(CHANNELS)


def test_catch_up_posts_channels_in_parallel_each_once_and_a_shared_channel_in_order(
    plan: Engine,
    fake: FakeSlack,
    engine: Engine,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Marketing and Sales share a channel: four channels for five digests, two posted at once.
    update_department(engine, "sales", channel_id="C0MARKETING")
    monkeypatch.setattr(scheduled, "POST_WORKERS", 2)
    fake.latency = 0.5  # long enough that two posts in flight overlap however loaded the machine

    ran = make_scheduler(make_jobs(plan, fake)).catch_up(at(SLOT + dt.timedelta(seconds=30)))

    assert [key for key, _ in ran] == sorted(CHANNELS)
    assert fake.max_in_flight == 2  # in parallel, and never more calls at once than the cap
    assert_each_posted_once_and_the_shared_channel_in_order(fake, engine)


def test_the_catch_up_posts_a_chunk_while_it_builds_the_next_and_a_channel_stays_in_order(
    jobs: ScheduledJobs,
    fake: FakeSlack,
    engine: Engine,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One department per chunk: five builds, one after the other.
    update_department(engine, "sales", channel_id="C0MARKETING")
    monkeypatch.setattr(scheduled, "BUILD_CHUNK", 1)
    monkeypatch.setattr(scheduled, "POST_THREADS", 1)
    builds: list[list[str]] = []
    posted_before_the_last_build: list[bool] = []
    build_many = bot.digests.flows.build_many

    def recorded(engine_: Engine, departments: list[Department], *args: Any, **kwargs: Any) -> Any:
        builds.append([department.key for department in departments])
        if len(builds) == len(CHANNELS):  # the last: Slack has the first digest already, or gets it now
            try:
                fake.wait_for("chat.postMessage", timeout=30)
                posted_before_the_last_build.append(True)
            except AssertionError:  # nothing is posted while the catch-up builds
                posted_before_the_last_build.append(False)
        return build_many(engine_, departments, *args, **kwargs)

    monkeypatch.setattr(bot.digests.flows, "build_many", recorded)

    ran = make_scheduler(jobs).catch_up(at(SLOT + dt.timedelta(seconds=30)))

    assert builds == [[key] for key, _ in ran] and len(ran) == len(CHANNELS)
    assert posted_before_the_last_build == [True]
    assert_each_posted_once_and_the_shared_channel_in_order(fake, engine)


def test_a_post_that_raises_in_the_catch_ups_pool_is_recorded_by_its_retry_not_sent_twice(
    jobs: ScheduledJobs,
    fake: FakeSlack,
    engine: Engine,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Whichever post of the pool completes first: Slack has it, the ledger not (yet).
    failures = complete_fails_once(monkeypatch)
    ran = make_scheduler(jobs).catch_up(at(SLOT + dt.timedelta(seconds=30)))

    assert [key for key, _ in ran] == sorted(CHANNELS) and failures == []
    assert root_channels(fake) == Counter(CHANNELS.values())
    assert all(digest_post(engine, key).status is PostStatus.SENT for key in CHANNELS)


def test_department_jobs_firing_at_once_post_at_most_the_pools_worth(
    fake: FakeSlack,
    plan: Engine,
    engine: Engine,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 09:00: APScheduler's executor (10 threads) fires every department's job at once.
    monkeypatch.setattr(scheduled, "POST_WORKERS", 2)
    scheduler = make_scheduler(make_jobs(plan, fake))
    fake.latency = 0.5
    at(SLOT + dt.timedelta(seconds=30))
    scheduler.try_lead()
    scheduler.sync()
    aps = scheduler.apscheduler
    aps.start(paused=True)
    for job in aps.get_jobs():
        if job.id.startswith("digest:"):
            job.modify(next_run_time=dt.datetime.now(dt.UTC))
    aps.resume()
    deadline = time.monotonic() + 60
    while len(root_channels(fake)) < len(CHANNELS) and time.monotonic() < deadline:
        time.sleep(0.1)
    scheduler.shutdown(wait=True)

    assert root_channels(fake) == Counter(CHANNELS.values())
    assert fake.max_in_flight == 2
    assert all(digest_post(engine, key).status is PostStatus.SENT for key in CHANNELS)


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "ratelimited"])
def test_one_failing_channel_is_recorded_told_once_and_the_others_still_post(
    error: str,
    jobs: ScheduledJobs,
    fake: FakeSlack,
    engine: Engine,
    make_scheduler: Callable[..., Scheduler],
    caplog: pytest.LogCaptureFixture,
    no_retry_sleep: None,
) -> None:
    attempts = 1
    if error == "ratelimited":
        # Rate limited through every retry slack_sdk makes (then Slack recovers).
        [handler] = [
            h for h in jobs.outbox.poster.client.retry_handlers if isinstance(h, RateLimitErrorRetryHandler)
        ]
        attempts = handler.max_retry_count + 1
        fake.fail("chat.postMessage", error, times=attempts, retry_after=0, channel="C0CS")
    else:
        # The channel named: the catch-up posts several channels at once, not CS's first.
        fake.fail("chat.postMessage", error, times=1, channel="C0CS")
    caplog.set_level(logging.INFO)
    scheduler = make_scheduler(jobs)
    ran = scheduler.catch_up(at(SLOT + dt.timedelta(seconds=30)))
    first = ran[0][0]
    assert first == "customer_success"  # posted first: (slot, key) order

    failed = roots(fake, failed=True)
    assert [call.args["channel"] for call in failed] == ["C0CS"] * attempts
    assert root_channels(fake) == Counter(c for k, c in CHANNELS.items() if k != first)
    post = digest_post(engine, first)
    assert (post.status, post.error, post.ts, post.attempts) == (PostStatus.FAILED, error, None, 1)
    assert all(digest_post(engine, key).status is PostStatus.SENT for key in CHANNELS if key != first)
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "bot.digests.flows"]
    assert [r.getMessage() for r in logged] == [f"digest for {first} to C0CS failed: {error}"]
    [notice] = dms(fake)
    assert notice.args["channel"] == ADMIN
    assert "カスタマーサクセス部" in notice.args["text"] and "customer_success" in notice.args["text"]
    assert error in notice.args["text"]

    # Not retried by itself, and the admin is not told again: not by catch-up, not by the job.
    calls = len(fake.calls())
    assert scheduler.catch_up(at(SLOT + dt.timedelta(hours=1))) == []
    assert make_scheduler(jobs).run("digest", first, SLOT)
    assert len(fake.calls()) == calls
    assert digest_post(engine, first).status is PostStatus.FAILED


# -- reminders -----------------------------------------------------------------------------------


def test_reminders_dm_each_owner_with_missing_kpis_once(
    jobs: ScheduledJobs, fake: FakeSlack, engine: Engine
) -> None:
    at(dt.datetime(2026, 11, 27, 15, 0, tzinfo=TOKYO))  # the Friday before
    jobs.reminder("marketing", SLOT)
    assert Counter(call.args["channel"] for call in fake.calls("chat.postMessage")) == {
        "U0MKT1": 1,
        "U0MKT2": 1,
    }
    [mkt1] = dms(fake, "U0MKT1")
    [mkt2] = dms(fake, "U0MKT2")
    assert "`mqls`" in mkt1.args["text"] and "sql_conversion" not in mkt1.args["text"]  # a formula
    assert "`cost_per_lead`" in mkt2.args["text"] and "`website_visits`" in mkt2.args["text"]
    assert "2026-11-30 09:00" in mkt1.args["text"]

    jobs.reminder("marketing", SLOT)
    jobs.reminder("division", SLOT)
    assert len(fake.calls()) == 2
    rows = posts(engine, PostKind.REMINDER)
    assert set(rows) == {("marketing", PERIOD, "U0MKT1"), ("marketing", PERIOD, "U0MKT2")}
    assert all(row.status is PostStatus.SENT and row.ts for row in rows.values())

    # U0MKT2 reports everything the next digest reviews; only U0MKT1 is reminded.
    next_slot = SLOT + dt.timedelta(days=7)
    with transaction(engine) as session:
        for kpi in session.exec(select(Kpi).where(Kpi.owner_user_id == "U0MKT2")).all():
            period = reviewed_period(kpi.cadence, next_slot.astimezone(TOKYO).date())
            record_actual(
                session,
                kpi=kpi,
                period=period.key,
                value=Decimal(1),
                reported_by="U0MKT2",
                source=Source.COMMAND,
            )
    at(dt.datetime(2026, 12, 4, 15, 0, tzinfo=TOKYO))
    jobs.reminder("marketing", next_slot)
    assert len(dms(fake, "U0MKT1")) == 2
    assert len(dms(fake, "U0MKT2")) == 1


# -- /kpi digest -------------------------------------------------------------------------------


def test_kpi_digest_command(slack: SlackHarness) -> None:
    fake = slack.fake
    fake.set_user("U0BOSS", is_admin=True, locale="en-US")
    fake.set_user("U0NOBODY", locale="en-US")

    refused = slack.command("digest sales", user_id="U0NOBODY")
    assert "Only kpibot admins" in refused.args["text"]
    assert fake.calls("chat.postMessage") == []

    posted = slack.command("digest sales", user_id="U0BOSS")
    assert posted.args["response_type"] == "ephemeral"
    assert "Posted the digest for Sales to <#C0SALES>" in posted.args["text"]
    [root] = roots(fake)
    assert root.args["channel"] == "C0SALES"

    again = slack.command("digest sales", user_id="U0BOSS")
    assert "already posted today" in again.args["text"]
    assert "https://fake.slack.com/archives/C0SALES/p" in again.args["text"]
    assert len(roots(fake)) == 1

    unknown = slack.command("digest nowhere", user_id="U0BOSS")
    assert "Which department?" in unknown.args["text"]
    for key in CHANNELS:
        assert f"`{key}`" in unknown.args["text"]
    assert len(roots(fake)) == 1


# -- kpibot digest / kpibot scheduler ----------------------------------------------------------


@pytest.fixture
def cli(plan: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Engine:
    monkeypatch.chdir(tmp_path)
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "SLACK_API_URL",
        "KPIBOT_ADMINS",
        "KPIBOT_LOCALE",
        "KPIBOT_TIMEZONE",
        "KPIBOT_FISCAL_YEAR_START",
        "PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", plan.url.render_as_string(hide_password=False))
    at(SLOT + dt.timedelta(hours=1))
    return plan


def test_cli_dry_run_prints_blocks_and_writes_the_chart(
    cli: Engine, fake: FakeSlack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "charts"
    out_dir.mkdir()
    code = main(["digest", "--dry-run", "--department", "sales", "--output-dir", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = json.loads(captured.out)
    assert (printed["department"], printed["channel"]) == ("sales", "C0SALES")
    assert printed["messages"][0]["blocks"][0]["type"] == "header"
    assert printed["messages"][0]["text"]
    chart = out_dir / "kpibot-digest-sales.png"
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert fake.calls() == []
    assert posts(cli) == {}


def test_cli_digest_posts_once(
    cli: Engine, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", fake.url)
    assert main(["digest", "--locale", "en", "--department", "sales"]) == 0
    out = capsys.readouterr().out
    assert "sales: posted to C0SALES" in out
    assert root_channels(fake) == {"C0SALES": 1}
    assert all(call.token == "xoxb-test" for call in fake.calls("chat.postMessage"))

    assert main(["digest", "--locale", "en", "--department", "sales"]) == 0
    assert "already posted today" in capsys.readouterr().out
    assert root_channels(fake) == {"C0SALES": 1}


@pytest.mark.parametrize("argv", [["digest", "--department", "sales"], ["scheduler"]])
def test_cli_without_a_token_is_one_line_naming_it(
    argv: list[str], cli: Engine, fake: FakeSlack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "SLACK_BOT_TOKEN" in captured.err
    assert fake.calls() == []
    assert posts(cli) == {}
