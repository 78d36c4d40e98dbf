"""kpibot's benchmarks: `python bench/run.py` (full) or `python bench/run.py --quick` (< 1 min).

Prints one Markdown table — benchmark, size, kpibot, baseline, ratio, unit — and writes the
same rows, with minimum, maximum and sample counts, to bench/results.json. bench/README.md
says what each row measures and against which baseline. `--check` exits non-zero when a
benchmark did not produce its rows (CI runs `python bench/run.py --quick --check`); it never
judges a time.

PostgreSQL: --postgres URL, else KPIBOT_BENCH_POSTGRES_URL or KPIBOT_TEST_POSTGRES_URL, else
postgresql+psycopg://postgres@127.0.0.1:5432/test. Every plan lives in a schema of its own
(`bench_<run>_…`), dropped at the end; SQLite files go to a temporary directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py` from anywhere

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import queue  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import URL, Engine  # noqa: E402

from bench import load  # noqa: E402
from bench.common import (  # noqa: E402
    BOT_TOKEN,
    ROOT,
    SIGNING_SECRET,
    BenchSlack,
    Row,
    counting_statements,
    environment,
    markdown_table,
    percentile,
    review_day,
    schema_url,
    slot_time,
    url_string,
)
from bench.floor import run_floor  # noqa: E402
from bench.generate import generate_division  # noqa: E402
from bench.push import bench_push  # noqa: E402
from bot.clock import set_clock  # noqa: E402
from bot.database import make_engine, migrate, transaction  # noqa: E402
from bot.models import Department  # noqa: E402
from bot.scorecard import all_departments, build_scorecard  # noqa: E402
from handlers.process import freeze_heap  # noqa: E402

RESULTS = ROOT / "bench" / "results.json"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
KPIS = 20
SHORT_WEEKS = 8
FANOUT_LATENCY = 0.1
# The 2,000-department plans take minutes to write; one projected to take longer is skipped (and said).
MAX_GENERATION_SECONDS = 900.0


@dataclass(frozen=True)
class Phase:
    name: str  # "report", "status", "modal"
    concurrency: int
    per_user: int  # requests per virtual user per repetition
    reps: int | None = None  # None: Config.ack_reps


@dataclass(frozen=True)
class Config:
    quick: bool
    departments: int  # the main plan
    weeks: int
    growth: tuple[int, ...]
    reps: int  # repetitions of the cheap measurements
    big_reps: int  # of the expensive ones (whole-plan runs)
    charts: int  # charts per repetition
    fanout_departments: int  # digests posted by the scheduler runs (memory, fan-out)
    phases: tuple[Phase, ...]
    ack_reps: int
    phase_seconds: float  # deadline of one repetition of one phase
    growth_backends: tuple[str, ...]
    fanout_reps: int = 1
    modal_kpis: int = 10

    @property
    def label(self) -> str:
        return "quick" if self.quick else "full"


QUICK = Config(
    quick=True,
    departments=20,
    weeks=26,
    growth=(20, 200),
    reps=2,
    big_reps=1,
    charts=1,
    fanout_departments=2,
    phases=(
        Phase("report", 1, 16),
        Phase("report", 16, 2, reps=1),
        Phase("status", 1, 6),
        Phase("status", 16, 1, reps=1),
        Phase("modal", 1, 4),
        Phase("modal", 16, 1, reps=1),
    ),
    ack_reps=2,
    phase_seconds=15,
    growth_backends=("sqlite",),
)

FULL = Config(
    quick=False,
    departments=200,
    weeks=104,
    growth=(20, 200, 2000),
    reps=5,
    big_reps=3,
    charts=10,
    fanout_departments=200,
    phases=(
        Phase("report", 1, 100),
        Phase("report", 16, 10),
        Phase("status", 1, 30),
        Phase("status", 16, 3),
        Phase("modal", 1, 10),
        Phase("modal", 16, 2),
    ),
    ack_reps=3,
    phase_seconds=120,
    growth_backends=("postgresql", "sqlite"),
)

PHASE_TITLES = {"report": "/kpi report", "status": "/kpi status", "modal": "modal submit (10 KPIs)"}
BACKEND_LABELS = {"postgresql": "PG", "sqlite": "SQLite"}


def expected_rows(config: Config, backends: list[str]) -> list[tuple[str, str | None]]:
    """(benchmark, size prefix or None) of every row a complete run produces."""
    rows: list[tuple[str, str | None]] = []
    for phase in config.phases:
        for pct in ("p50", "p99"):
            rows.append((f"ack {PHASE_TITLES[phase.name]} c={phase.concurrency} {pct}", None))
    rows += [
        ("ack timeouts (answered after Slack's 3 s, or never acked: Slack shows an error)", None),
        ("memory: serve peak RSS, largest worker", None),
        ("memory: serve peak RSS, all processes", None),
        ("memory: scheduler run peak RSS", None),
        ("fan-out: catch-up (serial)", None),
        ("fan-out: cron fire (APScheduler pool)", None),
        ("fan-out: Web API calls per digest", None),
        ("fan-out: CPU per digest", None),
        ("chart render", None),
    ]
    for backend in backends:
        label = BACKEND_LABELS[backend]
        rows.append(("push: values per second, 1,000-value batch", label))
        for name in (
            "digest build, all departments",
            "digest SQL statements per department",
            "alert scan, all KPIs",
            "alert scan SQL statements per department",
        ):
            rows.append((name, label))
    for backend in config.growth_backends:
        label = BACKEND_LABELS[backend]
        for size in config.growth:
            for name in ("growth: digest build per department", "growth: alert scan per department"):
                rows.append((name, f"{label} {size:,} departments"))
    return rows


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Bench:
    config: Config
    postgres: URL
    workdir: Path
    fake: BenchSlack
    day: dt.date = field(default_factory=review_day)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    schemas: list[str] = field(default_factory=list)
    plans: dict[tuple[str, int, int], URL] = field(default_factory=dict)
    generation_rates: dict[str, float] = field(default_factory=dict)  # rows per second

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = row.ratio
        print(
            f"  {row.benchmark} [{row.size}]: {row.kpibot_median!s:.8} vs {row.baseline_median!s:.8} "
            + row.unit
            + ("" if ratio is None else f" ({ratio:.3g}×)"),
            file=sys.stderr,
            flush=True,
        )

    # -- plans ---------------------------------------------------------------------------------

    def plan(self, backend: str, departments: int, weeks: int) -> URL:
        """A migrated database holding a generated plan (made once per run and reused)."""
        key = (backend, departments, weeks)
        if key in self.plans:
            return self.plans[key]
        rows = departments * KPIS * (weeks + max(1, weeks * 7 // 30)) // 2
        rate = self.generation_rates.get(backend)
        if rate and rows / rate > MAX_GENERATION_SECONDS:
            raise Skipped(
                f"{backend} {departments} departments × {weeks} weeks: ~{rows:,} rows, projected "
                f"{rows / rate:.0f} s to generate (> {MAX_GENERATION_SECONDS:.0f} s)"
            )
        url = self.empty(
            backend, f"{departments}_{weeks}" if backend == "postgresql" else f"plan-{departments}-{weeks}"
        )
        engine = make_engine(url)
        try:
            migrate(engine)
            start = time.perf_counter()
            generate_division(
                engine, departments=departments, kpis_per_department=KPIS, weeks=weeks, today=self.day
            )
            elapsed = time.perf_counter() - start
            if backend == "postgresql":
                # Statistics, as autovacuum would gather them in production (it may be off on a test
                # server: without them the planner scans every department's recent actuals).
                with engine.begin() as connection:
                    connection.execute(sa.text("ANALYZE department, kpi, target, actual"))
        finally:
            engine.dispose()
        self.generation_rates[backend] = rows / elapsed
        self.info.setdefault("generation", []).append(
            {"backend": backend, "departments": departments, "weeks": weeks, "rows": rows, "seconds": elapsed}
        )
        log(f"generated {backend} {departments}×{KPIS}×{weeks} ({rows:,} actuals) in {elapsed:.1f} s")
        self.plans[key] = url
        return url

    def empty(self, backend: str, name: str) -> URL:
        """A new empty database (a schema of its own on PostgreSQL, dropped at the end)."""
        if backend == "sqlite":
            return sa.make_url(f"sqlite:///{self.workdir / f'{name}.db'}")
        schema = f"bench_{self.token}_{name}"
        admin = make_engine(self.postgres)
        try:
            with admin.begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        finally:
            admin.dispose()
        self.schemas.append(schema)
        return schema_url(self.postgres, schema)

    def drop_schemas(self) -> None:
        if not self.schemas:
            return
        admin = make_engine(self.postgres)
        try:
            with admin.begin() as connection:
                for schema in self.schemas:
                    connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            admin.dispose()
        self.schemas.clear()


def bench_push_on(bench: Bench, backend: str, reps: int) -> None:
    bench.add(bench_push(bench.empty(backend, "push"), reps))


class Skipped(Exception):
    """A size left out on purpose (too slow to generate here); said in the output, never hidden."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def size_label(backend: str, departments: int, weeks: int) -> str:
    return f"{BACKEND_LABELS[backend]} {departments:,}×{KPIS}×{weeks} wk"


