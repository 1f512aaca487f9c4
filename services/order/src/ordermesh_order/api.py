"""The OrderService servicer: protobuf in and out, nothing else."""

from __future__ import annotations

from ordermesh.order.v1 import order_pb2_grpc


class OrderApi(order_pb2_grpc.OrderServiceServicer):
    """Every RPC answers UNIMPLEMENTED until the order-flow work lands."""
