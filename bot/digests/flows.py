"""A department's digest built and posted once, its owners reminded, its admins told of a failure.

Everything goes through `bot.outbox`: the ledger makes a repeat (a retry, a catch-up, two
leaders for a moment) harmless. A Slack error for one channel is recorded on its Post row,
logged and told to the admins once; it never stops the other departments.

The Block Kit is the edge's (handlers/digests/messages.py): it is passed in as `DigestMessages`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import select

from bot import render
from bot.config import Settings
from bot.database import transaction
from bot.digests.service import (
    CHART_PERIODS,
    Digest,
    DivisionSummary,
    build_digest,
    build_digests,
    build_division_summary,
    chart_series,
    goal_progress,
)
from bot.models import Department, PostKind
from bot.outbox import Key, Message, Outbox, PostFailed, Upload
from bot.schedule.slots import slot_key
from bot.scoring import Status
from bot.sources.freshness import is_sourced

log = logging.getLogger(__name__)


class DigestMessages(Protocol):
    """How a digest reads in Slack (handlers/digests/messages.py): the root message first, then
    thread replies for whatever did not fit."""

    def digest_messages(self, digest: Digest, locale: str) -> list[Message]: ...

    def division_messages(self, summary: DivisionSummary, locale: str) -> list[Message]: ...


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
    digest: Digest | None = None  # None for the division's summary


def build(
    engine: Engine,
    department: Department,
    day: dt.date,
    messages: DigestMessages,
    *,
    with_chart: bool = True,
    locale: str | None = None,
) -> Built:
    """Everything a department's digest says, read in one transaction (in its own language,
    unless `locale` says otherwise: the demo shows every department in one)."""
    (built,) = build_many(engine, [department], day, messages, with_chart=with_chart, locale=locale)
    return built


def build_many(
    engine: Engine,
    departments: Sequence[Department],
    day: dt.date,
    messages: DigestMessages,
    *,
    with_chart: bool = True,
    locale: str | None = None,
) -> list[Built]:
    """`build` for many departments on one day, in their order, read in one transaction: the
    departments' digests together (bot.digests.service.build_digests), the KGI roll-up once per
    fiscal-year start."""
    digests: dict[int, Digest] = {}
    summaries: dict[int, DivisionSummary] = {}
    with transaction(engine) as session:
        by_start: dict[int, list[Department]] = {}
        for department in departments:
            assert department.id is not None
            if department.is_division:
                summaries[department.id] = build_division_summary(session, department, day)
            else:
                by_start.setdefault(department.fiscal_year_start_month, []).append(department)
        for start_month, group in by_start.items():
            goal = goal_progress(session, day, start_month)
            digests.update(
                zip((d.id or 0 for d in group), build_digests(session, group, day, goal), strict=True)
            )
        # The division's Block Kit is rendered while its rows are loaded (its summary reads lazily).
        division = {
            department_id: messages.division_messages(summary, locale or summary.division.locale)
            for department_id, summary in summaries.items()
        }
    built = []
    for department in departments:
        assert department.id is not None
        language = locale or department.locale
        if department.id in division:
            built.append(Built(department, day, division[department.id], None, language))
            continue
        digest = digests[department.id]
        drawn = chart(digest, language) if with_chart and digest.rows else None
        built.append(
            Built(department, day, messages.digest_messages(digest, language), drawn, language, digest)
        )
    return built


def chart(digest: Digest, locale: str) -> bytes:
    """The digest's trend chart (a PNG): for `/kpi chart`, `kpibot digest --dry-run`, the preview, and
    the thread of a digest posted without its native chart (with_png_if_plain)."""
    # Imported here: matplotlib is a third of a web worker's memory, and only a digest draws.
    from bot.digests.charts import render_trend_chart

    title = render.message(
        "digest.chart_title", locale, department=digest.department.name(locale), day=digest.day
    )
    return render_trend_chart(title, chart_series(digest, locale), locale)


def needs_chart(digest: Digest) -> bool:
    """Whether a digest shows a trend chart: when a KPI needs attention (the native chart's KPIs,
    handlers/digests/messages.py). A digest all on track shows its table, and `/kpi chart` the PNG."""
    return any(row.score.status in (Status.RED, Status.AMBER) for row in digest.rows)


def with_png_if_plain(built: Built) -> list[Message]:
    """The digest's messages, the root carrying its PNG grid as `plain_files`: drawn and uploaded in
    its thread only if the root is posted without a native chart (Slack refused the new blocks, or the
    digest had no room for them). Posted with its native chart, the digest costs one call and no
    matplotlib."""
    digest = built.digest
    if digest is None or not needs_chart(digest):
        return built.messages
    root, *rest = built.messages

    def png() -> list[Upload]:
        assert digest is not None
        return [chart_upload(built.department, built.day, chart(digest, built.locale), built.locale)]

    return [replace(root, plain_files=png), *rest]


def chart_upload(department: Department, day: dt.date, drawn: bytes, locale: str) -> Upload:
    """The PNG grid as a file: in the digest's thread, or where `/kpi chart` asked for it."""
    return Upload(
        content=drawn,
        filename=f"kpibot-{department.key}.png",
        title=render.template("digest/header.txt", locale, department=department, day=day).strip(),
        comment=render.message("digest.chart_comment", locale, periods=CHART_PERIODS),
    )