# -- digest build, statements, charts, alert scan -----------------------------------------------------


def departments_of(engine: Engine) -> list[Department]:
    with transaction(engine) as session:
        return all_departments(session)


def build_all(engine: Engine, departments: list[Department], day: dt.date) -> None:
    """Every department's digest blocks, no chart, no posting (bot.digests.flows.build_many, as the
    division summary and `kpibot digest` build them; before it existed, build per department)."""
    from bot.digests import flows
    from handlers.digests import messages

    if hasattr(flows, "build_many"):
        flows.build_many(engine, departments, day, messages, with_chart=False)
        return
    for department in departments:
        flows.build(engine, department, day, messages, with_chart=False)


def scan_all(engine: Engine, departments: list[Department], day: dt.date) -> int:
    """Every department's alert findings (all rules, the period in progress): bot.alerts.service
    scan_departments, in the scan's chunks (per department before it existed)."""
    from bot.alerts import flows, service

    findings = 0
    if hasattr(service, "scan_departments"):
        for start in range(0, len(departments), flows.SCAN_CHUNK):
            chunk = departments[start : start + flows.SCAN_CHUNK]
            with transaction(engine) as session:
                found = service.scan_departments(session, [(department, day) for department in chunk])
            findings += sum(len(items) for items in found)
        return findings
    from bot.alerts.rules import scan_department

    for department in departments:
        with transaction(engine) as session:
            findings += len(scan_department(session, department, day))
    return findings


