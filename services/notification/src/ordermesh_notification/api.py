"""The NotificationService servicer: protobuf in and out, nothing else."""

from __future__ import annotations

import grpc

from ordermesh.notification.v1 import notification_pb2 as pb
from ordermesh.notification.v1 import notification_pb2_grpc
from ordermesh_notification.domain import Channel, Delivery, DeliveryState, Preferences
from ordermesh_notification.usecases import Notifications
from ordermesh_platform.convert import to_timestamp
from ordermesh_platform.policy import CustomerInRequest, Policy

Context = grpc.aio.ServicerContext[object, object]

# Who may call what, while ORDERMESH_AUTH_ENABLED is on (docs/security.md): customers
# see and set only their own notifications and preferences.
POLICY = Policy(
    pb.DESCRIPTOR.services_by_name["NotificationService"].full_name,
    {
        "ListNotifications": CustomerInRequest("customer_id"),
        "GetPreferences": CustomerInRequest("customer_id"),
        "SetPreferences": CustomerInRequest("preferences.customer_id"),
    },
)

CHANNEL_TO_PB = {
    Channel.LOG: pb.CHANNEL_LOG,
    Channel.EMAIL: pb.CHANNEL_EMAIL,
    Channel.WEBHOOK: pb.CHANNEL_WEBHOOK,
}
CHANNEL_FROM_PB = {v: k for k, v in CHANNEL_TO_PB.items()}
STATE_TO_PB = {
    DeliveryState.PENDING: pb.DELIVERY_STATE_PENDING,
    DeliveryState.SENT: pb.DELIVERY_STATE_SENT,
    DeliveryState.FAILED: pb.DELIVERY_STATE_FAILED,
}


def preferences_to_pb(prefs: Preferences) -> pb.Preferences:
    return pb.Preferences(
        customer_id=prefs.customer_id,
        channels=[CHANNEL_TO_PB[c] for c in prefs.channels],
        email=prefs.email,
        webhook_url=prefs.webhook_url,
    )


def delivery_to_pb(d: Delivery) -> pb.Notification:
    return pb.Notification(
        notification_id=d.notification_id,
        event_id=d.event_id,
        event_type=d.event_type,
        customer_id=d.customer_id,
        order_id=d.order_id,
        channel=CHANNEL_TO_PB[d.channel],
        state=STATE_TO_PB[d.state],
        attempts=d.attempts,
        subject=d.subject,
        last_error=d.last_error,
        create_time=to_timestamp(d.created_at),
        deliver_time=to_timestamp(d.delivered_at),
    )


class NotificationApi(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, notifications: Notifications) -> None:
        self._notifications = notifications

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Context
    ) -> pb.ListNotificationsResponse:
        rows, token = await self._notifications.list_deliveries(
            request.customer_id, request.order_id, request.page_size, request.page_token
        )
        return pb.ListNotificationsResponse(
            notifications=[delivery_to_pb(d) for d in rows], next_page_token=token
        )

    async def GetPreferences(
        self, request: pb.GetPreferencesRequest, context: Context
    ) -> pb.GetPreferencesResponse:
        prefs = await self._notifications.get_preferences(request.customer_id)
        return pb.GetPreferencesResponse(preferences=preferences_to_pb(prefs))

    async def SetPreferences(
        self, request: pb.SetPreferencesRequest, context: Context
    ) -> pb.SetPreferencesResponse:
        p = request.preferences
        known = [CHANNEL_FROM_PB[c] for c in p.channels if c in CHANNEL_FROM_PB]
        channels = tuple(dict.fromkeys(known)) or (Channel.LOG,)
        prefs = await self._notifications.set_preferences(
            Preferences(p.customer_id, channels, p.email, p.webhook_url),
            channel_count=len(p.channels),
            unknown_channel=len(known) != len(p.channels),
        )
        return pb.SetPreferencesResponse(preferences=preferences_to_pb(prefs))
