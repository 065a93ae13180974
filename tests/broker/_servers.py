"""Loopback servers and certificates for the broker tests.

- :class:`Pki`: a throwaway trust domain (the domain CA that issues the broker's server
  certificate and the agents' client certificates), a separate upstream CA (written to
  a PEM file the broker is told to trust), and an unrelated CA nobody trusts.
- :class:`TokenServer`: an OAuth2 token endpoint over HTTPS that counts requests,
  records them, issues fresh tokens with a chosen ``expires_in``, and can be told to
  fail.
- :class:`Upstream`: an HTTPS API that records every request (headers included) and
  answers by path: ``/redirect`` redirects to :attr:`Upstream.redirect_to`, ``/echo``
  echoes the ``Authorization`` header back in response headers (raw and base64), and
  anything else answers 401 to a rejected token and 200 otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from trustwire.crypto.random import random_bytes
from trustwire.identity.ca import DomainCA, IssuedCertificate
from trustwire.identity.keys import AgentIdentity
from trustwire.store.base import AgentRecord
from trustwire.transport.tls import join_server_ssl_context, server_ssl_context

SERVER_NAMES = ("127.0.0.1", "localhost")


@dataclass
class TestAgent:
    """An enrolled agent of the test domain: its directory record and certificate."""

    record: AgentRecord
    cert: IssuedCertificate

    @property
    def did(self) -> str:
        return self.record.did

    @property
    def name(self) -> str:
        return self.record.name


class Pki:
    """The certificates of one test: domain CA, upstream CA, an untrusted CA."""

    __test__ = False

    def __init__(self, directory: Path) -> None:
        now = datetime.now(UTC)
        self.now = now
        self.domain = DomainCA.create("broker test domain", now=now)
        self.upstream = DomainCA.create("broker test upstream CA", now=now)
        self.untrusted = DomainCA.create("nobody trusts this CA", now=now)
        self.upstream_ca_file = directory / "upstream-ca.pem"
        self.upstream_ca_file.write_bytes(self.upstream.cert_pem)
        self.broker_cert = self.domain.issue_server_certificate(SERVER_NAMES, now=now)

    def broker_tls(self) -> ssl.SSLContext:
        """The broker's server context: TLS 1.3, client certificates from the domain CA."""
        return server_ssl_context(
            self.broker_cert.cert_pem, self.broker_cert.key_pem, self.domain.cert_pem
        )

    def agent(
        self, name: str, roles: tuple[str, ...] = (), *, ca: DomainCA | None = None
    ) -> TestAgent:
        identity = AgentIdentity.generate(name)
        did = str(identity.did)
        record = AgentRecord(
            name=name,
            did=did,
            roles=roles,
            agreement_key=identity.agreement.public,
            agreement_statement=identity.agreement_statement(issued_at=0),
            agreement_issued_at=0,
            created_at=self.now.timestamp(),
        )
        cert = (ca or self.domain).issue_agent_certificate(did, name, now=self.now)
        return TestAgent(record=record, cert=cert)

    def server_context(self, *, trusted: bool = True) -> ssl.SSLContext:
        """A TLS server context for an upstream, from the upstream CA or the untrusted one."""
        ca = self.upstream if trusted else self.untrusted
        issued = ca.issue_server_certificate(SERVER_NAMES, now=self.now)
        return join_server_ssl_context(issued.cert_pem, issued.key_pem)


