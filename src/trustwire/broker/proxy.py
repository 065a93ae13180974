"""The credential broker: an HTTP forward proxy that injects credentials agents never see.

Agents send plain absolute-form requests (``GET http://api.example.com/v1/items
HTTP/1.1``, what ``http_proxy=...`` clients send) to a service's listener. For each
request, in order:

1. **Authenticate the agent.** On a TCP listener, by its trustwire client certificate
   (TLS 1.3, ``CERT_REQUIRED``, domain CA only; the DID in the certificate's URI SAN must
   name an enrolled, unrevoked agent). On a unix-socket listener, by the socket's file
   permissions: the socket is created ``0600`` (or the mode asked for) before it
   listens, and every connection acts for the one configured ``unix_agent``.
2. **Check the request.** ``CONNECT`` gets 405 (the broker must see the request to
   inject anything), and so do ``TRACE``/``TRACK`` (the server would echo the injected
   credentials in the body); a request target that is not an absolute ``http``/``https`` URL
   gets 400; a body over :data:`MAX_REQUEST_BODY` gets 413.
3. **Policy.** ``broker.use`` from the agent to ``service:<name>`` (a rule's ``to:
   {agents: [<name>]}`` names the service), evaluated at the injected clock, so
   time-limited grants stop at their expiry. Denied: 403 and a ``broker.denied`` event.
4. **Inject.** ``forceSSL`` rewrites ``http://`` to ``https://``; then, only if the
   resulting upstream URL matches the service's ``authenticateURLsMatching``, the
   credentials are fetched from their providers (every request, as Secretless does),
   the OAuth2 token obtained (cached, see :mod:`trustwire.broker.oauth2`), and the
   rendered ``headers`` overwrite the agent's headers of the same name and the rendered
   ``queryParams`` are set on the URL. A URL that does not match is forwarded with
   nothing added.
5. **Forward** with the agent's hop-by-hop headers (RFC 9110 §7.6.1: ``Connection`` and
   the headers it lists, ``Proxy-Authorization``, ``Proxy-Connection``, ``Keep-Alive``,
   ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``) removed. Redirects are *not*
   followed: a 3xx goes back to the agent as is, and if the agent follows it through the
   broker, that is a new request judged by step 4 — a redirect to a host outside
   ``authenticateURLsMatching`` carries no credentials. On an OAuth2 service, a 401 to a
   request that carried the token refreshes the token and retries exactly once.
6. **Answer** with the upstream's status and headers, minus hop-by-hop headers and minus
   any header whose value contains a secret used for this request (each credential value,
   the token and each rendered header/query value, raw, base64 with and without padding,
   URL-safe base64 and percent-encoded); the body is streamed.

Invariants:

- **Fail closed upstream.** The upstream certificate is verified against the configured
  CA bundle (or the system and certifi roots); a failure is 502 naming the service and
  host, and the request is never retried without verification or over plain HTTP.
- **Secrets stay inside.** Credential values, tokens and the upstream URL's query string
  (which may hold injected parameters) never appear in logs, events, exceptions or
  responses. Upstream exceptions are reported by kind, never by their text.
- **No shared client state.** The upstream hop is an aiohttp client session with no
  cookie jar, no redirect following, no environment proxies, no retries, no
  decompression and no headers of its own (measured about four times cheaper per
  request than httpx here, and it keeps its rate with many requests in flight; see
  docs/PERFORMANCE.md). URLs are parsed and rebuilt with httpx's URL type.
- **Every request is audited.** After authentication and policy, each request is one
  ``broker.request`` event (agent, service, method, host, path without the query,
  status, latency in ms, whether credentials were injected); failures are also a
  ``broker.error`` event; refusals (unknown agent, policy) a ``broker.denied`` event.
- Errors are 502 (upstream or token endpoint failed), 503 (a credential provider
  failed) or 504 (upstream timed out), with a plain-text body naming the service. An
  unexpected exception is a 500 whose log line and event give only its type. A request
  whose agent disconnects is recorded with status 499.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import logging
import os
import socket
import ssl
import stat
import sys
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import certifi
import httpx
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from trustwire.broker.config import BrokerConfig, ServiceConfig
from trustwire.broker.credentials import resolve
from trustwire.broker.oauth2 import TokenSource, TokenUnavailable
from trustwire.errors import BrokerError, ConfigurationError, CredentialUnavailable
from trustwire.events import EventKind, EventStream, SecurityEvent
from trustwire.policy.engine import PolicyEngine, Principal
from trustwire.store.base import AgentRecord
from trustwire.transport.tls import peer_did

__all__ = [
    "HOP_BY_HOP",
    "MAX_REQUEST_BODY",
    "Broker",
    "Listener",
    "RunningBroker",
    "start_broker",
    "upstream_ssl_context",
]

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = 16 * 1024 * 1024
"""Largest request body forwarded, in bytes (413 above)."""

MAX_EVENT_PATH = 512
"""Paths in events are cut to this many characters."""

UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(
    total=None, connect=10.0, sock_connect=10.0, sock_read=60.0
)
"""Timeouts of the upstream hop: 10 s to connect (TLS included), 60 s between reads."""

UPSTREAM_CONNECTIONS = 256
"""Upstream connections the broker keeps open or opening at most (all services)."""

HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1)."""

_NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}

AgentLookup = Callable[[str], AgentRecord | None]


class _HeaderRedactor(logging.Filter):
    """Drops the response headers from httpcore's DEBUG trace lines.

    httpcore (under the OAuth2 token client) logs every response's headers at DEBUG
    (``receive_response_headers.complete return_value=...``); a server that echoed a
    secret in a header would put it in the log. The line stays, without the headers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if message.startswith("receive_response_headers.complete"):
            record.msg = "receive_response_headers.complete (headers not logged)"
            record.args = ()
        return True


_REDACTOR = _HeaderRedactor()


def _remember_missing_sniffio() -> None:
    """Make ``import sniffio`` fail fast when sniffio is not installed.

    httpcore imports ``sniffio`` on every request to tell asyncio from trio; Python does
    not cache a failed import, so without the package each attempt searches ``sys.path``
    again (about 0.25 ms, several times per brokered request). Recording the absence in
    ``sys.modules`` (``None``: "not importable") turns that into a dictionary lookup; an
    installed sniffio is left alone.
    """
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def _install_redactor() -> None:
    for name in ("httpcore.http11", "httpcore.http2"):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


_BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_ECHOING_METHODS = frozenset({"TRACE", "TRACK"})
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One upstream request: method, URL (credentials in its query, never logged),
    headers and body (``None``: no body)."""

    method: str
    url: httpx.URL
    headers: CIMultiDict[str]
    data: bytes | None


