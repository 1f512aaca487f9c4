"""The offline training set: the event log replayed through the feature definition,
point in time correct (each attempt sees only what happened before it), labelled by the
chargebacks known at a cut-off."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ordermesh_payment.risk.events import Attempt, Chargeback, Event, PaymentOutcome
from ordermesh_payment.risk.features import EntityKey, EntityState, FeatureDefinition


@dataclass(frozen=True)
class Row:
    attempt: Attempt
    declined: bool
    vector: list[float]


def replay(events: Iterable[Event], definition: FeatureDefinition) -> list[Row]:
    """One row per payment attempt: its features from the states before it, then its
    outcome applied, exactly as payment-service does online."""
    states: dict[EntityKey, EntityState] = {}
    rows: list[Row] = []
    for event in events:
        if isinstance(event, PaymentOutcome):
            rows.append(
                Row(event.attempt, event.declined, definition.vector(states, event.attempt))
            )
            definition.apply(states, event)
    return rows


@dataclass(frozen=True)
class Labelled:
    rows: list[Row]
    labels: list[int]  # 1: charged back by the cut-off

    @property
    def amounts(self) -> list[int]:
        return [r.attempt.amount_minor for r in self.rows]


def labelled(
    rows: Sequence[Row],
    events: Iterable[Event],
    as_of_ms: int,
    maturity_ms: int,
    since_ms: int | None = None,
) -> Labelled:
    """The authorized attempts whose labels have matured by ``as_of_ms`` (placed at least
    ``maturity_ms`` before it), each labelled 1 when charged back by then.

    Declined attempts are left out: no money moved, so no label can ever arrive for
    them (they still count in the features: recent declines)."""
    charged = {e.order_id for e in events if isinstance(e, Chargeback) and e.at_ms <= as_of_ms}
    kept = [
        r
        for r in rows
        if not r.declined
        and r.attempt.at_ms <= as_of_ms - maturity_ms
        and (since_ms is None or r.attempt.at_ms >= since_ms)
    ]
    return Labelled(kept, [int(r.attempt.order_id in charged) for r in kept])
