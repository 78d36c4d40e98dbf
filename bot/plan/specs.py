"""What a validated plan is, and what was wrong with a plan file (Problem, PlanInvalid)."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlmodel import Session, select

from bot import render
from bot.alerts.rules import STREAK_DEFAULT
from bot.models import (
    Aggregation,
    Cadence,
    Department,
    Direction,
    Goal,
    Kpi,
    KpiKind,
    SuccessFactor,
    Unit,
)
from bot.scoring import TargetValue


@dataclass(frozen=True)
class Problem:
    where: str
    field: str
    code: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self, locale: str) -> str:
        """「81 行目、`unit`: …」 / "line 81, `unit`: …": the place and every list in the reader's
        language (a problem is found before anyone knows who will read it)."""
        place = [part for part in (place_text(self.where, locale), self.field and f"`{self.field}`") if part]
        params = {
            name: place_text(value, locale) if name == "first" else _listed(value, locale)
            for name, value in self.params.items()
        }
        text = render.message(f"plan.{self.code}", locale, **params)
        return f"{render.message('cli.listing', locale, items=place)}: {text}" if place else text


_PLACE = re.compile(r"(line|row) (\d+)")


def place_text(where: str, locale: str) -> str:
    """A problem's place as stored ("line 82", "row 3") as the reader reads it: 「82 行目」."""
    match = _PLACE.fullmatch(where)
    return render.message(f"cli.where.{match[1]}", locale, number=match[2]) if match else where


def _listed(value: Any, locale: str) -> Any:
    """A tuple parameter (the allowed units, the CSV's columns) joined as the locale writes a list."""
    return render.message("cli.listing", locale, items=value) if isinstance(value, tuple) else value


class PlanInvalid(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems


@dataclass
class DepartmentSpec:
    key: str
    name_ja: str
    name_en: str
    channel_id: str | None
    head_user_id: str | None
    locale: str
    timezone: str
    digest_cron: str
    fiscal_year_start_month: int
    holiday_shift: bool
    is_division: bool
    # Columns the file wrote; others keep their stored value (a KPI CSV names each row's
    # department by key alone, which must not reset its names and channel).
    given: frozenset[str] | None = None


@dataclass
class GoalSpec:
    key: str
    name_ja: str
    name_en: str
    target_value: Decimal
    unit: Unit
    fiscal_year: int
    measure_key: str | None = None  # the KPI whose fiscal-year total measures the goal


@dataclass
class FactorSpec:
    key: str
    goal_key: str | None
    name_ja: str
    name_en: str
    given: frozenset[str] | None = None


@dataclass
class KpiSpec:
    key: str
    department_key: str
    factor_key: str | None
    name_ja: str
    name_en: str
    owner_user_id: str | None
    unit: Unit
    direction: Direction
    cadence: Cadence
    kind: KpiKind
    aggregation: Aggregation
    amber_pct: Decimal
    red_pct: Decimal
    formula: str | None
    position: int
    streak: int = STREAK_DEFAULT
    playbooks: list[dict[str, Any]] = field(default_factory=list)
    fetch: FetchSpec | None = None
    retired: dt.date | None = None  # bot/plan/retired.py


@dataclass(frozen=True)
class FetchSpec:
    """`source:` (its kind's fields, checked by the kind), `every` and `max_age` in seconds."""

    source: dict[str, Any]
    every_s: int | None = None
    max_age_s: int | None = None


@dataclass
class TargetSpec:
    kpi_key: str
    period: str
    target: TargetValue
    where: str = ""


@dataclass
class FunnelSpec:
    """A funnel stage: its KPI, the planned conversion into it from the stage before (%, None: from
    the stages' targets), and under what % of that plan the hand-off leaks."""

    kpi_key: str
    conversion_pct: Decimal | None
    leak_pct: Decimal
    where: str = ""


@dataclass
class Plan:
    source: str
    departments: list[DepartmentSpec] = field(default_factory=list)
    goals: list[GoalSpec] = field(default_factory=list)
    factors: list[FactorSpec] = field(default_factory=list)
    kpis: list[KpiSpec] = field(default_factory=list)
    targets: list[TargetSpec] = field(default_factory=list)
    funnel: list[FunnelSpec] = field(default_factory=list)


@dataclass(frozen=True)
class KnownKpi:
    cadence: Cadence
    formula: str | None


@dataclass
class Existing:
    """Keys already in the database, which a partial plan file may refer to."""

    departments: set[str] = field(default_factory=set)
    goals: set[str] = field(default_factory=set)
    factors: set[str] = field(default_factory=set)
    kpis: dict[str, KnownKpi] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> Existing:
        return cls(
            departments=set(session.exec(select(Department.key)).all()),
            goals=set(session.exec(select(Goal.key)).all()),
            factors=set(session.exec(select(SuccessFactor.key)).all()),
            kpis={
                key: KnownKpi(cadence, formula)
                for key, cadence, formula in session.exec(select(Kpi.key, Kpi.cadence, Kpi.formula)).all()
            },
        )


@dataclass
class ImportResult:
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)  # (entity, key) → outcome

    def count(self, entity: str, outcome: str, key: str | None = None) -> None:
        if key is not None:
            previous = self.outcomes.get((entity, key))
            if previous is not None:
                # A second write to the same row: it counts once, as its strongest outcome.
                if previous != "unchanged" or outcome == "unchanged":
                    return
                self.counts[entity][previous] -= 1
            self.outcomes[(entity, key)] = outcome
        self.counts.setdefault(entity, Counter())[outcome] += 1

    @property
    def changed(self) -> bool:
        return any(counter["created"] or counter["updated"] for counter in self.counts.values())
