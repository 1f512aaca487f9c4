"""The one feature definition: what a payment's risk features are, and how the state
they are computed from moves with each event.

Online (payment's database, ``feature_store``) and offline (``dataset``, replaying the
log) call the same two functions: ``FeatureDefinition.vector`` reads the state as it was
before an attempt, ``FeatureDefinition.apply`` moves it with the attempt's outcome. The
state holds integers only, stored as their bytes, so a trip through the database changes
nothing and both paths give equal values for the same history."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

from ordermesh_payment.risk.events import Attempt, PaymentOutcome

WINDOWS = (("10m", 10 * 60_000), ("1h", 60 * 60_000), ("24h", 24 * 60 * 60_000))
HORIZON_MS = WINDOWS[-1][1]  # nothing older than the longest window is kept
# An entity keeps its newest attempts of the horizon, at most this many: a shared NAT
# address or a card-testing token costs what any entity costs. Counts over a window
# stop at it, which no model needs to see past.
MAX_RECENT = 64
ENTITIES = ("customer", "token", "device", "ip")
FEATURES_VERSION = 2  # bump on any change of meaning: it changes the schema hash

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


def digest(text: str) -> int:
    """A stable signed 64-bit digest: how a state holds order ids and tokens (two of
    one entity's day colliding is about a 1 in 10^16 chance)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little",
                          signed=True)  # fmt: skip


# Stored: format, whether first seen is known, first seen, approved, their sum, attempts;
# then each column's values, little-endian.
_HEADER = struct.Struct("<BBqqqH")
_STATE_FORMAT = 2


def _ints() -> array[int]:
    return array("q")


def _flags() -> array[int]:
    return array("b")


@dataclass(slots=True)
class EntityState:
    """One customer's, token's, device's or address's history, as features need it:
    its newest attempts of the last 24 h (at most ``MAX_RECENT``), oldest first (by
    time, then order digest), as columns. A window is found by bisection and summed in
    C; stored, the state is the columns' bytes, so reading one copies and parses
    nothing attempt by attempt."""

    first_seen_ms: int | None = None
    approved: int = 0  # lifetime: the usual amount is approved_minor / approved
    approved_minor: int = 0
    at_ms: array[int] = field(default_factory=_ints)
    amount_minor: array[int] = field(default_factory=_ints)
    declined: array[int] = field(default_factory=_flags)  # by the provider: 1
    order: array[int] = field(default_factory=_ints)  # digests of the order ids
    token: array[int] = field(default_factory=_ints)  # digests of the payment tokens

    def __len__(self) -> int:
        return len(self.at_ms)

    def holds(self, order_id: str) -> bool:
        return digest(order_id) in self.order

    def span(self, now_ms: int, span_ms: int) -> slice:
        """The attempts in the window (now - span, now]."""
        return slice(bisect_right(self.at_ms, now_ms - span_ms), bisect_right(self.at_ms, now_ms))

    def _columns(self) -> tuple[array[int], ...]:
        return (self.at_ms, self.amount_minor, self.declined, self.order, self.token)

    # insert and drop_oldest name the five columns rather than loop over them: they run
    # for each of a payment's four entities in the features consumer.
    def insert(self, at_ms: int, amount_minor: int, declined: bool, order: int, token: int) -> None:
        at = self.at_ms
        i = bisect_right(at, at_ms)
        while i and at[i - 1] == at_ms and self.order[i - 1] > order:
            i -= 1  # within a millisecond by order digest: the same whatever the arrival
        at.insert(i, at_ms)
        self.amount_minor.insert(i, amount_minor)
        self.declined.insert(i, int(declined))
        self.order.insert(i, order)
        self.token.insert(i, token)

    def drop_oldest(self, count: int) -> None:
        if count > 0:
            del self.at_ms[:count]
            del self.amount_minor[:count]
            del self.declined[:count]
            del self.order[:count]
            del self.token[:count]

    def to_bytes(self) -> bytes:
        header = _HEADER.pack(
            _STATE_FORMAT, self.first_seen_ms is not None, self.first_seen_ms or 0,
            self.approved, self.approved_minor, len(self),
        )  # fmt: skip
        columns = self._columns()
        if sys.byteorder == "big":
            columns = tuple(array(c.typecode, c) for c in columns)
            for column in columns:
                column.byteswap()
        return header + b"".join(c.tobytes() for c in columns)

    @classmethod
    def from_bytes(cls, data: bytes) -> EntityState:
        form, known, first_seen, approved, approved_minor, n = _HEADER.unpack_from(data)
        if form != _STATE_FORMAT:
            raise ValueError(f"entity state format {form}, this code reads {_STATE_FORMAT}")
        at, amount, declined, order, token = _column_slices(n)
        columns = (
            array("q", data[at]),  # from bytes: a copy, no parsing
            array("q", data[amount]),
            array("b", data[declined]),
            array("q", data[order]),
            array("q", data[token]),
        )
        if sys.byteorder == "big":
            for column in columns:
                column.byteswap()
        return cls(first_seen if known else None, approved, approved_minor, *columns)


