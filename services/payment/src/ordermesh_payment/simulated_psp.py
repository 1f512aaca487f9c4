"""A simulated payment provider for development and tests. The token decides:

- ``tok_ok`` (and any other token): approved
- ``tok_decline``: declined, ``card_declined``
- ``tok_insufficient_funds``: declined, ``insufficient_funds``
- ``tok_timeout``: never answers (the caller's timeout fires)
- ``tok_flaky``: the first attempt per idempotency key fails transiently, then approved

``latency_s`` is added to every call; ``failure_rate`` is the share of calls that fail
transiently. Declines and approvals are decided by the token alone, so the provider
needs no memory to stay consistent across a payment-service restart.

With ``chargebacks``, an approved token that starts with the rule's prefix (for example
``tok_fraud_1``) is charged back after the rule's delay, unless the payment is voided or
refunded first (``simulated_chargebacks.py``): the labels risk scoring learns from.
"""

from __future__ import annotations

import asyncio
import random
import uuid

from ordermesh_payment.psp import Authorization, PspDeclined
from ordermesh_payment.simulated_chargebacks import SimulatedChargebacks
from ordermesh_platform.resilience import Transient

DECLINES = {"tok_decline": "card_declined", "tok_insufficient_funds": "insufficient_funds"}
CHARGEBACK_REFERENCE_PREFIX = "sim_cb_"


class SimulatedProvider:
    def __init__(
        self,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
        chargebacks: SimulatedChargebacks | None = None,
    ) -> None:
        self.latency_s = latency_s
        self.chargebacks = chargebacks
        self.failure_rate = failure_rate
        self._rng = rng or random.Random()
        self._flaky_seen: set[str] = set()  # only keys with tok_flaky, a testing token

    async def _respond(self, operation: str, key: str) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.failure_rate and self._rng.random() < self.failure_rate:
            raise Transient("simulated provider failure")

    async def authorize(
        self, key: str, amount_minor: int, currency: str, token: str
    ) -> Authorization:
        await self._respond("authorize", key)
        if token == "tok_timeout":
            await asyncio.Event().wait()  # never answers
        if token == "tok_flaky" and key not in self._flaky_seen:
            self._flaky_seen.add(key)
            raise Transient("simulated flaky failure")
        if token in DECLINES:
            raise PspDeclined(DECLINES[token])
        # Deterministic per key: a repeated authorization is the same authorization.
        digest = uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:16]
        if self.chargebacks is not None and self.chargebacks.rule.charges_back(token):
            # The reference says a chargeback is scheduled, so a void or refund of any
            # other payment costs no statement (voids come in batches; this is one more).
            reference = f"{CHARGEBACK_REFERENCE_PREFIX}{digest}"
            await self.chargebacks.schedule(key, reference, amount_minor, currency)
            return Authorization(reference=reference)
        return Authorization(reference=f"sim_{digest}")

    async def capture(self, key: str, reference: str, amount_minor: int) -> None:
        await self._respond("capture", key)

    async def void(self, key: str, reference: str) -> None:
        await self._respond("void", key)
        await self._cancel_chargeback(key, reference)

    async def refund(self, key: str, reference: str, amount_minor: int) -> None:
        await self._respond("refund", key)
        await self._cancel_chargeback(key, reference)

    async def _cancel_chargeback(self, key: str, reference: str) -> None:
        if self.chargebacks is not None and reference.startswith(CHARGEBACK_REFERENCE_PREFIX):
            await self.chargebacks.cancel(key)