@dataclass
class Recorded:
    """One request an upstream received."""

    method: str
    host: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class _Site:
    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _start(self, app: web.Application, context: ssl.SSLContext) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])

    def url(self, path: str = "/", *, host: str = "127.0.0.1", scheme: str = "https") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class TokenServer(_Site):
    """An OAuth2 client-credentials token endpoint (``POST /token``)."""

    client_id: str = "broker-client"
    client_secret: str = ""
    expires_in: int | None = 3600
    fail: int | None = None
    """Answer every request with this status (an OAuth2 error body) when set."""
    oversized: bool = False
    """Answer with a token response of 1 MiB."""
    requests: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    _serial: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        _Site.__init__(self)

    @property
    def count(self) -> int:
        return len(self.requests)

    async def start(self, context: ssl.SSLContext) -> TokenServer:
        app = web.Application()
        app.router.add_post("/token", self._token)
        await self._start(app, context)
        return self

    async def _token(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        form["authorization"] = request.headers.get("Authorization", "")
        self.requests.append(form)
        if self.fail is not None:
            return web.json_response({"error": "server_error"}, status=self.fail)
        expected = "Basic " + base64.b64encode(
            f"{self.client_id}:{self.client_secret}".encode()
        ).decode("ascii")
        if form["authorization"] != expected or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        token = f"tok{next(self._serial)}-{random_bytes(12).hex()}"
        self.issued.append(token)
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.oversized:
            answer["padding"] = "x" * (1024 * 1024)
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return web.json_response(answer)


@dataclass
class Upstream(_Site):
    """An HTTPS API recording what it receives."""

    rejected: set[str] = field(default_factory=set)
    """Bearer tokens answered with 401."""
    reject_all: bool = False
    redirect_to: str = ""
    received: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        _Site.__init__(self)

    async def start(self, context: ssl.SSLContext) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        await self._start(app, context)
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Recorded(
                method=request.method,
                host=request.headers.get("Host", ""),
                path=request.path,
                query=request.rel_url.raw_query_string,
                headers=dict(request.headers),
                body=body,
            )
        )
        authorization = request.headers.get("Authorization", "")
        if request.path == "/redirect":
            raise web.HTTPFound(self.redirect_to)
        if request.path == "/echo":
            return web.Response(
                text="echoed",
                headers={
                    "X-Echo-Authorization": authorization,
                    "X-Echo-Base64": base64.b64encode(authorization.encode()).decode(),
                    "X-Echo-Query": request.rel_url.raw_query_string,
                    "X-Harmless": "kept",
                },
            )
        token = authorization.removeprefix("Bearer ")
        if self.reject_all or token in self.rejected:
            return web.Response(status=401, text="token refused", headers={"X-Upstream": "yes"})
        return web.Response(
            text=f"hello from {request.path}",
            headers={"X-Upstream": "yes", "Set-Cookie": "session=abc; Path=/"},
        )


# -- the broker under test ------------------------------------------------------------

CLIENT_ID = "broker-client"
CLIENT_SECRET = "CANARY-client-secret-5d1e2f7a9b3c"
API_KEY = "CANARY-api-key-8c4b0a6e2d1f"
SECRET_ENV = "TW_BROKER_TEST_CLIENT_SECRET"
KEY_ENV = "TW_BROKER_TEST_API_KEY"

POLICY = """\
version: 1
policies:
  communication:
    default: deny
    rules:
      - id: alice-uses-the-apis
        effect: allow
        from: {agents: [alice]}
        to: {agents: [api, keyed, plain, untrusted, local]}
        actions: [broker.use]
      - id: bob-until-expiry
        effect: allow
        from: {agents: [bob]}
        to: {agents: [api]}
        actions: [broker.use]
        expires_at: 2030-01-01T00:00:00Z
"""

GRANT_EXPIRY = 1893456000.0  # 2030-01-01T00:00:00Z


