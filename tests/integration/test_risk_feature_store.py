"""The online features in payment's database equal the offline training set's for the
same history: one definition, two ways of running it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ordermesh_cli.registry import load_service
from ordermesh_payment.risk.dataset import replay
from ordermesh_payment.risk.decision_log import unpack_features
from ordermesh_payment.risk.events import PaymentOutcome
from ordermesh_payment.risk.feature_store import FeatureStore
from ordermesh_payment.risk.features import MAX_RECENT, EntityKey, EntityState, digest, keys_of
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.risk.simulate import SimulationSettings, Simulator
from ordermesh_payment.store import risk_features
from ordermesh_platform.db import create_engine
from ordermesh_platform.migrations import alembic_config, upgrade_to_head

pytestmark = pytest.mark.integration

DEFINITION = RiskSettings().feature_definition()
EVENTS, _ = Simulator(SimulationSettings(orders=400, fraud_share=0.08, seed=21, days=4)).run()
PAYMENTS = [e for e in EVENTS if isinstance(e, PaymentOutcome)]


@pytest.fixture
async def engine(any_database: str) -> AsyncIterator[AsyncEngine]:
    await _payment_at(any_database, "head")
    engine = create_engine(any_database)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_online_features_equal_the_offline_replay_of_the_same_events(
    engine: AsyncEngine,
) -> None:
    store = FeatureStore(risk_features, DEFINITION)
    online = []
    for payment in PAYMENTS:  # as payment-service sees them: decide, then record
        async with engine.begin() as conn:
            [vector] = await store.vectors(conn, [payment.attempt])
            await store.apply(conn, [payment])
        online.append(vector)
    offline = [row.vector for row in replay(EVENTS, DEFINITION)]
    assert len(online) == len(offline) == 400
    assert online == offline


async def test_batches_applied_at_once_leave_the_states_one_by_one_would(
    engine: AsyncEngine,
) -> None:
    store = FeatureStore(risk_features, DEFINITION)
    for start in range(0, len(PAYMENTS), 50):
        async with engine.begin() as conn:
            await store.apply(conn, PAYMENTS[start : start + 50])
    async with engine.begin() as conn:  # a redelivered batch changes nothing
        await store.apply(conn, PAYMENTS[100:150])
    async with engine.connect() as conn:
        stored = await store.states(conn, keys_of(p.attempt for p in PAYMENTS))
    expected: dict[EntityKey, EntityState] = {}
    for payment in PAYMENTS:
        DEFINITION.apply(expected, payment)
    assert stored == expected


async def test_a_full_state_stays_in_its_row_and_is_updated_in_place_on_postgresql(
    pg_database: str,
) -> None:
    """A state of ``MAX_RECENT`` attempts is over PostgreSQL's 2 kB TOAST threshold:
    moved out of its row, each read and write of it would cost a second relation. And
    an update that finds no room on its row's page writes a new index entry too."""
    await _payment_at(pg_database, "head")
    customer = PAYMENTS[0].attempt
    # One customer's payments of one minute, each with a token of its own: a full state,
    # then updated payment by payment as the consumer would.
    payments = [
        PaymentOutcome(replace(customer, order_id=f"o{i}", at_ms=customer.at_ms + i,
                               token=f"tok-{i}"), False)
        for i in range(2 * MAX_RECENT)
    ]  # fmt: skip
    store = FeatureStore(risk_features, DEFINITION)
    engine = create_engine(pg_database)
    try:
        # One connection: its backend's counts are the ones flushed to the statistics.
        async with engine.connect() as conn:
            async with conn.begin():
                await store.apply(conn, payments[:MAX_RECENT])
            for payment in payments[MAX_RECENT:]:
                async with conn.begin():
                    await store.apply(conn, [payment])
            async with conn.begin():
                await conn.execute(text("SELECT pg_stat_force_next_flush()"))
        async with engine.connect() as conn:
            size = (await conn.execute(text(
                "SELECT pg_column_size(state) FROM risk_entity_state WHERE entity = :e"
            ), {"e": f"customer:{customer.customer_id}"})).scalar_one()  # fmt: skip
            toasted, updated, in_place = (await conn.execute(text(
                "SELECT pg_relation_size(c.reltoastrelid), s.n_tup_upd, s.n_tup_hot_upd"
                " FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid"
                " WHERE c.relname = 'risk_entity_state'"
            ))).one()  # fmt: skip
    finally:
        await engine.dispose()
    assert size > 2100  # as large as a state gets, and stored whole
    assert toasted == 0
    assert updated >= 3 * MAX_RECENT  # customer, device and address (every token is new)
    assert in_place == updated


