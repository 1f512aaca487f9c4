"""Waiting, within a bound, for payment's consumer to bring the risk features up to
date: an authorization's outcome reaches them through the payment events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from ordermesh_payment.risk.feature_store import FeatureStore
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.store import risk_features
from ordermesh_platform.db import create_engine

STORE = FeatureStore(risk_features, RiskSettings().feature_definition())


async def until_features_hold(
    database_url: str, customer_id: str, order_ids: Iterable[str], timeout_s: float = 20.0
) -> float:
    """Seconds until the customer's features hold the payments of these orders;
    fails after ``timeout_s``."""
    wanted = set(order_ids)
    key = ("customer", customer_id)
    engine = create_engine(database_url)
    started = time.monotonic()
    try:
        while True:
            async with engine.connect() as conn:
                state = (await STORE.states(conn, [key])).get(key)
            missing = sorted(o for o in wanted if state is None or not state.holds(o))
            if not missing:
                return time.monotonic() - started
            assert time.monotonic() - started < timeout_s, f"features lack {missing}"
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
