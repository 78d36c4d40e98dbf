"""% of target and red/amber/green: direction- and range-aware."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.models import Aggregation, Direction
from bot.scoring import (
    Status,
    TargetValue,
    achievement_pct,
    aggregate,
    default_thresholds,
    ratio_pct,
    score,
    status,
    threshold_problem,
)

D = Decimal
HIGHER, LOWER = Direction.HIGHER, Direction.LOWER


@pytest.mark.parametrize(
    ("how", "expected"), [(Aggregation.SUM, D(60)), (Aggregation.AVERAGE, D(20)), (Aggregation.LAST, D(25))]
)
def test_aggregate(how: Aggregation, expected: Decimal) -> None:
    assert aggregate([D(15), D(20), D(25)], how) == expected


def test_aggregate_of_nothing_is_none() -> None:
    assert aggregate([], Aggregation.SUM) is None


def test_achievement_higher_is_better() -> None:
    assert achievement_pct(D(150), TargetValue.exact(D(200)), HIGHER) == D(75)


def test_achievement_lower_is_better_inverts() -> None:
    # Cost per lead ¥12,500 against ¥10,000: 80 % achieved, not 125 %.
    assert achievement_pct(D(12500), TargetValue.exact(D(10000)), LOWER) == D(80)
    assert ratio_pct(D(12500), TargetValue.exact(D(10000)), LOWER) == D(125)
    assert achievement_pct(D(0), TargetValue.exact(D(2)), LOWER) is None


def test_range_targets_use_the_edge_that_counts() -> None:
    close_rate = TargetValue(D(15), D(20))
    assert close_rate.is_range
    assert achievement_pct(D(12), close_rate, HIGHER) == D(80)  # against 15, the low end
    assert achievement_pct(D(18), close_rate, HIGHER) == D(120)
    churn = TargetValue(D(1), D(2))
    assert achievement_pct(D(4), churn, LOWER) == D(50)  # against 2, the high end


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (D(200), Status.GREEN),
        (D(180), Status.GREEN),
        (D(179), Status.AMBER),
        (D(140), Status.AMBER),
        (D(139), Status.RED),
        (D(0), Status.RED),
    ],
)
def test_status_higher(actual: Decimal, expected: Status) -> None:
    assert status(actual, TargetValue.exact(D(200)), HIGHER, D(90), D(70)) == expected


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (D("1.5"), Status.GREEN),
        (D("2.2"), Status.GREEN),
        (D("2.3"), Status.AMBER),
        (D("2.6"), Status.AMBER),
        (D("2.7"), Status.RED),
    ],
)
def test_status_lower(actual: Decimal, expected: Status) -> None:
    # Churn target 2 %, amber above 110 % of target, red above 130 %.
    assert status(actual, TargetValue.exact(D(2)), LOWER, D(110), D(130)) == expected


def test_status_within_and_outside_a_range() -> None:
    target = TargetValue(D(15), D(20))
    assert status(D(25), target, HIGHER, D(90), D(70)) == Status.GREEN  # above the range is fine when higher
    assert status(D(13), target, HIGHER, D(90), D(70)) == Status.AMBER  # 87 % of the low end
    assert status(D(10), target, HIGHER, D(90), D(70)) == Status.RED


def test_missing_values_and_targets() -> None:
    assert status(None, TargetValue.exact(D(1)), HIGHER, D(90), D(70)) == Status.NO_DATA
    assert status(D(5), None, HIGHER, D(90), D(70)) == Status.NO_TARGET
    result = score(D(5), None, HIGHER, D(90), D(70))
    assert result.achievement_pct is None and result.status is Status.NO_TARGET


def test_zero_targets() -> None:
    # "Zero incidents": any incident is red; none is green.
    assert status(D(0), TargetValue.exact(D(0)), LOWER, D(110), D(130)) == Status.GREEN
    assert status(D(1), TargetValue.exact(D(0)), LOWER, D(110), D(130)) == Status.RED
    assert achievement_pct(D(3), TargetValue.exact(D(0)), HIGHER) is None


@pytest.mark.parametrize(
    ("direction", "amber", "red", "problem"),
    [
        (HIGHER, D(90), D(70), None),
        (HIGHER, D(100), D(99), None),
        (HIGHER, D(70), D(90), "threshold_order_higher"),
        (HIGHER, D(110), D(90), "threshold_order_higher"),
        (LOWER, D(110), D(130), None),
        (LOWER, D(90), D(70), "threshold_order_lower"),
        (LOWER, D(130), D(110), "threshold_order_lower"),
        (LOWER, D(-5), D(130), "threshold_not_positive"),
    ],
)
def test_threshold_problems(direction: Direction, amber: Decimal, red: Decimal, problem: str | None) -> None:
    assert threshold_problem(direction, amber, red) == problem


def test_default_thresholds_are_sensible() -> None:
    for direction in Direction:
        assert threshold_problem(direction, *default_thresholds(direction)) is None
