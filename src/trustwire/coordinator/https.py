"""The coordinator's HTTPS API server: :class:`~trustwire.coordinator.api.Api` over mutual TLS.

A thin adapter (an aiohttp ``AppRunner`` and a TCP site): it authenticates the caller, reads
and parses the body, and hands an :class:`~trustwire.coordinator.api.ApiRequest` to
:meth:`Api.handle`, whose answer it writes back as JSON.

Invariants:

- The TLS context is TLS 1.3 only and requires a client certificate
  (``CERT_REQUIRED``), as the coordinator's agent listener: a client with no
  certificate, a certificate from another CA or an older TLS version never completes a
  handshake, so no request of theirs is ever read. A handshake must complete within
  ``handshake_timeout`` (10 s by default), so idle sockets cannot pile up.
- Every request is authenticated before anything else is looked at: the verified client
  certificate (DER) goes to ``resolve_caller`` (the coordinator checks its DID against
  the directory: enrolled, not revoked); ``None`` is ``401 UNAUTHORIZED``. That includes
  ``GET /api/openapi.json``. Then ``admit`` (when given) charges the caller's rate limit:
  ``False`` is ``429 RATE_LIMITED``, before the body is read.
- Request bodies are bounded (``max_body``, 1 MiB by default): a larger declared or
  actual body is ``413 PAYLOAD_TOO_LARGE`` and is not read past the limit. A body must be
  ``application/json`` (UTF-8) - otherwise ``415 UNSUPPORTED_MEDIA_TYPE`` - and valid
  JSON - otherwise ``400 INVALID_JSON``. An empty body is no body.
- Repeated query parameters are refused (``400``): one name, one value.
- Responses are JSON error bodies of the API's shape; a failure anywhere becomes a
  generic ``500 INTERNAL_ERROR``, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from trustwire.coordinator.api import Api, ApiRequest, ApiResponse, Caller, error_body
from trustwire.errors import IdentityError
from trustwire.identity.ca import certificate_did

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_BODY",
    "HttpsServer",
    "directory_resolver",
    "start_https",
]

log = logging.getLogger("trustwire.coordinator.https")

DEFAULT_MAX_BODY: Final = 1024 * 1024
"""Largest request body accepted, in bytes."""

DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
"""Seconds a client has to complete the TLS handshake (as on the agent listener)."""

_MAX_QUERY_PARAMETERS: Final = 32
_READ_CHUNK: Final = 64 * 1024

ResolveCaller = Callable[[bytes], Awaitable[Caller | None]]
Admit = Callable[[Caller], bool]


def directory_resolver(lookup: Callable[[str], Caller | None]) -> ResolveCaller:
    """A ``resolve_caller`` from a DID lookup.

    The returned function reads the DID from the (already verified) client certificate's
    URI SAN with :func:`~trustwire.identity.ca.certificate_did` and returns
    ``lookup(did)``: the coordinator's lookup answers a :class:`Caller` for an enrolled,
    unrevoked agent and ``None`` otherwise. A certificate with no DID, or several, names
    nobody.
    """

    async def resolve(der: bytes) -> Caller | None:
        try:
            did = certificate_did(der)
        except IdentityError:
            return None
        if did is None:
            return None
        return lookup(did)

    return resolve


def _check_context(tls: ssl.SSLContext) -> None:
    if tls.minimum_version != ssl.TLSVersion.TLSv1_3 or tls.verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("the HTTPS API's TLS context must be TLS 1.3 only with CERT_REQUIRED")


def _json_response(response: ApiResponse) -> web.Response:
    try:
        text = json.dumps(response.body, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        log.error("API response is not JSON: %s", type(exc).__name__)
        return _json_response(ApiResponse(500, error_body("INTERNAL_ERROR", "internal error")))
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    details = response.body.get("details") if isinstance(response.body, Mapping) else None
    if response.status == 405 and isinstance(details, Mapping):
        allowed = details.get("allowed")
        if isinstance(allowed, list):
            headers["Allow"] = ", ".join(str(method) for method in allowed)
    return web.Response(
        status=response.status,
        text=text,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return _json_response(ApiResponse(status, error_body(code, message)))


class _BodyError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.response = _error(status, code, message)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _TlsSite(web.BaseSite):
    """A TCP site like ``web.TCPSite`` with a bounded TLS handshake, which TCPSite lacks."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        handshake_timeout: float,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:
            raise RuntimeError("the HTTPS API runner is not set up")
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout,
        )


