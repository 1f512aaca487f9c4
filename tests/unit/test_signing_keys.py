"""Token keys fetched from an identity provider: the cache, the refresh an unknown
``kid`` triggers and its rate limit, rotation, failures and timeouts of the provider,
OIDC discovery, and which key sources may be set together."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_cli.main import app
from ordermesh_platform.auth import Authenticator, TokenError, TokenSettings, TokenVerifier
from ordermesh_platform.devcerts import DEV_AUDIENCE
from ordermesh_platform.errors import Unauthenticated
from ordermesh_platform.settings import ServiceSettings
from ordermesh_platform.signing_keys import (
    JwksUrl,
    KeysUnavailable,
    OidcDiscovery,
    RemoteKeys,
    UnknownKey,
)
from tests.support.identity_provider import (
    DISCOVERY_PATH,
    JWKS_PATH,
    IdentityProvider,
    SigningKey,
    serving,
)

CACHE_S = 300.0
INTERVAL_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Provider:
    """A fetch function whose answer the test sets: the keys, or an error."""

    def __init__(self, *keys: SigningKey) -> None:
        self.jwks = [key.jwk() for key in keys]
        self.error: Exception | None = None
        self.fetches = 0

    def publish(self, *keys: SigningKey) -> None:
        self.jwks = [key.jwk() for key in keys]

    def __call__(self) -> jwt.PyJWKSet:
        self.fetches += 1
        if self.error is not None:
            raise self.error
        return jwt.PyJWKSet.from_dict({"keys": self.jwks})


@pytest.fixture
def k1(tmp_path: Path) -> SigningKey:
    return SigningKey.make(tmp_path, "k1")


@pytest.fixture
def k2(tmp_path: Path) -> SigningKey:
    return SigningKey.make(tmp_path, "k2")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def remote(provider: Any, clock: Clock, **kw: float) -> RemoteKeys:
    settings = {"cache_s": CACHE_S, "min_refresh_interval_s": INTERVAL_S, "timeout_s": 5.0}
    return RemoteKeys(provider, source="test-idp", clock=clock, **{**settings, **kw})


def kid_of(key: Any, *candidates: SigningKey) -> str:
    """Which of the candidates' public keys ``key`` is."""
    for candidate in candidates:
        if jwt.PyJWK(candidate.jwk()).key.public_numbers() == key.public_numbers():
            return candidate.kid
    raise AssertionError("not one of the candidates")


# --- the cache ------------------------------------------------------------------------------


