"""The one way a Kafka producer is built: the outbox relay, the consumer's dead
letters, the DLQ replay and the bench all publish with the same guarantees."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from murmurhash2 import murmurhash2

DEFAULT_REQUEST_TIMEOUT_S = 5.0
# Sends issued together leave in one request: the relay publishes a pass's rows side by
# side, and 2 ms is small beside a broker's acknowledgement.
LINGER_MS = 2
MAX_BATCH_BYTES = 1024 * 1024


def new_producer(
    bootstrap: str, request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
) -> AIOKafkaProducer:
    """A producer, not started. acks=all: a send completes only when every in-sync
    replica has the record. The idempotent producer is off: the local broker refuses
    it, and consumers dedupe by event id anyway (at-least-once on the wire)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        request_timeout_ms=int(request_timeout_s * 1000),
    )


# Kafka's default partitioner: murmur2 of the key with the Java client's seed, made
# non-negative, modulo the partition count. aiokafka's murmur2 is pure Python (about
# 6 us a key here, one key per event); the C one gives the same hash in a fortieth.
_KAFKA_MURMUR2_SEED = 0x9747B28C


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of ``partitions`` (all of the topic's, sorted) that a keyed send
    of any Kafka client would choose for ``key``."""
    return partitions[(murmurhash2(key, _KAFKA_MURMUR2_SEED) & 0x7FFFFFFF) % len(partitions)]
