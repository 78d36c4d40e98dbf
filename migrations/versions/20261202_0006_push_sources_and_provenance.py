"""push sources and provenance: the `source` table, where an actual came from, replayable answers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:00:00

- `source`: the systems allowed to push actuals (only hashes of their tokens).
- `actual.source_name`, `actual.external_id`: which source sent a value, and the sender's own id.
- `actual.source` may be `hubspot` too: its CHECK constraint is widened.
- `processed_request.request_hash`, `response_status`, `response_body`: the answer an
  Idempotency-Key (or webhook-id) replays.

On SQLite every change is an ADD COLUMN (or, downgrading, a native DROP COLUMN, SQLite 3.35+)
and the CHECK is widened by editing its text in sqlite_schema, as 0005 does: no table is
rebuilt, because rebuilding `actual` drops it, and with foreign_keys=ON dropping a table that
its own rows reference (superseded_by_id, ON DELETE SET NULL) would clear the correction chain.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SOURCES = ("command", "modal", "csv", "api", "demo")
NEW_SOURCES = (*OLD_SOURCES, "hubspot")
def _added() -> dict[str, tuple[sa.Column, ...]]:
    return {
        "actual": (
            sa.Column("source_name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
            sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        ),
        "processed_request": (
            sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
            sa.Column("response_status", sa.Integer(), nullable=True),
            sa.Column("response_body", sa.Text(), nullable=True),
        ),
    }


def _check(values: Sequence[str]) -> str:
    return "source IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def _set_source_check(before: Sequence[str], after: Sequence[str]) -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_actual_source"), "actual", type_="check")
        op.create_check_constraint(op.f("ck_actual_source"), "actual", _check(after))
        return
    sql = connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'actual'")
    text = sql.scalar_one()
    if text.count(_check(before)) != 1:
        raise RuntimeError(f"actual: expected one CHECK ({_check(before)}) in its schema")
    version = connection.exec_driver_sql("PRAGMA schema_version").scalar_one()
    connection.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        connection.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'actual'",
            (text.replace(_check(before), _check(after)),),
        )
        connection.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        connection.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = connection.exec_driver_sql("PRAGMA integrity_check(actual)").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"actual after widening its CHECK: {'; '.join(problems)}")


def upgrade() -> None:
    op.create_table(
        "source",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("token_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("signing_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kpi_keys", sa.JSON(), nullable=False),
        sa.Column("department_keys", sa.JSON(), nullable=False),
        sa.Column("rate_per_minute", sa.Integer(), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        sa.Column("bucket_tokens", sa.Float(), nullable=False),
        sa.Column("bucket_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source")),
        sa.UniqueConstraint("name", name=op.f("uq_source_name")),
        sa.UniqueConstraint("token_id", name=op.f("uq_source_token_id")),
    )
    for table, columns in _added().items():
        for column in columns:
            op.add_column(table, column)
    _set_source_check(OLD_SOURCES, NEW_SOURCES)


def downgrade() -> None:
    connection = op.get_bind()
    if connection.scalar(sa.text("SELECT count(*) FROM actual WHERE source = 'hubspot'")):
        raise RuntimeError("actual holds values from HubSpot; revision 0005 cannot store them")
    _set_source_check(NEW_SOURCES, OLD_SOURCES)
    for table, columns in _added().items():
        for column in columns:
            # Native DROP COLUMN on SQLite 3.35+ and PostgreSQL: no table rebuild.
            connection.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column.name}")
    op.drop_table("source")
