"""What every listener needs, built once by the app factory."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bot.config import Settings
from bot.database import transaction
from bot.home.service import watchers_of
from bot.models import Department
from handlers.users import UserDirectory

log = logging.getLogger(__name__)


class Changes:
    """Whom a change concerns (their App Home shows it): surfaces call it, handlers/home listens."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[Iterable[str | None]], None]] = []

    def listen(self, listener: Callable[[Iterable[str | None]], None]) -> None:
        self._listeners.append(listener)

    def __call__(self, users: Iterable[str | None]) -> None:
        users = list(users)
        for listener in self._listeners:
            listener(users)

    def about_kpis(self, engine: Engine, kpi_ids: Iterable[int], *users: str | None) -> None:
        """A change to these KPIs: whoever's Home shows them (bot.home.service.watchers), and
        `users` besides. Never raises: the change is made whether or not a Home tab follows."""
        if not self._listeners:
            return
        try:
            with transaction(engine) as session:
                seen = {user for kpi_id in set(kpi_ids) for user in watchers_of(session, kpi_id)}
            self([*seen, *users])
        except Exception:
            log.exception("telling App Home of a change to KPIs %s failed", sorted(set(kpi_ids)))


@dataclass(frozen=True)
class Deps:
    settings: Settings
    engine: Engine
    users: UserDirectory
    changed: Changes = field(default_factory=Changes)

    def locale_for(self, user_id: str, department: Department | None = None) -> str:
        """The user's Slack language if we speak it, else the department's, else the default."""
        profile = self.users.profile(user_id)
        if profile.locale:
            return profile.locale
        if department is not None:
            return department.locale
        return self.settings.locale

    def is_admin(self, user_id: str) -> bool:
        return self.users.profile(user_id).is_admin

    def admin_check(self, user_id: str) -> Callable[[], bool]:
        """`is_admin` for the rules in bot/ (bot.permissions), asked only when a rule needs it
        (it may cost a users.info call) and at most once per request."""
        return functools.cache(functools.partial(self.is_admin, user_id))


def department_of_channel(session: Session, channel_id: str | None) -> Department | None:
    if not channel_id:
        return None
    return session.exec(select(Department).where(Department.channel_id == channel_id)).first()
