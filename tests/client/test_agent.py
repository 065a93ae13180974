"""The agent SDK against a real coordinator (and, for hostile-coordinator cases, a fake
one on the same TLS credentials).

What the SDK promises its application: only authenticated, signature-verified messages,
each application message once per Agent object, no registry key its owner never signed,
a prompt fallback to sealed messages when a channel cannot be set up, and a clean
``ConnectionClosed`` (never a crash or a hang) whatever the coordinator sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _deployment import Deployment, frame, split_frames, transport_of, wait_until
from trustwire.client.agent import MAX_MESSAGE_SIZE, Agent
from trustwire.errors import AuthenticationFailed, ConnectionClosed, ConnectionFailed
from trustwire.events import EventKind
from trustwire.protocol import control
from trustwire.protocol.channel import seal
from trustwire.protocol.control import ErrorCode
from trustwire.protocol.envelope import Envelope, FrameType
from trustwire.transport.tls import server_ssl_context

# -- exactly once per Agent ---------------------------------------------------------


async def test_a_message_resent_under_the_same_app_id_reaches_the_application_once(
    deployment: Deployment,
) -> None:
    """The SDK's own resend path (channel first, then sealed) must not duplicate."""
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    result = await alice.send("bob", "only once")
    assert (await bob.receive(timeout=5)).text == "only once"

    resend = seal(
        deployment.identities["alice"],
        bob.did,
        deployment.identities["bob"].agreement.public,
        b"only once",
        app_id=bytes.fromhex(result.message_id),
        message_id=bytes(range(16)),
        now_ms=int(time.time() * 1000),
    )
    alice.send_raw(frame(resend))

    await deployment.wait_event(EventKind.MESSAGE_ACCEPTED, lambda e: e.details["type"] == "SEALED")
    await wait_until(lambda: not deployment.coordinator._connections[bob.did].inflight)
    assert bob._inbox.empty()
    assert not bob.rejected  # a duplicate is benign, not an attack


