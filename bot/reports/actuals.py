"""Reported values. A correction never overwrites: it supersedes the live row."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
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


def wait_for_other_writers(session: Session, kpi_id: int, period: str) -> None:
    """Serialize writers of one KPI and period until this transaction ends.

    Reading the live row and inserting its successor must not interleave with another writer's:
    two transactions that both saw no live row (or the same one) would both insert, and the
    live-row unique index rejects the second — a value lost for its sender. Waiting, rather than
    retrying on the violation, keeps each writer's transaction whole (alerts, audit) and lets
    every value become live in the order its transaction got here; the earlier ones become history.

    PostgreSQL: a transaction-scoped advisory lock on (KPI id, hash of the period), released by
    commit or rollback. Not a row lock on the KPI: that would also queue behind plan imports
    updating KPI rows and could deadlock with them; this lock is taken by nothing else (the
    scheduler's leader lock is the one-key form, a separate key space). Under READ COMMITTED
    the read that follows sees what the previous holder committed.

    SQLite: nothing to do here. bot.database begins every transaction with BEGIN IMMEDIATE, so
    a writer holds the database's write lock from its first statement to its end and the others
    queue on the busy timeout (30 s)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(
            sa.text("SELECT pg_advisory_xact_lock(:kpi_id, hashtext(:period))"),
            {"kpi_id": kpi_id, "period": period},
        )


def record_actual(
    session: Session,
    *,
    kpi: Kpi,
    period: str,
    value: Decimal,
    reported_by: str,
    source: Source,
    note: str | None = None,
    source_name: str | None = None,
    external_id: str | None = None,
) -> Recorded:
    """Store a value for a KPI and period; the caller's transaction makes it all or nothing."""
    assert kpi.id is not None
    wait_for_other_writers(session, kpi.id, period)
    now = utcnow()
    # Read after the lock, and over anything this session loaded before it: the live row may
    # have been replaced by the writer we waited for.
    previous = session.exec(
        select(Actual)
        .where(Actual.kpi_id == kpi.id, Actual.period == period, col(Actual.superseded_at).is_(None))
        .execution_options(populate_existing=True)
    ).first()
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
        source_name=source_name,
        external_id=external_id,
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
                **({"source_name": source_name} if source_name else {}),
                **({"external_id": external_id} if external_id else {}),
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
