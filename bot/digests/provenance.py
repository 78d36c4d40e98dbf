"""Where a digest's values came from: a value a system sent (the push API, HubSpot), a value
corrected since the department's last digest (with what that digest showed), and a KPI fetched
from its own source — marked stale, with the reason and the age, when the source failed or went
quiet (bot/sources/freshness.py). A few queries per batch of departments (`marks_of`), whatever
their history and number."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, func, select

from bot import render
from bot.clock import utcnow
from bot.models import Actual, Post, PostKind, PostStatus, Source
from bot.scorecard import CHUNK, ScoreRow
from bot.sources import freshness, registry
from bot.sources.freshness import Stale

SYSTEMS = (Source.API, Source.HUBSPOT)


@dataclass(frozen=True)
class Mark:
    system: Source | None  # the live value was sent by a system (API, HubSpot)…
    source_name: str | None  # …this one
    corrected_from: Decimal | None  # the value the last digest showed, when corrected since
    fetched: str | None = None  # the KPI is fetched from this source (its label: "sql (WAREHOUSE)")
    stale: Stale | None = None  # …and its value cannot be trusted as current

    @property
    def corrected(self) -> bool:
        return self.corrected_from is not None

    def note(self, locale: str) -> str:
        """The fetched source and its staleness, as the digest row shows them ("" for neither)."""
        parts = []
        if self.fetched:
            parts.append(
                ":inbox_tray: _" + render.message("sources.fetched_mark", locale, label=self.fetched) + "_"
            )
        if self.stale is not None:
            error = (
                render.message(f"sources.fetch_error.{self.stale.error_code}", locale)
                if self.stale.error_code
                else ""
            )
            age = render.message("sources.age", locale, hours=self.stale.age_hours)
            text = render.message(f"sources.stale.{self.stale.reason}", locale, error=error, age=age)
            parts.append(f":warning: *{text}*")
        return " ・ ".join(parts) if locale == "ja" else " · ".join(parts)


def last_digests_at(
    session: Session, department_ids: Collection[int], before: dt.datetime
) -> dict[int, dt.datetime]:
    """By department id, when its last digest (or division summary) before `before` was sent."""
    if not department_ids:
        return {}
    found = session.exec(
        select(Post.department_id, func.max(Post.sent_at))
        .where(
            col(Post.department_id).in_(list(department_ids)),
            col(Post.kind).in_([PostKind.DIGEST, PostKind.SUMMARY]),
            Post.status == PostStatus.SENT,
            col(Post.sent_at) < before,
        )
        .group_by(col(Post.department_id))
    ).all()
    return {department_id: sent for department_id, sent in found if department_id is not None and sent}


def marks_of(
    session: Session, rows_by_department: Mapping[int, Sequence[ScoreRow]]
) -> dict[int, dict[int, Mark]]:
    """`marks` of many departments, by department id, from one set of reads per `CHUNK` of
    them, whatever their number: the live values (by the `uq_actual_live` index), the last
    digests, the fetched KPIs' states, and — only for values corrected since a digest — the
    values that digest showed."""
    found: dict[int, dict[int, Mark]] = {}
    ids = list(rows_by_department)
    now = utcnow()
    for start in range(0, len(ids), CHUNK):
        chunk = {
            department_id: rows_by_department[department_id] for department_id in ids[start : start + CHUNK]
        }
        found.update(_marks_of_chunk(session, chunk, now))
    return found


def _marks_of_chunk(
    session: Session, rows_by_department: Mapping[int, Sequence[ScoreRow]], now: dt.datetime
) -> dict[int, dict[int, Mark]]:
    department_of: dict[tuple[int, str], int] = {
        (row.kpi.id, row.period.key): department_id
        for department_id, rows in rows_by_department.items()
        for row in rows
        if row.kpi.id is not None
    }
    if not department_of:
        return {}
    fetched = _fetched(session, [row for rows in rows_by_department.values() for row in rows], now)
    found: dict[int, dict[int, Mark]] = {
        department_id: {row.kpi.id: fetched[row.kpi.id] for row in rows if row.kpi.id in fetched}
        for department_id, rows in rows_by_department.items()
    }
    since = last_digests_at(session, list(rows_by_department), now)
    # The live predicate, as the partial index `uq_actual_live` has it: without it this read
    # scans `actual` (its only index on these columns is that one).
    live = session.exec(
        select(
            Actual.kpi_id, Actual.period, Actual.value, Actual.reported_at, Actual.source, Actual.source_name
        ).where(
            col(Actual.kpi_id).in_({kpi_id for kpi_id, _ in department_of}),
            col(Actual.period).in_({period for _, period in department_of}),
            col(Actual.superseded_at).is_(None),
        )
    ).all()
    lives = [row for row in live if (row.kpi_id, row.period) in department_of]
    # Reported since the department's last digest: what that digest showed, if it differs.
    corrected = [
        row
        for row in lives
        if (last := since.get(department_of[(row.kpi_id, row.period)])) is not None and row.reported_at > last
    ]
    shown = _shown_at_digest(session, corrected, department_of, since)
    for row in lives:
        before = shown.get((row.kpi_id, row.period))
        was = Decimal(before) if before is not None and Decimal(before) != Decimal(row.value) else None
        system = row.source if row.source in SYSTEMS else None
        if system is not None or was is not None:
            marks_here = found[department_of[(row.kpi_id, row.period)]]
            mark = marks_here.get(row.kpi_id)
            marks_here[row.kpi_id] = Mark(
                system,
                row.source_name if system else None,
                was,
                mark.fetched if mark else None,
                mark.stale if mark else None,
            )
    return found


def _shown_at_digest(
    session: Session,
    corrected: Sequence[Any],
    department_of: Mapping[tuple[int, str], int],
    since: Mapping[int, dt.datetime],
) -> dict[tuple[int, str], Decimal]:
    """By (KPI id, period): the value that was live when the department's last digest was sent
    (the last one reported by then), for the values corrected since."""
    if not corrected:
        return {}
    wanted = {(row.kpi_id, row.period) for row in corrected}
    earlier = session.exec(
        select(Actual.kpi_id, Actual.period, Actual.value, Actual.reported_at)
        .where(
            col(Actual.kpi_id).in_({kpi_id for kpi_id, _ in wanted}),
            col(Actual.period).in_({period for _, period in wanted}),
            col(Actual.reported_at) <= max(since.values()),
        )
        .order_by(col(Actual.id))
    ).all()
    shown: dict[tuple[int, str], Decimal] = {}
    for row in earlier:
        slot = (row.kpi_id, row.period)
        if slot in wanted and row.reported_at <= since[department_of[slot]]:
            shown[slot] = row.value  # the last one by id wins, as in the chain
    return shown


def _fetched(session: Session, rows: Sequence[ScoreRow], now: dt.datetime) -> dict[int, Mark]:
    """A mark for each fetched KPI: its source, and whether it is stale."""
    kpis = [row.kpi for row in rows if freshness.is_sourced(row.kpi)]
    stale = freshness.stale_kpis(session, kpis, now)
    return {
        kpi.id: Mark(None, None, None, registry.label(kpi.fetch_source or {}), stale.get(kpi.id))
        for kpi in kpis
        if kpi.id is not None
    }
