"""A generated division of any size, for benchmarks and scale tests.

Rows are written with bulk Core inserts (not the ORM, not the plan importer) because the
point is to have a large history quickly; what is written is what an import plus a couple
of years of `/kpi report` would leave behind.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.clock import utcnow
from bot.models import (
    Actual,
    Aggregation,
    Cadence,
    Department,
    Direction,
    Kpi,
    KpiKind,
    Source,
    Target,
    Unit,
)
from bot.periods import period_of
from bot.scoring import default_thresholds

CHUNK = 5000


def generate_division(
    engine: Engine,
    *,
    departments: int,
    kpis_per_department: int = 20,
    weeks: int = 104,
    today: dt.date,
    seed: int = 7,
) -> None:
    """Departments `gen_000`…, each with KPIs half weekly, half monthly, and `weeks` of history."""
    rng = random.Random(seed)
    now = utcnow()
    department_rows = [
        {
            "key": f"gen_{index:04d}",
            "name_ja": f"部署 {index}",
            "name_en": f"Department {index}",
            "channel_id": f"C{index:08d}",
            "head_user_id": f"UHEAD{index:05d}",
            "locale": "ja" if index % 2 else "en",
            "timezone": "Asia/Tokyo",
            "digest_cron": "0 9 * * mon",
            "fiscal_year_start_month": 4,
            "holiday_shift": False,
            "is_division": False,
            "created_at": now,
            "updated_at": now,
        }
        for index in range(departments)
    ]
    with engine.begin() as connection:
        connection.execute(sa.insert(Department.__table__), department_rows)  # type: ignore[attr-defined]
        department_ids = dict(connection.execute(sa.select(Department.key, Department.id)).all())
        kpi_rows = []
        for index in range(departments):
            for number in range(kpis_per_department):
                direction = Direction.LOWER if number % 7 == 3 else Direction.HIGHER
                amber, red = default_thresholds(direction)
                kpi_rows.append(
                    {
                        "key": f"gen_{index:04d}_k{number:02d}",
                        "name_ja": f"指標 {number}",
                        "name_en": f"KPI {number}",
                        "department_id": department_ids[f"gen_{index:04d}"],
                        "success_factor_id": None,
                        "owner_user_id": f"UOWN{index:04d}{number % 3}",
                        "unit": (Unit.PERCENT if number % 5 == 4 else Unit.COUNT).value,
                        "direction": direction.value,
                        "cadence": (Cadence.WEEKLY if number % 2 else Cadence.MONTHLY).value,
                        "kind": (KpiKind.PROCESS if number % 3 else KpiKind.RESULT).value,
                        "aggregation": Aggregation.SUM.value,
                        "amber_pct": amber,
                        "red_pct": red,
                        "formula": None,
                        "position": number,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        _insert(connection, Kpi, kpi_rows)
        kpis = connection.execute(sa.select(Kpi.id, Kpi.cadence, Kpi.unit)).all()
        _insert(
            connection,
            Target,
            (
                {
                    "kpi_id": kpi_id,
                    "period": "*",
                    "value": Decimal(50 if unit == Unit.PERCENT else 100),
                    "min_value": None,
                    "max_value": None,
                    "created_at": now,
                    "updated_at": now,
                }
                for kpi_id, _, unit in kpis
            ),
        )
        last_week = period_of(today, Cadence.WEEKLY).previous()
        months = max(1, weeks * 7 // 30)
        last_month = period_of(today, Cadence.MONTHLY).previous()
        periods = {
            Cadence.WEEKLY: [p.key for p in last_week.last(weeks)],
            Cadence.MONTHLY: [p.key for p in last_month.last(months)],
        }
        _insert(
            connection,
            Actual,
            (
                {
                    "kpi_id": kpi_id,
                    "period": period,
                    "value": Decimal(rng.randint(40, 130)),
                    "reported_by": "UGEN",
                    "reported_at": now,
                    "source": Source.CSV.value,
                    "note": None,
                    "superseded_at": None,
                    "superseded_by_id": None,
                }
                for kpi_id, cadence, _ in kpis
                for period in periods[Cadence(cadence)]
            ),
        )


def _insert(connection: sa.Connection, model: Any, rows: Any) -> None:
    table = model.__table__
    for chunk in _chunks(rows):
        connection.execute(sa.insert(table), chunk)


def _chunks(rows: Any) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
