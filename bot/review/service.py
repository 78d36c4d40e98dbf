"""The agenda of a department's weekly review meeting, as plain data (`/kpi review`).

Three kinds of item, each discussed in its own thread: KPIs in red or amber, countermeasures due
or overdue, and reports missing; the header also names the open alerts without a countermeasure, and one
item lists the countermeasures closed since the last review with their verdicts.
Every item has a stable key, so posting the agenda twice on the same day posts each item once
(handlers/review/interactive.py, through the Post ledger).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from bot.alerts.rules import is_running_total
from bot.countermeasures.service import RECENTLY_CLOSED, Item, closed_since, due_or_overdue, open_counts
from bot.models import Alert, AlertStatus, Countermeasure, Department, Kpi, Post, PostKind
from bot.periods import Period
from bot.scorecard import build_scorecard
from bot.scoring import Score, Status, score

_ORDER = {Status.RED: 0, Status.AMBER: 1}


@dataclass(frozen=True)
class OffTrack:
    kpi: Kpi
    period: Period
    score: Score
    open_countermeasures: int

    @property
    def key(self) -> str:
        return f"kpi:{self.kpi.id}"


@dataclass(frozen=True)
class MissingReports:
    owner_user_id: str | None
    kpis: list[tuple[Kpi, Period]]

    @property
    def key(self) -> str:
        return f"missing:{self.owner_user_id or '-'}"


@dataclass(frozen=True)
class Agenda:
    department: Department
    day: dt.date
    off_track: list[OffTrack]
    due: list[Item]
    missing: list[MissingReports]
    # Open alerts no countermeasure was logged against yet (the header names them).
    uncovered: list[Uncovered] = field(default_factory=list)
    # Countermeasures closed since the last review, with their verdicts (one item lists them).
    closed: list[Item] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.off_track) + len(self.due) + len(self.missing)


@dataclass(frozen=True)
class Uncovered:
    """An open alert without any countermeasure: the review should agree one."""

    kpi: Kpi
    alert: Alert


def uncovered_alerts(session: Session, department: Department) -> list[Uncovered]:
    """The department's alerts that are not resolved and have no countermeasure logged against
    them, whatever its status. One query."""
    covered = select(Countermeasure.id).where(col(Countermeasure.alert_id) == col(Alert.id))
    rows = session.exec(
        select(Alert, Kpi)
        .join(Kpi, col(Kpi.id) == Alert.kpi_id)
        .where(
            col(Kpi.department_id) == department.id,
            col(Alert.status) != AlertStatus.RESOLVED,
            ~covered.exists(),
        )
        .order_by(col(Kpi.position), col(Kpi.id), col(Alert.period))
    ).all()
    return [Uncovered(kpi, alert) for alert, kpi in rows]


def last_review(session: Session, department: Department, day: dt.date) -> dt.datetime | None:
    """When the department's last review agenda before `day` was posted (its header), if ever."""
    return session.exec(
        select(Post.sent_at)
        .where(
            Post.department_id == department.id,
            Post.kind == PostKind.REVIEW,
            Post.subject == "",
            col(Post.period) < day.isoformat(),
            col(Post.sent_at).is_not(None),
        )
        .order_by(col(Post.sent_at).desc())
    ).first()


def closed_since_last_review(session: Session, department: Department, day: dt.date) -> list[Item]:
    """Countermeasures closed since the last review (none yet: in the last RECENTLY_CLOSED)."""
    since = last_review(session, department, day) or (
        dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) - RECENTLY_CLOSED
    )
    return closed_since(session, department, since)


def due_key(item: Item) -> str:
    return f"cm:{item.countermeasure.id}"


def build_agenda(session: Session, department: Department, day: dt.date) -> Agenda:
    """What the review discusses on `day`.

    A KPI is judged on its latest meaningful value: a running total (a sum) on the period that last
    ended, since a month in progress is always "behind"; a rate or level on the period in progress
    if it was reported, else on the one that ended. Missing reports are for the period that ended.
    """
    assert department.id is not None
    card = build_scorecard(session, department, day, history_length=2, current=True)
    counts = open_counts(session, [row.kpi.id for row in card.rows if row.kpi.id is not None])
    off_track: list[OffTrack] = []
    missing: dict[str | None, list[tuple[Kpi, Period]]] = defaultdict(list)
    for row in card.rows:
        kpi = row.kpi
        assert kpi.id is not None
        ended = row.period.previous()
        use_current = not is_running_total(kpi) and row.history[-1] is not None
        period, value, target = (
            (row.period, row.history[-1], row.targets[-1])
            if use_current
            else (ended, row.history[-2], row.targets[-2])
        )
        kpi_score = score(value, target, kpi.direction, kpi.amber_pct, kpi.red_pct)
        if kpi_score.status in _ORDER:
            off_track.append(OffTrack(kpi, period, kpi_score, counts.get(kpi.id, 0)))
        if row.history[-2] is None and not kpi.formula:
            missing[kpi.owner_user_id].append((kpi, ended))
    off_track.sort(key=lambda item: _ORDER[item.score.status])
    return Agenda(
        department,
        day,
        off_track,
        due_or_overdue(session, department, day),
        [MissingReports(owner, kpis) for owner, kpis in missing.items()],
        uncovered_alerts(session, department),
        closed_since_last_review(session, department, day),
    )
