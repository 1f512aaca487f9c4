"""ordermesh's client: channels to the services, the typed errors their google.rpc
details decode to, and an idempotent PlaceOrder (see docs/client.md)."""

from ordermesh_client.channels import bearer, open_channel
from ordermesh_client.errors import (
    IdempotencyConflict,
    InvalidRequest,
    OrdermeshError,
    OutOfStock,
    Overloaded,
    PaymentDeclined,
    RiskDeclined,
    Unavailable,
    decode,
)
from ordermesh_client.orders import OrderClient
from ordermesh_client.tls import TlsFiles

__all__ = [
    "IdempotencyConflict",
    "InvalidRequest",
    "OrderClient",
    "OrdermeshError",
    "OutOfStock",
    "Overloaded",
    "PaymentDeclined",
    "RiskDeclined",
    "TlsFiles",
    "Unavailable",
    "bearer",
    "decode",
    "open_channel",
]
