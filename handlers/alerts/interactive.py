"""The alerts' Slack surface: the "Acknowledge" button, and the edge's bindings of the alert
flows (bot/alerts/flows.py) to Slack: the Slack poster and this surface's messages.

("Log countermeasure" belongs to handlers/countermeasures/interactive.py.)
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from sqlalchemy.engine import Engine

from bot import render
from bot.alerts import flows
from bot.alerts import service as alerts
from bot.alerts.flows import ScanResult, SyncResult
from bot.countermeasures import playbooks
from bot.countermeasures.service import today_for
from bot.funnel import flows as funnel
from bot.models import Alert, AlertStatus
from bot.outbox import Outbox
from bot.reports.service import Reported
from bot.schedule.jobs import hourly_scan
from handlers.alerts import messages
from handlers.alerts.messages import ACTION_ACKNOWLEDGE, ACTION_ADOPT, ACTION_ADOPT_EDIT
from handlers.countermeasures import interactive as countermeasures
from handlers.deps import Deps
from handlers.poster import SlackPoster
from handlers.work import tell, unit_of_work

log = logging.getLogger(__name__)


def _engine(target: Deps | Engine) -> Engine:
    return target.engine if isinstance(target, Deps) else target


def on_reported(deps: Deps, client: WebClient, reported: Reported) -> None:
    """Show in Slack what a report did to the KPI's alerts (and its derived KPIs'), and to the
    funnel's alerts when the KPI is a stage (a correction that closes a leak)."""
    poster = SlackPoster(client)
    flows.after_report(deps.engine, poster, messages, reported.kpi)
    funnel.close_leaks(Outbox(deps.engine, poster), messages, kpi_id=reported.kpi.id)


def scan_and_post(
    target: Deps | Engine,
    client: WebClient | None,
    now: dt.datetime | None = None,
    *,
    dry_run: bool = False,
    department_key: str | None = None,
) -> ScanResult:
    """The hourly scan (bot.schedule.jobs.hourly_scan, as the scheduler runs it), posting through
    `client` unless None."""
    poster = None if client is None else SlackPoster(client)
    return hourly_scan(_engine(target), poster, messages, now, dry_run=dry_run, department_key=department_key)


def sync_alerts(
    target: Deps | Engine,
    client: WebClient,
    *,
    alert_ids: Collection[int] | None = None,
    kpi_ids: Collection[int] | None = None,
    department_id: int | None = None,
) -> SyncResult:
    """Make Slack show the alerts selected (bot.alerts.flows.sync_alerts)."""
    return flows.sync_alerts(
        _engine(target),
        SlackPoster(client),
        messages,
        alert_ids=alert_ids,
        kpi_ids=kpi_ids,
        department_id=department_id,
    )


def register(app: App, deps: Deps) -> None:
    @app.action(ACTION_ACKNOWLEDGE)
    def acknowledge_clicked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        user_id = body["user"]["id"]
        try:
            alert_id = int(body["actions"][0]["value"])
        except (KeyError, IndexError, TypeError, ValueError):
            log.warning("alert_acknowledge without an alert id from %s", user_id)
            return
        with unit_of_work(deps.engine) as session:
            outcome = alerts.acknowledge(
                session, alert_id=alert_id, user_id=user_id, is_admin=deps.admin_check(user_id)
            )
        if outcome.won:
            sync_alerts(deps, client, alert_ids=[alert_id])
            if outcome.alert is not None:  # the Home tabs listing it (handlers/home)
                deps.changed.about_kpis(deps.engine, [outcome.alert.kpi_id], user_id)
            return
        locale = deps.locale_for(user_id, outcome.department)
        alert = outcome.alert
        if alert is None:
            text = render.message("alert.gone", locale)
        elif not outcome.allowed:
            department = outcome.department
            assert department is not None
            text = render.message(
                "alert.acknowledge_not_allowed", locale, department=department, head=department.head_user_id
            )
        elif alert.status is AlertStatus.RESOLVED:
            text = render.message("alert.already_resolved", locale)
        else:
            text = render.message("alert.already_acknowledged", locale, user=alert.acknowledged_by)
        tell(client, body, text)

    @app.action(ACTION_ADOPT)
    def adopt_clicked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        user_id = body["user"]["id"]
        chosen = _playbook_value(body)
        if chosen is None:
            log.warning("alert_adopt_playbook without a valid value from %s", user_id)
            return
        with unit_of_work(deps.engine) as session:
            adopted = playbooks.adopt(
                session,
                alert_id=chosen[0],
                index=chosen[1],
                user_id=user_id,
                is_admin=deps.admin_check(user_id),
            )
        target = adopted.target
        locale = deps.locale_for(user_id, None if target is None else target.department)
        if adopted.outcome == "adopted":
            assert target is not None and adopted.countermeasure is not None
            countermeasures.announce(deps, client, adopted.countermeasure, target.kpi, target.department)
            return
        tell(client, body, _adopt_refusal(adopted, locale))

    @app.action(ACTION_ADOPT_EDIT)
    def adopt_edit_clicked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        user_id = body["user"]["id"]
        chosen = _playbook_value(body)
        if chosen is None:
            log.warning("alert_adopt_playbook_edit without a valid value from %s", user_id)
            return
        with unit_of_work(deps.engine) as session:
            found = playbooks.find(session, *chosen)
        if found is None:
            tell(client, body, render.message("alert.playbook.gone", deps.locale_for(user_id)))
            return
        target, book = found
        countermeasures.open_form(
            deps,
            client,
            trigger_id=body["trigger_id"],
            user_id=user_id,
            find=lambda session: session.get(Alert, chosen[0]),
            missing="countermeasure.alert_gone",
            answer=lambda text, _thread_ts: tell(client, body, text),
            prefill=book.text_for(target.department.locale),
            owner=book.owner_for(target.kpi),
            due=book.due(today_for(target.department)),
        )


def _playbook_value(body: dict[str, Any]) -> tuple[int, int] | None:
    """The button's "<alert id>:<playbook index>"."""
    try:
        alert_id, index = str(body["actions"][0]["value"]).split(":")
        return int(alert_id), int(index)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _adopt_refusal(adopted: playbooks.Adopted, locale: str) -> str:
    if adopted.outcome == "already":
        by = None if adopted.countermeasure is None else adopted.countermeasure.logged_by
        return render.message("alert.playbook.already", locale, by=by)
    if adopted.outcome == "not_allowed":
        assert adopted.target is not None
        department = adopted.target.department
        return render.message(
            "alert.playbook.not_allowed", locale, department=department, head=department.head_user_id
        )
    return render.message("alert.playbook.gone", locale)
