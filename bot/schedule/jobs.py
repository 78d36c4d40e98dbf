"""The jobs `kpibot scheduler` runs (bot.schedule.scheduler.Jobs), one per concept.

Each job only finds what it is about and hands it to its concept's flow; they post through
`bot.outbox`, so a repeat is harmless. The edge composes them (handlers/digests/interactive.py
`make_jobs`): the Slack poster and the Block Kit of digests and alerts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bot.alerts import flows as alerts
from bot.clock import utcnow
from bot.config import Settings, environment
from bot.countermeasures import flows as countermeasures
from bot.database import transaction
from bot.digests import flows as digests
from bot.funnel import flows as funnel
from bot.models import Department
from bot.outbox import Outbox, Poster
from bot.schedule.slots import slot_key
from bot.sources import runs

log = logging.getLogger(__name__)

# Web API calls the scheduler's posts have in flight at once (the composition root caps its poster
# to this: handlers/digests/interactive.py `make_jobs`), whichever path posts: APScheduler's pool fires
# up to 10 department jobs at once at 09:00, the catch-up posts from POST_THREADS. Slack allows ~1
# chat.postMessage per second per channel and a short burst per workspace; four calls in flight stay
# well inside both (a 429's Retry-After is waited out by the Web API client, handlers/client.py), and
# a channel's own posts go one after the other, in their order.
POST_WORKERS = 4
# Threads the catch-up posts from: more than the calls in flight, so that one post's ledger writes
# (claim, complete) happen while the others' calls are under way and no call's place waits for them.
POST_THREADS = 2 * POST_WORKERS
# Departments whose digests are read together (bot.digests.flows.build_many: one set of statements);
# a day's first chunk is one department per posting thread, so that posting starts after a short build.
BUILD_CHUNK = 50

Due = tuple[str, dt.datetime]  # (department key, digest slot)
T = TypeVar("T")


def hourly_scan(
    engine: Engine,
    poster: Poster | None,
    messages: alerts.AlertMessages,
    now: dt.datetime | None = None,
    *,
    dry_run: bool = False,
    department_key: str | None = None,
) -> alerts.ScanResult:
    """The hourly scan, whoever runs it (the scheduler, `kpibot alerts`, the demo): every
    department's alerts (bot.alerts.flows.scan_and_post); then, posting through `poster` unless
    None, the funnel's leaking hand-offs in the division channel and those a correction closed
    (bot.funnel.flows), and the effects of countermeasures on periods that ended
    (bot.countermeasures.flows.measure_finished). Each step's failure is recorded, never stops
    the next."""
    now = now or utcnow()
    result = alerts.scan_and_post(
        engine, poster, messages, now, dry_run=dry_run, department_key=department_key
    )
    if poster is None or dry_run or department_key is not None:
        return result
    posts = Outbox(engine, poster)
    try:
        leaks = funnel.alert_leaks(posts, messages, now)
        leaks += funnel.close_leaks(posts, messages, now)
    except Exception as error:
        log.exception("the funnel's alerts failed")
        result.failed.append(("funnel", str(error) or type(error).__name__))
    else:
        result.slack.posted += sum(leak.sent.status == "posted" for leak in leaks)
        result.slack.failed += sum(leak.sent.status == "failed" for leak in leaks)
    try:
        # A period ended since its last report: its figure is final, the effects get their verdict.
        result.slack.notes += countermeasures.measure_finished(posts, now)
    except Exception as error:
        log.exception("measuring the countermeasures' effects failed")
        result.failed.append(("effects", str(error) or type(error).__name__))
    return result


def department(engine: Engine, key: str) -> Department | None:
    """The department a job names, or None when it was removed since it was scheduled."""
    with transaction(engine) as session:
        return session.exec(select(Department).where(Department.key == key)).first()


def _chunks(items: list[T]) -> Iterator[list[T]]:
    """`items` in chunks of BUILD_CHUNK, the first of POST_THREADS."""
    start = min(POST_THREADS, len(items))
    if start:
        yield items[:start]
    for at in range(start, len(items), BUILD_CHUNK):
        yield items[at : at + BUILD_CHUNK]


class ChannelQueues(Generic[T]):
    """Work run by `threads` threads as it is put, one channel's work at a time and in the order it
    was put, different channels' in parallel. Leaving the `with` waits for all of it; what raised
    is in `failed`, in no particular order."""

    def __init__(self, run: Callable[[T], None], threads: int) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="digest-post")
        self._queues: dict[str, deque[T]] = {}  # a channel is here while a thread drains it
        self._mutex = threading.Lock()
        self.failed: list[T] = []

    def put(self, channel: str, work: T) -> None:
        with self._mutex:
            queue = self._queues.get(channel)
            if queue is not None:
                queue.append(work)
                return
            self._queues[channel] = deque([work])
        self._pool.submit(self._drain, channel)

    def _drain(self, channel: str) -> None:
        while True:
            with self._mutex:
                queue = self._queues[channel]
                if not queue:
                    del self._queues[channel]
                    return
                work = queue.popleft()
            try:
                self._run(work)
            except Exception:
                with self._mutex:
                    self.failed.append(work)

    def __enter__(self) -> ChannelQueues[T]:
        return self

    def __exit__(self, *_: object) -> None:
        self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class ScheduledJobs:
    """bot.schedule.scheduler.Jobs: the digest and the owners' reminder of a department's slot,
    the countermeasure follow-ups and the alert scan (both hourly), and the fetched sources."""

    outbox: Outbox
    digest_messages: digests.DigestMessages
    alert_messages: alerts.AlertMessages
    settings: Settings
    # How fetched sources run, built at each tick: their secrets (DSNs, tokens) from the
    # environment and .env, read afresh so a rotated secret needs no restart.
    fetching: Callable[[], runs.Fetching] = field(default=lambda: runs.Fetching(env=environment()))

    def digest(self, department_key: str, slot: dt.datetime) -> None:
        found = department(self.outbox.engine, department_key)
        if found is None:
            log.warning("digest for %s skipped: the department no longer exists", department_key)
            return
        tz = ZoneInfo(found.timezone)
        digests.post(
            self.outbox,
            self.digest_messages,
            self.settings,
            found,
            slot.astimezone(tz).date(),
            period=slot_key(slot, tz),
        )

    def digests(self, due: Sequence[Due]) -> list[Due]:
        """The digests of many departments' slots at once (the catch-up): built together, a chunk of
        departments of one day at a time with `build_many`, and each chunk's posted through the ledger
        as `digest` does while the next is built, from POST_THREADS threads, each channel's posts one
        after the other in `due`'s order. Returns what is left for the caller to run one at a time
        (`digest`, with its retries): a chunk whose build failed, a post that raised. A department
        removed since is skipped, as by `digest`."""
        engine = self.outbox.engine
        with transaction(engine) as session:
            found = {
                department.key: department
                for department in session.exec(
                    select(Department).where(col(Department.key).in_(sorted({key for key, _ in due})))
                ).all()
            }
        items: list[tuple[Due, Department, dt.date]] = []
        for key, slot in due:
            department_ = found.get(key)
            if department_ is None:
                log.warning("digest for %s skipped: the department no longer exists", key)
                continue
            items.append(((key, slot), department_, slot.astimezone(ZoneInfo(department_.timezone)).date()))
        left: list[Due] = []
        with ChannelQueues(self._post_built, POST_THREADS) as posting:
            # Chunks in `due`'s order (a day's departments together), so a channel's digests are
            # ready, and queued, in that order too.
            for day, group in itertools.groupby(items, key=lambda item: item[2]):
                for chunk in _chunks(list(group)):
                    try:
                        built = digests.build_many(
                            engine, [d for _, d, _ in chunk], day, self.digest_messages, with_chart=False
                        )
                    except Exception:
                        log.exception(
                            "digests of %d departments on %s: building them together failed", len(chunk), day
                        )
                        left += [item for item, _, _ in chunk]
                        continue
                    for (item, _, _), made in zip(chunk, built, strict=True):
                        posting.put(made.department.channel_id or "", (item, made))
        return left + [item for item, _ in posting.failed]

    def _post_built(self, work: tuple[Due, digests.Built]) -> None:
        (key, slot), made = work
        try:
            digests.post(
                self.outbox,
                self.digest_messages,
                self.settings,
                made.department,
                made.day,
                period=slot_key(slot, ZoneInfo(made.department.timezone)),
                built=made,
            )
        except Exception:
            # Run again alone by the caller, with its retries; the ledger keeps it single.
            log.warning("digest for %s: posting it with others failed", key, exc_info=True)
            raise

    def reminder(self, department_key: str, slot: dt.datetime) -> None:
        """`slot` is the digest the reminder announces (bot.schedule.scheduler passes it so)."""
        found = department(self.outbox.engine, department_key)
        if found is None or found.is_division:
            return
        digests.remind_owners(self.outbox, found, slot)

    def followups(self, now: dt.datetime) -> None:
        """Countermeasures due today are reminded in their threads, once each."""
        countermeasures.remind_due(self.outbox, now)

    def scan(self, now: dt.datetime) -> None:
        """The hourly scan (`hourly_scan`): alerts, the funnel's hand-offs, countermeasures' effects."""
        hourly_scan(self.outbox.engine, self.outbox.poster, self.alert_messages, now)

    def fetch(self, now: dt.datetime, before_digests: Sequence[tuple[str, dt.datetime]] = ()) -> None:
        """Sourced KPIs whose interval has no run yet, then once more for each department whose
        digest is near (its own slot, so the digest reads a value fetched minutes before). Values
        that changed move alerts in their transaction; the scan then posts what changed, and each
        stored value is followed in its countermeasures' threads as a report is (a running
        period's provisional effect; a finished one's verdict, said once whichever path says it)."""
        fetching = self.fetching()
        common = {
            "outbox": self.outbox,
            "admins": sorted(self.settings.admins),
            "locale": self.settings.locale,
        }
        outcomes = runs.fetch_kpis(self.outbox.engine, now, fetching=fetching, **common)
        for key, slot in before_digests:
            slot_name = "d" + slot.astimezone(dt.UTC).strftime("%Y%m%dT%H%M")
            outcomes += runs.fetch_kpis(
                self.outbox.engine, now, fetching=fetching, departments=[key], slot=slot_name, **common
            )
        saved = [reported for outcome in outcomes for reported in outcome.saved]
        if saved:
            self.scan(now)
        for reported in saved:
            try:
                countermeasures.on_reported(self.outbox, reported)
            except Exception:
                log.exception("the effects of fetched %s %s failed", reported.kpi.key, reported.period.key)
