"""`kpibot demo`, the Slack half: alerts, a countermeasure thread and its measured effect,
posted by the production code into a PreviewClient instead of Slack."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from zoneinfo import ZoneInfo

from slack_sdk.models.views import View
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bot import clock, render
from bot.alerts.rules import check_kpi
from bot.config import Settings
from bot.countermeasures import playbooks
from bot.countermeasures import service as countermeasures
from bot.database import transaction
from bot.demo import PLAYBOOK_KPI, STORY_KPI, story_figure, story_months, story_review_day
from bot.models import Alert, AlertStatus, Department, Kpi, Source
from bot.reports.service import save
from handlers.alerts.interactive import scan_and_post, sync_alerts
from handlers.countermeasures.interactive import announce
from handlers.deps import Deps
from handlers.home.interactive import HomeRefresher
from handlers.preview_client import PreviewClient
from handlers.report.followup import after_reports
from handlers.users import UserDirectory


def alert_loop(engine: Engine, settings: Settings, *, locale: str, day: dt.date) -> PreviewClient:
    """The hourly scan on `day`, and the story (bot.demo) on finished months, so that it is whole
    on any date: the alert on the month before last, answered with a countermeasure at last month's
    first review; then last month's figure, its measured effect and the alert resolving."""
    client = PreviewClient(locale=locale)
    deps = Deps(settings=settings, engine=engine, users=UserDirectory(client))
    with transaction(engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == STORY_KPI)).first()
        department = session.get(Department, kpi.department_id) if kpi else None
    now = dt.datetime.combine(day, dt.time(10, 0), tzinfo=ZoneInfo(settings.timezone.key))
    if kpi is None or department is None or not department.head_user_id:
        scan_and_post(deps, client, now)
        return client  # another plan: alerts only
    _last_months_review(deps, client, kpi, department, department.head_user_id, locale, day)
    scan_and_post(deps, client, now)
    with _clock_at(now):
        _adopt_playbook(deps, client)
    _, recovery = story_months(day)
    with transaction(engine) as session:
        value = story_figure(session, kpi, recovery)
        if value is None:
            return client  # no target to recover to
        reported = save(
            session,
            kpi=kpi,
            department=department,
            period=recovery,
            value=value,
            user_id=kpi.owner_user_id or department.head_user_id,
            source=Source.DEMO,
        )
    after_reports(deps, client, [reported])
    return client


def _last_months_review(
    deps: Deps, client: PreviewClient, kpi: Kpi, department: Department, head: str, locale: str, day: dt.date
) -> None:
    """The shortfall's alert, and the countermeasure agreed in its thread, at last month's first review."""
    review = story_review_day(day)
    with _clock_at(dt.datetime.combine(review, dt.time(10, 0), tzinfo=ZoneInfo(department.timezone))):
        with transaction(deps.engine) as session:
            check_kpi(session, kpi, department, review)
        sync_alerts(deps, client, kpi_ids=[kpi.id] if kpi.id is not None else [])
        due = (review + dt.timedelta(days=14)).isoformat()
        text = render.message("demo.countermeasure", locale)
        with transaction(deps.engine) as session:
            draft = countermeasures.from_command(
                session,
                text=f"{kpi.key} {text} <@{kpi.owner_user_id or head}> {due}",
                user_id=head,
                is_admin=lambda: False,
            )
            logged = countermeasures.log(session, draft, logged_by=head, source="demo")
        announce(deps, client, logged, draft.kpi, draft.department)


def _adopt_playbook(deps: Deps, client: PreviewClient) -> None:
    """The streak alert on PLAYBOOK_KPI: its department head clicks Adopt on the first countermeasure
    agreed in the plan (what the button does: bot.countermeasures.playbooks.adopt, then announce)."""
    with transaction(deps.engine) as session:
        alert = session.exec(
            select(Alert)
            .join(Kpi, col(Kpi.id) == Alert.kpi_id)
            .where(
                Kpi.key == PLAYBOOK_KPI,
                col(Alert.thread_ts).is_not(None),
                Alert.status != AlertStatus.RESOLVED,
            )
            .order_by(col(Alert.period).desc())
        ).first()
        found = None if alert is None or alert.id is None else playbooks.find(session, alert.id, 0)
        if alert is None or alert.id is None or found is None or not found[0].department.head_user_id:
            return
        target = found[0]
        adopted = playbooks.adopt(
            session,
            alert_id=alert.id,
            index=0,
            user_id=target.department.head_user_id,
            is_admin=lambda: False,
        )
    if adopted.outcome == "adopted" and adopted.countermeasure is not None:
        announce(deps, client, adopted.countermeasure, target.kpi, target.department)


def home_tab(
    engine: Engine, settings: Settings, client: PreviewClient, *, locale: str
) -> tuple[str, View] | None:
    """The story department head's App Home after the demo (handlers/home), for the preview."""
    with transaction(engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == STORY_KPI)).first()
        department = session.get(Department, kpi.department_id) if kpi else None
    if department is None or not department.head_user_id:
        return None
    deps = Deps(settings=settings, engine=engine, users=UserDirectory(client))
    refresher = HomeRefresher(deps, client, ThreadPoolExecutor(max_workers=1))
    return department.head_user_id, refresher.view_for(department.head_user_id, locale)


@contextmanager
def _clock_at(moment: dt.datetime) -> Iterator[None]:
    """Everything that asks the time (alerts, countermeasures, their due dates) asks bot.clock."""
    # bot.clock has no getter: the caller's clock (a test's, or real time) is put back as it was.
    previous = clock._now
    clock.set_clock(lambda: moment)
    try:
        yield
    finally:
        clock.set_clock(previous)
