"""Wiring: the notification servicer, the event handler, the channels and the delivery
worker onto the shared bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx

from ordermesh.notification.v1 import notification_pb2, notification_pb2_grpc
from ordermesh_messaging.consumer import EventConsumer
from ordermesh_messaging.inbox import Inbox
from ordermesh_notification.api import POLICY, NotificationApi
from ordermesh_notification.channels import LogSender, Sender, SmtpConfig, SmtpSender, WebhookSender
from ordermesh_notification.config import DEV_WEBHOOK_SECRET, NotificationSettings
from ordermesh_notification.delivery import DeliveryWorker
from ordermesh_notification.domain import Channel, RetryPolicy
from ordermesh_notification.handler import NotificationHandler
from ordermesh_notification.store import inbox
from ordermesh_notification.usecases import Notifications
from ordermesh_platform.logs import get_logger
from ordermesh_platform.service import Runtime, ServiceSpec
from ordermesh_platform.workers import background, run_periodically

log = get_logger(__name__)


def build_senders(settings: NotificationSettings, http: httpx.AsyncClient) -> dict[Channel, Sender]:
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return {
        Channel.LOG: LogSender(),
        Channel.EMAIL: SmtpSender(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                username=settings.smtp_username or None,
                password=password,
                starttls=settings.smtp_starttls,
                timeout_s=settings.smtp_timeout_s,
            )
        ),
        Channel.WEBHOOK: WebhookSender(
            http,
            settings.webhook_secret.get_secret_value().encode(),
            settings.webhook_timeout_s,
        ),
    }


def retry_policy(settings: NotificationSettings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.delivery_max_attempts,
        base_s=settings.delivery_backoff_base_s,
        max_backoff_s=settings.delivery_backoff_max_s,
    )


@asynccontextmanager
async def wire(runtime: Runtime) -> AsyncIterator[None]:
    settings = runtime.settings
    assert isinstance(settings, NotificationSettings)
    if settings.webhook_secret.get_secret_value() == DEV_WEBHOOK_SECRET:
        log.warning(
            "ORDERMESH_WEBHOOK_SECRET is unset: webhooks are signed with the public "
            "development secret"
        )
    notifications = Notifications(runtime.sessions)
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(
        NotificationApi(notifications), runtime.server
    )
    handler = NotificationHandler()
    consumer = EventConsumer(
        "notification",
        handler.topics,
        handler.handle,
        runtime.sessions,
        Inbox(inbox, "notification"),
        settings,
        wanted_type=handler.wants_type,
    )
    async with httpx.AsyncClient(follow_redirects=False) as http:
        worker = DeliveryWorker(
            runtime.sessions,
            build_senders(settings, http),
            retry_policy(settings),
            lease_s=settings.delivery_lease_s,
            batch_size=settings.delivery_batch_size,
            pass_wait_s=settings.delivery_pass_wait_s,
        )
        delivery = run_periodically(
            "notification-delivery",
            worker.deliver_due,
            settings.delivery_interval_s,
            again=worker.behind,
        )
        workers = [
            ("notification-delivery", delivery),
            ("event-consumer", consumer.run()),
            ("inbox-retention", consumer.inbox_sweeper()),
        ]
        if settings.delivery_retention_days > 0:
            retention = timedelta(days=settings.delivery_retention_days)
            workers.append(
                (
                    "delivery-retention",
                    run_periodically(
                        "delivery-retention",
                        lambda: notifications.forget_finished(retention),
                        settings.delivery_sweep_interval_s,
                    ),
                )
            )
        try:
            async with background(*workers):
                yield
        finally:
            await worker.close()


service = ServiceSpec(
    name="notification",
    settings_type=NotificationSettings,
    grpc_services=(notification_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,),
    migrations="ordermesh_notification:migrations",
    wire=wire,
    policy=POLICY,
)
