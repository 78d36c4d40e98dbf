"""Where a digest's values came from: a value a system sent (the push API, HubSpot), a value
corrected since the department's last digest (with what that digest showed), and a KPI fetched
from its own source — marked stale, with the reason and the age, when the source failed or went
quiet (bot/sources/freshness.py). Three queries per department, whatever its history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlmodel import Session, col, select

from bot import render
from bot.clock import utcnow
from bot.models import Actual, Post, PostKind, PostStatus, Source
from bot.scorecard import ScoreRow
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
    now = utcnow()
    found = _fetched(session, rows, now)
    since = last_digest_at(session, department_id, now)
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
            fetched = found.get(kpi_id)
            found[kpi_id] = Mark(
                system,
                live.source_name if system else None,
                shown,
                fetched.fetched if fetched else None,
                fetched.stale if fetched else None,
            )
    return found


def _fetched(session: Session, rows: Sequence[ScoreRow], now: dt.datetime) -> dict[int, Mark]:
    """A mark for each fetched KPI: its source, and whether it is stale."""
    kpis = [row.kpi for row in rows if freshness.is_sourced(row.kpi)]
    stale = freshness.stale_kpis(session, kpis, now)
    return {
        kpi.id: Mark(None, None, None, registry.label(kpi.fetch_source or {}), stale.get(kpi.id))
        for kpi in kpis
        if kpi.id is not None
    }
