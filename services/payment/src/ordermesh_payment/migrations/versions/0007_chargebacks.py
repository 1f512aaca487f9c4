"""chargebacks: payment's risk labels, its inbox, the simulated provider's ledger

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "risk_chargebacks",
        sa.Column("order_id", sa.String(128), primary_key=True),
        sa.Column("charged_back_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"])
    op.create_table(
        "simulated_psp_chargebacks",
        sa.Column("order_id", sa.String(128), primary_key=True),
        sa.Column("psp_reference", sa.String(128), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_simulated_psp_chargebacks_due",
        "simulated_psp_chargebacks",
        ["due_at"],
        postgresql_where=sa.text("reported_at IS NULL"),
        sqlite_where=sa.text("reported_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_simulated_psp_chargebacks_due", table_name="simulated_psp_chargebacks")
    op.drop_table("simulated_psp_chargebacks")
    op.drop_index("ix_inbox_handled_at", table_name="inbox")
    op.drop_table("inbox")
    op.drop_table("risk_chargebacks")