@functools.lru_cache(maxsize=4 * MAX_RECENT)
def _column_slices(n: int) -> tuple[slice, ...]:
    """Where each column of a stored state of ``n`` attempts lies: at, amount (int64s),
    declined (int8s), order, token (int64s). Worked out once per length: every state
    read at authorization and by the consumer is parsed through them."""
    ints, at = 8 * n, _HEADER.size
    bounds = [at]
    for size in (ints, ints, n, ints, ints):
        bounds.append(bounds[-1] + size)
    return tuple(slice(start, end) for start, end in itertools.pairwise(bounds))


_NO_HISTORY = [0.0] * (2 * len(WINDOWS) + 4)
_TEN_MINUTES, _HOUR, _DAY = (span for _, span in WINDOWS)


def _entity_features(state: EntityState, now: int) -> list[float]:
    """Count and amount per window (shortest first), declines over 1 h and 24 h, seen
    before, and age in hours. Each window is the next one's tail, so each column is
    summed once, piece by piece (integer sums: the order changes no value). Written out
    for the three windows: it runs four times per payment on the authorization's path."""
    at, amounts, declined = state.at_ms, state.amount_minor, state.declined
    end = bisect_right(at, now)
    ten = bisect_right(at, now - _TEN_MINUTES, 0, end)
    hour = bisect_right(at, now - _HOUR, 0, ten)
    day = bisect_right(at, now - _DAY, 0, hour)
    in_ten = sum(amounts[ten:end])
    in_hour = in_ten + sum(amounts[hour:ten])
    in_day = in_hour + sum(amounts[day:hour])
    declined_hour = sum(declined[hour:end])
    first_seen = state.first_seen_ms
    return [
        float(end - ten), float(in_ten),
        float(end - hour), float(in_hour),
        float(end - day), float(in_day),
        float(declined_hour),
        float(declined_hour + sum(declined[day:hour])),
        0.0 if first_seen is None else 1.0,
        0.0 if first_seen is None else (now - first_seen) / 3_600_000.0,
    ]  # fmt: skip


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
            "max_recent": MAX_RECENT,
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
            if state is None:
                values += _NO_HISTORY
                continue
            values += _entity_features(state, now)
        customer = states.get(("customer", attempt.customer_id))
        tokens = {digest(attempt.token)}
        if customer is not None:
            tokens.update(customer.token[customer.span(now, HORIZON_MS)])
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
        payment twice changes nothing (a redelivered event): it is found among the
        entity's recent attempts. One that can no longer be found there is ignored: older
        than the horizon behind the entity's newest attempt, or older than the oldest of
        an entity holding ``MAX_RECENT`` (it would leave at once). In time order, as the
        replay applies them, neither happens.

        The order of application does not matter otherwise: payments of one entity
        applied out of time order (events of several partitions) leave the state they
        leave in time order, unless one arrives after a payment of the same entity more
        than the horizon newer, or after ``MAX_RECENT`` newer ones (then it is ignored,
        as above)."""
        attempt = event.attempt
        at = attempt.at_ms
        order, token = digest(attempt.order_id), digest(attempt.token)
        for key in entity_keys(attempt):
            state = states.get(key)
            if state is None:
                state = states[key] = EntityState()
            if order in state.order:
                continue
            if state.at_ms and at <= state.at_ms[-1] - HORIZON_MS:
                continue
            if len(state) >= MAX_RECENT and (at, order) < (state.at_ms[0], state.order[0]):
                continue
            if state.first_seen_ms is None or at < state.first_seen_ms:
                state.first_seen_ms = at
            if not event.declined:
                state.approved += 1
                state.approved_minor += attempt.amount_minor
            state.drop_oldest(bisect_right(state.at_ms, at - HORIZON_MS))
            state.insert(at, attempt.amount_minor, event.declined, order, token)
            state.drop_oldest(len(state) - MAX_RECENT)


def keys_of(attempts: Iterable[Attempt]) -> set[EntityKey]:
    return {key for attempt in attempts for key in entity_keys(attempt)}
