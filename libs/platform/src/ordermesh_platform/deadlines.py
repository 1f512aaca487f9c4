"""The deadline of the gRPC call being handled, so that the database work it starts is
bounded by it too (``Transactions``). Set by the server interceptor around each call;
work that goes on after the call (a background saga) runs detached from it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("ordermesh_call_deadline", default=None)


@contextmanager
def call_deadline(time_remaining_s: float | None) -> Iterator[None]:
    """Within the block, the call must be answered in ``time_remaining_s`` (None: no
    deadline)."""
    deadline = None if time_remaining_s is None else time.monotonic() + time_remaining_s
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def detached() -> AbstractContextManager[None]:
    """Within the block, no call waits: work that outlives its call."""
    return call_deadline(None)


def remaining_s() -> float | None:
    """Seconds left to the current call's deadline; None outside a call or without one."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()
