"""Sends recorded deliveries through their channels, outside any transaction, with retries.

One pass (:meth:`DeliveryWorker.run_once`): claim the due PENDING rows for a lease (one
short transaction), send each through its channel (no transaction open), record the
outcomes (one short transaction for the pass, a statement per kind of outcome, and only
for the rows the claim still holds). A pass waits for its sends ``pass_wait_s`` at most:
a send still out then goes on and is recorded on its own when it ends, so one slow
receiver (a webhook that answers after its whole timeout) holds up no other delivery.
Passes go back to back while they find a full batch due (:meth:`DeliveryWorker.behind`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

from opentelemetry.trace import SpanKind, Status, StatusCode

from ordermesh_notification.channels import DeliveryFailed, Sender
from ordermesh_notification.domain import Channel, GiveUp, Outgoing, Retry, RetryPolicy, Sent
from ordermesh_notification.store import NotificationStore
from ordermesh_platform.db import Transactions
from ordermesh_platform.logs import get_logger
from ordermesh_platform.metrics import (
    NOTIFICATIONS,
    NOTIFICATIONS_DUE,
    NOTIFICATIONS_OLDEST_DUE,
    expose,
)
from ordermesh_platform.still_out import CallsStillOut, answered_within
from ordermesh_platform.telemetry import context_from_traceparent, tracer, untraced

log = get_logger(__name__)
# The due deliveries are counted at most this often (a read of the due index), not per pass.
DUE_OBSERVE_S = 1.0


class DeliveryWorker:
    def __init__(
        self,
        sessions: Transactions,
        senders: Mapping[Channel, Sender],
        policy: RetryPolicy,
        lease_s: float = 60.0,
        batch_size: int = 50,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pass_wait_s: float | None = None,
        max_sends_out: int | None = None,
    ) -> None:
        self._sessions = sessions
        self._senders = senders
        self._policy = policy
        self._lease = timedelta(seconds=lease_s)
        self._batch_size = batch_size
        self._clock = clock
        self._pass_wait_s = pass_wait_s  # None: a pass waits for all its sends
        # Sends their pass stopped waiting for, by notification id; at most this many
        # (each ends within its channel's timeout), past which a pass waits for one.
        self._out: CallsStillOut[str] = CallsStillOut("delivery")
        self._max_out = 4 * batch_size if max_sends_out is None else max_sends_out
        self._observed_at = -DUE_OBSERVE_S
        expose(NOTIFICATIONS_DUE, NOTIFICATIONS_OLDEST_DUE)

    async def deliver_due(self) -> int:
        """One pass, then the due deliveries on /metrics: what the service runs
        (``run_periodically`` with ``again=behind``). Returns how many were attempted."""
        attempted = await self.run_once()
        await self._observe_due()
        return attempted

    def behind(self, attempted: int) -> bool:
        """Whether a pass found a full batch due: then the next goes at once, so a
        backlog is sent back to back, not one batch per interval."""
        return attempted >= self._batch_size

    async def close(self) -> None:
        """Stop the sends still out: their claims lapse and another pass sends them
        again, as a stopped worker's."""
        await self._out.close()

    async def _observe_due(self) -> None:
        """The due deliveries and how late the first is, on /metrics (at most once a
        second): a worker falling behind shows there, not only in the customers' inboxes."""
        if time.monotonic() - self._observed_at < DUE_OBSERVE_S:
            return
        self._observed_at = time.monotonic()
        with untraced():
            async with self._sessions() as session:
                count, late_s = await NotificationStore(session).due(self._clock())
        NOTIFICATIONS_DUE.set(count)
        NOTIFICATIONS_OLDEST_DUE.set(late_s)

    async def run_once(self) -> int:
        """Claim the due deliveries, send them side by side, record the outcomes of
        those sent within ``pass_wait_s`` (the others when they end). Returns how many
        were attempted."""
        if len(self._out) >= self._max_out:
            await self._out.one_recorded()
        claim = str(uuid.uuid4())
        now = self._clock()
        with untraced():
            async with self._sessions.begin() as session:
                due = await NotificationStore(session).claim_due(
                    claim, now, now + self._lease, self._batch_size
                )
        if not due:
            return 0
        sends: dict[asyncio.Future[str | None], Outgoing] = {
            asyncio.ensure_future(self._attempt(message)): message for message in due
        }
        done, pending = await answered_within(sends, self._pass_wait_s)
        for send in pending:  # first: they are tracked (and stopped) whatever comes next
            message = sends[send]
            record = partial(self._record_one, claim, message)
            self._out.record_when_answered(message.notification_id, send, record)
        await self._record(claim, [(sends[send], send.result()) for send in done])
        return len(due)

    async def _record_one(self, claim: str, message: Outgoing, error: str | None) -> None:
        await self._record(claim, [(message, error)])

    async def _record(self, claim: str, sent: Sequence[tuple[Outgoing, str | None]]) -> None:
        """Record the outcomes of sends of the claim, in one transaction."""
        if not sent:
            return
        now = self._clock()
        outcomes = {
            message.notification_id: (self._outcome(message, error, now), error or "")
            for message, error in sent
        }
        # If recording fails (a database blip), the claim lapses and these deliveries
        # are tried again: at least once, as a lost worker leaves them.
        with untraced():  # the pass's statements belong to no one delivery's trace
            async with self._sessions.begin() as session:
                recorded = await NotificationStore(session).record_outcomes(claim, outcomes)
        for message, error in sent:
            self._log(message, outcomes[message.notification_id][0], error, recorded)

    async def _attempt(self, message: Outgoing) -> str | None:
        """Send one delivery under its own span (continuing its event's trace)."""
        with tracer().start_as_current_span(
            f"deliver {message.channel.value.lower()}",
            context=context_from_traceparent(message.traceparent),
            kind=SpanKind.CLIENT,
            attributes={
                "ordermesh.order_id": message.order_id,
                "ordermesh.event_id": message.event_id,
                "ordermesh.channel": message.channel.value,
                "ordermesh.attempt": message.attempts + 1,
            },
        ) as span:
            error = await self._send(message)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error[:200]))
        NOTIFICATIONS.labels(message.channel.value, "sent" if error is None else "failed").inc()
        return error

    def _outcome(
        self, message: Outgoing, error: str | None, now: datetime
    ) -> Sent | Retry | GiveUp:
        if error is None:
            return Sent(message.attempts + 1, now)
        return self._policy.after_failure(message.attempts, now)

    @staticmethod
    def _log(
        message: Outgoing, outcome: Sent | Retry | GiveUp, error: str | None, recorded: set[str]
    ) -> None:
        fields = {
            "notification_id": message.notification_id,
            "event_id": message.event_id,
            "channel": message.channel.value,
            "attempt": outcome.attempts,
        }
        if message.notification_id not in recorded:
            # Our claim expired and another worker took the delivery over: its record stands.
            log.warning("delivery claim lost; outcome not recorded", **fields)
        elif error is None:
            log.debug("delivery sent", **fields)
        elif isinstance(outcome, GiveUp):
            log.error("delivery failed for good", error=error, **fields)
        else:
            log.warning("delivery failed; will retry", error=error, **fields)

    async def _send(self, message: Outgoing) -> str | None:
        """None when the channel took the message, else the error to record."""
        sender = self._senders.get(message.channel)
        if sender is None:
            return f"no sender for channel {message.channel.value}"
        try:
            await sender.send(message)
        except DeliveryFailed as failure:
            return str(failure) or "delivery failed"
        except Exception as error:
            # A defect, not the peer: logged in full here, stored by type only.
            log.exception("delivery raised", notification_id=message.notification_id)
            return f"unexpected {type(error).__name__}"
        return None
