"""Risk scoring in the running mesh: PlaceOrder's signals and the order's lines reach
payment, whose rules decline a customer cycling through cards; the order is rejected
RISK_DECLINED and keeps the assessment that declined it. A confirmed order carries
payment's risk assessment."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import text

from ordermesh.common.v1 import risk_pb2
from ordermesh.order.v1 import order_pb2 as pb
from ordermesh_payment.risk.decision_log import unpack_features
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_platform.db import create_engine
from tests.e2e.conftest import start_mesh
from tests.support.mesh_client import MeshClient
from tests.support.rich_status import detail
from tests.support.risk_features import until_features_hold

pytestmark = pytest.mark.e2e


async def _scored_features(mesh: MeshClient, order_id: str) -> dict[str, float]:
    """The features payment scored the order's authorization with (its decision log)."""
    engine = create_engine(mesh.mesh.config.database_url("payment"))
    try:
        async with engine.connect() as conn:
            logged = await conn.scalar(
                text("SELECT features FROM risk_decisions WHERE order_id = :o"), {"o": order_id}
            )
    finally:
        await engine.dispose()
    return dict(
        zip(RiskSettings().feature_definition().names, unpack_features(logged), strict=True)
    )


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
    # The order's lines reached payment with the authorization: its order features.
    features = await _scored_features(mesh, placed.order_id)
    assert (features["item_count"], features["distinct_skus"]) == (1.0, 1.0)
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
    # The rejected order keeps the assessment that declined it, and the waiting
    # PlaceOrder's refusal carries it beside the ErrorInfo.
    assert payment.risk_assessment.decision == risk_pb2.RISK_DECISION_DECLINE
    assert order.risk_assessment == payment.risk_assessment
    assert detail(raised.value, risk_pb2.RiskAssessment) == payment.risk_assessment
    listed = await mesh.orders.ListOrders(
        pb.ListOrdersRequest(customer_id="cardtester", page_size=1),
        timeout=5,
        metadata=mesh.access.as_customer("cardtester"),
    )
    assert listed.orders[0].risk_assessment == payment.risk_assessment
    # Another customer is not held back by the card tester's history.
    assert (await mesh.place({sku: 1}, customer="regular")).state == pb.ORDER_STATE_CONFIRMED
    await mesh.settle()
    assert (await mesh.invariants()).violations == []
