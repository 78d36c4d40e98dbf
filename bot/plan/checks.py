"""The plan checked before use: the seed's design checklist as warnings (pure; no database).

Warnings never block an import (problems in bot/plan/validation.py still do); `kpibot plan check FILE`
lists them, and `kpibot import-plan` prints them after importing. Each is a `Problem` (code
`warn_*`, words in templates/<locale>/messages/plan.yaml) pointing at the line of what it is about:

- **no_kgi**: the plan (and the database) has no goal (KGI) for the KPIs to roll up to;
- **factor_without_kpi**: a KFS no KPI measures;
- **department_without_process** / **department_without_result**: a department with only one kind;
- **no_cross_department**: no KPI calculated across departments and no funnel: nothing looks at
  the hand-offs;
- **kpi_without_owner**, **kpi_without_target**;
- **formula_target** / **funnel_target**: targets that do not add up (200 MQLs × 30 % = 60 SQLs, so an
  SQL target of 90 is called out) — a derived KPI's formula over its inputs' targets, and a funnel
  stage's planned conversion over the stage before;
- **unrealistic_target**: with at least HISTORY_MIN periods of history, a target beyond the best
  period by more than UNREALISTIC_MARGIN (above it when higher is better, below when lower is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from bot.formulas import FormulaError, parse_formula
from bot.models import EVERY_PERIOD, Direction, KpiKind
from bot.plan.file import PlanDocument
from bot.plan.specs import KpiSpec, Plan, Problem
from bot.scoring import HUNDRED, TargetValue

HISTORY_MIN = 5  # periods of history before a target is compared with the best of them
UNREALISTIC_MARGIN = Decimal(30)  # % beyond the best period
CONSISTENCY_TOLERANCE = Decimal(10)  # % a derived target may differ from what its inputs give


@dataclass(frozen=True)
class FunnelStep:
    """A funnel stage as the checks see it: its KPI and the planned conversion into it (in %)."""

    kpi_key: str
    conversion_pct: Decimal | None
    where: str = ""


@dataclass(frozen=True)
class Context:
    """What the checks know besides the file: whether the database already has a KGI, KPIs and
    departments stored before (keys), and each KPI's history (period key → value)."""

    has_stored_goal: bool = False
    history: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)
    funnel: Sequence[FunnelStep] = ()


def check_plan(document: PlanDocument, plan: Plan, context: Context | None = None) -> list[Problem]:
    """Every warning for a validated plan, in the file's order of sections."""
    context = context or Context()
    where = _Where(document)
    targets = _default_targets(plan)
    warnings: list[Problem] = []
    if not plan.goals and not context.has_stored_goal:
        warnings.append(Problem("", "", "warn_no_kgi"))
    used_factors = {kpi.factor_key for kpi in plan.kpis}
    warnings += [
        Problem(
            where.of("success_factors", factor.key), "key", "warn_factor_without_kpi", {"factor": factor.key}
        )
        for factor in plan.factors
        if factor.key not in used_factors
    ]
    warnings += _kinds(plan, where)
    if not _crosses_departments(plan) and not context.funnel:
        warnings.append(Problem("", "", "warn_no_cross_department"))
    for kpi in plan.kpis:
        at = where.of("kpis", kpi.key)
        if not kpi.owner_user_id:
            warnings.append(Problem(at, "owner", "warn_kpi_without_owner", {"kpi": kpi.key}))
        if not any(spec.kpi_key == kpi.key for spec in plan.targets):
            warnings.append(Problem(at, "target", "warn_kpi_without_target", {"kpi": kpi.key}))
    warnings += _formula_targets(plan, targets, where)
    warnings += _funnel_targets(context.funnel, targets)
    warnings += _unrealistic(plan, targets, context.history, where)
    return warnings


class _Where:
    """The line of each entry, by section and key."""

    def __init__(self, document: PlanDocument) -> None:
        self._records = {
            (section, record.fields.get("key")): record
            for section, records in document.sections.items()
            for record in records
        }

    def of(self, section: str, key: str, name: str = "") -> str:
        """The line of the entry, or of its field `name` when the entry writes it."""
        record = self._records.get((section, key))
        return "" if record is None else record.at(name) if name else record.where


def _default_targets(plan: Plan) -> dict[str, TargetValue]:
    """Each KPI's target for every period (`*`), as the checks compare them."""
    return {spec.kpi_key: spec.target for spec in plan.targets if spec.period == EVERY_PERIOD}


def _kinds(plan: Plan, where: _Where) -> list[Problem]:
    warnings = []
    for department in plan.departments:
        if department.is_division:
            continue
        kinds = {kpi.kind for kpi in plan.kpis if kpi.department_key == department.key}
        if not kinds:
            continue
        at = where.of("departments", department.key)
        for kind, code in (
            (KpiKind.PROCESS, "warn_department_without_process"),
            (KpiKind.RESULT, "warn_department_without_result"),
        ):
            if kind not in kinds:
                warnings.append(Problem(at, "", code, {"department": department.key}))
    return warnings


