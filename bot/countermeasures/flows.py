"""Countermeasures across storage and Slack: confirming one in its thread, closing it, and the
follow-ups in that thread (the measured effect when the KPI's next actual arrives, the reminder on
the due date), each follow-up posted once through the outbox.

Slack is reached only through `bot.outbox.Poster`; the Block Kit of the confirmation comes from the
edge through `CountermeasureMessages` (handlers/countermeasures/messages.py satisfies it).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from bot import outbox, render
from bot.countermeasures import funnel, service
from bot.countermeasures.service import StatusChange
from bot.database import transaction
from bot.errors import DatabaseUnavailable
from bot.models import Countermeasure, CountermeasureStatus, Department, Kpi, PostKind
from bot.outbox import Message, Outbox, Poster, PostFailed
from bot.reports.service import Reported

log = logging.getLogger(__name__)


class CountermeasureMessages(Protocol):
    def confirmation_message(
        self, countermeasure: Countermeasure, kpi: Kpi, locale: str, by: str | None = None
    ) -> Message:
        """The confirmation in the thread: what, owner, due, effect, status; Done/Dropped while open."""


# -- confirming --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Announced:
    link: str | None
    error: str | None  # a Slack error code, or "no_channel"


def announce(
    engine: Engine,
    poster: Poster,
    messages: CountermeasureMessages,
    countermeasure: Countermeasure,
    kpi: Kpi,
    department: Department,
) -> Announced:
    """Confirm a logged countermeasure: in its alert's thread, else as a new message in the department's
    channel (which starts its thread); then store where it is and the link to it."""
    assert countermeasure.id is not None
    channel = countermeasure.channel_id or department.channel_id
    if not channel:
        return Announced(None, "no_channel")
    message = messages.confirmation_message(countermeasure, kpi, department.locale)
    try:
        ts = poster.post(channel, message, thread_ts=countermeasure.thread_ts)
    except PostFailed as error:
        log.error("confirming countermeasure %s in %s failed: %s", countermeasure.id, channel, error.code)
        return Announced(None, error.code)
    link = poster.permalink(channel, ts)
    thread_ts = countermeasure.thread_ts or ts
    try:
        with transaction(engine) as session:
            service.set_thread(session, countermeasure.id, channel, thread_ts, link)
    except (DatabaseUnavailable, OperationalError):
        # The confirmation is in Slack already: the countermeasure stays logged, only its link is missing.
        log.exception("storing the thread of countermeasure %s failed", countermeasure.id)
    countermeasure.channel_id, countermeasure.thread_ts, countermeasure.permalink = channel, thread_ts, link
    return Announced(link, None)


# -- Done / Dropped ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Closing:
    """What a Done/Dropped click did; `department` is None when the countermeasure was never found."""

    outcome: Literal["gone", "not_allowed", "already", "changed"]
    department: Department | None = None
    change: StatusChange | None = None


def close(
    engine: Engine,
    poster: Poster,
    messages: CountermeasureMessages,
    *,
    countermeasure_id: int,
    status: CountermeasureStatus,
    user_id: str,
    is_admin: Callable[[], bool],
    channel: str,
    message_ts: str,
) -> Closing:
    """One change however many clicks (bot.countermeasures.service.set_status); the winner's click
    updates the confirmation (`message_ts`) to show it."""
    with transaction(engine) as session:
        item = service.item_of(session, countermeasure_id)
        if item is None:
            return Closing("gone")
        if not service.may_change(session, item.countermeasure, item.department, user_id, is_admin):
            return Closing("not_allowed", item.department)
    with transaction(engine) as session:
        change = service.set_status(session, countermeasure_id, status, user_id=user_id, source="button")
    if change is None:  # deleted since it was read
        return Closing("gone", item.department)
    if not change.changed:
        return Closing("already", item.department, change)
    message = messages.confirmation_message(
        change.countermeasure, item.kpi, item.department.locale, by=user_id
    )
    try:
        poster.update(channel, message_ts, message)
    except PostFailed as error:
        # The status is stored; the buttons on the stale confirmation answer "already" from now on.
        log.error("updating countermeasure %s in %s failed: %s", countermeasure_id, channel, error.code)
    return Closing("changed", item.department, change)


# -- follow-ups --------------------------------------------------------------------------------------


def on_reported(posts: Outbox, reported: Reported) -> None:
    """Post the measured effect of the KPI's countermeasures in their threads: the series since the
    baseline (before → each period → now), % of target and a verdict (worked / not yet / did not
    work). While a period runs, once per countermeasure and period (a running total judged on its
    pace); on a finished period's figure, once per verdict, so a correction that changes the verdict
    is said once more. Followed until a period shows it worked. A countermeasure in a funnel alert's
    thread is followed on its hand-off instead (bot.countermeasures.funnel). One failure never
    stops the rest."""
    kpi, department, period = reported.kpi, reported.department, reported.period
    with transaction(posts.engine) as session:
        effects = service.effects(
            session,
            kpi=kpi,
            period=period,
            value=reported.recorded.actual.value,
            kpi_score=reported.score,
            is_correction=reported.recorded.is_correction,
            today=service.today_for(department),
        )
    _post_effects(posts, department, effects)
    # Explicit branch: a stage of the funnel also moves the hand-offs it is a side of.
    funnel.on_reported(posts, kpi, period)


def measure_finished(posts: Outbox, now: dt.datetime) -> int:
    """The final figure of a period that ended since its last report (the hourly scan): each followed
    countermeasure's effect on its KPI's period that last ended, said once per verdict (nothing new
    when a report already said it); and those in funnel alerts' threads on their hand-off (a figure
    fetched or pushed moves it without a Slack report). Returns how many were posted."""
    with transaction(posts.engine) as session:
        found = service.finished_effects(session, now)
    posted = sum(_post_effects(posts, department, effects) for department, effects in found)
    return posted + funnel.measure_finished(posts, now)


def _post_effects(posts: Outbox, department: Department, effects: list[service.Effect]) -> int:
    assert department.id is not None
    locale = department.locale
    posted = 0
    for effect in effects:
        cm, kpi = effect.countermeasure, effect.kpi
        if not cm.channel_id or not cm.thread_ts or cm.id is None:
            continue
        text = render.message(
            "countermeasure.effect",
            locale,
            cm=cm,
            kpi=kpi,
            before_period=effect.before_period,
            before=effect.before,
            before_pct=effect.before_pct,
            series=effect.series,
            period=effect.period,
            after=effect.after,
            score=effect.score,
            change=effect.change,
            verdict=effect.verdict,
            final=effect.final,
            pace=effect.pace,
        )
        subject = service.effect_subject(cm.id, effect.period, effect.verdict if effect.final else None)
        key = outbox.Key(department.id, PostKind.FOLLOWUP, effect.period, subject)
        try:
            # A verdict Slack refused (an outage, a 5xx) is said the next time it is judged: the
            # ledger keeps it from being said twice, never from being said at all.
            sent = posts.send(key, cm.channel_id, [Message(text)], thread_ts=cm.thread_ts, retry_failed=True)
            if sent.status == "posted" and effect.final:
                with transaction(posts.engine) as session:
                    service.record_verdict(session, cm.id, effect.verdict)
            posted += sent.status == "posted"
        except Exception:
            log.exception("effect of countermeasure %s for %s failed", cm.id, effect.period)
    return posted


def remind_due(posts: Outbox, now: dt.datetime) -> int:
    """Remind each open countermeasure's owner in its thread on its due date (from REMIND_AT in its
    department's time zone), once; returns how many were posted. One failure never stops the rest."""
    with transaction(posts.engine) as session:
        items = service.reminders_due(session, now)
    sent = 0
    for item in items:
        cm, department = item.countermeasure, item.department
        if not cm.channel_id or not cm.thread_ts or cm.due_date is None or department.id is None:
            continue
        text = render.message(
            "countermeasure.due_today",
            department.locale,
            cm=cm,
            kpi=item.kpi,
            owner=cm.owner_user_id or cm.logged_by,
        )
        key = outbox.Key(department.id, PostKind.FOLLOWUP, cm.due_date.isoformat(), f"due:{cm.id}")
        try:
            posted = posts.send(key, cm.channel_id, [Message(text)], thread_ts=cm.thread_ts)
        except Exception:
            log.exception("due-date reminder of countermeasure %s failed", cm.id)
            continue
        sent += posted.status == "posted"
    return sent
