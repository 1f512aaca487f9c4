"""Server reflection that serves the contracts with their comments.

The stubs register descriptors without source info, and grpcio-reflection serialises
what the pool holds, so `grpcurl describe` would show bare messages. `make proto`
also writes the contracts with source info to ``ordermesh/descriptors.binpb`` (in the
contracts package); reflection answers with those, and with the plain descriptors
for everything else (health, reflection itself)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection

DESCRIPTORS = "descriptors.binpb"


@functools.cache
def documented_files() -> Mapping[str, descriptor_pb2.FileDescriptorProto]:
    """The contracts' files, with their comments, by file name."""
    data = resources.files("ordermesh").joinpath(DESCRIPTORS).read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return {f.name: f for f in files}


class _File:
    """A file descriptor as grpcio-reflection reads it (name, dependencies, proto)."""

    def __init__(self, pool: DocumentedPool, descriptor: FileDescriptor) -> None:
        self._pool = pool
        self._descriptor = descriptor
        self.name = descriptor.name

    @property
    def dependencies(self) -> list[_File]:
        return [_File(self._pool, d) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        documented = self._pool.documented.get(self.name)
        if documented is None:
            self._descriptor.CopyToProto(proto)
        else:
            proto.CopyFrom(documented)


class DocumentedPool:
    """A descriptor pool whose files carry their comments where we have them."""

    def __init__(
        self,
        pool: descriptor_pool.DescriptorPool,
        documented: Mapping[str, descriptor_pb2.FileDescriptorProto],
    ) -> None:
        self._pool = pool
        self.documented = documented

    def FindFileByName(self, name: str) -> _File:
        return _File(self, self._pool.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> _File:
        return _File(self, self._pool.FindFileContainingSymbol(symbol))

    def __getattr__(self, name: str) -> Any:  # the message and extension look-ups
        return getattr(self._pool, name)


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Reflection for ``service_names`` (and itself), documented."""
    names = (*service_names, reflection.SERVICE_NAME)
    pool = DocumentedPool(descriptor_pool.Default(), documented_files())
    reflection.enable_server_reflection(names, server, pool=pool)  # type: ignore[arg-type]
