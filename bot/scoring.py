"""KPI arithmetic: aggregation, % of target and red/amber/green status. No storage, no Slack.

Thresholds are expressed as actual ÷ target in %, the way people state them:
"churn is amber from 110 % of target, red from 130 %" (lower is better), or
"MQLs are amber under 90 % of target, red under 70 %" (higher is better).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from bot.models import Aggregation, Direction

HUNDRED = Decimal(100)


class Status(enum.StrEnum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"
    NO_TARGET = "no_target"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class TargetValue:
    """A target: one value, or a range ``low``–``high`` (e.g. close rate 15–20 %)."""

    low: Decimal
    high: Decimal

    @classmethod
    def exact(cls, value: Decimal) -> TargetValue:
        return cls(value, value)

    @property
    def is_range(self) -> bool:
        return self.low != self.high

    def reference(self, direction: Direction) -> Decimal:
        """The edge of the target that counts: reaching the low end when higher is better,
        staying under the high end when lower is better."""
        return self.low if direction is Direction.HIGHER else self.high


def default_thresholds(direction: Direction) -> tuple[Decimal, Decimal]:
    """(amber, red) in % of target."""
    if direction is Direction.HIGHER:
        return Decimal(90), Decimal(70)
    return Decimal(110), Decimal(130)


def threshold_problem(direction: Direction, amber: Decimal, red: Decimal) -> str | None:
    """Why a pair of thresholds makes no sense for a direction, as a message code, or None."""
    if amber <= 0 or red <= 0:
        return "threshold_not_positive"
    if direction is Direction.HIGHER and not red < amber <= HUNDRED:
        return "threshold_order_higher"
    if direction is Direction.LOWER and not HUNDRED <= amber < red:
        return "threshold_order_lower"
    return None


def aggregate(values: Sequence[Decimal], how: Aggregation) -> Decimal | None:
    """Combine a period's values (oldest first) into one."""
    if not values:
        return None
    if how is Aggregation.SUM:
        return sum(values, Decimal(0))
    if how is Aggregation.AVERAGE:
        return sum(values, Decimal(0)) / len(values)
    return values[-1]


def ratio_pct(actual: Decimal, target: TargetValue, direction: Direction) -> Decimal | None:
    """actual ÷ target in %, against the edge of a range that counts for the direction."""
    reference = target.reference(direction)
    if reference == 0:
        return None
    return actual / reference * HUNDRED


def achievement_pct(actual: Decimal, target: TargetValue, direction: Direction) -> Decimal | None:
    """% of target where 100 means "on target" and more is always better.

    For lower-is-better KPIs this is target ÷ actual: cost per lead of ¥12,500 against
    ¥10,000 is 80 % achieved. None when the division is undefined (a zero target, or
    an actual of zero for a lower-is-better KPI, which is simply on target).
    """
    reference = target.reference(direction)
    if direction is Direction.HIGHER:
        return None if reference == 0 else actual / reference * HUNDRED
    if actual == 0:
        return None
    return reference / actual * HUNDRED


def status(
    actual: Decimal | None,
    target: TargetValue | None,
    direction: Direction,
    amber_pct: Decimal,
    red_pct: Decimal,
) -> Status:
    if actual is None:
        return Status.NO_DATA
    if target is None:
        return Status.NO_TARGET
    reference = target.reference(direction)
    if direction is Direction.HIGHER:
        if reference <= 0:
            return Status.GREEN if actual >= reference else Status.RED
        ratio = actual / reference * HUNDRED
        if ratio >= amber_pct:
            return Status.GREEN
        return Status.AMBER if ratio >= red_pct else Status.RED
    if reference <= 0:
        return Status.GREEN if actual <= reference else Status.RED
    ratio = actual / reference * HUNDRED
    if ratio <= amber_pct:
        return Status.GREEN
    return Status.AMBER if ratio <= red_pct else Status.RED


@dataclass(frozen=True)
class Score:
    actual: Decimal | None
    target: TargetValue | None
    achievement_pct: Decimal | None
    status: Status


def score(
    actual: Decimal | None,
    target: TargetValue | None,
    direction: Direction,
    amber_pct: Decimal,
    red_pct: Decimal,
) -> Score:
    achieved = None
    if actual is not None and target is not None:
        achieved = achievement_pct(actual, target, direction)
    return Score(actual, target, achieved, status(actual, target, direction, amber_pct, red_pct))
