"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from bot.database import alembic_config, make_engine, migrate, require_current_schema, schema_revision
from bot.errors import SchemaOutOfDate


def test_autogenerate_finds_no_difference(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []


def test_database_is_at_head_and_migrate_is_idempotent(engine: Engine) -> None:
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert schema_revision(engine) == head
    migrate(engine)
    assert schema_revision(engine) == head


def test_checking_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "kpibot.db"
    engine = make_engine(f"sqlite:///{path}")

    with pytest.raises(SchemaOutOfDate, match="not initialised; run `kpibot migrate` first"):
        require_current_schema(engine)

    assert not path.exists()
    migrate(engine)  # migrating is what creates it
    require_current_schema(engine)
    engine.dispose()


def test_upgrading_a_populated_sqlite_database_keeps_countermeasures_linked_to_their_alerts(
    tmp_path: Path,
) -> None:
    """Migration 0004 rebuilds `alert` on SQLite; dropping the old table must not unlink the
    countermeasures logged against it (ON DELETE SET NULL), on the way up or back down."""
    engine = make_engine(f"sqlite:///{tmp_path / 'kpibot.db'}")
    migrate(engine, "0003")
    now = "2026-11-29 00:00:00"
    department = "sales", "営業部", "Sales", "ja", "Asia/Tokyo", "0 9 * * mon", 4, now, now
    kpi = "calls", "架電数", "Calls", 1, "count", "higher", "monthly", "process", "sum", 90, 70, 0, now, now
    rows = {
        "department (key, name_ja, name_en, locale, timezone, digest_cron, fiscal_year_start_month,"
        " created_at, updated_at)": [department],
        "kpi (key, name_ja, name_en, department_id, unit, direction, cadence, kind, aggregation, amber_pct,"
        " red_pct, position, created_at, updated_at)": [kpi],
        "alert (kpi_id, period, severity, status, channel_id, thread_ts, created_at, updated_at)": [
            (1, "2026-10", "red", "open", "C0SALES", "1.1", now, now),
            (1, "2026-11", "amber", "open", "C0SALES", "2.2", now, now),
        ],
        "countermeasure (kpi_id, alert_id, text, status, logged_by, created_at, updated_at)": [
            (1, 1, "架電を増やす", "planned", "U0SALES1", now, now),
            (1, 2, "台本を見直す", "doing", "U0SALES1", now, now),
            (1, None, "without an alert", "planned", "U0SALES1", now, now),
        ],
    }
    with engine.begin() as connection:
        for table, values in rows.items():
            marks = ", ".join("?" * len(values[0]))
            connection.exec_driver_sql(f"INSERT INTO {table} VALUES ({marks})", values)

    def links() -> list[tuple[int, int | None]]:
        with engine.connect() as connection:
            return [
                tuple(row) for row in connection.exec_driver_sql("SELECT id, alert_id FROM countermeasure")
            ]

    expected = [(1, 1), (2, 2), (3, None)]
    migrate(engine, "0004")
    assert links() == expected
    command.downgrade(alembic_config(engine), "0003")
    assert links() == expected
    migrate(engine)
    assert links() == expected
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT id, period FROM alert ORDER BY id").all() == [
            (1, "2026-10"),
            (2, "2026-11"),
        ]
        assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    engine.dispose()
