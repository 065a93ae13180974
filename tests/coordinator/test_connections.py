"""Connection-level limits and queue ownership on a running coordinator: handshake and
idle timeouts, the connection cap, delivery flow control, ACK ownership, replaced
connections and policy hot reload."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from _deployment import Deployment, MakeDeployment, frame, split_frames, wait_until
from trustwire.coordinator.server import CoordinatorConfig
from trustwire.errors import PolicyDenied
from trustwire.events import EventKind
from trustwire.policy.model import parse_policy
from trustwire.protocol import control
from trustwire.protocol.control import ErrorCode
from trustwire.protocol.envelope import Envelope, FrameType


def ack(did: str, ids: Sequence[bytes]) -> bytes:
    return frame(
        Envelope.create(FrameType.ACK, bytes(16), did, "", body=control.encode_ack(list(ids)))
    )


async def test_a_client_that_never_finishes_the_tls_handshake_is_dropped(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(
        config=CoordinatorConfig(tls_handshake_timeout=0.2, max_connections=1)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", deployment.coordinator.port)
    try:
        writer.write(b"\x16\x03\x01")  # the start of a ClientHello, then silence

        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    finally:
        writer.close()
        await writer.wait_closed()
    event = await deployment.wait_event(EventKind.AUTH_FAILURE)
    assert event.reason == "tls: TimeoutError"
    # Its handler is gone, so the single connection slot is free again.
    await wait_until(lambda: not deployment.coordinator._handlers, 1.0)
    assert (await deployment.connect("alice")).connected


async def test_an_idle_connection_is_closed_with_an_idle_error(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(config=CoordinatorConfig(idle_timeout=0.2))
    raw = await deployment.raw("alice")

    frames = await raw.until_closed()

    assert [env.type for env in frames] == [FrameType.ERROR]
    assert control.decode_error(frames[0].body)[0] == ErrorCode.IDLE


async def test_connections_over_the_cap_are_refused(make_deployment: MakeDeployment) -> None:
    deployment = await make_deployment(config=CoordinatorConfig(max_connections=2))
    await deployment.raw("alice")
    await deployment.raw("bob")

    reader, writer = await asyncio.open_connection("127.0.0.1", deployment.coordinator.port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    event = await deployment.wait_event(EventKind.AUTH_FAILURE)
    assert event.reason == "connection limit"


async def test_delivery_stops_at_the_window_until_the_recipient_acknowledges(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(config=CoordinatorConfig(delivery_window=10))
    alice = await deployment.connect("alice")
    for i in range(25):
        await alice.send("bob", f"w{i}")
    bob = await deployment.raw("bob")

    first = [await bob.expect(FrameType.SEALED) for _ in range(10)]
    with pytest.raises(TimeoutError):
        await bob.read_envelope(timeout=0.2)  # the window is full: nothing more comes
    bob.send(ack(deployment.did("bob"), [env.message_id for env in first]))
    second = [await bob.expect(FrameType.SEALED) for _ in range(10)]

    ids = [env.message_id for env in first + second]
    assert len(set(ids)) == 20
    assert await deployment.store.queue.depth(deployment.did("bob")) == 15


async def test_an_agent_cannot_acknowledge_away_another_agents_messages(
    deployment: Deployment,
) -> None:
    """Envelope ids are not secret (the sender chose them); an ACK still only ever
    removes messages queued for the acknowledging agent."""
    alice = await deployment.connect("alice")
    captured: list[Envelope] = []
    alice.tap = lambda data: captured.extend(split_frames(data))
    await alice.send("bob", "do not lose me")
    sealed_ids = [env.message_id for env in captured if env.type is FrameType.SEALED]
    assert len(sealed_ids) == 1

    for name in ("alice", "carol"):
        raw = await deployment.raw(name)
        raw.send(ack(deployment.did(name), sealed_ids))
        ping = Envelope.create(FrameType.PING, b"q" * 16, deployment.did(name), "")
        raw.send(frame(ping))
        await raw.expect(FrameType.PONG)  # the ACK before it has been processed

    assert await deployment.store.queue.depth(deployment.did("bob")) == 1
    bob = await deployment.connect("bob")
    assert (await bob.receive(timeout=5)).text == "do not lose me"


async def test_a_second_connection_replaces_the_first(deployment: Deployment) -> None:
    first = await deployment.connect("bob")
    second = await deployment.connect("bob")

    await wait_until(lambda: not first.connected)
    alice = await deployment.connect("alice")
    assert (await alice.send("bob", "to the newest")).status == "delivered"
    assert (await second.receive(timeout=5)).text == "to the newest"
    assert first._inbox.empty()


async def test_a_policy_change_applies_to_channels_already_open(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    assert (await alice.send("bob", "allowed")).via == "channel"
    await bob.receive(timeout=5)

    deployment.coordinator.policy.replace(
        parse_policy(
            """
version: 1
policies:
  communication:
    default: deny
    rules: []
"""
        )
    )

    with pytest.raises(PolicyDenied):
        await alice.send("bob", "not any more")
    await deployment.wait_event(EventKind.MESSAGE_DENIED)
    await asyncio.sleep(0.05)
    assert bob._inbox.empty()
