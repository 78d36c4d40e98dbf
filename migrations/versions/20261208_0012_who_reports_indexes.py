"""indexes on kpi.owner_user_id and department.head_user_id

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 00:00:00

What a user may report (the report form, `/kpi list`, their App Home tab) is the KPIs they own and
those of the departments they head. Without these indexes each lookup read every KPI of the
division; with them it reads the user's own. Two indexes on both databases; no data changes.
"""

from collections.abc import Sequence

from alembic import op


revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_kpi_owner_user_id"), "kpi", ["owner_user_id"], unique=False)
    op.create_index(op.f("ix_department_head_user_id"), "department", ["head_user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_department_head_user_id"), table_name="department")
    op.drop_index(op.f("ix_kpi_owner_user_id"), table_name="kpi")
