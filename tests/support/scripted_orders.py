"""A real in-process gRPC server whose OrderService.PlaceOrder answers from a script:
each call takes the next outcome (a domain error, answered as the servers answer it,
or an order), and every request is kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from ordermesh.order.v1 import order_pb2
from ordermesh_platform.errors import ServiceError
from ordermesh_platform.grpc_errors import to_grpc_status

Outcome = ServiceError | order_pb2.Order


class ScriptedOrders:
    def __init__(self) -> None:
        self.script: list[Outcome] = []
        self.requests: list[order_pb2.PlaceOrderRequest] = []

    async def place(
        self, request: order_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> order_pb2.PlaceOrderResponse:
        self.requests.append(request)
        outcome = self.script.pop(0)
        if isinstance(outcome, ServiceError):
            await context.abort_with_status(to_grpc_status(outcome))
        assert isinstance(outcome, order_pb2.Order)
        return order_pb2.PlaceOrderResponse(order=outcome)

    def handler(self) -> grpc.GenericRpcHandler:
        place = grpc.unary_unary_rpc_method_handler(
            self.place,
            request_deserializer=order_pb2.PlaceOrderRequest.FromString,
            response_serializer=order_pb2.PlaceOrderResponse.SerializeToString,
        )
        service = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
        return grpc.method_handlers_generic_handler(service, {"PlaceOrder": place})


@asynccontextmanager
async def scripted_order_service() -> AsyncIterator[tuple[ScriptedOrders, str]]:
    """The scripted service and its address (127.0.0.1, a free port)."""
    orders = ScriptedOrders()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((orders.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield orders, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
