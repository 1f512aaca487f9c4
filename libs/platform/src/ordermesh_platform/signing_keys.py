"""The public keys that sign bearer tokens, wherever the identity provider keeps them.

- ``KeyFile``: a PEM public key or a JWKS document on disk, read again when it changes.
- ``RemoteKeys``: a JWKS published at a URL, given directly (``JwksUrl``) or found
  through OIDC discovery (``OidcDiscovery``), fetched with PyJWT's ``PyJWKClient``.
  The keys are cached for a set lifetime and fetched again when it runs out or when a
  token names a key that is not in the cache (a rotation).

No gRPC and no claims here: ``auth.TokenVerifier`` asks a source for the key a token's
``kid`` names and checks the token with it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import jwt

from ordermesh_platform.logs import get_logger

log = get_logger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"


class UnknownKey(Exception):
    """The token names a key the identity provider does not publish."""


class KeysUnavailable(Exception):
    """No key is held and none could be fetched (the provider is unreachable or broken)."""


class SigningKeys(Protocol):
    async def key_for(self, kid: str | None) -> Any:
        """The key to check a token whose header names ``kid`` with; raises
        ``UnknownKey`` or ``KeysUnavailable``."""
        ...


def http_url(url: str, setting: str) -> str:
    """``url`` when it is http(s), else ValueError naming the setting."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{setting} must be an http(s) URL, not {url!r}")
    return url


def _signing(keys: Sequence[jwt.PyJWK]) -> list[jwt.PyJWK]:
    # A JWKS may also publish encryption keys; they never sign tokens.
    return [key for key in keys if key.public_key_use in ("sig", None)]


