"""The scheduler on SQLite and PostgreSQL: jobs follow departments, catch-up, retries, the leader lock.

Time is explicit: nothing waits for a real schedule. Job callables are a recording stand-in
for the lead's digest/reminder jobs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from bot.clock import set_clock, utcnow
from bot.database import transaction
from bot.errors import DatabaseUnavailable
from bot.models import Department, Post, PostKind, PostStatus
from bot.schedule.scheduler import Scheduler
from bot.schedule.slots import next_digest_slot, slot_key

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")

# Monday 2026-11-30 09:00 JST: the default digest slot.
SLOT = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


class RecordingJobs:
    """Records calls; raises the exceptions queued for a department, one per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dt.datetime]] = []
        self.failures: dict[str, list[Exception]] = {}
        self.hourly: list[tuple[str, dt.datetime]] = []
        self.scan_failures: list[Exception] = []

    def digest(self, department_key: str, slot: dt.datetime) -> None:
        self._call("digest", department_key, slot)

    def reminder(self, department_key: str, slot: dt.datetime) -> None:
        self._call("reminder", department_key, slot)

    def digests(self, due: Sequence[tuple[str, dt.datetime]]) -> list[tuple[str, dt.datetime]]:
        # Every digest left to `digest` one at a time: these tests record (and fail) each call.
        return list(due)

    # The hourly jobs are not what these tests are about (tests/test_alert_posting.py and
    # tests/test_countermeasures.py drive them); recorded all the same.
    def followups(self, now: dt.datetime) -> None:
        self.hourly.append(("followups", now))

    def scan(self, now: dt.datetime) -> None:
        self.hourly.append(("scan", now))
        if self.scan_failures:
            raise self.scan_failures.pop(0)

    def _call(self, kind: str, key: str, slot: dt.datetime) -> None:
        self.calls.append((kind, key, slot))
        queued = self.failures.get(key)
        if queued:
            raise queued.pop(0)


@pytest.fixture
def jobs() -> RecordingJobs:
    return RecordingJobs()


@pytest.fixture
def make_scheduler(engine: Engine, jobs: RecordingJobs) -> Iterator[Any]:
    # A lock key of this test's own: other test runs may share the PostgreSQL server.
    lock_key = random.randrange(1, 2**31)
    made: list[Scheduler] = []

    def make() -> Scheduler:
        scheduler = Scheduler(engine, jobs, retry_delays=(0, 0, 0), lock_key=lock_key)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown(wait=True)


def add_department(engine: Engine, key: str, **fields: Any) -> int:
    with transaction(engine) as session:
        fields.setdefault("channel_id", f"C{key.upper()}")
        department = Department(key=key, name_ja=key, name_en=key, **fields)
        session.add(department)
        session.flush()
        assert department.id is not None
        return department.id


def update_department(engine: Engine, key: str, **fields: Any) -> None:
    with transaction(engine) as session:
        department = session.exec(select(Department).where(Department.key == key)).one()
        for name, value in fields.items():
            setattr(department, name, value)
        session.add(department)


def mark_sent(engine: Engine, department_id: int, period: str) -> None:
    with transaction(engine) as session:
        session.add(
            Post(
                department_id=department_id,
                kind=PostKind.DIGEST,
                period=period,
                status=PostStatus.SENT,
                ts="1.0",
            )
        )


def db_error() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


# -- sync ------------------------------------------------------------------------------------


def test_sync_adds_one_job_per_department_and_kind(engine: Engine, make_scheduler: Any) -> None:
    add_department(engine, "sales")
    add_department(engine, "marketing", timezone="America/New_York", digest_cron="0 9 * * mon")
    add_department(engine, "cs", channel_id=None)  # no channel yet: still scheduled, the job decides
    scheduler = make_scheduler()
    scheduler.sync()
    assert scheduler.job_ids() == [
        "digest:cs",
        "digest:marketing",
        "digest:sales",
        "reminder:cs",
        "reminder:marketing",
        "reminder:sales",
    ]
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    assert scheduler.next_fire_time("digest:sales", now) == SLOT
    assert scheduler.next_fire_time("digest:marketing", now) == dt.datetime(2026, 11, 30, 14, tzinfo=dt.UTC)
    # Friday 15:00 in each department's own time zone.
    assert scheduler.next_fire_time("reminder:sales", now) == dt.datetime(2026, 11, 27, 15, tzinfo=TOKYO)
    assert scheduler.next_fire_time("reminder:marketing", now) == dt.datetime(
        2026, 11, 27, 15, tzinfo=NEW_YORK
    )
    friday_tokyo = dt.datetime(2026, 11, 27, 6, tzinfo=dt.UTC)
    assert scheduler.upcoming(now)[:2] == [("reminder:cs", friday_tokyo), ("reminder:sales", friday_tokyo)]


