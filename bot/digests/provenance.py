"""Where a digest's values came from: a value a system sent (the push API, HubSpot), and a value
corrected since the department's last digest (with what that digest showed). Two queries per
department, whatever its history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlmodel import Session, col, select

from bot.clock import utcnow
from bot.models import Actual, Post, PostKind, PostStatus, Source
from bot.scorecard import ScoreRow

SYSTEMS = (Source.API, Source.HUBSPOT)


@dataclass(frozen=True)
class Mark:
    system: Source | None  # the live value was sent by a system (API, HubSpot)…
    source_name: str | None  # …this one
    corrected_from: Decimal | None  # the value the last digest showed, when corrected since

    @property
    def corrected(self) -> bool:
        return self.corrected_from is not None


def last_digest_at(session: Session, department_id: int, before: dt.datetime) -> dt.datetime | None:
    return session.exec(
        select(Post.sent_at)
        .where(
            Post.department_id == department_id,
            col(Post.kind).in_([PostKind.DIGEST, PostKind.SUMMARY]),
            Post.status == PostStatus.SENT,
            col(Post.sent_at) < before,
        )
        .order_by(col(Post.sent_at).desc())
        .limit(1)
    ).first()


def marks(session: Session, department_id: int, rows: Sequence[ScoreRow]) -> dict[int, Mark]:
    """By KPI id, for the rows whose reviewed value came from a system or changed since the last
    digest (before now). Without an earlier digest nothing counts as corrected since."""
    slots = {(row.kpi.id, row.period.key) for row in rows if row.kpi.id is not None}
    if not slots:
        return {}
    since = last_digest_at(session, department_id, utcnow())
    actuals = session.exec(
        select(Actual)
        .where(
            col(Actual.kpi_id).in_({kpi_id for kpi_id, _ in slots}),
            col(Actual.period).in_({period for _, period in slots}),
        )
        .order_by(col(Actual.id))
    ).all()
    chains: dict[tuple[int, str], list[Actual]] = {}
    for actual in actuals:
        if (actual.kpi_id, actual.period) in slots:
            chains.setdefault((actual.kpi_id, actual.period), []).append(actual)
    found: dict[int, Mark] = {}
    for (kpi_id, _), chain in chains.items():
        live = next((actual for actual in chain if actual.superseded_at is None), None)
        if live is None:
            continue
        shown = None
        if since is not None and live.reported_at > since:
            before = [actual for actual in chain if actual.reported_at <= since]
            if before and Decimal(before[-1].value) != Decimal(live.value):
                shown = Decimal(before[-1].value)
        system = live.source if live.source in SYSTEMS else None
        if system is not None or shown is not None:
            found[kpi_id] = Mark(system, live.source_name if system else None, shown)
    return found
