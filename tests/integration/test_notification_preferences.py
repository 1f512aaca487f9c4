"""Notification preferences over real gRPC, on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from ordermesh.notification.v1 import notification_pb2 as pb
from ordermesh.notification.v1 import notification_pb2_grpc
from ordermesh_cli.registry import load_service
from tests.support.services import running_service

pytestmark = pytest.mark.integration


@pytest.fixture
async def notifications(
    any_database: str,
) -> AsyncIterator[notification_pb2_grpc.NotificationServiceAsyncStub]:
    async with (
        running_service(load_service("notification"), any_database) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        yield notification_pb2_grpc.NotificationServiceStub(channel)


async def test_preferences_default_to_log_then_round_trip(
    notifications: notification_pb2_grpc.NotificationServiceAsyncStub,
) -> None:
    got = await notifications.GetPreferences(pb.GetPreferencesRequest(customer_id="c1"))
    assert list(got.preferences.channels) == [pb.CHANNEL_LOG]
    wanted = pb.Preferences(
        customer_id="c1",
        channels=[pb.CHANNEL_EMAIL, pb.CHANNEL_WEBHOOK],
        email="c1@example.com",
        webhook_url="https://hooks.example.com/orders",
    )
    await notifications.SetPreferences(pb.SetPreferencesRequest(preferences=wanted))
    got = await notifications.GetPreferences(pb.GetPreferencesRequest(customer_id="c1"))
    assert got.preferences == wanted


async def test_email_channel_without_an_address_is_invalid(
    notifications: notification_pb2_grpc.NotificationServiceAsyncStub,
) -> None:
    prefs = pb.Preferences(customer_id="c1", channels=[pb.CHANNEL_EMAIL])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await notifications.SetPreferences(pb.SetPreferencesRequest(preferences=prefs))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_listing_with_a_forged_page_token_is_invalid(
    notifications: notification_pb2_grpc.NotificationServiceAsyncStub,
) -> None:
    empty = await notifications.ListNotifications(pb.ListNotificationsRequest(customer_id="c1"))
    assert list(empty.notifications) == []
    assert empty.next_page_token == ""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await notifications.ListNotifications(
            pb.ListNotificationsRequest(customer_id="c1", page_token="forged")
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
