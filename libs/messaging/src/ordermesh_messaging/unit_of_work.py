"""The unit of work that owns the outbox. A use case changes state on the unit's
connection and records the events the change raised; the unit writes them as outbox
rows (one statement, however many) as the last step of its transaction. So every
service writes its events one way: none can forget the outbox, and none can publish
an event whose change did not commit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_messaging.events import DomainEvent
from ordermesh_messaging.outbox import Outbox
from ordermesh_platform.db import Transactions


class UnitOfWork:
    """One transaction in progress, and the events recorded in it so far."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.events: list[DomainEvent] = []

    def record(self, events: Iterable[DomainEvent]) -> None:
        self.events.extend(events)


class UnitsOfWork:
    """Begins units of work on one service's database, whose events go to its outbox."""

    def __init__(self, transactions: Transactions, outbox: Table) -> None:
        self._transactions = transactions
        self._outbox = Outbox(outbox)

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads (rolled back at the end): nothing to record."""
        return self._transactions()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[UnitOfWork]:
        """A transaction that, when its block ends without an error, writes the recorded
        events and commits; on an error it rolls back, events and all."""
        async with self._transactions.begin() as connection:
            work = UnitOfWork(connection)
            yield work
            await self._outbox.add(connection, work.events)
