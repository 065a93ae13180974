"""Delivery over a real coordinator on loopback TLS 1.3: receipts, order, store-and-forward.

Delivery guarantee these tests pin down:

* The coordinator delivers **at least once** on the wire: a queued frame stays in the
  durable queue until the recipient ``ACK``\\ s it, across disconnects and restarts.
* One :class:`~trustwire.client.agent.Agent` object delivers each application message
  **exactly once** to its application (it drops app ids it has delivered).
* Across Agent objects (a process that restarts) the seen-set starts empty: a frame the
  old object delivered but never acknowledged is delivered again, under the same
  ``Message.id``, so an application that must be exactly-once across restarts
  deduplicates on ``Message.id`` (see
  ``test_a_message_delivered_but_never_acknowledged_comes_back_with_the_same_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, defaultdict

import pytest

from _deployment import Deployment, MakeDeployment, split_frames, transport_of, wait_until
from trustwire.client.agent import Agent, Message, SendResult
from trustwire.coordinator.server import CoordinatorConfig
from trustwire.errors import ConnectionClosed, InvalidSignature
from trustwire.events import EventKind
from trustwire.protocol.channel import verify_key_of
from trustwire.protocol.envelope import FrameType


async def receive_all(agent: Agent, count: int, timeout: float = 10.0) -> list[Message]:
    """Exactly ``count`` messages, then check that nothing else arrives briefly."""
    got = [await agent.receive(timeout=timeout) for _ in range(count)]
    await asyncio.sleep(0.1)
    assert agent._inbox.empty(), "more messages arrived than were sent"
    return got


# -- online --------------------------------------------------------------------------


async def test_online_message_is_delivered_with_a_receipt_signed_by_the_recipient(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")

    result = await alice.send("bob", "hello bob")

    assert result.status == "delivered"
    assert result.via == "channel"
    assert result.receipt is not None
    assert result.receipt.signer == bob.did
    # Verify with nothing but the DID: the key comes from did:key itself.
    verify_key_of(bob.did).verify(result.receipt.signature, result.receipt.statement)
    assert alice.did.encode() in result.receipt.statement
    message = await bob.receive(timeout=5)
    assert (message.text, message.sender, message.sender_name) == ("hello bob", alice.did, "alice")
    assert message.id == result.message_id
    assert not message.sealed


async def test_receipt_signature_does_not_verify_under_another_key_or_statement(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    await deployment.connect("bob")

    receipt = (await alice.send("bob", "x")).receipt

    assert receipt is not None
    try:
        verify_key_of(alice.did).verify(receipt.signature, receipt.statement)
    except InvalidSignature:
        pass
    else:
        raise AssertionError("a receipt verified under the sender's own key")
    forged = receipt.statement[:-1] + bytes([receipt.statement[-1] ^ 1])
    try:
        verify_key_of(receipt.signer).verify(receipt.signature, forged)
    except InvalidSignature:
        pass
    else:
        raise AssertionError("a receipt verified over an altered statement")


async def test_many_concurrent_sends_arrive_once_each_in_send_order(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    n = 300

    results = await asyncio.gather(*(alice.send("bob", f"m{i}") for i in range(n)))

    assert {r.status for r in results} == {"delivered"}
    for r in results:
        assert r.receipt is not None
        verify_key_of(bob.did).verify(r.receipt.signature, r.receipt.statement)
    got = await receive_all(bob, n)
    assert [m.text for m in got] == [f"m{i}" for i in range(n)]
    assert [m.id for m in got] == [r.message_id for r in results]


async def test_concurrent_senders_each_keep_their_own_order(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    carol = await deployment.connect("carol")
    bob = await deployment.connect("bob")
    n = 150

    await asyncio.gather(
        *(alice.send("bob", f"a{i}") for i in range(n)),
        *(carol.send("bob", f"c{i}") for i in range(n)),
    )

    by_sender: dict[str, list[str]] = defaultdict(list)
    for m in await receive_all(bob, 2 * n):
        by_sender[m.sender_name].append(m.text)
    assert by_sender["alice"] == [f"a{i}" for i in range(n)]
    assert by_sender["carol"] == [f"c{i}" for i in range(n)]


async def test_sequential_sends_on_a_warm_channel_keep_order(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    await alice.send("bob", "warm-up")
    await bob.receive(timeout=5)

    for batch in range(3):
        await asyncio.gather(*(alice.send("bob", f"{batch}:{i}") for i in range(50)))

    got = [m.text for m in await receive_all(bob, 150)]
    assert got == [f"{b}:{i}" for b in range(3) for i in range(50)]


async def test_two_agents_opening_channels_to_each_other_at_once_still_talk(
    deployment: Deployment,
) -> None:
    """Both send first, so both open a channel: two channels between one pair."""
    alice = await deployment.connect("alice", receipt_timeout=3)
    bob = await deployment.connect("bob", receipt_timeout=3)

    results = await asyncio.gather(
        *(alice.send("bob", f"a{i}") for i in range(20)),
        *(bob.send("alice", f"b{i}") for i in range(20)),
    )

    assert {(r.status, r.via) for r in results} == {("delivered", "channel")}
    assert [m.text for m in await receive_all(bob, 20)] == [f"a{i}" for i in range(20)]
    assert [m.text for m in await receive_all(alice, 20)] == [f"b{i}" for i in range(20)]
    assert not alice.rejected and not bob.rejected


async def test_every_agent_messaging_every_other_at_once(make_deployment: MakeDeployment) -> None:
    names = [f"agent{i}" for i in range(5)]
    deployment = await make_deployment(agents=names)
    agents = {name: await deployment.connect(name, receipt_timeout=5) for name in names}
    n = 30

    results = await asyncio.gather(
        *(
            agents[sender].send(recipient, f"{sender}:{i}")
            for i in range(n)
            for sender in names
            for recipient in names
            if sender != recipient
        )
    )

    assert {r.status for r in results} == {"delivered"}
    for name, agent in agents.items():
        by_sender: dict[str, list[str]] = defaultdict(list)
        for m in await receive_all(agent, n * (len(names) - 1)):
            by_sender[m.sender_name].append(m.text)
        for sender in names:
            if sender != name:
                assert by_sender[sender] == [f"{sender}:{i}" for i in range(n)]
        assert not agent.rejected


# -- offline: store and forward -------------------------------------------------------


async def test_messages_to_an_offline_agent_are_queued_and_delivered_exactly_once(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    n = 40

    results = [await alice.send("bob", f"q{i}") for i in range(n)]

    assert {(r.status, r.via) for r in results} == {("queued", "sealed")}
    assert await deployment.store.queue.depth(deployment.did("bob")) == n
    assert len(deployment.events(EventKind.MESSAGE_QUEUED)) == n
    bob = await deployment.connect("bob")
    got = await receive_all(bob, n)
    assert [m.text for m in got] == [f"q{i}" for i in range(n)]
    assert all(m.sealed and m.sender == alice.did for m in got)
    await _wait_queue_empty(deployment, "bob")


async def _wait_queue_empty(deployment: Deployment, name: str) -> None:
    did = deployment.did(name)
    for _ in range(500):
        if await deployment.store.queue.depth(did) == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name}'s queue still holds acknowledged messages")


async def test_sealed_messages_get_signed_receipts_once_the_recipient_connects(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    result = await alice.send("bob", "later")
    assert result.status == "queued"

    bob = await deployment.connect("bob")
    await bob.receive(timeout=5)

    # The SDK keeps the message until a receipt covers it; the receipt is a sealed,
    # signed statement from bob, checked on arrival.
    await wait_until(lambda: bytes.fromhex(result.message_id) not in alice._outgoing)


async def test_a_recipient_that_drops_before_acknowledging_gets_everything_again(
    deployment: Deployment,
) -> None:
    """Bob's first connection reads every delivered frame and dies without an ACK (a
    crash before processing); the coordinator redelivers all of it to the next one."""
    alice = await deployment.connect("alice")
    n = 25
    for i in range(n):
        assert (await alice.send("bob", f"r{i}")).status == "queued"

    crashed = await deployment.raw("bob")
    delivered = [await crashed.expect(FrameType.SEALED) for _ in range(n)]
    assert len({env.message_id for env in delivered}) == n
    await crashed.close()
    await deployment.wait_event(
        EventKind.CONNECTION_CLOSED, lambda e: e.agent == deployment.did("bob")
    )

    bob = await deployment.connect("bob")
    got = await receive_all(bob, n)
    assert [m.text for m in got] == [f"r{i}" for i in range(n)]
    await _wait_queue_empty(deployment, "bob")


async def test_a_message_delivered_but_never_acknowledged_comes_back_with_the_same_id(
    deployment: Deployment,
) -> None:
    """The documented limit of exactly-once: the app-id seen-set lives in the Agent
    object. Bob's SDK hands the messages to the app, then the connection dies before
    its ACK leaves; a new Agent object receives them again with the same ids."""
    alice = await deployment.connect("alice")
    for i in range(5):
        await alice.send("bob", f"d{i}")

    bob = await deployment.connect("bob")

    def lose_acks(data: bytes) -> None:
        if any(env.type is FrameType.ACK for env in split_frames(data)):
            raise ConnectionClosed(0, "simulated: connection lost before the ACK was written")

    bob.tap = lose_acks
    first = await receive_all(bob, 5)
    await bob.close()

    bob2 = await deployment.connect("bob")
    second = await receive_all(bob2, 5)
    assert [m.id for m in second] == [m.id for m in first]
    assert [m.text for m in second] == [f"d{i}" for i in range(5)]


async def test_queued_messages_survive_a_coordinator_restart(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    n = 20
    for i in range(n):
        assert (await alice.send("bob", f"s{i}")).status == "queued"
    await alice.close()

    await deployment.restart()

    bob = await deployment.connect("bob")
    got = await receive_all(bob, n)
    assert [m.text for m in got] == [f"s{i}" for i in range(n)]
    assert all(m.sender == deployment.did("alice") for m in got)


async def test_a_message_acknowledged_before_a_restart_is_not_delivered_after_it(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    await alice.send("bob", "once")
    await bob.receive(timeout=5)
    await bob.close()
    await alice.close()

    await deployment.restart()

    bob = await deployment.connect("bob")
    await asyncio.sleep(0.2)
    assert bob._inbox.empty()


# -- disconnects under load ---------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
async def test_abrupt_disconnects_under_load_lose_nothing(
    make_deployment: MakeDeployment, seed: int
) -> None:
    """Bob's process dies three times (socket aborted, unread and unacknowledged frames
    in flight) while alice streams 300 messages. Every send gets an answer, every message
    reaches some Bob, no Agent object delivers one twice, and a message two Bob objects
    both delivered carries the same id both times (the cross-restart guarantee)."""
    rnd = random.Random(seed)
    deployment = await make_deployment()
    alice = await deployment.connect("alice", receipt_timeout=5)
    bobs = [await deployment.connect("bob")]
    seen: list[list[Message]] = [[]]
    n = 300

    async def stream() -> list[SendResult]:
        results: list[SendResult] = []
        for k in range(0, n, 20):
            results += await asyncio.gather(*(alice.send("bob", f"m{i}") for i in range(k, k + 20)))
        return results

    sending = asyncio.ensure_future(stream())
    for _ in range(3):
        await asyncio.sleep(rnd.uniform(0.02, 0.2))
        with contextlib.suppress(TimeoutError):
            for _ in range(rnd.randint(0, 30)):
                seen[-1].append(await bobs[-1].receive(timeout=0.05))
        transport_of(bobs[-1]).abort()
        await asyncio.sleep(rnd.uniform(0, 0.1))
        bobs.append(await deployment.connect("bob"))
        seen.append([])
    results = await sending

    assert len(results) == n
    await _wait_queue_empty(deployment, "bob")
    for bob, messages in zip(bobs, seen, strict=True):
        while not bob._inbox.empty():  # delivered to the SDK, not yet read by the app
            messages.append(bob._inbox.get_nowait())
        assert len({m.id for m in messages}) == len(messages), "one Agent delivered twice"
        assert not bob.rejected
    ids_by_text: dict[str, set[str]] = defaultdict(set)
    for m in (m for messages in seen for m in messages):
        ids_by_text[m.text].add(m.id)
    assert set(ids_by_text) == {f"m{i}" for i in range(n)}
    assert all(len(ids) == 1 for ids in ids_by_text.values())
    assert {r.message_id for r in results} == {i for ids in ids_by_text.values() for i in ids}


# -- a peer leaves mid-conversation ---------------------------------------------------


async def test_unreceipted_channel_messages_are_resent_sealed_when_the_peer_drops(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    early = [await alice.send("bob", f"early{i}") for i in range(5)]
    assert {r.via for r in early} == {"channel"}
    first = await receive_all(bob, 5)

    # Bob's process stops reading (hung, partitioned): the coordinator forwards the
    # channel frames into a socket nobody reads, so no receipt ever comes back.
    transport_of(bob).pause_reading()
    forwarded = sum(e.details["count"] for e in deployment.events(EventKind.MESSAGE_ACCEPTED))
    sends = [asyncio.ensure_future(alice.send("bob", f"late{i}")) for i in range(10)]
    await wait_until(
        lambda: (
            sum(e.details["count"] for e in deployment.events(EventKind.MESSAGE_ACCEPTED))
            >= forwarded + 10
        )
    )
    await bob.close()

    late = await asyncio.gather(*sends)
    assert {(r.status, r.via) for r in late} == {("queued", "sealed")}
    bob2 = await deployment.connect("bob")
    second = await receive_all(bob2, 10)
    assert [m.text for m in second] == [f"late{i}" for i in range(10)]
    assert all(m.sealed and m.sender == alice.did for m in second)
    assert Counter(m.id for m in first + second) == Counter(r.message_id for r in early + late)
    assert not bob2.rejected


async def test_channel_frames_sent_after_the_peer_left_are_not_stored_but_resent_sealed(
    deployment: Deployment,
) -> None:
    """Alice writes on the channel before she has read the news that Bob left."""
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    await alice.send("bob", "hello")
    await bob.receive(timeout=5)
    transport_of(alice).pause_reading()  # the PRESENCE notice waits unread
    await bob.close()
    await deployment.wait_event(EventKind.CONNECTION_CLOSED, lambda e: e.agent == bob.did)

    written: list[FrameType] = []
    alice.tap = lambda data: written.extend(env.type for env in split_frames(data))
    sends = [asyncio.ensure_future(alice.send("bob", f"after{i}")) for i in range(5)]
    await wait_until(lambda: written.count(FrameType.CHANNEL_DATA) == 5)
    transport_of(alice).resume_reading()

    results = await asyncio.gather(*sends)
    assert {(r.status, r.via) for r in results} == {("queued", "sealed")}
    # Only the sealed resends are queued: a channel frame would be unreadable later.
    assert await deployment.store.queue.depth(bob.did) == 5
    bob2 = await deployment.connect("bob")
    got = await receive_all(bob2, 5)
    assert [m.text for m in got] == [f"after{i}" for i in range(5)]
    assert not bob2.rejected


# -- channel frames in memory ------------------------------------------------------------


async def test_channel_frames_to_an_online_peer_are_not_stored(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    results = [await alice.send("bob", f"m{i}") for i in range(5)]
    assert {(r.status, r.via) for r in results} == {("delivered", "channel")}
    assert [m.text for m in await receive_all(bob, 5)] == [f"m{i}" for i in range(5)]
    assert await deployment.store.queue.depth(bob.did) == 0
    await wait_until(lambda: not deployment.coordinator._connections[bob.did].direct)


async def test_a_full_in_memory_window_pauses_the_sender_then_falls_back_to_the_queue(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(
        config=CoordinatorConfig(delivery_window=10, delivery_wait=0.5)
    )
    coordinator = deployment.coordinator
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    assert (await alice.send("bob", "open")).via == "channel"
    await bob.receive(timeout=5)
    await wait_until(lambda: not coordinator._connections[bob.did].direct)

    transport_of(bob).pause_reading()  # bob acknowledges nothing for now
    sends = []
    for i in range(30):
        sends.append(asyncio.ensure_future(alice.send("bob", f"w{i}")))
        await asyncio.sleep(0.01)
    bob_conn = coordinator._connections[bob.did]
    alice_conn = coordinator._connections[alice.did]
    # Never more than the window in memory; alice's reads wait for room at bob ...
    assert len(bob_conn.direct) == 10
    assert alice_conn.waiting_on is bob_conn
    # ... until delivery_wait runs out: the rest take the durable queue, in order.
    await wait_until(lambda: alice_conn.waiting_on is None and bob_conn.channel_frames)
    assert len(bob_conn.direct) == 10

    transport_of(bob).resume_reading()
    received = await receive_all(bob, 30)
    assert [m.text for m in received] == [f"w{i}" for i in range(30)]
    results = await asyncio.gather(*sends)
    assert {(r.status, r.via) for r in results} == {("delivered", "channel")}
    await wait_until(lambda: not bob_conn.direct and not bob_conn.channel_frames)
    assert await deployment.store.queue.depth(bob.did) == 0


async def test_two_agents_over_each_others_window_do_not_deadlock(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(
        config=CoordinatorConfig(delivery_window=4, delivery_wait=30.0)
    )
    coordinator = deployment.coordinator
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    assert (await alice.send("bob", "open")).via == "channel"
    assert (await bob.send("alice", "open")).via == "channel"
    await bob.receive(timeout=5)
    await alice.receive(timeout=5)
    alice_conn = coordinator._connections[alice.did]
    bob_conn = coordinator._connections[bob.did]
    await wait_until(lambda: not alice_conn.direct and not bob_conn.direct)

    # Neither acknowledges for now: alice fills bob's window and her reads wait for it.
    transport_of(alice).pause_reading()
    transport_of(bob).pause_reading()
    sends = []
    for i in range(10):
        sends.append(asyncio.ensure_future(alice.send("bob", f"a{i}")))
        await asyncio.sleep(0.01)
    assert alice_conn.waiting_on is bob_conn
    # Bob's frames fill alice's window; waiting for it would close the cycle, so the
    # rest take the durable queue instead of stalling both connections.
    for i in range(10):
        sends.append(asyncio.ensure_future(bob.send("alice", f"b{i}")))
        await asyncio.sleep(0.01)
    assert bob_conn.waiting_on is None
    assert len(alice_conn.direct) == 4
    assert alice_conn.channel_frames

    transport_of(alice).resume_reading()
    transport_of(bob).resume_reading()
    async with asyncio.timeout(20):
        results = await asyncio.gather(*sends)
    assert {(r.status, r.via) for r in results} == {("delivered", "channel")}
    assert [m.text for m in await receive_all(bob, 10)] == [f"a{i}" for i in range(10)]
    assert [m.text for m in await receive_all(alice, 10)] == [f"b{i}" for i in range(10)]


async def test_two_agents_flooding_each_other_through_a_small_window_finish(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(config=CoordinatorConfig(delivery_window=4))
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    assert (await alice.send("bob", "open")).via == "channel"
    assert (await bob.send("alice", "open")).via == "channel"
    await bob.receive(timeout=5)
    await alice.receive(timeout=5)

    sends = [
        *(asyncio.ensure_future(alice.send("bob", f"a{i}")) for i in range(200)),
        *(asyncio.ensure_future(bob.send("alice", f"b{i}")) for i in range(200)),
    ]
    async with asyncio.timeout(20):
        results = await asyncio.gather(*sends)
    assert {r.status for r in results} == {"delivered"}
    assert [m.text for m in await receive_all(bob, 200)] == [f"a{i}" for i in range(200)]
    assert [m.text for m in await receive_all(alice, 200)] == [f"b{i}" for i in range(200)]
