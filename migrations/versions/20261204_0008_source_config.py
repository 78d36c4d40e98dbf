"""source config: what a receiver needs besides the token (a HubSpot app's secret and its rules)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 00:00:00

- `source.config` (JSON, default `{}`): for a HubSpot source, the app's client secret and the
  rules that map a HubSpot event to +1 on a KPI (bot/sources/hubspot.py).

ADD COLUMN on both databases (downgrading, a native DROP COLUMN, SQLite 3.35+): no table rebuilt.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("source", sa.Column("config", sa.JSON(), server_default=sa.text("'{}'"), nullable=False))


def downgrade() -> None:
    op.get_bind().exec_driver_sql("ALTER TABLE source DROP COLUMN config")