def verify_digest_floor(engine: Engine, departments: list[Department], day: dt.date) -> None:
    """The floor must return the digest's numbers: each KPI's window of values and its target."""
    from bot.digests.service import CHART_PERIODS, build_digest

    floor = run_floor(engine, day, CHART_PERIODS, current=False)
    with transaction(engine) as session:
        for department in departments:
            for row in build_digest(session, department, day, None).rows:
                _compare(floor, department, row.kpi.id, row.history, row.targets)


def verify_alert_floor(engine: Engine, departments: list[Department], day: dt.date) -> None:
    from bot.alerts.rules import MISSING_STREAK

    floor = run_floor(engine, day, MISSING_STREAK + 1, current=True)
    with transaction(engine) as session:
        for department in departments:
            card = build_scorecard(session, department, day, history_length=MISSING_STREAK + 1, current=True)
            for row in card.rows:
                _compare(floor, department, row.kpi.id, row.history, row.targets)


def _compare(floor: Any, department: Department, kpi_id: int | None, history: Any, targets: Any) -> None:
    department_id, target, values = floor[kpi_id]
    expected_target = targets[-1].low if targets[-1] is not None else None
    if department_id != department.id or values != list(history) or target != expected_target:
        raise AssertionError(
            f"floor differs for KPI {kpi_id}: {values} / {target} vs {history} / {targets[-1]}"
        )


def bench_digest(bench: Bench, backend: str) -> None:
    config, label = bench.config, BACKEND_LABELS[backend]
    url = bench.plan(backend, config.departments, config.weeks)
    engine = make_engine(url)
    try:
        departments = departments_of(engine)
        verify_digest_floor(engine, departments, bench.day)
        build_all(engine, departments[:2], bench.day)  # warm: connections, templates
        freeze_heap()  # as the scheduler's process builds them: its startup heap frozen (settle)
        ours = [_timed(lambda: build_all(engine, departments, bench.day)) for _ in range(config.big_reps)]
        floor = [_timed(lambda: run_floor(engine, bench.day, 13, False)) for _ in range(config.reps)]
        bench.add(
            Row(
                "digest build, all departments",
                size_label(backend, config.departments, config.weeks),
                "s",
                ours,
                floor,
                note="digest build (with_chart=False) per department vs one aggregate query",
                extra={"per_department_ms": [1000 * t / len(departments) for t in ours]},
            )
        )

        short_url = bench.plan(backend, 3, SHORT_WEEKS)
        long_counts = _statements(engine, departments, bench.day, "digest")
        with counting_statements(engine) as whole_run:
            build_all(engine, departments, bench.day)
        short_engine = make_engine(short_url)
        try:
            short_departments = departments_of(short_engine)
            short_counts = _statements(short_engine, short_departments, bench.day, "digest")
            short_alerts = _statements(short_engine, short_departments, bench.day, "alerts")
        finally:
            short_engine.dispose()
        bench.add(
            Row(
                "digest SQL statements per department",
                f"{label} {config.weeks} wk vs {SHORT_WEEKS} wk history",
                "statements",
                [max(long_counts)],
                [max(short_counts)],
                note="baseline: the same build on a plan with a short history; must be equal",
                extra={
                    "long": sorted(Counter(long_counts).items()),
                    "short": sorted(Counter(short_counts).items()),
                    "per_department_in_one_run": len(whole_run) / len(departments),
                },
            )
        )

        verify_alert_floor(engine, departments, bench.day)
        scan_all(engine, departments[:2], bench.day)
        findings = scan_all(engine, departments, bench.day)
        ours = [_timed(lambda: scan_all(engine, departments, bench.day)) for _ in range(config.big_reps)]
        floor = [_timed(lambda: run_floor(engine, bench.day, 3, True)) for _ in range(config.reps)]
        bench.add(
            Row(
                "alert scan, all KPIs",
                size_label(backend, config.departments, config.weeks),
                "s",
                ours,
                floor,
                note="bot.alerts.rules.scan_department per department vs one aggregate query",
                extra={
                    "findings": findings,
                    "per_department_ms": [1000 * t / len(departments) for t in ours],
                },
            )
        )
        alert_counts = _statements(engine, departments, bench.day, "alerts")
        with counting_statements(engine) as whole_scan:
            scan_all(engine, departments, bench.day)
        bench.add(
            Row(
                "alert scan SQL statements per department",
                f"{label} {config.weeks} wk vs {SHORT_WEEKS} wk history",
                "statements",
                [max(alert_counts)],
                [max(short_alerts)],
                extra={
                    "long": sorted(Counter(alert_counts).items()),
                    "per_department_in_one_run": len(whole_scan) / len(departments),
                },
            )
        )
    finally:
        engine.dispose()


