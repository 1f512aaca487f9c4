"""deliveries: an index on created_at, for the retention sweep

Built CONCURRENTLY on PostgreSQL: a deployment that has kept every delivery so far may
hold hundreds of millions of rows, and a plain CREATE INDEX would stop the consumer's
and the worker's writes for as long as the build takes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 01:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_deliveries_created_at"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(INDEX, "deliveries", ["created_at"], unique=False)
        return
    # CONCURRENTLY cannot run inside a transaction. IF NOT EXISTS: a build cut off
    # half way leaves an invalid index behind, which a rerun must drop first (see
    # docs/deploy.md, "Upgrading").
    with op.get_context().autocommit_block():
        op.create_index(
            INDEX,
            "deliveries",
            ["created_at"],
            unique=False,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="deliveries")