def test_sync_follows_edits_and_deletions(
    engine: Engine, make_scheduler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    add_department(engine, "sales")
    add_department(engine, "marketing")
    scheduler = make_scheduler()
    scheduler.sync()
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)

    caplog.set_level(logging.INFO, logger="bot.schedule.scheduler")
    scheduler.sync()
    assert "scheduled" not in caplog.text  # nothing changed: no job touched

    update_department(engine, "sales", digest_cron="30 10 * * wed", timezone="America/New_York")
    update_department(engine, "marketing", name_en="Marketing & PR")  # not a schedule change
    scheduler.sync()
    assert scheduler.next_fire_time("digest:sales", now) == dt.datetime(2026, 11, 25, 15, 30, tzinfo=dt.UTC)
    # Its reminder for today's digest was yesterday (Tuesday 15:00 EST): next is next Tuesday's.
    assert scheduler.next_fire_time("reminder:sales", now) == dt.datetime(2026, 12, 1, 20, tzinfo=dt.UTC)
    assert "department sales: rescheduled" in caplog.text
    assert "department marketing" not in caplog.text

    update_department(engine, "marketing", holiday_shift=True)
    scheduler.sync()
    # 2026-11-23 (勤労感謝の日) is a Monday: with holiday_shift the digest moves to Tuesday.
    before = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    assert scheduler.next_fire_time("digest:marketing", before) == dt.datetime(2026, 11, 24, tzinfo=dt.UTC)

    with transaction(engine) as session:
        session.execute(sa.delete(Department).where(Department.key == "sales"))
    scheduler.sync()
    assert scheduler.job_ids() == ["digest:marketing", "reminder:marketing"]


