"""Alert rules, pure: what a scorecard row says about a KPI's alerts. No database, no Slack.

Rules (direction- and range-aware through bot.scoring):
- **below target**: a period's value under the KPI's amber/red threshold. For a finished
  period always; for the period in progress only when the value is not a running total
  (average/last: a rate reported mid-month is already representative).
- **pace**: a running total (aggregation `sum`) of the period in progress, projected to the
  period's end from the days elapsed ("at this pace the month ends at 78 % of target").
- **streak**: the KPI's `streak` finished periods in a row (default 3) each under its amber
  threshold: the latest finished period's alert says so and escalates to the head.
- **missing**: nothing reported for the last two finished periods (both after the KPI was
  created: a plan imported today is not "missing" last month): escalated to the head.

The alert rows these findings move are bot/alerts/service.py's; making Slack show them is
bot/alerts/flows.py's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.clock import utcnow
from bot.models import Aggregation, Alert, AlertReason, AlertStatus, Kpi, Severity
from bot.periods import Period
from bot.scorecard import ScoreRow
from bot.scoring import Status, TargetValue, achievement_pct, status

# A projection from the first days of a period is noise: wait until this share has passed.
PACE_MIN_ELAPSED = Decimal("0.25")
MISSING_STREAK = 2
STREAK_DEFAULT = 3
STREAK_RANGE = (2, 99)  # a plan's `streak`: fewer is every shortfall, more is no rule at all
_SEVERITY = {Status.AMBER: Severity.AMBER, Status.RED: Severity.RED}
_RANK = {Severity.AMBER: 1, Severity.RED: 2, Severity.MISSING: 2}


@dataclass(frozen=True)
class Finding:
    kpi: Kpi
    period: Period
    severity: Severity
    reason: AlertReason
    value: Decimal | None
    achievement_pct: Decimal | None


def below_target(kpi: Kpi, value: Decimal, target: TargetValue | None) -> Severity | None:
    return _SEVERITY.get(status(value, target, kpi.direction, Decimal(kpi.amber_pct), Decimal(kpi.red_pct)))


def projected(value_so_far: Decimal, period: Period, today: dt.date) -> Decimal | None:
    """The running total extrapolated to the period's end, or None too early in the period."""
    elapsed = Decimal(min((today - period.start).days + 1, period.days))
    if elapsed <= 0 or elapsed / period.days < PACE_MIN_ELAPSED:
        return None
    return value_so_far * period.days / elapsed


def is_running_total(kpi: Kpi) -> bool:
    return kpi.aggregation is Aggregation.SUM and not kpi.formula


def evaluate(row: ScoreRow, today: dt.date, tz: dt.tzinfo = dt.UTC) -> list[Finding]:
    """Every rule for one KPI, from a scorecard row scored for the period in progress with at
    least MISSING_STREAK finished periods of history before it. `tz` is the department's: it
    says on which local day the KPI was created (periods that ended before are not missing)."""
    kpi = row.kpi
    current, value, target = row.period, row.history[-1], row.targets[-1]
    findings: list[Finding] = []
    if value is not None and target is not None:
        if is_running_total(kpi):
            pace = projected(value, current, today)
            severity = None if pace is None else below_target(kpi, pace, target)
            if severity and pace is not None:
                findings.append(
                    Finding(
                        kpi,
                        current,
                        severity,
                        AlertReason.PACE,
                        pace,
                        achievement_pct(pace, target, kpi.direction),
                    )
                )
        elif severity := below_target(kpi, value, target):
            findings.append(
                Finding(
                    kpi,
                    current,
                    severity,
                    AlertReason.BELOW_TARGET,
                    value,
                    achievement_pct(value, target, kpi.direction),
                )
            )
    finished = current.previous()
    last_value, last_target = row.history[-2], row.targets[-2]
    if (
        last_value is not None
        and last_target is not None
        and (severity := below_target(kpi, last_value, last_target))
    ):
        findings.append(
            Finding(
                kpi,
                finished,
                severity,
                AlertReason.STREAK if in_streak(row) else AlertReason.BELOW_TARGET,
                last_value,
                achievement_pct(last_value, last_target, kpi.direction),
            )
        )
    if (
        not kpi.formula
        and kpi.fetch_source is None  # a feed that broke is the admins' notice (bot.sources.runs)
        and all(v is None for v in row.history[-1 - MISSING_STREAK : -1])
        and _existed_before_end(kpi, finished.shift(1 - MISSING_STREAK), tz)
    ):
        findings.append(Finding(kpi, finished, Severity.MISSING, AlertReason.MISSING, None, None))
    return findings