def _statements(engine: Engine, departments: list[Department], day: dt.date, what: str) -> list[int]:
    counts = []
    for department in departments:
        with counting_statements(engine) as statements:
            if what == "digest":
                build_all(engine, [department], day)
            else:
                scan_all(engine, [department], day)
        counts.append(len(statements))
    return counts


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench_charts(bench: Bench) -> None:
    """The digest chart of a generated department (12 of 20 KPIs drawn, 13 periods) vs the same
    grid drawn by matplotlib with defaults: the library's own floor for that many lines and pixels."""
    from bot.digests.flows import chart
    from bot.digests.service import build_digest, goal_progress

    config = bench.config
    url = bench.plan("postgresql", config.departments, config.weeks)
    engine = make_engine(url)
    try:
        departments = departments_of(engine)[: config.charts]
        with transaction(engine) as session:
            goal = goal_progress(session, bench.day)
            digests = [build_digest(session, department, bench.day, goal) for department in departments]
    finally:
        engine.dispose()
    chart(digests[0], digests[0].department.locale)  # fonts loaded once per process (both use DejaVu)
    ours, floor = [], []
    for _ in range(1 if config.quick else config.big_reps):
        elapsed = _timed(lambda: [chart(digest, digest.department.locale) for digest in digests])
        ours.append(len(digests) / elapsed)
        elapsed = _timed(lambda: [_floor_chart() for _ in digests])
        floor.append(len(digests) / elapsed)
    bench.add(
        Row(
            "chart render",
            f"{len(digests)} departments, 12 of {KPIS} KPIs × 13 periods, 1200×1600 px",
            "charts/s",
            ours,
            floor,
            rate=True,
            note="the digest chart (render_trend_chart) vs a default matplotlib 4×3 grid, same size",
        )
    )


def _floor_chart() -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 16), dpi=100)
    FigureCanvasAgg(figure)
    x = list(range(13))
    for index in range(12):
        axes = figure.add_subplot(4, 3, index + 1)
        axes.plot(x, [50 + (index * 7 + i * 13) % 80 for i in x], marker="o")
        axes.plot(x, [100] * 13, linestyle="--")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# -- growth --------------------------------------------------------------------------------------------


def bench_growth(bench: Bench, backend: str) -> None:
    config, label = bench.config, BACKEND_LABELS[backend]
    first: dict[str, list[float]] = {}
    for size in config.growth:
        try:
            url = bench.plan(backend, size, config.weeks)
        except Skipped as skipped:
            log(f"growth {backend} {size}: skipped: {skipped}")
            bench.info.setdefault("skipped", []).append(str(skipped))
            bench.failures.append(f"growth {backend} {size}: skipped")
            continue
        digest, scan, floor_digest, floor_scan = _growth_samples(
            bench, url, 1 if size >= 2000 else config.big_reps
        )
        first.setdefault("digest", digest)
        first.setdefault("scan", scan)
        for name, ours, base, floor in (
            ("growth: digest build per department", digest, first["digest"], floor_digest),
            ("growth: alert scan per department", scan, first["scan"], floor_scan),
        ):
            bench.add(
                Row(
                    name,
                    f"{label} {size:,} departments",
                    "ms/department",
                    ours,
                    base,
                    note=f"baseline: the same per department at {config.growth[0]} departments",
                    extra={"floor_ms_per_department": floor, "weeks": config.weeks},
                )
            )


