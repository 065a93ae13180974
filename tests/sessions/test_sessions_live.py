"""Sessions end to end: the SDK, a real coordinator over mutual TLS, an injected clock.

The coordinator's session manager and the agents run on the deployment's FakeClock, so
expiry is reached by advancing it, never by sleeping.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from _deployment import Deployment, FakeClock, MakeDeployment, split_frames
from trustwire.client.agent import Agent
from trustwire.client.sessions import SessionEvent
from trustwire.errors import (
    InvalidSessionConfig,
    SessionEnded,
    SessionExpired,
    SessionRenewalFailed,
    UnknownSession,
)
from trustwire.events import EventKind
from trustwire.protocol.envelope import Envelope, FrameType, decode

MINUTE = 60.0


async def _pair(make_deployment: MakeDeployment) -> tuple[Deployment, FakeClock, Agent, Agent]:
    clock = FakeClock()
    deployment = await make_deployment(clock=clock)
    alice = await deployment.connect("alice", clock=clock)
    bob = await deployment.connect("bob", clock=clock)
    return deployment, clock, alice, bob


async def _next_event(events: asyncio.Queue[SessionEvent], kind: str) -> SessionEvent:
    async with asyncio.timeout(5):
        while True:
            event = await events.get()
            if event.kind == kind:
                return event


def _collect(agent: Agent) -> asyncio.Queue[SessionEvent]:
    queue: asyncio.Queue[SessionEvent] = asyncio.Queue()

    async def pump() -> None:
        async for event in agent.session_events():
            queue.put_nowait(event)

    task = asyncio.get_running_loop().create_task(pump())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return queue


_TASKS: set[asyncio.Task[None]] = set()


async def test_session_messages_flow_and_both_agents_get_the_events(
    make_deployment: MakeDeployment,
) -> None:
    deployment, _clock, alice, bob = await _pair(make_deployment)
    bob_events = _collect(bob)
    async with alice.session("bob", timeout_minutes=10) as s:
        created = await _next_event(bob_events, "session.created")
        assert created.session_id == s.id
        assert s.info["timeoutConfig"]["timeoutMinutes"] == 10
        peer_side = await bob.join_session(s.id)
        result = await s.send("inside the session")
        assert result.status == "delivered"
        message = await peer_side.receive(timeout=5)
        assert message.text == "inside the session"
        assert message.session_id == s.id
        # The peer answers within the session too.
        await peer_side.send("reply")
        reply = await s.receive(timeout=5)
        assert reply.text == "reply" and reply.session_id == s.id
        history = await s.history()
        assert len(history["messages"]) >= 2
        assert all("content" not in m and "data" not in m for m in history["messages"])
    ended = await _next_event(bob_events, "session.ended")
    assert ended.session["status"] == "ended"
    with pytest.raises(SessionEnded):
        await alice.send("bob", "after the end", session_id=s.id)
    assert deployment.events(EventKind.SESSION_DENIED)


async def test_expired_session_refuses_messages_and_reports_expired_not_unknown(
    make_deployment: MakeDeployment,
) -> None:
    deployment, clock, alice, bob = await _pair(make_deployment)
    bob_events = _collect(bob)
    s = await alice.session("bob", timeout_minutes=5, auto_renew=False, warning_threshold_minutes=2)
    clock.advance(3.5 * MINUTE)
    warning = await _next_event(bob_events, "session.expiring")
    assert warning.session["isNearExpiration"] is True
    clock.advance(2 * MINUTE)
    await _next_event(bob_events, "session.expired")
    with pytest.raises(SessionExpired):
        await s.send("too late")
    with pytest.raises(SessionExpired):
        await s.refresh()
    with pytest.raises(SessionExpired):
        await s.renew()
    # Exactly one warning for that approach, one expiry.
    await deployment.services.sessions.sweep()
    assert len(deployment.events(EventKind.SESSION_EXPIRING)) == 1
    assert len(deployment.events(EventKind.SESSION_EXPIRED)) == 1
    with pytest.raises(UnknownSession):
        await alice.send("bob", "no such session", session_id=str(uuid.uuid4()))


async def test_activity_renews_and_renewal_stops_at_the_maximum_duration(
    make_deployment: MakeDeployment,
) -> None:
    _deployment, clock, alice, _bob = await _pair(make_deployment)
    s = await alice.session("bob", timeout_minutes=5, max_duration_minutes=12)
    first_expiry = s.expires_at
    clock.advance(4 * MINUTE)
    await s.heartbeat()
    assert s.expires_at > first_expiry
    with pytest.raises(InvalidSessionConfig):
        await s.set_timeout(2)  # an explicit update out of range is refused, not clamped
    clock.advance(8.5 * MINUTE)  # past creation + max duration
    with pytest.raises((SessionRenewalFailed, SessionExpired)):
        await s.renew()
    with pytest.raises(SessionExpired):
        await s.send("past the maximum duration")


async def test_a_third_agent_cannot_use_or_see_the_session(make_deployment: MakeDeployment) -> None:
    deployment, clock, alice, _bob = await _pair(make_deployment)
    carol = await deployment.connect("carol", clock=clock)
    s = await alice.session("bob")
    with pytest.raises(UnknownSession):
        await carol.send("bob", "hijack", session_id=s.id)
    with pytest.raises(UnknownSession):
        await carol.join_session(s.id)


async def test_sessions_survive_a_coordinator_restart(make_deployment: MakeDeployment) -> None:
    deployment, clock, alice, _bob = await _pair(make_deployment)
    s = await alice.session("bob", timeout_minutes=30)
    await deployment.restart()
    alice2 = await deployment.connect("alice", clock=clock)
    bob2 = await deployment.connect("bob", clock=clock)
    again = await alice2.join_session(s.id)
    assert again.status == "active"
    peer = await bob2.join_session(s.id)
    await again.send("after restart")
    assert (await peer.receive(timeout=5)).text == "after restart"


async def test_a_session_starts_on_a_fresh_channel_handshake(
    make_deployment: MakeDeployment,
) -> None:
    _deployment, _clock, alice, _bob = await _pair(make_deployment)
    seen = bytearray()

    def tap(data: bytes) -> None:
        seen.extend(data)

    await alice.send("bob", "before the session")
    alice.tap = tap
    async with await alice.session("bob") as s:
        await s.send("first in session")
    inits = [e for e in split_frames(bytes(seen)) if e.type is FrameType.CHANNEL_INIT]
    assert inits, "the session's first message did not open a new channel"


async def test_a_tampered_session_id_is_caught_by_the_recipient(
    make_deployment: MakeDeployment,
) -> None:
    """The coordinator (or anyone on the path) cannot move a message to another session:
    the id is in the authenticated header, so the recipient refuses the altered frame."""
    _deployment, _clock, alice, bob = await _pair(make_deployment)
    s1 = await alice.session("bob")
    s2 = await alice.session("bob")
    handle = await bob.join_session(s1.id)
    await s1.send("warm up")  # establishes the channel
    assert (await handle.receive(timeout=5)).text == "warm up"
    channel = alice._channels[bob.did]

    def next_frame(text: str) -> Envelope:
        return channel.send(
            text.encode(),
            app_id=uuid.uuid4().bytes,
            message_id=uuid.uuid4().bytes,
            now_ms=alice._now_ms(),
            sign=True,
            session_id=uuid.UUID(s1.id).bytes,
        )

    original = next_frame("moved")
    raw = bytearray(original.to_bytes())
    start = len(original.header) - 16
    raw[start : start + 16] = uuid.UUID(s2.id).bytes
    before = dict(bob.rejected)
    await bob._process([decode(bytes(raw))])
    assert sum(bob.rejected.values()) == sum(before.values()) + 1
    assert bob.rejected["DecryptionFailed"] == before.get("DecryptionFailed", 0) + 1
    # The same frame unaltered is accepted, in its own session.
    await bob._process([decode(original.to_bytes())])
    got = await handle.receive(timeout=5)
    assert got.text == "moved" and got.session_id == s1.id