async def test_a_peer_vanishing_during_channel_setup_sends_sealed_at_once(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")

    def vanish_on_init(data: bytes) -> None:
        if any(env.type is FrameType.CHANNEL_INIT for env in split_frames(data)):
            transport_of(bob).abort()  # bob's process dies as the INIT goes out

    alice.tap = vanish_on_init
    started = time.monotonic()
    result = await alice.send("bob", "are you there?")

    assert (result.status, result.via) == ("queued", "sealed")
    assert time.monotonic() - started < 2.0  # not the 5 s channel-setup timeout
    bob2 = await deployment.connect("bob")
    got = await bob2.receive(timeout=5)
    assert got.text == "are you there?" and got.sealed
    await asyncio.sleep(0.1)
    assert bob2._inbox.empty() and not bob2.rejected


# -- sizes and odd recipients ------------------------------------------------------


async def test_the_largest_message_goes_through_a_channel_and_sealed(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    big = bytes(range(256)) * (MAX_MESSAGE_SIZE // 256) + b"!" * (MAX_MESSAGE_SIZE % 256)
    assert len(big) == MAX_MESSAGE_SIZE

    queued = await alice.send("bob", big)
    bob = await deployment.connect("bob")
    assert (await bob.receive(timeout=5)).data == big
    direct = await alice.send("bob", big[::-1])

    assert (queued.via, direct.via) == ("sealed", "channel")
    assert (await bob.receive(timeout=5)).data == big[::-1]


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
async def test_a_message_over_the_size_limit_is_refused_before_anything_is_sent(
    deployment: Deployment, online: bool
) -> None:
    alice = await deployment.connect("alice")
    if online:
        await deployment.connect("bob")
        await alice.send("bob", "warm-up")
    written: list[bytes] = []
    alice.tap = written.append

    with pytest.raises(ValueError, match="at most"):
        await asyncio.wait_for(alice.send("bob", b"x" * (MAX_MESSAGE_SIZE + 1)), 2)

    assert written == []
    assert alice.connected


async def test_an_agent_can_message_itself(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")

    result = await asyncio.wait_for(alice.send("alice", "note to self"), 3)

    assert result.status == "delivered" and result.receipt is not None
    assert result.receipt.signer == alice.did
    got = await alice.receive(timeout=5)
    assert (got.text, got.sender) == ("note to self", alice.did)
    assert not alice.rejected


# -- the registry cannot substitute keys ---------------------------------------------


@pytest.mark.parametrize("swap", ["key", "key-and-statement"])
async def test_an_agent_refuses_a_registry_key_its_owner_never_signed(
    deployment: Deployment, swap: str
) -> None:
    """A coordinator serving Bob's DID with Carol's key (to read Bob's mail) is caught:
    the key must carry a statement signed by the DID's own identity key. (Without a
    registry proof to lean on: the coordinator has no registry, the agent no registry
    key; tests/registry covers the proofs.)"""
    deployment.coordinator.registry = None
    records = deployment.coordinator._agents
    bob, carol = records[deployment.did("bob")], records[deployment.did("carol")]
    changes: dict[str, Any] = {"agreement_key": carol.agreement_key}
    if swap == "key-and-statement":
        changes |= {
            "agreement_statement": carol.agreement_statement,
            "agreement_issued_at": carol.agreement_issued_at,
        }
    records[bob.did] = dataclasses.replace(bob, **changes)
    identity, credentials = deployment.home.load_agent("alice")
    alice = await Agent.connect(
        identity,
        dataclasses.replace(credentials, registry_key=None),
        coordinator=deployment.address,
    )

    async with alice:
        with pytest.raises(AuthenticationFailed):
            await alice.send("bob", "for bob's eyes only")

    assert alice.rejected == {"registry": 1}
    assert await deployment.store.queue.depth(bob.did) == 0
    assert not deployment.events(EventKind.MESSAGE_QUEUED)


# -- connection lifecycle ------------------------------------------------------------


async def test_connecting_to_a_port_nobody_listens_on_fails_cleanly(
    deployment: Deployment,
) -> None:
    identity, credentials = deployment.home.load_agent("alice")
    port = deployment.coordinator.port
    await deployment.stop()

    with pytest.raises(ConnectionFailed):
        await Agent.connect(identity, credentials, coordinator=f"127.0.0.1:{port}", timeout=2)


async def test_a_coordinator_shutdown_ends_the_agent_with_its_reason(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    waiting = asyncio.ensure_future(alice.receive())

    await deployment.stop()

    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(waiting, 5)
    assert closed.value.code == ErrorCode.SHUTTING_DOWN
    assert not alice.connected
    with pytest.raises(ConnectionClosed):
        await alice.send("bob", "anyone?")


async def test_a_receive_that_times_out_loses_no_later_message(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")

    for _ in range(3):
        with pytest.raises(TimeoutError):
            await bob.receive(timeout=0.02)
    await alice.send("bob", "first")
    await alice.send("bob", "second")

    assert (await bob.receive(timeout=5)).text == "first"
    assert (await bob.receive(timeout=5)).text == "second"
    assert bob.connected


async def test_security_rejections_reach_the_callback(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    await alice.send("bob", "warm-up")
    await bob.receive(timeout=5)
    seen: list[tuple[str, str]] = []
    bob.on_security_event = lambda reason, peer: seen.append((reason, peer))
    captured: list[Envelope] = []
    alice.tap = lambda data: captured.extend(split_frames(data))
    await alice.send("bob", "x")
    data = next(env for env in captured if env.type is FrameType.CHANNEL_DATA)

    forged = Envelope.create(
        FrameType.CHANNEL_DATA,
        bytes(range(16)),
        data.sender,
        data.recipient,
        body=data.body,
        channel_id=data.channel_id,
        counter=data.counter + 5,
        timestamp=data.timestamp,
    )
    alice.send_raw(frame(forged))

    await wait_until(lambda: bool(seen))
    assert seen == [("DecryptionFailed", alice.did)]
    assert bob.rejected == {"DecryptionFailed": 1}


# -- a hostile coordinator -------------------------------------------------------------


@dataclasses.dataclass
class FakeCoordinator:
    """A TLS server with the coordinator's certificate: it sends ``READY``, waits for
    ``go``, then sends the scripted bytes."""

    server: asyncio.Server
    script: list[bytes]
    go: asyncio.Event
    writers: list[asyncio.StreamWriter]
    hang_up: bool = False  # close right after the script instead of waiting

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


def ready_frame(did: str) -> bytes:
    body = control.encode_json({"did": did, "name": "x", "time_ms": 0, "max_frame": 1 << 18})
    return frame(Envelope.create(FrameType.READY, bytes(16), "coordinator", did, body=body))


@pytest.fixture
async def fake_coordinator(deployment: Deployment) -> AsyncIterator[FakeCoordinator]:
    tls = server_ssl_context(*deployment.home.coordinator_tls())
    fake: FakeCoordinator

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fake.writers.append(writer)
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(ready_frame(deployment.did("alice")))
            await fake.go.wait()
            for chunk in fake.script:
                writer.write(chunk)
            await writer.drain()
            if not fake.hang_up:
                await reader.read()  # until the agent hangs up
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    fake = FakeCoordinator(server, [], asyncio.Event(), [])
    yield fake
    for writer in fake.writers:
        writer.close()
    server.close()
    await server.wait_closed()


GARBAGE = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.builds(
        lambda t, body, sender: frame(
            Envelope.create(t, bytes(16), sender, "", body=body, timestamp=1)
        ),
        st.sampled_from(list(FrameType)),
        st.binary(max_size=300),
        st.sampled_from(
            ["coordinator", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"]
        ),
    ),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(garbage=st.lists(GARBAGE, min_size=1, max_size=3))
async def test_garbage_from_the_coordinator_never_crashes_or_fools_the_agent(
    deployment: Deployment, fake_coordinator: FakeCoordinator, garbage: list[bytes]
) -> None:
    identity, credentials = deployment.home.load_agent("alice")
    fake_coordinator.script[:] = garbage
    fake_coordinator.go.clear()
    async with asyncio.timeout(5):  # per example: a hang fails the test
        agent = await Agent.connect(
            identity, credentials, coordinator=fake_coordinator.address, timeout=2
        )
        try:
            fake_coordinator.go.set()
            await asyncio.sleep(0.02)
            # Nothing the coordinator can make up is an authenticated message.
            assert agent._inbox.empty()
        finally:
            await agent.close()
    assert agent._reader_task is not None and agent._reader_task.done()


async def test_a_connection_lost_while_a_frame_is_processed_is_not_a_security_event(
    deployment: Deployment, fake_coordinator: FakeCoordinator
) -> None:
    """Opening a sealed message needs a registry lookup; if the connection ends first,
    that is no attack by the sender (and the frame, unacknowledged, comes again)."""
    identity, credentials = deployment.home.load_agent("alice")
    from_bob = seal(
        deployment.identities["bob"],
        identity.did,
        identity.agreement.public,
        b"hello",
        app_id=bytes(16),
        message_id=bytes(range(16)),
        now_ms=int(time.time() * 1000),
    )
    fake_coordinator.script[:] = [frame(from_bob)]
    fake_coordinator.hang_up = True
    alice = await Agent.connect(identity, credentials, coordinator=fake_coordinator.address)
    seen: list[tuple[str, str]] = []
    alice.on_security_event = lambda reason, peer: seen.append((reason, peer))
    try:
        fake_coordinator.go.set()
        await wait_until(lambda: not alice.connected)
        await asyncio.sleep(0.05)
    finally:
        await alice.close()

    assert seen == [] and not alice.rejected
