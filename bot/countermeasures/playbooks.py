"""Playbooks: countermeasures a team agreed in advance for when a KPI is amber or red (the plan's
`playbook:` on a KPI). An alert offers them; **Adopt** logs one in one click, with the playbook's
owner (else the KPI's) and a due date `due_days` from today. Adopted once per alert and playbook,
however many clicks (the key is committed with the countermeasure); only the department's members
may. Plain functions over a session; no Slack.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from bot.config import LOCALES
from bot.countermeasures.service import Draft, Target, log, may_log, target_of_alert, today_for
from bot.idempotency import first_time
from bot.models import Alert, AlertStatus, Countermeasure, Kpi

DEFAULT_DUE_DAYS = 14


@dataclass(frozen=True)
class Playbook:
    texts: dict[str, str]  # by locale: the plan's `text`, one string or `{ja: …, en: …}`
    owner_user_id: str | None
    due_days: int

    def text_for(self, locale: str) -> str:
        """In the department's language, else the one language it was written in."""
        return self.texts.get(locale) or next(iter(self.texts.values()))

    def owner_for(self, kpi: Kpi) -> str | None:
        return self.owner_user_id or kpi.owner_user_id

    def due(self, today: dt.date) -> dt.date:
        return today + dt.timedelta(days=self.due_days)


def _texts(text: Any) -> dict[str, str]:
    if isinstance(text, dict):
        return {str(locale): str(value) for locale, value in text.items() if value}
    return {locale: str(text) for locale in LOCALES} if text else {}


def playbooks_of(kpi: Kpi) -> list[Playbook]:
    entries: list[dict[str, Any]] = list(kpi.playbooks or [])
    return [
        Playbook(texts, entry.get("owner"), int(entry.get("due_days") or DEFAULT_DUE_DAYS))
        for entry in entries
        if (texts := _texts(entry.get("text")))
    ]


def adopt_key(alert_id: int, index: int) -> str:
    return f"playbook:{alert_id}:{index}"


@dataclass(frozen=True)
class Adopted:
    """What a click did: "adopted" (this click logged it), "already" (a click before did),
    "not_allowed" (not a member of the department), "gone" (no such alert or playbook)."""

    outcome: str
    target: Target | None = None
    playbook: Playbook | None = None
    countermeasure: Countermeasure | None = None


def find(session: Session, alert_id: int, index: int) -> tuple[Target, Playbook] | None:
    """The alert (with its KPI and department) and its KPI's playbook `index`, if both exist."""
    target = target_of_alert(session, session.get(Alert, alert_id))
    if target is None or target.alert is None or target.alert.status is AlertStatus.RESOLVED:
        return None
    playbooks = playbooks_of(target.kpi)
    if not 0 <= index < len(playbooks):
        return None
    return target, playbooks[index]


def adopt(
    session: Session, *, alert_id: int, index: int, user_id: str, is_admin: Callable[[], bool]
) -> Adopted:
    """Log playbook `index` of the alert's KPI as a countermeasure on the alert, once."""
    found = find(session, alert_id, index)
    if found is None:
        return Adopted("gone")
    target, playbook = found
    if not may_log(session, target.department, user_id, is_admin):
        return Adopted("not_allowed", target, playbook)
    if not first_time(session, adopt_key(alert_id, index)):
        return Adopted("already", target, playbook, adopted_before(session, alert_id, playbook))
    draft = Draft(
        target.kpi,
        target.department,
        target.alert,
        playbook.text_for(target.department.locale),
        playbook.owner_for(target.kpi) or user_id,
        playbook.due(today_for(target.department)),
    )
    countermeasure = log(session, draft, logged_by=user_id, source="playbook")
    return Adopted("adopted", target, playbook, countermeasure)


def adopted_before(session: Session, alert_id: int, playbook: Playbook) -> Countermeasure | None:
    return session.exec(
        select(Countermeasure)
        .where(
            Countermeasure.alert_id == alert_id, col(Countermeasure.text).in_(set(playbook.texts.values()))
        )
        .order_by(col(Countermeasure.id))
    ).first()
