"""A batch of actuals from another system (the push API now; CSV in Slack and HubSpot next):
every row checked by the same rules as a value typed in Slack, then all stored or none.

    result = ingest(session, rows, sender=Sender(...))
    if isinstance(result, list): ...   # every Problem, by row and field; nothing was written
    else: ...                          # Stored: new values, corrections, unchanged

Nothing here commits: the caller's transaction holds the values, their history, the alerts
they move (as `save` does for a Slack report) and, for the API, the idempotency key. After the
commit the caller runs the follow-ups in Slack with `Stored.saved`, as the report surfaces do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlmodel import Session

from bot.clock import today
from bot.models import Department, Kpi, Source
from bot.reports.rows import MAX_ROWS, Problem, Row
from bot.reports.service import (
    CheckedReport,
    ReportError,
    all_kpis,
    check_note,
    check_period,
    check_value,
    find_kpi,
    save_reports,
)
from bot.text import clean_text


def _today_in(department: Department) -> dt.date:
    return today(ZoneInfo(department.timezone))


EXTERNAL_ID_MAX = 200
KPI_TEXT_MAX = 200


@dataclass(frozen=True)
class Sender:
    """Who or what sent a batch: stored with every value as its provenance."""

    reported_by: str  # Actual.reported_by: a Slack user id, or "source:<name>"
    source: Source  # API, CSV, HUBSPOT
    source_name: str | None = None
    # Whether it may write a KPI; refused rows get `scope_code`.
    may_write: Callable[[Kpi, Department], bool] = field(default=lambda kpi, department: True)
    scope_code: str = "out_of_scope"


@dataclass(frozen=True)
class Stored:
    saved: list  # list[Reported]: new values and corrections, in KPI and period order
    unchanged: list[CheckedReport]  # equal to the live value, not stored again

    @property
    def created(self) -> int:
        return sum(1 for item in self.saved if not item.recorded.is_correction)

    @property
    def corrected(self) -> int:
        return sum(1 for item in self.saved if item.recorded.is_correction)


def check_rows(
    session: Session, rows: Sequence[Row], *, sender: Sender
) -> tuple[list[CheckedReport], list[Problem]]:
    """Every row checked, nothing stored; every problem of every row returned together."""
    if len(rows) > MAX_ROWS:
        return [], [Problem(0, "actuals", "too_many_rows", {"count": len(rows), "max": MAX_ROWS})]
    everything = all_kpis(session)  # one query for the whole batch
    by_key = {kpi.key: (kpi, department) for kpi, department in everything}
    checked: list[CheckedReport] = []
    problems: list[Problem] = []
    seen: dict[tuple[int, str], int] = {}
    for number, row in enumerate(rows, start=1):
        item = _check_row(number, row, by_key, everything, sender, problems)
        if item is None:
            continue
        assert item.kpi.id is not None
        slot = (item.kpi.id, item.period.key)
        if slot in seen:
            problems.append(
                Problem(number, "period", "duplicate_row", {"first": seen[slot], "period": item.period.key})
            )
            continue
        seen[slot] = number
        checked.append(item)
    return checked, problems


def _check_row(
    number: int,
    row: Row,
    by_key: dict[str, tuple[Kpi, Department]],
    everything: list[tuple[Kpi, Department]],
    sender: Sender,
    problems: list[Problem],
) -> CheckedReport | None:
    before = len(problems)
    # Before anything reaches a query: PostgreSQL refuses NUL in text.
    for name in ("kpi", "period", "value", "external_id"):
        text = getattr(row, name)
        if text is not None and clean_text(text).removed:
            problems.append(Problem(number, name, "control_characters"))
    if row.external_id is not None and len(row.external_id) > EXTERNAL_ID_MAX:
        problems.append(Problem(number, "external_id", "too_long", {"max": EXTERNAL_ID_MAX}))
    if len(row.kpi) > KPI_TEXT_MAX:
        problems.append(Problem(number, "kpi", "too_long", {"max": KPI_TEXT_MAX}))
    if len(problems) > before:
        return None
    try:
        kpi, department = by_key.get(row.kpi.strip().lower()) or find_kpi(everything, row.kpi, everything)
    except ReportError as error:
        problems.append(_problem(number, "kpi", error))
        return None
    if kpi.formula:
        problems.append(_problem(number, "kpi", ReportError("derived_kpi", kpi=kpi, formula=kpi.formula)))
        return None
    if not sender.may_write(kpi, department):
        problems.append(Problem(number, "kpi", sender.scope_code, {"kpi": kpi.key}))
        return None
    checks: list[tuple[str, Callable[[], object]]] = [
        ("value", lambda: check_value(row.value.strip(), kpi)),
        ("period", lambda: check_period(row.period, kpi, _today_in(department))),
        ("note", lambda: check_note(row.note)),
    ]
    results: dict[str, object] = {}
    for name, check in checks:
        try:
            results[name] = check()
        except ReportError as error:
            problems.append(_problem(number, name, error))
    if len(problems) > before:
        return None
    return CheckedReport(
        kpi,
        department,
        results["period"],  # type: ignore[arg-type]
        results["value"],  # type: ignore[arg-type]
        note=results["note"],  # type: ignore[arg-type]
        external_id=row.external_id.strip() if row.external_id else None,
    )


def _problem(number: int, name: str, error: ReportError) -> Problem:
    return Problem(number, name, error.code, {**error.params, "from_report": True})


def ingest(session: Session, rows: Sequence[Row], *, sender: Sender) -> list[Problem] | Stored:
    """Check every row; if all pass, store them in the caller's transaction (all or nothing)."""
    checked, problems = check_rows(session, rows, sender=sender)
    if problems:
        return problems
    result = save_reports(
        session, checked, user_id=sender.reported_by, source=sender.source, source_name=sender.source_name
    )
    return Stored(result.saved, result.unchanged)


__all__ = ["Problem", "Row", "Sender", "Stored", "check_rows", "ingest"]
