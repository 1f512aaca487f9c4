"""Reflection serves the contracts with their comments, so `grpcurl describe` shows
the API documentation written in protos/."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ordermesh.order.v1 import order_pb2
from ordermesh_platform.reflection import documented_files, enable_reflection

PROTOS = Path(__file__).resolve().parents[2] / "protos"
ORDER_SERVICE = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


async def _files_containing(symbol: str) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    server = grpc.aio.server()
    enable_reflection(server, (ORDER_SERVICE, HEALTH))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            # The typeshed stubs type this stub for sync channels only.
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
            request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
            call = stub.ServerReflectionInfo(iter([request]), timeout=5)  # type: ignore[operator]
            replies = [reply async for reply in call]
    finally:
        await server.stop(None)
    assert len(replies) == 1
    protos = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in replies[0].file_descriptor_response.file_descriptor_proto
    ]
    return {p.name: p for p in protos}


def _comments(proto: descriptor_pb2.FileDescriptorProto) -> list[str]:
    return [x.leading_comments.strip() for x in proto.source_code_info.location]


async def test_a_comment_written_in_a_proto_reaches_a_reflection_client() -> None:
    written = (PROTOS / "ordermesh/order/v1/order.proto").read_text()
    assert "// Server-assigned order id (a UUID)." in written
    files = await _files_containing(ORDER_SERVICE)
    order = files["ordermesh/order/v1/order.proto"]
    assert "Server-assigned order id (a UUID)." in _comments(order)
    # Its imports come along, documented too where they are ours.
    assert _comments(files["ordermesh/common/v1/money.proto"])
    assert "google/protobuf/timestamp.proto" in files


async def test_services_without_documented_descriptors_are_still_described() -> None:
    files = await _files_containing(HEALTH)
    assert "grpc_health/v1/health.proto" in files


def _without_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _without_json_names(message.nested_type)


def test_the_documented_descriptors_match_the_registered_stubs() -> None:
    # The same contracts as the generated code, but for the comments and the JSON names
    # protoc spells out (make proto-check keeps both in step with protos/).
    documented = descriptor_pb2.FileDescriptorProto()
    documented.CopyFrom(documented_files()["ordermesh/order/v1/order.proto"])
    documented.ClearField("source_code_info")
    _without_json_names(documented.message_type)
    registered = descriptor_pb2.FileDescriptorProto()
    order_pb2.DESCRIPTOR.CopyToProto(registered)
    assert documented == registered
