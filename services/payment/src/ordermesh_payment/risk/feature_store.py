"""The online features: each entity's state in payment's own database, moved by the
same ``FeatureDefinition`` that builds the offline training set."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_payment.risk.events import Attempt, PaymentOutcome
from ordermesh_payment.risk.features import (
    EntityKey,
    EntityState,
    FeatureDefinition,
    entity_keys,
    keys_of,
)
from ordermesh_platform.db import insert_rows, one_of

ENTITY_LENGTH = 300  # "token:" and a token of up to 256 characters


def risk_feature_table(metadata: MetaData) -> Table:
    return Table(
        "risk_entity_state",
        metadata,
        # "<kind>:<key>", e.g. "customer:c1": one row per customer, token, device, address.
        Column("entity", String(ENTITY_LENGTH), primary_key=True),
        Column("state", LargeBinary, nullable=False),  # EntityState.to_bytes
        # The newest event applied, and when: their difference is the features' lag.
        Column("event_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )


def _entity(key: EntityKey) -> str:
    return f"{key[0]}:{key[1]}"


def _key(entity: str) -> EntityKey:
    kind, _, key = entity.partition(":")
    return kind, key


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class FeatureStore:
    def __init__(self, table: Table, definition: FeatureDefinition) -> None:
        self.table = table
        self.definition = definition
        t = table
        self._get = select(t.c.entity, t.c.state).where(one_of(t.c.entity, "entities", False))
        self._get_pg = select(t.c.entity, t.c.state).where(one_of(t.c.entity, "entities", True))

    async def states(
        self, conn: AsyncConnection, keys: Collection[EntityKey], lock: bool = False
    ) -> dict[EntityKey, EntityState]:
        """The stored states of those entities that have one (one SELECT)."""
        if not keys:
            return {}
        postgres = conn.dialect.name == "postgresql"
        query = self._get_pg if postgres else self._get
        if lock and postgres:
            query = query.with_for_update()
        # Sorted: two writers of the same entities lock them in the same order.
        rows = await conn.execute(query, {"entities": sorted(map(_entity, keys))})
        return {_key(entity): EntityState.from_bytes(state) for entity, state in rows.all()}

    async def vectors(
        self, conn: AsyncConnection, attempts: Sequence[Attempt]
    ) -> list[list[float]]:
        """Each attempt's features, from the states as they are now (one SELECT for
        the batch: attempts of one batch do not see each other)."""
        states = await self.states(conn, keys_of(attempts))
        return [self.definition.vector(states, attempt) for attempt in attempts]

    async def apply(self, conn: AsyncConnection, outcomes: Sequence[PaymentOutcome]) -> None:
        """Move the states with the outcomes, in time order, in the caller's transaction."""
        if not outcomes:
            return
        ordered = sorted(outcomes, key=lambda o: (o.at_ms, o.attempt.order_id))
        states = await self.states(conn, keys_of(o.attempt for o in ordered), lock=True)
        newest: dict[EntityKey, int] = {}
        for outcome in ordered:
            self.definition.apply(states, outcome)
            for key in entity_keys(outcome.attempt):
                newest[key] = max(newest.get(key, 0), outcome.at_ms)
        now = datetime.now(UTC)
        rows = [
            {
                "entity": _entity(key),
                "state": states[key].to_bytes(),
                # The newest payment the state holds: a late one applied now leaves it.
                "event_at": _at(max(newest[key], *states[key].at_ms[-1:])),
                "updated_at": now,
            }
            for key in sorted(newest)
        ]
        # One upsert: the stored states were locked above; a new one is inserted.
        await insert_rows(
            conn, self.table, rows, conflict=("entity",), update=("state", "event_at", "updated_at")
        )
