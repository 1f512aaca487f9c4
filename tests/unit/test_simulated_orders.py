"""Orders drawn from the risk simulator, as the demo of `ordermesh up` and the bench's
risk runs place them: the simulated customer, card, signals and items, on a catalogue
that holds every SKU they name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ordermesh.order.v1 import order_pb2
from ordermesh_cli.demo import DEMO_CATALOGUE, DemoTraffic, demo_catalogue
from ordermesh_cli.simulated_orders import (
    CHARGEBACK_TOKEN_PREFIX,
    DECLINED_TOKEN,
    OWN_CARD_PATTERNS,
    SimulatedOrders,
    simulate_orders,
)
from ordermesh_payment.risk.events import PaymentOutcome, read_events

NOW_MS = 1_900_000_000_000


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulatedOrders]:
    folder = tmp_path_factory.mktemp("sim")
    return folder, simulate_orders(folder, 300, seed=3, days=10, fraud_share=0.1)


def test_each_order_is_placed_as_the_log_has_it_with_its_signals(
    simulated: tuple[Path, SimulatedOrders],
) -> None:
    folder, orders = simulated
    logged = [e.attempt for e in read_events(folder / "events.jsonl")
              if isinstance(e, PaymentOutcome)]  # fmt: skip
    assert len(orders.orders) == len(logged) == 300
    for attempt, order in zip(logged[:50], orders.orders[:50], strict=True):
        request = orders.draw().place_request(wait_for_outcome=True, now_ms=NOW_MS)
        assert request.customer_id == attempt.customer_id
        assert [(i.sku, i.quantity) for i in request.items] == [
            (i.sku, i.quantity) for i in attempt.items
        ]
        signals = request.risk_signals
        assert (signals.client_ip, signals.device_id, signals.email_domain) == (
            attempt.ip, attempt.device_id, attempt.email_domain,
        )  # fmt: skip
        assert (signals.billing_country, signals.shipping_country) == (
            attempt.billing_country, attempt.shipping_country,
        )  # fmt: skip
        # The account is as old now as it was when the simulated order was placed.
        age = NOW_MS - signals.account_created_at.ToMilliseconds()
        assert age == attempt.at_ms - attempt.account_created_ms
        assert request.payment.token == (DECLINED_TOKEN if order.declined else attempt.token)
    assert {o.pattern for o in orders.orders} > {""}  # the fraud patterns come along


def test_the_draws_start_where_asked_and_wrap_around(
    simulated: tuple[Path, SimulatedOrders],
) -> None:
    _, orders = simulated
    late = orders.from_position(299)
    assert [late.draw(), late.draw()] == [orders.orders[299], orders.orders[0]]


def test_the_demo_catalogue_holds_every_simulated_sku_and_keeps_its_own_products(
    simulated: tuple[Path, SimulatedOrders],
) -> None:
    _, orders = simulated
    catalogue = {p.sku: p for p in demo_catalogue(orders)}
    named = {i.sku for o in orders.orders for i in o.items}
    assert named <= set(catalogue)
    for product in DEMO_CATALOGUE:  # TEA-SENCHA is the simulator's too: ours stays
        assert catalogue[product.sku] == product
    assert catalogue["GIFT-CARD-50"].unit_price_minor == 5000


def test_the_demo_places_simulated_orders_with_its_failure_paths_mixed_in(
    simulated: tuple[Path, SimulatedOrders],
) -> None:
    _, orders = simulated
    demo = DemoTraffic("127.0.0.1:1", "127.0.0.1:2", orders.from_position(0), seed=5)
    requests = [demo._request(n)[0] for n in range(300)]
    assert [r.customer_id for r in requests] == [o.customer_id for o in orders.orders]
    tokens = {r.payment.token for r in requests}
    assert {"tok_flaky", "tok_timeout", DECLINED_TOKEN} <= tokens
    assert any(t.startswith("tok-") for t in tokens)  # the simulated customers' cards
    assert any(i.sku == "TEAPOT-CAST-IRON" for r in requests for i in r.items)
    assert {r.wait_for_outcome for r in requests} == {True, False}
    assert all(r.HasField("risk_signals") for r in requests)
    assert all(isinstance(r, order_pb2.PlaceOrderRequest) for r in requests)


def test_fraud_on_the_fraudsters_own_card_pays_with_a_token_the_provider_charges_back(
    simulated: tuple[Path, SimulatedOrders],
) -> None:
    _, orders = simulated
    own = [o for o in orders.orders if o.pattern in OWN_CARD_PATTERNS]
    others = [o for o in orders.orders if o.pattern not in OWN_CARD_PATTERNS]
    assert own
    assert others
    assert all(o.charged_back_token == f"{CHARGEBACK_TOKEN_PREFIX}{o.token}" for o in own)
    # Genuine orders and account takeovers (the victim's card) keep their token.
    assert all(o.charged_back_token == o.token for o in others)
