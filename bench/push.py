"""Pushed values per second: a 1,000-value batch through POST /api/v1/actuals (the WSGI app of
handlers/api, in process: token, rate, parsing, every row checked, stored with history and
alerts in one transaction) against the same rows inserted with one SQL statement."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlmodel import Session, col, select

from bench.common import Row
from bot.clock import set_clock
from bot.database import make_engine, migrate, transaction
from bot.models import Cadence, Kpi
from bot.periods import period_of
from bot.plan.service import apply_plan, load_plan
from bot.resources import EXAMPLE_PLAN
from bot.sources import service as sources
from handlers.api.endpoint import ACTUALS_PATH, PushApi

BATCH = 1000


def _post(api: PushApi, token: str, body: bytes) -> int:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": ACTUALS_PATH,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.input": io.BytesIO(body),
    }
    status: list[str] = []
    b"".join(api(environ, lambda line, headers: status.append(line)))
    return int(status[0].split()[0])


def bench_push(url: URL, reps: int) -> Row:
    now = dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC)
    set_clock(lambda: now)
    engine = make_engine(url)
    migrate(engine)
    with transaction(engine) as session:
        apply_plan(session, load_plan(EXAMPLE_PLAN, session))
        token = sources.create(session, "bench", rate_per_minute=100_000, burst=100_000).token
    with Session(engine) as session:
        kpis = session.exec(
            select(Kpi).where(col(Kpi.formula).is_(None), Kpi.cadence == Cadence.MONTHLY)
        ).all()
        keys = [(kpi.id, kpi.key) for kpi in kpis]
    months = -(-BATCH // len(keys))
    november = period_of(dt.date(2026, 11, 30), Cadence.MONTHLY)
    periods = [november.shift(-step).key for step in range(1, months + 1)]
    rows = [(kpi_id, key, period) for period in periods for kpi_id, key in keys][:BATCH]
    body = json.dumps({"actuals": [{"kpi": key, "period": p, "value": "100"} for _, key, p in rows]}).encode()
    ours, floor = [], []
    for _ in range(reps):
        _empty(engine)
        started = time.perf_counter()
        status = _post(PushApi(engine), token, body)
        ours.append(BATCH / (time.perf_counter() - started))
        assert status == 200, status
        _empty(engine)
        started = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO actual (kpi_id, period, value, reported_by, reported_at, source)"
                    " VALUES (:kpi_id, :period, '100.000000', 'source:bench', :at, 'api')"
                ),
                [{"kpi_id": kpi_id, "period": period, "at": now} for kpi_id, _, period in rows],
            )
        floor.append(BATCH / (time.perf_counter() - started))
    engine.dispose()
    set_clock(None)
    return Row(
        "push: values per second, 1,000-value batch",
        f"{'PG' if url.get_backend_name() == 'postgresql' else 'SQLite'}, {len(keys)} KPIs × {months} months",
        "values/s",
        ours,
        floor,
        rate=True,
        note="POST /api/v1/actuals (in-process WSGI) vs one INSERT … VALUES of the same rows",
    )


def _empty(engine: Any) -> None:
    with engine.begin() as connection:
        for table in ("alert", "audit_event", "processed_request", "actual"):
            connection.execute(sa.text(f"DELETE FROM {table}"))
