"""Catch-up after a restart posts the slot that was due and missed, once; never one a later slot replaced.

A digest shows the department as of its slot, so a later slot replaces every older one: once
it has passed, an older slot is never posted, sent or not. The cases are crons whose slots fall
on two dates less than 24 hours apart, so yesterday's slot is still inside the catch-up window
when today's has passed: a daily cron in New York across the spring change (23 hours) and a
Monday-evening, Tuesday-morning cron in Tokyo (15 hours).

Real parts: the example plan in SQLite and PostgreSQL, the scheduler started for real
(`start()` runs the catch-up), the digest jobs posting over HTTP to tests.fakeslack. Time is
pinned with bot.clock.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from bot.database import transaction
from bot.digests import flows as digests
from bot.models import Department, PostStatus
from bot.schedule import slots
from bot.schedule.jobs import ScheduledJobs
from bot.schedule.scheduler import Scheduler
from tests.fakeslack.server import FakeSlack
from tests.plans import EXAMPLE_PLAN, import_plan
from tests.test_digest_posting import CHANNELS, at, make_jobs, posts, root_channels, roots, update_department

NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")


@dataclass(frozen=True)
class Case:
    timezone: str
    cron: str
    yesterday: dt.datetime  # the last slot of the previous local day
    today: dt.datetime  # the slot after it

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def period(self, slot: dt.datetime) -> str:
        return slots.slot_key(slot, self.tz)


CASES = {
    # Saturday 09:00 EST, then Sunday 09:00 EDT: 23 hours.
    "daily-new-york-spring": Case(
        "America/New_York",
        "0 9 * * *",
        dt.datetime(2027, 3, 13, 9, tzinfo=NEW_YORK),
        dt.datetime(2027, 3, 14, 9, tzinfo=NEW_YORK),
    ),
    # Monday 18:00, then Tuesday 09:00: 15 hours.
    "mon-tue-tokyo": Case(
        "Asia/Tokyo",
        "0 9,18 * * mon,tue",
        dt.datetime(2026, 11, 30, 18, tzinfo=TOKYO),
        dt.datetime(2026, 12, 1, 9, tzinfo=TOKYO),
    ),
}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, engine: Engine) -> Case:
    """Every department of the example plan on the case's schedule."""
    import_plan(engine, EXAMPLE_PLAN)
    chosen = CASES[request.param]
    for key in CHANNELS:
        update_department(engine, key, timezone=chosen.timezone, digest_cron=chosen.cron)
    # The two slots are consecutive and less than a day apart (what makes the case).
    assert slots.digest_slots(
        chosen.cron, chosen.tz, False, chosen.yesterday - dt.timedelta(seconds=1), chosen.today
    ) == [chosen.yesterday.astimezone(dt.UTC), chosen.today.astimezone(dt.UTC)]
    assert chosen.today.astimezone(dt.UTC) - chosen.yesterday.astimezone(dt.UTC) < dt.timedelta(hours=24)
    assert chosen.period(chosen.yesterday) != chosen.period(chosen.today)
    return chosen


@pytest.fixture
def jobs(case: Case, engine: Engine, fake: FakeSlack) -> ScheduledJobs:
    return make_jobs(engine, fake)


@pytest.fixture
def restart(engine: Engine, jobs: ScheduledJobs) -> Iterator[Callable[[dt.datetime], Scheduler]]:
    """A new scheduler process started at `when`: the one before it, if any, is stopped first."""
    lock_key = random.randrange(1, 2**31)  # this test's own: other runs may share the server
    made: list[Scheduler] = []

    def start(when: dt.datetime) -> Scheduler:
        for previous in made:
            previous.shutdown(wait=True)
        at(when)
        scheduler = Scheduler(engine, jobs, retry_delays=(0, 0, 0), lock_key=lock_key)
        made.append(scheduler)
        scheduler.start()
        assert scheduler.is_leader
        return scheduler

    yield start
    for scheduler in made:
        scheduler.shutdown(wait=True)


def ledger(engine: Engine) -> Counter[str]:
    """Scheduled digests sent, by period."""
    return Counter(
        period
        for (_, period, subject), post in posts(engine).items()
        if not subject and post.status is PostStatus.SENT
    )


