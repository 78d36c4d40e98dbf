"""Reported values. A correction never overwrites: it supersedes the live row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
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
    wait_for_writers_of(session, [(kpi_id, period)])


def wait_for_writers_of(session: Session, slots: Sequence[tuple[int, str]]) -> None:
    """`wait_for_other_writers` for many (KPI id, period) slots, taken in the order given (the
    writers' order is (KPI id, period): callers sort), in one statement."""
    if not slots or session.get_bind().dialect.name != "postgresql":
        return
    session.connection().execute(
        sa.text(
            "SELECT pg_advisory_xact_lock(slot.kpi_id, hashtext(slot.period))"
            " FROM unnest(CAST(:kpi_ids AS integer[]), CAST(:periods AS text[]))"
            " WITH ORDINALITY AS slot(kpi_id, period, n) ORDER BY slot.n"
        ),
        {"kpi_ids": [kpi_id for kpi_id, _ in slots], "periods": [period for _, period in slots]},
    )


def live_rows(session: Session, slots: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Actual]:
    """The live rows of these (KPI id, period) slots, in one query. Read over anything this
    session loaded before: after `wait_for_writers_of`, the writer waited for may have replaced them."""
    wanted = set(slots)
    if not wanted:
        return {}
    rows = session.exec(
        select(Actual)
        .where(
            col(Actual.kpi_id).in_({kpi_id for kpi_id, _ in wanted}),
            col(Actual.period).in_({period for _, period in wanted}),
            col(Actual.superseded_at).is_(None),
        )
        .execution_options(populate_existing=True)
    ).all()
    return {(row.kpi_id, row.period): row for row in rows if (row.kpi_id, row.period) in wanted}


@dataclass(frozen=True)
class NewValue:
    """One value for `record_actuals`."""

    kpi: Kpi
    period: str
    value: Decimal
    note: str | None = None
    external_id: str | None = None


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
    (recorded,) = record_actuals(
        session,
        [NewValue(kpi, period, value, note, external_id)],
        reported_by=reported_by,
        source=source,
        source_name=source_name,
        live=live_rows(session, [(kpi.id, period)]),
    )
    return recorded


def record_actuals(
    session: Session,
    values: Sequence[NewValue],
    *,
    reported_by: str,
    source: Source,
    source_name: str | None = None,
    live: Mapping[tuple[int, str], Actual],
) -> list[Recorded]:
    """Store values of distinct (KPI id, period) slots, each superseding `live`'s row for its
    slot (read by `live_rows` under the writers' locks), with one audit event each; a handful of
    statements whatever the number of values. The caller's transaction makes it all or nothing."""
    now = utcnow()
    slots = [(item.kpi.id or 0, item.period) for item in values]
    assert len(set(slots)) == len(slots), "one value per KPI and period"
    if not values:
        return []
    previous = [live.get(slot) for slot in slots]
    retired = [row for row in previous if row is not None]
    for row in retired:
        # Retire the old rows first: the live-row unique index allows one at a time.
        row.superseded_at = now
    if retired:
        session.add_all(retired)
        session.flush()
    # One executemany, then the new rows read back by the live-row index (an INSERT … RETURNING
    # of many rows keeps their order on PostgreSQL only: SQLAlchemy inserts one by one elsewhere).
    session.execute(
        sa.insert(Actual),
        [
            {
                "kpi_id": item.kpi.id,
                "period": item.period,
                "value": item.value,
                "reported_by": reported_by,
                "reported_at": now,
                "source": source,
                "note": item.note,
                "source_name": source_name,
                "external_id": item.external_id,
            }
            for item in values
        ],
    )
    stored = live_rows(session, slots)
    actuals = [stored[slot] for slot in slots]
    for actual, item in zip(actuals, values, strict=True):
        # As given, not as read back ("85", not "85.000000"): what the caller's messages show.
        set_committed_value(actual, "value", item.value)
        set_committed_value(actual, "reported_at", now)
    for row, actual in zip(previous, actuals, strict=True):
        if row is not None:
            row.superseded_by_id = actual.id
    session.execute(
        sa.insert(AuditEvent),
        [
            {
                "at": now,
                "actor": reported_by,
                "action": "actual.corrected" if row else "actual.reported",
                "entity": "actual",
                "entity_id": str(actual.id),
                "source": source.value,
                "details": {
                    "kpi": item.kpi.key,
                    "period": item.period,
                    "value": str(item.value),
                    "previous": None if row is None else str(row.value),
                    **({"source_name": source_name} if source_name else {}),
                    **({"external_id": item.external_id} if item.external_id else {}),
                },
            }
            for item, row, actual in zip(values, previous, actuals, strict=True)
        ],
    )
    return [Recorded(actual, row) for actual, row in zip(actuals, previous, strict=True)]


def live_values(
    session: Session, kpi_ids: Iterable[int], periods: Iterable[str]
) -> dict[tuple[int, str], Decimal]:
    """Live values by (KPI id, period) for many KPIs and periods, in one query."""
    ids, keys = list(kpi_ids), list(periods)
    if not ids or not keys:
        return {}
    table = Actual.__table__.c  # type: ignore[attr-defined]
    if session.autoflush:
        session.flush()  # as the ORM's own queries would: pending rows are read too
    # Core, not ORM: a digest reads thousands of these, and they are plain values.
    rows = session.connection().execute(
        sa.select(table.kpi_id, table.period, table.value).where(
            table.kpi_id.in_(ids), table.period.in_(keys), table.superseded_at.is_(None)
        )
    )
    return {(kpi_id, period): Decimal(value) for kpi_id, period, value in rows}


def history(session: Session, kpi_id: int, period: str) -> list[Actual]:
    """Every value reported for a KPI and period, oldest first (corrections included)."""
    return list(
        session.exec(
            select(Actual).where(Actual.kpi_id == kpi_id, Actual.period == period).order_by(col(Actual.id))
        ).all()
    )
