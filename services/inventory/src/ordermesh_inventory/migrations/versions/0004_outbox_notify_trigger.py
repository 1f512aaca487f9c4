"""outbox notify trigger: the outbox announces its inserts to the relays

On PostgreSQL a statement-level trigger sends the relays' NOTIFY: a writer no longer
sends it as a statement of its own after each outbox insert. SQLite: nothing to do.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 14:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

from ordermesh_messaging.outbox import create_notify_trigger, drop_notify_trigger

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_notify_trigger(op.get_bind())


def downgrade() -> None:
    drop_notify_trigger(op.get_bind())