async def test_the_migration_carries_version_1_states_over_as_bounded_columns(
    any_database: str,
) -> None:
    await _payment_at(any_database, "0007")
    at = datetime(2026, 12, 1, tzinfo=UTC)
    at_ms = int(at.timestamp() * 1000)
    recent = [[at_ms + i, 100 + i, i % 2, f"o{i}", f"tok-{i % 3}"] for i in range(MAX_RECENT + 6)]
    engine = create_engine(any_database)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO risk_feature_state VALUES (:e, :s, :t, :t)"),
                {"e": "customer:c1", "s": json.dumps([at_ms - 5, 7, 700, recent]), "t": at},
            )
        await _payment_at(any_database, "head")
        async with engine.connect() as conn:
            [(key, state)] = (await FeatureStore(risk_features, DEFINITION).states(
                conn, [("customer", "c1")]
            )).items()  # fmt: skip
    finally:
        await engine.dispose()
    kept = recent[-MAX_RECENT:]
    assert (key, state.first_seen_ms, state.approved, state.approved_minor) == (
        ("customer", "c1"), at_ms - 5, 7, 700,
    )  # fmt: skip
    assert list(state.at_ms) == [e[0] for e in kept]
    assert list(state.amount_minor) == [e[1] for e in kept]
    assert list(state.declined) == [e[2] for e in kept]
    assert not state.holds("o5")
    assert all(state.holds(str(e[3])) for e in kept)
    assert set(state.token) == {digest(f"tok-{i}") for i in range(3)}


async def test_the_migration_packs_the_logged_feature_vectors_and_back(
    any_database: str,
) -> None:
    await _payment_at(any_database, "0008")
    vector = [0.0, 3.0, 12345.0, 0.1, 1e-9, 2.718281828459045]
    at = datetime(2026, 12, 1, tzinfo=UTC)
    await _execute(
        any_database,
        "INSERT INTO risk_decisions (order_id, decided_at, variant, model_version, score,"
        " threshold, risk_declined, fallback, explored, propensity, declined, attempt,"
        " features) VALUES ('o1', :at, 'rules', 'rules', 0.2, 0.5, false, '', false, 1.0,"
        " false, '{}', :features)",
        {"at": at, "features": json.dumps(vector)},
    )
    read = "SELECT features FROM risk_decisions WHERE order_id = 'o1'"
    await _payment_at(any_database, "head")
    assert unpack_features(await _execute(any_database, read)) == vector
    await _payment_at(any_database, "0008")
    assert json.loads(await _execute(any_database, read)) == vector


async def _payment_at(database: str, revision: str) -> None:
    """Payment's schema at ``revision`` ("head": the latest), the database created first."""
    spec = load_service("payment")
    await upgrade_to_head(spec.migrations, database, spec.name)
    if revision != "head":
        config = alembic_config(spec.migrations, database, spec.name)
        await asyncio.to_thread(command.downgrade, config, revision)


async def _execute(database: str, sql: str, values: dict[str, Any] | None = None) -> Any:
    """One statement on a new engine (a schema change voids prepared statements)."""
    engine = create_engine(database)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), values or {})
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()
