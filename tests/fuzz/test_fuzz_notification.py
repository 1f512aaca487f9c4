"""Bad input against every NotificationService RPC.

Notification-service runs once for the module, in-process on its own PostgreSQL
database, on a background event loop; the synchronous hypothesis tests call it over
one blocking channel (tests/fuzz/harness.py). Every RPC gets 200 arbitrary messages,
200 near-valid ones, a valid request with each field spoiled in turn, undecodable and
oversized bytes. The answer must always be a documented status, never UNKNOWN or
INTERNAL. At the end the service must still be SERVING and its tables must hold only
valid data (tests/fuzz/rules.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from google.protobuf.message import Message
from hypothesis import strategies as st

from ordermesh.notification.v1 import notification_pb2 as pb
from tests.fuzz import rules, suite
from tests.fuzz.harness import Mesh, rpcs_of
from tests.fuzz.strategies import (
    SKU_ALPHABET,
    Field,
    enums,
    fill,
    identifiers,
    near_valid,
    or_unset,
    page_sizes,
    page_tokens,
    strings,
    sub_message,
)

pytestmark = pytest.mark.integration

RPCS = rpcs_of("notification", pb.DESCRIPTOR.services_by_name["NotificationService"])
CUSTOMERS = ("c1", "c2", "c3")


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    mesh = Mesh()
    try:
        mesh.start("notification")
        yield mesh
    finally:
        mesh.close()


def _emails() -> Field[str]:
    valid = st.one_of(
        st.just("c1@example.com"),
        st.builds("{}@{}.example".format, st.text(SKU_ALPHABET, min_size=1, max_size=20),
                  st.text(SKU_ALPHABET, min_size=1, max_size=20)),
    )  # fmt: skip
    hostile = st.one_of(
        st.sampled_from(
            [
                "", "no-at-sign", "@", "a@", "@b", "a@b\r\nBcc: x@example.com",
                "a b@example.com", " a@example.com", "a@example.com\n", "a\x00@example.com",
                fill("e", 250) + "@x.y", fill("e", 251) + "@x.y", fill("e", 100_000) + "@x",
            ]
        ),
        st.builds(lambda local, domain: f"{local}@{domain}", st.text(max_size=20), st.text()),
        strings(),
    )  # fmt: skip
    return Field(valid, hostile)


def _urls() -> Field[str]:
    valid = st.one_of(
        st.sampled_from(["https://hooks.example.com/orders", "http://x"]),
        st.builds("https://{}/".format, st.text(SKU_ALPHABET, min_size=1, max_size=30)),
    )
    hostile = st.one_of(
        st.sampled_from(
            [
                "https://", "http:///x", "ftp://x", "HTTPS://X", " https://x", "https://x\n",
                "https://x y/", "https://exa\tmple.com/", "https://x/\r\nX-Evil: 1",
                "https://\x00x", "https://x/" + fill("p", 2030), "https://x/" + fill("p", 2040),
                "javascript:alert(1)", "//x", "https:x",
            ]
        ),
        st.builds(lambda rest: "https://" + rest, st.text(max_size=30)),
        strings(),
    )  # fmt: skip
    return Field(valid, hostile)


def _channels() -> Field[list[int]]:
    valid = st.lists(
        st.sampled_from([int(pb.CHANNEL_LOG), int(pb.CHANNEL_EMAIL), int(pb.CHANNEL_WEBHOOK)]),
        max_size=3,
        unique=True,
    )
    return Field(valid, st.lists(enums(pb.Channel.DESCRIPTOR), min_size=1, max_size=6))


NEAR_VALID: dict[str, Callable[[], st.SearchStrategy[Message]]] = {
    "ListNotifications": lambda: near_valid(
        pb.ListNotificationsRequest,
        customer_id=identifiers(CUSTOMERS),
        order_id=Field(st.just(""), identifiers(max_length=64).hostile),
        page_size=page_sizes(),
        page_token=page_tokens(),
    ),
    "GetPreferences": lambda: near_valid(
        pb.GetPreferencesRequest, customer_id=identifiers(CUSTOMERS)
    ),
    "SetPreferences": lambda: near_valid(
        pb.SetPreferencesRequest,
        preferences=or_unset(
            sub_message(
                pb.Preferences,
                customer_id=identifiers(CUSTOMERS),
                channels=_channels(),
                email=_emails(),
                webhook_url=_urls(),
            )
        ),
    ),
}


# Valid requests per RPC, for the sweep that spoils each of their fields in turn.
VALID: dict[str, list[Message]] = {
    "ListNotifications": [pb.ListNotificationsRequest(customer_id="c1", page_size=10)],
    "GetPreferences": [pb.GetPreferencesRequest(customer_id="c1")],
    "SetPreferences": [
        pb.SetPreferencesRequest(
            preferences=pb.Preferences(
                customer_id="c1",
                channels=[pb.CHANNEL_EMAIL, pb.CHANNEL_WEBHOOK],
                email="c1@example.com",
                webhook_url="https://hooks.example.com/orders",
            )
        ),
        # the e-mail address is stored without CHANNEL_EMAIL too
        pb.SetPreferencesRequest(
            preferences=pb.Preferences(customer_id="c1", channels=[pb.CHANNEL_LOG])
        ),
    ],
}
EXTRA = {  # values worth trying on top of the sweep's own
    "preferences.email": ("a@b\r\nBcc: x@example.com", fill("e", 251) + "@x.y"),
    "preferences.webhook_url": (" https://x", "https://x\n", "https://x y/", "ftp://x"),
    "page_token": ("W10=", "e30=", "bnVsbA=="),
}

# -- the tests, in the order they run ----------------------------------------------------


class TestNotificationService(suite.ServiceContract):
    RPCS = RPCS
    NEAR_VALID = NEAR_VALID
    EXTRA = EXTRA

    def valid(self, rpc: str, context: object) -> list[tuple[Message, str]]:
        return [(request, "") for request in VALID[rpc]]


def test_the_database_holds_only_valid_data_and_the_service_serves(mesh: Mesh) -> None:
    mesh.assert_serving()
    assert mesh.count("notification", "preferences") > 0
    mesh.assert_no_rows("notification", rules.NOTIFICATION)