def _growth_samples(bench: Bench, url: URL, reps: int) -> tuple[list[float], ...]:
    """ms per department: digest build, alert scan, and the floor query for each."""
    engine = make_engine(url)
    try:
        departments = departments_of(engine)
        size = len(departments)
        build_all(engine, departments[:2], bench.day)
        freeze_heap()  # as in bench_digest
        digest = [
            1000 * _timed(lambda: build_all(engine, departments, bench.day)) / size for _ in range(reps)
        ]
        scan = [1000 * _timed(lambda: scan_all(engine, departments, bench.day)) / size for _ in range(reps)]
        floor_digest = [1000 * _timed(lambda: run_floor(engine, bench.day, 13, False)) / size]
        floor_scan = [1000 * _timed(lambda: run_floor(engine, bench.day, 3, True)) / size]
    finally:
        engine.dispose()
    return digest, scan, floor_digest, floor_scan


# -- fan-out and the scheduler's memory -------------------------------------------------------------------


def run_scheduler(
    bench: Bench, url: URL, runs: list[tuple[str, float]], timeout: float, **extra_env: str
) -> list[dict[str, Any]]:
    """bench/scheduler_run.py in a process of its own, against this process's fake Slack: one
    scheduler run per (mode, Slack latency), each timed at the fake (calls and their durations)."""
    env = environment(
        DATABASE_URL=url_string(url),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=bench.fake.url,
        BENCH_CLOCK=slot_time(bench.day).isoformat(),
        BENCH_LOCK_KEY=str(random.randrange(1 << 40, 1 << 50)),
        BENCH_TIMEOUT=str(timeout),
        **extra_env,
    )
    stderr = bench.workdir / "scheduler_run.log"
    lines: queue.Queue[str | None] = queue.Queue()
    with stderr.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.scheduler_run", *(mode for mode, _ in runs)],
            env=env,
            cwd=bench.workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert process.stdin is not None and process.stdout is not None
    output = process.stdout

    def reader() -> None:
        for line in output:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()

    def next_line(seconds: float) -> str:
        try:
            line = lines.get(timeout=seconds)
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            raise RuntimeError(
                f"scheduler run: no answer within {seconds:.0f} s:\n{stderr.read_text()[-3000:]}"
            )
        return line

    results = []
    try:
        for _mode, latency in runs:
            ready = next_line(60)
            if not ready.startswith("READY"):
                raise RuntimeError(f"scheduler run: unexpected {ready!r}")
            bench.fake.clear()
            bench.fake.latency = latency
            process.stdin.write("go\n")
            process.stdin.flush()
            result: dict[str, Any] = json.loads(next_line(timeout + 60))
            bench.fake.latency = 0.0
            durations = bench.fake.durations()
            result.update(
                latency_s=latency,
                calls=len(durations),
                serial_sum_s=sum(seconds for _, seconds in durations),
                calls_by_method=dict(Counter(method for method, _ in durations)),
            )
            results.append(result)
        process.stdin.close()
        process.wait(timeout=60)
    finally:
        bench.fake.latency = 0.0
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    if process.returncode != 0:
        raise RuntimeError(f"scheduler run exited {process.returncode}:\n{stderr.read_text()[-3000:]}")
    return results


