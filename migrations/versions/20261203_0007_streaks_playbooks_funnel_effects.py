"""streaks, playbooks, the funnel, effects: a review that diagnoses (issue #15)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:00:00

- `alert.reason` may be `streak` (its CHECK widened); `alert.posted_reason`: the reason the
  message shows, so a streak escalates a posted alert once.
- `kpi.streak` (finished periods in a row below amber, default 3) and `kpi.playbooks`
  (countermeasures agreed in advance, JSON).
- `countermeasure.verdict` (the effect's verdict last said) and `countermeasure.closed_at`.
- `funnel_stage`: the division's funnel, stage by stage.

As 0006: on SQLite every change is an ADD COLUMN (downgrading, a native DROP COLUMN) and the
CHECK is widened by editing its text in sqlite_schema; no table is rebuilt.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_REASONS = ("below_target", "pace", "missing")
NEW_REASONS = (*OLD_REASONS, "streak")
ADDED = {
    "kpi": (
        sa.Column("streak", sa.Integer(), server_default="3", nullable=False),
        sa.Column("playbooks", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
    ),
    "countermeasure": (
        sa.Column("verdict", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    ),
}


def _check(column: str, values: Sequence[str]) -> str:
    return f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def _edit_sqlite_schema(table: str, before: str, after: str) -> None:
    connection = op.get_bind()
    sql = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    if sql.count(before) != 1:
        raise RuntimeError(f"{table}: expected one CHECK ({before}) in its schema")
    version = connection.exec_driver_sql("PRAGMA schema_version").scalar_one()
    connection.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        connection.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
            (sql.replace(before, after), table),
        )
        connection.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        connection.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = connection.exec_driver_sql(f"PRAGMA integrity_check({table})").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"{table} after widening its CHECK: {'; '.join(problems)}")


def _set_reason_check(before: Sequence[str], after: Sequence[str]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_alert_alertreason"), "alert", type_="check")
        op.create_check_constraint(op.f("ck_alert_alertreason"), "alert", _check("reason", after))
        return
    _edit_sqlite_schema("alert", _check("reason", before), _check("reason", after))


def _add_posted_reason() -> None:
    connection = op.get_bind()
    check = _check("posted_reason", NEW_REASONS)
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(
            "ALTER TABLE alert ADD COLUMN posted_reason VARCHAR(16)"
            f" CONSTRAINT ck_alert_posted_reason CHECK ({check})"
        )
        return
    op.add_column("alert", sa.Column("posted_reason", sa.String(length=16), nullable=True))
    op.create_check_constraint(op.f("ck_alert_posted_reason"), "alert", check)


def upgrade() -> None:
    op.create_table(
        "funnel_stage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kpi_id", sa.Integer(), nullable=False),
        sa.Column("conversion_pct", sa.Numeric(20, 6).with_variant(sa.Text(), "sqlite"), nullable=True),
        sa.Column("leak_pct", sa.Numeric(20, 6).with_variant(sa.Text(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["kpi_id"], ["kpi.id"], name=op.f("fk_funnel_stage_kpi_id_kpi"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_funnel_stage")),
        sa.UniqueConstraint("kpi_id", name=op.f("uq_funnel_stage_kpi_id")),
        sa.UniqueConstraint("position", name=op.f("uq_funnel_stage_position")),
    )
    for table, columns in ADDED.items():
        for column in columns:
            op.add_column(table, column._copy())
    _add_posted_reason()
    _set_reason_check(OLD_REASONS, NEW_REASONS)


def downgrade() -> None:
    connection = op.get_bind()
    if connection.scalar(sa.text("SELECT count(*) FROM alert WHERE reason = 'streak'")):
        raise RuntimeError("alert holds streak alerts; revision 0006 cannot store them")
    if connection.dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_alert_posted_reason"), "alert", type_="check")
    # Native DROP COLUMN on SQLite 3.35+ and PostgreSQL: no table rebuild. (SQLite refuses to
    # drop a column a CHECK names: the column's own CHECK goes with its definition first.)
    if connection.dialect.name == "sqlite":
        check = f" CONSTRAINT ck_alert_posted_reason CHECK ({_check('posted_reason', NEW_REASONS)})"
        _edit_sqlite_schema("alert", check, "")
    connection.exec_driver_sql("ALTER TABLE alert DROP COLUMN posted_reason")
    _set_reason_check(NEW_REASONS, OLD_REASONS)
    for table, columns in ADDED.items():
        for column in columns:
            connection.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column.name}")
    op.drop_table("funnel_stage")
