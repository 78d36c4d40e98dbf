"""Who may do what. Plain rules; the caller finds out whether the user is an admin."""

from __future__ import annotations

from collections.abc import Callable, Collection

from bot.models import Department, Kpi


def can_report(kpi: Kpi, department: Department, user_id: str, is_admin: Callable[[], bool]) -> bool:
    """The KPI's owner, the department head, or an admin (asked last: it may cost an API call)."""
    return user_id in (kpi.owner_user_id, department.head_user_id) or is_admin()


def is_member(
    department: Department, kpi_owners: Collection[str | None], user_id: str, is_admin: Callable[[], bool]
) -> bool:
    """A member of a department for its countermeasures and reviews: its head, the owner of one of
    its KPIs (`kpi_owners`), or an admin (asked last)."""
    return user_id == department.head_user_id or user_id in kpi_owners or is_admin()
