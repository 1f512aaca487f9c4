"""risk: the decision log's feature vectors as packed float64s

Each logged vector, JSON text until now, becomes its floats' bytes (little-endian
float64s, ``decision_log.pack_features``): writing the JSON cost a ``repr`` per float,
in the authorization's transaction. A downgrade writes the vectors back as JSON.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 12:00:00.000000
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from ordermesh_payment.risk.decision_log import pack_features, unpack_features

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 1000


def _rewrite(
    old: sa.types.TypeEngine[Any], new: sa.types.TypeEngine[Any], convert: Callable[[Any], Any]
) -> None:
    """Every row's ``features`` through ``convert``, into a column of the new type."""
    op.add_column("risk_decisions", sa.Column("features_new", new, nullable=True))
    t = sa.table(
        "risk_decisions",
        sa.column("order_id", sa.String),
        sa.column("features", old),
        sa.column("features_new", new),
    )
    bind = op.get_bind()
    after = ""
    while True:  # in chunks by key: memory stays bounded on a big log
        rows = bind.execute(
            sa.select(t.c.order_id, t.c.features)
            .where(t.c.order_id > after)
            .order_by(t.c.order_id)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        bind.execute(
            t.update()
            .where(t.c.order_id == sa.bindparam("b_order_id"))
            .values(features_new=sa.bindparam("b_features")),
            [{"b_order_id": r.order_id, "b_features": convert(r.features)} for r in rows],
        )
        after = rows[-1].order_id
    with op.batch_alter_table("risk_decisions") as batch:
        batch.drop_column("features")
        batch.alter_column(
            "features_new", new_column_name="features", existing_type=new, nullable=False
        )


def upgrade() -> None:
    _rewrite(sa.Text(), sa.LargeBinary(), lambda text: pack_features(json.loads(text)))


def downgrade() -> None:
    _rewrite(
        sa.LargeBinary(),
        sa.Text(),
        lambda data: json.dumps(unpack_features(data), separators=(",", ":")),
    )
