"""risk decisions: an index on decided_at, for the retention sweep

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 00:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_risk_decisions_decided_at", "risk_decisions", ["decided_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_risk_decisions_decided_at", table_name="risk_decisions")
