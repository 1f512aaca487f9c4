"""Messaging settings, mixed into the settings of the services that publish or consume."""

from __future__ import annotations

from pydantic import Field

from ordermesh_messaging.producer import DEFAULT_REQUEST_TIMEOUT_S
from ordermesh_platform.settings import ServiceSettings


class KafkaSettings(ServiceSettings):
    kafka_create_topics: bool = Field(
        True, description="Create missing topics (and their .dlq) at start-up."
    )
    kafka_topic_partitions: int = Field(6, ge=1, description="Partitions of created topics.")
    kafka_replication_factor: int = Field(1, ge=1, description="Replicas of created topics.")
    kafka_request_timeout_s: float = Field(
        DEFAULT_REQUEST_TIMEOUT_S,
        gt=0,
        description="A produce that the broker has not acknowledged by then fails.",
    )


class RelaySettings(KafkaSettings):
    relay_enabled: bool = Field(
        True, description="Run the outbox relay inside the service process."
    )
    outbox_batch_size: int = Field(
        2000, ge=1, description="Rows claimed and published at once, at most."
    )
    outbox_poll_s: float = Field(
        0.5, gt=0, description="Polling fallback when no NOTIFY wakes the relay."
    )
    outbox_pass_interval_s: float = Field(
        0.25,
        ge=0,
        description="Least time between the starts of two relay passes while it keeps "
        "up: under steady load each pass carries more rows, at up to this much more "
        "event latency (a lone commit still goes at once; a backlog goes back to back).",
    )


class ConsumerSettings(KafkaSettings):
    consumer_group: str = Field("", description="Kafka consumer group; empty: ordermesh-<service>.")
    consumer_max_attempts: int = Field(
        5, ge=1, description="Handler attempts before a message goes to <topic>.dlq."
    )
    consumer_backoff_s: float = Field(0.2, ge=0, description="First retry backoff (doubles).")
    consumer_session_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A consumer not heard from this long leaves its group; joining waits "
        "up to half of it for the group's members (the broker bounds it: Kafka's "
        "group.min.session.timeout.ms is 6 s).",
    )
    inbox_retention_s: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="Handled event ids are kept this long; keep it above the topics' retention.",
    )
