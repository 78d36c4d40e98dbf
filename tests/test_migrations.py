"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
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
