"""`/kpi history <kpi> [period]`: the chain of values of a KPI's period, oldest first, with who
or which source sent each and when. Plain data; the words are at the edge (handlers/history).

Without a period: the latest period that has a value (the current one when none has).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from bot.clock import today
from bot.models import Actual, Department, Kpi, Source
from bot.periods import Period, parse_key
from bot.reports.actuals import history
from bot.reports.service import ReportError, all_kpis, check_period, find_kpi, kpi_by_key
from bot.scorecard import current_period

SOURCE_PREFIX = "source:"


@dataclass(frozen=True)
class Entry:
    value: Decimal
    source: Source
    user_id: str | None  # a Slack user, for values typed or imported in Slack
    source_name: str | None  # the API or HubSpot source, for values a system sent
    at: dt.datetime  # in the department's time zone
    note: str | None
    live: bool


@dataclass(frozen=True)
class KpiHistory:
    kpi: Kpi
    department: Department
    period: Period
    entries: list[Entry]  # oldest first; the last one is live


def kpi_history(session: Session, kpi_text: str, period_text: str | None) -> KpiHistory:
    """ReportError (unknown_kpi, period_*) for what cannot be read, as `/kpi report` says it."""
    found = kpi_by_key(session, kpi_text)
    if found is None:
        everything = all_kpis(session)
        found = find_kpi(everything, kpi_text, everything)
    kpi, department = found
    assert kpi.id is not None
    zone = ZoneInfo(department.timezone)
    if period_text is not None:
        period = check_period(period_text, kpi, today(zone))
    else:
        latest = session.exec(
            select(Actual.period).where(Actual.kpi_id == kpi.id).order_by(col(Actual.period).desc()).limit(1)
        ).first()
        period = parse_key(latest) if latest else current_period(kpi.cadence, today(zone))
    entries = [
        Entry(
            value=Decimal(actual.value),
            source=actual.source,
            user_id=None if actual.reported_by.startswith(SOURCE_PREFIX) else actual.reported_by,
            source_name=actual.source_name,
            at=actual.reported_at.astimezone(zone),
            note=actual.note,
            live=actual.superseded_at is None,
        )
        for actual in history(session, kpi.id, period.key)
    ]
    return KpiHistory(kpi, department, period, entries)


__all__ = ["Entry", "KpiHistory", "ReportError", "kpi_history"]
