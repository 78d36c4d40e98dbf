"""Shared fixtures: real databases (SQLite and PostgreSQL), migrated once per test session.

PostgreSQL tests read KPIBOT_TEST_POSTGRES_URL. Without it they are skipped — unless
KPIBOT_REQUIRE_POSTGRES=1 (as `.ci/run` sets), which turns a missing or unreachable
PostgreSQL into a failure, so CI can never pass without running them.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlmodel import Session, SQLModel

import bot.clock
import bot.models  # noqa: F401  (registers the tables)
from bot.clock import set_clock
from bot.database import make_engine, migrate
from tests.fakeslack.harness import NOW, SlackHarness, start_harness, stop_harness
from tests.plans import EXAMPLE_PLAN, import_plan_into_empty


def _fast_scratch_space() -> None:
    """Temporary files in memory, compiled test modules kept between runs.

    Every SQLite test database, tmp_path and PostgreSQL data directory a test makes is thrown away:
    on a disk, each commit's fsync waits for it (SQLite commits ~3 ms each, initdb seconds), on a
    tmpfs it does not. An explicit TMPDIR wins. PYTHONDONTWRITEBYTECODE (set on the shared
    machines, to keep __pycache__ out of the checkout) also stops pytest from caching its rewritten
    test modules, so every worker of every run parsed and rewrote all of them again (~4 s CPU per
    worker): they are cached outside the checkout instead, under the temporary directory."""
    memory = Path("/dev/shm")
    if not os.environ.get("TMPDIR") and memory.is_dir() and os.access(memory, os.W_OK):
        tempfile.tempdir = str(memory)
    if sys.dont_write_bytecode and sys.pycache_prefix is None:
        sys.pycache_prefix = str(Path(tempfile.gettempdir()) / f"kpibot-pycache-{os.getuid()}")
        sys.dont_write_bytecode = False


_fast_scratch_space()


def _skip_finalization_in_workers() -> None:
    """An xdist worker leaves without tearing down its interpreter.

    By the time atexit runs, a worker has sent every report to the controller and its fixtures
    have cleaned up after themselves. What is left is freeing a few hundred thousand objects one
    by one, which the controller waited for: 1.2 s for four modules, ~4.5 s after a full suite.
    Handlers registered after this conftest was imported run before it; those registered before
    (logging's flush among them) do not run, so it flushes the standard streams itself."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    atexit.register(leave)


_skip_finalization_in_workers()

POSTGRES_ENV = "KPIBOT_TEST_POSTGRES_URL"
_postgres_tests_run = 0


def _postgres_url() -> URL | None:
    raw = os.environ.get(POSTGRES_ENV)
    if not raw:
        if os.environ.get("KPIBOT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{POSTGRES_ENV} is not set but KPIBOT_REQUIRE_POSTGRES=1")
        pytest.skip(f"{POSTGRES_ENV} is not set")
    return sa.make_url(raw)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """A migrated, empty database for this test session: a SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("sqlite") / "kpibot.db"
        url = sa.make_url(f"sqlite:///{path}")
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
        return

    base = _postgres_url()
    assert base is not None
    # A database of this session's own, not only a schema: PostgreSQL's advisory locks (the
    # report writers' and the scheduler's) are per database, so sessions sharing one would wait
    # on, or deadlock with, each other's locks (xdist workers, other runs on the same server).
    name = f"kpibot_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
            # A test database never outlives a crash of the server: its commits need not wait for
            # the WAL to reach the disk (what is seen, and in what order, is the same).
            connection.execute(sa.text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {base.render_as_string(hide_password=True)} is unreachable: {exc.orig}")
    # The app's tables in a schema (tests/plans.py keeps copies of imported plans beside it).
    url = base.set(database=name).update_query_dict({"options": f"-csearch_path={name}"})
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engine(database_url: URL, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on the session's database; every table is emptied after the test."""
    global _postgres_tests_run
    if database_url.get_backend_name() == "postgresql":
        _postgres_tests_run += 1
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        _empty_tables(engine)
        engine.dispose()


def _empty_tables(engine: Engine) -> None:
    tables = [table.name for table in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name != "postgresql":
            for table in tables:  # children first (the one cycle, goal → kpi, is ON DELETE SET NULL)
                connection.execute(sa.text(f"DELETE FROM {table}"))
            return
        # TRUNCATE gives a table new, empty files, so the next test's rows are stored in the order
        # they are written, as in a fresh database (a DELETE leaves dead rows whose space later
        # rows may take). It costs per table: only the tables that have any page are emptied.
        with_pages = set(
            connection.execute(
                sa.text(
                    "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                    " AND relkind = 'r' AND pg_relation_size(oid) > 0"
                )
            ).scalars()
        )
        used = [table for table in tables if table in with_pages]  # one query, not one per table
        if used:
            connection.execute(sa.text(f"TRUNCATE {', '.join(used)} RESTART IDENTITY CASCADE"))
        connection.execute(  # a table left alone may have used its sequence (a rolled-back insert)
            sa.text(
                "SELECT setval(format('%I', sequencename)::regclass, start_value, false)"
                " FROM pg_sequences WHERE schemaname = current_schema() AND last_value IS NOT NULL"
            )
        )


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture(autouse=True)
def _real_clock() -> Iterator[None]:
    yield
    set_clock(None)


# ---------------------------------------------------------------- any date
# A test that must hold on every calendar day asks for `any_day`: it runs on today's date
# (Asia/Tokyo), or on KPIBOT_TEST_DATE when set. `.ci/run` runs these tests a second time at
# a drawn date (printed, so a failure can be reproduced), so a calendar-bound test fails in CI
# before it fails for a user. Such a test computes its expectations from the day it is given.
TEST_DATE_ENV = "KPIBOT_TEST_DATE"
ANY_DAY_MARK = "any_day"


def test_date() -> dt.date:
    raw = os.environ.get(TEST_DATE_ENV)
    if not raw:
        return dt.datetime.now(ZoneInfo("Asia/Tokyo")).date()
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise pytest.UsageError(f"{TEST_DATE_ENV} must be a date such as 2027-01-04, got {raw!r}") from None


def pytest_configure(config: pytest.Config) -> None:
    test_date()  # a malformed KPIBOT_TEST_DATE stops the run once, up front
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_WorkerCounts())
    config.addinivalue_line(
        "markers", f"{ANY_DAY_MARK}: holds on any date; runs at {TEST_DATE_ENV} (default: today)"
    )


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. A test spends about half its time waiting (on PostgreSQL's
    server, on the app's threads' answers, on a subprocess starting), and one worker per core left
    the cores idle that long: on 2 cores, 4 workers ran the suite in ~18% less wall time than 2
    (6 were slower again: each worker also collects the suite and sets up its databases)."""
    return 2 * len(os.sched_getaffinity(0))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that takes `any_day` is selectable with `-m any_day`, without a marker by hand.
    for item in items:
        if "any_day" in getattr(item, "fixturenames", ()):
            item.add_marker(ANY_DAY_MARK)


def pytest_report_header() -> str:
    return f"any_day tests run on {test_date().isoformat()} ({TEST_DATE_ENV} to change)"


@pytest.fixture
def any_day() -> dt.date:
    """The date under test, with the clock set to 10:00 of it in Tokyo."""
    day = test_date()
    set_clock(
        lambda: dt.datetime.combine(day, dt.time(10, 0), tzinfo=ZoneInfo("Asia/Tokyo")).astimezone(dt.UTC)
    )
    return day


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(f"PostgreSQL-backed tests run: {_postgres_tests_run}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist each worker counts its own; the controller adds them up (_WorkerCounts).
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["postgres_tests_run"] = _postgres_tests_run


class _WorkerCounts:
    """Registered only when pytest-xdist is loaded: its hook is unknown to pytest otherwise."""

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        global _postgres_tests_run
        _postgres_tests_run += int(getattr(node, "workeroutput", {}).get("postgres_tests_run", 0))


@pytest.fixture
def slack(engine: Engine) -> Iterator[SlackHarness]:
    """kpibot served over HTTP on 127.0.0.1, its Web API client pointed at a fake Slack,
    with the example plan imported and the clock at Monday 2026-11-30 10:00 JST."""
    harness = start_harness(engine)
    try:
        yield harness
    finally:
        stop_harness(harness)


@pytest.fixture
def example_plan(engine: Engine) -> Engine:
    """`engine` with the example plan imported, as `import_plan` into the empty database would
    leave it, its rows stamped at the harness's NOW (Monday 2026-11-30 10:00 JST) whatever the
    clock says, so that after a worker's first import it is written back from a snapshot
    (tests/plans.py). The clock is left as it was."""
    clock = bot.clock._now
    set_clock(lambda: NOW.astimezone(dt.UTC))
    try:
        import_plan_into_empty(engine, EXAMPLE_PLAN)
    finally:
        set_clock(clock)
    return engine
