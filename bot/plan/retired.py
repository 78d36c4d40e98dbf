"""A retired KPI in the plan file: `retired: 2026-11-30`, the day it was retired in its
department's time zone.

`kpibot export plan` writes retired KPIs with that day so the file imports back unchanged: a KPI
already retired on that day keeps its stored moment (a day cannot hold the time of day `/kpi
retire` stored), one that is not is retired from the start of that day. Leaving `retired` out
changes nothing, so a plan file written before the KPI was retired in Slack does not bring it
back. Retiring never touches history: actuals, targets and countermeasures stay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from bot.clock import utcnow
from bot.models import Department, Kpi
from bot.plan.file import Record

if TYPE_CHECKING:
    from bot.plan.specs import KpiSpec

FIELD = "retired"


def read_retired(record: Record, problem: Callable[..., None]) -> dt.date | None:
    """The day a plan entry says its KPI was retired (a YAML date or `2026-11-30`), None if unsaid."""
    raw = record.fields.get(FIELD)
    if raw is None or raw == "":
        return None
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    try:
        return dt.date.fromisoformat(str(raw).strip())
    except ValueError:
        problem(record, FIELD, "bad_retired", value=raw)
        return None


def retired_day(kpi: Kpi, department: Department) -> dt.date | None:
    """When `kpi` was retired, as the day its department saw it."""
    if kpi.retired_at is None:
        return None
    return kpi.retired_at.astimezone(ZoneInfo(department.timezone)).date()


def retire_as_written(
    session: Session,
    specs: Iterable[KpiSpec],
    rows: Mapping[str, Kpi],
    count: Callable[[str, str, str], Any],
) -> None:
    """Retire the imported KPIs whose entries say `retired:` and are not retired on that day yet."""
    for spec in specs:
        if spec.retired is None:
            continue
        kpi = rows[spec.key]
        department = session.get(Department, kpi.department_id)
        assert department is not None
        if retired_day(kpi, department) == spec.retired:
            continue
        start = dt.datetime.combine(spec.retired, dt.time(), ZoneInfo(department.timezone))
        kpi.retired_at, kpi.updated_at = start.astimezone(dt.UTC), utcnow()
        session.add(kpi)
        count(Kpi.__tablename__, "updated", spec.key)
    session.flush()