class HttpsServer:
    """A running HTTPS API server; stop it with :meth:`close`."""

    def __init__(
        self,
        api: Api,
        *,
        host: str,
        tls: ssl.SSLContext,
        resolve_caller: ResolveCaller,
        max_body: int,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        admit: Admit | None = None,
    ) -> None:
        _check_context(tls)
        if max_body < 1:
            raise ValueError("max_body must be positive")
        if not handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")
        self._handshake_timeout = handshake_timeout
        self.api = api
        self.host = host
        self.port = 0
        self._tls = tls
        self._resolve_caller = resolve_caller
        self._admit = admit
        self._max_body = max_body
        app = web.Application(client_max_size=max_body)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # No access log: request lines name sessions and agents, which the security-event
        # stream and the audit trail record where they matter.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._site: _TlsSite | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``https://127.0.0.1:8443``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    async def _start(self, port: int) -> None:
        await self._runner.setup()
        self._site = _TlsSite(
            self._runner,
            self.host,
            port,
            ssl_context=self._tls,
            handshake_timeout=self._handshake_timeout,
        )
        await self._site.start()
        addresses = self._runner.addresses
        if not addresses:
            raise RuntimeError("the HTTPS API server has no listening socket")
        self.port = int(addresses[0][1])
        log.info("HTTPS API listening on %s", self.url)

    async def close(self) -> None:
        """Stop listening and close open connections."""
        await self._runner.cleanup()

    # -- one request -------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._serve(request)
        except Exception as exc:  # never a traceback in a response
            log.error("HTTPS API request failed: %s", type(exc).__name__, exc_info=exc)
            return _error(500, "INTERNAL_ERROR", "internal error")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        caller = await self._authenticate(request)
        if caller is None:
            return _error(
                401, "UNAUTHORIZED", "a client certificate of an enrolled agent is required"
            )
        if self._admit is not None and not self._admit(caller):
            return _error(429, "RATE_LIMITED", "rate limit exceeded")
        try:
            query = self._query(request)
            body = await self._body(request)
        except _BodyError as exc:
            return exc.response
        # raw_path keeps the percent-encoding, so the router decodes each segment itself.
        path = request.raw_path.split("?", 1)[0]
        response = await self.api.handle(
            ApiRequest(caller=caller, method=request.method, path=path, query=query, body=body)
        )
        return _json_response(response)

    async def _authenticate(self, request: web.Request) -> Caller | None:
        transport = request.transport
        ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            return None
        return await self._resolve_caller(der)

    @staticmethod
    def _query(request: web.Request) -> dict[str, str]:
        query: dict[str, str] = {}
        if len(request.query) > _MAX_QUERY_PARAMETERS:
            raise _BodyError(400, "VALIDATION_ERROR", "too many query parameters")
        for name, value in request.query.items():
            if name in query:
                raise _BodyError(
                    400, "VALIDATION_ERROR", f"query parameter {name[:64]!r} given twice"
                )
            query[name] = value
        return query

    async def _body(self, request: web.Request) -> Any:
        declared = request.content_length
        if declared is not None and declared > self._max_body:
            raise _BodyError(
                413, "PAYLOAD_TOO_LARGE", f"request body over the limit of {self._max_body} bytes"
            )
        if not request.body_exists or declared == 0:
            return None
        # The media type is checked before a byte of the body is read.
        if request.content_type != "application/json":
            raise _BodyError(
                415, "UNSUPPORTED_MEDIA_TYPE", "request bodies must be application/json"
            )
        charset = request.charset
        if charset is not None and charset.lower() not in ("utf-8", "utf8"):
            raise _BodyError(415, "UNSUPPORTED_MEDIA_TYPE", "request bodies must be UTF-8 JSON")
        data = bytearray()
        while chunk := await request.content.read(_READ_CHUNK):
            data += chunk
            if len(data) > self._max_body:
                raise _BodyError(
                    413,
                    "PAYLOAD_TOO_LARGE",
                    f"request body over the limit of {self._max_body} bytes",
                )
        if not data:
            return None
        try:
            return json.loads(bytes(data).decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise _BodyError(400, "INVALID_JSON", "the request body is not valid JSON") from None


async def start_https(
    api: Api,
    *,
    host: str,
    port: int,
    tls: ssl.SSLContext,
    resolve_caller: ResolveCaller,
    max_body: int = DEFAULT_MAX_BODY,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    admit: Admit | None = None,
) -> HttpsServer:
    """Serve ``api`` over HTTPS on ``host``:``port`` (0 picks a free port).

    ``tls`` must be a TLS 1.3-only server context with ``CERT_REQUIRED`` trusting only
    the domain CA (:func:`trustwire.transport.tls.server_ssl_context`); anything else is
    a :class:`ValueError`. ``resolve_caller`` maps the client certificate (DER) to a
    :class:`Caller`, or ``None`` for "not an enrolled, unrevoked agent"
    (:func:`directory_resolver` builds one from a DID lookup). A client that has not
    completed the TLS handshake after ``handshake_timeout`` seconds is disconnected.
    ``admit(caller)``, if given, charges each authenticated request to the caller's rate
    limit; ``False`` answers ``429 RATE_LIMITED``.
    """
    server = HttpsServer(
        api,
        host=host,
        tls=tls,
        resolve_caller=resolve_caller,
        max_body=max_body,
        handshake_timeout=handshake_timeout,
        admit=admit,
    )
    try:
        await server._start(port)
    except BaseException:
        await server.close()
        raise
    return server
