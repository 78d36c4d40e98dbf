"""The SQL source against real databases: a SQLite file, PostgreSQL and MariaDB (MySQL's protocol).

Each backend gets a `deals` table of its own; the fetcher is given the DSN through the environment
it is handed, exactly as the scheduler hands it the process's environment.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from bot.sources import sql
from bot.sources.fetching import FetchError, FetchRequest, SpecError
from tests.conftest import _postgres_url

MYSQL_ENV = "KPIBOT_TEST_MYSQL_URL"
MYSQL_DEFAULT = "mysql+pymysql://root@127.0.0.1:3306/test"
NOVEMBER = (dt.date(2026, 11, 1), dt.date(2026, 12, 1))
DEALS = [  # (won_on, amount, stage)
    (dt.date(2026, 10, 31), Decimal("100"), "won"),
    (dt.date(2026, 11, 1), Decimal("250.5"), "won"),
    (dt.date(2026, 11, 30), Decimal("300"), "won"),
    (dt.date(2026, 12, 1), Decimal("999"), "won"),  # the period's end is not in it
]


@dataclass
class Warehouse:
    backend: str
    url: str
    table: str
    sleep: str  # a query that runs for about five seconds

    def fetch(self, query: str, *, timeout: float = 10.0, dsn: str | None = None) -> Decimal:
        spec = {"connection": "WAREHOUSE", "query": query.replace("deals", self.table), "timeout": timeout}
        request = FetchRequest("won", "sql", spec, *NOVEMBER)
        return sql.fetch(request, {"KPIBOT_SQL_WAREHOUSE": dsn or self.url})

    def count(self) -> int:
        engine = sa.create_engine(self.url, poolclass=NullPool)
        with engine.connect() as connection:
            found = connection.execute(sa.text(f"SELECT COUNT(*) FROM {self.table}")).scalar_one()
        engine.dispose()
        return int(found)


def _fill(url: str, table: str) -> None:
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"CREATE TABLE {table} (won_on DATE, amount NUMERIC(12, 2), stage VARCHAR(16), note TEXT)"
            )
        )
        for won_on, amount, stage in DEALS:
            connection.execute(
                sa.text(f"INSERT INTO {table} (won_on, amount, stage) VALUES (:d, :a, :s)"),
                # sqlite3 binds neither dates nor decimals: the text SQLite itself would store.
                {"d": str(won_on), "a": str(amount), "s": stage}
                if url.startswith("sqlite")
                else {"d": won_on, "a": amount, "s": stage},
            )
    engine.dispose()


SQLITE_SLEEP = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000)"
    " SELECT count(*) FROM n"
)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    table = f"deals_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
        _fill(url, table)
        yield Warehouse("sqlite", url, table, SQLITE_SLEEP)
        return
    # PostgreSQL and MariaDB: a table of its own in the server's test database. Not a database of
    # its own: PostgreSQL 15's DROP DATABASE waits for a checkpoint of every dirty page on the
    # server, seconds in a busy suite.
    if request.param == "postgresql":
        base = _postgres_url()
        assert base is not None
        url, sleep = base.render_as_string(hide_password=False), "SELECT 1 FROM pg_sleep(5)"
        _fill(url, table)
    else:
        url, sleep = os.environ.get(MYSQL_ENV, MYSQL_DEFAULT), "SELECT SLEEP(5)"
        try:
            _fill(url, table)
        except sa.exc.OperationalError as exc:
            pytest.skip(f"MariaDB/MySQL at {MYSQL_ENV} ({url}) is unreachable: {exc.orig}")
    try:
        yield Warehouse(request.param, url, table, sleep)
    finally:
        engine = sa.create_engine(url, poolclass=NullPool)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE {table}"))
        engine.dispose()


def code(call: object) -> FetchError:
    with pytest.raises(FetchError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_counts_and_sums_in_the_half_open_period(warehouse: Warehouse) -> None:
    where = "WHERE won_on >= :period_start AND won_on < :period_end"
    assert warehouse.fetch(f"SELECT COUNT(*) FROM deals {where}") == 2
    assert warehouse.fetch(f"SELECT SUM(amount) FROM deals {where}") == Decimal("550.5")


def test_no_row_two_rows_text_and_null_are_refused_with_their_codes(warehouse: Warehouse) -> None:
    cases = {
        "no_row": "SELECT amount FROM deals WHERE stage = 'lost'",
        "many_rows": "SELECT amount FROM deals WHERE won_on >= :period_start AND won_on < :period_end",
        "not_a_number": "SELECT stage FROM deals WHERE won_on = :period_start",
        "null": "SELECT SUM(amount) FROM deals WHERE stage = 'lost'",
    }
    for expected, query in cases.items():
        error = code(lambda query=query: warehouse.fetch(query))
        assert (error.code, error.transient) == (expected, False), query


def test_a_query_past_its_timeout_is_stopped_by_the_database(warehouse: Warehouse) -> None:
    started = dt.datetime.now()
    error = code(lambda: warehouse.fetch(warehouse.sleep, timeout=0.5))
    assert error.code == "timeout" and error.transient
    assert dt.datetime.now() - started < dt.timedelta(seconds=4.5)  # stopped, not waited out


def test_a_query_that_writes_is_refused_and_writes_nothing(warehouse: Warehouse) -> None:
    writes = [
        "INSERT INTO deals (won_on, amount, stage) VALUES (:period_start, 1, 'won')",
        "UPDATE deals SET amount = 0",
        "DELETE FROM deals",
    ]
    for query in writes:
        error = code(lambda query=query: warehouse.fetch(query))
        assert error.code == "write_refused", (query, error)
    assert warehouse.count() == len(DEALS)


def test_a_dsn_that_does_not_connect(warehouse: Warehouse, tmp_path: Path) -> None:
    unreachable = {
        "sqlite": f"sqlite:///{tmp_path / 'missing.db'}",
        "postgresql": "postgresql://postgres@127.0.0.1:1/test",
        "mariadb": "mysql://root@127.0.0.1:1/test",
    }[warehouse.backend]
    error = code(lambda: warehouse.fetch("SELECT 1", dsn=unreachable))
    assert error.code == "connect" and error.transient
    assert not (tmp_path / "missing.db").exists()  # never created by a fetch


def test_a_missing_table_is_a_spec_error_not_a_retry(warehouse: Warehouse) -> None:
    error = code(lambda: warehouse.fetch("SELECT COUNT(*) FROM no_such_table"))
    assert (error.code, error.transient) == ("bad_spec", False)


def test_an_unset_connection_says_which_variable() -> None:
    request = FetchRequest("won", "sql", {"connection": "WAREHOUSE", "query": "SELECT 1"}, *NOVEMBER)
    error = code(lambda: sql.fetch(request, {}))
    assert (error.code, error.transient) == ("connect", False)
    assert "KPIBOT_SQL_WAREHOUSE" in str(error)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"query": "SELECT 1"}, "`connection` is required"),
        (
            {"connection": "postgresql://u:secret@db/x", "query": "SELECT 1"},
            "must not be written in the plan",
        ),
        ({"connection": "WAREHOUSE"}, "`query` is required"),
        ({"connection": "WAREHOUSE", "query": "SELECT :since"}, "unknown bind(s) :since"),
        ({"connection": "WAREHOUSE", "query": "SELECT 1", "dsn": "sqlite:///x"}, "unknown field(s) dsn"),
        ({"connection": "WAREHOUSE", "query": "SELECT 1", "timeout": 0}, "`timeout`"),
    ],
)
def test_spec_problems_are_found_at_import(spec: dict[str, object], says: str) -> None:
    with pytest.raises(SpecError, match=None) as caught:
        sql.validate(spec)
    assert says in str(caught.value)


def test_casts_and_quoted_colons_are_not_binds() -> None:
    sql.validate({"connection": "W", "query": "SELECT '10:00', x::int FROM t WHERE d >= :period_start"})