def draw_chart(engine: Engine, department: Department, day: dt.date, locale: str) -> bytes | None:
    """A department's PNG grid on `day` without the rest of its digest; None when it has no KPIs
    (the division: its summary has no chart)."""
    if department.is_division:
        return None
    with transaction(engine) as session:
        digest = build_digest(session, department, day, goal=None)
    return chart(digest, locale) if digest.rows else None


def post(
    outbox: Outbox,
    messages: DigestMessages,
    settings: Settings,
    department: Department,
    day: dt.date,
    *,
    period: str,
    subject: str = "",
    retry_failed: bool = False,
    built: Built | None = None,
) -> Outcome:
    """Build and post one digest, exactly once for (department, period, subject). `built`: its
    digest built already, with others' (`build_many`, bot.schedule.jobs posting many at once)."""
    assert department.id is not None
    if not department.channel_id:
        log.warning("digest for %s skipped: the department has no channel", department.key)
        return Outcome("no_channel", department)

    # Built only when the post is not sent already (the outbox calls this after its check); the
    # PNG grid is not drawn here but only where no native chart is posted (with_png_if_plain).
    def root_and_replies() -> list[Message]:
        made = built or build(outbox.engine, department, day, messages, with_chart=False)
        return with_png_if_plain(made)

    sent = outbox.send(
        Key(department.id, PostKind.DIGEST, period, subject),
        department.channel_id,
        root_and_replies,
        retry_failed=retry_failed,
    )
    if sent.status == "failed":
        assert sent.error is not None
        log.error("digest for %s to %s failed: %s", department.key, department.channel_id, sent.error)
        tell_admins(outbox, settings, department, "digest", sent.error)
        return Outcome("failed", department, error=sent.error)
    if sent.status == "posted":
        log.info("digest for %s posted to %s (ts %s)", department.key, department.channel_id, sent.ts)
    return Outcome(sent.status, department, ts=sent.ts)


def post_on_request(
    outbox: Outbox, messages: DigestMessages, settings: Settings, department: Department, day: dt.date
) -> Outcome:
    """A person asked for the digest (`/kpi digest`, `kpibot digest`): at most once a day, and
    again after Slack refused it (they asked again)."""
    return post(
        outbox,
        messages,
        settings,
        department,
        day,
        period=day.isoformat(),
        subject="manual",
        retry_failed=True,
    )


def remind_owners(outbox: Outbox, department: Department, digest_slot: dt.datetime) -> int:
    """DM each owner whose KPIs are still unreported for the coming digest; returns how many."""
    assert department.id is not None
    tz = ZoneInfo(department.timezone)
    day = digest_slot.astimezone(tz).date()
    with transaction(outbox.engine) as session:
        digest = build_digest(session, department, day, goal=None)
    sent = 0
    for item in digest.missing:
        # A fetched KPI is the source's to deliver, not its owner's: never nagged (bot/sources/freshness.py).
        kpis = [kpi for kpi in item.kpis if not is_sourced(kpi)]
        if item.owner_user_id is None or not kpis:
            continue
        locale = department.locale
        text = render.message(
            "reminder.text",
            locale,
            department=department.name(locale),
            when=digest_slot.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
            kpis=", ".join(f"`{kpi.key}` {kpi.name(locale)}" for kpi in kpis),
        )
        key = Key(department.id, PostKind.REMINDER, slot_key(digest_slot, tz), item.owner_user_id)
        posted = outbox.send(key, item.owner_user_id, [Message(text)])
        sent += posted.status == "posted"
    return sent


def tell_admins(outbox: Outbox, settings: Settings, department: Department, kind: str, error: str) -> None:
    """Once per failed post (a failed post is not retried by itself, so this runs once): the
    admins (KPIBOT_ADMINS), else the division's channel unless that is where the post failed."""
    with transaction(outbox.engine) as session:
        division = session.exec(select(Department).where(Department.is_division)).first()
    recipients = sorted(settings.admins) or (
        [division.channel_id]
        if division and division.channel_id and division.channel_id != department.channel_id
        else []
    )
    if not recipients:
        log.error("no admin to tell about the failed %s for %s (set KPIBOT_ADMINS)", kind, department.key)
        return
    locale = settings.locale
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
        # A notice is not a ledger post: it is sent once because its failed post is final.
        try:
            outbox.poster.post(recipient, Message(text))
        except PostFailed as notice_error:
            log.error("could not tell %s about the failed %s: %s", recipient, kind, notice_error.code)