def everyone(times: int = 1) -> Counter[str]:
    return Counter({channel: times for channel in CHANNELS.values()})


def test_a_restart_the_same_day_after_todays_digest_posts_nothing(
    case: Case, engine: Engine, fake: FakeSlack, restart: Callable[[dt.datetime], Scheduler]
) -> None:
    # Down at yesterday's slot; up 30 s after today's: today's is posted, yesterday's is replaced.
    restart(case.today + dt.timedelta(seconds=30))
    assert root_channels(fake) == everyone()
    assert ledger(engine) == Counter({case.period(case.today): len(CHANNELS)})

    # Restarted half an hour later: yesterday's slot is 23.5 or 15.5 hours ago and unsent, and stays so.
    restart(case.today + dt.timedelta(minutes=30))
    assert root_channels(fake) == everyone()
    assert ledger(engine) == Counter({case.period(case.today): len(CHANNELS)})


def test_a_restart_after_todays_slot_was_missed_posts_todays_not_yesterdays(
    case: Case,
    engine: Engine,
    fake: FakeSlack,
    restart: Callable[[dt.datetime], Scheduler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.schedule.scheduler")
    # Down at both slots; up half an hour after today's, both slots within the last 24 hours.
    scheduler = restart(case.today + dt.timedelta(minutes=30))
    now = case.today.astimezone(dt.UTC) + dt.timedelta(minutes=30)
    assert scheduler.due_digests(now, now - dt.timedelta(hours=24)) == [
        (key, slot.astimezone(dt.UTC)) for slot in (case.yesterday, case.today) for key in sorted(CHANNELS)
    ]
    assert root_channels(fake) == everyone()
    assert ledger(engine) == Counter({case.period(case.today): len(CHANNELS)})
    yesterday = case.yesterday.astimezone(dt.UTC).isoformat()
    for key in CHANNELS:
        assert f"department {key}: digest of {yesterday} skipped, replaced by" in caplog.text

    restart(case.today + dt.timedelta(hours=2))
    assert root_channels(fake) == everyone()


def test_a_restart_before_todays_slot_posts_yesterdays_missed_one_once(
    case: Case, engine: Engine, fake: FakeSlack, restart: Callable[[dt.datetime], Scheduler]
) -> None:
    # Down at yesterday's slot; up before today's: yesterday's is the latest due, posted late.
    restart(case.today - dt.timedelta(minutes=30))
    assert root_channels(fake) == everyone()
    assert ledger(engine) == Counter({case.period(case.yesterday): len(CHANNELS)})

    # Today's slot fires on time; a restart after it posts nothing more.
    scheduler = restart(case.today - dt.timedelta(minutes=1))
    at(case.today + dt.timedelta(milliseconds=300))
    for key in CHANNELS:
        scheduler.fire("digest", key)
    restart(case.today + dt.timedelta(minutes=10))
    assert root_channels(fake) == everyone(2)
    assert ledger(engine) == Counter(
        {case.period(case.yesterday): len(CHANNELS), case.period(case.today): len(CHANNELS)}
    )


def test_a_digest_asked_for_by_hand_does_not_stand_in_for_the_missed_scheduled_one(
    case: Case,
    engine: Engine,
    fake: FakeSlack,
    jobs: ScheduledJobs,
    restart: Callable[[dt.datetime], Scheduler],
) -> None:
    # `/kpi digest sales` an hour before the slot; the scheduler is down at the slot. The live job
    # would have posted the scheduled digest all the same, so catch-up does too.
    at(case.today - dt.timedelta(hours=1))
    with transaction(engine) as session:
        sales = session.exec(select(Department).where(Department.key == "sales")).one()
    outcome = digests.post_on_request(
        jobs.outbox, jobs.digest_messages, jobs.settings, sales, case.today.date()
    )
    assert outcome.status == "posted"
    assert len(roots(fake, CHANNELS["sales"])) == 1

    restart(case.today + dt.timedelta(minutes=30))
    assert root_channels(fake) == everyone() + Counter({CHANNELS["sales"]: 1})
    assert ledger(engine) == Counter({case.period(case.today): len(CHANNELS)})
