"""orders owing work: a partial index for the recovery worker's scan

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 20:10:00.000000

The recovery worker asks every second for the oldest orders that still owe work. With
only the (work, lease_until) index, PostgreSQL answered that with a sequential scan of
every order ever placed: 0.2 s a pass at 140,000 orders, and growing with the table.
This index holds only the orders that owe work, so the scan stays as cheap as the
backlog is short.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_orders_owing_work",
            ["created_at"],
            unique=False,
            postgresql_where=sa.text("work <> ''"),
            sqlite_where=sa.text("work <> ''"),
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_owing_work")
