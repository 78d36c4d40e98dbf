"""Reports for the same KPI and period at the same moment: every one stored, in the order committed.

Real databases, real threads, each writer in its own session and transaction through the storage
path the bot uses (`bot.reports.service.save`), and the same over signed HTTP with `/kpi report`.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bot.clock import set_clock
from bot.database import make_engine, transaction
from bot.models import Actual, AuditEvent, Kpi, Source
from bot.reports.service import check_period, kpi_by_key, save
from tests.fakeslack.harness import NOW, SlackHarness
from tests.plans import EXAMPLE_PLAN, import_plan_into_empty

OWNER = "U0SALES1"  # owns new_approaches in the example plan
KPI = "new_approaches"
PERIOD = "2026-11"  # the current month at NOW
COUNTS = [2, 10, 50]


def _values(n: int) -> list[Decimal]:
    # Distinct, and never the target (100), so every confirmation names exactly its own value.
    return [Decimal(201 + i) for i in range(n)]


def _stored(engine: Engine) -> list[Actual]:
    with Session(engine, expire_on_commit=False) as session:
        kpi = session.exec(select(Kpi).where(Kpi.key == KPI)).one()
        return list(
            session.exec(
                select(Actual)
                .where(Actual.kpi_id == kpi.id, Actual.period == PERIOD)
                .order_by(col(Actual.id))
            ).all()
        )


def _assert_all_accounted_for(engine: Engine, sent: list[Decimal]) -> list[Actual]:
    """Exactly one live row, the others history, every value sent stored once, one unbroken chain."""
    rows = _stored(engine)
    live = [row for row in rows if row.superseded_at is None]
    assert len(live) == 1, [(row.id, row.value, row.superseded_at) for row in rows]
    superseded = [row for row in rows if row.superseded_at is not None]
    assert len(superseded) == len(sent) - 1
    assert sorted(Decimal(row.value) for row in rows) == sorted(sent)

    # Following superseded_by from the one row nothing points at visits every row once, each
    # later than the one before, and ends at the live one.
    by_id = {row.id: row for row in rows}
    successors = [row.superseded_by_id for row in superseded]
    assert all(successor in by_id for successor in successors)
    assert len(set(successors)) == len(successors)  # no row superseded twice
    (first,) = [row for row in rows if row.id not in set(successors)]
    chain = [first]
    while chain[-1].superseded_by_id is not None:
        chain.append(by_id[chain[-1].superseded_by_id])
    assert [row.id for row in chain] == sorted(by_id)
    assert chain[-1] is live[0]

    with Session(engine) as session:
        actions = [event.action for event in session.exec(select(AuditEvent)).all()]
    assert actions.count("actual.reported") == 1
    assert actions.count("actual.corrected") == len(sent) - 1
    return chain


@dataclass(frozen=True)
class Saved:
    value: Decimal
    actual_id: int
    previous: Decimal | None  # what the sender was told their value replaced


def _run_at_once(n: int, work: Callable[[int], Saved]) -> list[Saved | BaseException]:
    def guarded(index: int) -> Saved | BaseException:
        try:
            return work(index)
        except BaseException as exc:  # counted and shown, not lost in a thread
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(guarded, range(n)))


@pytest.mark.parametrize("n", COUNTS)
def test_concurrent_saves_are_all_stored_in_commit_order(engine: Engine, n: int) -> None:
    set_clock(lambda: NOW.astimezone(dt.UTC))
    import_plan_into_empty(engine, EXAMPLE_PLAN)
    sent = _values(n)
    # A connection for each writer, so all can be inside their transactions together.
    writers = make_engine(engine.url, pool_size=n, max_overflow=0)
    postgres = engine.dialect.name == "postgresql"
    ready = threading.Barrier(n, timeout=60)

    def write(index: int) -> Saved:
        if not postgres:
            # SQLite: BEGIN IMMEDIATE takes the write lock at a transaction's first statement, so
            # the writers can only meet before it; the others then queue on the busy timeout.
            ready.wait()
        with transaction(writers) as session:
            found = kpi_by_key(session, KPI)
            assert found is not None
            kpi, department = found
            period = check_period(None, kpi, NOW.date())
            assert period.key == PERIOD
            if postgres:
                # Every writer has read and none has written: the window in which all of them
                # used to see no live row and insert, and all but one hit uq_actual_live.
                ready.wait()
            reported = save(
                session,
                kpi=kpi,
                department=department,
                period=period,
                value=sent[index],
                user_id=OWNER,
                source=Source.COMMAND,
            )
            recorded = reported.recorded
            assert recorded.actual.id is not None
            previous = recorded.previous
            return Saved(
                sent[index], recorded.actual.id, None if previous is None else Decimal(previous.value)
            )

    try:
        results = _run_at_once(n, write)
    finally:
        writers.dispose()

    failures = [result for result in results if isinstance(result, BaseException)]
    saved = [result for result in results if isinstance(result, Saved)]
    assert not failures, f"{len(failures)} of {n} writes failed, first: {failures[0]!r}"
    chain = _assert_all_accounted_for(engine, sent)
    # Each writer was given its own row, and the value it replaced is the one committed just before it.
    position = {row.id: i for i, row in enumerate(chain)}
    for item in saved:
        row = chain[position[item.actual_id]]
        assert Decimal(row.value) == item.value
        before = chain[position[item.actual_id] - 1] if position[item.actual_id] else None
        assert item.previous == (None if before is None else Decimal(before.value))
    print(f"\n{engine.dialect.name} save x{n}: sent {n}, stored {len(chain)}, confirmed {len(saved)}")


# The value a confirmation says was stored: bold, after "reported:" or after the arrow of a correction.
_CONFIRMED = re.compile(
    r"を報告しました: \*(?P<value>[^*]+)\*|を修正しました: (?P<previous>\S+) → \*(?P<corrected>[^*]+)\*"
)


def _number(text: str) -> Decimal:
    return Decimal(re.sub(r"[^\d.]", "", text))


@pytest.mark.parametrize("n", COUNTS)
def test_concurrent_report_commands_are_all_confirmed(slack: SlackHarness, n: int) -> None:
    sent = _values(n)
    ready = threading.Barrier(n, timeout=60)

    def send(index: int) -> Saved:
        ready.wait()
        response = slack.client.command(
            f"report {KPI} {sent[index]}", user_id=OWNER, trigger_id=f"{index}.concurrent.{n}"
        )
        assert response.status == 200, response
        return Saved(sent[index], 0, None)

    results = _run_at_once(n, send)
    failures = [result for result in results if isinstance(result, BaseException)]
    assert not failures, f"{len(failures)} of {n} commands not acknowledged, first: {failures[0]!r}"
    slack.fake.wait_for("response_url", count=n, timeout=120)
    slack.settle(30)
    texts = [call.args["text"] for call in slack.fake.calls("response_url")]
    assert len(texts) == n

    confirmed: dict[Decimal, Decimal | None] = {}  # value confirmed -> the value it replaced
    unanswered = [text for text in texts if not _CONFIRMED.search(text)]
    assert not unanswered, f"{len(unanswered)} of {n} senders were not confirmed, first: {unanswered[0]!r}"
    for text in texts:
        match = _CONFIRMED.search(text)
        assert match is not None
        if match["value"] is not None:
            confirmed[_number(match["value"])] = None
        else:
            confirmed[_number(match["corrected"])] = _number(match["previous"])
    assert sorted(confirmed) == sorted(sent)  # each sender told their own value, none twice

    chain = _assert_all_accounted_for(slack.engine, sent)
    # What each sender was told it replaced is what was live when theirs was stored.
    for before, row in zip([None, *chain], chain, strict=False):
        assert confirmed[Decimal(row.value)] == (None if before is None else Decimal(before.value))
    assert slack.live_values(KPI) == {PERIOD: Decimal(chain[-1].value)}
    name = slack.engine.dialect.name
    print(f"\n{name} /kpi report x{n}: sent {n}, stored {len(chain)}, confirmed {len(confirmed)}")
