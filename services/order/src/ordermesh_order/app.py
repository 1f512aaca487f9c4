"""Wiring: the order servicer, its saga runner, its participants and recovery worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ordermesh.order.v1 import order_pb2, order_pb2_grpc
from ordermesh_messaging.relay import relay_workers
from ordermesh_order.api import POLICY, OrderApi
from ordermesh_order.config import OrderSettings
from ordermesh_order.participants import GrpcParticipants
from ordermesh_order.saga import SagaRunner, SagaSettings
from ordermesh_order.store import outbox
from ordermesh_order.usecases import Orders
from ordermesh_order.watch import OrderWatch
from ordermesh_platform.clients import open_channel
from ordermesh_platform.service import Runtime, ServiceSpec
from ordermesh_platform.workers import background, run_periodically


@asynccontextmanager
async def wire(runtime: Runtime) -> AsyncIterator[None]:
    settings = runtime.settings
    assert isinstance(settings, OrderSettings)
    async with (
        open_channel(settings.inventory_addr, settings) as inventory,
        open_channel(settings.payment_addr, settings) as payment,
    ):
        watch = OrderWatch()
        runner = SagaRunner(
            runtime.sessions,
            GrpcParticipants(
                inventory,
                payment,
                settings.reservation_ttl_s,
                settings.batch_max_size,
                settings.batch_in_flight,
                settings.fulfil_batch_interval_s,
                settings.batch_stall_s,
            ),
            watch,
            SagaSettings(
                saga_timeout_s=settings.saga_timeout_s,
                step_timeout_s=settings.step_timeout_s,
                compensation_budget_s=settings.compensation_budget_s,
                lease_s=settings.lease_s,
                max_background=settings.max_background_sagas,
                batch_max_size=settings.batch_max_size,
                batch_in_flight=settings.batch_in_flight,
                fulfil_interval_s=settings.fulfil_batch_interval_s,
                fault_point=settings.fault_point,
            ),
        )
        order_pb2_grpc.add_OrderServiceServicer_to_server(
            OrderApi(Orders(runtime.sessions, runner, watch)), runtime.server
        )
        recovery = run_periodically(
            "saga-recovery",
            runner.recover_once,
            settings.recovery_interval_s,
            again=runner.recovery_behind,
        )
        async with background(
            ("saga-recovery", recovery), *relay_workers(runtime, outbox, "order")
        ):
            try:
                yield
            finally:
                await runner.stop()


service = ServiceSpec(
    name="order",
    settings_type=OrderSettings,
    grpc_services=(order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,),
    migrations="ordermesh_order:migrations",
    wire=wire,
    outbox=outbox,
    policy=POLICY,
)
