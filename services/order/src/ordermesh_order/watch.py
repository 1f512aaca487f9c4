"""In-process notice of order changes, for WatchOrder and for PlaceOrder callers that
wait for the outcome. Watchers also re-read the database on a short poll, so changes
made by another replica are seen too."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class OrderWatch:
    def __init__(self) -> None:
        self._events: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def changed(self, order_id: str) -> None:
        for event in self._events.get(order_id, ()):
            event.set()

    @contextmanager
    def subscribe(self, order_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._events[order_id].add(event)
        try:
            yield event
        finally:
            self._events[order_id].discard(event)
            if not self._events[order_id]:
                del self._events[order_id]