def bench_scheduler(bench: Bench) -> None:
    """One process: a scheduler run at Slack +0 ms (its peak RSS), then the fan-out runs at +100 ms."""
    config = bench.config
    departments = config.fanout_departments
    url = bench.plan("postgresql", departments, config.weeks)
    runs = [("catch-up", 0.0)]
    runs += [("catch-up", FANOUT_LATENCY), ("cron", FANOUT_LATENCY)] * config.fanout_reps
    results = run_scheduler(bench, url, runs, timeout=120 + departments * 6.0)
    for result in results:
        if result["posted"] != departments:
            raise RuntimeError(
                f"{result['mode']}: {result['posted']} of {departments} digests posted: {result}"
            )

    memory = results[0]
    diagnostic: dict[str, Any] = {}
    if not config.quick:
        # The same run with the chart stubbed out, in a process of its own: the charts' share of the peak.
        stubbed = run_scheduler(
            bench, url, [("catch-up", 0.0)], 120 + departments * 6.0, BENCH_STUB_CHARTS="1"
        )
        diagnostic = {"charts_stubbed_peak_mb": stubbed[0]["vmhwm_kb"] / 1024, "run": stubbed[0]}
        log(f"  diagnostic: peak RSS with charts stubbed {diagnostic['charts_stubbed_peak_mb']:.0f} MB")
    bench.add(
        Row(
            "memory: scheduler run peak RSS",
            f"{departments} departments, charts, Slack +0 ms",
            "MB",
            [memory["vmhwm_kb"] / 1024],
            [memory["rss_before_kb"] / 1024],
            # VmHWM, not ru_maxrss: Linux carries the parent's peak into a vfork+exec'd child's ru_maxrss.
            note="VmHWM after one Scheduler.start() posted every digest vs VmRSS of the process before it",
            extra={"run": memory, "diagnostic": diagnostic},
        )
    )
    size = f"{departments} digests, +{FANOUT_LATENCY * 1000:.0f} ms/call"
    for mode, name in (
        ("catch-up", "fan-out: catch-up (serial)"),
        ("cron", "fan-out: cron fire (APScheduler pool)"),
    ):
        mine = [result for result in results[1:] if result["mode"] == mode]
        bench.add(
            Row(
                name,
                size,
                "s",
                [result["wall_s"] for result in mine],
                [result["serial_sum_s"] for result in mine],
                note="wall time of the whole run vs the sum of the Web API calls' durations at the fake",
                extra={"runs": mine},
            )
        )
    bench.add(
        Row(
            "fan-out: Web API calls per digest",
            size,
            "calls",
            [result["calls"] / result["posted"] for result in results[1:]],
            # files_upload_v2 is three calls: getUploadURLExternal, the upload, completeUploadExternal.
            note="chat.postMessage, + files_upload_v2 where a digest is posted without its native chart",
            extra={"by_method": [result["calls_by_method"] for result in results[1:]]},
        )
    )
    bench.add(
        Row(
            "fan-out: CPU per digest",
            f"{departments} digests, every run above",
            "ms",
            [1000 * result["cpu_s"] / result["posted"] for result in results],
            # The scheduler process's CPU (build, Block Kit, charts, HTTP): Slack's latency costs none.
            note="process CPU time (every thread) of one scheduler run ÷ digests posted",
        )
    )


# -- ack latency and the server's memory -----------------------------------------------------------------


def _load_server(bench: Bench, server: load.Server, views: dict[int, dict[str, Any]]) -> Served:
    """Warm up, then every phase × repetition against one server; its peak RSS at the end."""
    config, kind = bench.config, server.kind
    part = Served(kind)
    replies = kind == "kpibot"  # the bare app sends none
    warm = load.status_commands(config.departments, 2, 3, seed=1) + load.report_commands(
        config.departments, KPIS, 2, 3, seed=2
    )
    warmed = load.run_phase(server.url, bench.fake, warm, wait_for_replies=replies, deadline_seconds=30)
    part.requests += len(warmed.acks)
    part.values += len(warmed.acks) - 6  # the first 6 of the warm-up are /kpi status
    for phase in config.phases:
        for rep in range(phase.reps or config.ack_reps):
            seed = 1000 * rep + 10 * phase.concurrency + len(phase.name)
            users: list[list[load.Request]]
            if phase.name == "report":
                users = load.report_commands(
                    config.departments, KPIS, phase.concurrency, phase.per_user, seed
                )
            elif phase.name == "status":
                users = load.status_commands(config.departments, phase.concurrency, phase.per_user, seed)
            else:
                tag = f"{bench.token}{kind[0]}{phase.concurrency}r{rep}"
                users = load.modal_submissions(
                    views, phase.concurrency, phase.per_user, config.modal_kpis, seed, tag
                )
            result = load.run_phase(
                server.url, bench.fake, users, wait_for_replies=replies, deadline_seconds=config.phase_seconds
            )
            log(
                f"  {kind} {phase.name} c={phase.concurrency} rep {rep}: {len(result.acks)} requests "
                f"in {result.wall:.1f} s"
            )
            part.requests += len(result.acks)
            part.values += len(result.acks) * {"report": 1, "modal": config.modal_kpis}.get(phase.name, 0)
            part.by_phase.setdefault((phase.name, phase.concurrency), []).append(result)
    part.memory = {**server.memory(), "booted": server.booted}
    return part


def _stop(bench: Bench, server: load.Server) -> None:
    began = time.perf_counter()
    code = server.stop()
    log(f"  {server.kind} server stopped in {time.perf_counter() - began:.1f} s")
    text = server.log.read_text(errors="replace")
    bench.info.setdefault("servers", {})[server.kind] = {
        "exit": code,
        # Listener failures the user saw as "unexpected error" (e.g. two reports of one KPI at once).
        "tracebacks": text.count("Traceback (most recent call last)"),
        "unique_violations": text.count("UniqueViolation"),
        "log_tail": text[-1500:],
    }


def _writes(url: URL) -> dict[str, int]:
    """Actual rows stored, by source: every valid report is a row (a correction too)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT source, COUNT(*) FROM actual GROUP BY source")).all()
    finally:
        engine.dispose()
    return {str(source).lower(): count for source, count in rows}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    """One server's part of the ack benchmark."""

    kind: str
    by_phase: dict[tuple[str, int], list[load.PhaseResult]] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    requests: int = 0
    values: int = 0  # values sent to be stored: report commands, modal fields


