"""Attacks on the coordinator API as a hostile, authenticated agent would make them.

Each test makes the real attack (raw ``API_REQUEST`` frames, HTTPS requests with a real
client certificate) against a real coordinator and asserts that it fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from _deployment import Deployment, MakeDeployment
from trustwire.events import EventKind
from trustwire.policy.model import parse_policy
from trustwire.protocol import control
from trustwire.protocol.envelope import Envelope, FrameType
from trustwire.protocol.frames import encode_frame
from trustwire.transport.tls import server_ssl_context


def _api_frame(sender: str, body: bytes, message_id: bytes) -> bytes:
    env = Envelope.create(FrameType.API_REQUEST, message_id, sender, "", body=body)
    return encode_frame(env.to_bytes())


async def test_an_api_request_with_a_huge_integer_is_a_400_and_the_connection_lives(
    make_deployment: MakeDeployment,
) -> None:
    # Python's JSON parser refuses integers over 4300 digits with a plain ValueError, not
    # a JSONDecodeError: it must still be a 400 answer, not a crashed connection handler.
    deployment: Deployment = await make_deployment()
    raw = await deployment.raw("alice")
    alice = deployment.did("alice")
    body = (
        b'{"method":"POST","path":"/api/messaging/sessions","query":{},'
        b'"body":{"peer":"bob","timeoutConfig":{"timeoutMinutes":' + b"9" * 5000 + b"}}}"
    )
    raw.send(_api_frame(alice, body, b"\x01" * 16))

    answer = await raw.expect(FrameType.API_RESPONSE)
    assert answer.message_id == b"\x01" * 16
    response = control.decode_api_frame(answer.body)
    assert response["status"] == 400
    assert response["body"]["error"] == "VALIDATION_ERROR"
    # The connection is still served.
    raw.send(encode_frame(Envelope.create(FrameType.PING, b"\x02" * 16, alice, "").to_bytes()))
    pong = await raw.expect(FrameType.PONG)
    assert pong.message_id == b"\x02" * 16


# -- the HTTPS API and the policy's rate limits -------------------------------------------

ALLOW_ALL_SLOW_ALICE = """
version: 1
policies:
  communication:
    default: deny
    rules:
      - id: agents-may-message
        effect: allow
        from: "*"
        to: "*"
        actions: [message, memory.read, memory.write]
  access_control:
    rate_limits:
      default: "1000/second"
      agents: {alice: "5/minute"}
"""


async def test_the_https_api_counts_against_the_agents_rate_limit(
    make_deployment: MakeDeployment,
) -> None:
    # An agent limited to 5 requests a minute must not get unlimited ones (heartbeats,
    # each announced to the peer; session creations; store writes) over HTTPS.
    deployment = await make_deployment(policy=parse_policy(ALLOW_ALL_SLOW_ALICE))
    tls = server_ssl_context(*deployment.home.coordinator_tls())
    server = await deployment.services.serve_https("127.0.0.1", 0, tls)
    statuses: list[int] = []
    async with httpx.AsyncClient(
        base_url=f"https://localhost:{server.port}",
        verify=deployment.client_context("alice"),
        timeout=10.0,
    ) as http:
        for _ in range(8):
            response = await http.get("/api/messaging/sessions/health")
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"] == "RATE_LIMITED"
    assert statuses[:5] == [200] * 5
    assert statuses[5:] == [429] * 3
    limited = deployment.events(EventKind.RATE_LIMITED)
    assert len(limited) == 3 and {e.agent for e in limited} == {deployment.did("alice")}
    # Another agent's budget is its own.
    async with httpx.AsyncClient(
        base_url=f"https://localhost:{server.port}",
        verify=deployment.client_context("bob"),
        timeout=10.0,
    ) as http:
        assert (await http.get("/api/messaging/sessions/health")).status_code == 200
    # The documented answers include the 429.
    document = deployment.services.api.openapi()
    assert "429" in document["paths"]["/api/messaging/sessions/health"]["get"]["responses"]


async def test_a_revoked_agent_is_refused_on_its_kept_alive_https_connection(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment()
    tls = server_ssl_context(*deployment.home.coordinator_tls())
    server = await deployment.services.serve_https("127.0.0.1", 0, tls)
    async with httpx.AsyncClient(
        base_url=f"https://localhost:{server.port}",
        verify=deployment.client_context("alice"),
        timeout=10.0,
    ) as http:
        created = await http.post("/api/messaging/sessions", json={"peer": "bob"})
        assert created.status_code == 201
        session_id = created.json()["id"]

        await deployment.store.agents.revoke(deployment.did("alice"), at=deployment.clock())
        await deployment.coordinator.refresh_agents()

        # Same client, same (kept-alive) connection: every request is authenticated anew.
        for method, path in (
            ("GET", f"/api/messaging/sessions/{session_id}"),
            ("POST", f"/api/messaging/sessions/{session_id}/heartbeat"),
            ("GET", "/api/memory"),
        ):
            response = await http.request(method, path)
            assert response.status_code == 401, (method, path, response.text)


async def test_api_frames_read_with_the_one_that_saw_the_agent_revoked_are_not_served(
    make_deployment: MakeDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two API requests arrive in one read; the agent is revoked while the first is being
    # answered. The second must not be served: the agent is refused at once.
    deployment = await make_deployment()
    coordinator = deployment.coordinator
    alice = deployment.did("alice")
    raw = await deployment.raw("alice")
    create = control.encode_api_frame(
        {"method": "POST", "path": "/api/messaging/sessions", "query": {}, "body": {"peer": "bob"}}
    )
    raw.send(_api_frame(alice, create, b"\x01" * 16))
    created = control.decode_api_frame((await raw.expect(FrameType.API_RESPONSE)).body)
    assert created["status"] == 201
    session_id = created["body"]["id"]

    manager = deployment.services.sessions
    gate, entered, processed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    health, process = manager.health, coordinator._process
    batches: list[int] = []

    async def slow_health() -> dict[str, Any]:
        entered.set()
        await gate.wait()
        return await health()

    async def observed(conn: Any, frames: list[bytes]) -> bool:
        batches.append(len(frames))
        try:
            return await process(conn, frames)
        finally:
            processed.set()

    monkeypatch.setattr(manager, "health", slow_health)
    monkeypatch.setattr(coordinator, "_process", observed)
    first = control.encode_api_frame(
        {"method": "GET", "path": "/api/messaging/sessions/health", "query": {}, "body": None}
    )
    end = control.encode_api_frame(
        {"method": "DELETE", "path": f"/api/messaging/sessions/{session_id}", "query": {}}
    )
    raw.send(_api_frame(alice, first, b"\x02" * 16) + _api_frame(alice, end, b"\x03" * 16))
    await asyncio.wait_for(entered.wait(), 5)
    await deployment.store.agents.revoke(alice, at=deployment.clock())
    await coordinator.refresh_agents()
    gate.set()
    await asyncio.wait_for(processed.wait(), 5)

    assert batches == [2], "the two requests were not read together; the test proves nothing"
    session = await manager.get(session_id, caller=None)
    assert session.ended_at is None, "a revoked agent's request was served"
