"""Fetch runs: each sourced KPI fetched for the period in progress and the last finished one,
recorded, and a value that differs from the live one stored as a correction with its source.

    outcomes = fetch_kpis(engine, now, fetching=Fetching(env=config.environment()))

One run per (KPI, period, slot): the `fetch_run` row is inserted and committed before the fetch,
so of two schedulers (or a retried job) only the one whose insert lands fetches; the other sees
the unique key and skips. The slot is the fetch interval the tick falls in (`t…`) or the digest it
runs before (`d…`). The value goes through the one ingest path (bot.reports.batch.ingest: the
same checks, history and alert check as a value typed in Slack); an equal value stores nothing
but the run. A fetch never holds a transaction open while it waits for the source.

Each KPI's health (bot.models.FetchState) moves once per tick: failing when any of its periods
failed, good otherwise. The admins are told once when it starts failing and once when it
recovers, through the outbox (its ledger key is the transition's episode, so never twice).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot import render
from bot.clock import utcnow
from bot.database import transaction
from bot.models import Department, FetchRun, FetchState, Kpi, PostKind, Source
from bot.outbox import Key, Message, Outbox
from bot.periods import Period, period_of
from bot.reports.batch import Sender, Stored, ingest
from bot.reports.rows import Row
from bot.reports.service import Reported, plain_number
from bot.sources import freshness, registry
from bot.sources.fetching import FetchError, FetchRequest

log = logging.getLogger(__name__)

DETAIL_MAX = 500  # FetchRun.error_detail


@dataclass(frozen=True)
class Fetching:
    """How fetches run: the environment secrets come from, the retries of a transient error
    (waiting `retry_after` when the source said, else `base_delay` doubling, never more than
    `max_delay`: a longer wait is left to the next tick) and the time one fetch may take.
    `wait(seconds)` returns True when the process is stopping."""

    env: Mapping[str, str]
    attempts: int = 3
    base_delay: float = 5.0
    max_delay: float = 60.0
    timeout_s: float = 30.0
    wait: Callable[[float], bool] = field(default=lambda seconds: bool(time.sleep(seconds)))


@dataclass(frozen=True)
class RunOutcome:
    """One (KPI, period): `stored` (new value or correction), `unchanged`, `failed`, or `skipped`
    (another process has this slot)."""

    kpi_key: str
    period: str
    status: str
    value: Decimal | None = None
    error: FetchError | None = None
    saved: list[Reported] = field(default_factory=list)


def sourced_kpis(session: Session) -> list[tuple[Kpi, Department]]:
    """Every KPI the plan gives a source, with its department, in one query."""
    rows = session.exec(
        select(Kpi, Department)
        .join(Department, col(Department.id) == col(Kpi.department_id))
        .where(col(Kpi.fetch_source).is_not(None), col(Kpi.retired_at).is_(None))
        .order_by(col(Kpi.id))
    ).all()
    return [(kpi, department) for kpi, department in rows if freshness.is_sourced(kpi)]


def periods_to_fetch(kpi: Kpi, day: dt.date) -> list[Period]:
    """The period in progress, then the last finished one (late rows still land in it)."""
    current = period_of(day, kpi.cadence)
    return [current, current.previous()]


def interval_slot(kpi: Kpi, now: dt.datetime) -> str:
    """The fetch interval `now` falls in, e.g. ``t20261202T0700`` for an hourly KPI at 07:40 UTC."""
    every = freshness.every_s(kpi)
    start = int(now.timestamp()) // every * every
    return "t" + dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y%m%dT%H%M")


def request_for(kpi: Kpi, period: Period, fetching: Fetching) -> FetchRequest:
    source = kpi.fetch_source or {}
    return FetchRequest(
        kpi_key=kpi.key,
        kind=str(source.get("kind")),
        spec=registry.spec(source),
        period_start=period.start,
        period_end=period.next().start,  # half-open: the first day after the period
        timeout_s=fetching.timeout_s,
    )


def fetch_once(request: FetchRequest, fetching: Fetching) -> tuple[Decimal, int]:
    """The value and the attempts it took; FetchError (with `attempts` set) when there is none."""
    attempts = max(1, fetching.attempts)
    for attempt in range(1, attempts + 1):
        try:
            return registry.fetcher(request.kind).fetch(request, fetching.env), attempt
        except FetchError as error:
            error.attempts = attempt  # type: ignore[attr-defined]
            delay = (
                error.retry_after
                if error.retry_after is not None
                else fetching.base_delay * 2 ** (attempt - 1)
            )
            if not error.transient or attempt == attempts or delay > fetching.max_delay:
                raise
            log.info("fetch %s: %s (attempt %d/%d), retrying in %gs", request.kpi_key, error.code, attempt,
                     attempts, delay)  # fmt: skip
            if fetching.wait(delay):
                raise
        except Exception as error:  # a fetcher's bug is that KPI's failure, never the tick's
            log.exception("fetch %s: the %s fetcher failed", request.kpi_key, request.kind)
            wrapped = FetchError("bad_response", f"{type(error).__name__}: {error}", transient=False)
            wrapped.attempts = attempt  # type: ignore[attr-defined]
            raise wrapped from error
    raise AssertionError("unreachable")


def fetch_kpis(
    engine: Engine,
    now: dt.datetime,
    *,
    fetching: Fetching,
    outbox: Outbox | None = None,
    admins: Sequence[str] = (),
    locale: str = "ja",
    departments: Sequence[str] | None = None,
    slot: str | None = None,
) -> list[RunOutcome]:
    """One tick: every sourced KPI (of `departments`, if given) whose slot is not claimed yet.
    `slot` overrides the interval slot (the fetch before a digest). Never raises for one KPI."""
    with transaction(engine) as session:
        kpis = sourced_kpis(session)
    outcomes: list[RunOutcome] = []
    for kpi, department in kpis:
        if departments is not None and department.key not in departments:
            continue
        try:
            outcomes += fetch_kpi(
                engine, kpi, department, slot or interval_slot(kpi, now), now, fetching=fetching,
                outbox=outbox, admins=admins, locale=locale,
            )  # fmt: skip
        except Exception:
            log.exception("fetching %s failed", kpi.key)
    return outcomes


def fetch_kpi(
    engine: Engine,
    kpi: Kpi,
    department: Department,
    slot: str,
    now: dt.datetime,
    *,
    fetching: Fetching,
    outbox: Outbox | None = None,
    admins: Sequence[str] = (),
    locale: str = "ja",
) -> list[RunOutcome]:
    """Both periods of one KPI for one slot, then its health moved once and the admins told."""
    day = now.astimezone(ZoneInfo(department.timezone)).date()
    outcomes = [_run(engine, kpi, period, slot, fetching) for period in periods_to_fetch(kpi, day)]
    ran = [outcome for outcome in outcomes if outcome.status != "skipped"]
    if ran:
        failed = next((outcome.error for outcome in ran if outcome.error is not None), None)
        transition = _move_health(engine, kpi, failed, utcnow())
        if transition is not None and outbox is not None:
            tell_admins(outbox, kpi, department, transition, failed, admins=admins, locale=locale)
    return outcomes


def _run(engine: Engine, kpi: Kpi, period: Period, slot: str, fetching: Fetching) -> RunOutcome:
    assert kpi.id is not None
    request = request_for(kpi, period, fetching)
    try:
        with transaction(engine) as session:
            run = FetchRun(kpi_id=kpi.id, period=period.key, slot=slot, kind=request.kind, status="running")
            session.add(run)
            session.flush()
            run_id = run.id
    except IntegrityError:
        return RunOutcome(kpi.key, period.key, "skipped")
    started = time.monotonic()
    value: Decimal | None = None
    error: FetchError | None = None
    try:
        value, attempts = fetch_once(request, fetching)
    except FetchError as caught:
        error, attempts = caught, getattr(caught, "attempts", 1)
    duration_ms = int((time.monotonic() - started) * 1000)
    with transaction(engine) as session:
        run = session.get(FetchRun, run_id)
        assert run is not None
        run.attempts, run.duration_ms, run.finished_at = attempts, duration_ms, utcnow()
        saved: list[Reported] = []
        if error is None:
            assert value is not None
            error, saved = _store(session, kpi, period, value)
            if error is None:  # stored or equal to the live value: a number the column holds
                run.value = value
        if error is not None:
            run.status, run.error_code, run.error_detail = (
                "failed",
                error.code,
                error.detail[:DETAIL_MAX] or None,
            )
            log.warning("fetch %s %s: %s", kpi.key, period.key, error)
        else:
            run.status = "stored" if saved else "unchanged"
        session.add(run)
    return RunOutcome(kpi.key, period.key, run.status, value, error, saved)


def _store(
    session: Session, kpi: Kpi, period: Period, value: Decimal
) -> tuple[FetchError | None, list[Reported]]:
    """The value through the one ingest path, if the KPI still has this source."""
    current = session.get(Kpi, kpi.id)
    if current is None or not freshness.is_sourced(current) or current.fetch_source != kpi.fetch_source:
        return FetchError("removed", "the KPI's source changed while fetching", transient=False), []
    source = current.fetch_source or {}
    sender = Sender(
        reported_by=f"fetch:{source.get('kind')}"[:64],
        source=Source.FETCH,
        source_name=registry.label(source)[:64],
    )
    result = ingest(session, [Row(kpi.key, plain_number(value), period.key)], sender=sender)
    if isinstance(result, list):
        problem = result[0]
        detail = f"{problem.field}: {problem.code} ({plain_number(value)})"
        return FetchError("refused", detail, transient=False), []
    assert isinstance(result, Stored)
    return None, list(result.saved)


def _move_health(engine: Engine, kpi: Kpi, failed: FetchError | None, now: dt.datetime) -> str | None:
    """Record the tick's result; "failed" or "recovered" when the health changed (told once)."""
    try:
        return _move_health_once(engine, kpi, failed, now)
    except IntegrityError:  # another process created the KPI's first state row meanwhile: now it is there
        return _move_health_once(engine, kpi, failed, now)


