"""order trace context: the trace of the PlaceOrder call, for the recovery worker

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 08:25:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("traceparent", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("tracestate", sa.Text(), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("tracestate")
        batch_op.drop_column("traceparent")
