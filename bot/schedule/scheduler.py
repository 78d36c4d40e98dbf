"""`kpibot scheduler`: each department's digest and reminder on its own schedule, once.

An APScheduler 3 BackgroundScheduler (in-memory job store) holds two jobs per department,
``digest:<key>`` and ``reminder:<key>``, fired by `bot.schedule.slots` triggers in the department's
time zone. What makes a post happen once:

- **Leader.** On PostgreSQL only the process holding a session advisory lock runs jobs;
  the others retry every 15 s and take over when the leader's connection goes. (APScheduler
  job stores cannot be shared between processes, so the lock is ours.) SQLite: one process,
  always leader.
- **Ledger.** The jobs (bot.schedule.jobs) claim each post in `bot.outbox` before sending: two leaders
  for a moment, a retry, or a catch-up overlapping a live fire still post once.
- **Catch-up.** Jobs live in memory, so a slot missed while down is found at start (and on
  becoming leader) from the ledger: a department's latest slot, posted late if it passed within
  24 h; older slots (replaced by it, or too old) skipped and logged.

Department edits are picked up by `sync` every 60 s; no restart needed.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlmodel import col, select

from bot.clock import utcnow
from bot.database import make_engine, transaction
from bot.errors import DatabaseUnavailable
from bot.models import Department, Post, PostKind, PostStatus
from bot.schedule import slots

log = logging.getLogger(__name__)

Kind = Literal["digest", "reminder"]

# pg_try_advisory_lock key of the scheduler leader ("kpibot" in ASCII).
LEADER_LOCK_KEY = 0x6B7062_6F74
# A slot missed by at most this much is posted late; older ones are skipped.
CATCH_UP_WINDOW = dt.timedelta(hours=24)
# How far back catch-up looks for missed slots (to log the ones it skips).
LOOK_BACK = dt.timedelta(days=7)
# Retries of a job that found the database unavailable: 4 attempts in all.
RETRY_DELAYS: tuple[float, ...] = (2.0, 4.0, 8.0)
SYNC_SECONDS = 60
LEADER_SECONDS = 15
# The alert scan: pace and missing-report alerts come from time passing, not from a report.
SCAN_SECONDS = 3600
SCAN_FIRST_DELAY = dt.timedelta(minutes=1)  # after start: frequent restarts never starve it
# Fetched sources (bot/sources/runs.py): a tick every five minutes fetches the KPIs whose interval
# (default hourly) has no run yet, and those of each department whose digest is due within the lead.
FETCH_SECONDS = 300
FETCH_FIRST_DELAY = dt.timedelta(seconds=30)
PREFETCH_LEAD = dt.timedelta(minutes=20)


class Jobs(Protocol):
    """What the scheduler runs. Both build and post through the ledger, so a repeat is harmless."""

    def digest(self, department_key: str, slot: dt.datetime) -> None:
        """Post the department's digest for `slot` (its period is `slots.slot_key(slot, tz)`)."""

    def digests(self, due: Sequence[tuple[str, dt.datetime]]) -> list[tuple[str, dt.datetime]]:
        """Post many (department key, slot) digests at once, as `digest` would each; returns those
        it left for `digest` one at a time (a build or a post that raised)."""

    def reminder(self, department_key: str, slot: dt.datetime) -> None:
        """Remind owners before the digest at `slot` — the digest's slot, not the reminder's."""

    def followups(self, now: dt.datetime) -> None:
        """Remind the countermeasures due today in their threads (hourly, after the scan)."""

    def scan(self, now: dt.datetime) -> None:
        """Evaluate every department's KPIs for alerts and post what changed (hourly)."""

    def fetch(self, now: dt.datetime, before_digests: Sequence[tuple[str, dt.datetime]]) -> None:
        """Fetch the sourced KPIs due now, and those of the departments whose digest (key, slot) is near."""


