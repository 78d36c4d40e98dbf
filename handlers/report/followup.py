"""What happens in Slack after actuals are saved: alerts raised or resolved, countermeasure
effects shown. Called by every surface that saves actuals, after its transaction commits,
from the listener's thread (never in the ack path)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slack_sdk import WebClient

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
    # The App Home of whoever sees these KPIs, debounced (handlers/home).
    reporters = {item.recorded.actual.reported_by for item in reported}
    deps.changed.about_kpis(deps.engine, [item.kpi.id for item in reported if item.kpi.id], *reporters)
