"""Starting and stopping a Kafka client so that neither leaves anything open or
holds a shutdown up."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ordermesh_platform.logs import get_logger

log = get_logger(__name__)

# A stop that takes longer is abandoned. aiokafka's consumer lets a group join in flight
# finish before it leaves the group, and a join waits out the rebalance: with a peer
# killed mid-rebalance that held a replica's drain up for over 30 s. Nothing is lost by
# abandoning it: offsets are committed after each poll's transaction, the relay deletes
# a row only once the broker acknowledged it, and the group drops this member when its
# session times out.
STOP_BOUND_S = 5.0


async def start_or_stop(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    """``client.start()``; when it fails or is cancelled (a broker away, a shutdown during
    a group join), the client is stopped before the error goes on. Otherwise a retry
    loop leaves an open client behind on every attempt, and a consumer stays a member
    of its group until the broker times it out, holding up the next one's partitions."""
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(stop(client))
        raise


async def stop(client: AIOKafkaProducer | AIOKafkaConsumer, bound_s: float = STOP_BOUND_S) -> None:
    """``client.stop()``, given up after ``bound_s`` (see STOP_BOUND_S); its errors are
    logged, not raised: a client being stopped has nothing left to report to."""
    try:
        await asyncio.wait_for(client.stop(), bound_s)
    except TimeoutError:
        log.warning("kafka client did not stop in time; abandoned", bound_s=bound_s)
    except Exception as error:
        log.debug("kafka client stopped with an error", error=repr(error))