def streak_length(kpi: Kpi) -> int:
    return kpi.streak or STREAK_DEFAULT


def history_needed(streaks: Iterable[int | None]) -> int:
    """The scorecard history `evaluate` needs for KPIs of these `streak`s: the period in progress
    and enough finished periods for the longest streak (and the missing rule)."""
    return max([MISSING_STREAK, *(streak or STREAK_DEFAULT for streak in streaks)]) + 1


def below_streak(kpi: Kpi, values: Sequence[Decimal | None], targets: Sequence[TargetValue | None]) -> int:
    """How many periods in a row, ending with the last one given, were under amber (or red)."""
    # The KPI's thresholds read once, not per period: below_target's rule over a whole history.
    direction, amber, red = kpi.direction, Decimal(kpi.amber_pct), Decimal(kpi.red_pct)
    count = 0
    for value, target in zip(reversed(values), reversed(targets), strict=True):
        if value is None or target is None or status(value, target, direction, amber, red) not in _SEVERITY:
            break
        count += 1
    return count


def in_streak(row: ScoreRow) -> bool:
    """Whether the finished periods of a scorecard row scored for the period in progress end
    with the KPI's streak: `streak` periods in a row under amber (direction- and range-aware)."""
    return below_streak(row.kpi, row.history[:-1], row.targets[:-1]) >= streak_length(row.kpi)


def _existed_before_end(kpi: Kpi, period: Period, tz: dt.tzinfo) -> bool:
    """Whether the KPI could have been reported for `period`: a plan imported today does not
    make every KPI "missing" for the months before it existed."""
    created = kpi.created_at or utcnow()
    return created.astimezone(tz).date() <= period.end


def is_worse(after: Severity, before: Severity) -> bool:
    """Whether moving from `before` to `after` is a worsening (missing ranks with red)."""
    return _RANK[after] > _RANK[before]


def latest_on_track(row: ScoreRow, today: dt.date) -> Period | None:
    """The latest period whose value shows the KPI on track (on pace, for a running total)."""
    kpi = row.kpi
    for offset, period in ((1, row.period), (2, row.period.previous())):
        value, target = row.history[-offset], row.targets[-offset]
        if value is None or target is None:
            continue
        if offset == 1 and is_running_total(kpi):
            pace = projected(value, period, today)
            if pace is None:
                continue
            value = pace
        return period if below_target(kpi, value, target) is None else None
    return None


def events(alert: Alert) -> list[tuple[str, Severity | None]]:
    """What changed since Slack last showed the alert: (event, severity before)."""
    before = alert.posted_severity
    if alert.status is AlertStatus.RESOLVED:
        return [] if alert.posted_status is AlertStatus.RESOLVED else [("resolved", before)]
    if alert.posted_status is AlertStatus.RESOLVED:
        return [("reopened", before)]
    changes: list[tuple[str, Severity | None]] = []
    if before is not None and before is not alert.severity:
        changes.append(("changed", before))
    if (
        alert.reason is AlertReason.STREAK
        and alert.posted_status is not None
        and alert.posted_reason is not AlertReason.STREAK
    ):
        # Shown before as a single shortfall: the streak escalates it to the head, once.
        changes.append(("streak", before))
    if alert.status is AlertStatus.ACKNOWLEDGED and alert.posted_status is AlertStatus.OPEN:
        changes.append(("acknowledged", before))
    return changes


# Moved to bot.alerts.service; handlers/demo.py and bench/run.py still import them from here
# until their owners switch their import (then this goes).
_MOVED = frozenset({"check_kpi", "check_department", "scan_department"})


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from bot.alerts import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
