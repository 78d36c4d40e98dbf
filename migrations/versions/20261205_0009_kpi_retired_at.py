"""kpi.retired_at: a KPI retired from the plan in Slack keeps its history (issue #14)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 00:00:00

A retired KPI is no longer reported, scored, alerted on or exported with the plan; its actuals,
targets, alerts and countermeasures stay. An ADD COLUMN on both databases (no table rebuilt).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("kpi", sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("kpi", "retired_at")