def _pick(keys: Sequence[jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    if kid is None:
        # A token without kid is checked only against a provider with a single key.
        return keys[0] if len(keys) == 1 else None
    return next((key for key in keys if key.key_id == kid), None)


class KeyFile:
    """A PEM public key (any ``kid``) or a JWKS document (the key is chosen by ``kid``).
    The file is read again when it changes, checked at most every ``recheck_s``, so keys
    rotate without a restart; a file that cannot be read keeps the keys already read."""

    def __init__(self, path: Path, *, jwks: bool, recheck_s: float = 5.0) -> None:
        self._path = path
        self._is_jwks = jwks
        self._recheck_s = recheck_s
        self._checked = time.monotonic()
        self._mtime = -1
        self._pem = b""
        self._keys: list[jwt.PyJWK] = []
        self._load()  # at start-up: a missing or broken file stops the service

    def _load(self) -> None:
        mtime = os.stat(self._path).st_mtime_ns
        if mtime == self._mtime:
            return
        data = self._path.read_bytes()
        if self._is_jwks:
            self._keys = _signing(jwt.PyJWKSet.from_json(data.decode()).keys)
        else:
            self._pem = data
        self._mtime = mtime

    async def key_for(self, kid: str | None) -> Any:
        now = time.monotonic()
        if now - self._checked >= self._recheck_s:
            self._checked = now
            try:
                self._load()
            except (OSError, ValueError, jwt.PyJWTError) as error:  # half-written: next time
                log.warning("token key file not read", path=str(self._path), error=str(error))
        if not self._is_jwks:
            return self._pem
        key = _pick(self._keys, kid)
        if key is None:
            raise UnknownKey(kid)
        return key.key


class JwksUrl:
    """Fetches the JWKS published at ``url`` (blocking: ``RemoteKeys`` runs it in a
    worker thread)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        # No cache here: RemoteKeys keeps the keys, and keeps them when a fetch fails.
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout_s)

    def __call__(self) -> jwt.PyJWKSet:
        return self._client.get_jwk_set()


class OidcDiscovery:
    """Fetches the JWKS an OIDC provider names in ``<issuer>/.well-known/
    openid-configuration`` (its ``jwks_uri``). The document is read once, by the first
    fetch that succeeds in reading it, and must name the configured issuer (OpenID
    Connect Discovery 1.0, section 4.3: it guards against a document of another provider)."""

    def __init__(self, issuer: str, timeout_s: float) -> None:
        self.url = issuer
        self._issuer = issuer
        self._timeout_s = timeout_s
        # PyJWKClient.fetch_data is a plain JSON GET (http(s) only, no redirects, timeout):
        # the discovery document is fetched the way the keys are.
        self._document = jwt.PyJWKClient(
            issuer.rstrip("/") + DISCOVERY_PATH, cache_jwk_set=False, timeout=timeout_s
        )
        self._jwks: JwksUrl | None = None

    def __call__(self) -> jwt.PyJWKSet:
        if self._jwks is None:
            document = self._document.fetch_data()
            if document.get("issuer") != self._issuer:
                raise ValueError(
                    f"the discovery document names the issuer {document.get('issuer')!r}, "
                    f"not {self._issuer!r}"
                )
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise ValueError("the discovery document has no jwks_uri")
            self._jwks = JwksUrl(jwks_uri, self._timeout_s)
        return self._jwks()


class RemoteKeys:
    """The keys of a JWKS ``fetch`` returns, cached for ``cache_s``.

    - Expired keys keep serving while a fetch in the background replaces them.
    - A ``kid`` not in the cache waits for a fetch, then is refused if still unknown.
    - Fetches run in a worker thread under ``timeout_s``, one at a time (concurrent
      callers share it), and start at most once per ``min_refresh_interval_s``: a flood
      of tokens with made-up ``kid``\\ s costs the provider one request per interval.
    - A failed fetch keeps the keys already held; with none, ``KeysUnavailable``.
    """

    def __init__(
        self,
        fetch: Callable[[], jwt.PyJWKSet],
        *,
        source: str,
        cache_s: float,
        min_refresh_interval_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._source = source
        self._cache_s = cache_s
        self._min_interval_s = min_refresh_interval_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._keys: list[jwt.PyJWK] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._fetching: asyncio.Task[None] | None = None

    async def key_for(self, kid: str | None) -> Any:
        if self._keys is None:
            await self._refresh()
            if self._keys is None:
                raise KeysUnavailable(self._source)
        elif self._clock() - self._fetched_at >= self._cache_s:
            self._start_fetch()  # the keys held answer meanwhile
        key = _pick(self._keys, kid)
        if key is None:
            await self._refresh()  # perhaps a key the provider rotated in since
            key = _pick(self._keys, kid)
        if key is None:
            raise UnknownKey(kid)
        return key.key

    async def _refresh(self) -> None:
        """Wait for a fetch: the one under way, or a new one unless one started less
        than ``min_refresh_interval_s`` ago."""
        fetching = self._start_fetch()
        if fetching is not None:
            # A caller that gives up (its deadline) must not cancel the others' fetch.
            await asyncio.shield(fetching)

    def _start_fetch(self) -> asyncio.Task[None] | None:
        if self._fetching is None:
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval_s:
                return None
            self._attempted_at = now
            self._fetching = asyncio.create_task(self._fetch_keys(), name="signing-keys-fetch")
        return self._fetching

    async def _fetch_keys(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                # PyJWKClient blocks: a thread keeps the event loop serving meanwhile.
                jwks = await asyncio.to_thread(self._fetch)
            keys = _signing(jwks.keys)
            if not keys:
                raise ValueError("the JWKS holds no signing key")
        except Exception as error:  # whatever the provider did, the keys held stay
            log.warning(
                "identity provider keys not fetched",
                source=self._source,
                error=str(error) or type(error).__name__,
                keys_held=len(self._keys or ()),
            )
        else:
            kids = sorted(str(key.key_id) for key in keys)
            if kids != sorted(str(key.key_id) for key in self._keys or ()):
                log.info("identity provider keys fetched", source=self._source, kids=kids)
            self._keys = keys
            self._fetched_at = self._clock()
        finally:
            self._fetching = None
