"""Wiring: the notification servicer onto the shared bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ordermesh.notification.v1 import notification_pb2, notification_pb2_grpc
from ordermesh_notification.api import NotificationApi
from ordermesh_notification.config import NotificationSettings
from ordermesh_notification.usecases import Notifications
from ordermesh_platform.service import Runtime, ServiceSpec


@asynccontextmanager
async def wire(runtime: Runtime) -> AsyncIterator[None]:
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(
        NotificationApi(Notifications(runtime.sessions)), runtime.server
    )
    yield


service = ServiceSpec(
    name="notification",
    settings_type=NotificationSettings,
    grpc_services=(notification_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,),
    migrations="ordermesh_notification:migrations",
    wire=wire,
)
