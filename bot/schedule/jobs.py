"""The jobs `kpibot scheduler` runs (bot.schedule.scheduler.Jobs), one per concept.

Each job only finds what it is about and hands it to its concept's flow; they post through
`bot.outbox`, so a repeat is harmless. The edge composes them (handlers/digests/interactive.py
`make_jobs`): the Slack poster and the Block Kit of digests and alerts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import select

from bot.alerts import flows as alerts
from bot.config import Settings, environment
from bot.countermeasures import flows as countermeasures
from bot.database import transaction
from bot.digests import flows as digests
from bot.models import Department
from bot.outbox import Outbox
from bot.schedule.slots import slot_key
from bot.sources import runs

log = logging.getLogger(__name__)


def department(engine: Engine, key: str) -> Department | None:
    """The department a job names, or None when it was removed since it was scheduled."""
    with transaction(engine) as session:
        return session.exec(select(Department).where(Department.key == key)).first()


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
        """Every department's KPIs evaluated for alerts, and what changed posted."""
        alerts.scan_and_post(self.outbox.engine, self.outbox.poster, self.alert_messages, now)

    def fetch(self, now: dt.datetime, before_digests: Sequence[tuple[str, dt.datetime]] = ()) -> None:
        """Sourced KPIs whose interval has no run yet, then once more for each department whose
        digest is near (its own slot, so the digest reads a value fetched minutes before). Values
        that changed move alerts in their transaction; the scan then posts what changed."""
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
        if any(outcome.saved for outcome in outcomes):
            self.scan(now)