def bench_ack(bench: Bench) -> None:
    config = bench.config
    url = bench.plan("postgresql", config.departments, config.weeks)
    env = environment(
        DATABASE_URL=url_string(url),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=bench.fake.url,
    )
    bench.fake.clear()
    writes_before = _writes(url)
    served: dict[str, Served] = {}
    views: dict[int, dict[str, Any]] = {}
    stopping: threading.Thread | None = None
    for kind in ("kpibot", "bare"):
        began = time.perf_counter()
        server = load.start_server(kind, env, free_port(), bench.workdir)
        log(f"  {kind} server up in {time.perf_counter() - began:.1f} s")
        try:
            if stopping is not None:  # the previous server shut down while this one booted
                stopping.join(60)
                stored = _writes(url)
                bench.info["ack_writes"] = {
                    "values_sent": served["kpibot"].values,
                    "stored": {s: stored.get(s, 0) - writes_before.get(s, 0) for s in ("command", "modal")},
                }
            if kind == "kpibot":
                began = time.perf_counter()
                views = load.open_views(server.url, bench.fake, list(range(min(16, config.departments))))
                log(f"  {len(views)} report forms opened in {time.perf_counter() - began:.1f} s")
                began = time.perf_counter()
                homes = load.open_homes(server.url, bench.fake, load.watchers(config.departments))
                log(f"  {homes} Home tabs opened in {time.perf_counter() - began:.1f} s")
            served[kind] = _load_server(bench, server, views)
        except BaseException:
            server.stop()
            raise
        stopping = threading.Thread(target=_stop, args=(bench, server), daemon=True)
        stopping.start()
    if stopping is not None:
        stopping.join(60)
    bench.fake.clear()
    results = {kind: part.by_phase for kind, part in served.items()}
    memory = {kind: part.memory for kind, part in served.items()}
    requests = {kind: part.requests for kind, part in served.items()}

    for phase in config.phases:
        key = (phase.name, phase.concurrency)
        ours, floor = results["kpibot"][key], results["bare"][key]
        for pct in (50, 99):
            bench.add(
                Row(
                    f"ack {PHASE_TITLES[phase.name]} c={phase.concurrency} p{pct}",
                    f"PG {config.departments} departments, {sum(len(r.acks) for r in ours)} requests",
                    "ms",
                    [1000 * percentile(r.acks, pct) for r in ours if r.acks],
                    [1000 * percentile(r.acks, pct) for r in floor if r.acks],
                    note="kpibot serve vs a bare Bolt app, same gunicorn, same client",
                    extra={
                        "errors": [e for r in ours for e in r.errors][:5],
                        "baseline_errors": [e for r in floor for e in r.errors][:5],
                        "missing_replies": sum(r.missing_replies for r in ours),
                        "ack_timeouts": sum(r.ack_timeouts for r in ours),
                        "reply_ms": [1000 * percentile(r.replies, pct) for r in ours if r.replies],
                        "requests_per_s": [len(r.acks) / r.wall for r in ours if r.wall],
                    },
                )
            )
        if any(r.errors for r in ours) or any(r.errors for r in floor):
            bench.failures.append(f"ack {phase.name} c={phase.concurrency}: HTTP errors")
    timeouts = {
        kind: {
            f"{name} c={concurrency}": sum(r.ack_timeouts for r in runs)
            for (name, concurrency), runs in results[kind].items()
        }
        for kind in results
    }
    bench.add(
        Row(
            "ack timeouts (answered after Slack's 3 s, or never acked: Slack shows an error)",
            f"PG {config.departments} departments, all phases above",
            "requests",
            [sum(timeouts["kpibot"].values())],
            [sum(timeouts["bare"].values())],
            extra=timeouts,
        )
    )
    for name, field_name in (
        ("memory: serve peak RSS, largest worker", "largest_worker_kb"),
        ("memory: serve peak RSS, all processes", "total_kb"),
    ):
        bench.add(
            Row(
                name,
                f"after {requests['kpibot']:,} requests (bare: {requests['bare']:,})",
                "MB",
                [memory["kpibot"][field_name] / 1024],
                [memory["bare"][field_name] / 1024],
                note="VmHWM of gunicorn's arbiter and workers (WEB_CONCURRENCY=2) vs the bare app's",
                extra={"kpibot": memory["kpibot"], "bare": memory["bare"]},
            )
        )


# -- machine, output ---------------------------------------------------------------------------------------


