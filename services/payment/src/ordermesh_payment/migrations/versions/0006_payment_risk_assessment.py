"""payments: risk scoring's outcome (score, decision, model version, variant)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 01:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Nullable, no default: adding them rewrites nothing, and NULL means "not scored".
COLUMNS = (
    ("risk_score", sa.Float()),
    ("risk_decision", sa.String(16)),
    ("risk_model_version", sa.String(128)),
    ("risk_variant", sa.String(16)),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("payments", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("payments", name)
