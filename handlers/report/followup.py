"""What happens in Slack after actuals are saved: alerts raised or resolved, countermeasure
effects shown. Called by every surface that saves actuals, after its transaction commits,
from the listener's thread (never in the ack path)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slack_sdk import WebClient

from bot.database import transaction
from bot.home.service import watchers
from bot.reports.service import Reported
from handlers.alerts import interactive as alerts
from handlers.countermeasures import interactive as countermeasures
from handlers.deps import Deps

log = logging.getLogger(__name__)


def after_reports(deps: Deps, client: WebClient, reported: Sequence[Reported]) -> None:
    """Never raises: the actuals are stored whatever Slack or a follow-up does, and the user
    has had the confirmation; each step is tried on its own, as a job's items are."""
    for item in reported:
        for step in (alerts.on_reported, countermeasures.on_reported):
            try:
                step(deps, client, item)
            except Exception:
                log.exception("follow-up %s failed for %s %s", step.__module__, item.kpi.key, item.period.key)
    try:  # the App Home of whoever sees these KPIs, debounced (handlers/home)
        with transaction(deps.engine) as session:
            users = {user for item in reported for user in watchers(session, item.kpi)}
        deps.changed([*users, *(item.recorded.actual.reported_by for item in reported)])
    except Exception:
        log.exception("refreshing App Home after %d report(s) failed", len(reported))
