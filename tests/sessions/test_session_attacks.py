"""Attacks on sessions, and the edges an attacker would probe, over a real coordinator.

The coordinator and the agents share the deployment's FakeClock: expiry is reached by
advancing it, never by sleeping.
"""

from __future__ import annotations

from typing import Any

import pytest

from _deployment import Deployment, FakeClock, MakeDeployment, transport_of
from trustwire.client.agent import Agent
from trustwire.errors import PolicyDenied, SessionEnded, SessionExpired, UnknownSession
from trustwire.events import EventKind, EventStream, MemorySink
from trustwire.policy.model import parse_policy
from trustwire.sessions.manager import SessionManager
from trustwire.sessions.store import MemorySessionStore

MINUTE = 60.0
ALICE = "did:key:z6MkhaXgBZDvotDkL5257faiztiKC2RSkwWjTLW1Mm4qVbcG"
BOB = "did:key:z6MkfrQREUK7mDSoV9Bn3RhD7GZbYjXXkcVm5Vd3n4hmuW2e"


async def _pair(make_deployment: MakeDeployment) -> tuple[Deployment, FakeClock, Agent, Agent]:
    clock = FakeClock()
    deployment = await make_deployment(clock=clock)
    alice = await deployment.connect("alice", clock=clock)
    bob = await deployment.connect("bob", clock=clock)
    return deployment, clock, alice, bob


async def test_a_refused_session_message_does_not_break_the_channel_for_later_messages(
    make_deployment: MakeDeployment,
) -> None:
    # The coordinator drops a channel frame it refuses for its session (expired here):
    # that leaves a gap in the channel's counters, after which the recipient accepts
    # nothing more on that channel. The sender must not go on using it.
    _deployment, clock, alice, bob = await _pair(make_deployment)
    s = await alice.session("bob", timeout_minutes=5, auto_renew=False)
    inside = await s.send("inside the session")
    assert (inside.status, inside.via) == ("delivered", "channel")
    assert (await bob.receive(timeout=5)).text == "inside the session"
    clock.advance(6 * MINUTE)
    with pytest.raises(SessionExpired):
        await s.send("too late")

    after = await alice.send("bob", "outside any session", timeout=5)

    assert after.status == "delivered"
    message = await bob.receive(timeout=5)
    assert message.text == "outside any session" and message.session_id is None


@pytest.mark.parametrize("refusal", ["ended", "unknown"])
async def test_other_session_refusals_do_not_break_the_channel_either(
    make_deployment: MakeDeployment, refusal: str
) -> None:
    _deployment, _clock, alice, bob = await _pair(make_deployment)
    s = await alice.session("bob")
    assert (await s.send("first")).via == "channel"
    assert (await bob.receive(timeout=5)).text == "first"
    if refusal == "ended":
        await s.end()
        with pytest.raises(SessionEnded):
            await s.send("after the end")
    else:
        with pytest.raises(UnknownSession):
            await alice.send(
                "bob", "made-up session", session_id="0" * 8 + "-0000-4000-8000-" + "0" * 12
            )

    after = await alice.send("bob", "still talking", timeout=5)

    assert after.status == "delivered"
    assert (await bob.receive(timeout=5)).text == "still talking"


async def test_session_events_for_an_agent_that_does_not_read_stay_bounded(
    make_deployment: MakeDeployment,
) -> None:
    # Every heartbeat or session creation sends each participant a SESSION_EVENT with the
    # session's state, metadata (up to 10 KiB) included. A participant that does not read
    # its connection must not make the coordinator buffer them without bound.
    deployment, _clock, alice, bob = await _pair(make_deployment)
    s = await alice.session("bob", metadata={"pad": "x" * 9000})
    payload = {"event": "session.renewed", "session": dict(s.info)}
    transport_of(bob).pause_reading()
    connection = deployment.coordinator._connections[deployment.did("bob")]
    for _ in range(3000):  # about 27 MiB of events
        deployment.coordinator.notify_session(deployment.did("bob"), payload)
    buffered = connection.writer.transport.get_write_buffer_size()
    assert buffered < 6 * 1024 * 1024, f"{buffered} bytes of session events buffered"


