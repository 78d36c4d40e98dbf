"""The effect of a countermeasure logged in a funnel alert's thread (bot.funnel.flows): followed on
the hand-off's conversion, not on one KPI. The baseline is the conversion of the alert's period;
each later period's conversion (a report of either stage moves it) is judged: worked (the hand-off
no longer leaks), not yet (converting better than at the baseline), did not work (no better). The
thread shows the series and the verdict once per change of verdict: the countermeasure's `verdict`
is the one last said, and the ledger key (period, verdict) keeps a retry or a second process from
saying it twice.

The single-KPI path (bot.countermeasures.service.effects) leaves these countermeasures alone.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import and_
from sqlmodel import Session, col, select

from bot import outbox, render
from bot.countermeasures.service import (
    DID_NOT_WORK,
    EFFECT_PREFIX,
    NOT_YET,
    SERIES_MAX,
    WORKED,
    effect_subject,
    record_verdict,
    today_for,
)
from bot.database import transaction
from bot.funnel.flows import SUBJECT_PREFIX, leak_subject, subject_of
from bot.funnel.service import Funnel, HandOff, build_funnel
from bot.models import (
    Countermeasure,
    CountermeasureStatus,
    Department,
    FunnelStage,
    Kpi,
    Post,
    PostKind,
    PostStatus,
)
from bot.outbox import Message, Outbox
from bot.periods import Period, parse_key
from bot.scorecard import reviewed_period

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FunnelEffect:
    """The hand-off's conversion since the countermeasure: the alert's period (`before_period`,
    `before_pct`) → each period between (`series`) → `hand_off` in `period`, and a verdict."""

    countermeasure: Countermeasure
    division_id: int
    hand_off: HandOff
    before_period: str
    before_pct: Decimal | None
    series: tuple[tuple[str, Decimal | None], ...]
    period: str
    verdict: str
    final: bool


def verdict_of(hand_off: HandOff, before_pct: Decimal | None) -> str:
    """Worked: converting at or past its leak threshold again; not yet: better than at the alert;
    did not work: no better. `hand_off` has a conversion (both stages reported)."""
    if not hand_off.leaking:
        return WORKED
    if before_pct is not None and hand_off.actual_pct is not None and hand_off.actual_pct > before_pct:
        return NOT_YET
    return DID_NOT_WORK


def _subjects_touching(session: Session, kpi_id: int) -> set[str]:
    """The ledger subjects of the hand-offs the stage `kpi_id` is a side of (into it, out of it)."""
    keys = session.exec(
        select(Kpi.id, Kpi.key)
        .join(FunnelStage, col(FunnelStage.kpi_id) == Kpi.id)
        .order_by(col(FunnelStage.position))
    ).all()
    subjects: set[str] = set()
    for index, (stage_id, key) in enumerate(keys):
        if stage_id != kpi_id:
            continue
        if index > 0:
            subjects.add(subject_of(key))
        if index + 1 < len(keys):
            subjects.add(subject_of(keys[index + 1][1]))
    return subjects


def effects(session: Session, *, kpi: Kpi, period: Period) -> list[FunnelEffect]:
    """Now that `kpi` was reported for `period`: the effects of the countermeasures logged in the
    threads of the funnel alerts of the hand-offs `kpi` is a stage of, whose verdict on `period`
    differs from the one last said. Only periods after the alert's (the baseline) are judged."""
    assert kpi.id is not None
    subjects = _subjects_touching(session, kpi.id)
    if not subjects:
        return []
    return _judge(session, _followed(session, subjects), lambda cm, post, day: period)


def finished_effects(session: Session, now: dt.datetime) -> list[FunnelEffect]:
    """The hourly scan's judgement, for figures stored without a Slack report (a fetch, the push API,
    a file): each followed countermeasure on the period its thread last spoke of, or the one the
    funnel last finished when that is later. A changed verdict only; the same ledger key as a report's."""
    rows = _followed(session, None)
    if not rows:
        return []
    said = _said_periods(session, rows)

    def period_of(cm: Countermeasure, post: Post, day: dt.date) -> Period | None:
        reviewed = reviewed_period(parse_key(post.period).cadence, day)
        last = said.get(cm.id or 0, [])
        # The thread's latest period (a running one reported in Slack) is not undone by an older one.
        later = max((key for key in last if len(key) == len(reviewed.key)), default=None)
        return parse_key(later) if later is not None and reviewed.key < later else reviewed

    return _judge(session, rows, period_of, now)


def _followed(session: Session, subjects: set[str] | None) -> list[tuple[Countermeasure, Post]]:
    """The countermeasures (not dropped) logged in the threads of funnel alerts (of `subjects`, or all)."""
    query = (
        select(Countermeasure, Post)
        .join(
            Post,
            and_(col(Post.channel_id) == Countermeasure.channel_id, col(Post.ts) == Countermeasure.thread_ts),
        )
        .where(
            Post.kind == PostKind.ALERT,
            Post.status == PostStatus.SENT,
            col(Countermeasure.status) != CountermeasureStatus.DROPPED,
        )
        .order_by(col(Countermeasure.id))
    )
    if subjects is None:
        query = query.where(col(Post.subject).startswith(SUBJECT_PREFIX))
    else:
        query = query.where(col(Post.subject).in_(subjects))
    return [(cm, post) for cm, post in session.exec(query).all()]


