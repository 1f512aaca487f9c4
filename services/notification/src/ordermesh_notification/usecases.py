"""Notification use cases: each one transaction over the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ordermesh_notification.domain import (
    Delivery,
    Preferences,
    validate_preferences,
)
from ordermesh_notification.store import NotificationStore, delete_finished_before
from ordermesh_platform.db import Transactions
from ordermesh_platform.errors import Validator
from ordermesh_platform.paging import Cursor, decode_token, page_of, page_size
from ordermesh_platform.validation import check_customer_id, check_order_id


class Notifications:
    def __init__(self, sessions: Transactions) -> None:
        self._sessions = sessions

    async def get_preferences(self, customer_id: str) -> Preferences:
        v = Validator()
        check_customer_id(v, customer_id)
        v.raise_if_invalid()
        async with self._sessions() as session:
            found = await NotificationStore(session).get_preferences(customer_id)
        return found or Preferences.default_for(customer_id)

    async def set_preferences(
        self, prefs: Preferences, channel_count: int, unknown_channel: bool
    ) -> Preferences:
        validate_preferences(prefs, channel_count, unknown_channel)
        async with self._sessions.begin() as session:
            await NotificationStore(session).save_preferences(prefs)
        return prefs

    async def list_deliveries(
        self, customer_id: str, order_id: str, requested_size: int, token: str
    ) -> tuple[list[Delivery], str]:
        v = Validator()
        check_customer_id(v, customer_id)
        if order_id:  # a filter: empty lists every order's deliveries
            check_order_id(v, order_id)
        size = page_size(v, requested_size)
        after = decode_token(v, token)
        v.raise_if_invalid()
        async with self._sessions() as session:
            rows = await NotificationStore(session).list_deliveries(
                customer_id, order_id, after, size + 1
            )
        return page_of(rows, size, lambda d: Cursor(d.created_at, d.notification_id))

    async def forget_finished(self, retention: timedelta) -> int:
        """The retention sweep: deliveries sent or given up more than ``retention``
        ago go (ListNotifications no longer shows them); how many went."""
        return await delete_finished_before(self._sessions, datetime.now(UTC) - retention)