async def test_a_receipted_session_message_is_never_dropped_by_a_full_session_inbox(
    make_deployment: MakeDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The recipient's SDK receipts a message (a signed "received") before the application
    # reads it, so it must keep it: a full per-session buffer must not drop it silently.
    monkeypatch.setattr("trustwire.client.sessions._MAX_BUFFERED", 3)
    _deployment, _clock, alice, bob = await _pair(make_deployment)
    s = await alice.session("bob")
    bob_side = await bob.join_session(s.id)
    for i in range(6):
        assert (await s.send(f"m{i}")).status == "delivered"

    received = [(await bob_side.receive(timeout=5)).text for _ in range(6)]

    assert received == [f"m{i}" for i in range(6)]


async def test_a_history_cursor_beyond_64_bits_is_a_400_not_a_500(
    make_deployment: MakeDeployment,
) -> None:
    _deployment, _clock, alice, _bob = await _pair(make_deployment)
    s = await alice.session("bob")
    for name in ("before", "after"):
        with pytest.raises(ValueError, match=name):
            await alice.api_call(
                "GET",
                f"/api/messaging/sessions/{s.id}/messages",
                query={name: "9" * 19},
            )


BOB_MAY_MESSAGE_ALICE_ONLY = """
version: 1
policies:
  communication:
    default: deny
    rules:
      - id: bob-to-alice
        effect: allow
        from: {agents: [bob]}
        to: {agents: [alice]}
        actions: [message]
"""


async def test_an_agent_not_allowed_to_message_a_peer_cannot_reach_it_through_a_session(
    make_deployment: MakeDeployment,
) -> None:
    # Only bob may message alice. Alice must not get content to bob anyway by opening
    # sessions with him: their metadata (10 KiB each) reaches him in session.created.
    clock = FakeClock()
    deployment = await make_deployment(clock=clock, policy=parse_policy(BOB_MAY_MESSAGE_ALICE_ONLY))
    alice = await deployment.connect("alice", clock=clock)
    bob = await deployment.connect("bob", clock=clock)
    with pytest.raises(PolicyDenied):
        await alice.send("bob", "a message")

    with pytest.raises(PolicyDenied):
        await alice.session("bob", metadata={"payload": "what alice may not tell bob"})

    assert bob._session_events.empty()
    # Bob, who may message alice, can still open a session with her.
    s = await bob.session("alice")
    assert (await s.send("hello alice")).status == "delivered"


async def test_activity_does_not_turn_the_expiry_warning_into_a_per_sweep_event() -> None:
    # A warning threshold at least as long as the timeout keeps a session always "near
    # expiration"; then every message moved the expiry and every sweep (once a second)
    # announced session.expiring again to both agents, with a store write each time.
    clock = FakeClock(start=1_800_000_000.0)
    sink = MemorySink()
    notices: list[tuple[str, dict[str, Any]]] = []
    manager = SessionManager(
        MemorySessionStore(),
        events=EventStream([sink]),
        may_talk=lambda a, b, now: True,
        known_agent=lambda did: True,
        notify=lambda did, payload: notices.append((did, payload)),
        clock=clock,
    )
    await manager.start()
    session = await manager.create(
        ALICE, BOB, config={"timeoutMinutes": 5, "warningThresholdMinutes": 10}
    )
    for _ in range(120):  # two minutes of a message a second, one sweep a second
        clock.advance(1)
        manager.check_message(session.id, ALICE, BOB, now=clock())
        await manager.sweep()

    warnings = sink.of_kind(EventKind.SESSION_EXPIRING)
    # Once when it came near expiry, then at most once per counted renewal (a minute).
    assert 1 <= len(warnings) <= 3, f"{len(warnings)} warnings in two minutes"
    # An explicit renewal still re-arms the warning.
    await manager.renew(session.id, caller=ALICE)
    await manager.sweep()
    assert len(sink.of_kind(EventKind.SESSION_EXPIRING)) == len(warnings) + 1
