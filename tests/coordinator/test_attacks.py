"""Attacks on routed frames over a real coordinator: tampering, replay, stale timestamps,
counter games and impersonation. Each test makes the attack and asserts it fails: the
coordinator refuses it (one opaque ``ERROR REJECTED`` on the wire, one precise security
event) or the recipient's SDK drops it (counted in ``Agent.rejected``), and the
application never sees the forged or replayed message.

Frames are captured from a real agent with ``Agent.tap``; *intercepting* a frame (the tap
raises, so the original never leaves) lets a test send a modified copy as the first and
only version the coordinator sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from _deployment import Deployment, FakeClock, MakeDeployment, frame, split_frames, wait_until
from trustwire.client.agent import Agent
from trustwire.crypto.dh import KeyPair
from trustwire.crypto.signing import SigningKey
from trustwire.errors import AuthenticationFailed, ConnectionClosed, PolicyDenied
from trustwire.events import EventKind
from trustwire.protocol import control
from trustwire.protocol.channel import open_sealed, seal
from trustwire.protocol.control import ErrorCode
from trustwire.protocol.envelope import Envelope, FrameType

WINDOW_MS = 120_000  # CoordinatorConfig.timestamp_window


class Interception(ConnectionClosed):
    """Raised by the tap so the intercepted chunk is never written."""


def capture(agent: Agent, ftype: FrameType, *, block: bool = False) -> list[Envelope]:
    """Record ``ftype`` frames the agent writes; with ``block`` swallow the first chunk
    holding one (the agent's write fails, the coordinator never sees it)."""
    seen: list[Envelope] = []

    def tap(data: bytes) -> None:
        found = [env for env in split_frames(data) if env.type is ftype]
        if block and found and not seen:
            seen.extend(found)
            raise Interception(0, "intercepted by the test")
        seen.extend(found)

    agent.tap = tap
    return seen


async def open_channel(deployment: Deployment) -> tuple[Agent, Agent]:
    """alice and bob with an established channel (one message delivered)."""
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    assert (await alice.send("bob", "warm-up")).via == "channel"
    await bob.receive(timeout=5)
    return alice, bob


async def intercepted_channel_frame(alice: Agent) -> Envelope:
    """A genuine CHANNEL_DATA frame from alice to bob that never reached the coordinator."""
    captured = capture(alice, FrameType.CHANNEL_DATA, block=True)
    with pytest.raises(Interception):
        await alice.send("bob", "the genuine text")
    alice.tap = None
    assert len(captured) == 1
    return captured[0]


async def assert_rejected_by_recipient(bob: Agent, reason: str | None = None) -> None:
    await wait_until(lambda: bool(bob.rejected))
    if reason is not None:
        assert set(bob.rejected) == {reason}
    await asyncio.sleep(0.05)
    assert bob._inbox.empty(), "a forged frame reached the application"


def flip(data: bytes, index: int = -1) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def rebuilt(env: Envelope, **changes: Any) -> Envelope:
    """``env`` with header fields changed and the body kept (a fresh header encoding)."""
    e = dataclasses.replace(env, **changes)
    return Envelope.create(
        e.type,
        e.message_id,
        e.sender,
        e.recipient,
        body=e.body,
        channel_id=e.channel_id,
        counter=e.counter,
        timestamp=e.timestamp,
    )


async def expect_rejection(raw_error: Envelope, message_id: bytes) -> None:
    assert raw_error.message_id == message_id
    code, reason = control.decode_error(raw_error.body)
    assert code == ErrorCode.REJECTED
    assert reason == "rejected"  # opaque: the precise cause is only in the event stream


# -- tampering ------------------------------------------------------------------------


async def test_tampered_ciphertext_is_dropped_by_the_recipient(deployment: Deployment) -> None:
    alice, bob = await open_channel(deployment)
    genuine = await intercepted_channel_frame(alice)

    alice.send_raw(frame(rebuilt(genuine, body=flip(genuine.body, len(genuine.body) // 2))))

    # The coordinator cannot tell (it holds no channel key) and forwards it ...
    await deployment.wait_event(
        EventKind.MESSAGE_ACCEPTED, lambda e: e.details.get("type") == "CHANNEL_DATA"
    )
    # ... and the recipient's AEAD refuses it.
    await assert_rejected_by_recipient(bob, "DecryptionFailed")


async def test_tampered_authentication_tag_is_dropped_by_the_recipient(
    deployment: Deployment,
) -> None:
    alice, bob = await open_channel(deployment)
    genuine = await intercepted_channel_frame(alice)

    alice.send_raw(frame(rebuilt(genuine, body=flip(genuine.body))))

    await assert_rejected_by_recipient(bob, "DecryptionFailed")


HeaderChange = Callable[[Envelope], dict[str, object]]

RECIPIENT_SIDE: dict[str, tuple[HeaderChange, str]] = {
    # The header is the AEAD's associated data: any change fails authentication.
    "counter": (lambda e: {"counter": e.counter ^ 0x100}, "DecryptionFailed"),
    "timestamp": (lambda e: {"timestamp": e.timestamp ^ 0x01}, "DecryptionFailed"),
    "message_id": (lambda e: {"message_id": flip(e.message_id, 0)}, "DecryptionFailed"),
    # A frame on a channel id the recipient does not hold is not even tried.
    "channel_id": (lambda e: {"channel_id": flip(e.channel_id, 0)}, "unknown_channel"),
}


@pytest.mark.parametrize("field", sorted(RECIPIENT_SIDE))
async def test_a_changed_header_field_fails_authentication_at_the_recipient(
    deployment: Deployment, field: str
) -> None:
    alice, bob = await open_channel(deployment)
    genuine = await intercepted_channel_frame(alice)
    change, reason = RECIPIENT_SIDE[field]

    alice.send_raw(frame(rebuilt(genuine, **change(genuine))))

    await assert_rejected_by_recipient(bob, reason)


async def test_a_changed_sender_field_is_refused_by_the_coordinator(
    deployment: Deployment,
) -> None:
    alice, bob = await open_channel(deployment)
    genuine = await intercepted_channel_frame(alice)
    last = genuine.sender[-1]
    forged_sender = genuine.sender[:-1] + ("2" if last != "2" else "3")

    alice.send_raw(frame(rebuilt(genuine, sender=forged_sender)))

    event = await deployment.wait_event(EventKind.IMPERSONATION_ATTEMPT)
    assert (event.agent, event.peer) == (alice.did, forged_sender)
    await asyncio.sleep(0.1)
    assert not bob.rejected and bob._inbox.empty()


async def test_a_changed_recipient_field_cannot_redirect_a_frame(deployment: Deployment) -> None:
    alice, _bob = await open_channel(deployment)
    carol = await deployment.connect("carol")
    genuine = await intercepted_channel_frame(alice)

    alice.send_raw(frame(rebuilt(genuine, recipient=carol.did)))

    # Routed to carol, who holds no channel with that id: dropped unread.
    await assert_rejected_by_recipient(carol, "unknown_channel")


# -- replay -------------------------------------------------------------------------------


async def test_a_replayed_channel_frame_is_refused_by_the_coordinator(
    deployment: Deployment,
) -> None:
    alice, bob = await open_channel(deployment)
    captured = capture(alice, FrameType.CHANNEL_DATA)
    await alice.send("bob", "pay 10")
    assert (await bob.receive(timeout=5)).text == "pay 10"
    original = captured[0]

    # Replay the exact bytes from a connection authenticated as alice.
    raw = await deployment.raw("alice")
    raw.send(frame(original))

    await expect_rejection(await raw.expect(FrameType.ERROR), original.message_id)
    event = await deployment.wait_event(EventKind.REPLAY_DETECTED)
    assert (event.agent, event.peer) == (alice.did, bob.did)
    await asyncio.sleep(0.05)
    assert bob._inbox.empty() and not bob.rejected


async def test_a_replayed_sealed_frame_is_refused_by_the_coordinator(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    captured = capture(alice, FrameType.SEALED)
    assert (await alice.send("bob", "queued once")).status == "queued"

    alice.send_raw(frame(captured[0]))

    await deployment.wait_event(EventKind.REPLAY_DETECTED)
    assert await deployment.store.queue.depth(deployment.did("bob")) == 1
    bob = await deployment.connect("bob")
    assert (await bob.receive(timeout=5)).text == "queued once"
    await asyncio.sleep(0.1)
    assert bob._inbox.empty()


async def test_a_frame_replayed_after_a_restart_is_not_delivered_again(
    deployment: Deployment,
) -> None:
    """The restarted coordinator's id cache is empty; the store's tombstones still
    refuse the id, so the replay is answered DUPLICATE and never delivered."""
    alice = await deployment.connect("alice")
    captured = capture(alice, FrameType.SEALED)
    await alice.send("bob", "once only")
    bob = await deployment.connect("bob")
    await bob.receive(timeout=5)
    await wait_until(lambda: not deployment.coordinator._connections[bob.did].inflight)
    await bob.close()
    await alice.close()
    await deployment.restart()

    raw = await deployment.raw("alice")
    raw.send(frame(captured[0]))
    status = await raw.expect(FrameType.STATUS)

    assert control.decode_status(status.body) == [
        (captured[0].message_id, control.Status.DUPLICATE)
    ]
    bob = await deployment.connect("bob")
    await asyncio.sleep(0.2)
    assert bob._inbox.empty()


async def test_a_captured_body_under_a_new_envelope_id_is_refused_by_the_replay_window(
    deployment: Deployment,
) -> None:
    """A fresh envelope id passes the coordinator's id cache, but the recipient has
    seen the counter (and the id is authenticated with the header anyway)."""
    alice, bob = await open_channel(deployment)
    captured = capture(alice, FrameType.CHANNEL_DATA)
    await alice.send("bob", "transfer")
    await bob.receive(timeout=5)

    alice.send_raw(frame(rebuilt(captured[0], message_id=bytes(range(16)))))

    await assert_rejected_by_recipient(bob, "replay")


async def test_a_frame_from_further_ahead_in_the_counter_space_fails_authentication(
    deployment: Deployment,
) -> None:
    alice, bob = await open_channel(deployment)
    captured = capture(alice, FrameType.CHANNEL_DATA)
    await alice.send("bob", "x")
    await bob.receive(timeout=5)
    original = captured[0]

    # Same body, unseen counter and id: the nonce no longer matches the ciphertext.
    alice.send_raw(
        frame(rebuilt(original, message_id=bytes(16 * [7]), counter=original.counter + 1))
    )

    await assert_rejected_by_recipient(bob, "DecryptionFailed")


# -- stale timestamps -----------------------------------------------------------------


def sealed_to(deployment: Deployment, sender: str, recipient: str, *, now_ms: int) -> Envelope:
    return seal(
        deployment.identities[sender],
        deployment.did(recipient),
        deployment.identities[recipient].agreement.public,
        b"stale?",
        app_id=bytes(range(16)),
        message_id=bytes(range(1, 17)),
        now_ms=now_ms,
    )


@pytest.mark.parametrize("skew_ms", [-10 * 60_000, -(WINDOW_MS + 5_000), +(WINDOW_MS + 5_000)])
async def test_a_frame_outside_the_timestamp_window_is_refused(
    deployment: Deployment, skew_ms: int
) -> None:
    bob = await deployment.connect("bob")
    raw = await deployment.raw("alice")
    now_ms = int(deployment.coordinator.clock() * 1000)
    env = sealed_to(deployment, "alice", "bob", now_ms=now_ms + skew_ms)

    raw.send(frame(env))

    await expect_rejection(await raw.expect(FrameType.ERROR), env.message_id)
    event = await deployment.wait_event(EventKind.TIMESTAMP_STALE)
    assert (event.agent, event.peer) == (deployment.did("alice"), bob.did)
    await asyncio.sleep(0.05)
    assert bob._inbox.empty()


async def test_an_agent_whose_clock_is_ten_minutes_behind_cannot_send(
    make_deployment: MakeDeployment,
) -> None:
    clock = FakeClock()
    deployment = await make_deployment(clock=clock)
    alice = await deployment.connect("alice")
    clock.advance(600)  # the coordinator's time moves on; the agent's stays behind

    with pytest.raises(PolicyDenied):
        await alice.send("bob", "from the past")

    event = await deployment.wait_event(EventKind.TIMESTAMP_STALE)
    assert event.agent == alice.did
    assert await deployment.store.queue.depth(deployment.did("bob")) == 0


# -- impersonation --------------------------------------------------------------------


@dataclass(frozen=True)
class Impostor:
    """Alice's keys under Bob's DID: what an agent forging Bob's sender field holds."""

    did: str
    signing_key: SigningKey
    agreement: KeyPair


async def test_an_agent_cannot_send_as_another_agent(deployment: Deployment) -> None:
    carol = await deployment.connect("carol")
    alice_identity = deployment.identities["alice"]
    impostor = Impostor(deployment.did("bob"), alice_identity.signing_key, alice_identity.agreement)
    forged = seal(
        impostor,
        carol.did,
        deployment.identities["carol"].agreement.public,
        b"this is bob, honest",
        app_id=bytes(16),
        message_id=bytes(range(16)),
        now_ms=int(deployment.coordinator.clock() * 1000),
    )
    raw = await deployment.raw("alice")

    raw.send(frame(forged))

    await expect_rejection(await raw.expect(FrameType.ERROR), forged.message_id)
    event = await deployment.wait_event(EventKind.IMPERSONATION_ATTEMPT)
    assert (event.agent, event.peer) == (deployment.did("alice"), deployment.did("bob"))
    await asyncio.sleep(0.1)
    assert carol._inbox.empty() and not carol.rejected
    assert await deployment.store.queue.depth(carol.did) == 0
    # Had it been routed, carol would still have refused it: the sealed sender key is
    # not bob's registered key.
    with pytest.raises(AuthenticationFailed):
        open_sealed(
            deployment.identities["carol"],
            forged,
            sender_agreement_key=deployment.identities["bob"].agreement.public,
        )


async def test_the_connection_stays_usable_after_a_refused_frame(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    forged = sealed_to(deployment, "alice", "bob", now_ms=0)

    alice.send_raw(frame(forged))
    await deployment.wait_event(EventKind.TIMESTAMP_STALE)

    assert (await alice.send("bob", "still here")).status == "delivered"
    assert (await bob.receive(timeout=5)).text == "still here"
