"""Freshness, not nagging: how often a sourced KPI is fetched, how old its value may get, and which
ones a digest must show as stale (the last fetch failed, the last good value is too old, or it was
never fetched), with the reason and the age. A sourced KPI is never in the owners' reminder: its
owner does not type it, the source does.

    every:   1h     # default: hourly
    max_age: 26h    # default: 26 h, or three fetch intervals if that is longer
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import Session, col, select

from bot.models import FetchState, Kpi

DEFAULT_EVERY_S = 3600
EVERY_RANGE = (300, 7 * 86400)  # five minutes to a week
DEFAULT_MAX_AGE_S = 26 * 3600  # a daily batch that ran a little late is still fresh
MAX_AGE_RANGE = (600, 400 * 86400)
_UNITS = {"m": 60, "min": 60, "分": 60, "h": 3600, "時間": 3600, "d": 86400, "日": 86400}
_DURATION = re.compile(r"^\s*(\d{1,6})\s*(m|min|分|h|時間|d|日)\s*$")


class DurationError(ValueError):
    def __init__(self, low: str, high: str) -> None:
        super().__init__(f"a duration between {low} and {high}")
        self.low = low
        self.high = high


def parse_duration(text: str, bounds: tuple[int, int] = (EVERY_RANGE[0], MAX_AGE_RANGE[1])) -> int:
    """`30m`, `1h`, `26h`, `2d` (or 30分, 1時間, 2日) in seconds."""
    low, high = bounds
    found = _DURATION.match(text)
    if found is None:
        raise DurationError(format_duration(low), format_duration(high))
    seconds = int(found.group(1)) * _UNITS[found.group(2)]
    if not low <= seconds <= high:
        raise DurationError(format_duration(low), format_duration(high))
    return seconds


def format_duration(seconds: int) -> str:
    """The plan's own way of writing it back: the largest whole unit."""
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // 60}m"


def is_sourced(kpi: Kpi) -> bool:
    return kpi.fetch_source is not None and kpi.retired_at is None


def every_s(kpi: Kpi) -> int:
    return kpi.fetch_every_s or DEFAULT_EVERY_S


def max_age_s(kpi: Kpi) -> int:
    return kpi.fetch_max_age_s or max(DEFAULT_MAX_AGE_S, 3 * every_s(kpi))


@dataclass(frozen=True)
class Stale:
    """Why a sourced KPI's value cannot be trusted as current: `failed` (the last fetch gave no
    value: `error_code` says why), `old` (no good value within max_age) or `never` (not fetched
    yet). `age_hours`: since the last good value, None if there was none."""

    reason: str
    age_hours: int | None
    error_code: str | None = None


def stale_kpis(session: Session, kpis: Iterable[Kpi], now: dt.datetime) -> dict[int, Stale]:
    """By KPI id, the sourced ones among `kpis` that are stale at `now`. One query."""
    sourced = {kpi.id: kpi for kpi in kpis if kpi.id is not None and is_sourced(kpi)}
    if not sourced:
        return {}
    states = {
        state.kpi_id: state
        for state in session.exec(select(FetchState).where(col(FetchState.kpi_id).in_(list(sourced)))).all()
    }
    found: dict[int, Stale] = {}
    for kpi_id, kpi in sourced.items():
        state = states.get(kpi_id)
        stale = staleness(state, max_age_s(kpi), now)
        if stale is not None:
            found[kpi_id] = stale
    return found


def staleness(state: FetchState | None, max_age: int, now: dt.datetime) -> Stale | None:
    if state is None or state.last_run_at is None:
        return Stale("never", None)
    age = None if state.last_good_at is None else now - state.last_good_at
    hours = None if age is None else max(0, int(age.total_seconds() // 3600))
    if state.failing:
        return Stale("failed", hours, state.error_code)
    if age is None or age.total_seconds() > max_age:
        return Stale("old", hours)
    return None
