"""What the CLI prints, in one line and without a traceback, when a command cannot
reach what it needs (a database, a broker, a service)."""

from __future__ import annotations

import grpc

from ordermesh_platform.dependencies import DependencyUnavailable, connection_cause

# gRPC codes that mean "nobody answered", not "the service said no".
UNREACHED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class Failure(Exception):
    """A command cannot go on, for a reason its message says in full."""


def one_line(error: BaseException) -> str | None:
    """The error as one line when it is a failure to connect; None for anything else
    (a bug keeps its traceback)."""
    from aiokafka.errors import KafkaConnectionError

    if isinstance(error, Failure | DependencyUnavailable):
        return str(error)
    if isinstance(error, KafkaConnectionError):
        return f"cannot use Kafka: {_first_line(error)}"
    if isinstance(error, grpc.aio.AioRpcError) and error.code() in UNREACHED:
        return f"a service did not answer: {error.code().name}: {error.details()}"
    if (cause := connection_cause(error)) is not None:
        return f"cannot connect: {cause}"
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
