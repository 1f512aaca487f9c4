"""The one feature definition: what a payment's risk features are, and how the state
they are computed from moves with each event.

Online (payment's database, ``feature_store``) and offline (``dataset``, replaying the
log) call the same two functions: ``FeatureDefinition.vector`` reads the state as it was
before an attempt, ``FeatureDefinition.apply`` moves it with the attempt's outcome. The
state holds integers and strings only, so a trip through JSON changes nothing and both
paths give equal values for the same history."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

from ordermesh_payment.risk.events import Attempt, PaymentOutcome

WINDOWS = (("10m", 10 * 60_000), ("1h", 60 * 60_000), ("24h", 24 * 60 * 60_000))
HORIZON_MS = WINDOWS[-1][1]  # nothing older than the longest window is kept
ENTITIES = ("customer", "token", "device", "ip")
FEATURES_VERSION = 1  # bump on any change of meaning: it changes the schema hash

EntityKey = tuple[str, str]  # (entity kind, its key)


def _all_keys(attempt: Attempt) -> list[EntityKey]:
    return [
        ("customer", attempt.customer_id),
        ("token", attempt.token),
        ("device", attempt.device_id),
        ("ip", attempt.ip),
    ]


def entity_keys(attempt: Attempt) -> list[EntityKey]:
    """The entities the attempt names; one it does not know (no device id sent, say)
    is left out: it has no history and gets none."""
    return [key for key in _all_keys(attempt) if key[1]]


@dataclass
class EntityState:
    """One customer's, token's, device's or address's history, as features need it."""

    first_seen_ms: int | None = None
    approved: int = 0  # lifetime: the usual amount is approved_minor / approved
    approved_minor: int = 0
    # Attempts of the last 24 h: [at_ms, amount_minor, declined (0/1), order_id, token].
    recent: list[list[int | str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            [self.first_seen_ms, self.approved, self.approved_minor, self.recent],
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> EntityState:
        first_seen, approved, approved_minor, recent = json.loads(text)
        return cls(first_seen, approved, approved_minor, recent)


def _window(state: EntityState | None, now_ms: int, span_ms: int) -> list[list[int | str]]:
    if state is None:
        return []
    return [e for e in state.recent if now_ms - span_ms < int(e[0]) <= now_ms]


@dataclass(frozen=True)
class FeatureDefinition:
    resale_prone_skus: frozenset[str]
    # Cold start: a customer with no approved payment is compared with this amount.
    prior_amount_minor: int = 3000

    @property
    def names(self) -> tuple[str, ...]:
        names: list[str] = []
        for entity in ENTITIES:
            for label, _ in WINDOWS:
                names += [f"{entity}_count_{label}", f"{entity}_amount_{label}"]
            names += [
                f"{entity}_declines_1h",
                f"{entity}_declines_24h",
                f"{entity}_seen_before",
                f"{entity}_age_h",
            ]
        return (
            *names,
            "customer_distinct_tokens_24h",
            "amount_vs_usual",
            "amount_log",
            "item_count",
            "distinct_skus",
            "resale_share",
            "country_mismatch",
            "account_age_d",
        )

    @property
    def schema_hash(self) -> str:
        """Names, meaning and parameters: a model trained on one schema refuses another."""
        spec = {
            "version": FEATURES_VERSION,
            "names": self.names,
            "windows": WINDOWS,
            "resale_prone_skus": sorted(self.resale_prone_skus),
            "prior_amount_minor": self.prior_amount_minor,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def vector(self, states: Mapping[EntityKey, EntityState], attempt: Attempt) -> list[float]:
        """The attempt's features from the states as they were before it."""
        now = attempt.at_ms
        values: list[float] = []
        for key in _all_keys(attempt):
            state = states.get(key) if key[1] else None
            for _, span in WINDOWS:
                window = _window(state, now, span)
                values += [float(len(window)), float(sum(int(e[1]) for e in window))]
            hour, day = _window(state, now, WINDOWS[1][1]), _window(state, now, HORIZON_MS)
            seen = state is not None and state.first_seen_ms is not None
            values += [
                float(sum(int(e[2]) for e in hour)),
                float(sum(int(e[2]) for e in day)),
                1.0 if seen else 0.0,
                (now - state.first_seen_ms) / 3_600_000.0
                if state is not None and state.first_seen_ms is not None
                else 0.0,
            ]
        customer = states.get(("customer", attempt.customer_id))
        tokens = {str(e[4]) for e in _window(customer, now, HORIZON_MS)} | {attempt.token}
        usual = (
            customer.approved_minor / customer.approved
            if customer is not None and customer.approved
            else float(self.prior_amount_minor)
        )
        amount = attempt.amount_minor
        resale = sum(
            i.quantity * i.unit_price_minor
            for i in attempt.items
            if i.sku in self.resale_prone_skus
        )
        return [
            *values,
            float(len(tokens)),
            amount / usual,
            math.log1p(amount),
            float(sum(i.quantity for i in attempt.items)),
            float(len({i.sku for i in attempt.items})),
            resale / amount if amount else 0.0,
            1.0 if attempt.billing_country != attempt.shipping_country else 0.0,
            max(0, now - attempt.account_created_ms) / 86_400_000.0,
        ]

    def apply(self, states: MutableMapping[EntityKey, EntityState], event: PaymentOutcome) -> None:
        """Move the states of the attempt's entities with its outcome. Applying the same
        payment twice changes nothing (a redelivered event): within the horizon it is
        found among the entity's recent attempts; older than the horizon behind the
        entity's newest attempt, it can no longer be told from a redelivery and is
        ignored (in time order, as the replay applies them, that never happens).

        The order of application does not matter within the horizon: payments of one
        entity applied out of time order (events of several partitions) leave the state
        they leave in time order, unless one arrives after a payment of the same entity
        more than the horizon newer (then it is ignored, as above)."""
        attempt = event.attempt
        entry: list[int | str] = [
            attempt.at_ms,
            attempt.amount_minor,
            int(event.declined),
            attempt.order_id,
            attempt.token,
        ]
        for key in entity_keys(attempt):
            state = states.setdefault(key, EntityState())
            if any(e[3] == attempt.order_id for e in state.recent):
                continue
            newest = max((int(e[0]) for e in state.recent), default=attempt.at_ms)
            if attempt.at_ms <= newest - HORIZON_MS:
                continue
            if state.first_seen_ms is None or attempt.at_ms < state.first_seen_ms:
                state.first_seen_ms = attempt.at_ms
            if not event.declined:
                state.approved += 1
                state.approved_minor += attempt.amount_minor
            state.recent = [e for e in state.recent if int(e[0]) > attempt.at_ms - HORIZON_MS] + [
                entry
            ]
            # By order id within a millisecond too: the same state whatever the arrival order.
            state.recent.sort(key=lambda e: (int(e[0]), str(e[3])))


def keys_of(attempts: Iterable[Attempt]) -> set[EntityKey]:
    return {key for attempt in attempts for key in entity_keys(attempt)}
