"""`kpibot demo`, the Slack half: alerts, a countermeasure thread and its measured effect,
posted by the production code into a PreviewClient instead of Slack."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import select

from bot import countermeasures, render
from bot.config import Settings
from bot.database import transaction
from bot.models import Cadence, Department, Kpi, Source
from bot.periods import period_of
from bot.reporting import save
from handlers.alerts import scan_and_post
from handlers.countermeasures import announce
from handlers.deps import Deps
from handlers.followup import after_reports
from handlers.preview_client import PreviewClient
from handlers.users import UserDirectory

# The story the demo tells, on the example plan: MQLs fell to 64 % of target in October;
# Marketing's head logs a countermeasure in the alert's thread; November recovers.
STORY_KPI = "mqls"
STORY_RECOVERY = Decimal(186)


def alert_loop(engine: Engine, settings: Settings, *, locale: str, day: dt.date) -> PreviewClient:
    client = PreviewClient(locale=locale)
    deps = Deps(settings=settings, engine=engine, users=UserDirectory(client))
    with transaction(engine) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == STORY_KPI)).first()
        department = session.get(Department, kpi.department_id) if kpi else None
    now = dt.datetime.combine(day, dt.time(10, 0), tzinfo=ZoneInfo(settings.timezone.key))
    scan_and_post(deps, client, now)
    if kpi is None or department is None or not department.head_user_id:
        return client  # another plan: alerts only
    head = department.head_user_id
    due = (day + dt.timedelta(days=14)).isoformat()
    text = render.message("demo.countermeasure", locale)
    with transaction(engine) as session:
        draft = countermeasures.from_command(
            session,
            text=f"{kpi.key} {text} <@{kpi.owner_user_id or head}> {due}",
            user_id=head,
            is_admin=lambda: False,
        )
        logged = countermeasures.log(session, draft, logged_by=head, source="demo")
    announce(deps, client, logged, draft.kpi, draft.department)
    with transaction(engine) as session:
        reported = save(
            session,
            kpi=draft.kpi,
            department=draft.department,
            period=period_of(day, Cadence.MONTHLY),
            value=STORY_RECOVERY,
            user_id=kpi.owner_user_id or head,
            source=Source.DEMO,
        )
    after_reports(deps, client, [reported])
    return client
