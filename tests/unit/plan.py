"""The example plan's departments and KPIs as objects in memory: what the pure rules are given.

Read from examples/b2b-plan.yaml through the importer's own validation, so the names, units and
cadences the unit tests use are the ones the end-to-end tests import; nothing is stored.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import cache

from bot.models import Department, Kpi
from bot.plan.file import read_plan
from bot.plan.specs import Existing
from bot.plan.validation import validate
from tests.plans import EXAMPLE_PLAN


@cache
def example_kpis() -> tuple[tuple[Kpi, Department], ...]:
    """Every KPI of the example plan with its department, in plan order."""
    plan = validate(read_plan(EXAMPLE_PLAN), Existing())
    departments = {
        spec.key: Department(**{k: v for k, v in asdict(spec).items() if k != "given"})
        for spec in plan.departments
    }
    kpis = []
    for spec in plan.kpis:
        fields = {k: v for k, v in asdict(spec).items() if k not in ("department_key", "factor_key")}
        kpis.append((Kpi(**fields), departments[spec.department_key]))
    return tuple(kpis)


def kpi(key: str) -> Kpi:
    return next(k for k, _ in example_kpis() if k.key == key)