def machine(postgres: URL) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }
    try:
        engine = make_engine(postgres)
        with engine.connect() as connection:
            info["postgresql"] = connection.execute(sa.text("SHOW server_version")).scalar()
        engine.dispose()
    except sa.exc.SQLAlchemyError as exc:
        info["postgresql"] = f"unavailable: {str(exc).splitlines()[0]}"
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    parser.add_argument("--check", action="store_true", help="exit 1 if any expected row is missing")
    parser.add_argument("--postgres", help="PostgreSQL URL (a schema per plan is created and dropped)")
    parser.add_argument(
        "--only",
        help="comma-separated subset: digest, charts, growth, scheduler, ack, push (default: all)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--departments", type=int, help="departments of the main plan (digest, ack)")
    parser.add_argument("--weeks", type=int, help="weeks of history of the main plan")
    parser.add_argument("--fanout", type=int, help="digests posted by the scheduler runs (fan-out, memory)")
    parser.add_argument("--growth", help="comma-separated division sizes of the growth rows (20,200,2000)")
    parser.add_argument("--growth-backends", help="comma-separated: postgresql, sqlite")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.growth or args.growth_backends:
        config = dataclasses.replace(
            config,
            growth=tuple(int(size) for size in args.growth.split(",")) if args.growth else config.growth,
            growth_backends=(
                tuple(args.growth_backends.split(",")) if args.growth_backends else config.growth_backends
            ),
        )
    if args.departments or args.weeks:
        config = dataclasses.replace(
            config, departments=args.departments or config.departments, weeks=args.weeks or config.weeks
        )
    if args.fanout:
        config = dataclasses.replace(config, fanout_departments=args.fanout)
    postgres = sa.make_url(
        args.postgres
        or os.environ.get("KPIBOT_BENCH_POSTGRES_URL")
        or os.environ.get("KPIBOT_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES
    )
    only = set(args.only.split(",")) if args.only else None
    # SIGTERM unwinds like Ctrl-C, so servers are stopped and schemas dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    backends = ["postgresql", "sqlite"]
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="kpibot-bench-") as tmp, BenchSlack() as fake:
        bench = Bench(config, postgres, Path(tmp), fake)
        # In this process the clock stands just after the generated plans' Monday digest slot.
        set_clock(lambda: slot_time(bench.day))
        push_reps = 1 if config.quick else config.reps
        steps: list[tuple[str, str, Callable[[], None]]] = [
            *(("digest", f"digest {b}", lambda b=b: bench_digest(bench, b)) for b in backends),
            ("charts", "charts", lambda: bench_charts(bench)),
            *(("growth", f"growth {b}", lambda b=b: bench_growth(bench, b)) for b in config.growth_backends),
            ("scheduler", "scheduler: memory and fan-out", lambda: bench_scheduler(bench)),
            ("ack", "ack latency", lambda: bench_ack(bench)),
            *(
                ("push", f"push API batch {b}", lambda b=b: bench_push_on(bench, b, push_reps))
                for b in backends
            ),
        ]
        try:
            for group, title, step in steps:
                if only is not None and group not in only:
                    continue
                log(f"== {title} ({time.perf_counter() - started:.0f} s)")
                try:
                    step()
                except Exception:
                    bench.failures.append(title)
                    log(f"{title} FAILED:\n{traceback.format_exc()}")
        finally:
            set_clock(None)
            bench.drop_schemas()
        elapsed = time.perf_counter() - started

    table = markdown_table(bench.rows)
    print(table)
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": config.label,
        "seconds": elapsed,
        "machine": machine(postgres),
        "day": bench.day.isoformat(),
        "code": _code_state(),
        "rows": [row.as_json() for row in bench.rows],
        "failures": bench.failures,
        "info": bench.info,
    }
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    log(f"{len(bench.rows)} rows in {elapsed:.0f} s; written to {args.output}")

    if args.check:
        missing = [
            f"{name} [{prefix}]" if prefix else name
            for name, prefix in expected_rows(config, backends)
            if (only is None or _group_of(name) in only)
            and not any(
                row.benchmark == name and (prefix is None or row.size.startswith(prefix))
                for row in bench.rows
            )
        ]
        empty = [row.benchmark for row in bench.rows if not row.kpibot]
        if missing or empty:
            log("missing rows: " + "; ".join(missing + [f"{name} (no samples)" for name in empty]))
            return 1
    return 0


def _code_state() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    changed = git("status", "--short").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_files": len(changed)}


def _group_of(name: str) -> str:
    if name.startswith(("ack", "memory: serve")):
        return "ack"
    if name.startswith(("memory: scheduler", "fan-out")):
        return "scheduler"
    if name.startswith("chart"):
        return "charts"
    if name.startswith("growth"):
        return "growth"
    if name.startswith("push"):
        return "push"
    return "digest"


if __name__ == "__main__":
    sys.exit(main())