async def test_keys_are_fetched_on_first_use_and_then_served_from_the_cache(
    k1: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    keys = remote(provider, clock)
    assert provider.fetches == 0  # nothing is fetched at start-up
    assert kid_of(await keys.key_for("k1"), k1) == "k1"
    clock.now += CACHE_S - 1
    assert kid_of(await keys.key_for("k1"), k1) == "k1"
    assert provider.fetches == 1


async def test_an_unknown_kid_triggers_one_refresh_that_picks_up_a_rotated_key(
    k1: SigningKey, k2: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    keys = remote(provider, clock)
    await keys.key_for("k1")
    clock.now += INTERVAL_S
    provider.publish(k2)  # the provider rotates: k1 out, k2 in
    assert kid_of(await keys.key_for("k2"), k1, k2) == "k2"
    assert provider.fetches == 2
    # k1 is no longer published: refused, without a restart.
    with pytest.raises(UnknownKey):
        await keys.key_for("k1")


async def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(
    k1: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    keys = remote(provider, clock)
    await keys.key_for("k1")
    clock.now += INTERVAL_S
    for n in range(50):
        with pytest.raises(UnknownKey):
            await keys.key_for(f"made-up-{n}")
    assert provider.fetches == 2  # the first one, and one refresh for the flood
    clock.now += INTERVAL_S
    with pytest.raises(UnknownKey):
        await keys.key_for("made-up-again")
    assert provider.fetches == 3


async def test_concurrent_callers_share_one_fetch(k1: SigningKey, clock: Clock) -> None:
    provider = Provider(k1)
    keys = remote(provider, clock, min_refresh_interval_s=0.0)
    found = await asyncio.gather(*(keys.key_for("k1") for _ in range(20)))
    assert {kid_of(key, k1) for key in found} == {"k1"}
    assert provider.fetches == 1


async def test_expired_keys_serve_while_the_refetch_replaces_them(
    k1: SigningKey, k2: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    keys = remote(provider, clock)
    await keys.key_for("k1")
    provider.publish(k2)
    clock.now += CACHE_S
    # The call that finds the cache expired is not held up by the fetch it starts.
    assert kid_of(await keys.key_for("k1"), k1) == "k1"
    assert kid_of(await keys.key_for("k2"), k1, k2) == "k2"  # joins that fetch
    assert provider.fetches == 2
    with pytest.raises(UnknownKey):
        await keys.key_for("k1")


async def test_cached_keys_keep_working_while_the_provider_is_unreachable(
    k1: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    keys = remote(provider, clock)
    await keys.key_for("k1")
    provider.error = jwt.PyJWKClientConnectionError("connection refused")
    for _ in range(3):
        clock.now += CACHE_S
        await keys.key_for("k1")
        with pytest.raises(UnknownKey):
            await keys.key_for("k9")  # waits for the failed fetch: still unknown
    assert provider.fetches == 4
    assert kid_of(await keys.key_for("k1"), k1) == "k1"


async def test_without_any_key_an_unreachable_provider_makes_keys_unavailable(
    k1: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    provider.error = jwt.PyJWKClientConnectionError("connection refused")
    keys = remote(provider, clock)
    for _ in range(5):
        with pytest.raises(KeysUnavailable):
            await keys.key_for("k1")
    assert provider.fetches == 1  # retried no sooner than the interval
    provider.error = None
    clock.now += INTERVAL_S
    assert kid_of(await keys.key_for("k1"), k1) == "k1"


async def test_a_provider_publishing_no_signing_key_keeps_the_keys_held(
    k1: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    keys = remote(provider, clock, min_refresh_interval_s=0.0)
    await keys.key_for("k1")
    provider.jwks = [{**k1.jwk(), "kid": "e1", "use": "enc"}]
    with pytest.raises(UnknownKey):
        await keys.key_for("e1")  # an encryption key never checks a signature
    assert kid_of(await keys.key_for("k1"), k1) == "k1"


@pytest.fixture
def stuck() -> Iterator[threading.Event]:
    """Released at the end of the test, so the stuck fetch's thread ends."""
    release = threading.Event()
    yield release
    release.set()


async def test_a_fetch_that_hangs_times_out(
    k1: SigningKey, clock: Clock, stuck: threading.Event
) -> None:
    provider = Provider(k1)

    def hangs() -> jwt.PyJWKSet:
        stuck.wait(30)
        return provider()

    keys = remote(hangs, clock, timeout_s=0.05)
    with pytest.raises(KeysUnavailable):
        await keys.key_for("k1")


async def test_a_token_without_kid_needs_a_provider_with_one_key(
    k1: SigningKey, k2: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    keys = remote(provider, clock)
    assert kid_of(await keys.key_for(None), k1) == "k1"
    provider.publish(k1, k2)
    clock.now += INTERVAL_S
    await keys.key_for("k2")
    with pytest.raises(UnknownKey):
        await keys.key_for(None)


# --- the verifier on top --------------------------------------------------------------------


async def test_the_verifier_checks_tokens_with_fetched_keys_and_their_issuer(
    k1: SigningKey, k2: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    settings = TokenSettings(jwks_url="https://idp.test/keys", audience=DEV_AUDIENCE)
    verifier = TokenVerifier(settings, remote(provider, clock))
    assert (await verifier.verify(k1.token("alice", "any-issuer"))).subject == "alice"
    # Unsigned, HMAC and garbage tokens are refused before any key is looked up.
    hmac = jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256", headers={"kid": "k7"})
    for bad in ("not-a-jwt", hmac):
        with pytest.raises(TokenError) as raised:
            await verifier.verify(bad)
        assert raised.value.reason == ErrorReason.TOKEN_INVALID
    assert provider.fetches == 1
    with pytest.raises(TokenError) as raised:
        await verifier.verify(k2.token("alice", "any-issuer"))
    assert raised.value.reason == ErrorReason.TOKEN_KEY_UNKNOWN


async def test_no_keys_at_all_is_unauthenticated_with_its_own_reason(
    k1: SigningKey, clock: Clock
) -> None:
    provider = Provider(k1)
    provider.error = jwt.PyJWKClientConnectionError("connection refused")
    settings = TokenSettings(jwks_url="https://idp.test/keys", audience=DEV_AUDIENCE)
    auth = Authenticator(TokenVerifier(settings, remote(provider, clock)))
    with pytest.raises(Unauthenticated) as raised:
        await auth.authenticate(f"Bearer {k1.token('alice', 'x')}", [])
    assert raised.value.reason == ErrorReason.TOKEN_KEYS_UNAVAILABLE
    assert "could not be fetched" in str(raised.value)


# --- fetching over HTTP: a JWKS URL and OIDC discovery ---------------------------------------


@pytest.fixture
def idp(k1: SigningKey) -> Iterator[IdentityProvider]:
    with serving(IdentityProvider(keys=[k1])) as provider:
        yield provider


def test_a_jwks_url_is_fetched_each_time(idp: IdentityProvider, k2: SigningKey) -> None:
    fetch = JwksUrl(idp.jwks_url, timeout_s=5)
    assert [key.key_id for key in fetch().keys] == ["k1"]
    idp.keys.append(k2)
    assert [key.key_id for key in fetch().keys] == ["k1", "k2"]
    assert idp.requests == {JWKS_PATH: 2}


def test_oidc_discovery_reads_the_document_once_then_fetches_its_jwks_uri(
    idp: IdentityProvider,
) -> None:
    fetch = OidcDiscovery(idp.issuer, timeout_s=5)
    assert [key.key_id for key in fetch().keys] == ["k1"]
    assert [key.key_id for key in fetch().keys] == ["k1"]
    assert idp.requests == {DISCOVERY_PATH: 1, JWKS_PATH: 2}


def test_a_discovery_document_of_another_issuer_is_refused(idp: IdentityProvider) -> None:
    configured = idp.issuer
    idp.issuer = "https://someone-else.example"
    with pytest.raises(ValueError, match="someone-else"):
        OidcDiscovery(configured, timeout_s=5)()


async def test_with_an_oidc_issuer_tokens_must_carry_it(
    idp: IdentityProvider, k1: SigningKey
) -> None:
    verifier = TokenVerifier(TokenSettings(oidc_issuer=idp.issuer, audience=DEV_AUDIENCE))
    assert (await verifier.verify(k1.token("alice", idp.issuer))).subject == "alice"
    with pytest.raises(TokenError) as raised:
        await verifier.verify(k1.token("alice", "https://evil.example"))
    assert raised.value.reason == ErrorReason.TOKEN_NOT_FOR_US


# --- settings -------------------------------------------------------------------------------


def test_one_source_of_keys_at_most() -> None:
    with pytest.raises(ValueError, match="ORDERMESH_AUTH_JWKS_URL, ORDERMESH_AUTH_OIDC_ISSUER"):
        TokenSettings(jwks_url="https://idp/keys", oidc_issuer="https://idp")
    with pytest.raises(ValidationError, match="JWKS_FILE"):
        ServiceSettings(auth_jwks_file="/k.json", auth_jwt_public_key_file="/k.pem")
    for url in ("file:///etc/jwks.json", "idp.example.com"):
        with pytest.raises(ValueError, match="http"):
            TokenSettings(jwks_url=url)
    settings = ServiceSettings(auth_oidc_issuer="https://idp.example.com").token_settings()
    assert settings.required_issuer == "https://idp.example.com"
    assert TokenSettings(oidc_issuer="https://a", issuer="b").required_issuer == "b"


def test_the_token_command_puts_the_kid_in_the_header(tmp_path: Path) -> None:
    key = tmp_path / "auth" / "jwt-signing.key"
    result = CliRunner().invoke(app, ["token", "alice", "--key", str(key), "--kid", "k1"])
    assert result.exit_code == 0, result.output
    assert jwt.get_unverified_header(result.output.strip())["kid"] == "k1"
    plain = CliRunner().invoke(app, ["token", "alice", "--key", str(key)])
    assert "kid" not in jwt.get_unverified_header(plain.output.strip())
