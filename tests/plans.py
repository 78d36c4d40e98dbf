"""Plans for tests: the example plan file, importing a plan file, and KPI rows built directly."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from bot.database import transaction
from bot.models import Aggregation, Cadence, Direction, Kpi, KpiKind, Unit
from bot.plan.service import ImportResult, apply_plan, load_plan

EXAMPLE_PLAN = Path(__file__).resolve().parent.parent / "examples" / "b2b-plan.yaml"


def import_plan(engine: Engine, path: Path) -> ImportResult:
    """Validate and write a plan file in one transaction, as `kpibot import-plan` does."""
    with transaction(engine) as session:
        return apply_plan(session, load_plan(path, session))


def outcomes(result: ImportResult) -> dict[str, dict[str, int]]:
    """An import's counts by table, without the zeros."""
    return {entity: {k: v for k, v in counter.items() if v} for entity, counter in result.counts.items()}


def count_kpi(key: str, department_id: int | None, **columns: Any) -> Kpi:
    """A KPI counting something, higher is better, with the default thresholds; `columns` override."""
    values: dict[str, Any] = {
        "key": key,
        "name_ja": f"指標 {key}",
        "name_en": f"Metric {key}",
        "department_id": department_id,
        "unit": Unit.COUNT,
        "direction": Direction.HIGHER,
        "cadence": Cadence.MONTHLY,
        "kind": KpiKind.PROCESS,
        "aggregation": Aggregation.SUM,
        "amber_pct": Decimal(90),
        "red_pct": Decimal(70),
    }
    return Kpi(**{**values, **columns})
