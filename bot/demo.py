"""`kpibot demo`: the example plan and a simulated quarter, with no Slack account needed."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bot.alerts import service as alerts
from bot.database import transaction
from bot.models import Cadence, Department, Goal, Kpi, Source, Unit
from bot.periods import Period, fiscal_year, fiscal_year_bounds, period_of
from bot.plan.service import apply_plan, load_plan
from bot.reports.actuals import record_actual
from bot.resources import EXAMPLE_FETCHED, EXAMPLE_FUNNEL, EXAMPLE_PLAN
from bot.scorecard import reviewed_period, targets_for
from bot.sources import runs, sql

WEEKS = 13


@dataclass(frozen=True)
class Drift:
    """Where a KPI starts and ends the quarter, as a multiple of its target."""

    start: float
    end: float
    noise: float = 0.04


# A plausible quarter for the example plan: most KPIs near target, a few sliding off it.
DRIFTS = {
    "mqls": Drift(1.05, 0.72),
    "sqls": Drift(1.00, 0.70),
    "cost_per_lead": Drift(0.95, 1.25),
    "churn_rate": Drift(0.90, 1.60, 0.03),
    "close_rate": Drift(1.10, 0.93, 0.02),
    "website_visits": Drift(1.00, 1.08, 0.06),
    "nps": Drift(1.10, 1.00, 0.05),
    "retention_rate": Drift(1.02, 1.01, 0.004),
    "revenue": Drift(1.00, 0.88, 0.05),
    # Deals keep coming but fewer close, three months running: the deals → won hand-off leaks and
    # deals won raise a streak alert (its playbook is adopted from the alert, handlers/demo.py).
    "won_deals": Drift(0.8, 0.55, 0.02),
}
DEFAULT_DRIFT = Drift(1.02, 1.00)

# The story the demo tells (handlers/demo.py), on finished months only so that it holds on any
# date: MQLs fall to 64 % of target in the month before last; at the first review of last month
# Marketing's head logs a countermeasure; last month's figure then arrives at 93 % of target. The
# month in progress would not do: a running total is not judged before a quarter of it has passed.
STORY_KPI = "mqls"
STORY_RECOVERY = Decimal("0.93")  # of the recovery month's target
# The streak alert whose agreed countermeasure the division adopts in one click (handlers/demo.py).
PLAYBOOK_KPI = "won_deals"


def simulated_periods(cadence: Cadence, today: dt.date) -> list[Period]:
    """The quarter before `today`: 13 finished weeks, or the 3 finished months."""
    last = reviewed_period(cadence, today)
    return last.last(WEEKS if cadence is Cadence.WEEKLY else 3)


def story_months(today: dt.date) -> tuple[Period, Period]:
    """The story's shortfall (the month before last) and recovery (last month, judged in full)."""
    recovery = reviewed_period(Cadence.MONTHLY, today)
    return recovery.previous(), recovery


def story_review_day(today: dt.date) -> dt.date:
    """When the shortfall is reviewed and the countermeasure logged: the recovery month's first
    Monday (digests go out on Mondays), so the recovery is measured after the countermeasure."""
    start = story_months(today)[1].start
    return start + dt.timedelta(days=-start.weekday() % 7)


def story_figure(session: Session, kpi: Kpi, period: Period) -> Decimal | None:
    """The recovery the story reports: STORY_RECOVERY of the month's target (None without one)."""
    assert kpi.id is not None
    target = targets_for(session, [kpi.id], {period.key}).get((kpi.id, period.key))
    if target is None:
        return None
    return _rounded(target.reference(kpi.direction) * STORY_RECOVERY, kpi.unit)


def fiscal_year_so_far(today: dt.date, start_month: int = 4) -> list[Period]:
    """Every finished month of the current fiscal year: the KGI's measure needs them all."""
    last = reviewed_period(Cadence.MONTHLY, today)
    first = period_of(fiscal_year_bounds(fiscal_year(today, start_month), start_month)[0], Cadence.MONTHLY)
    return [p for p in last.last(12) if p >= first]


