"""The bench's transport baseline, the echo chain: three real gRPC processes on
loopback, waited for before anything is measured."""

from __future__ import annotations

import grpc
import pytest

from ordermesh_bench.echo import PLACE, REPLY_BYTES, REQUEST_BYTES, start_echo_chain, wait_serving
from ordermesh_cli.processes import stop_all
from tests.support.ports import free_port_block

pytestmark = pytest.mark.integration


async def test_once_waited_for_the_chain_answers_its_first_call_through_all_three() -> None:
    base = free_port_block(3)
    chain = start_echo_chain(base)
    try:
        await wait_serving(f"127.0.0.1:{base}", 60)
        # A answers only after B and C did: one call proves all three serve.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{base}") as channel:
            place = channel.unary_unary(
                PLACE, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            assert await place(REQUEST_BYTES, timeout=1.0) == REPLY_BYTES
    finally:
        stop_all(chain, 5)


async def test_a_chain_that_never_serves_is_said_so_when_the_wait_ends() -> None:
    base = free_port_block(3)  # nothing listens there
    with pytest.raises(TimeoutError, match="not serving"):
        await wait_serving(f"127.0.0.1:{base}", 0.5)
