"""Payment's one consumer (group ordermesh-payment, one inbox) and what it hands each
handler: the provider's chargebacks to the labels, payment's own events to the risk
features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_messaging.inbound import InboundEvent


class TopicHandler(Protocol):
    @property
    def topics(self) -> tuple[str, ...]: ...

    @property
    def event_types(self) -> tuple[str, ...]:
        """The CloudEvents types it reads of its topics (their full protobuf names);
        empty: every type."""
        ...

    @property
    def idempotent(self) -> bool:
        """Whether handling an event twice changes nothing by itself: its events then
        take no inbox row."""
        ...

    def wants(self, event: InboundEvent) -> bool:
        """Whether the handler acts on this event of its topics."""
        ...

    async def handle(self, conn: AsyncConnection, events: Sequence[InboundEvent]) -> None: ...


MAX_REMEMBERED_TYPES = 256


class Inbound:
    """Each handler gets the events of its topics, in one transaction for all."""

    def __init__(self, handlers: Sequence[TopicHandler]) -> None:
        self._handlers = tuple(handlers)
        self.topics = tuple(dict.fromkeys(t for h in self._handlers for t in h.topics))
        self._wanted_types: dict[tuple[str, str], bool] = {}

    def wants_type(self, topic: str, event_type: str) -> bool:
        """Whether some handler of the topic reads events of this type: the consumer
        passes over the others before decoding them."""
        wanted = self._wanted_types.get((topic, event_type))
        if wanted is None:
            wanted = any(
                topic in h.topics and (not h.event_types or event_type in h.event_types)
                for h in self._handlers
            )
            # A few topics and types: each pair is answered once (bounded: a producer
            # sending made-up types costs a look-up each, not memory).
            if len(self._wanted_types) < MAX_REMEMBERED_TYPES:
                self._wanted_types[topic, event_type] = wanted
        return wanted

    def deduplicated(self, event: InboundEvent) -> bool:
        """Whether the event takes an inbox row: unless its handler is idempotent."""
        return not all(h.idempotent for h in self._handlers if event.topic in h.topics)

    def wants(self, event: InboundEvent) -> bool:
        """Whether some handler acts on the event: the consumer passes over the others
        (with risk on, payment's topic carries captures, voids and refunds too, which
        no feature needs), with no inbox row and no transaction."""
        return any(event.topic in h.topics and h.wants(event) for h in self._handlers)

    async def handle(self, conn: AsyncConnection, events: Sequence[InboundEvent]) -> None:
        for handler in self._handlers:
            mine = [e for e in events if e.topic in handler.topics]
            if mine:
                await handler.handle(conn, mine)