def _said_periods(session: Session, rows: list[tuple[Countermeasure, Post]]) -> dict[int, list[str]]:
    """The periods each countermeasure's effect was said for (ledger subjects effect:<id>:<period>…)."""
    wanted = {cm.id for cm, _ in rows}
    subjects = session.exec(
        select(Post.subject).where(
            Post.kind == PostKind.FOLLOWUP,
            Post.status == PostStatus.SENT,
            col(Post.department_id).in_({post.department_id for _, post in rows}),
            col(Post.subject).startswith(EFFECT_PREFIX),
        )
    ).all()
    said: dict[int, list[str]] = {}
    for subject in subjects:
        _, cm_id, period, *_ = subject.split(":")
        if int(cm_id) in wanted:
            said.setdefault(int(cm_id), []).append(period)
    return said


def _judge(
    session: Session,
    rows: list[tuple[Countermeasure, Post]],
    period_of: Callable[[Countermeasure, Post, dt.date], Period | None],
    now: dt.datetime | None = None,
) -> list[FunnelEffect]:
    """Each countermeasure's verdict on the period `period_of` chooses (in its division's day), when
    it differs from the one last said."""
    funnels: dict[str, Funnel | None] = {}

    def funnel_in(key: str, day: dt.date) -> Funnel | None:
        if key not in funnels:
            funnels[key] = build_funnel(session, day, parse_key(key))
        return funnels[key]

    found = []
    for cm, post in rows:
        division = session.get(Department, post.department_id)
        if division is None or cm.id is None:
            continue
        day = today_for(division) if now is None else now.astimezone(ZoneInfo(division.timezone)).date()
        period = period_of(cm, post, day)
        # The alert's period is the baseline: only later periods of the same cadence are judged.
        if period is None or len(post.period) != len(period.key) or not post.period < period.key:
            continue
        # Done long ago: its follow-up is over (as on the single-KPI path).
        since = dt.datetime.combine(period.previous().start, dt.time(), tzinfo=dt.UTC)
        if cm.status is CountermeasureStatus.DONE and cm.updated_at < since:
            continue
        current = funnel_in(period.key, day)
        hand_off = None if current is None else _hand_off(current, post.subject)
        if hand_off is None or hand_off.vs_plan_pct is None:
            continue  # a stage unreported: nothing to judge yet
        start = funnel_in(post.period, day)
        before = None if start is None else _hand_off(start, post.subject)
        before_pct = None if before is None else before.actual_pct
        verdict = verdict_of(hand_off, before_pct)
        if verdict == cm.verdict:
            continue  # said already: the thread hears only a change of verdict
        between = [parse_key(post.period).shift(step) for step in range(1, SERIES_MAX + 1)]
        series = []
        for between_period in between:
            if not between_period < period:
                break
            funnel = funnel_in(between_period.key, day)
            step = None if funnel is None else _hand_off(funnel, post.subject)
            series.append((between_period.key, None if step is None else step.actual_pct))
        found.append(
            FunnelEffect(
                cm,
                post.department_id,
                hand_off,
                post.period,
                before_pct,
                tuple(series),
                period.key,
                verdict,
                period.end < day,
            )
        )
    return found


def _hand_off(funnel: Funnel, subject: str) -> HandOff | None:
    return next((h for h in funnel.hand_offs if leak_subject(h) == subject), None)


def on_reported(posts: Outbox, kpi: Kpi, period: Period) -> int:
    """Say each changed verdict in its funnel alert's thread, once; returns how many were posted.
    One failure never stops the rest."""
    with transaction(posts.engine) as session:
        found = effects(session, kpi=kpi, period=period)
        divisions = {e.division_id: session.get(Department, e.division_id) for e in found}
    return _say(posts, found, divisions)


def measure_finished(posts: Outbox, now: dt.datetime) -> int:
    """The hourly scan: say each verdict that figures stored without a Slack report changed
    (finished_effects), once, under the same ledger key as a report's; returns how many were posted."""
    with transaction(posts.engine) as session:
        found = finished_effects(session, now)
        divisions = {e.division_id: session.get(Department, e.division_id) for e in found}
    return _say(posts, found, divisions)


def _say(posts: Outbox, found: list[FunnelEffect], divisions: dict[int, Department | None]) -> int:
    posted = 0
    for effect in found:
        cm, division = effect.countermeasure, divisions.get(effect.division_id)
        if division is None or cm.id is None or not cm.channel_id or not cm.thread_ts:
            continue
        locale, hand_off = division.locale, effect.hand_off
        text = render.message(
            "countermeasure.funnel_effect",
            locale,
            cm=cm,
            before=hand_off.before.kpi.name(locale),
            after=hand_off.after.kpi.name(locale),
            from_department=hand_off.before.department.name(locale),
            to_department=hand_off.after.department.name(locale),
            before_period=effect.before_period,
            before_pct=effect.before_pct,
            series=effect.series,
            period=effect.period,
            actual=hand_off.actual_pct,
            planned=hand_off.planned_pct,
            vs_plan=hand_off.vs_plan_pct,
            verdict=effect.verdict,
            final=effect.final,
        )
        subject = effect_subject(cm.id, effect.period, effect.verdict)
        key = outbox.Key(effect.division_id, PostKind.FOLLOWUP, effect.period, subject)
        try:
            # A verdict Slack refused (an outage, a 5xx) is said the next time it is judged: the
            # ledger keeps it from being said twice, never from being said at all.
            sent = posts.send(key, cm.channel_id, [Message(text)], thread_ts=cm.thread_ts, retry_failed=True)
            if sent.status in ("posted", "already"):
                with transaction(posts.engine) as session:
                    record_verdict(session, cm.id, effect.verdict)
            posted += sent.status == "posted"
        except Exception:
            log.exception("funnel effect of countermeasure %s for %s failed", cm.id, effect.period)
    return posted
