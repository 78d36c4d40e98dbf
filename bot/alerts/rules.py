"""Alert rules and alert state, as plain functions. Posting them is handlers/alerts/interactive.py's job.

Rules (direction- and range-aware through bot.scoring):
- **below target**: a period's value under the KPI's amber/red threshold. For a finished
  period always; for the period in progress only when the value is not a running total
  (average/last: a rate reported mid-month is already representative).
- **pace**: a running total (aggregation `sum`) of the period in progress, projected to the
  period's end from the days elapsed ("at this pace the month ends at 78 % of target").
- **missing**: nothing reported for the last two finished periods (both after the KPI was
  created: a plan imported today is not "missing" last month): escalated to the head.

An Alert row is the desired state (severity, status); `posted_severity`/`posted_status`
record what Slack shows, so the poster knows what to send and nothing is sent twice. Rows
move in the report's own transaction (`check_after_report`, a bot.reports.actuals listener) and in
the hourly scan (`check_department`, a constant number of queries per department).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, or_, select

from bot import clock
from bot.clock import utcnow
from bot.formulas import parse_formula
from bot.models import Aggregation, Alert, AlertReason, AlertStatus, Department, Kpi, Severity
from bot.periods import Period
from bot.reports.actuals import Recorded, on_actual_recorded
from bot.scorecard import ScoreRow, build_scorecard
from bot.scoring import Status, TargetValue, achievement_pct, status

log = logging.getLogger(__name__)

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
                AlertReason.BELOW_TARGET,
                last_value,
                achievement_pct(last_value, last_target, kpi.direction),
            )
        )
    if (
        not kpi.formula
        and all(v is None for v in row.history[-1 - MISSING_STREAK : -1])
        and _existed_before_end(kpi, finished.shift(1 - MISSING_STREAK), tz)
    ):
        findings.append(Finding(kpi, finished, Severity.MISSING, AlertReason.MISSING, None, None))
    return findings


def _existed_before_end(kpi: Kpi, period: Period, tz: dt.tzinfo) -> bool:
    """Whether the KPI could have been reported for `period`: a plan imported today does not
    make every KPI "missing" for the months before it existed."""
    created = kpi.created_at or utcnow()
    return created.astimezone(tz).date() <= period.end


def scan_department(session: Session, department: Department, today: dt.date) -> list[Finding]:
    card = build_scorecard(session, department, today, history_length=MISSING_STREAK + 1, current=True)
    tz = ZoneInfo(department.timezone)
    return [finding for row in card.rows for finding in evaluate(row, today, tz)]


@dataclass(frozen=True)
class Change:
    """What happened to an alert: "raised", "worse", "better" (still below), "reopened"
    (below again after it was resolved), "resolved"."""

    alert: Alert
    kind: str
    before: Severity | None = None


# Alerts already loaded for a department, by (KPI id, period key); see `check_department`.
Known = dict[tuple[int, str], Alert]


def apply_finding(session: Session, finding: Finding, known: Known | None = None) -> Change | None:
    """Record a finding on its (KPI, period) alert: raise it, or move its severity."""
    assert finding.kpi.id is not None
    slot = (finding.kpi.id, finding.period.key)
    if known is not None:
        alert = known.get(slot)
    else:
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
            created_at=now,
            updated_at=now,
        )
        session.add(alert)
        session.flush()
        if known is not None:
            known[slot] = alert
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
        # A new episode: whoever acknowledged the last one has not seen this one.
        alert.status, alert.resolved_at, alert.acknowledged_by = AlertStatus.OPEN, None, None
    session.add(alert)
    if reopened:
        return Change(alert, "reopened", before)
    kind = "worse" if _RANK[finding.severity] > _RANK[before] else "better"
    return Change(alert, kind, before)


def resolve_recovered(
    session: Session,
    kpi: Kpi,
    period: Period,
    findings: Sequence[Finding],
    *,
    recovered: bool,
    known: Known | None = None,
) -> list[Change]:
    """Close the KPI's open alerts once it is back on track.

    `recovered` says the KPI's latest value (of `period`) is at or above its amber
    threshold (or on pace); alerts of that period and earlier ones are then resolved,
    unless a finding still stands for their period.
    """
    if not recovered:
        return []
    standing = {finding.period.key for finding in findings}
    if known is not None:
        open_alerts = [
            alert
            for (kpi_id, key), alert in known.items()
            if kpi_id == kpi.id and alert.status is not AlertStatus.RESOLVED and key <= period.key
        ]
    else:
        open_alerts = list(
            session.exec(
                select(Alert).where(
                    Alert.kpi_id == kpi.id,
                    col(Alert.status) != AlertStatus.RESOLVED,
                    col(Alert.period) <= period.key,
                )
            ).all()
        )
    changes = []
    now = utcnow()
    for alert in open_alerts:
        if alert.period in standing or len(alert.period) != len(period.key):
            continue
        alert.status, alert.resolved_at, alert.updated_at = AlertStatus.RESOLVED, now, now
        session.add(alert)
        changes.append(Change(alert, "resolved", alert.severity))
    return changes


def check_department(
    session: Session, department: Department, today: dt.date, kpi_ids: Collection[int] | None = None
) -> list[Change]:
    """Evaluate a department's KPIs (or only `kpi_ids`) and update their alerts in the caller's
    transaction: raise, move, reopen, resolve. A constant number of queries per department."""
    card = build_scorecard(session, department, today, history_length=MISSING_STREAK + 1, current=True)
    rows = [row for row in card.rows if kpi_ids is None or row.kpi.id in kpi_ids]
    if not rows:
        return []
    tz = ZoneInfo(department.timezone)
    known = _known_alerts(session, rows)
    changes: list[Change] = []
    for row in rows:
        latest = _latest_on_track(row, today)
        # Once a later period is back on track, an earlier period's shortfall is history: its
        # alert is resolved, not raised (or reopened) again by every later check.
        findings = [
            finding for finding in evaluate(row, today, tz) if latest is None or finding.period >= latest
        ]
        changes += [change for finding in findings if (change := apply_finding(session, finding, known))]
        if latest is not None:
            changes += resolve_recovered(session, row.kpi, latest, findings, recovered=True, known=known)
    return changes


def check_kpi(session: Session, kpi: Kpi, department: Department, today: dt.date) -> list[Change]:
    """After a report: evaluate one KPI and update its alerts (the caller's transaction)."""
    assert kpi.id is not None
    return check_department(session, department, today, kpi_ids={kpi.id})


def _known_alerts(session: Session, rows: Sequence[ScoreRow]) -> Known:
    """The rows' alerts that a check may touch: every unresolved one, and any of the periods
    evaluated (a resolved alert of those may reopen). One query."""
    ids = [row.kpi.id for row in rows if row.kpi.id is not None]
    periods = {key for row in rows for key in (row.period.key, row.period.previous().key)}
    alerts = session.exec(
        select(Alert).where(
            col(Alert.kpi_id).in_(ids),
            or_(col(Alert.status) != AlertStatus.RESOLVED, col(Alert.period).in_(periods)),
        )
    ).all()
    return {(alert.kpi_id, alert.period): alert for alert in alerts}


def affected_kpis(session: Session, kpi: Kpi) -> list[tuple[Kpi, Department]]:
    """The KPI and every derived KPI whose formula uses it, each with its department."""
    found = [kpi]
    for candidate in session.exec(select(Kpi).where(col(Kpi.formula).is_not(None))).all():
        if candidate.id != kpi.id and kpi.key in _formula_names(candidate):
            found.append(candidate)
    departments = {
        department.id: department
        for department in session.exec(
            select(Department).where(col(Department.id).in_({k.department_id for k in found}))
        ).all()
    }
    return [(k, departments[k.department_id]) for k in found]


def _formula_names(kpi: Kpi) -> frozenset[str]:
    try:
        return parse_formula(kpi.formula or "").names
    except ValueError:
        return frozenset()


@on_actual_recorded
def check_after_report(session: Session, kpi: Kpi, recorded: Recorded) -> None:
    """bot.reports.actuals listener: a report moves its KPI's alerts (and its derived KPIs') in the
    report's own transaction. A fault in the rules never loses the report: it is logged, the
    alert rows are left as they were, and the hourly scan evaluates the KPI again."""
    if not recorded.changed:
        return
    try:
        with session.begin_nested():
            for affected, department in affected_kpis(session, kpi):
                check_kpi(session, affected, department, clock.today(ZoneInfo(department.timezone)))
    except OperationalError:
        raise
    except Exception:
        log.exception("alert check after a report of %s failed; the next scan retries", kpi.key)


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
