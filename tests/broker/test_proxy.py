"""The credential broker end to end: real TLS on loopback, a local OAuth2 token server and
local upstream APIs (see ``_servers.py``); agents speak through ``broker_client()``.

Every security property is tested by attempting what it forbids: reading a secret
through the response, the logs or the events; using a service without a grant or past
its expiry; following a redirect to another host; talking to an upstream with an
untrusted certificate; tunnelling with CONNECT; connecting without a certificate.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import stat
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _servers import (
    API_KEY,
    CLIENT_SECRET,
    GRANT_EXPIRY,
    KEY_ENV,
    Harness,
    running_harness,
)

from trustwire.errors import BrokerError
from trustwire.transport.tls import client_ssl_context, join_client_ssl_context


@pytest.fixture
async def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    async with running_harness(tmp_path, monkeypatch) as harness:
        yield harness


def forms(secret: str) -> dict[str, str]:
    """The spellings of ``secret`` a leak could take."""
    raw = secret.encode()
    found = {"raw": secret, "quoted": urllib.parse.quote(secret, safe="")}
    for offset in range(3):
        part = raw[offset:]
        part = part[: len(part) // 3 * 3]
        found[f"base64+{offset}"] = base64.b64encode(part).decode()
        found[f"base64url+{offset}"] = base64.urlsafe_b64encode(part).decode()
    return found


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [
        f"{secret[:6]}... as {form}"
        for secret in secrets
        for form, pattern in forms(secret).items()
        if pattern in text
    ]


def test_the_leak_scanner_finds_every_spelling() -> None:
    secret = "CANARY-scanner-check-42"
    assert leaks(f"x {secret} y", [secret])
    assert leaks(base64.b64encode(f"Basic user:{secret}".encode()).decode(), [secret])
    assert leaks(urllib.parse.quote(f"k={secret}/", safe=""), [secret])
    assert not leaks("nothing here", [secret])


async def test_the_request_arrives_upstream_with_the_token(broker: Harness) -> None:
    async with broker.client("alice") as http:
        response = await http.get(
            broker.url("/v1/items?page=2"), headers={"Authorization": "Bearer agent-made-up"}
        )
    assert response.status_code == 200
    assert response.text == "hello from /v1/items"
    [seen] = broker.upstream.received
    assert seen.headers["Authorization"] == f"Bearer {broker.tokens.issued[0]}"
    assert seen.query == "page=2"
    # forceSSL: the agent said http://, the upstream hop was HTTPS (the upstream only
    # speaks TLS, so arriving at all proves it).
    assert seen.host == f"127.0.0.1:{broker.upstream.port}"
    [token_request] = broker.tokens.requests
    assert token_request["grant_type"] == "client_credentials"
    assert token_request["scope"] == "items:read items:write"
    assert token_request["audience"] == "https://api.test"


async def test_static_credentials_go_into_headers_and_query(broker: Harness) -> None:
    async with broker.client("alice", "keyed") as http:
        response = await http.get(broker.url("/v1/things?api_key=agent&keep=a%20b"))
    assert response.status_code == 200
    [seen] = broker.upstream.received
    assert seen.headers["X-Api-Key"] == API_KEY
    expected = base64.b64encode(f"user:{API_KEY}".encode()).decode()
    assert seen.headers["Authorization"] == f"Basic {expected}"
    query = urllib.parse.parse_qs(seen.query)
    assert query["api_key"] == [API_KEY]  # the agent's value was replaced, not doubled
    assert "keep=a%20b" in seen.query  # the agent's other parameters are untouched


async def test_unmatched_urls_are_forwarded_without_credentials(broker: Harness) -> None:
    # Same server, other host name: authenticateURLsMatching names 127.0.0.1 only.
    async with broker.client("alice", "keyed") as http:
        response = await http.get(broker.url("/public", host="localhost"))
    assert response.status_code == 200
    [seen] = broker.upstream.received
    assert "X-Api-Key" not in seen.headers
    assert "Authorization" not in seen.headers
    assert "api_key" not in seen.query
    [event] = broker.events_of("broker.request")
    assert event.details["injected"] is False


async def test_secrets_never_reach_the_agent_logs_or_events(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def record(response: httpx.Response) -> None:
        seen.append(f"{response.status_code} {response.reason_phrase}")
        seen.extend(f"{name}: {value}" for name, value in response.headers.multi_items())
        seen.append(response.text)

    broker.upstream.rejected.add("tok1-never-issued")
    async with broker.client("alice") as http:
        record(await http.get(broker.url("/v1/items")))
        record(await http.get(broker.url("/echo?x=1")))
        record(await http.post(broker.url("/v1/items"), content=b"{}"))
        broker.upstream.rejected.add(broker.tokens.issued[0])
        record(await http.get(broker.url("/v1/items")))  # 401, refresh, retry
    async with broker.client("alice", "keyed") as http:
        record(await http.get(broker.url("/echo?q=1")))
        record(await http.get(broker.url("/v1/things")))
    async with broker.client("carol", "keyed") as http:
        record(await http.get(broker.url("/v1/things")))  # denied
    async with broker.client("alice", "untrusted") as http:
        record(await http.get(f"http://127.0.0.1:{broker.untrusted.port}/x"))  # 502
    broker.tokens.fail = 500
    broker.tokens.issued.append(broker.tokens.issued[-1])
    broker.clock.advance(7200)
    async with broker.client("alice") as http:
        record(await http.get(broker.url("/v1/items")))  # token endpoint down: 502

    secrets = [CLIENT_SECRET, API_KEY, *broker.tokens.issued]
    assert len(broker.tokens.issued) >= 3
    events = "\n".join(event.to_json() for event in broker.sink.events)
    assert broker.events_of("broker.request")
    assert leaks("\n".join(seen), secrets) == []
    assert leaks(caplog.text, secrets) == [], [
        line for line in caplog.text.splitlines() if leaks(line, secrets)
    ]
    assert leaks(events, secrets) == []
    # The scan is not vacuous: the upstream did receive them.
    upstream_saw = "\n".join(str(r.headers) + r.query for r in broker.upstream.received)
    assert leaks(upstream_saw, [API_KEY, broker.tokens.issued[0]])


async def test_response_headers_echoing_a_credential_are_stripped(broker: Harness) -> None:
    async with broker.client("alice", "keyed") as http:
        response = await http.get(broker.url("/echo?z=9"))
    assert response.status_code == 200
    for name in ("X-Echo-Authorization", "X-Echo-Base64", "X-Echo-Query"):
        assert name not in response.headers
    assert response.headers["X-Harmless"] == "kept"
    assert response.text == "echoed"
    # The upstream really did echo them (so the stripping is what hid them).
    [seen] = broker.upstream.received
    assert seen.headers["X-Api-Key"] == API_KEY


async def test_every_brokered_request_is_one_audit_event(broker: Harness) -> None:
    async with broker.client("alice") as http:
        await http.get(broker.url("/v1/items?secret_param=1"))
    [event] = broker.events_of("broker.request")
    alice = broker.agents["alice"]
    assert event.agent == alice.did
    details = dict(event.details)
    latency = details.pop("latency_ms")
    assert isinstance(latency, float) and latency >= 0
    assert details == {
        "agent": "alice",
        "service": "api",
        "method": "GET",
        "host": "127.0.0.1",
        "path": "/v1/items",  # never the query string
        "status": 200,
        "injected": True,
        "retried": False,
    }


async def test_an_agent_without_a_grant_is_refused(broker: Harness) -> None:
    async with broker.client("carol") as http:
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 403
    assert "carol" in response.text and "api" in response.text
    assert broker.upstream.received == []
    assert broker.tokens.count == 0  # not even a token was fetched
    [denied] = broker.events_of("broker.denied")
    assert denied.agent == broker.agents["carol"].did
    assert denied.details["service"] == "api"
    assert broker.events_of("broker.request") == []


async def test_a_time_limited_grant_stops_at_its_expiry(broker: Harness) -> None:
    async with broker.client("bob") as http:
        assert (await http.get(broker.url("/v1/items"))).status_code == 200
        broker.clock.now = GRANT_EXPIRY - 1
        assert (await http.get(broker.url("/v1/items"))).status_code == 200
        broker.clock.now = GRANT_EXPIRY
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 403
    assert len(broker.upstream.received) == 2
    assert len(broker.events_of("broker.denied")) == 1


async def test_a_revoked_agent_is_refused(broker: Harness) -> None:
    broker.revoked.add("alice")
    async with broker.client("alice") as http:
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 403
    assert broker.upstream.received == []
    assert broker.events_of("broker.denied")


async def test_a_redirect_to_another_host_carries_no_credentials(broker: Harness) -> None:
    # The upstream (which matches authenticateURLsMatching) redirects to another host
    # name of the same server, which does not match.
    broker.upstream.redirect_to = broker.url("/landing?from=redirect", host="localhost")
    async with broker.client("alice", "keyed") as http:
        first = await http.get(broker.url("/redirect"))
    # Returned to the agent as is: the broker never follows redirects itself.
    assert first.status_code == 302
    assert first.headers["Location"] == broker.upstream.redirect_to
    assert len(broker.upstream.received) == 1
    async with broker.client("alice", "keyed", follow_redirects=True) as http:
        followed = await http.get(broker.url("/redirect"))
    assert followed.status_code == 200
    assert followed.text == "hello from /landing"
    original, _again, landing = broker.upstream.received
    assert original.headers["X-Api-Key"] == API_KEY
    assert landing.host == f"localhost:{broker.upstream.port}"
    assert "X-Api-Key" not in landing.headers
    assert "Authorization" not in landing.headers
    assert "api_key" not in landing.query
    assert API_KEY not in str(landing.headers) + landing.query


async def test_an_untrusted_upstream_certificate_fails_closed(broker: Harness) -> None:
    async with broker.client("alice", "untrusted") as http:
        response = await http.get(f"http://127.0.0.1:{broker.untrusted.port}/x")
    assert response.status_code == 502
    assert "untrusted" in response.text  # names the service
    assert "TLS" in response.text
    assert API_KEY not in response.text
    # Nothing reached the upstream application: no retry without verification, no
    # fallback to plain HTTP.
    assert broker.untrusted.received == []
    [error] = broker.events_of("broker.error")
    assert error.reason == "upstream TLS verification failed"
    assert error.details["status"] == 502
    [request] = broker.events_of("broker.request")
    assert request.details["status"] == 502


async def test_connect_is_refused_with_405(broker: Harness) -> None:
    alice = broker.agents["alice"]
    context = client_ssl_context(
        alice.cert.cert_pem, alice.cert.key_pem, broker.pki.domain.cert_pem
    )
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", broker.port("api"), ssl=context, server_hostname="127.0.0.1"
    )
    target = f"127.0.0.1:{broker.upstream.port}"
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 405 ")
    body = await asyncio.wait_for(reader.read(), 5)  # then the broker closes
    assert b"CONNECT is not supported" in body
    writer.close()
    assert broker.upstream.received == []


async def test_an_https_url_is_refused_by_the_client_before_anything_is_sent(
    broker: Harness,
) -> None:
    async with broker.client("alice") as http:
        with pytest.raises(BrokerError, match="http:// URL"):
            await http.get(f"https://127.0.0.1:{broker.upstream.port}/v1/items")
    assert broker.upstream.received == []
    assert broker.sink.events == []


async def raw_request(broker: Harness, agent: str, service: str, request: bytes) -> bytes:
    who = broker.agents[agent]
    context = client_ssl_context(who.cert.cert_pem, who.cert.key_pem, broker.pki.domain.cert_pem)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", broker.port(service), ssl=context, server_hostname="127.0.0.1"
    )
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_a_non_absolute_request_target_gets_400(broker: Harness) -> None:
    answer = await raw_request(
        broker, "alice", "api", b"GET /v1/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"absolute-form" in answer and b"http_proxy=" in answer
    assert broker.upstream.received == []


async def test_a_body_over_the_limit_gets_413(broker: Harness) -> None:
    url = broker.url("/v1/items").encode()
    answer = await raw_request(
        broker,
        "alice",
        "api",
        b"POST " + url + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 17000000\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert broker.upstream.received == []


async def test_hop_by_hop_headers_are_not_forwarded(broker: Harness) -> None:
    url = broker.url("/v1/items").encode()
    answer = await raw_request(
        broker,
        "alice",
        "keyed",
        b"GET " + url + b" HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
        b"Connection: close, X-Hop\r\nX-Hop: 1\r\nX-End: 2\r\nKeep-Alive: timeout=5\r\n"
        b"TE: trailers\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    [seen] = broker.upstream.received
    names = {name.lower() for name in seen.headers}
    for hop in ("proxy-authorization", "x-hop", "keep-alive", "te", "upgrade", "proxy-connection"):
        assert hop not in names
    assert seen.headers["X-End"] == "2"


async def test_clients_without_a_domain_certificate_are_refused(broker: Harness) -> None:
    # No certificate at all: the TLS handshake itself is refused (CERT_REQUIRED).
    context = join_client_ssl_context(broker.pki.domain.cert_pem)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", broker.port("api"), ssl=context, server_hostname="127.0.0.1"
        )
        writer.write(f"GET {broker.url('/v1/items')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        if not data:
            raise ConnectionError("closed without an answer")
    # A certificate from another CA, for an agent the directory even knows.
    foreign = broker.pki.agent("alice", ca=broker.pki.untrusted)
    broker.agents["alice"].cert = foreign.cert
    async with broker.client("alice") as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(broker.url("/v1/items"))
    assert broker.upstream.received == []
    assert broker.tokens.count == 0


async def test_a_credential_provider_failure_is_503_naming_the_service(
    broker: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    async with broker.client("alice", "keyed") as http:
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 503
    assert "keyed" in response.text
    assert broker.upstream.received == []
    [error] = broker.events_of("broker.error")
    assert error.details["status"] == 503


async def test_a_unix_socket_listener_acts_for_its_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_harness(tmp_path, monkeypatch, unix=True) as harness:
        path = tmp_path / "broker.sock"
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert mode == 0o600
        reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        writer.write(
            f"GET {harness.url('/v1/items')} HTTP/1.1\r\nHost: x\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ")
        [seen] = harness.upstream.received
        assert seen.headers["X-Api-Key"] == API_KEY
        [event] = harness.events_of("broker.request")
        assert event.agent == harness.agents["alice"].did
        assert event.details["service"] == "local"
    assert not path.exists()  # removed at close


async def test_a_world_accessible_unix_socket_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trustwire.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="any local user"):
        async with running_harness(tmp_path, monkeypatch, unix=True, unix_mode=0o666):
            pass


async def test_an_internal_error_is_500_and_never_shows_its_text(
    broker: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from trustwire.broker.proxy import Broker

    async def explode(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(f"unexpected state holding {API_KEY}")

    monkeypatch.setattr(Broker, "_relay", explode)
    caplog.set_level(logging.DEBUG)
    async with broker.client("alice", "keyed") as http:
        response = await http.get(broker.url("/v1/items"))
    assert response.status_code == 500
    assert "keyed" in response.text
    assert API_KEY not in response.text
    assert API_KEY not in caplog.text
    [error] = broker.events_of("broker.error")
    assert error.reason == "internal error (RuntimeError)"
    assert API_KEY not in "\n".join(event.to_json() for event in broker.sink.events)


async def test_a_tcp_listener_without_client_authentication_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _servers import POLICY, broker_config, free_port

    from trustwire.broker.config import parse_config
    from trustwire.broker.proxy import start_broker
    from trustwire.errors import ConfigurationError
    from trustwire.events import EventStream
    from trustwire.policy.engine import PolicyEngine
    from trustwire.policy.model import parse_policy

    config = parse_config(
        broker_config(
            token_url="https://127.0.0.1:1/token",
            upstream_port=1,
            untrusted_port=2,
            ports={name: free_port() for name in ("api", "keyed", "untrusted")},
        )
    )
    common: dict[str, Any] = {
        "policy": PolicyEngine(parse_policy(POLICY)),
        "agents": lambda _key: None,
        "events": EventStream(),
    }
    with pytest.raises(ConfigurationError, match="needs TLS client authentication"):
        await start_broker(config, tls=None, **common)
    no_client_certs = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ConfigurationError, match="must require client certificates"):
        await start_broker(config, tls=no_client_certs, **common)


async def test_the_broker_adds_no_headers_of_its_own(broker: Harness) -> None:
    url = broker.url("/v1/items").encode()
    answer = await raw_request(
        broker,
        "alice",
        "api",
        b"POST " + url + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Mine: 1\r\n"
        b"Connection: close\r\n\r\n{}",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    [seen] = broker.upstream.received
    assert seen.body == b"{}"
    assert {name.lower() for name in seen.headers} == {
        "host",
        "content-length",
        "x-mine",
        "authorization",  # the injected token
    }


async def test_trace_is_refused_because_it_would_echo_the_credentials(broker: Harness) -> None:
    url = broker.url("/v1/items").encode()
    answer = await raw_request(
        broker,
        "alice",
        "keyed",
        b"TRACE " + url + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"echo" in answer
    assert broker.upstream.received == []
    assert API_KEY.encode() not in answer
