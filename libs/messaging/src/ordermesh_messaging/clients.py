"""Starting a Kafka client so that a failed or cancelled start leaves nothing open."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def start_or_stop(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    """``client.start()``; when it fails or is cancelled (a broker away, a shutdown during
    a group join), the client is stopped before the error goes on. Otherwise a retry
    loop leaves an open client behind on every attempt, and a consumer stays a member
    of its group until the broker times it out, holding up the next one's partitions."""
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(client.stop())
        raise
