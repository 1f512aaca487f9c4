"""Order settings (``ORDERMESH_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from ordermesh_messaging.settings import RelaySettings
from ordermesh_platform.targets import GrpcTarget


class OrderSettings(RelaySettings):
    grpc_port: int = 50051
    database_url: str = "sqlite+aiosqlite:///.ordermesh/order.db"
    inventory_addr: GrpcTarget = Field(
        "127.0.0.1:50052",
        description="inventory-service: host:port, a comma-separated list of IPv4 "
        "host:port (every local replica), or a gRPC target such as dns:///<headless "
        "Service>:<port> (every pod); calls go round-robin over what it resolves to.",
    )
    payment_addr: GrpcTarget = Field(
        "127.0.0.1:50053", description="payment-service, written as inventory_addr."
    )
    saga_timeout_s: float = Field(
        30.0, gt=0, description="A PENDING order is confirmed or rejected within this time."
    )
    step_timeout_s: float = Field(5.0, gt=0, description="One call to inventory or payment.")
    compensation_budget_s: float = Field(
        30.0,
        gt=0,
        description="How long one run keeps retrying compensations before "
        "leaving them to the recovery worker.",
    )
    lease_s: float = Field(5.0, gt=0, description="A saga runner's hold on an order.")
    max_background_sagas: int = Field(
        256,
        ge=1,
        description="Orders driven at once after their answer (wait_for_outcome=false, "
        "capture and commit) or by the recovery worker. Past it, PlaceOrder with "
        "wait_for_outcome=false is answered RESOURCE_EXHAUSTED + RetryInfo.",
    )
    batch_max_size: int = Field(
        256,
        ge=1,
        le=1000,
        description="Most orders in one batch: one transaction of new orders or of saga "
        "decisions, one call per hop to inventory or payment.",
    )
    batch_in_flight: int = Field(
        1,
        ge=1,
        description="Batches of one kind at once; what arrives meanwhile forms the next "
        "batch (there is no timer: a lone order goes at once). 1 makes the largest batches "
        "and the most orders per core (docs/performance.md).",
    )
    batch_stall_s: float = Field(
        1.5,
        gt=0,
        description="How long a batch to inventory or payment may run before the orders "
        "queued behind it start the next one: a peer slow for one batch (a row lock held "
        "elsewhere, a peer pausing) then holds only that batch's orders. Above payment's "
        "own bound on a batch (ORDERMESH_PSP_BATCH_WAIT_S, 1 s), so that a slow card, "
        "which payment already answers for, is not a stall; far above a batch's usual "
        "run, tens of milliseconds.",
    )
    fulfil_batch_interval_s: float = Field(
        0.05,
        ge=0,
        le=1.0,
        description="The least time between two batches of the work after an answer "
        "(capture, commit, the order's last save). Nobody waits for it, so its batches "
        "gather more orders and leave the CPU to the orders being decided; a lone order "
        "and a full batch are not held back. 0: none.",
    )
    recovery_interval_s: float = Field(1.0, gt=0, description="How often owed work is sought.")
    reservation_ttl_s: float = Field(
        900.0, gt=0, description="Time to live asked of inventory for each reservation."
    )