def broker_config(
    *,
    token_url: str,
    upstream_port: int,
    untrusted_port: int,
    ports: dict[str, int],
    unix_path: Path | None = None,
    audience: bool = True,
) -> str:
    """The services of the broker tests, as a Secretless v2 file."""
    host = rf"^https://127\.0\.0\.1:{upstream_port}/"
    text = f"""\
version: "2"
services:
  api:
    connector: generic_http
    listenOn: tcp://127.0.0.1:{ports["api"]}
    credentials: {{}}
    oauth2:
      token_url: {{from: literal, get: "{token_url}"}}
      client_id: {{from: literal, get: {CLIENT_ID}}}
      client_secret: {{from: env, get: {SECRET_ENV}}}
      scope: {{from: literal, get: "items:read items:write"}}
{'      audience: {from: literal, get: "https://api.test"}' if audience else ""}
    config:
      headers:
        Authorization: Bearer {{{{ .access_token }}}}
      authenticateURLsMatching:
        - '{host}'
      forceSSL: true
  keyed:
    connector: generic_http
    listenOn: tcp://127.0.0.1:{ports["keyed"]}
    credentials:
      key:
        from: env
        get: {KEY_ENV}
    config:
      headers:
        X-Api-Key: '{{{{ .key }}}}'
        Authorization: 'Basic {{{{ printf "%s:%s" "user" .key | base64 }}}}'
      queryParams:
        api_key: '{{{{ .key }}}}'
      authenticateURLsMatching:
        - '{host}'
      forceSSL: true
  untrusted:
    connector: generic_http
    listenOn: tcp://127.0.0.1:{ports["untrusted"]}
    credentials:
      key:
        from: env
        get: {KEY_ENV}
    config:
      headers:
        X-Api-Key: '{{{{ .key }}}}'
      authenticateURLsMatching:
        - '^https://127\\.0\\.0\\.1:{untrusted_port}/'
      forceSSL: true
"""
    if unix_path is not None:
        text += f"""\
  local:
    connector: generic_http
    listenOn: unix://{unix_path}
    credentials:
      key:
        from: env
        get: {KEY_ENV}
    config:
      headers:
        X-Api-Key: '{{{{ .key }}}}'
      authenticateURLsMatching:
        - '{host}'
      forceSSL: true
"""
    return text


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the config file needs a real port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeClock:
    """A settable clock (epoch seconds)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """A running broker with its token server, upstreams, agents, clock and events."""

    pki: Pki
    tokens: TokenServer
    upstream: Upstream
    untrusted: Upstream
    clock: FakeClock
    events: Any
    sink: Any
    running: Any
    agents: dict[str, TestAgent]
    revoked: set[str] = field(default_factory=set)

    def port(self, service: str) -> int:
        return int(self.running.ports[service])

    def client(self, agent: str, service: str = "api", **kwargs: Any) -> Any:
        """An agent's httpx client through ``service``'s listener (broker_client)."""
        from trustwire.broker.client import broker_client

        who = self.agents[agent]
        return broker_client(
            broker_url=f"https://127.0.0.1:{self.port(service)}",
            cert_pem=who.cert.cert_pem,
            key_pem=who.cert.key_pem,
            ca_pem=self.pki.domain.cert_pem,
            **kwargs,
        )

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        """The agent-side (http://) URL of ``path`` on the trusted upstream."""
        return f"http://{host}:{self.upstream.port}{path}"

    def kinds(self) -> list[str]:
        return [str(event.kind) for event in self.sink.events]

    def events_of(self, kind: str) -> list[Any]:
        return [event for event in self.sink.events if str(event.kind) == kind]

    def lookup(self, key: str) -> AgentRecord | None:
        """The directory lookup handed to the broker (by DID or name)."""
        for agent in self.agents.values():
            if key in (agent.did, agent.name):
                if agent.name in self.revoked:
                    return dataclasses.replace(agent.record, revoked_at=self.clock())
                return agent.record
        return None


@contextlib.asynccontextmanager
async def running_harness(
    directory: Path,
    monkeypatch: Any,
    *,
    unix: bool = False,
    expires_in: int | None = 3600,
    unix_mode: int = 0o600,
) -> AsyncIterator[Harness]:
    """Token server, upstreams and a broker with the test services, all on loopback."""
    from trustwire.broker.config import parse_config
    from trustwire.broker.proxy import start_broker
    from trustwire.events import EventStream, MemorySink
    from trustwire.policy.engine import PolicyEngine
    from trustwire.policy.model import parse_policy

    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    monkeypatch.setenv(KEY_ENV, API_KEY)
    pki = Pki(directory)
    tokens = await TokenServer(client_secret=CLIENT_SECRET, expires_in=expires_in).start(
        pki.server_context()
    )
    upstream = await Upstream().start(pki.server_context())
    untrusted = await Upstream().start(pki.server_context(trusted=False))
    clock = FakeClock(GRANT_EXPIRY - 3600.0)
    sink = MemorySink()
    events = EventStream([sink], clock=clock)
    agents = {name: pki.agent(name) for name in ("alice", "bob", "carol")}
    harness = Harness(
        pki=pki,
        tokens=tokens,
        upstream=upstream,
        untrusted=untrusted,
        clock=clock,
        events=events,
        sink=sink,
        running=None,
        agents=agents,
    )
    socket_path = directory / "broker.sock" if unix else None
    config = parse_config(
        broker_config(
            token_url=tokens.url("/token"),
            upstream_port=upstream.port,
            untrusted_port=untrusted.port,
            ports={name: free_port() for name in ("api", "keyed", "untrusted")},
            unix_path=socket_path,
        )
    )
    try:
        harness.running = await start_broker(
            config,
            policy=PolicyEngine(parse_policy(POLICY)),
            agents=harness.lookup,
            tls=pki.broker_tls(),
            events=events,
            upstream_ca=str(pki.upstream_ca_file),
            clock=clock,
            unix_agent="alice" if unix else None,
            unix_mode=unix_mode,
        )
        yield harness
    finally:
        if harness.running is not None:
            await harness.running.close()
        await tokens.close()
        await upstream.close()
        await untrusted.close()
