"""Orders drawn from payment's risk simulator (`ordermesh risk simulate`, docs/risk.md):
its customers, payment tokens, devices, addresses, countries, items and fraud
patterns, as PlaceOrder requests. The demo of `ordermesh up` and the bench place them.

The simulator runs through the ``ordermesh.risk`` entry point and its log is read as
the JSON lines it writes (``events.jsonl``, ``truth.jsonl``), so this library imports
no service."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from ordermesh.common.v1 import risk_pb2
from ordermesh.order.v1 import order_pb2
from ordermesh_cli.risk import load_risk_tools

# The token the simulated provider declines: what a payment the simulator has the
# provider decline is placed with.
DECLINED_TOKEN = "tok_decline"
CURRENCY = "EUR"  # the simulator's
# Payment's simulated provider charges back the payments of tokens with this prefix
# (ORDERMESH_PSP_CHARGEBACK_TOKEN_PREFIX's default). The fraud patterns in which the
# fraudster pays with cards of their own: account takeover pays with the victim's saved
# card, which no token rule can single out, so it is never charged back here.
CHARGEBACK_TOKEN_PREFIX = "tok_fraud_"
OWN_CARD_PATTERNS = frozenset({"card_testing", "velocity_abuse", "resale"})


@dataclass(frozen=True)
class SimulatedItem:
    sku: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True)
class SimulatedOrder:
    """One payment attempt of the simulated log, as a caller would place its order."""

    customer_id: str
    token: str
    items: tuple[SimulatedItem, ...]
    client_ip: str
    device_id: str
    email_domain: str
    billing_country: str
    shipping_country: str
    account_age_ms: int  # how old the account was when the order was placed
    declined: bool  # the simulated provider's answer
    pattern: str  # the fraud pattern; "" for a genuine order

    @property
    def charged_back_token(self) -> str:
        """The token to pay with for the simulated provider to charge the payment back
        when it is fraud on the fraudster's own card; otherwise the order's own token."""
        if self.pattern in OWN_CARD_PATTERNS:
            return f"{CHARGEBACK_TOKEN_PREFIX}{self.token}"
        return self.token

    def place_request(
        self, wait_for_outcome: bool, token: str | None = None, now_ms: int | None = None
    ) -> order_pb2.PlaceOrderRequest:
        """The order as PlaceOrder takes it, with its risk signals; the account as old,
        now, as it was in the log. ``token`` replaces the payment token (the provider's
        testing tokens); by default a declined payment pays with the declined token."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        created = Timestamp()
        created.FromMilliseconds(now_ms - self.account_age_ms)
        return order_pb2.PlaceOrderRequest(
            customer_id=self.customer_id,
            idempotency_key=uuid.uuid4().hex,
            items=[order_pb2.OrderItem(sku=i.sku, quantity=i.quantity) for i in self.items],
            payment=order_pb2.PaymentMethod(
                token=token or (DECLINED_TOKEN if self.declined else self.token)
            ),
            currency=CURRENCY,
            wait_for_outcome=wait_for_outcome,
            risk_signals=risk_pb2.RiskSignals(
                client_ip=self.client_ip,
                device_id=self.device_id,
                email_domain=self.email_domain,
                billing_country=self.billing_country,
                shipping_country=self.shipping_country,
                account_created_at=created,
            ),
        )


def _order(line: dict[str, object], patterns: dict[str, str]) -> SimulatedOrder:
    items = tuple(
        SimulatedItem(str(i["sku"]), int(i["quantity"]), int(i["unit_price_minor"]))
        for i in line["items"]  # type: ignore[attr-defined]
    )
    return SimulatedOrder(
        str(line["customer_id"]), str(line["token"]), items, str(line["ip"]),
        str(line["device_id"]), str(line["email_domain"]), str(line["billing_country"]),
        str(line["shipping_country"]),
        int(line["at_ms"]) - int(line["account_created_ms"]),  # type: ignore[call-overload]
        bool(line["declined"]), patterns.get(str(line["order_id"]), ""),
    )  # fmt: skip


class SimulatedOrders:
    """The log's orders in time order, drawn one after another, from the start again
    once all were drawn (each draw is a new order: a new idempotency key)."""

    def __init__(self, orders: Sequence[SimulatedOrder], start: int = 0) -> None:
        self.orders = tuple(orders)
        self._next = start

    @classmethod
    def read(cls, folder: Path) -> SimulatedOrders:
        """The orders of a log ``ordermesh risk simulate`` wrote into ``folder``."""
        patterns: dict[str, str] = {}
        with (folder / "truth.jsonl").open(encoding="utf-8") as truth:
            for line in truth:
                if line.strip():
                    fraud = json.loads(line)
                    patterns[fraud["order_id"]] = fraud["pattern"]
        orders = []
        with (folder / "events.jsonl").open(encoding="utf-8") as events:
            for line in events:
                if line.strip() and (event := json.loads(line))["type"] == "payment":
                    orders.append(_order(event, patterns))
        return cls(orders)

    def products(self) -> dict[str, int]:
        """Every SKU the orders name, with its unit price (minor units)."""
        return {i.sku: i.unit_price_minor for o in self.orders for i in o.items}

    def from_position(self, start: int) -> SimulatedOrders:
        """The same orders, drawn from ``start`` on."""
        return SimulatedOrders(self.orders, start)

    def draw(self) -> SimulatedOrder:
        order = self.orders[self._next % len(self.orders)]
        self._next += 1
        return order


def simulate_orders(
    folder: Path, orders: int, seed: int, days: int, fraud_share: float
) -> SimulatedOrders:
    """Run the simulator into ``folder`` (chargebacks as it does by default) and read
    its orders."""
    load_risk_tools().simulate(folder, orders, seed, days, fraud_share, (7.0, 45.0))
    return SimulatedOrders.read(folder)
