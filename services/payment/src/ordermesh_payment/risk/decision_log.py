"""The decision log: every risk decision with what it saw (the attempt and its feature
vector) and what it was (variant, model version, score, threshold), written in the
statement that records its batch's outcomes.

``skew`` replays the logged attempts through the feature definition, as training does,
and compares the vectors with the ones the service scored: the check that online and
offline still agree in production, not only in the test."""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_payment.risk.dataset import replay
from ordermesh_payment.risk.events import Attempt, Item, PaymentOutcome
from ordermesh_payment.risk.features import FeatureDefinition
from ordermesh_platform.db import Transactions, delete_in_chunks, insert_rows
from ordermesh_platform.writes import Rows

if TYPE_CHECKING:  # scoring writes through this module: no import at run time
    from ordermesh_payment.risk.scoring import RiskDecision


def risk_decision_table(metadata: MetaData) -> Table:
    return Table(
        "risk_decisions",
        metadata,
        Column("order_id", String(64), primary_key=True),  # a retry keeps the first
        Column("decided_at", DateTime(timezone=True), nullable=False),
        Column("variant", String(16), nullable=False),
        Column("model_version", String(64), nullable=False),
        Column("score", Float, nullable=False),
        Column("threshold", Float, nullable=False),
        Column("risk_declined", Boolean, nullable=False),
        Column("fallback", String(16), nullable=False),
        # Exploration: a would-be decline approved at random, and the probability of
        # the action taken, for inverse-propensity estimates of blocked traffic.
        Column("explored", Boolean, nullable=False),
        Column("propensity", Float, nullable=False),
        # The provider's answer (or the risk decline): what the features learnt.
        Column("declined", Boolean, nullable=False),
        Column("attempt", Text, nullable=False),  # the Attempt as JSON
        Column("features", LargeBinary, nullable=False),  # the vector scored, packed
        Index("ix_risk_decisions_decided_at", "decided_at"),  # the retention sweep
    )


def _rows(
    outcomes: Sequence[PaymentOutcome], decisions: Mapping[str, RiskDecision]
) -> list[dict[str, Any]]:
    return [
        _row(o, decisions[o.attempt.order_id]) for o in outcomes if o.attempt.order_id in decisions
    ]


def _row(outcome: PaymentOutcome, decision: RiskDecision) -> dict[str, Any]:
    attempt = outcome.attempt
    return {
        "order_id": attempt.order_id,
        "decided_at": datetime.fromtimestamp(attempt.at_ms / 1000, UTC),
        "variant": decision.variant,
        "model_version": decision.model_version,
        "score": decision.score,
        "threshold": decision.threshold,
        "risk_declined": decision.declined,
        "fallback": decision.fallback,
        "explored": decision.explored,
        "propensity": decision.propensity,
        "declined": outcome.declined,
        "attempt": json.dumps(attempt.as_dict(), separators=(",", ":")),
        "features": pack_features(decision.features),
    }


def pack_features(vector: Sequence[float]) -> bytes:
    """A feature vector as the log keeps it: its float64s, little-endian. JSON cost a
    ``repr`` per float, some 10 µs a decision, in the authorization's transaction."""
    packed = array("d", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_features(data: bytes) -> list[float]:
    packed = array("d", data)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tolist()


def _attempt(text: str) -> Attempt:
    fields = json.loads(text)
    items = tuple(Item(**i) for i in fields.pop("items"))
    return Attempt(items=items, **fields)


class DecisionLog:
    def __init__(self, table: Table) -> None:
        self.table = table

    async def add(
        self,
        conn: AsyncConnection,
        outcomes: Sequence[PaymentOutcome],
        decisions: Mapping[str, RiskDecision],
    ) -> None:
        await insert_rows(conn, self.table, _rows(outcomes, decisions), conflict=("order_id",))

    def writes(
        self, outcomes: Sequence[PaymentOutcome], decisions: Mapping[str, RiskDecision]
    ) -> Rows:
        """The decisions (by order id) as a write after the one that records their
        outcomes (``write_together``), kept to the payments that write moved: a retry
        keeps its order's first decision."""
        return Rows(
            self.table, _rows(outcomes, decisions), conflict=("order_id",), only_written="order_id"
        )

    async def sweep(
        self, transactions: Transactions, retention: timedelta, chunk: int = 5_000
    ) -> int:
        """Delete the decisions older than ``retention`` (``delete_in_chunks``)."""
        cutoff = datetime.now(UTC) - retention
        return await delete_in_chunks(
            transactions, self.table, self.table.c.decided_at < cutoff, chunk
        )

    async def entries(self, conn: AsyncConnection) -> list[tuple[PaymentOutcome, list[float]]]:
        """Every logged decision in decision order: the outcome and the vector scored."""
        t = self.table
        rows = await conn.execute(
            select(t.c.attempt, t.c.declined, t.c.features).order_by(t.c.decided_at, t.c.order_id)
        )
        return [
            (PaymentOutcome(_attempt(r.attempt), bool(r.declined)), unpack_features(r.features))
            for r in rows
        ]


@dataclass(frozen=True)
class SkewReport:
    decisions: int
    decisions_with_skew: int
    # Per feature: decisions where online and replay differ, and the largest difference.
    features: dict[str, tuple[int, float]]


def skew(
    logged: Sequence[tuple[PaymentOutcome, list[float]]], definition: FeatureDefinition
) -> SkewReport:
    """Replay the logged outcomes through the feature definition (as the training set
    is built) and compare each recomputed vector with the one scored online."""
    rows = replay(sorted((o for o, _ in logged), key=lambda o: o.at_ms), definition)
    replayed = {r.attempt.order_id: r.vector for r in rows}
    counts = dict.fromkeys(definition.names, 0)
    largest = dict.fromkeys(definition.names, 0.0)
    skewed = 0
    for outcome, online in logged:
        offline = replayed[outcome.attempt.order_id]
        differs = False
        for name, a, b in zip(definition.names, online, offline, strict=True):
            if abs(a - b) > 1e-9 * max(1.0, abs(b)):
                counts[name] += 1
                largest[name] = max(largest[name], abs(a - b))
                differs = True
        skewed += differs
    return SkewReport(
        len(logged),
        skewed,
        {n: (counts[n], largest[n]) for n in definition.names if counts[n]},
    )


@dataclass(frozen=True)
class LoggedDecision:
    order_id: str
    decided_ms: int
    variant: str
    would_decline: bool  # declined, or approved only by exploration
    explored: bool
    propensity: float
    amount_minor: int
    segments: Mapping[str, str] = field(default_factory=dict)  # risk/fairness.py


async def logged_decisions(
    conn: AsyncConnection, table: Table, feature_names: Sequence[str]
) -> list[LoggedDecision]:
    """The decisions as off-policy evaluation needs them, oldest first, with the
    segments their attempts fall in."""
    from ordermesh_payment.risk.fairness import segmenter

    segments = segmenter(feature_names)
    t = table
    rows = await conn.execute(
        select(
            t.c.order_id, t.c.variant, t.c.risk_declined, t.c.explored, t.c.propensity,
            t.c.attempt, t.c.features,
        ).order_by(t.c.decided_at, t.c.order_id)
    )  # fmt: skip
    found = []
    for r in rows:
        attempt = _attempt(r.attempt)
        found.append(
            LoggedDecision(
                r.order_id, attempt.at_ms, r.variant, bool(r.risk_declined or r.explored),
                bool(r.explored), float(r.propensity), attempt.amount_minor,
                segments(attempt, unpack_features(r.features)),
            )
        )  # fmt: skip
    return found
