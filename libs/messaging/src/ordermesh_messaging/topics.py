"""Topic administration: the topics each service publishes to exist before it publishes."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ordermesh_platform.logs import get_logger

log = get_logger(__name__)

TOPIC_ALREADY_EXISTS = 36


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


async def ensure_topics(
    bootstrap: str, topics: Iterable[str], partitions: int, replication: int, timeout_s: float
) -> None:
    """Create the topics and their dead-letter siblings when missing."""
    wanted = sorted({name for topic in topics for name in (topic, dlq_topic(topic))})
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return
        response = await admin.create_topics(
            [NewTopic(t, partitions, replication) for t in missing]
        )
        for topic, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic}: {code} {message}")
        log.info("topics created", topics=missing, partitions=partitions)
    finally:
        await admin.close()
