"""fetched sources: a KPI's `source:`, its fetch runs and health; fetched values and admin notices

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 00:00:00

- `kpi.fetch_source` (JSON), `kpi.fetch_every_s`, `kpi.fetch_max_age_s`: where a KPI's value is
  fetched from (issue #13), how often, and how old it may get before the digest calls it stale.
- `fetch_run`: every fetch (when, which KPI and period, value or error, duration); its unique
  (kpi_id, period, slot) is the claim that lets two schedulers fetch a slot once.
- `fetch_state`: each sourced KPI's health as the admins were told it.
- `actual.source` may be `fetch`, `post.kind` may be `notice`: their CHECKs widened.

As 0006 and 0007: on SQLite every change is an ADD COLUMN (downgrading, a native DROP COLUMN) or
a new table, and the CHECKs are widened by editing their text in sqlite_schema; no table rebuilt.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op


revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SOURCES = ("command", "modal", "csv", "api", "demo", "hubspot")
OLD_KINDS = ("digest", "summary", "reminder", "alert", "followup", "review")
# (table, column, CHECK constraint, values before, values after)
WIDENED = (
    ("actual", "source", "ck_actual_source", OLD_SOURCES, (*OLD_SOURCES, "fetch")),
    ("post", "kind", "ck_post_postkind", OLD_KINDS, (*OLD_KINDS, "notice")),
)


def _kpi_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("fetch_source", sa.JSON(), nullable=True),
        sa.Column("fetch_every_s", sa.Integer(), nullable=True),
        sa.Column("fetch_max_age_s", sa.Integer(), nullable=True),
    )


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def _set_check(table: str, column: str, name: str, before: Sequence[str], after: Sequence[str]) -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        op.drop_constraint(op.f(name), table, type_="check")
        op.create_check_constraint(op.f(name), table, _in(column, after))
        return
    sql = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    old, new = _in(column, before), _in(column, after)
    if sql.count(old) != 1:
        raise RuntimeError(f"{table}: expected one CHECK ({old}) in its schema")
    version = connection.exec_driver_sql("PRAGMA schema_version").scalar_one()
    connection.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        connection.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
            (sql.replace(old, new), table),
        )
        connection.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        connection.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = connection.exec_driver_sql(f"PRAGMA integrity_check({table})").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"{table} after changing its CHECK: {'; '.join(problems)}")


def upgrade() -> None:
    for column in _kpi_columns():
        op.add_column("kpi", column)
    op.create_table(
        "fetch_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kpi_id", sa.Integer(), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("slot", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("value", sa.Numeric(20, 6).with_variant(sa.Text(), "sqlite"), nullable=True),
        sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("error_detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["kpi_id"], ["kpi.id"], name=op.f("fk_fetch_run_kpi_id_kpi"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fetch_run")),
        sa.UniqueConstraint("kpi_id", "period", "slot", name=op.f("uq_fetch_run_kpi_id_period_slot")),
    )
    op.create_index(op.f("ix_fetch_run_kpi_id"), "fetch_run", ["kpi_id"], unique=False)
    op.create_table(
        "fetch_state",
        sa.Column("kpi_id", sa.Integer(), nullable=False),
        sa.Column("failing", sa.Boolean(), nullable=False),
        sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("error_detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_good_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["kpi_id"], ["kpi.id"], name=op.f("fk_fetch_state_kpi_id_kpi"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("kpi_id", name=op.f("pk_fetch_state")),
    )
    for table, column, name, before, after in WIDENED:
        _set_check(table, column, name, before, after)


def downgrade() -> None:
    connection = op.get_bind()
    if connection.scalar(sa.text("SELECT count(*) FROM actual WHERE source = 'fetch'")):
        raise RuntimeError("actual holds fetched values; revision 0009 cannot store them")
    # Notices are a log of what the admins were told; 0009 has no kind for them.
    connection.execute(sa.text("DELETE FROM post WHERE kind = 'notice'"))
    for table, column, name, before, after in WIDENED:
        _set_check(table, column, name, after, before)
    op.drop_table("fetch_state")
    op.drop_index(op.f("ix_fetch_run_kpi_id"), table_name="fetch_run")
    op.drop_table("fetch_run")
    for column in _kpi_columns():
        # Native DROP COLUMN on SQLite 3.35+ and PostgreSQL: no table rebuild.
        connection.exec_driver_sql(f"ALTER TABLE kpi DROP COLUMN {column.name}")
