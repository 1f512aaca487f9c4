"""The decision log's retention on PostgreSQL: decisions older than the retention go,
in bounded chunks, younger ones stay; payment-service runs the sweep by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from ordermesh_cli.registry import load_service
from ordermesh_payment.risk.decision_log import DecisionLog
from ordermesh_payment.store import risk_decisions
from ordermesh_platform.db import Transactions, create_engine
from ordermesh_platform.migrations import upgrade_to_head
from tests.support.services import running_service

pytestmark = pytest.mark.integration

RETENTION = timedelta(days=120)
# Days before now each decision was made: the first five are past the retention.
AGES_D = {"old-1": 400, "old-2": 200, "old-3": 150, "old-4": 121, "old-5": 120.01,
          "young-1": 119.9, "young-2": 45, "young-3": 0}  # fmt: skip


def _decision(order_id: str, age_days: float) -> dict[str, object]:
    return {
        "order_id": order_id,
        "decided_at": datetime.now(UTC) - timedelta(days=age_days),
        "variant": "rules", "model_version": "rules", "score": 0.0, "threshold": 0.5,
        "risk_declined": False, "fallback": "", "explored": False, "propensity": 1.0,
        "declined": False, "attempt": "{}", "features": b"",
    }  # fmt: skip


@pytest.fixture
async def sessions(pg_database: str) -> AsyncIterator[Transactions]:
    spec = load_service("payment")
    await upgrade_to_head(spec.migrations, pg_database, spec.name)
    engine = create_engine(pg_database)
    async with engine.begin() as conn:
        await conn.execute(insert(risk_decisions), [_decision(o, age) for o, age in AGES_D.items()])
    try:
        yield Transactions(engine)
    finally:
        await engine.dispose()


async def _left(sessions: Transactions) -> set[str]:
    async with sessions() as conn:
        return set((await conn.scalars(select(risk_decisions.c.order_id))).all())


async def test_old_decisions_go_in_chunks_and_young_ones_stay(sessions: Transactions) -> None:
    swept = await DecisionLog(risk_decisions).sweep(sessions, RETENTION, chunk=2)
    assert swept == 5  # three chunks: 2, 2, 1
    assert await _left(sessions) == {"young-1", "young-2", "young-3"}
    assert await DecisionLog(risk_decisions).sweep(sessions, RETENTION, chunk=2) == 0


async def test_payment_service_sweeps_the_decision_log_by_itself(
    pg_database: str, sessions: Transactions
) -> None:
    async with running_service(
        load_service("payment"),
        pg_database,
        risk_decision_retention_days=RETENTION.days,
        risk_decision_sweep_interval_s=0.05,
    ):
        for _ in range(400):  # until the worker's first pass is visible
            if await _left(sessions) == {"young-1", "young-2", "young-3"}:
                break
            await asyncio.sleep(0.05)
    assert await _left(sessions) == {"young-1", "young-2", "young-3"}