class _Refused(Exception):
    """A request the broker answers itself, with ``status`` and a plain-text message."""

    def __init__(self, status: int, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or message


@dataclass(frozen=True, slots=True)
class Listener:
    """Where one service listens: ``tcp`` (``host``, bound ``port``) or ``unix``
    (``path``)."""

    service: str
    scheme: str
    host: str | None
    port: int | None
    path: str | None

    @property
    def address(self) -> str:
        """``tcp://host:port`` or ``unix:///path``."""
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def upstream_ssl_context(upstream_ca: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The TLS client context upstream servers are verified with: ``upstream_ca`` (a PEM
    bundle file) only when given, else the system roots plus certifi's. Host names are
    checked; TLS 1.2 is the minimum."""
    if upstream_ca is not None:
        try:
            context = ssl.create_default_context(cafile=os.fspath(upstream_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the upstream CA bundle: {exc.strerror or type(exc).__name__}"
                if isinstance(exc, OSError)
                else "the upstream CA bundle holds no usable certificate",
                path=os.fspath(upstream_ca),
            ) from None
    else:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _secret_forms(values: Iterable[str]) -> tuple[str, ...]:
    """Every spelling of each secret a response header might echo."""
    forms: set[str] = set()
    for value in values:
        if not value:
            continue
        raw = value.encode("utf-8")
        forms.add(value)
        for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
            text = encoded.decode("ascii")
            forms.add(text)
            forms.add(text.rstrip("="))
        forms.add(urllib.parse.quote(value, safe=""))
        forms.add(urllib.parse.quote_plus(value, safe=""))
    return tuple(form for form in forms if form)


def _echoes(value: str, forms: tuple[str, ...]) -> bool:
    return any(form in value for form in forms)


def _forwarded_headers(headers: Mapping[str, str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """The agent's headers without hop-by-hop ones (and those ``Connection`` lists)."""
    listed = {
        token.strip().lower()
        for value in headers.getall("connection", [])  # type: ignore[union-attr]
        for token in value.split(",")
    }
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in _NOT_FORWARDED or lower in listed:
            continue
        kept.add(name, value)
    return kept


def _cut(path: str) -> str:
    return path if len(path) <= MAX_EVENT_PATH else path[: MAX_EVENT_PATH - 3] + "..."


class Broker:
    """The request handling of the credential broker, shared by every listener.

    See the module docstring for the order of checks. Build it through
    :func:`start_broker`, which also opens the listeners.
    """

    def __init__(
        self,
        config: BrokerConfig,
        *,
        policy: PolicyEngine,
        agents: AgentLookup,
        events: EventStream,
        upstream_ca: str | None = None,
        clock: Callable[[], float] = time.time,
        unix_agent: str | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.agents = agents
        self.events = events
        self.clock = clock
        self.unix_agent = unix_agent
        self._verify = upstream_ssl_context(upstream_ca)
        _install_redactor()
        _remember_missing_sniffio()
        self._session: aiohttp.ClientSession | None = None
        self._peers: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()
        self.tokens: dict[str, TokenSource] = {
            name: TokenSource(name, service.oauth2, verify=self._verify, clock=clock)
            for name, service in config.services.items()
            if service.oauth2 is not None
        }

    def _client(self) -> aiohttp.ClientSession:
        """The upstream client: no cookie jar, no decompression, no environment proxies,
        no headers of its own; created on first use (inside the event loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify, limit=UPSTREAM_CONNECTIONS),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=UPSTREAM_TIMEOUT,
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the upstream connections and forget the tokens."""
        if self._session is not None:
            await self._session.close()
        for source in self.tokens.values():
            await source.aclose()

    # -- authentication and policy --------------------------------------------------

    def _agent(self, request: web.BaseRequest, service: ServiceConfig) -> AgentRecord:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            # One certificate per connection: parse it once, not on every request.
            did = self._peers.get(ssl_object)
            if did is None:
                did = peer_did(ssl_object)
                if did is not None:
                    self._peers[ssl_object] = did
            if did is None:
                raise _Refused(403, "the client certificate names no agent")
            record = self.agents(str(did))
            who = str(did)
        else:
            # A unix-socket listener (TCP listeners always run TLS; see start_broker):
            # whoever can open the socket acts for the configured agent.
            if self.unix_agent is None:
                raise _Refused(403, "this listener authenticates no agent")
            record = self.agents(self.unix_agent)
            who = self.unix_agent
        if record is None or record.revoked_at is not None:
            self.events.emit(
                SecurityEvent(
                    kind=EventKind.BROKER_DENIED,
                    time=self.clock(),
                    agent=who if who.startswith("did:") else None,
                    reason="agent not enrolled or revoked",
                    details={"service": service.name},
                )
            )
            raise _Refused(403, "the agent is not enrolled or has been revoked")
        return record

    def _authorize(self, agent: AgentRecord, service: ServiceConfig) -> str | None:
        """``None`` when allowed, else the reason."""
        decision = self.policy.authorize(
            Principal(did=agent.did, name=agent.name, roles=agent.roles),
            "broker.use",
            Principal(did=f"service:{service.name}", name=service.name, roles=()),
            now=self.clock(),
        )
        return None if decision.allowed else decision.reason

    # -- the request ------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest, service: ServiceConfig) -> web.StreamResponse:
        """Answer one request that arrived on ``service``'s listener."""
        try:
            agent = self._agent(request, service)
        except _Refused as refused:
            return _plain(refused.status, refused.message)
        if request.method == "CONNECT":
            response = _plain(
                405,
                f"CONNECT is not supported by the credential broker (service {service.name!r}): "
                "it must see the request to add credentials. Send plain http:// URLs through "
                "the broker (http_proxy=...); the service's forceSSL makes the upstream hop "
                "HTTPS.",
            )
            response.force_close()
            return response
        if request.method in _ECHOING_METHODS:
            # TRACE makes the server echo the request, injected credentials included, in
            # its body, which the header scan never sees.
            return _plain(
                405,
                f"{request.method} is not supported by the credential broker (service "
                f"{service.name!r}): the answer would echo the injected credentials",
            )
        target = request.raw_path
        url = _absolute(target)
        if url is None:
            return _plain(
                400,
                "the broker is a forward proxy: send absolute-form requests through it, e.g. "
                "http_proxy=http://BROKER:PORT curl http://api.example.com/path (the request "
                f"target must be an absolute http:// or https:// URL, not {_preview(target)})",
            )
        if service.http.force_ssl and url.scheme == "http":
            url = url.copy_with(scheme="https")
        host = url.host
        path = _cut(url.raw_path.split(b"?", 1)[0].decode("ascii", "replace"))
        denied = self._authorize(agent, service)
        if denied is not None:
            self.events.emit(
                SecurityEvent(
                    kind=EventKind.BROKER_DENIED,
                    time=self.clock(),
                    agent=agent.did,
                    reason=denied,
                    details={
                        "agent": agent.name,
                        "service": service.name,
                        "method": request.method,
                        "host": host,
                        "path": path,
                    },
                )
            )
            return _plain(
                403, f"agent {agent.name!r} may not use service {service.name!r} (policy)"
            )
        started = time.perf_counter()
        injected = False
        retried = False
        status = 500
        try:
            try:
                body = await _read_body(request, service.name)
                injected = service.authenticates(str(url))
                answer, retried = await self._forward(request, service, url, body, injected)
                status = answer.status
                return answer
            except (asyncio.CancelledError, ConnectionError):
                status = 499  # the agent went away
                raise
            except _Refused:
                raise
            except Exception as exc:
                # A bug, not a refusal. Its text could hold anything: only its type is told.
                log.error("service %s: internal error (%s)", service.name, type(exc).__name__)
                raise _Refused(
                    500,
                    f"service {service.name!r}: internal error in the credential broker",
                    reason=f"internal error ({type(exc).__name__})",
                ) from None
        except _Refused as refused:
            status = refused.status
            self.events.emit(
                SecurityEvent(
                    kind=EventKind.BROKER_ERROR,
                    time=self.clock(),
                    agent=agent.did,
                    reason=refused.reason,
                    details={
                        "agent": agent.name,
                        "service": service.name,
                        "method": request.method,
                        "host": host,
                        "path": path,
                        "status": refused.status,
                    },
                )
            )
            log.warning("service %s: %s", service.name, refused.reason)
            answer = _plain(refused.status, refused.message)
            if refused.status == 413:
                answer.force_close()  # do not read the rest of an oversized body
            return answer
        finally:
            self.events.emit(
                SecurityEvent(
                    kind=EventKind.BROKER_REQUEST,
                    time=self.clock(),
                    agent=agent.did,
                    details={
                        "agent": agent.name,
                        "service": service.name,
                        "method": request.method,
                        "host": host,
                        "path": path,
                        "status": status,
                        "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
                        "injected": injected,
                        "retried": retried,
                    },
                )
            )

    async def _secrets(
        self, service: ServiceConfig, stale: str | None = None
    ) -> tuple[dict[str, str], str | None]:
        """The template values of ``service`` (credentials and, for OAuth2, the token)
        and the token used (``None`` without OAuth2)."""
        try:
            values = dict(resolve(service)) if service.credentials else {}
        except CredentialUnavailable as exc:
            raise _Refused(503, f"{exc}", reason="credential unavailable") from None
        except BrokerError as exc:
            raise _Refused(
                503, f"{exc}", reason="credential failed its validation or could not be read"
            ) from None
        token: str | None = None
        source = self.tokens.get(service.name)
        if source is not None:
            try:
                token = await (source.refresh(stale) if stale is not None else source.token())
            except TokenUnavailable as exc:
                raise _Refused(exc.status, str(exc), reason="OAuth2 token unavailable") from None
            values["access_token"] = token
        return values, token

    def _build(
        self,
        request: web.BaseRequest,
        service: ServiceConfig,
        url: httpx.URL,
        body: bytes,
        values: Mapping[str, str] | None,
    ) -> tuple[_Outgoing, tuple[str, ...]]:
        """The upstream request, and the secret spellings its answer must not echo."""
        headers = _forwarded_headers(request.headers)
        secrets: list[str] = []
        if values is not None:
            secrets.extend(values.values())
            try:
                rendered_headers = service.http.render_headers(values)
                rendered_params = service.http.render_query_params(values)
            except BrokerError as exc:
                # The message names the template (file, field, variable), never a value.
                raise _Refused(
                    502,
                    f"service {service.name!r}: the credential templates could not be "
                    "rendered (see `trustwire broker check`)",
                    reason=f"template rendering failed: {exc}",
                ) from None
            for name, value in rendered_headers.items():
                headers.popall(name, None)
                headers[name] = value
                secrets.append(value)
            if rendered_params:
                url = _with_params(url, rendered_params)
                secrets.extend(rendered_params.values())
        data = body if body or request.method not in _BODILESS else None
        outgoing = _Outgoing(request.method, url, headers, data)
        return outgoing, _secret_forms(secrets)

    async def _send(self, outgoing: _Outgoing, service: ServiceConfig) -> aiohttp.ClientResponse:
        """Send ``outgoing``; the answer's headers are read, its body is not."""
        host = outgoing.url.host
        try:
            return await self._client().request(
                outgoing.method,
                URL(str(outgoing.url), encoded=True),
                headers=outgoing.headers,
                data=outgoing.data,
                allow_redirects=False,
            )
        except aiohttp.ClientSSLError:
            raise _Refused(
                502,
                f"service {service.name!r}: TLS verification of upstream {host} failed "
                "(untrusted or invalid certificate); nothing was sent",
                reason="upstream TLS verification failed",
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if _tls_failure(exc):
                raise _Refused(
                    502,
                    f"service {service.name!r}: TLS verification of upstream {host} failed "
                    "(untrusted or invalid certificate); nothing was sent",
                    reason="upstream TLS verification failed",
                ) from None
            raise _Refused(
                502,
                f"service {service.name!r}: cannot connect to upstream {host}",
                reason="upstream unreachable",
            ) from None
        except TimeoutError:  # asyncio's and aiohttp's timeouts
            raise _Refused(
                504,
                f"service {service.name!r}: upstream {host} timed out",
                reason="upstream timed out",
            ) from None
        except aiohttp.ClientError as exc:
            raise _Refused(
                502,
                f"service {service.name!r}: upstream {host} failed ({type(exc).__name__})",
                reason=f"upstream failed ({type(exc).__name__})",
            ) from None

    async def _forward(
        self,
        request: web.BaseRequest,
        service: ServiceConfig,
        url: httpx.URL,
        body: bytes,
        injected: bool,
    ) -> tuple[web.StreamResponse, bool]:
        values: dict[str, str] | None = None
        token: str | None = None
        if injected:
            values, token = await self._secrets(service)
        outgoing, forms = self._build(request, service, url, body, values)
        upstream = await self._send(outgoing, service)
        retried = False
        if upstream.status == 401 and token is not None:
            upstream.release()
            values, token = await self._secrets(service, stale=token)
            outgoing, forms = self._build(request, service, url, body, values)
            upstream = await self._send(outgoing, service)
            retried = True
        try:
            response = await self._relay(request, service, upstream, forms)
        finally:
            upstream.release()
        return response, retried

    async def _relay(
        self,
        request: web.BaseRequest,
        service: ServiceConfig,
        upstream: aiohttp.ClientResponse,
        forms: tuple[str, ...],
    ) -> web.StreamResponse:
        headers: CIMultiDict[str] = CIMultiDict()
        listed = {
            token.strip().lower()
            for value in upstream.headers.getall("Connection", ())
            for token in value.split(",")
        }
        stripped = 0
        for raw_name, raw_value in upstream.raw_headers:  # as sent (case kept)
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in listed:
                continue
            if forms and _echoes(value, forms):
                stripped += 1
                continue
            headers.add(name, value)
        if stripped:
            log.warning(
                "service %s: removed %d response header(s) echoing an injected credential",
                service.name,
                stripped,
            )
        response = web.StreamResponse(status=upstream.status, headers=headers)
        if upstream.reason:
            with contextlib.suppress(ValueError):
                response.set_status(upstream.status, upstream.reason)
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
            await response.write_eof()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The status line is already out: all we can do is cut the connection.
            log.warning(
                "service %s: upstream body failed (%s); connection to the agent closed",
                service.name,
                type(exc).__name__,
            )
            response.force_close()
            if request.transport is not None:
                request.transport.close()
        return response


def _tls_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return True
        current = current.__cause__ or current.__context__
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text


def _with_params(url: httpx.URL, params: Mapping[str, str]) -> httpx.URL:
    """``url`` with ``params`` set: parameters of the same names are replaced, the
    others are kept exactly as the agent spelled them."""
    kept = [
        part
        for part in url.query.decode("ascii", "replace").split("&")
        if part and urllib.parse.unquote_plus(part.split("=", 1)[0]) not in params
    ]
    kept.append(urllib.parse.urlencode(list(params.items()), quote_via=urllib.parse.quote))
    return url.copy_with(query="&".join(kept).encode("ascii"))


def _plain(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


def _preview(target: str) -> str:
    shown = target if len(target) <= 80 else target[:77] + "..."
    return repr(shown)


def _absolute(target: str) -> httpx.URL | None:
    """``target`` as an absolute http(s) URL with a host, or ``None``."""
    lowered = target[:8].lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        return None
    try:
        url = httpx.URL(target)
    except (httpx.InvalidURL, ValueError):
        return None
    if url.scheme not in {"http", "https"} or not url.host or url.userinfo:
        return None
    return url.copy_with(fragment=None)


async def _read_body(request: web.BaseRequest, service: str) -> bytes:
    """The request body, at most :data:`MAX_REQUEST_BODY` bytes (413 above)."""
    too_large = _Refused(
        413,
        f"service {service!r}: request body over the broker's limit of "
        f"{MAX_REQUEST_BODY // (1024 * 1024)} MiB",
        reason="request body too large",
    )
    length = request.content_length
    if length is not None and length > MAX_REQUEST_BODY:
        raise too_large
    if not request.can_read_body:
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(256 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_REQUEST_BODY:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


# -- listeners ---------------------------------------------------------------------------


class RunningBroker:
    """The broker's listeners, running. ``ports`` maps each TCP service to its bound port;
    ``listeners`` describes every listener. ``close()`` stops them (unix sockets are
    removed)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.listeners: list[Listener] = []
        self._runners: list[web.ServerRunner] = []
        self._sockets: list[Path] = []
        self._closed = False

    @property
    def ports(self) -> dict[str, int]:
        """Bound TCP port of each service listening on TCP."""
        return {
            item.service: item.port
            for item in self.listeners
            if item.scheme == "tcp" and item.port is not None
        }

    @property
    def events(self) -> EventStream:
        return self.broker.events

    async def close(self) -> None:
        """Stop every listener and close upstream connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        for runner in self._runners:
            await runner.cleanup()
        for path in self._sockets:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
        await self.broker.aclose()

    async def __aenter__(self) -> RunningBroker:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _open(
        self, service: ServiceConfig, tls: ssl.SSLContext | None, unix_mode: int
    ) -> None:
        broker = self.broker

        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            return await broker.handle(request, service)

        server = web.Server(handler, handler_cancellation=True, lingering_time=0)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        listen = service.listen_on
        site: web.BaseSite
        if listen.scheme == "unix":
            path = Path(str(listen.path))
            sock = _unix_socket(path, unix_mode, service.name)
            self._sockets.append(path)
            site = web.SockSite(runner, sock)
            await site.start()
            self.listeners.append(Listener(service.name, "unix", None, None, listen.path))
            return
        if tls is None:
            raise ConfigurationError(
                f"service {service.name!r}: a tcp listener needs TLS client authentication "
                "(the broker's server certificate and the domain CA)"
            )
        host = listen.host or "127.0.0.1"
        site = web.TCPSite(runner, host, listen.port or 0, ssl_context=tls)
        await site.start()
        bound = _bound_port(runner)
        self.listeners.append(Listener(service.name, "tcp", host, bound, None))


def _bound_port(runner: web.ServerRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def _unix_socket(path: Path, mode: int, service: str) -> socket.socket:
    """A bound (not yet listening) unix socket at ``path`` with ``mode``.

    The mode is set before ``listen()``, so there is no moment when another user could
    connect. A stale socket file is replaced; any other file at the path is an error.
    """
    if mode & 0o007:
        raise ConfigurationError(
            f"service {service!r}: unix socket mode {mode:o} would let any local user act for "
            "the agent; use 0600 or 0660"
        )
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigurationError(
                f"service {service!r}: {path} exists and is not a socket; refusing to replace it"
            )
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"service {service!r}: cannot create unix socket {path}: {exc.strerror or exc}"
        ) from None
    return sock


async def start_broker(
    config: BrokerConfig,
    *,
    policy: PolicyEngine,
    agents: AgentLookup,
    tls: ssl.SSLContext | None,
    events: EventStream,
    upstream_ca: str | None = None,
    clock: Callable[[], float] = time.time,
    unix_agent: str | None = None,
    unix_mode: int = 0o600,
) -> RunningBroker:
    """Start one listener per service of ``config`` and return them running.

    ``agents`` looks an agent up (by DID for TLS clients; by ``unix_agent``, a DID or
    whatever else the lookup accepts, for unix-socket listeners) and returns its record,
    or ``None``. ``tls`` is the server context of TCP listeners (it must require client
    certificates from the domain CA; a TCP service without it is a
    :class:`ConfigurationError`). ``upstream_ca`` is a PEM bundle trusted for upstream
    TLS instead of the system roots. Unix sockets are created with ``unix_mode`` (0600 or
    0660) and need ``unix_agent``.
    """
    for service in config.services.values():
        if service.listen_on.scheme == "unix" and unix_agent is None:
            raise ConfigurationError(
                f"service {service.name!r} listens on a unix socket: name the agent it acts "
                "for (--unix-agent)"
            )
        if service.listen_on.scheme == "tcp" and tls is None:
            raise ConfigurationError(
                f"service {service.name!r}: a tcp listener needs TLS client authentication "
                "(the broker's server certificate and the domain CA)"
            )
    if tls is not None and tls.verify_mode != ssl.CERT_REQUIRED:
        raise ConfigurationError("the broker's TLS context must require client certificates")
    broker = Broker(
        config,
        policy=policy,
        agents=agents,
        events=events,
        upstream_ca=upstream_ca,
        clock=clock,
        unix_agent=unix_agent,
    )
    running = RunningBroker(broker)
    try:
        for service in config.services.values():
            await running._open(service, tls, unix_mode)
    except BaseException:
        await running.close()
        raise
    for item in running.listeners:
        log.info("broker: service %s on %s", item.service, item.address)
    return running
