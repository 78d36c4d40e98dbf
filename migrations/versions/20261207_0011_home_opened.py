"""home_opened: when each person last opened their App Home tab

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 00:00:00

A change (a report, a closed countermeasure, an acknowledged alert) refreshes the App Home only of
those who opened it lately; a tab opened again is published afresh on `app_home_opened` anyway.
A new table on both databases; nothing else changes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op


revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "home_opened",
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_home_opened")),
    )


def downgrade() -> None:
    op.drop_table("home_opened")
