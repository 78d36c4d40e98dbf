"""`source: {kind: sql, …}`: a KPI's value from one read-only query against a named database.

    source:
      kind: sql
      connection: WAREHOUSE      # the DSN is in KPIBOT_SQL_WAREHOUSE, never in the plan
      query: >-
        select count(*) from deals
        where won_on >= :period_start and won_on < :period_end
      timeout: 20                # seconds (default 30, at most 300)

The DSN is a database URL: `postgresql://…`, `mysql://…` / `mariadb://…` (PyMySQL), or
`sqlite:///path` (opened read-only; a missing file is an error, never created). The period is
half-open, bound as dates: :period_start is its first day, :period_end the first day after it.

Each fetch opens its own connection (no pool: a scheduler fetches a few times an hour) and runs
the query in a read-only transaction with a statement timeout, so a query that writes is refused
by the database and one that runs long is stopped by it:

- PostgreSQL: `SET TRANSACTION READ ONLY` and `SET LOCAL statement_timeout`.
- MariaDB: `SET SESSION max_statement_time` (seconds); MySQL: `SET SESSION MAX_EXECUTION_TIME`
  (milliseconds, SELECT only); then `START TRANSACTION READ ONLY`. The client's read timeout is
  the backstop.
- SQLite: the file opened with `mode=ro`, `PRAGMA query_only`, and a progress handler that
  interrupts the query at its deadline.

The answer must be exactly one row of one column holding a number (an integer, a decimal or a
finite float; text is refused even if it looks like a number: the query should say what it means).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from bot.sources.fetching import FetchError, FetchRequest, SpecError

KIND = "sql"
ENV_PREFIX = "KPIBOT_SQL_"
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 300.0
QUERY_MAX = 10_000
BINDS = ("period_start", "period_end")
FIELDS = frozenset({"connection", "query", "timeout"})
_CONNECTION = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")
# A bind is `:name` not preceded by ':' (PostgreSQL's `::int` casts are not binds).
_BIND = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_STRING = re.compile(r"'(?:[^']|'')*'")
_DSN_HINTS = ("://", "@", "=", "/")
_DETAIL_MAX = 300

# Server error numbers (MySQL / MariaDB) and SQLSTATEs (PostgreSQL) that mean "stopped by the timeout"
# and "refused: the transaction is read-only".
_MYSQL_TIMEOUT: set[str | int] = {
    1969,
    3024,
    1317,
}  # max_statement_time exceeded / MAX_EXECUTION_TIME / interrupted
_MYSQL_READ_ONLY: set[str | int] = {1792}
_MYSQL_AUTH: set[str | int] = {1044, 1045, 1698}
_PG_TIMEOUT: set[str | int] = {"57014"}
_PG_READ_ONLY: set[str | int] = {"25006"}
_PG_AUTH: set[str | int] = {"28000", "28P01"}


def env_name(connection: str) -> str:
    return f"{ENV_PREFIX}{connection}"


def validate(spec: Mapping[str, object]) -> None:
    unknown = sorted(set(spec) - FIELDS - {"kind"})
    if unknown:
        raise SpecError(f"unknown field(s) {', '.join(unknown)}: a sql source has connection, query, timeout")
    connection = spec.get("connection")
    if isinstance(connection, str) and any(hint in connection for hint in _DSN_HINTS):
        raise SpecError(
            "`connection` names the environment variable holding the DSN "
            f"({ENV_PREFIX}<NAME>); a DSN must not be written in the plan"
        )
    if not isinstance(connection, str) or not _CONNECTION.match(connection):
        raise SpecError("`connection` is required: a name such as WAREHOUSE (capitals, digits, _)")
    query = spec.get("query")
    if not isinstance(query, str) or not query.strip():
        raise SpecError("`query` is required: one SELECT returning one number")
    if len(query) > QUERY_MAX:
        raise SpecError(f"`query` is longer than {QUERY_MAX:,} characters")
    unknown_binds = sorted(set(_binds(query)) - set(BINDS))
    if unknown_binds:
        names = ", ".join(f":{name}" for name in unknown_binds)
        raise SpecError(f"unknown bind(s) {names}: only :period_start and :period_end")
    _timeout(spec)


def _binds(query: str) -> list[str]:
    return _BIND.findall(_STRING.sub("''", query))


def _timeout(spec: Mapping[str, object]) -> float:
    raw = spec.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raw = None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= MAX_TIMEOUT:
        raise SpecError(f"`timeout` is a number of seconds, more than 0 and at most {MAX_TIMEOUT:g}")
    return float(raw)


def fetch(request: FetchRequest, env: Mapping[str, str]) -> Decimal:
    try:
        validate(request.spec)
    except SpecError as error:
        raise FetchError("bad_spec", str(error), transient=False) from error
    connection = str(request.spec["connection"])
    query = str(request.spec["query"])
    timeout = min(_timeout(request.spec), request.timeout_s)
    raw = env.get(env_name(connection))
    if not raw:
        raise FetchError("connect", f"{env_name(connection)} is not set", transient=False)
    try:
        url = _url(raw)
    except (ArgumentError, ValueError):
        raise FetchError(
            "bad_spec", f"{env_name(connection)} is not a database URL", transient=False
        ) from None
    binds = {"period_start": request.period_start, "period_end": request.period_end}
    backend = url.get_backend_name()
    if backend == "sqlite":
        rows, width = _sqlite(url, query, binds, timeout)
    elif backend in ("postgresql", "mysql"):
        rows, width = _server(url, query, binds, timeout)
    else:
        raise FetchError("bad_spec", f"{env_name(connection)}: {backend} is not supported", transient=False)
    return _one_number(rows, width)


def _url(raw: str) -> URL:
    url = sa.make_url(raw)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    elif url.drivername in ("mysql", "mariadb"):
        url = url.set(drivername="mysql+pymysql")
    return url


# -- running the query ------------------------------------------------------------------------------


def _server(
    url: URL, query: str, binds: Mapping[str, dt.date], timeout: float
) -> tuple[list[Sequence[Any]], int]:
    backend = url.get_backend_name()
    connect_timeout = max(1, math.ceil(min(timeout, 10)))
    if backend == "postgresql":
        connect_args: dict[str, Any] = {"connect_timeout": connect_timeout}
    else:
        # The read timeout is a backstop for a server that ignores the statement timeout.
        connect_args = {"connect_timeout": connect_timeout, "read_timeout": math.ceil(timeout) + 5}
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        try:
            connection = engine.connect()
        except DBAPIError as error:
            raise _connect_error(error) from None
        except SQLAlchemyError as error:
            raise FetchError("connect", _first_line(error)) from None
        with connection:
            try:
                if backend == "postgresql":
                    return _postgres(connection, query, binds, timeout)
                return _mysql(connection, query, binds, timeout)
            except DBAPIError as error:
                raise _query_error(error) from None
    finally:
        engine.dispose()


def _postgres(
    connection: Connection, query: str, binds: Mapping[str, dt.date], timeout: float
) -> tuple[list[Sequence[Any]], int]:
    with connection.begin() as transaction:
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
        result = connection.execute(sa.text(query), dict(binds))
        rows, width = _rows(result)
        transaction.rollback()  # read-only: nothing to keep
    return rows, width


def _mysql(
    connection: Connection, query: str, binds: Mapping[str, dt.date], timeout: float
) -> tuple[list[Sequence[Any]], int]:
    version = str(connection.exec_driver_sql("SELECT VERSION()").scalar_one())
    if "mariadb" in version.lower():
        connection.exec_driver_sql(f"SET SESSION max_statement_time = {max(timeout, 0.001):.3f}")
    else:
        connection.exec_driver_sql(f"SET SESSION MAX_EXECUTION_TIME = {max(1, int(timeout * 1000))}")
    connection.commit()  # SQLAlchemy's autobegun transaction: the read-only one starts next
    connection.exec_driver_sql("START TRANSACTION READ ONLY")
    try:
        result = connection.execute(sa.text(query), dict(binds))
        return _rows(result)
    finally:
        connection.exec_driver_sql("ROLLBACK")


def _rows(result: sa.CursorResult[Any]) -> tuple[list[Sequence[Any]], int]:
    if not result.returns_rows:
        return [], 0
    width = len(result.keys())
    return [tuple(row) for row in result.fetchmany(2)], width


def _sqlite(
    url: URL, query: str, binds: Mapping[str, dt.date], timeout: float
) -> tuple[list[Sequence[Any]], int]:
    path = url.database
    if not path or path == ":memory:":
        raise FetchError(
            "bad_spec", "a SQLite source needs a file (sqlite:///path/to/file.db)", transient=False
        )
    try:
        # mode=ro: never creates a missing file and never writes, whatever the query says.
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=min(timeout, 5.0))
    except sqlite3.Error as error:
        raise FetchError("connect", f"cannot open {path}: {error}") from None
    deadline = time.monotonic() + timeout
    interrupted: list[bool] = []

    def past_deadline() -> int:
        if time.monotonic() > deadline:
            interrupted.append(True)
            return 1
        return 0

    try:
        connection.execute("PRAGMA query_only = ON")
        connection.set_progress_handler(past_deadline, 10_000)
        # SQLite's own date functions compare text: bound as ISO dates.
        cursor = connection.execute(query, {name: day.isoformat() for name, day in binds.items()})
        width = len(cursor.description or ())
        rows = [tuple(row) for row in cursor.fetchmany(2)] if width else []
        return rows, width
    except sqlite3.OperationalError as error:
        text = str(error)
        if interrupted or "interrupted" in text:
            raise FetchError("timeout", f"the query ran longer than {timeout:g} s") from None
        if "readonly" in text or "read-only" in text or "query_only" in text:
            raise FetchError("write_refused", text, transient=False) from None
        if "unable to open" in text:
            raise FetchError("connect", f"cannot open {path}: {text}") from None
        raise FetchError("bad_spec", text[:_DETAIL_MAX], transient=False) from None
    except sqlite3.Error as error:
        raise FetchError("bad_spec", str(error)[:_DETAIL_MAX], transient=False) from None
    finally:
        connection.close()


# -- what the answer and the errors mean ------------------------------------------------------------


def _one_number(rows: list[Sequence[Any]], width: int) -> Decimal:
    if not rows:
        raise FetchError("no_row", "the query returned no row", transient=False)
    if len(rows) > 1:
        raise FetchError("many_rows", "the query returned more than one row", transient=False)
    if width != 1:
        raise FetchError(
            "bad_spec", f"the query returns {width} columns; one number expected", transient=False
        )
    value = rows[0][0]
    if value is None:
        raise FetchError("null", "the query returned NULL", transient=False)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        shown = str(value)[:40]
        raise FetchError("not_a_number", f"the query returned {shown!r}, not a number", transient=False)
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise FetchError("not_a_number", f"the query returned {value!r}", transient=False)
    return number


def _connect_error(error: DBAPIError) -> FetchError:
    codes = _codes(error)
    if codes & (_PG_AUTH | _MYSQL_AUTH):
        return FetchError("auth", _first_line(error), transient=False)
    return FetchError("connect", _first_line(error))


def _query_error(error: DBAPIError) -> FetchError:
    codes = _codes(error)
    detail = _first_line(error)
    if codes & (_PG_TIMEOUT | _MYSQL_TIMEOUT) or "timed out" in detail.lower():
        return FetchError("timeout", detail)
    if codes & (_PG_READ_ONLY | _MYSQL_READ_ONLY):
        return FetchError("write_refused", detail, transient=False)
    if isinstance(error, sa.exc.OperationalError) and not codes:
        return FetchError("connect", detail)
    return FetchError("bad_spec", detail, transient=False)


def _codes(error: DBAPIError) -> set[str | int]:
    """The SQLSTATE (psycopg, PyMySQL) and the server's error number (MySQL/MariaDB), as known."""
    orig = error.orig
    found: set[str | int] = set()
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        found.add(str(sqlstate))
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        found.add(args[0])
    return found


def _first_line(error: BaseException) -> str:
    # The driver's own message, not SQLAlchemy's (which repeats the SQL and its parameters).
    orig = getattr(error, "orig", None) or error
    args = getattr(orig, "args", ())
    text = str(args[1]) if len(args) > 1 and isinstance(args[0], int) else str(orig)
    return (text.strip().splitlines() or [type(orig).__name__])[0][:_DETAIL_MAX]
