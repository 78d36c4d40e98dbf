"""Engine, sessions and migrations: the one way kpibot talks to its database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from bot.errors import DatabaseUnavailable, SchemaOutOfDate
from bot.resources import MIGRATIONS_DIR


def make_engine(url: URL | str, **kwargs: Any) -> Engine:
    url = sa.make_url(url)
    if url.get_backend_name() == "sqlite":
        # Several threads (Bolt's listener pool, the scheduler) share one SQLite file.
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        # Enough connections for Bolt's listener threads (handlers/app.py) without queueing.
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    return sa.create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite opens transactions lazily, on its own terms: a SAVEPOINT issued first would
    # then be the outermost transaction and its RELEASE a commit. We say BEGIN ourselves.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


# An execution option: the transaction only reads (`reading`).
READ_ONLY = "kpibot_read_only"


def _sqlite_begin(connection: Any) -> None:
    if connection.get_execution_options().get(READ_ONLY):
        # Deferred: under WAL a reader sees the last commit and never waits for the write lock.
        connection.exec_driver_sql("BEGIN")
        return
    # IMMEDIATE takes the write lock up front, so two writers queue on the busy timeout
    # instead of one failing at once when it upgrades a read lock.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        raise DatabaseUnavailable(f"cannot connect to the database at {safe_url(engine)}: {reason}") from None


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            # SQLite reports schema problems as OperationalError too: keep the driver's reason.
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "operational error"
            raise DatabaseUnavailable(f"the database at {safe_url(engine)} is unavailable: {reason}") from exc
        except BaseException:
            session.rollback()
            raise


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A unit of work that only reads: what an ack path may do. On SQLite every other transaction
    takes the write lock up front (BEGIN IMMEDIATE), and a burst of saves holds it in turn for
    seconds; this one begins deferred and reads the last commit without waiting. A flush of
    changes in it is refused (it would take the lock after all)."""
    with transaction(engine.execution_options(**{READ_ONLY: True})) as session:
        sa.event.listen(session, "before_flush", _refuse_writes)
        yield session


def _refuse_writes(session: Session, *_args: Any) -> None:
    raise RuntimeError("a reading transaction (bot.database.reading) does not write")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py uses this engine rather than building its own, so tests can pass theirs.
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    check_connection(engine)
    command.upgrade(alembic_config(engine), revision)


def schema_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_current_schema(engine: Engine) -> None:
    """Refuse to work on a database that is missing migrations, with the fix in the message.

    Only looks: a SQLite file that does not exist is "not initialised" without connecting, since
    connecting would create it (`kpibot serve` on a fresh machine must not leave an empty file)."""
    if _sqlite_file_missing(engine):
        current = None
    else:
        check_connection(engine)
        current = schema_revision(engine)
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    if current != head:
        state = "not initialised" if current is None else f"at revision {current}, code expects {head}"
        raise SchemaOutOfDate(f"the database at {safe_url(engine)} is {state}; run `kpibot migrate` first")


def _sqlite_file_missing(engine: Engine) -> bool:
    """Whether the engine is on a SQLite file that does not exist yet (in-memory databases exist)."""
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    if url.query.get("uri") in ("true", "1") and database.startswith("file:"):
        if url.query.get("mode") == "memory":
            return False
        database = database.removeprefix("file:")
    if database in ("", ":memory:"):
        return False
    return not Path(database).exists()
