"""The PaymentService servicer: protobuf in and out, nothing else."""

from __future__ import annotations

from ordermesh.payment.v1 import payment_pb2_grpc


class PaymentApi(payment_pb2_grpc.PaymentServiceServicer):
    """Every RPC answers UNIMPLEMENTED until the order-flow work lands."""