def test_invalid_schedule_is_logged_once_and_others_run(
    engine: Engine, make_scheduler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    add_department(engine, "sales", digest_cron="every monday")
    add_department(engine, "cs", timezone="Mars/Olympus")
    add_department(engine, "marketing")
    scheduler = make_scheduler()
    scheduler.sync()
    scheduler.sync()
    assert scheduler.job_ids() == ["digest:marketing", "reminder:marketing"]
    assert caplog.text.count("department sales: invalid schedule") == 1
    assert caplog.text.count("department cs: invalid schedule") == 1
    update_department(engine, "sales", digest_cron="0 9 * * fri")
    scheduler.sync()
    assert "digest:sales" in scheduler.job_ids()


# -- catch-up ----------------------------------------------------------------------------------


def test_catch_up_posts_a_slot_missed_3_hours_ago_once(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    add_department(engine, "sales")
    scheduler = make_scheduler()
    now = SLOT + dt.timedelta(hours=3)
    assert scheduler.catch_up(now) == [("sales", SLOT)]
    assert jobs.calls == [("digest", "sales", SLOT)]


def test_catch_up_skips_a_slot_30_hours_ago_and_logs_it_once(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs, caplog: pytest.LogCaptureFixture
) -> None:
    add_department(engine, "sales")
    scheduler = make_scheduler()
    now = SLOT + dt.timedelta(hours=30)
    assert scheduler.catch_up(now) == []
    scheduler.catch_up(now)
    assert jobs.calls == []
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1
    assert skipped[0].levelno == logging.WARNING
    assert "department sales" in skipped[0].getMessage()
    assert SLOT.isoformat() in skipped[0].getMessage()


def test_catch_up_leaves_a_sent_digest_alone(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    sales = add_department(engine, "sales")
    add_department(engine, "cs")
    mark_sent(engine, sales, "2026-11-30")
    scheduler = make_scheduler()
    assert scheduler.catch_up(SLOT + dt.timedelta(hours=3)) == [("cs", SLOT)]
    assert jobs.calls == [("digest", "cs", SLOT)]


def test_catch_up_uses_the_departments_own_timezone(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    new_york = add_department(engine, "us", timezone="America/New_York")
    add_department(engine, "sales")
    # Monday 09:00 EST is 14:00 UTC; its ledger period is the New York date.
    slot = dt.datetime(2026, 11, 30, 14, tzinfo=dt.UTC)
    mark_sent(engine, new_york, "2026-11-30")
    scheduler = make_scheduler()
    assert scheduler.catch_up(slot + dt.timedelta(hours=1)) == [("sales", SLOT)]


def test_a_failing_department_does_not_stop_the_others(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs, caplog: pytest.LogCaptureFixture
) -> None:
    add_department(engine, "cs")
    add_department(engine, "marketing")
    add_department(engine, "sales")
    jobs.failures["marketing"] = [RuntimeError("template exploded")]
    scheduler = make_scheduler()
    scheduler.catch_up(SLOT + dt.timedelta(hours=1))
    assert [key for _, key, _ in jobs.calls] == ["cs", "marketing", "sales"]
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failed) == 1
    assert "department marketing" in failed[0].getMessage()
    assert failed[0].exc_info is not None


# -- retries -----------------------------------------------------------------------------------


def test_a_job_is_retried_while_the_database_is_unavailable(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs, caplog: pytest.LogCaptureFixture
) -> None:
    jobs.failures["sales"] = [db_error(), DatabaseUnavailable("the database is unavailable")]
    scheduler = make_scheduler()
    assert scheduler.run("digest", "sales", SLOT) is True
    assert jobs.calls == [("digest", "sales", SLOT)] * 3
    assert caplog.text.count("retrying") == 2


def test_a_job_gives_up_after_its_retries(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs, caplog: pytest.LogCaptureFixture
) -> None:
    jobs.failures["sales"] = [db_error() for _ in range(5)]
    scheduler = make_scheduler()
    assert scheduler.run("digest", "sales", SLOT) is False
    assert len(jobs.calls) == 4
    assert "department sales: digest" in caplog.text
    assert "failed after 4 attempts" in caplog.text


# -- firing ------------------------------------------------------------------------------------


def test_fire_runs_the_slot_that_just_passed(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    add_department(engine, "sales")
    scheduler = make_scheduler()
    scheduler.sync()
    assert scheduler.try_lead()
    set_clock(lambda: SLOT + dt.timedelta(milliseconds=300))
    scheduler.fire("digest", "sales")
    # A reminder is called with the slot of the digest it announces.
    set_clock(lambda: dt.datetime(2026, 12, 4, 15, 0, 1, tzinfo=TOKYO))
    scheduler.fire("reminder", "sales")
    # Late by hours (APScheduler's misfire grace): still the slot, not "now".
    set_clock(lambda: SLOT + dt.timedelta(hours=5))
    scheduler.fire("digest", "sales")
    assert jobs.calls == [
        ("digest", "sales", SLOT),
        ("reminder", "sales", SLOT + dt.timedelta(weeks=1)),
        ("digest", "sales", SLOT),
    ]


def test_due_digests_lists_slots_and_never_after_a_clock_jump_back(
    engine: Engine, make_scheduler: Any
) -> None:
    add_department(engine, "sales")
    add_department(engine, "us", timezone="America/New_York")
    scheduler = make_scheduler()
    since = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    us_slot = dt.datetime(2026, 11, 30, 14, tzinfo=dt.UTC)
    assert scheduler.due_digests(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), since) == [
        ("sales", SLOT),
        ("us", us_slot),
    ]
    later = SLOT + dt.timedelta(minutes=30)
    assert scheduler.due_digests(SLOT - dt.timedelta(minutes=30), later) == []
    assert scheduler.due_digests(SLOT, later) == []


def test_the_hourly_scan_then_the_follow_ups_on_the_leader_even_when_the_scan_fails(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs, caplog: pytest.LogCaptureFixture
) -> None:
    now = dt.datetime(2026, 11, 25, 3, tzinfo=dt.UTC)
    set_clock(lambda: now)
    scheduler = make_scheduler()
    assert scheduler.try_lead()
    scheduler.scan_alerts()
    assert jobs.hourly == [("scan", now), ("followups", now)]

    jobs.scan_failures.append(RuntimeError("boom"))
    scheduler.scan_alerts()  # never raises: the next hour retries
    assert jobs.hourly[2:] == [("scan", now), ("followups", now)]
    assert "the alert scan failed" in caplog.text
    assert jobs.calls == []


def test_start_and_shutdown(engine: Engine, make_scheduler: Any, jobs: RecordingJobs) -> None:
    add_department(engine, "sales")
    # A Wednesday: no slot in the last 24 h, catch-up has nothing to post.
    set_clock(lambda: dt.datetime(2026, 11, 25, 3, tzinfo=dt.UTC))
    scheduler = make_scheduler()
    scheduler.start()
    try:
        assert scheduler.is_leader
        job = scheduler.apscheduler.get_job("digest:sales")
        # APScheduler computes it from the real time; it must be a Tokyo Monday 09:00 slot.
        real_now = dt.datetime.now(dt.UTC)
        assert job.next_run_time > real_now - dt.timedelta(seconds=5)
        assert job.next_run_time.astimezone(TOKYO).weekday() == 0
        assert job.next_run_time.astimezone(TOKYO).time() == dt.time(9)
        assert job.next_run_time == next_digest_slot("0 9 * * mon", TOKYO, False, real_now)
        assert scheduler.apscheduler.get_job("sync") is not None
    finally:
        scheduler.shutdown()
    assert not scheduler.apscheduler.running
    assert jobs.calls == []


def test_run_forever_stops_cleanly_on_sigterm(engine: Engine, make_scheduler: Any) -> None:
    add_department(engine, "sales")
    set_clock(lambda: dt.datetime(2026, 11, 25, 3, tzinfo=dt.UTC))
    scheduler = make_scheduler()
    original = signal.getsignal(signal.SIGTERM)

    def terminate_when_running() -> None:
        deadline = time.monotonic() + 30
        while not scheduler.apscheduler.running and time.monotonic() < deadline:
            time.sleep(0.01)
        if signal.getsignal(signal.SIGTERM) is not original:  # never kill pytest itself
            os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_running)
    killer.start()
    started = time.monotonic()
    scheduler.run_forever()
    killer.join()
    assert time.monotonic() - started < 3
    assert not scheduler.apscheduler.running
    assert signal.getsignal(signal.SIGTERM) is original


# -- leader --------------------------------------------------------------------------------------


def _lock_holder_pid(engine: Engine, lock_key: int) -> int | None:
    with engine.connect() as connection:
        return connection.execute(
            sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = 0 AND objid = :key AND objsubid = 1"
            ),
            {"key": lock_key},
        ).scalar()


def test_one_leader_and_takeover_when_it_dies(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    add_department(engine, "sales")
    first, second = make_scheduler(), make_scheduler()
    first.sync()
    second.sync()
    if engine.dialect.name != "postgresql":
        # SQLite: a single process; every scheduler leads and the ledger is the only guard.
        assert first.try_lead() and second.try_lead()
        assert first.is_leader and second.is_leader
        return

    assert first.try_lead() is True
    assert second.try_lead() is False
    assert first.is_leader and not second.is_leader
    assert first.try_lead() is True  # still held

    # Only the leader runs jobs.
    set_clock(lambda: SLOT + dt.timedelta(seconds=1))
    second.fire("digest", "sales")
    assert jobs.calls == []
    first.fire("digest", "sales")
    assert jobs.calls == [("digest", "sales", SLOT)]

    # The leader's process dies: its database session ends, the other takes over on its next try
    # and catches up what is due.
    jobs.calls.clear()
    pid = _lock_holder_pid(engine, first.lock_key)
    assert pid is not None
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    second.check_lead()
    assert second.is_leader
    assert jobs.calls == [("digest", "sales", SLOT)]
    # The old leader notices it lost the lock and stops running jobs.
    assert first.try_lead() is False
    assert not first.is_leader
    first.fire("digest", "sales")
    assert len(jobs.calls) == 1


def test_shutdown_hands_the_lead_over(engine: Engine, make_scheduler: Any) -> None:
    first, second = make_scheduler(), make_scheduler()
    if engine.dialect.name != "postgresql":
        assert first.try_lead() and second.try_lead()
        return
    assert first.try_lead() and not second.try_lead()
    first.shutdown()
    assert _lock_holder_pid(engine, first.lock_key) is None
    assert second.try_lead()
    assert not first.is_leader


# -- pinned dates: the New Year holidays and New York's DST changes -----------------------------------


def tokyo(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=TOKYO).astimezone(dt.UTC)


def test_catch_up_on_the_first_working_day_of_2027(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs, caplog: pytest.LogCaptureFixture
) -> None:
    # Down from 31 December to Monday 4 January 10:00 JST. A Friday digest that holiday_shift moved
    # off New Year's Day is due now; one that stayed on 1 January is three days old: skipped.
    shifted = add_department(engine, "shifted", digest_cron="0 9 * * fri", holiday_shift=True)
    add_department(engine, "plain", digest_cron="0 9 * * fri")
    add_department(engine, "weekly", holiday_shift=True)  # Monday 4 January is no holiday
    scheduler = make_scheduler()
    now = tokyo(2027, 1, 4, 10)
    assert scheduler.catch_up(now) == [("shifted", tokyo(2027, 1, 4, 9)), ("weekly", tokyo(2027, 1, 4, 9))]
    assert "department plain: digest of 2027-01-01T00:00:00+00:00 skipped" in caplog.text
    assert slot_key(tokyo(2027, 1, 4, 9), TOKYO) == "2027-01-04"
    mark_sent(engine, shifted, "2027-01-04")
    jobs.calls.clear()
    assert scheduler.catch_up(now + dt.timedelta(minutes=5)) == [("weekly", tokyo(2027, 1, 4, 9))]


def test_new_year_reminders_fire_for_the_shifted_digest(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    add_department(engine, "shifted", digest_cron="0 9 * * fri", holiday_shift=True)
    add_department(engine, "plain", digest_cron="0 9 * * fri")
    scheduler = make_scheduler()
    scheduler.sync()
    assert scheduler.try_lead()
    before = tokyo(2026, 12, 26)
    # Both remind on Thursday 31 December 15:00: one for Monday 4 January, one for New Year's Day.
    assert scheduler.next_fire_time("reminder:shifted", before) == tokyo(2026, 12, 31, 15)
    assert scheduler.next_fire_time("reminder:plain", before) == tokyo(2026, 12, 31, 15)
    set_clock(lambda: tokyo(2026, 12, 31, 15, 0, 1))
    scheduler.fire("reminder", "shifted")
    scheduler.fire("reminder", "plain")
    assert jobs.calls == [
        ("reminder", "shifted", tokyo(2027, 1, 4, 9)),
        ("reminder", "plain", tokyo(2027, 1, 1, 9)),
    ]


@pytest.mark.parametrize(
    ("change", "utc_hours"),
    [
        (dt.date(2027, 3, 14), [14, 13, 13]),  # the day before in EST, then EDT
        (dt.date(2026, 11, 1), [13, 14, 14]),  # the day before in EDT, then EST
    ],
)
def test_new_york_daily_digest_across_dst_fires_once_a_day(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs, change: dt.date, utc_hours: list[int]
) -> None:
    us = add_department(engine, "us", timezone="America/New_York", digest_cron="0 9 * * *")
    scheduler = make_scheduler()
    scheduler.sync()
    assert scheduler.try_lead()
    days = [change + dt.timedelta(days=offset) for offset in (-1, 0, 1)]
    expected = [
        dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)
        for day, hour in zip(days, utc_hours, strict=True)
    ]
    for slot in expected:
        assert slot.astimezone(NEW_YORK).time() == dt.time(9)
        assert scheduler.next_fire_time("digest:us", slot - dt.timedelta(hours=2)) == slot
        set_clock(lambda at=slot: at + dt.timedelta(milliseconds=300))
        scheduler.fire("digest", "us")
        mark_sent(engine, us, slot_key(slot, NEW_YORK))
    assert jobs.calls == [("digest", "us", slot) for slot in expected]
    # Each local day has its own ledger period; catch-up finds nothing left, whatever the offset did.
    assert [slot_key(slot, NEW_YORK) for slot in expected] == [day.isoformat() for day in days]
    assert scheduler.catch_up(expected[-1] + dt.timedelta(hours=3)) == []
    assert len(jobs.calls) == 3


def test_catch_up_across_the_spring_change_posts_the_latest_slot_once(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    add_department(engine, "us", timezone="America/New_York", digest_cron="0 9 * * *")
    scheduler = make_scheduler()
    # Sunday 14 March 09:30 EDT: Saturday's 09:00 EST is only 23.5 hours ago, yet only today's is posted.
    now = dt.datetime(2027, 3, 14, 13, 30, tzinfo=dt.UTC)
    assert scheduler.due_digests(now, now - dt.timedelta(hours=24)) == [
        ("us", dt.datetime(2027, 3, 13, 14, tzinfo=dt.UTC)),
        ("us", dt.datetime(2027, 3, 14, 13, tzinfo=dt.UTC)),
    ]
    assert scheduler.catch_up(now) == [("us", dt.datetime(2027, 3, 14, 13, tzinfo=dt.UTC))]
    assert jobs.calls == [("digest", "us", dt.datetime(2027, 3, 14, 13, tzinfo=dt.UTC))]


def test_catch_up_never_posts_a_slot_a_later_sent_one_replaced(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs, caplog: pytest.LogCaptureFixture
) -> None:
    us = add_department(engine, "us", timezone="America/New_York", digest_cron="0 9 * * *")
    # Saturday's 09:00 EST missed, Sunday's 09:00 EDT sent: Saturday's is 23.5 hours ago at 09:30.
    mark_sent(engine, us, "2027-03-14")
    now = dt.datetime(2027, 3, 14, 13, 30, tzinfo=dt.UTC)
    assert make_scheduler().catch_up(now) == []
    assert jobs.calls == []
    assert (
        "department us: digest of 2027-03-13T14:00:00+00:00 skipped, "
        "replaced by the slot of 2027-03-14T13:00:00+00:00"
    ) in caplog.text


def test_catch_up_does_not_count_a_digest_asked_for_by_hand(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    sales = add_department(engine, "sales")
    with transaction(engine) as session:
        session.add(
            Post(
                department_id=sales,
                kind=PostKind.DIGEST,
                period="2026-11-30",
                subject="manual",
                status=PostStatus.SENT,
                ts="1.0",
            )
        )
    assert make_scheduler().catch_up(SLOT + dt.timedelta(hours=1)) == [("sales", SLOT)]
    assert jobs.calls == [("digest", "sales", SLOT)]


def test_new_york_reminder_before_the_spring_change_announces_mondays_slot(
    engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    add_department(engine, "us", timezone="America/New_York")
    scheduler = make_scheduler()
    scheduler.sync()
    assert scheduler.try_lead()
    friday = dt.datetime(2027, 3, 12, 20, tzinfo=dt.UTC)  # 15:00 EST
    assert scheduler.next_fire_time("reminder:us", friday - dt.timedelta(days=1)) == friday
    set_clock(lambda: friday + dt.timedelta(seconds=1))
    scheduler.fire("reminder", "us")
    assert jobs.calls == [("reminder", "us", dt.datetime(2027, 3, 15, 13, tzinfo=dt.UTC))]  # 09:00 EDT


def test_catch_up_and_next_slots_on_any_day(
    any_day: dt.date, engine: Engine, make_scheduler: Any, jobs: RecordingJobs
) -> None:
    add_department(engine, "sales")
    add_department(engine, "us", timezone="America/New_York")
    now = utcnow()  # 10:00 in Tokyo is the evening before in New York
    scheduler = make_scheduler()
    # Each department's last Monday 09:00, local: posted late only if it is within 24 hours.
    expected = []
    for key, tz in (("sales", TOKYO), ("us", NEW_YORK)):
        local_day = now.astimezone(tz).date()
        monday = local_day - dt.timedelta(days=local_day.weekday())
        slot = dt.datetime.combine(monday, dt.time(9), tzinfo=tz).astimezone(dt.UTC)
        assert slot <= now
        if now - slot <= dt.timedelta(hours=24):
            expected.append((key, slot))
    expected.sort(key=lambda item: (item[1], item[0]))
    assert scheduler.catch_up(now) == expected
    assert jobs.calls == [("digest", key, slot) for key, slot in expected]
    scheduler.sync()
    for key, tz in (("sales", TOKYO), ("us", NEW_YORK)):
        upcoming = scheduler.next_fire_time(f"digest:{key}", now)
        assert upcoming is not None and now < upcoming <= now + dt.timedelta(weeks=1, hours=1)
        local = upcoming.astimezone(tz)
        assert (local.weekday(), local.time()) == (0, dt.time(9))
