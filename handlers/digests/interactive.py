"""Posting digests and reminders to Slack, once each, through the Post ledger.

`DigestJobs` is what the scheduler calls (bot.schedule.scheduler.Jobs); `/kpi digest` and
`kpibot digest` use the same code. A Slack error for one channel is recorded on its Post
row, logged and told to the admins once; it never stops the other departments.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from slack_sdk import WebClient
from sqlalchemy.engine import Engine
from sqlmodel import select

from bot import outbox, render
from bot.clock import today
from bot.config import Settings
from bot.database import transaction
from bot.digests.charts import render_trend_chart
from bot.digests.service import (
    CHART_PERIODS,
    Digest,
    build_digest,
    build_division_summary,
    chart_series,
    goal_progress,
)
from bot.models import Department, PostKind
from bot.outbox import Message, Outbox, PostFailed, Upload
from bot.schedule.slots import slot_key
from bot.scorecard import all_departments
from handlers.alerts.interactive import scan_and_post
from handlers.commands import CommandRequest, subcommand
from handlers.countermeasures.interactive import remind_due
from handlers.digests.messages import digest_messages, division_messages
from handlers.poster import SlackPoster
from handlers.status.interactive import find_department

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What happened to one post: "posted", "already", "no_channel", "busy" or "failed"."""

    status: str
    department: Department
    ts: str | None = None
    error: str | None = None


@dataclass
class Built:
    department: Department
    day: dt.date
    messages: list[Message]
    chart: bytes | None
    locale: str


def build(
    engine: Engine,
    department: Department,
    day: dt.date,
    *,
    with_chart: bool = True,
    locale: str | None = None,
) -> Built:
    """Everything a department's digest says, read in one transaction (in its own language,
    unless `locale` says otherwise: the demo shows every department in one)."""
    locale = locale or department.locale
    with transaction(engine) as session:
        if department.is_division:
            summary = build_division_summary(session, department, day)
            return Built(department, day, division_messages(summary, locale), None, locale)
        goal = goal_progress(session, day, department.fiscal_year_start_month)
        digest = build_digest(session, department, day, goal)
    chart = _chart(digest, locale) if with_chart and digest.rows else None
    return Built(department, day, digest_messages(digest, locale), chart, locale)


def _chart(digest: Digest, locale: str) -> bytes:
    title = render.message(
        "digest.chart_title", locale, department=digest.department.name(locale), day=digest.day
    )
    return render_trend_chart(title, chart_series(digest, locale), locale)


