"""Payment's own records as the risk event log: the attempts as payment decided them
(the decision log: the attempt and its signals, the provider's answer, in decision
order) and the chargebacks it received (the labels), merged in time order.

``ordermesh risk train --database-url`` replays this exactly as it replays a simulated
``events.jsonl``, through the same ``FeatureDefinition``: it is the sequence of
outcomes that moved the online features, so the training set sees what the service
saw (``ordermesh risk skew`` measures the rest)."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_payment.risk.decision_log import DecisionLog
from ordermesh_payment.risk.events import Event
from ordermesh_payment.risk.labels import ChargebackLabels


async def recorded_events(
    conn: AsyncConnection, decisions: Table, chargebacks: Table
) -> list[Event]:
    """Every logged outcome and every chargeback, oldest first. A chargeback and a
    payment at the same millisecond keep the payment first; payments of one batch keep
    the decision log's order."""
    outcomes = [outcome for outcome, _ in await DecisionLog(decisions).entries(conn)]
    labels = await ChargebackLabels(chargebacks).chargebacks(conn)
    events: list[Event] = [*outcomes, *labels]
    return sorted(events, key=lambda e: e.at_ms)  # stable: each source keeps its order
