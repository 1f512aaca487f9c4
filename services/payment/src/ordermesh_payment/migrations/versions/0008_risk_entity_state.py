"""risk: entity states as bounded columns of integers (features version 2)

Each JSON state of ``risk_feature_state`` is carried over into ``risk_entity_state``:
its newest ``MAX_RECENT`` attempts, order ids and tokens as their digests, the lifetime
counts unchanged. A downgrade leaves an empty ``risk_feature_state``: the features then
start cold, as on a fresh deployment (the digests cannot be turned back into ids).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 09:00:00.000000
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from ordermesh_payment.risk.features import MAX_RECENT, EntityState, digest

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 1000


def _carried_over(text: str) -> bytes:
    first_seen, approved, approved_minor, recent = json.loads(text)
    state = EntityState(first_seen, approved, approved_minor)
    for at_ms, amount_minor, declined, order_id, token in recent[-MAX_RECENT:]:
        state.insert(at_ms, amount_minor, bool(declined), digest(order_id), digest(token))
    return state.to_bytes()


def _state_columns(state: sa.types.TypeEngine[Any]) -> list[sa.schema.SchemaItem]:
    """Both tables' shape: the old one held the state as JSON text, the new as bytes."""
    return [
        sa.Column("entity", sa.String(length=300), nullable=False),
        sa.Column("state", state, nullable=False),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entity"),
    ]


def upgrade() -> None:
    new = op.create_table("risk_entity_state", *_state_columns(sa.LargeBinary()))
    old = sa.Table("risk_feature_state", sa.MetaData(), *_state_columns(sa.Text()))
    bind = op.get_bind()
    after = ""
    while True:  # in chunks by key: memory stays bounded on a big table
        rows = bind.execute(
            sa.select(old).where(old.c.entity > after).order_by(old.c.entity).limit(CHUNK)
        ).all()
        if not rows:
            break
        bind.execute(
            new.insert(),
            [
                {
                    "entity": r.entity,
                    "state": _carried_over(r.state),
                    "event_at": r.event_at,
                    "updated_at": r.updated_at,
                }
                for r in rows
            ],
        )
        after = rows[-1].entity
    op.drop_table("risk_feature_state")


def downgrade() -> None:
    op.create_table("risk_feature_state", *_state_columns(sa.Text()))
    op.drop_table("risk_entity_state")
