"""Risk scoring in the running mesh: PlaceOrder's signals reach payment, whose rules
decline a customer cycling through cards; the order is rejected RISK_DECLINED. A
confirmed order carries payment's risk assessment."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from ordermesh.common.v1 import risk_pb2
from ordermesh.order.v1 import order_pb2 as pb
from tests.e2e.conftest import start_mesh
from tests.support.mesh_client import MeshClient
from tests.support.rich_status import detail
from tests.support.risk_features import until_features_hold

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def risk_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshClient]:
    """The mesh on SQLite with risk scoring on and no model: the rules decide."""
    async for client in start_mesh(
        tmp_path_factory.mktemp("mesh"), None, {"ORDERMESH_RISK_ENABLED": "true"}
    ):
        yield client


async def test_a_customer_cycling_through_cards_is_rejected_risk_declined(
    risk_mesh: MeshClient,
) -> None:
    mesh = risk_mesh
    sku = await mesh.add_product(900, stock=20)
    signals = risk_pb2.RiskSignals(client_ip="192.0.2.9", device_id="dev-e2e", billing_country="DE")

    async def place(token: str) -> pb.Order:
        request = mesh.place_request({sku: 1}, token=token, customer="cardtester")
        request.risk_signals.CopyFrom(signals)
        reply = await mesh.orders.PlaceOrder(
            request, timeout=15, metadata=mesh.access.as_customer("cardtester")
        )
        return reply.order

    placed_ids = []
    for card in ("tok-card-1", "tok-card-2", "tok-card-3"):
        placed = await place(card)
        placed_ids.append(placed.order_id)
        assert placed.state == pb.ORDER_STATE_CONFIRMED
        # The order keeps payment's assessment of its authorization.
        kept = (await mesh.get(placed.order_id)).risk_assessment
        assert kept.decision == risk_pb2.RISK_DECISION_APPROVE
        assert (kept.model_version, kept.variant) == ("rules", "rules")
        assert kept.score < 0.4
        assert kept == (await mesh.payment(placed.order_id)).risk_assessment
    # The features follow the payment events (payment's consumer): the three in them.
    await until_features_hold(mesh.mesh.config.database_url("payment"), "cardtester", placed_ids)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await place("tok-card-4")  # a fourth card within a day
    info = detail(raised.value, error_details_pb2.ErrorInfo)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "RISK_DECLINED"
    order = await mesh.get(info.metadata["order_id"])
    assert (order.state, order.reason) == (pb.ORDER_STATE_REJECTED, pb.ORDER_REASON_RISK_DECLINED)
    payment = await mesh.payment(order.order_id)
    assert payment.decline_reason == "RISK_DECLINED"
    # Another customer is not held back by the card tester's history.
    assert (await mesh.place({sku: 1}, customer="regular")).state == pb.ORDER_STATE_CONFIRMED
    await mesh.settle()
    assert (await mesh.invariants()).violations == []