def simulate_quarter(session: Session, today: dt.date, seed: int = 2026) -> int:
    """Report plausible actuals for every non-derived KPI; returns how many were stored.

    The story KPI's quarter ends with the shortfall month: last month's figure is the story's."""
    rng = random.Random(seed)
    kpis = session.exec(select(Kpi).where(col(Kpi.formula).is_(None)).order_by(col(Kpi.id))).all()
    periods = {cadence: simulated_periods(cadence, today) for cadence in Cadence}
    story = [month.previous() for month in periods[Cadence.MONTHLY]]
    measures = set(session.exec(select(Goal.kpi_id).where(col(Goal.kpi_id).is_not(None))).all())
    # The KGI's measure needs the fiscal year so far, and the quarter too: on 1 April the new
    # fiscal year has no finished month, but the digest still reviews March.
    year_so_far = sorted({*fiscal_year_so_far(today, _fiscal_year_start(session)), *periods[Cadence.MONTHLY]})
    targets = targets_for(
        session,
        [k.id for k in kpis if k.id is not None],
        {p.key for ps in [*periods.values(), year_so_far, story] for p in ps},
    )
    stored = 0
    for kpi in kpis:
        drift = DRIFTS.get(kpi.key, DEFAULT_DRIFT)
        if kpi.id in measures:
            window = year_so_far
        elif kpi.key == STORY_KPI and kpi.cadence is Cadence.MONTHLY:
            window = story
        else:
            window = periods[kpi.cadence]
        for index, period in enumerate(window):
            target = targets.get((kpi.id, period.key))  # type: ignore[arg-type]
            if target is None:
                continue
            progress = index / max(1, len(window) - 1)
            factor = drift.start + (drift.end - drift.start) * progress + rng.gauss(0, drift.noise)
            value = _rounded(target.reference(kpi.direction) * Decimal(str(factor)), kpi.unit)
            recorded = record_actual(
                session,
                kpi=kpi,
                period=period.key,
                value=max(value, Decimal(0)),
                reported_by=kpi.owner_user_id or "demo",
                source=Source.DEMO,
            )
            # As a report does: the demo's alerts are the ones its story's figures raise.
            alerts.check_after_report(session, kpi, recorded)
            stored += 1
    return stored


def _fiscal_year_start(session: Session) -> int:
    """The division's first month of the fiscal year, which the digests' KGI progress counts from."""
    division = session.exec(select(Department).where(col(Department.is_division))).first()
    return division.fiscal_year_start_month if division else 4


def _rounded(value: Decimal, unit: Unit) -> Decimal:
    places = {Unit.PERCENT: Decimal("0.1"), Unit.JPY: Decimal("100"), Unit.USD: Decimal("0.01")}
    quantum = places.get(unit, Decimal(1))
    return (value / quantum).quantize(Decimal(1), rounding=ROUND_HALF_UP) * quantum


def prepare_demo(engine: Engine, *, today: dt.date, locale: str, plan_path: Path = EXAMPLE_PLAN) -> None:
    """Import the plan and simulate a quarter of actuals, in one transaction. Every department
    speaks the demo's language, so what it shows reads in one language, and the KGI is the
    current fiscal year's, so the digests show its progress whatever the date."""
    with transaction(engine) as session:
        apply_plan(session, load_plan(plan_path, session), actor="demo")
        if plan_path == EXAMPLE_PLAN:  # the seed's funnel, which the example plan ships beside it
            apply_plan(session, load_plan(EXAMPLE_FUNNEL, session), actor="demo")
        for department in session.exec(select(Department)).all():
            department.locale = locale
            session.add(department)
        for goal in session.exec(select(Goal)).all():
            goal.fiscal_year = fiscal_year(today, _fiscal_year_start(session))
            session.add(goal)
        simulate_quarter(session, today)


# The demo's "warehouse": a table kept beside kpibot's own (not in its models or migrations), the
# way a CRM export would sit in a reporting database.
_WAREHOUSE = sa.MetaData()
INQUIRIES = sa.Table(
    "crm_inquiries",
    _WAREHOUSE,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("received_on", sa.Date, nullable=False, index=True),
)
FETCHED_CONNECTION = "DEMO"


def prepare_fetched(
    engine: Engine, *, today: dt.date, dsn: str, timezone: str, seed: int = 2026
) -> list[runs.RunOutcome]:
    """`kpibot demo --fetched`: fill the warehouse table with a few inquiries a day since the
    quarter before, import the KPI that counts them (examples/demo-fetched.yaml), then fetch it as
    the scheduler would: the period in progress and the last finished one, stored with source
    `fetch`, so the digest shows where the figure came from."""
    rng = random.Random(seed)
    first = period_of(today, Cadence.MONTHLY).previous().previous().previous().start
    days = [first + dt.timedelta(days=n) for n in range((today - first).days + 1)]
    _WAREHOUSE.drop_all(engine)
    _WAREHOUSE.create_all(engine)
    with engine.begin() as connection:
        rows = [{"received_on": day} for day in days for _ in range(rng.randint(7, 12))]
        connection.execute(INQUIRIES.insert(), rows)
    with transaction(engine) as session:
        apply_plan(session, load_plan(EXAMPLE_FETCHED, session), actor="demo")
    now = dt.datetime.combine(today, dt.time(9, 0), tzinfo=ZoneInfo(timezone)).astimezone(dt.UTC)
    env = {sql.env_name(FETCHED_CONNECTION): dsn}
    return runs.fetch_kpis(engine, now, fetching=runs.Fetching(env=env, attempts=1))
