"""Alert rules (bot/alerts/rules.py): below target, pace and missing streak, and the alert state they move.

The rules are plain functions over a scorecard row; the state tests (bot/alerts/service.py) run on
SQLite and PostgreSQL through the call a report makes (bot.reports.service.save), so the alert rows
change in the report's transaction.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bot.alerts import service as alerts
from bot.alerts.rules import Finding, below_target, evaluate, projected
from bot.alerts.service import check_department, check_kpi, scan_department
from bot.clock import set_clock
from bot.database import transaction
from bot.models import (
    Actual,
    Aggregation,
    Alert,
    AlertReason,
    AlertStatus,
    Cadence,
    Department,
    Direction,
    Kpi,
    Severity,
    Source,
    Target,
    Unit,
)
from bot.periods import Period, parse_key, period_of
from bot.reports.service import save
from bot.scorecard import ScoreRow
from bot.scoring import TargetValue, score
from tests.plans import count_kpi

TOKYO = dt.timezone(dt.timedelta(hours=9))
NOVEMBER = Period(Cadence.MONTHLY, 2026, 11)
LONG_AGO = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
HUNDRED = TargetValue.exact(Decimal(100))


def kpi(key: str = "mqls", **columns: Any) -> Kpi:
    columns.setdefault("created_at", LONG_AGO)
    return count_kpi(key, 1, id=columns.pop("id", 1), **columns)


def row(
    kpi_: Kpi,
    history: list[int | str | None],
    target: TargetValue | None = HUNDRED,
    period: Period = NOVEMBER,
) -> ScoreRow:
    """A scorecard row for `period` (the period in progress) with `history` ending in it."""
    values = [None if v is None else Decimal(v) for v in history]
    window = period.last(len(values))
    kpi_score = score(values[-1], target, kpi_.direction, Decimal(kpi_.amber_pct), Decimal(kpi_.red_pct))
    return ScoreRow(kpi_, window[-1], kpi_score, values[-2], values, [target] * len(values))


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


# -- below target: direction and ranges ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("100", None), ("90", None), ("89.9", Severity.AMBER), ("70", Severity.AMBER), ("69.9", Severity.RED)],
)
def test_higher_is_better_is_below_under_its_thresholds(value: str, expected: Severity | None) -> None:
    assert below_target(kpi(), Decimal(value), TargetValue.exact(Decimal(100))) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.5", None),  # under target: good
        ("2.4", None),  # 120 %: still at its amber threshold
        ("2.6", Severity.AMBER),  # 130 %
        ("3", Severity.AMBER),  # 150 %: at the red threshold
        ("3.2", Severity.RED),  # 160 %
    ],
)
def test_churn_above_target_is_bad(value: str, expected: Severity | None) -> None:
    churn = kpi(
        "churn_rate",
        unit=Unit.PERCENT,
        direction=Direction.LOWER,
        aggregation=Aggregation.LAST,
        amber_pct=Decimal(120),
        red_pct=Decimal(150),
    )
    assert below_target(churn, Decimal(value), TargetValue.exact(Decimal(2))) is expected


def test_cost_per_lead_is_judged_as_lower_is_better_with_achievement_inverted() -> None:
    cost = kpi(
        "cost_per_lead",
        unit=Unit.JPY,
        direction=Direction.LOWER,
        aggregation=Aggregation.AVERAGE,
        amber_pct=Decimal(110),
        red_pct=Decimal(130),
    )
    assert (
        evaluate(row(cost, [None, 8000, 6000], TargetValue.exact(Decimal(8000))), dt.date(2026, 11, 20)) == []
    )
    finding = only(
        evaluate(row(cost, [8000, 8000, 12000], TargetValue.exact(Decimal(8000))), dt.date(2026, 11, 3))
    )
    assert (finding.severity, finding.reason, finding.period) == (
        Severity.RED,
        AlertReason.BELOW_TARGET,
        NOVEMBER,
    )
    # ¥12,000 against ¥8,000 is two thirds achieved.
    assert finding.achievement_pct is not None and round(finding.achievement_pct, 1) == Decimal("66.7")
    finding = only(
        evaluate(row(cost, [8000, 8000, 9000], TargetValue.exact(Decimal(8000))), dt.date(2026, 11, 3))
    )
    assert finding.severity is Severity.AMBER


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("25", None),  # above the range: more is better
        ("17", None),  # inside
        ("13.5", None),  # 90 % of the low end
        ("13", Severity.AMBER),
        ("10", Severity.RED),  # 67 % of 15
    ],
)
def test_a_range_counts_from_its_low_end_when_higher_is_better(value: str, expected: Severity | None) -> None:
    close_rate = kpi("close_rate", unit=Unit.PERCENT, aggregation=Aggregation.LAST)
    assert below_target(close_rate, Decimal(value), TargetValue(Decimal(15), Decimal(20))) is expected


def test_a_range_counts_from_its_high_end_when_lower_is_better() -> None:
    churn = kpi(
        "churn_rate",
        unit=Unit.PERCENT,
        direction=Direction.LOWER,
        aggregation=Aggregation.LAST,
        amber_pct=Decimal(110),
        red_pct=Decimal(130),
    )
    band = TargetValue(Decimal(2), Decimal(3))
    assert below_target(churn, Decimal("3.3"), band) is None  # 110 % of 3
    assert below_target(churn, Decimal("3.6"), band) is Severity.AMBER
    assert below_target(churn, Decimal("4"), band) is Severity.RED


def test_no_target_or_no_value_is_never_below() -> None:
    assert below_target(kpi(), Decimal(1), None) is None
    assert (
        evaluate(row(kpi(aggregation=Aggregation.LAST), [5, 5, 1], target=None), dt.date(2026, 11, 20)) == []
    )


def test_a_finished_period_below_target_is_found_for_that_period() -> None:
    finding = only(evaluate(row(kpi(), [100, 60, None]), dt.date(2026, 11, 3)))
    assert (finding.period, finding.severity, finding.reason) == (
        NOVEMBER.previous(),
        Severity.RED,
        AlertReason.BELOW_TARGET,
    )
    assert finding.value == Decimal(60) and finding.achievement_pct == Decimal(60)


# -- pace ---------------------------------------------------------------------------------------------


def test_projection_extrapolates_the_running_total_from_the_days_elapsed() -> None:
    assert projected(Decimal(30), NOVEMBER, dt.date(2026, 11, 20)) == Decimal(45)
    assert projected(Decimal(30), NOVEMBER, dt.date(2026, 11, 30)) == Decimal(30)
    assert projected(Decimal(30), NOVEMBER, dt.date(2026, 12, 5)) == Decimal(30)  # period over: the total
    # Not before a quarter of the period: day 7 of 30 is too early, day 8 is not.
    assert projected(Decimal(10), NOVEMBER, dt.date(2026, 11, 7)) is None
    assert projected(Decimal(10), NOVEMBER, dt.date(2026, 11, 8)) == Decimal("37.5")
    assert projected(Decimal(10), NOVEMBER, dt.date(2026, 10, 31)) is None


def test_a_sum_kpi_mid_month_is_judged_on_pace() -> None:
    mqls = kpi(aggregation=Aggregation.SUM)
    finding = only(evaluate(row(mqls, [100, 100, 30]), dt.date(2026, 11, 20)))
    assert (finding.severity, finding.reason, finding.period) == (Severity.RED, AlertReason.PACE, NOVEMBER)
    assert finding.value == Decimal(45) and finding.achievement_pct == Decimal(45)
    # 60 by the 20th is on course for 90: at its amber threshold, no alert.
    assert evaluate(row(mqls, [100, 100, 60]), dt.date(2026, 11, 20)) == []
    # 50 by the 20th is on course for 75: amber.
    assert only(evaluate(row(mqls, [100, 100, 50]), dt.date(2026, 11, 20))).severity is Severity.AMBER


def test_no_pace_alert_in_the_first_quarter_of_the_period() -> None:
    mqls = kpi(aggregation=Aggregation.SUM)
    assert evaluate(row(mqls, [100, 100, 1]), dt.date(2026, 11, 7)) == []
    assert only(evaluate(row(mqls, [100, 100, 1]), dt.date(2026, 11, 8))).reason is AlertReason.PACE


def test_a_weekly_sum_kpi_is_projected_over_its_week() -> None:
    visits = kpi("website_visits", cadence=Cadence.WEEKLY)
    week = Period(Cadence.WEEKLY, 2026, 48)  # Monday 23 – Sunday 29 November
    finding = only(evaluate(row(visits, [100, 100, 20], period=week), dt.date(2026, 11, 24)))
    assert (finding.reason, finding.value) == (AlertReason.PACE, Decimal(70))
    assert evaluate(row(visits, [100, 100, 20], period=week), dt.date(2026, 11, 23)) == []  # day 1 of 7


@pytest.mark.parametrize("aggregation", [Aggregation.AVERAGE, Aggregation.LAST])
def test_average_and_last_kpis_are_judged_on_the_current_value_without_waiting(
    aggregation: Aggregation,
) -> None:
    rate = kpi("close_rate", unit=Unit.PERCENT, aggregation=aggregation)
    finding = only(evaluate(row(rate, [100, 100, 60]), dt.date(2026, 11, 2)))
    assert (finding.reason, finding.severity, finding.value) == (
        AlertReason.BELOW_TARGET,
        Severity.RED,
        Decimal(60),
    )


def test_a_derived_kpi_is_judged_on_its_current_value_and_is_never_missing() -> None:
    conversion = kpi("sql_conversion", unit=Unit.PERCENT, formula="sqls / mqls * 100")
    finding = only(
        evaluate(row(conversion, [30, 30, 20], TargetValue.exact(Decimal(30))), dt.date(2026, 11, 2))
    )
    assert (finding.reason, finding.severity) == (AlertReason.BELOW_TARGET, Severity.RED)
    assert evaluate(row(conversion, [None, None, None]), dt.date(2026, 11, 20)) == []


# -- missing ------------------------------------------------------------------------------------------


def test_two_finished_periods_without_a_report_escalate() -> None:
    finding = only(evaluate(row(kpi(), [None, None, None]), dt.date(2026, 11, 20)))
    assert (finding.severity, finding.reason, finding.period) == (
        Severity.MISSING,
        AlertReason.MISSING,
        NOVEMBER.previous(),
    )
    # One missing period is not a streak; a report this month does not fill the past.
    assert evaluate(row(kpi(), [80 + 20, None, None]), dt.date(2026, 11, 20)) == []
    assert only(
        evaluate(row(kpi(aggregation=Aggregation.LAST), [None, None, 100]), dt.date(2026, 11, 20))
    ).reason is (AlertReason.MISSING)


def test_periods_before_the_kpi_existed_are_not_missing() -> None:
    # Created (in Tokyo) on 1 October: September could not be reported, so no streak yet.
    created = dt.datetime(2026, 9, 30, 16, 0, tzinfo=dt.UTC)  # 1 October 01:00 JST
    new = kpi(created_at=created)
    assert evaluate(row(new, [None, None, None]), dt.date(2026, 11, 20), TOKYO) == []
    # In UTC it was still 30 September: September counts.
    assert (
        only(evaluate(row(new, [None, None, None]), dt.date(2026, 11, 20), dt.UTC)).reason
        is AlertReason.MISSING
    )
    assert (
        only(
            evaluate(row(new, [None, None, None], period=NOVEMBER.next()), dt.date(2026, 12, 2), TOKYO)
        ).period
        == NOVEMBER
    )


# -- alert state, through the report's transaction ----------------------------------------------------


@pytest.fixture
def department(engine: Engine) -> Iterator[Department]:
    set_clock(lambda: dt.datetime(2026, 11, 20, 10, tzinfo=TOKYO).astimezone(dt.UTC))
    with transaction(engine) as session:
        sales = Department(
            key="sales", name_ja="営業部", name_en="Sales", channel_id="C0SALES", head_user_id="U0HEAD"
        )
        session.add(sales)
        session.flush()
        assert sales.id is not None
        for key, aggregation, formula in (
            ("close_rate", Aggregation.LAST, None),
            ("approaches", Aggregation.SUM, None),
            ("deals", Aggregation.SUM, None),
            ("deals_per_approach", Aggregation.LAST, "deals / approaches * 100"),
        ):
            item = count_kpi(key, sales.id, aggregation=aggregation, formula=formula, created_at=LONG_AGO)
            session.add(item)
            session.flush()
            assert item.id is not None
            session.add(Target(kpi_id=item.id, period="*", value=Decimal(100)))
        # October is reported for everything: no missing streak in the way.
        for item in session.exec(select(Kpi).where(col(Kpi.formula).is_(None))).all():
            session.add(
                Actual(
                    kpi_id=item.id,
                    period="2026-10",
                    value=Decimal(100),
                    reported_by="U0SEED",
                    source=Source.CSV,
                )
            )
    yield sales


def report(engine: Engine, key: str, value: int | str, period: str = "2026-11") -> None:
    """As a report stores a value: bot.reports.service.save, which checks the alerts."""
    with transaction(engine) as session:
        item = session.exec(select(Kpi).where(Kpi.key == key)).one()
        save(
            session,
            kpi=item,
            department=session.get_one(Department, item.department_id),
            period=parse_key(period),
            value=Decimal(value),
            user_id="U0OWNER",
            source=Source.COMMAND,
        )


def alert_of(engine: Engine, key: str, period: str = "2026-11") -> Alert | None:
    with transaction(engine) as session:
        return session.exec(
            select(Alert).join(Kpi, col(Kpi.id) == Alert.kpi_id).where(Kpi.key == key, Alert.period == period)
        ).first()


def state(engine: Engine, key: str) -> tuple[Severity, AlertStatus, AlertReason]:
    alert = alert_of(engine, key)
    assert alert is not None
    return alert.severity, alert.status, alert.reason


def test_a_report_raises_moves_resolves_and_reopens_its_alert(engine: Engine, department: Department) -> None:
    report(engine, "close_rate", 85)
    assert state(engine, "close_rate") == (Severity.AMBER, AlertStatus.OPEN, AlertReason.BELOW_TARGET)
    first = alert_of(engine, "close_rate")
    assert first is not None and first.value == Decimal(85) and first.posted_severity is None

    report(engine, "close_rate", 60)
    assert state(engine, "close_rate") == (Severity.RED, AlertStatus.OPEN, AlertReason.BELOW_TARGET)
    report(engine, "close_rate", 80)
    assert state(engine, "close_rate") == (Severity.AMBER, AlertStatus.OPEN, AlertReason.BELOW_TARGET)
    report(engine, "close_rate", 95)
    resolved = alert_of(engine, "close_rate")
    assert (
        resolved is not None and resolved.status is AlertStatus.RESOLVED and resolved.resolved_at is not None
    )
    report(engine, "close_rate", 50)
    reopened = alert_of(engine, "close_rate")
    assert reopened is not None and reopened.id == first.id  # one alert per KPI and period
    assert (reopened.severity, reopened.status, reopened.resolved_at) == (
        Severity.RED,
        AlertStatus.OPEN,
        None,
    )


def test_check_kpi_says_what_changed(
    engine: Engine, department: Department, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The changes are read from check_kpi itself here, not by the check a report makes.
    monkeypatch.setattr(alerts, "check_after_report", lambda *args: None)
    today = dt.date(2026, 11, 20)

    def after(value: int) -> list[tuple[str, Severity | None, Severity]]:
        report(engine, "close_rate", value)
        with transaction(engine) as session:
            item = session.exec(select(Kpi).where(Kpi.key == "close_rate")).one()
            changes = check_kpi(session, item, department, today)
            return [(c.kind, c.before, c.alert.severity) for c in changes]

    assert after(85) == [("raised", None, Severity.AMBER)]
    assert after(86) == []  # same severity: nothing to say
    assert after(60) == [("worse", Severity.AMBER, Severity.RED)]
    assert after(80) == [("better", Severity.RED, Severity.AMBER)]
    assert after(95) == [("resolved", Severity.AMBER, Severity.AMBER)]
    assert after(97) == []
    assert after(50) == [("reopened", Severity.AMBER, Severity.RED)]


def test_reopening_forgets_who_acknowledged_the_last_episode(engine: Engine, department: Department) -> None:
    report(engine, "close_rate", 60)
    with transaction(engine) as session:
        alert = session.exec(select(Alert)).one()
        alert.status, alert.acknowledged_by = AlertStatus.ACKNOWLEDGED, "U0HEAD"
        session.add(alert)
    report(engine, "close_rate", 50)  # worse while acknowledged: still acknowledged
    assert state(engine, "close_rate")[1] is AlertStatus.ACKNOWLEDGED
    report(engine, "close_rate", 99)
    report(engine, "close_rate", 40)
    reopened = alert_of(engine, "close_rate")
    assert reopened is not None and (reopened.status, reopened.acknowledged_by) == (AlertStatus.OPEN, None)


def test_a_pace_alert_resolves_when_the_total_is_back_on_course(
    engine: Engine, department: Department
) -> None:
    report(engine, "approaches", 30)  # 20 November: on course for 45
    assert state(engine, "approaches") == (Severity.RED, AlertStatus.OPEN, AlertReason.PACE)
    alert = alert_of(engine, "approaches")
    assert alert is not None and alert.value == Decimal(45)
    report(engine, "approaches", 62)  # on course for 93
    assert state(engine, "approaches")[1] is AlertStatus.RESOLVED


def test_a_report_checks_the_derived_kpis_that_use_it(engine: Engine, department: Department) -> None:
    report(engine, "approaches", 100)
    report(engine, "deals", 20)  # 20 % of approaches against a target of 100: red, mid-month
    assert state(engine, "deals_per_approach") == (Severity.RED, AlertStatus.OPEN, AlertReason.BELOW_TARGET)
    report(engine, "deals", 95)
    assert state(engine, "deals_per_approach")[1] is AlertStatus.RESOLVED


def test_alert_rows_change_in_the_reports_transaction(engine: Engine, department: Department) -> None:
    with pytest.raises(RuntimeError), transaction(engine) as session:
        item = session.exec(select(Kpi).where(Kpi.key == "close_rate")).one()
        save(
            session,
            kpi=item,
            department=department,
            period=NOVEMBER,
            value=Decimal(10),
            user_id="U0",
            source=Source.COMMAND,
        )
        assert session.exec(select(Alert)).first() is not None  # raised inside the transaction
        raise RuntimeError("the report fails after the alert was raised")
    assert alert_of(engine, "close_rate") is None


def test_a_fault_in_the_rules_never_loses_the_report(
    engine: Engine, department: Department, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug in a rule")

    monkeypatch.setattr(alerts, "check_kpi", broken)
    caplog.set_level(logging.ERROR, logger="bot.alerts.service")
    report(engine, "close_rate", 10)
    with transaction(engine) as session:
        assert session.exec(select(Actual).where(Actual.period == "2026-11")).one().value == Decimal(10)
    assert alert_of(engine, "close_rate") is None
    assert "alert check after a report of close_rate failed" in caplog.text
    monkeypatch.undo()
    with transaction(engine) as session:  # the scan catches up
        assert [c.kind for c in check_department(session, department, dt.date(2026, 11, 20))] == ["raised"]


def test_the_scan_finds_time_passing(
    engine: Engine, department: Department, monkeypatch: pytest.MonkeyPatch
) -> None:
    report(engine, "approaches", 60)  # 20 November: on course for 90, no alert
    assert alert_of(engine, "approaches") is None
    with transaction(engine) as session:
        findings = scan_department(session, department, dt.date(2026, 11, 26))  # 60 by the 26th: 69 %
        assert [(f.kpi.key, f.reason, f.severity) for f in findings] == [
            ("approaches", AlertReason.PACE, Severity.RED)
        ]
        changes = check_department(session, department, dt.date(2026, 11, 26))
        assert [(c.kind, c.alert.period) for c in changes] == [("raised", "2026-11")]
    # December: November is finished; its pace alert is now the month's final shortfall.
    with transaction(engine) as session:
        assert check_department(session, department, dt.date(2026, 12, 2)) == []
        november = alert_of_session(session, "approaches", "2026-11")
        assert (november.reason, november.severity, november.value) == (
            AlertReason.BELOW_TARGET,
            Severity.RED,
            Decimal(60),
        )
    # January: November and December unreported (all but `approaches` and the derived KPI).
    with transaction(engine) as session:
        changes = check_department(session, department, dt.date(2027, 1, 5))
        assert (
            sorted((c.kind, c.alert.period, c.alert.severity) for c in changes)
            == [("raised", "2026-12", Severity.MISSING)] * 2
        )  # close_rate and deals


def alert_of_session(session: Session, key: str, period: str) -> Alert:
    return session.exec(
        select(Alert).join(Kpi, col(Kpi.id) == Alert.kpi_id).where(Kpi.key == key, Alert.period == period)
    ).one()


def test_a_later_period_back_on_track_resolves_the_earlier_shortfall_for_good(
    engine: Engine, department: Department
) -> None:
    report(engine, "close_rate", 60, period="2026-10")  # October ends far below target
    october = alert_of(engine, "close_rate", "2026-10")
    assert october is not None and (october.severity, october.status) == (Severity.RED, AlertStatus.OPEN)
    report(engine, "close_rate", 96)  # November is back above amber
    resolved = alert_of(engine, "close_rate", "2026-10")
    assert resolved is not None and resolved.status is AlertStatus.RESOLVED
    # Later checks see October's shortfall again but do not reopen it while November holds.
    with transaction(engine) as session:
        assert check_department(session, department, dt.date(2026, 11, 25)) == []
    still = alert_of(engine, "close_rate", "2026-10")
    assert still is not None and still.status is AlertStatus.RESOLVED


# -- pace at pinned dates: judged from 25 % of the period ----------------------------------------------


@pytest.mark.parametrize(
    ("key", "today", "expected"),
    [
        ("2026-12", dt.date(2026, 12, 1), None),  # the 1st: nothing to project from
        ("2026-12", dt.date(2026, 12, 7), None),  # 7 of 31 days is under a quarter
        ("2026-12", dt.date(2026, 12, 8), Decimal(10) * 31 / 8),
        ("2026-12", dt.date(2026, 12, 31), Decimal(10)),  # the last day: the total itself
        ("2027-02", dt.date(2027, 2, 7), Decimal(40)),  # 7 of 28 days is exactly a quarter
        ("2028-02", dt.date(2028, 2, 7), None),  # 7 of 29 is not
        ("2028-02", dt.date(2028, 2, 8), Decimal(10) * 29 / 8),
        ("2027-03", dt.date(2027, 3, 31), Decimal(10)),
        ("2027-03", dt.date(2027, 4, 1), Decimal(10)),  # finished: the total
        ("2027-04", dt.date(2027, 4, 1), None),
        ("2026-W53", dt.date(2026, 12, 28), None),  # Monday: day 1 of 7
        ("2026-W53", dt.date(2026, 12, 29), Decimal(35)),
        ("2026-W53", dt.date(2027, 1, 1), Decimal(14)),  # the week goes on into the new year
        ("2026-W53", dt.date(2027, 1, 3), Decimal(10)),
    ],
)
def test_projection_on_pinned_days(key: str, today: dt.date, expected: Decimal | None) -> None:
    assert projected(Decimal(10), parse_key(key), today) == expected


def alerts_of(engine: Engine, key: str) -> list[tuple[str, AlertReason, Severity, Decimal | None]]:
    with transaction(engine) as session:
        rows = session.exec(
            select(Alert)
            .join(Kpi, col(Kpi.id) == Alert.kpi_id)
            .where(Kpi.key == key)
            .order_by(col(Alert.period))
        ).all()
        return [(a.period, a.reason, a.severity, a.value) for a in rows]


@pytest.mark.parametrize(
    ("day", "period", "value", "expected"),
    [
        (dt.date(2026, 12, 1), "2026-12", 1, []),
        (dt.date(2026, 12, 7), "2026-12", 1, []),
        (
            dt.date(2026, 12, 8),
            "2026-12",
            10,
            [("2026-12", AlertReason.PACE, Severity.RED, Decimal("38.75"))],
        ),
        (dt.date(2026, 12, 31), "2026-12", 85, [("2026-12", AlertReason.PACE, Severity.AMBER, Decimal(85))]),
        # The next morning December is finished: the same total is its final shortfall.
        (
            dt.date(2027, 1, 1),
            "2026-12",
            85,
            [("2026-12", AlertReason.BELOW_TARGET, Severity.AMBER, Decimal(85))],
        ),
        (dt.date(2027, 1, 1), "2027-01", 1, []),
        (dt.date(2027, 2, 7), "2027-02", 10, [("2027-02", AlertReason.PACE, Severity.RED, Decimal(40))]),
        (dt.date(2028, 2, 7), "2028-02", 10, []),
        (dt.date(2027, 3, 31), "2027-03", 60, [("2027-03", AlertReason.PACE, Severity.RED, Decimal(60))]),
        (
            dt.date(2027, 4, 1),
            "2027-03",
            60,
            [("2027-03", AlertReason.BELOW_TARGET, Severity.RED, Decimal(60))],
        ),
    ],
)
def test_a_reported_running_total_is_judged_from_a_quarter_of_the_period(
    engine: Engine,
    department: Department,
    day: dt.date,
    period: str,
    value: int,
    expected: list[tuple[str, AlertReason, Severity, Decimal | None]],
) -> None:
    set_clock(lambda: dt.datetime.combine(day, dt.time(10), tzinfo=TOKYO).astimezone(dt.UTC))
    # The month before is on target, so no missing-report streak is in the way.
    report(engine, "approaches", 100, period=parse_key(period).previous().key)
    report(engine, "approaches", value, period=period)
    assert alerts_of(engine, "approaches") == expected


def test_reports_on_any_day_are_judged_for_the_month_they_belong_to(
    any_day: dt.date, engine: Engine, department: Department
) -> None:
    # `department` pinned the clock to 20 November to seed; the reports happen on the day under test.
    set_clock(lambda: dt.datetime.combine(any_day, dt.time(10), tzinfo=TOKYO).astimezone(dt.UTC))
    month = period_of(any_day, Cadence.MONTHLY)
    for key in ("close_rate", "approaches"):
        report(engine, key, 100, period=month.previous().key)  # last month on target: no streak
    report(engine, "close_rate", 60, period=month.key)
    report(engine, "approaches", 1, period=month.key)
    # A rate is judged at once; a running total only once a quarter of the month has passed.
    assert [a[:3] for a in alerts_of(engine, "close_rate")] == [
        (month.key, AlertReason.BELOW_TARGET, Severity.RED)
    ]
    days_in_month = calendar.monthrange(any_day.year, any_day.month)[1]
    judged = any_day.day * 4 >= days_in_month
    assert [a[:3] for a in alerts_of(engine, "approaches")] == (
        [(month.key, AlertReason.PACE, Severity.RED)] if judged else []
    )
