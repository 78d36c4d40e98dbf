"""Alert rules and alert state, as plain functions. Posting them is handlers/alerts.py's job.

Rules (direction- and range-aware through bot.scoring):
- **below target**: a period's value under the KPI's amber/red threshold. For a finished
  period always; for the period in progress only when the value is not a running total
  (average/last: a rate reported mid-month is already representative).
- **pace**: a running total (aggregation `sum`) of the period in progress, projected to the
  period's end from the days elapsed ("at this pace the month ends at 78 % of target").
- **missing**: nothing reported for the last two finished periods: escalated to the head.

An Alert row is the desired state (severity, status); `posted_severity`/`posted_status`
record what Slack shows, so the poster knows what to send and nothing is sent twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlmodel import Session, col, select

from bot.clock import utcnow
from bot.models import Aggregation, Alert, AlertReason, AlertStatus, Department, Kpi, Severity
from bot.periods import Period
from bot.scorecard import ScoreRow, build_scorecard
from bot.scoring import Status, TargetValue, achievement_pct, status

# A projection from the first days of a period is noise: wait until this share has passed.
PACE_MIN_ELAPSED = Decimal("0.25")
MISSING_STREAK = 2
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


def evaluate(row: ScoreRow, today: dt.date) -> list[Finding]:
    """Every rule for one KPI, from a scorecard row scored for the period in progress with at
    least MISSING_STREAK finished periods of history before it."""
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
                AlertReason.BELOW_TARGET,
                last_value,
                achievement_pct(last_value, last_target, kpi.direction),
            )
        )
    if not kpi.formula and all(v is None for v in row.history[-1 - MISSING_STREAK : -1]):
        findings.append(Finding(kpi, finished, Severity.MISSING, AlertReason.MISSING, None, None))
    return findings


def scan_department(session: Session, department: Department, today: dt.date) -> list[Finding]:
    card = build_scorecard(session, department, today, history_length=MISSING_STREAK + 1, current=True)
    return [finding for row in card.rows for finding in evaluate(row, today)]


@dataclass(frozen=True)
class Change:
    """What happened to an alert: "raised", "worse", "better" (still below), "resolved"."""

    alert: Alert
    kind: str
    before: Severity | None = None


def apply_finding(session: Session, finding: Finding) -> Change | None:
    """Record a finding on its (KPI, period) alert: raise it, or move its severity."""
    assert finding.kpi.id is not None
    alert = session.exec(
        select(Alert).where(Alert.kpi_id == finding.kpi.id, Alert.period == finding.period.key)
    ).first()
    now = utcnow()
    if alert is None:
        alert = Alert(
            kpi_id=finding.kpi.id,
            period=finding.period.key,
            severity=finding.severity,
            reason=finding.reason,
            status=AlertStatus.OPEN,
            value=finding.value,
            achievement_pct=finding.achievement_pct,
        )
        session.add(alert)
        session.flush()
        return Change(alert, "raised")
    before = alert.severity
    reopened = alert.status is AlertStatus.RESOLVED
    alert.value, alert.achievement_pct, alert.reason = finding.value, finding.achievement_pct, finding.reason
    if before is finding.severity and not reopened:
        session.add(alert)
        return None
    alert.severity = finding.severity
    alert.updated_at = now
    if reopened:
        alert.status, alert.resolved_at = AlertStatus.OPEN, None
    session.add(alert)
    kind = "worse" if reopened or _RANK[finding.severity] > _RANK[before] else "better"
    return Change(alert, kind, before)


def resolve_recovered(
    session: Session, kpi: Kpi, period: Period, findings: Sequence[Finding], *, recovered: bool
) -> list[Change]:
    """Close the KPI's open alerts once it is back on track.

    `recovered` says the KPI's latest value (of `period`) is at or above its amber
    threshold (or on pace); alerts of that period and earlier ones are then resolved,
    unless a finding still stands for their period.
    """
    if not recovered:
        return []
    standing = {finding.period.key for finding in findings}
    open_alerts = session.exec(
        select(Alert).where(
            Alert.kpi_id == kpi.id, col(Alert.status) != AlertStatus.RESOLVED, col(Alert.period) <= period.key
        )
    ).all()
    changes = []
    for alert in open_alerts:
        if alert.period in standing or len(alert.period) != len(period.key):
            continue
        alert.status, alert.resolved_at, alert.updated_at = AlertStatus.RESOLVED, utcnow(), utcnow()
        session.add(alert)
        changes.append(Change(alert, "resolved", alert.severity))
    return changes


def check_kpi(session: Session, kpi: Kpi, department: Department, today: dt.date) -> list[Change]:
    """After a report: evaluate one KPI and update its alerts (the caller's transaction)."""
    card = build_scorecard(session, department, today, history_length=MISSING_STREAK + 1, current=True)
    row = next(r for r in card.rows if r.kpi.id == kpi.id)
    findings = evaluate(row, today)
    changes = [change for finding in findings if (change := apply_finding(session, finding))]
    latest = _latest_on_track(row, today)
    if latest is not None:
        changes += resolve_recovered(session, kpi, latest, findings, recovered=True)
    return changes


def _latest_on_track(row: ScoreRow, today: dt.date) -> Period | None:
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