def _crosses_departments(plan: Plan) -> bool:
    department_of = {kpi.key: kpi.department_key for kpi in plan.kpis}
    for kpi in plan.kpis:
        names = _names(kpi)
        if any(department_of.get(name, kpi.department_key) != kpi.department_key for name in names):
            return True
    return False


def _names(kpi: KpiSpec) -> frozenset[str]:
    try:
        return parse_formula(kpi.formula).names if kpi.formula else frozenset()
    except FormulaError:
        return frozenset()


def _point(target: TargetValue, direction: Direction) -> Decimal:
    """The end of a range that counts (bot/scoring.py): the low end when higher is better."""
    return target.low if direction is Direction.HIGHER else target.high


def _off_by(expected: Decimal, target: TargetValue) -> bool:
    """Whether `expected` is outside the target (a range) by more than the tolerance."""
    slack = CONSISTENCY_TOLERANCE / HUNDRED
    return expected < target.low * (1 - slack) or expected > target.high * (1 + slack)


def _formula_targets(plan: Plan, targets: Mapping[str, TargetValue], where: _Where) -> list[Problem]:
    """A derived KPI's formula over its inputs' targets should give its own target."""
    warnings = []
    by_key = {kpi.key: kpi for kpi in plan.kpis}
    for kpi in plan.kpis:
        own = targets.get(kpi.key)
        if not kpi.formula or own is None:
            continue
        names = _names(kpi)
        if not names or any(name not in targets or name not in by_key for name in names):
            continue
        inputs = {name: _point(targets[name], by_key[name].direction) for name in names}
        try:
            expected = parse_formula(kpi.formula).evaluate(dict(inputs))
        except (FormulaError, ZeroDivisionError, ArithmeticError):
            continue
        if expected is None or not _off_by(expected, own):
            continue
        warnings.append(
            Problem(
                where.of("kpis", kpi.key, "target"),
                "target",
                "warn_formula_target",
                {
                    "kpi": kpi.key,
                    "formula": kpi.formula,
                    "inputs": tuple(f"{name} {_text(value)}" for name, value in sorted(inputs.items())),
                    "expected": _text(expected),
                    "target": _range_text(own),
                },
            )
        )
    return warnings


def _funnel_targets(funnel: Sequence[FunnelStep], targets: Mapping[str, TargetValue]) -> list[Problem]:
    """Each stage's target against the stage before's target × the planned conversion."""
    warnings = []
    for before, stage in zip(funnel, funnel[1:], strict=False):
        if stage.conversion_pct is None or before.kpi_key not in targets or stage.kpi_key not in targets:
            continue
        expected = targets[before.kpi_key].low * stage.conversion_pct / HUNDRED
        if _off_by(expected, targets[stage.kpi_key]):
            warnings.append(
                Problem(
                    stage.where,
                    "conversion",
                    "warn_funnel_target",
                    {
                        "before": before.kpi_key,
                        "before_target": _text(targets[before.kpi_key].low),
                        "conversion": _text(stage.conversion_pct),
                        "expected": _text(expected),
                        "kpi": stage.kpi_key,
                        "target": _range_text(targets[stage.kpi_key]),
                    },
                )
            )
    return warnings


def _unrealistic(
    plan: Plan,
    targets: Mapping[str, TargetValue],
    history: Mapping[str, Mapping[str, Decimal]],
    where: _Where,
) -> list[Problem]:
    warnings = []
    for kpi in plan.kpis:
        target, past = targets.get(kpi.key), history.get(kpi.key) or {}
        if target is None or len(past) < HISTORY_MIN:
            continue
        point = _point(target, kpi.direction)
        if kpi.direction is Direction.HIGHER:
            best_period = max(past, key=lambda period: (past[period], period))
            best = past[best_period]
            beyond = best > 0 and point > best * (1 + UNREALISTIC_MARGIN / HUNDRED)
            gap = (point / best - 1) * HUNDRED if best > 0 else Decimal(0)
        else:
            best_period = min(past, key=lambda period: (past[period], period))
            best = past[best_period]
            beyond = point < best * (1 - UNREALISTIC_MARGIN / HUNDRED)
            gap = (1 - point / best) * HUNDRED if best > 0 else Decimal(0)
        if beyond:
            warnings.append(
                Problem(
                    where.of("kpis", kpi.key, "target"),
                    "target",
                    f"warn_unrealistic_{kpi.direction.value}",
                    {
                        "kpi": kpi.key,
                        "target": _text(point),
                        "best": _text(best),
                        "period": best_period,
                        "periods": len(past),
                        "gap": _text(gap.quantize(Decimal(1))),
                        "margin": _text(UNREALISTIC_MARGIN),
                    },
                )
            )
    return warnings


def _text(value: Decimal) -> str:
    """A figure as the warnings show it: at most two decimals, no trailing zeros."""
    rounded = value.quantize(Decimal("0.01")).normalize()
    return f"{rounded:f}"


def _range_text(target: TargetValue) -> str:
    return _text(target.low) if not target.is_range else f"{_text(target.low)}–{_text(target.high)}"
