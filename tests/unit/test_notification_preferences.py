"""Preferences are checked before they are stored: a bad one is INVALID_ARGUMENT with
the field named, never an error of the parser."""

from __future__ import annotations

import pytest

from ordermesh_notification.domain import Channel, Preferences, validate_preferences
from ordermesh_platform.errors import InvalidArgument

WEBHOOK = (Channel.WEBHOOK,)


@pytest.mark.parametrize(
    "url",
    [
        "https://[",  # urlparse raises "Invalid IPv6 URL"
        "https://hooks.example.com:99999/x",  # a port out of range
        "https://hooks.example.com:abc/x",  # a port that is no number
        "https://:443/x",  # no host
        "ftp://hooks.example.com/x",
        "https://hooks.example.com/a b",
        "",
    ],
)
def test_a_webhook_url_that_is_not_an_http_url_is_invalid(url: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_preferences(Preferences("c1", WEBHOOK, webhook_url=url), 1, False)
    assert [v.field for v in raised.value.violations] == ["preferences.webhook_url"]


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/orders", "http://[::1]:8080/x", "https://h:443"]
)
def test_an_http_url_is_a_webhook(url: str) -> None:
    validate_preferences(Preferences("c1", WEBHOOK, webhook_url=url), 1, False)
