"""outbox without its published_at index: the relay deletes what it published

The index served a retention sweep over rows marked published. The relay deletes the
rows it published in the pass that published them, so every entry of the index was
NULL and each outbox insert paid for one nobody read. Rows an older release marked are
still swept (a sequential scan once a minute over an outbox that is normally near
empty).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 03:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

from ordermesh_messaging.outbox import create_published_at_index, drop_published_at_index

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    drop_published_at_index(op.get_bind())


def downgrade() -> None:
    create_published_at_index(op.get_bind())
