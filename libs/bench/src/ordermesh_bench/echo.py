"""The transport bound: the same three processes and the same calls per order as
PlaceOrder makes, with empty handlers and the same gRPC settings.

A (the order-service stand-in) answers the caller after one call to B (reserve) and
one to C (authorize), and then, as order-service does after confirming, calls C
(capture) and B (commit) in the background. B and C answer at once.

    python -m ordermesh_bench.echo a --port 52000 --b 127.0.0.1:52001 --c 127.0.0.1:52002
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import grpc

from ordermesh_platform.clients import open_channel
from ordermesh_platform.server import server_options
from ordermesh_platform.settings import ServiceSettings

PLACE = "/ordermesh.order.v1.OrderService/PlaceOrder"
RESERVE = "/ordermesh.inventory.v1.InventoryService/ReserveStock"
COMMIT = "/ordermesh.inventory.v1.InventoryService/CommitReservation"
AUTHORIZE = "/ordermesh.payment.v1.PaymentService/AuthorizePayment"
CAPTURE = "/ordermesh.payment.v1.PaymentService/CapturePayment"
# Payloads of about the size of the real messages.
REQUEST_BYTES = b"\x0a\x24" + b"x" * 36 + b"\x12\x20" + b"y" * 32
REPLY_BYTES = b"\x0a\x40" + b"z" * 64


def _passthrough(data: bytes) -> bytes:
    return data


def _unary(behavior: Any) -> grpc.RpcMethodHandler[bytes, bytes]:
    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=_passthrough, response_serializer=_passthrough
    )


async def serve(role: str, port: int, b: str, c: str) -> None:
    settings = ServiceSettings()
    server = grpc.aio.server(options=server_options(settings))
    background: set[asyncio.Task[None]] = set()

    async def empty(request: bytes, context: Any) -> bytes:
        return REPLY_BYTES

    if role == "a":
        to_b, to_c = open_channel(b, settings), open_channel(c, settings)
        calls = {
            name: ch.unary_unary(
                name, request_serializer=_passthrough, response_deserializer=_passthrough
            )
            for name, ch in ((RESERVE, to_b), (COMMIT, to_b), (AUTHORIZE, to_c), (CAPTURE, to_c))
        }

        async def fulfil() -> None:
            await calls[CAPTURE](REQUEST_BYTES, timeout=5)
            await calls[COMMIT](REQUEST_BYTES, timeout=5)

        async def place(request: bytes, context: Any) -> bytes:
            await calls[RESERVE](REQUEST_BYTES, timeout=5)
            await calls[AUTHORIZE](REQUEST_BYTES, timeout=5)
            task = asyncio.create_task(fulfil())
            background.add(task)
            task.add_done_callback(background.discard)
            return REPLY_BYTES

        handlers = {"PlaceOrder": _unary(place)}
        service = "ordermesh.order.v1.OrderService"
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    else:
        for service, methods in (
            ("ordermesh.inventory.v1.InventoryService", ("ReserveStock", "CommitReservation")),
            ("ordermesh.payment.v1.PaymentService", ("AuthorizePayment", "CapturePayment")),
        ):
            handlers = {m: _unary(empty) for m in methods}
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, handlers),)
            )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def start_echo_chain(base_port: int) -> list[subprocess.Popen[bytes]]:
    """A on base_port, B on +1, C on +2, each its own process."""
    b, c = f"127.0.0.1:{base_port + 1}", f"127.0.0.1:{base_port + 2}"
    procs = []
    for role, port in (("b", base_port + 1), ("c", base_port + 2), ("a", base_port)):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ordermesh_bench.echo",
                    role,
                    "--port",
                    str(port),
                    "--b",
                    b,
                    "--c",
                    c,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


async def wait_serving(address: str, timeout_s: float) -> None:
    """Until the chain at ``address`` (A) answers a PlaceOrder end to end, through B and
    C, at most ``timeout_s``. Three Python processes take seconds of CPU to start; a
    run measured meanwhile would share the machine with their start-up."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        place = channel.unary_unary(
            PLACE, request_serializer=_passthrough, response_deserializer=_passthrough
        )
        while True:
            try:
                await place(REQUEST_BYTES, timeout=1.0)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the echo chain at {address} is not serving") from None
                await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["a", "b", "c"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--b", default="")
    parser.add_argument("--c", default="")
    args = parser.parse_args()
    asyncio.run(serve(args.role, args.port, args.b, args.c))


if __name__ == "__main__":
    main()
