"""What the orders look like: SKU popularity (uniform or Zipf), lines per order, the
share of declined payments, and whether callers wait for the outcome; or, as an
option, orders drawn from payment's risk simulator (customers, tokens, risk signals,
items, fraud patterns)."""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import dataclass
from typing import Protocol

from ordermesh.order.v1 import order_pb2
from ordermesh_cli.simulated_orders import SimulatedOrders


@dataclass(frozen=True)
class Workload:
    skus: tuple[str, ...]
    zipf_s: float = 1.1  # 0 = uniform
    decline_share: float = 0.05
    wait_for_outcome: bool = True
    max_lines: int = 3
    currency: str = "EUR"
    customers: int = 1000

    def weights(self) -> list[float]:
        if self.zipf_s <= 0:
            return [1.0] * len(self.skus)
        return [1.0 / (rank**self.zipf_s) for rank in range(1, len(self.skus) + 1)]


class Requests(Protocol):
    """Where a load's PlaceOrder requests come from."""

    def place_order(self) -> order_pb2.PlaceOrderRequest: ...


class RequestMaker:
    def __init__(self, workload: Workload, seed: int = 1) -> None:
        self.workload = workload
        self._rng = random.Random(seed)
        self._cumulative = list(itertools.accumulate(workload.weights()))

    def place_order(self) -> order_pb2.PlaceOrderRequest:
        w, rng = self.workload, self._rng
        lines = rng.randint(1, w.max_lines)
        skus = set(rng.choices(w.skus, cum_weights=self._cumulative, k=lines))
        declined = rng.random() < w.decline_share
        customer = f"bench-{rng.randrange(w.customers)}"
        # Each customer pays with a card of its own (any token but the testing ones is
        # approved): one token shared by every order would be one hot row of payment's
        # risk features, a contention no real traffic has.
        token = "tok_decline" if declined else f"tok_ok_{customer}"
        return order_pb2.PlaceOrderRequest(
            customer_id=customer,
            idempotency_key=uuid.uuid4().hex,
            items=[
                order_pb2.OrderItem(sku=sku, quantity=rng.randint(1, 2)) for sku in sorted(skus)
            ],
            payment=order_pb2.PaymentMethod(token=token),
            currency=w.currency,
            wait_for_outcome=w.wait_for_outcome,
        )


class SimulatedRequests:
    """The simulator's orders, in the log's order from ``start``: its customers pay with
    their own cards and send their risk signals; a payment the simulated provider
    declined pays with the declined token. The SKUs are the simulator's: the inventory
    must hold them (``SimulatedOrders.products``)."""

    def __init__(
        self, orders: SimulatedOrders, start: int = 0, wait_for_outcome: bool = True
    ) -> None:
        self._orders = orders.from_position(start)
        self._wait = wait_for_outcome

    def place_order(self) -> order_pb2.PlaceOrderRequest:
        return self._orders.draw().place_request(self._wait)
