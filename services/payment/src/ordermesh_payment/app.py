"""Wiring: the payment servicer onto the shared bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ordermesh.payment.v1 import payment_pb2, payment_pb2_grpc
from ordermesh_payment.api import PaymentApi
from ordermesh_payment.config import PaymentSettings
from ordermesh_platform.service import Runtime, ServiceSpec


@asynccontextmanager
async def wire(runtime: Runtime) -> AsyncIterator[None]:
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentApi(), runtime.server)  # type: ignore[abstract]
    yield


service = ServiceSpec(
    name="payment",
    settings_type=PaymentSettings,
    grpc_services=(payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,),
    migrations="ordermesh_payment:migrations",
    wire=wire,
)
