"""OAuth2 client-credentials tokens for brokered services (the extension Secretless lacks).

A service with an ``oauth2`` block gets a :class:`TokenSource`: it performs the
client-credentials grant (RFC 6749 §4.4) with authlib's httpx client, caches the access
token, and exposes it to the service's header templates as ``access_token``.

Invariants:

- **One fetch at a time.** Concurrent requests that find no usable token share one
  token-endpoint round trip (an :class:`asyncio.Lock`; the cache is re-checked after the
  lock is taken).
- **Refreshed before expiry.** A token is used until ``expires_in - skew`` after it was
  fetched (``skew`` = 10 % of ``expires_in``, at most 30 s; a response without
  ``expires_in`` is cached for 60 s). Time comes from the injected ``clock``.
- **Stale tokens are replaced once.** :meth:`TokenSource.refresh` drops the cached token
  only if it is still the one the caller used, so a burst of 401s answered with the same
  old token causes one fetch, not one per request.
- **Credentials are fetched when needed.** ``token_url``, ``client_id``, ``client_secret``,
  ``scope`` and ``audience`` are read from their providers at every token fetch (so a
  rotated client secret is picked up), never cached here.
- **Nothing secret escapes.** Token values, the client secret and the token endpoint's
  error descriptions never appear in exceptions, logs or events; a failure is a
  :class:`TokenUnavailable` naming the service and the kind of failure, with the HTTP
  status the broker answers (502: the endpoint failed or refused; 503: a credential
  provider failed). The token response is read up to :data:`MAX_TOKEN_RESPONSE` bytes.
- The token endpoint is verified with the same TLS trust as the upstream APIs; there is
  no insecure fallback.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from trustwire.broker.config import OAuth2Config, check_token_url
from trustwire.broker.credentials import fetch
from trustwire.errors import BrokerError, CredentialUnavailable

with warnings.catch_warnings():
    # authlib announces that it would prefer the ``httpx2`` package; ``httpx`` is the
    # supported, maintained client this project depends on. Only that notice is hidden:
    # authlib.deprecate installs an "always" filter when imported, so it is imported
    # first (inside this block, which undoes its filter) and the "ignore" goes in front.
    import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401

    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
        AsyncOAuth2Client,
        OAuthError,
    )

__all__ = [
    "DEFAULT_TTL",
    "MAX_SKEW",
    "MAX_TOKEN_RESPONSE",
    "TokenSource",
    "TokenUnavailable",
]

log = logging.getLogger(__name__)

MAX_TOKEN_RESPONSE = 64 * 1024
"""Largest token-endpoint response body read, in bytes."""

MAX_SKEW = 30.0
"""A token is refreshed at most this many seconds before it expires (10 % of its
lifetime when that is shorter)."""

DEFAULT_TTL = 60.0
"""How long a token whose response carried no ``expires_in`` is used, in seconds."""

TOKEN_TIMEOUT = httpx.Timeout(15.0, connect=10.0)
"""Timeouts of one token-endpoint request."""

_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


class TokenUnavailable(BrokerError):
    """No access token could be obtained for a service.

    ``status`` is what the broker answers the agent: 502 (the token endpoint failed or
    refused the client) or 503 (a credential provider failed). The message names the
    service, never a secret.
    """

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class _BoundedStream(httpx.AsyncByteStream):
    """A response stream that fails once more than ``limit`` bytes have arrived."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise httpx.DecodingError(f"token response larger than {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BoundedTransport(httpx.AsyncBaseTransport):
    """An :class:`httpx.AsyncHTTPTransport` whose response bodies are size-limited."""

    def __init__(self, verify: ssl.SSLContext, limit: int) -> None:
        self._inner = httpx.AsyncHTTPTransport(verify=verify, retries=0)
        self._limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        if not isinstance(stream, httpx.AsyncByteStream):  # pragma: no cover - httpx contract
            raise TypeError("the token transport returned a synchronous stream")
        response.stream = _BoundedStream(stream, self._limit)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class TokenSource:
    """The cached client-credentials access token of one service.

    ``verify`` is the TLS context the token endpoint is checked with; ``clock`` gives
    epoch seconds (injected by tests). :meth:`token` returns a valid token, fetching one
    if needed; :meth:`refresh` replaces a token the upstream refused.
    """

    def __init__(
        self,
        service: str,
        config: OAuth2Config,
        *,
        verify: ssl.SSLContext,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._config = config
        self._verify = verify
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self.fetches = 0
        """How many token-endpoint requests were made (successful or not)."""

    @property
    def service(self) -> str:
        """The service this token is for."""
        return self._service

    def _usable(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def token(self) -> str:
        """A valid access token: the cached one, or a fresh one (one fetch at a time).

        Raises :class:`TokenUnavailable`.
        """
        cached = self._usable()
        if cached is not None:
            return cached
        async with self._lock:
            cached = self._usable()
            if cached is not None:
                return cached
            return await self._fetch()

    async def refresh(self, stale: str) -> str:
        """A token other than ``stale`` (which the upstream refused): drops ``stale`` if
        it is still cached, then returns :meth:`token`."""
        async with self._lock:
            if self._token == stale:
                self._token = None
                self._refresh_at = 0.0
            cached = self._usable()
            if cached is not None:
                return cached
            return await self._fetch()

    def invalidate(self) -> None:
        """Forget the cached token (the next request fetches a new one)."""
        self._token = None
        self._refresh_at = 0.0

    def _credential(self, name: str) -> str | None:
        source = getattr(self._config, name)
        if source is None:
            return None
        try:
            return fetch(source, service=self._service)
        except CredentialUnavailable as exc:
            raise TokenUnavailable(str(exc), status=503) from None

    async def _fetch(self) -> str:
        """One client-credentials grant; the caller holds the lock."""
        token_url = self._credential("token_url")
        client_id = self._credential("client_id")
        client_secret = self._credential("client_secret")
        scope = self._credential("scope")
        audience = self._credential("audience")
        if token_url is None or client_id is None or client_secret is None:  # pragma: no cover
            raise TypeError("token_url, client_id and client_secret are required")
        try:
            check_token_url(token_url)
        except ValueError as exc:
            raise TokenUnavailable(f"service {self._service!r}: {exc}", status=502) from None
        extra: dict[str, Any] = {}
        if audience:
            extra["audience"] = audience
        where = f"service {self._service!r}: OAuth2 token endpoint"
        self.fetches += 1
        started = self._clock()
        try:
            async with AsyncOAuth2Client(
                client_id=client_id,
                client_secret=client_secret,
                scope=scope or None,
                transport=_BoundedTransport(self._verify, MAX_TOKEN_RESPONSE),
                timeout=TOKEN_TIMEOUT,
                follow_redirects=False,
            ) as client:
                answer = await client.fetch_token(
                    token_url, grant_type="client_credentials", **extra
                )
        except OAuthError as exc:
            code = str(getattr(exc, "error", "") or "")
            shown = code if _ERROR_CODE.fullmatch(code) else "an error"
            raise TokenUnavailable(f"{where} refused the client ({shown})", status=502) from None
        except httpx.ConnectError as exc:
            if _is_tls_failure(exc):
                raise TokenUnavailable(
                    f"{where} failed TLS verification (untrusted or invalid certificate)",
                    status=502,
                ) from None
            raise TokenUnavailable(f"{where} is unreachable", status=502) from None
        except httpx.TimeoutException:
            raise TokenUnavailable(f"{where} timed out", status=502) from None
        except (httpx.HTTPError, ValueError, TypeError, KeyError):
            # ValueError covers a body that is not JSON; the text may hold anything.
            raise TokenUnavailable(f"{where} gave an unusable answer", status=502) from None
        value = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(value, str) or not value:
            raise TokenUnavailable(f"{where} answered without an access_token", status=502)
        if any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in value):
            # It goes into a header: no controls, spaces or non-ASCII.
            raise TokenUnavailable(f"{where} returned a malformed access token", status=502)
        lifetime = _lifetime(answer.get("expires_in"))
        skew = min(MAX_SKEW, lifetime * 0.1)
        self._token = value
        self._refresh_at = started + lifetime - skew
        log.info(
            "service %s: OAuth2 token obtained (valid %.0f s, refreshed after %.0f s)",
            self._service,
            lifetime,
            lifetime - skew,
        )
        return value

    async def aclose(self) -> None:
        """Forget the token."""
        self.invalidate()


def _lifetime(expires_in: object) -> float:
    """Seconds a token lives: ``expires_in`` if it is a sane number, else the default."""
    if isinstance(expires_in, bool):
        return DEFAULT_TTL
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, int | float) and 0 < expires_in <= 366 * 86400:
        return float(expires_in)
    return DEFAULT_TTL


def _is_tls_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a TLS certificate/handshake failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return True
        current = current.__cause__ or current.__context__
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text
