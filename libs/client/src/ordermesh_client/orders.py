"""OrderService for a caller: PlaceOrder that can be retried safely, errors typed."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import grpc

from ordermesh.order.v1 import order_pb2, order_pb2_grpc
from ordermesh_client.channels import Metadata
from ordermesh_client.errors import OrdermeshError, decode


class OrderClient:
    """OrderService over ``channel`` (see :func:`ordermesh_client.open_channel`).

    ``place_order`` tries again on failures that cannot have placed a different order:
    UNAVAILABLE without a reason (the call did not get through) and RESOURCE_EXHAUSTED
    (the service shed it before doing any work). Every attempt sends the same
    idempotency key, so an order that was placed after all is answered, not placed
    twice. At most ``attempts`` calls, within the one ``timeout_s`` of the whole; the
    pause between two is exponential with full jitter, or the server's RetryInfo delay
    when it names one. This is on top of the channel's own quick retries."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        attempts: int = 5,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.stub = order_pb2_grpc.OrderServiceStub(channel)
        self._attempts = attempts
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._rng = rng or random.Random()

    async def place_order(
        self,
        request: order_pb2.PlaceOrderRequest,
        *,
        timeout_s: float = 30.0,
        metadata: Metadata = (),
    ) -> order_pb2.PlaceOrderResponse:
        """Place ``request`` (a new idempotency key is set when it has none); raises the
        typed :class:`~ordermesh_client.errors.OrdermeshError` of the last attempt."""
        if not request.idempotency_key:
            keyed = order_pb2.PlaceOrderRequest()
            keyed.CopyFrom(request)
            keyed.idempotency_key = uuid.uuid4().hex
            request = keyed
        deadline = time.monotonic() + timeout_s
        for attempt in range(1, self._attempts + 1):
            try:
                return await self.stub.PlaceOrder(
                    request, timeout=max(deadline - time.monotonic(), 0.001), metadata=metadata
                )
            except grpc.aio.AioRpcError as raw:
                error = decode(raw)
                left = deadline - time.monotonic()
                pause = self._pause(attempt, error)
                if not error.retryable or attempt == self._attempts or pause >= left:
                    raise error from raw
            await asyncio.sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pause(self, attempt: int, error: OrdermeshError) -> float:
        if error.retry_after is not None:
            return error.retry_after
        ceiling = min(self._max_backoff_s, self._initial_backoff_s * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)