class DigestJobs:
    """The scheduler's jobs: post a department's digest for a slot, remind its owners."""

    def __init__(self, client: WebClient, engine: Engine, settings: Settings) -> None:
        self.client = client
        self.engine = engine
        self.settings = settings
        self.outbox = Outbox(engine, SlackPoster(client))

    def department(self, key: str) -> Department | None:
        with transaction(self.engine) as session:
            return session.exec(select(Department).where(Department.key == key)).first()

    # bot.schedule.scheduler.Jobs
    def digest(self, department_key: str, slot: dt.datetime) -> None:
        department = self.department(department_key)
        if department is None:
            log.warning("digest for %s skipped: the department no longer exists", department_key)
            return
        tz = ZoneInfo(department.timezone)
        self.post(department, slot.astimezone(tz).date(), period=slot_key(slot, tz))

    def reminder(self, department_key: str, slot: dt.datetime) -> None:
        """`slot` is the digest the reminder announces (bot.schedule.scheduler passes it so)."""
        department = self.department(department_key)
        if department is None or department.is_division:
            return
        self.remind(department, slot)

    def followups(self, now: dt.datetime) -> None:
        """Periodic: countermeasures due today are reminded in their threads, once each."""
        remind_due(self.engine, self.client, now)

    def scan(self, now: dt.datetime) -> None:
        """bot.schedule.scheduler.Jobs: the hourly alert scan (handlers/alerts/interactive.py)."""
        scan_and_post(self.engine, self.client, now)

    def post(
        self,
        department: Department,
        day: dt.date,
        *,
        period: str,
        subject: str = "",
        retry_failed: bool = False,
    ) -> Outcome:
        """Build and post one digest, exactly once for (department, period, subject)."""
        assert department.id is not None
        if not department.channel_id:
            log.warning("digest for %s skipped: the department has no channel", department.key)
            return Outcome("no_channel", department)
        built: list[Built] = []

        def messages() -> list[Message]:
            built.append(build(self.engine, department, day))
            return built[0].messages

        def uploads() -> list[Upload]:
            chart = built[0].chart
            if chart is None:
                return []
            locale = built[0].locale
            return [
                Upload(
                    content=chart,
                    filename=f"kpibot-{department.key}.png",
                    title=render.template(
                        "digest/header.txt", locale, department=department, day=day
                    ).strip(),
                    comment=render.message("digest.chart_comment", locale, periods=CHART_PERIODS),
                )
            ]

        sent = self.outbox.send(
            outbox.Key(department.id, PostKind.DIGEST, period, subject),
            department.channel_id,
            messages,
            uploads=uploads,
            retry_failed=retry_failed,
        )
        if sent.status == "failed":
            assert sent.error is not None
            log.error("digest for %s to %s failed: %s", department.key, department.channel_id, sent.error)
            self.tell_admins(department, "digest", sent.error)
            return Outcome("failed", department, error=sent.error)
        if sent.status == "posted":
            log.info("digest for %s posted to %s (ts %s)", department.key, department.channel_id, sent.ts)
        return Outcome(sent.status, department, ts=sent.ts)

    def remind(self, department: Department, digest_slot: dt.datetime) -> int:
        """DM each owner whose KPIs are still unreported for the coming digest; returns how many."""
        assert department.id is not None
        tz = ZoneInfo(department.timezone)
        day = digest_slot.astimezone(tz).date()
        with transaction(self.engine) as session:
            digest = build_digest(session, department, day, goal=None)
        sent = 0
        for item in digest.missing:
            if item.owner_user_id is None:
                continue
            locale = department.locale
            text = render.message(
                "reminder.text",
                locale,
                department=department.name(locale),
                when=digest_slot.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
                kpis=", ".join(f"`{kpi.key}` {kpi.name(locale)}" for kpi in item.kpis),
            )
            key = outbox.Key(department.id, PostKind.REMINDER, slot_key(digest_slot, tz), item.owner_user_id)
            posted = self.outbox.send(key, item.owner_user_id, [Message(text)])
            sent += posted.status == "posted"
        return sent

    def tell_admins(self, department: Department, kind: str, error: str) -> None:
        """Once per failed post (a failed post is not retried by itself, so this runs once)."""
        with transaction(self.engine) as session:
            division = session.exec(select(Department).where(Department.is_division)).first()
        recipients = sorted(self.settings.admins) or (
            [division.channel_id]
            if division and division.channel_id and division.channel_id != department.channel_id
            else []
        )
        if not recipients:
            log.error("no admin to tell about the failed %s for %s (set KPIBOT_ADMINS)", kind, department.key)
            return
        locale = self.settings.locale
        text = render.message(
            "digest.failed_notice",
            locale,
            kind=kind,
            department=department.name(locale),
            department_key=department.key,
            channel=department.channel_id,
            error=error,
        )
        for recipient in recipients:
            try:
                self.outbox.poster.post(recipient, Message(text))
            except PostFailed as notice_error:
                log.error("could not tell %s about the failed %s: %s", recipient, kind, notice_error.code)


@subcommand("digest", "ダイジェスト")
def digest_command(request: CommandRequest) -> None:
    """`/kpi digest [department]`: an admin posts a department's digest now (at most once a day)."""
    locale = request.locale()
    if not request.deps.is_admin(request.user_id):
        request.reply(render.message("digest.command_not_admin", locale))
        return
    with transaction(request.deps.engine) as session:
        departments = all_departments(session)
    department = find_department(departments, request.text) if request.text else request.channel_department
    if department is None:
        keys = ", ".join(f"`{d.key}`" for d in departments)
        request.reply(render.message("digest.command_which", locale, keys=keys))
        return
    locale = request.locale(department)
    name = department.name(locale)
    jobs = DigestJobs(request.client, request.deps.engine, request.deps.settings)
    day = today(ZoneInfo(department.timezone))
    outcome = jobs.post(department, day, period=day.isoformat(), subject="manual", retry_failed=True)
    if outcome.status == "no_channel":
        request.reply(render.message("digest.command_no_channel", locale, department=name))
    elif outcome.status == "failed":
        request.reply(
            render.message(
                "digest.command_failed",
                locale,
                department=name,
                error=outcome.error,
                channel=department.channel_id,
            )
        )
    elif outcome.status in ("already", "busy"):
        ts = outcome.ts
        channel = department.channel_id
        link = (jobs.outbox.poster.permalink(channel, ts) if channel and ts else None) or ""
        request.reply(render.message("digest.command_already", locale, department=name, link=link))
    else:
        request.reply(
            render.message("digest.command_posted", locale, department=name, channel=department.channel_id)
        )
