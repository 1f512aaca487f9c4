"""The PostgreSQL connections a test run holds at its peak, reported when it ends.

The server's 100 connections are shared by everything on the machine, a
`ordermesh up --postgres` mesh beside the tests among them, so the run keeps its
meshes' pools small (docs/capacity.md, "Sharing one PostgreSQL") and says what it
used. The count is of the whole server, above what was in use when the watch
started: another program's connections that come and go during the run count too."""

from __future__ import annotations

import asyncio
import threading

import asyncpg

APPLICATION_NAME = "ordermesh-tests-connection-watch"
COUNT = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"


class ConnectionWatch:
    """Samples the server's client connections every ``interval_s`` on a thread."""

    def __init__(self, server_url: str, interval_s: float = 0.25) -> None:
        self._url = f"{server_url}/postgres"
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-connections", daemon=True)
        self._ready = threading.Event()
        self.baseline: int | None = None  # None: the server could not be reached
        self.peak = 0
        self.limit = 0

    def start(self, timeout_s: float = 5.0) -> None:
        self._thread.start()
        self._ready.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak_above_baseline(self) -> int:
        return self.peak - (self.baseline or 0)

    def summary(self) -> str:
        if self.baseline is None:
            return "PostgreSQL connections: not watched (server not reachable)"
        return (
            f"PostgreSQL connections: peak {self.peak} of {self.limit}, "
            f"{self.peak_above_baseline} above the {self.baseline} in use when the run started"
        )

    def _run(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self._sample_until_stopped()
                # A restart can also leave the client mid-operation on its dead socket
                # (InternalClientError): the same as a lost connection here.
                except (
                    OSError,
                    TimeoutError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    asyncpg.InternalClientError,
                ):
                    if self.baseline is None:
                        return  # no server to watch
                    await asyncio.sleep(1)  # a test restarted the server: connect again
        finally:
            self._ready.set()

    async def _sample_until_stopped(self) -> None:
        conn = await asyncpg.connect(
            self._url, timeout=3, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            if self.baseline is None:
                self.limit = int(await conn.fetchval("SHOW max_connections"))
                self.baseline = self.peak = int(await conn.fetchval(COUNT))
                self._ready.set()
            while not self._stop.is_set():
                self.peak = max(self.peak, int(await conn.fetchval(COUNT)))
                await asyncio.sleep(self._interval_s)
        finally:
            await conn.close()
