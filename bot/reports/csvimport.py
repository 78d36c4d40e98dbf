"""Actuals from a CSV file a person sends in Slack: every row checked by the push API's rules
(bot.reports.batch) and by that person's permission (bot.permissions.can_report), a preview
(new values, corrections with before → after, every problem with its row), then all stored in
one transaction. Excel's files read as the push API reads them (bot.reports.rows: UTF-8 with or
without BOM, Shift_JIS/CP932, CRLF). Nothing here commits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlmodel import Session

from bot.models import Source
from bot.permissions import can_report
from bot.reports import rows as rowlib
from bot.reports.actuals import live_values
from bot.reports.batch import Sender, Stored, check_rows, ingest
from bot.reports.rows import Problem
from bot.reports.service import CheckedReport

MAX_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Preview:
    new: list[CheckedReport]
    corrections: list[tuple[CheckedReport, Decimal]]  # with the live value it replaces
    unchanged: list[CheckedReport]
    problems: list[Problem]

    @property
    def savable(self) -> bool:
        return not self.problems and bool(self.new or self.corrections)


def _sender(user_id: str, is_admin: Callable[[], bool]) -> Sender:
    return Sender(
        reported_by=user_id,
        source=Source.CSV,
        may_write=lambda kpi, department: can_report(kpi, department, user_id, is_admin),
        scope_code="not_yours",
    )


def read(body: bytes) -> rowlib.Parsed:
    """The rows of the file; rowlib.FormatError when it cannot be read as a CSV of actuals."""
    if len(body) > MAX_BYTES:
        raise rowlib.FormatError("file_too_large", limit_mb=MAX_BYTES // (1024 * 1024))
    return rowlib.from_csv(body)


def preview(session: Session, body: bytes, *, user_id: str, is_admin: Callable[[], bool]) -> Preview:
    parsed = read(body)
    checked, problems = check_rows(session, parsed.rows, sender=_sender(user_id, is_admin))
    problems = sorted([*parsed.problems, *problems], key=lambda problem: problem.row)
    live = live_values(
        session, [item.kpi.id for item in checked if item.kpi.id], {i.period.key for i in checked}
    )
    new, corrections, unchanged = [], [], []
    for item in checked:
        before = live.get((item.kpi.id or 0, item.period.key))
        if before is None:
            new.append(item)
        elif before == item.value:
            unchanged.append(item)
        else:
            corrections.append((item, before))
    return Preview(new, corrections, unchanged, problems)


def save(
    session: Session, body: bytes, *, user_id: str, is_admin: Callable[[], bool]
) -> Stored | list[Problem]:
    """All rows or none, in the caller's transaction; the problems when any row is refused now."""
    parsed = read(body)
    if parsed.problems:
        return parsed.problems
    return ingest(session, parsed.rows, sender=_sender(user_id, is_admin))
