"""Reported values. A correction never overwrites: it supersedes the live row."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlmodel import Session, col, select

from bot.clock import utcnow
from bot.models import Actual, AuditEvent, Kpi, Source


@dataclass(frozen=True)
class Recorded:
    actual: Actual
    previous: Actual | None  # the row this one superseded, if it was a correction

    @property
    def is_correction(self) -> bool:
        return self.previous is not None

    @property
    def changed(self) -> bool:
        return self.previous is None or Decimal(self.previous.value) != Decimal(self.actual.value)


def live_actual(session: Session, kpi_id: int, period: str) -> Actual | None:
    return session.exec(
        select(Actual).where(
            Actual.kpi_id == kpi_id, Actual.period == period, col(Actual.superseded_at).is_(None)
        )
    ).first()


def record_actual(
    session: Session,
    *,
    kpi: Kpi,
    period: str,
    value: Decimal,
    reported_by: str,
    source: Source,
    note: str | None = None,
) -> Recorded:
    """Store a value for a KPI and period; the caller's transaction makes it all or nothing."""
    assert kpi.id is not None
    now = utcnow()
    previous = live_actual(session, kpi.id, period)
    if previous is not None:
        # Retire the old row first: the live-row unique index allows one at a time.
        previous.superseded_at = now
        session.add(previous)
        session.flush()
    actual = Actual(
        kpi_id=kpi.id,
        period=period,
        value=value,
        reported_by=reported_by,
        reported_at=now,
        source=source,
        note=note,
    )
    session.add(actual)
    session.flush()
    if previous is not None:
        previous.superseded_by_id = actual.id
        session.add(previous)
    session.add(
        AuditEvent(
            at=now,
            actor=reported_by,
            action="actual.corrected" if previous else "actual.reported",
            entity="actual",
            entity_id=str(actual.id),
            source=source.value,
            details={
                "kpi": kpi.key,
                "period": period,
                "value": str(value),
                "previous": None if previous is None else str(previous.value),
            },
        )
    )
    return Recorded(actual, previous)


def live_values(
    session: Session, kpi_ids: Iterable[int], periods: Iterable[str]
) -> dict[tuple[int, str], Decimal]:
    """Live values by (KPI id, period) for many KPIs and periods, in one query."""
    ids, keys = list(kpi_ids), list(periods)
    if not ids or not keys:
        return {}
    rows = session.exec(
        select(Actual.kpi_id, Actual.period, Actual.value).where(
            col(Actual.kpi_id).in_(ids), col(Actual.period).in_(keys), col(Actual.superseded_at).is_(None)
        )
    ).all()
    return {(kpi_id, period): Decimal(value) for kpi_id, period, value in rows}


def history(session: Session, kpi_id: int, period: str) -> list[Actual]:
    """Every value reported for a KPI and period, oldest first (corrections included)."""
    return list(
        session.exec(
            select(Actual).where(Actual.kpi_id == kpi_id, Actual.period == period).order_by(col(Actual.id))
        ).all()
    )