@dataclass(frozen=True)
class Schedule:
    """A department's schedule as the scheduler sees it."""

    department_id: int
    key: str
    timezone: str
    cron: str
    holiday_shift: bool

    @property
    def signature(self) -> tuple[str, str, bool]:
        return (self.timezone, self.cron, self.holiday_shift)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def digest_slots(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        return slots.digest_slots(self.cron, self.tz, self.holiday_shift, start, end)


def read_schedules(engine: Engine) -> list[Schedule]:
    """Every department's schedule, in one query."""
    with transaction(engine) as session:
        rows = session.exec(
            select(
                Department.id,
                Department.key,
                Department.timezone,
                Department.digest_cron,
                Department.holiday_shift,
            ).order_by(col(Department.key))
        ).all()
    return [Schedule(id_, key, tz, cron, shift) for id_, key, tz, cron, shift in rows if id_ is not None]


class Scheduler:
    """The `kpibot scheduler` process: `run_forever()`, or `start()`/`shutdown()` in tests."""

    def __init__(
        self,
        engine: Engine,
        jobs: Jobs,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        lock_key: int = LEADER_LOCK_KEY,
        sync_seconds: int = SYNC_SECONDS,
        leader_seconds: int = LEADER_SECONDS,
    ) -> None:
        self.engine = engine
        self.jobs = jobs
        self.retry_delays = tuple(retry_delays)
        self.lock_key = lock_key
        self.sync_seconds = sync_seconds
        self.leader_seconds = leader_seconds
        self._uses_lock = engine.dialect.name == "postgresql"
        self._leader = not self._uses_lock
        self._leader_mutex = threading.Lock()
        self._lock_engine: Engine | None = None
        self._lock_connection: Connection | None = None
        self._sync_mutex = threading.Lock()
        self._schedules: dict[str, Schedule] = {}
        self._invalid: dict[str, tuple[str, str, bool]] = {}
        self._skips_logged: set[tuple[str, dt.datetime]] = set()
        self._stopping = threading.Event()
        self._aps = BackgroundScheduler(
            timezone=dt.UTC,
            job_defaults={
                "coalesce": True,
                # APScheduler's default is 1 s: a slow start would silently skip a digest.
                "misfire_grace_time": int(CATCH_UP_WINDOW.total_seconds()),
                "max_instances": 1,
            },
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the lead if free, schedule every department, start firing, then catch up."""
        self._stopping.clear()
        self.try_lead()
        self.sync()
        self._aps.add_job(
            self.sync,
            IntervalTrigger(seconds=self.sync_seconds, timezone=dt.UTC),
            id="sync",
            name="sync department schedules",
            misfire_grace_time=self.sync_seconds,
            replace_existing=True,
        )
        self._aps.add_job(
            self.scan_alerts,
            IntervalTrigger(seconds=SCAN_SECONDS, timezone=dt.UTC),
            id="alert-scan",
            name="scan KPIs for alerts",
            next_run_time=dt.datetime.now(dt.UTC) + SCAN_FIRST_DELAY,
            misfire_grace_time=SCAN_SECONDS,
            replace_existing=True,
        )
        self._aps.add_job(
            self.fetch_sources,
            IntervalTrigger(seconds=FETCH_SECONDS, timezone=dt.UTC),
            id="source-fetch",
            name="fetch sourced KPIs",
            next_run_time=dt.datetime.now(dt.UTC) + FETCH_FIRST_DELAY,
            misfire_grace_time=FETCH_SECONDS,
            replace_existing=True,
        )
        if self._uses_lock:
            self._aps.add_job(
                self.check_lead,
                IntervalTrigger(seconds=self.leader_seconds, timezone=dt.UTC),
                id="leader",
                name="leader lock",
                misfire_grace_time=self.leader_seconds,
                replace_existing=True,
            )
        self._aps.start()
        # After the jobs are live: a slot passing meanwhile is seen by both, and the ledger keeps it single.
        if self.is_leader:
            self.catch_up(utcnow())
        upcoming = self.upcoming(utcnow())
        log.info(
            "scheduler started (%s, %d departments)%s",
            "leader" if self.is_leader else "standby",
            len(self._schedules),
            f"; next: {upcoming[0][0]} at {upcoming[0][1].isoformat()}" if upcoming else "",
        )

    def shutdown(self, wait: bool = True) -> None:
        """Stop firing (waiting for running jobs when `wait`), then let go of the leader lock."""
        self._stopping.set()
        if self._aps.running:
            self._aps.shutdown(wait=wait)
        self.release_lead()

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down cleanly (`kpibot scheduler`)."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not stop.wait(1.0):
                pass
        finally:
            self.shutdown(wait=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- leader ----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leader

    def try_lead(self) -> bool:
        """Check the lock is still held, or try to take it. True if this process leads now."""
        if not self._uses_lock:
            return True
        with self._leader_mutex:
            if self._lock_connection is not None:
                try:
                    self._lock_connection.execute(sa.text("SELECT 1"))
                    return True
                except SQLAlchemyError as exc:
                    log.warning("lost the scheduler leader lock (its connection failed: %s)", exc)
                    self._close_lock_connection()
            self._leader = False
            if self._lock_engine is None:
                # Its own unpooled engine: closing the connection really ends the session and
                # releases the lock (a pooled connection would keep it, returned to the pool).
                self._lock_engine = make_engine(self.engine.url, poolclass=NullPool)
            try:
                connection = self._lock_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            except SQLAlchemyError as exc:
                log.warning("cannot reach the database to take the scheduler leader lock: %s", exc)
                return False
            try:
                got = connection.execute(
                    sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.lock_key}
                ).scalar_one()
            except SQLAlchemyError as exc:
                log.warning("cannot take the scheduler leader lock: %s", exc)
                got = False
            if not got:
                connection.close()
                return False
            self._lock_connection = connection
            self._leader = True
            log.info("this process is now the scheduler leader")
            return True

    def release_lead(self) -> None:
        with self._leader_mutex:
            self._close_lock_connection(unlock=True)
            self._leader = not self._uses_lock
            if self._lock_engine is not None:
                self._lock_engine.dispose()
                self._lock_engine = None

    def _close_lock_connection(self, *, unlock: bool = False) -> None:
        if self._lock_connection is None:
            return
        try:
            if unlock:
                # Unlocked before closing: the server ends a closed session's backend (and frees
                # its locks) a moment later, so a successor starting now would find it still held.
                unlock_sql = sa.text("SELECT pg_advisory_unlock(:key)")
                self._lock_connection.execute(unlock_sql, {"key": self.lock_key})
            self._lock_connection.close()
        except SQLAlchemyError:
            log.debug("closing the leader lock connection failed", exc_info=True)
        self._lock_connection = None

    def check_lead(self) -> None:
        """The leader job (every 15 s): keep or take the lock; catch up on becoming leader."""
        was_leader = self.is_leader
        if self.try_lead() and not was_leader:
            self.catch_up(utcnow())

    # -- schedules -------------------------------------------------------------------------

    def sync(self) -> None:
        """Make the jobs match the departments: add, replace (schedule changed) or remove."""
        with self._sync_mutex:
            try:
                wanted = {schedule.key: schedule for schedule in read_schedules(self.engine)}
            except (DatabaseUnavailable, OperationalError) as exc:
                log.warning("cannot read department schedules, keeping the current ones: %s", exc)
                return
            for key in sorted(self._schedules.keys() - wanted.keys()):
                self._remove_jobs(key)
                log.info("department %s: removed its digest and reminder jobs", key)
            for key in list(self._invalid.keys() - wanted.keys()):
                del self._invalid[key]
            for key, schedule in wanted.items():
                current = self._schedules.get(key)
                if current is not None and current.signature == schedule.signature:
                    self._schedules[key] = schedule
                    continue
                if self._invalid.get(key) == schedule.signature:
                    continue
                self._schedule(schedule, replacing=current is not None)

    def _schedule(self, schedule: Schedule, *, replacing: bool) -> None:
        try:
            tz = schedule.tz
            digest = slots.digest_trigger(schedule.cron, tz, schedule.holiday_shift)
            reminder = slots.reminder_trigger(schedule.cron, tz, schedule.holiday_shift)
        except (ValueError, KeyError) as exc:
            # Logged once per bad schedule, not every sync; the department is off until fixed.
            log.error(
                "department %s: invalid schedule (cron %r, timezone %r): %s; not scheduled",
                schedule.key,
                schedule.cron,
                schedule.timezone,
                exc,
            )
            self._invalid[schedule.key] = schedule.signature
            self._remove_jobs(schedule.key)
            return
        self._invalid.pop(schedule.key, None)
        # Remove, then add: before start() APScheduler keeps added jobs in a pending list where
        # `replace_existing` only takes effect at start, and get_job would see the old one.
        self._remove_jobs(schedule.key)
        for kind, trigger in (("digest", digest), ("reminder", reminder)):
            self._aps.add_job(
                self.fire,
                trigger,
                args=(kind, schedule.key),
                id=f"{kind}:{schedule.key}",
                name=f"{kind} {schedule.key}",
                replace_existing=True,
            )
        self._schedules[schedule.key] = schedule
        log.info(
            "department %s: %s (cron %r, %s%s)",
            schedule.key,
            "rescheduled" if replacing else "scheduled",
            schedule.cron,
            schedule.timezone,
            ", holiday shift" if schedule.holiday_shift else "",
        )

    def _remove_jobs(self, key: str) -> None:
        self._schedules.pop(key, None)
        for kind in ("digest", "reminder"):
            job = self._aps.get_job(f"{kind}:{key}")
            if job is not None:
                job.remove()

    @property
    def apscheduler(self) -> BackgroundScheduler:
        """The underlying APScheduler (for inspection: jobs, next run times)."""
        return self._aps

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self._aps.get_jobs())

    def next_fire_time(self, job_id: str, now: dt.datetime) -> dt.datetime | None:
        """When the job would fire next if scheduled at `now` (None: no such job, or never)."""
        job = self._aps.get_job(job_id)
        return None if job is None else job.trigger.get_next_fire_time(None, now)

    def upcoming(self, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
        """Every department job's next fire time after `now`, soonest first."""
        found = []
        for job_id in self.job_ids():
            if ":" in job_id and (when := self.next_fire_time(job_id, now)) is not None:
                found.append((job_id, when))
        return sorted(found, key=lambda item: (item[1], item[0]))

    # -- firing ----------------------------------------------------------------------------

    def fire(self, kind: Kind, key: str) -> None:
        """APScheduler's entry point: run `kind` for the slot that has just passed.

        APScheduler does not tell a job its scheduled time; with coalescing it runs the latest
        due one, which is the latest slot not after now (at most the misfire grace ago).
        """
        if not self.is_leader:
            log.debug("department %s: %s due, not the leader", key, kind)
            return
        schedule = self._schedules.get(key)
        if schedule is None:
            return
        now = utcnow()
        # A second of slack: APScheduler's clock and ours are read a moment apart.
        at = now + dt.timedelta(seconds=1)
        try:
            if kind == "digest":
                slot = slots.previous_digest_slot(
                    schedule.cron, schedule.tz, schedule.holiday_shift, at, CATCH_UP_WINDOW
                )
            else:
                pairs = slots.reminder_slots(
                    schedule.cron, schedule.tz, schedule.holiday_shift, at - CATCH_UP_WINDOW, at
                )
                slot = pairs[-1][1] if pairs else None
        except (ValueError, KeyError):
            log.exception("department %s: cannot compute its %s slot", key, kind)
            return
        if slot is None:
            log.warning("department %s: %s fired at %s with no slot due; ignored", key, kind, now.isoformat())
            return
        self.run(kind, key, slot)

    def run(self, kind: Kind, key: str, slot: dt.datetime) -> bool:
        """Call the job for one department and slot; retry while the database is unavailable.

        Never raises: one department's failure must not stop the others. True on success.
        """
        call = self.jobs.digest if kind == "digest" else self.jobs.reminder
        attempts = len(self.retry_delays) + 1
        for attempt in range(1, attempts + 1):
            try:
                call(key, slot)
                return True
            except (DatabaseUnavailable, OperationalError) as exc:
                if attempt == attempts or self._stopping.is_set():
                    log.error(
                        "department %s: %s for %s failed after %d attempts, database unavailable: %s",
                        key,
                        kind,
                        slot.isoformat(),
                        attempt,
                        exc,
                    )
                    return False
                delay = self.retry_delays[attempt - 1]
                log.warning(
                    "department %s: %s for %s: database unavailable (attempt %d/%d), retrying in %gs: %s",
                    key,
                    kind,
                    slot.isoformat(),
                    attempt,
                    attempts,
                    delay,
                    exc,
                )
                if delay and self._stopping.wait(delay):
                    return False
            except Exception:
                log.exception("department %s: %s for %s failed", key, kind, slot.isoformat())
                return False
        return False

    def followups(self) -> None:
        """`jobs.followups(now)` (countermeasures due today), run by the hourly scan, on the leader
        only. Never raises."""
        if not self.is_leader:
            return
        try:
            self.jobs.followups(utcnow())
        except Exception:
            log.exception("countermeasure follow-ups failed")

    def scan_alerts(self) -> None:
        """The hourly alert scan, on the leader only; it never raises (the next hour retries)."""
        if not self.is_leader:
            return
        try:
            self.jobs.scan(utcnow())
        except Exception:
            log.exception("the alert scan failed")
        self.followups()

    def fetch_sources(self) -> None:
        """The fetch tick, on the leader only, on its own thread: a slow or failing source never
        holds up a digest (each fetch has its timeout; the digest reads what is stored). Never raises."""
        if not self.is_leader:
            return
        now = utcnow()
        try:
            self.jobs.fetch(now, self.digests_within(now, PREFETCH_LEAD))
        except Exception:
            log.exception("fetching sourced KPIs failed")

    def digests_within(self, now: dt.datetime, lead: dt.timedelta) -> list[tuple[str, dt.datetime]]:
        """(department key, slot) of each digest due in (now, now + lead]."""
        due = []
        for schedule in list(self._schedules.values()):
            try:
                slot = slots.next_digest_slot(schedule.cron, schedule.tz, schedule.holiday_shift, now)
            except (ValueError, KeyError):
                continue
            if slot is not None and slot - now <= lead:
                due.append((schedule.key, slot))
        return due

    # -- catch-up --------------------------------------------------------------------------

    def due_digests(self, now: dt.datetime, since: dt.datetime) -> list[tuple[str, dt.datetime]]:
        """(department key, slot) of every digest slot in (since, now], by slot then key. Posts nothing."""
        due = [
            (schedule.key, slot)
            for schedule in self._valid(read_schedules(self.engine))
            for slot in schedule.digest_slots(since, now)
        ]
        return sorted(due, key=lambda item: (item[1], item[0]))

    def catch_up(self, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
        """Post digests missed while down: per department its latest slot, if it passed in the
        last 24 h and was not posted.

        A digest shows the department as of its slot, so a later slot replaces every older one:
        an older slot is never posted once a later one has passed, even one left unsent (a cron
        firing on two dates less than 24 h apart, a DST change). Those, and a latest slot older
        than 24 h, are logged as skipped (up to 7 days back), once per process. Returns what it
        ran. Two queries however many departments.
        """
        try:
            schedules = self._valid(read_schedules(self.engine))
            passed = [(schedule, schedule.digest_slots(now - LOOK_BACK, now)) for schedule in schedules]
            sent = self._sent_digests(
                {slots.slot_key(slot, schedule.tz) for schedule, found in passed for slot in found}
            )
        except (DatabaseUnavailable, OperationalError) as exc:
            log.error("catch-up: cannot read the ledger, missed digests wait for the next start: %s", exc)
            return []

        def unsent(schedule: Schedule, slot: dt.datetime) -> bool:
            return (schedule.department_id, slots.slot_key(slot, schedule.tz)) not in sent

        missed: list[tuple[str, dt.datetime]] = []
        for schedule, found in passed:
            if not found:
                continue
            *older, latest = found
            for slot in older:
                if unsent(schedule, slot):
                    self._log_skip(schedule.key, slot, f"replaced by the slot of {latest.isoformat()}")
            if not unsent(schedule, latest):
                continue
            if now - latest <= CATCH_UP_WINDOW:
                missed.append((schedule.key, latest))
            else:
                self._log_skip(schedule.key, latest, f"older than {CATCH_UP_WINDOW}")
        ran = sorted(missed, key=lambda item: (item[1], item[0]))
        for key, slot in ran:
            log.warning("department %s: posting the digest of %s late", key, slot.isoformat())
        self.run_digests(ran)
        return ran

    def run_digests(self, due: list[tuple[str, dt.datetime]]) -> None:
        """Many departments' digests together (`jobs.digests`: built in one batch, posted in parallel);
        what it leaves (a failed build or post) runs one at a time with `run`'s retries. Never raises."""
        if not due:
            return
        try:
            left = self.jobs.digests(due)
        except Exception:
            log.exception("%d digests: posting them together failed; one at a time instead", len(due))
            left = list(due)
        for key, slot in left:
            self.run("digest", key, slot)

    def _log_skip(self, key: str, slot: dt.datetime, reason: str) -> None:
        if (key, slot) in self._skips_logged:
            return
        self._skips_logged.add((key, slot))
        log.warning("department %s: digest of %s skipped, %s", key, slot.isoformat(), reason)

    def _sent_digests(self, periods: set[str]) -> set[tuple[int, str]]:
        if not periods:
            return set()
        with transaction(self.engine) as session:
            rows = session.exec(
                select(Post.department_id, Post.period).where(
                    Post.kind == PostKind.DIGEST,
                    # The scheduled digest's own key (bot.schedule.jobs): one asked for by hand
                    # (`/kpi digest`) does not stand in for it, as it would not for the live job.
                    Post.subject == "",
                    # A failed post is not retried by itself: an admin was told, and re-posts by hand.
                    col(Post.status).in_([PostStatus.SENT, PostStatus.FAILED]),
                    col(Post.period).in_(sorted(periods)),
                )
            ).all()
        return {(department_id, period) for department_id, period in rows}

    def _valid(self, schedules: list[Schedule]) -> list[Schedule]:
        valid = []
        for schedule in schedules:
            try:
                slots.cron_trigger(schedule.cron, schedule.tz)
            except (ValueError, KeyError):
                continue  # logged by sync
            valid.append(schedule)
        return valid
