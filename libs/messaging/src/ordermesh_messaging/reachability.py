"""A Kafka broker that cannot be reached, said in one line (see
``ordermesh_platform.dependencies``): aiokafka's own error names neither Kafka nor
what to check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from ordermesh_platform.dependencies import KAFKA, DependencyUnavailable

CHECK_TIMEOUT_S = 5.0


def kafka_failure(
    error: BaseException, bootstrap: str, service: str = ""
) -> DependencyUnavailable | None:
    """``error`` as a :class:`DependencyUnavailable` when it says no broker of
    ``bootstrap`` could be reached; None when it is anything else."""
    if isinstance(error, KafkaConnectionError):
        cause = "no broker answered (is it running, on that port?)"
    elif isinstance(error, KafkaTimeoutError | TimeoutError):
        cause = "no answer in time"
    elif isinstance(error, OSError):
        cause = str(error).strip() or type(error).__name__
    else:
        return None
    return DependencyUnavailable(KAFKA, bootstrap, cause, service)


def describe(error: BaseException, bootstrap: str) -> str:
    """What a log line says of ``error``: the one line when Kafka is out of reach."""
    failure = kafka_failure(error, bootstrap)
    return repr(error) if failure is None else str(failure)


@asynccontextmanager
async def kafka_errors(bootstrap: str, service: str = "") -> AsyncIterator[None]:
    """Inside the block, failing to reach ``bootstrap`` raises :class:`DependencyUnavailable`."""
    try:
        yield
    except Exception as error:
        failure = kafka_failure(error, bootstrap, service)
        if failure is None:
            raise
        raise failure from error


async def check_kafka(bootstrap: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Raise :class:`DependencyUnavailable` unless a broker of ``bootstrap`` answers."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        async with kafka_errors(bootstrap):
            await asyncio.wait_for(client.bootstrap(), timeout_s)
    finally:
        await client.close()