def _move_health_once(engine: Engine, kpi: Kpi, failed: FetchError | None, now: dt.datetime) -> str | None:
    assert kpi.id is not None
    with transaction(engine) as session:
        state = session.exec(select(FetchState).where(FetchState.kpi_id == kpi.id).with_for_update()).first()
        if state is None:
            state = FetchState(kpi_id=kpi.id)
        state.last_run_at = now
        transition = None
        if failed is not None:
            if not state.failing:
                state.failing, state.failing_since, transition = True, now, "failed"
                state.episode += 1
            state.error_code, state.error_detail = failed.code, failed.detail[:DETAIL_MAX] or None
        else:
            state.last_good_at = now
            if state.failing:
                state.failing, state.failing_since, transition = False, None, "recovered"
                state.episode += 1
            state.error_code = state.error_detail = None
        session.add(state)
        episode = state.episode
    return f"{transition}:{episode}" if transition else None


def admin_recipients(session: Session, admins: Sequence[str]) -> list[str]:
    """KPIBOT_ADMINS by DM, else the division's channel."""
    if admins:
        return sorted(admins)
    division = session.exec(select(Department).where(Department.is_division)).first()
    return [division.channel_id] if division and division.channel_id else []


def tell_admins(
    outbox: Outbox,
    kpi: Kpi,
    department: Department,
    transition: str,
    error: FetchError | None,
    *,
    admins: Sequence[str],
    locale: str,
) -> None:
    """Once per failure and once per recovery: the outbox's key is the KPI and the episode."""
    assert department.id is not None
    what, episode = transition.split(":")
    with transaction(outbox.engine) as session:
        recipients = admin_recipients(session, admins)
    if not recipients:
        log.error("no admin to tell that fetching %s %s (set KPIBOT_ADMINS)", kpi.key, what)
        return
    params = {
        "department": department.name(locale),
        "kpi": kpi.key,
        "kpi_name": kpi.name(locale),
        "label": registry.label(kpi.fetch_source or {}),
    }
    if what == "failed":
        assert error is not None
        text = render.message(
            "sources.notice_failed",
            locale,
            error=error_text(error, locale),
            detail=error.detail or "—",
            **params,
        )
    else:
        text = render.message("sources.notice_recovered", locale, **params)
    for recipient in recipients:
        key = Key(department.id, PostKind.NOTICE, f"e{episode}", f"{kpi.id}:{recipient}")
        sent = outbox.send(key, recipient, [Message(text)])
        if sent.status == "failed":
            log.error("could not tell %s that fetching %s %s: %s", recipient, kpi.key, what, sent.error)


def error_text(error: FetchError, locale: str) -> str:
    try:
        return render.message(f"sources.fetch_error.{error.code}", locale)
    except KeyError:
        return error.code


# -- `kpibot source test` ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tried:
    """A trial fetch: the value or the error, for the period in progress."""

    kpi: Kpi
    period: Period
    value: Decimal | None
    error: FetchError | None


def try_fetch(kpi: Kpi, department: Department, now: dt.datetime, *, fetching: Fetching) -> Tried:
    """One fetch of a sourced KPI's period in progress (with the usual retries), stored nowhere."""
    period = periods_to_fetch(kpi, now.astimezone(ZoneInfo(department.timezone)).date())[0]
    try:
        value, _ = fetch_once(request_for(kpi, period, fetching), fetching)
    except FetchError as error:
        return Tried(kpi, period, None, error)
    return Tried(kpi, period, value, None)
