"""Migration 0010 (fetched sources) up, down and up again, on a fresh SQLite file and a fresh
PostgreSQL schema: the schema matches the models at head, 0009 cannot hold a fetched value,
and the CHECKs it widened are narrow again after the downgrade."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import bot.models  # noqa: F401  (registers the tables)
from bot.database import alembic_config, make_engine, migrate, schema_revision
from tests.conftest import _postgres_url

NOW = "2026-12-02 00:00:00+00:00"


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'kpibot.db'}")
        yield engine
        engine.dispose()
        return
    base = _postgres_url()
    assert base is not None
    # A fresh schema, not a fresh database: DROP DATABASE waits for a checkpoint of every dirty
    # page on the server (PostgreSQL 15), seconds in a busy suite.
    name = f"kpibot_mig_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    engine = make_engine(base.update_query_dict({"options": f"-csearch_path={name}"}))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)


def _seed(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO department (key, name_ja, name_en, locale, timezone, digest_cron,"
                " fiscal_year_start_month, holiday_shift, is_division, created_at, updated_at)"
                " VALUES ('mkt', 'マーケ', 'Marketing', 'ja', 'Asia/Tokyo', '0 9 * * mon', 4, false, false,"
                " :now, :now)"
            ),
            {"now": NOW},
        )
        connection.execute(
            sa.text(
                "INSERT INTO kpi (key, name_ja, name_en, department_id, unit, direction, cadence, kind,"
                " aggregation, amber_pct, red_pct, position, streak, playbooks, created_at, updated_at)"
                " VALUES ('mqls', 'MQL', 'MQLs', 1, 'count', 'higher', 'monthly', 'process', 'sum',"
                " '90', '70', 0, 3, '[]', :now, :now)"
            ),
            {"now": NOW},
        )


def _insert_fetched(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO actual (kpi_id, period, value, reported_by, reported_at, source)"
                " VALUES (1, '2026-11', '42', 'source:sql', :now, 'fetch')"
            ),
            {"now": NOW},
        )


# The head the way down starts from and the way up ends at (0011, home_opened, and 0012, the
# reporters' indexes, are on the way).
HEAD = "0012"


def test_0010_up_down_up(fresh: Engine) -> None:
    migrate(fresh)
    assert schema_revision(fresh) == HEAD
    assert _differences(fresh) == []
    _seed(fresh)
    _insert_fetched(fresh)
    with fresh.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO fetch_run (kpi_id, period, slot, kind, status, value, attempts, started_at)"
                " VALUES (1, '2026-11', 't1', 'sql', 'stored', '42', 1, :now)"
            ),
            {"now": NOW},
        )
        connection.execute(
            sa.text(
                "INSERT INTO post (department_id, kind, period, subject, status, attempts, claimed_at)"
                " VALUES (1, 'notice', 'e1', '1:U0ADMIN', 'sent', 1, :now)"
            ),
            {"now": NOW},
        )

    # 0009 cannot say where a fetched value came from: refused, and nothing changed.
    with pytest.raises(RuntimeError, match="fetched values"):
        command.downgrade(alembic_config(fresh), "0009")
    with fresh.begin() as connection:
        connection.execute(sa.text("DELETE FROM actual"))
    command.downgrade(alembic_config(fresh), "0009")
    assert schema_revision(fresh) == "0009"
    inspector = sa.inspect(fresh)
    assert "fetch_run" not in inspector.get_table_names()
    assert "fetch_state" not in inspector.get_table_names()
    assert "home_opened" not in inspector.get_table_names()  # 0011, on the way down
    columns = {column["name"] for column in inspector.get_columns("kpi")}
    assert not {"fetch_source", "fetch_every_s", "fetch_max_age_s"} & columns
    with pytest.raises(sa.exc.IntegrityError):
        _insert_fetched(fresh)  # the CHECK is narrow again
    with fresh.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM post")).scalar_one() == 0
        assert connection.execute(sa.text("SELECT key FROM kpi")).scalars().all() == ["mqls"]

    migrate(fresh)
    assert schema_revision(fresh) == HEAD
    assert _differences(fresh) == []
    _insert_fetched(fresh)
    with fresh.connect() as connection:
        assert connection.execute(sa.text("SELECT source FROM actual")).scalars().all() == ["fetch"]
