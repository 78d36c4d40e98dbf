"""Two report forms sharing KPIs, listed in opposite orders, submitted at the same moment, round
after round: no deadlock (bot.reports.service.save_reports takes the writers' locks in one order,
(KPI id, period)), every sender confirmed, every value stored once, one live value per KPI.

Over signed HTTP against the fake Slack, on both databases (the deadlock is PostgreSQL's; SQLite
serializes writers with BEGIN IMMEDIATE)."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import col, select

from bot import render
from bot.models import Actual, Kpi
from tests.fakeslack.client import Response
from tests.fakeslack.harness import SlackHarness
from tests.test_report_modal import open_in_progress

HEAD = "U0SALESHEAD"  # heads sales: may report every Sales KPI
PERIOD = "2026-11"  # the current month at the harness's clock
KPIS = ["new_approaches", "close_rate", "average_deal_size"]
ROUNDS = 20

JsonDict = dict[str, Any]


def value_of(kpi: str, n: int) -> Decimal:
    """Distinct for every (round, form): never equal to the value it replaces."""
    return Decimal({"new_approaches": 200, "close_rate": 40, "average_deal_size": 1_000_000}[kpi] + n)


def open_form(slack: SlackHarness) -> JsonDict:
    """`/kpi report`, then the periods in progress picked (the form opens on the oldest unreported)."""
    return open_in_progress(slack, HEAD)


def submit(slack: SlackHarness, view: JsonDict, order: list[str], n: int) -> Response:
    values = {
        f"kpi:{kpi}": {"value": {"type": "plain_text_input", "value": str(value_of(kpi, n))}} for kpi in order
    }
    return slack.client.view_submission(
        "report_modal", values, user_id=HEAD, private_metadata=view["private_metadata"]
    )


def stored(slack: SlackHarness, kpi: str) -> list[Actual]:
    with slack.session() as session:
        return list(
            session.exec(
                select(Actual)
                .join(Kpi, col(Kpi.id) == Actual.kpi_id)
                .where(Kpi.key == kpi, Actual.period == PERIOD)
                .order_by(col(Actual.id))
            ).all()
        )


def test_two_forms_sharing_kpis_in_opposite_orders_never_deadlock_and_lose_nothing(
    slack: SlackHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    forward, backward = open_form(slack), open_form(slack)
    responses: list[Response] = []
    barrier = threading.Barrier(2)  # reused: both forms leave it together, each round

    def send(view: JsonDict, order: list[str], n: int) -> None:
        barrier.wait()
        responses.append(submit(slack, view, order, n))

    for round_ in range(ROUNDS):
        threads = [
            threading.Thread(target=send, args=(forward, KPIS, 2 * round_)),
            threading.Thread(target=send, args=(backward, KPIS[::-1], 2 * round_ + 1)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    slack.settle(30)

    # Every form closed (the ack), every sender confirmed, no one told of a failure.
    sent = 2 * ROUNDS
    assert [(r.status, r.body) for r in responses] == [(200, "")] * sent
    confirmations = slack.fake.wait_for("chat.postEphemeral", count=sent)
    assert len(confirmations) == sent
    failures = {render.message(key, "ja") for key in ("error.database", "error.unexpected")}
    assert [c.args["text"] for c in confirmations if c.args["text"] in failures] == []
    assert all("保存しました" in c.args["text"] for c in confirmations)
    assert "deadlock" not in caplog.text.lower()

    # Every value sent stored once; one live value per KPI, the others its history.
    for kpi in KPIS:
        rows = stored(slack, kpi)
        assert sorted(Decimal(row.value) for row in rows) == sorted(value_of(kpi, n) for n in range(sent))
        assert len([row for row in rows if row.superseded_at is None]) == 1
