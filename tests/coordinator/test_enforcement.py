"""Policy and rate limits enforced by a running coordinator on every routed frame.

A refusal reaches the sender as :class:`PolicyDenied` or :class:`RateLimited` from
``Agent.send`` (the wire carries one opaque code), is recorded as a ``message.denied`` /
``rate.limited`` security event, and nothing reaches the recipient or its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from _deployment import Deployment, MakeDeployment, wait_until
from trustwire.client.agent import SendResult
from trustwire.errors import PolicyDenied, RateLimited
from trustwire.events import EventKind
from trustwire.policy.model import PolicyConfig, parse_policy


def policy(rules: str, *, rate: str = "1000/second", extra: str = "") -> PolicyConfig:
    return parse_policy(
        f"""
version: 1
policies:
  communication:
    default: deny
{extra}    rules:
{rules}
  access_control:
    roles: {{worker: "does work"}}
    rate_limits:
      default: {rate}
"""
    )


ALLOW_ALL = """
    - id: agents-may-message
      effect: allow
      from: "*"
      to: "*"
      actions: [message]
"""
ALICE_MAY_NOT_MESSAGE_CAROL = (
    ALLOW_ALL
    + """
    - id: alice-may-not-message-carol
      effect: deny
      from: {agents: [alice]}
      to: {agents: [carol]}
      actions: [message]
"""
)


@pytest.fixture
async def guarded(make_deployment: MakeDeployment) -> Deployment:
    return await make_deployment(policy=policy(ALICE_MAY_NOT_MESSAGE_CAROL))


async def assert_nothing_reached(deployment: Deployment, name: str) -> None:
    await asyncio.sleep(0.1)
    assert await deployment.store.queue.depth(deployment.did(name)) == 0


# -- policy ---------------------------------------------------------------------------


async def test_a_denied_message_to_an_online_agent_raises_policy_denied(
    guarded: Deployment,
) -> None:
    alice = await guarded.connect("alice")
    carol = await guarded.connect("carol")
    started = time.monotonic()

    with pytest.raises(PolicyDenied):
        await alice.send("carol", "let me in")

    # Refused at once, not after a channel-setup timeout.
    assert time.monotonic() - started < 2.0
    event = await guarded.wait_event(EventKind.MESSAGE_DENIED)
    assert (event.agent, event.peer) == (alice.did, carol.did)
    assert event.reason and "alice-may-not-message-carol" in event.reason
    await assert_nothing_reached(guarded, "carol")
    assert carol._inbox.empty() and not carol.rejected


async def test_a_denied_message_to_an_offline_agent_is_not_queued(guarded: Deployment) -> None:
    alice = await guarded.connect("alice")

    with pytest.raises(PolicyDenied):
        await alice.send("carol", "leave it at the door")

    event = await guarded.wait_event(EventKind.MESSAGE_DENIED)
    assert (event.agent, event.peer) == (alice.did, guarded.did("carol"))
    await assert_nothing_reached(guarded, "carol")
    carol = await guarded.connect("carol")
    await asyncio.sleep(0.1)
    assert carol._inbox.empty()


async def test_a_deny_rule_is_directional(guarded: Deployment) -> None:
    carol = await guarded.connect("carol")

    assert (await carol.send("alice", "hi alice")).status == "queued"

    alice = await guarded.connect("alice")
    assert (await alice.receive(timeout=5)).text == "hi alice"
    assert not [e for e in guarded.events(EventKind.MESSAGE_DENIED) if e.agent == carol.did]


async def test_receipts_flow_back_under_a_one_way_policy(guarded: Deployment) -> None:
    carol = await guarded.connect("carol")
    result = await carol.send("alice", "hi alice")

    alice = await guarded.connect("alice")
    await alice.receive(timeout=5)

    # The SDK keeps a message until a signed receipt covers it.
    await wait_until(lambda: bytes.fromhex(result.message_id) not in carol._outgoing, 1.0)
    assert not guarded.events(EventKind.MESSAGE_DENIED)


async def test_the_same_sender_may_still_message_others(guarded: Deployment) -> None:
    alice = await guarded.connect("alice")
    bob = await guarded.connect("bob")
    with pytest.raises(PolicyDenied):
        await alice.send("carol", "no")

    assert (await alice.send("bob", "yes")).status == "delivered"
    assert (await bob.receive(timeout=5)).text == "yes"


async def test_with_no_allow_rule_everything_is_denied(make_deployment: MakeDeployment) -> None:
    nobody = """
    - id: nobody-messages-carol
      effect: deny
      from: "*"
      to: {agents: [carol]}
      actions: [message]
"""
    deployment = await make_deployment(policy=policy(nobody))
    alice = await deployment.connect("alice")
    await deployment.connect("bob")

    with pytest.raises(PolicyDenied):
        await alice.send("bob", "default deny?")

    event = await deployment.wait_event(EventKind.MESSAGE_DENIED)
    assert event.peer == deployment.did("bob")
    await assert_nothing_reached(deployment, "bob")


async def test_a_message_over_the_policy_size_limit_is_denied(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(
        policy=policy(ALLOW_ALL, extra="    max_message_bytes: 1024\n")
    )
    alice = await deployment.connect("alice")

    assert (await alice.send("bob", b"x" * 1024)).status == "queued"
    with pytest.raises(PolicyDenied):
        await alice.send("bob", b"x" * 4096)

    event = await deployment.wait_event(EventKind.MESSAGE_DENIED)
    assert "size" in str(event.details) or "exceeds" in (event.reason or "")
    assert await deployment.store.queue.depth(deployment.did("bob")) == 1


# -- rate limits ----------------------------------------------------------------------


async def test_exceeding_the_rate_limit_raises_rate_limited(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(policy=policy(ALLOW_ALL, rate="3/minute"))
    alice = await deployment.connect("alice")

    for i in range(3):
        assert (await alice.send("bob", f"ok {i}")).status == "queued"
    with pytest.raises(RateLimited):
        await alice.send("bob", "one too many")

    event = await deployment.wait_event(EventKind.RATE_LIMITED)
    assert (event.agent, event.peer) == (alice.did, deployment.did("bob"))
    assert await deployment.store.queue.depth(deployment.did("bob")) == 3
    assert not deployment.events(EventKind.MESSAGE_DENIED)


async def test_one_agents_rate_limit_does_not_throttle_another(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(policy=policy(ALLOW_ALL, rate="2/minute"))
    alice = await deployment.connect("alice")
    carol = await deployment.connect("carol")
    for _ in range(2):
        await alice.send("bob", "a")
    with pytest.raises(RateLimited):
        await alice.send("bob", "a")

    assert (await carol.send("bob", "c")).status == "queued"


async def test_a_rate_limited_burst_is_refused_without_closing_the_connection(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(policy=policy(ALLOW_ALL, rate="5/minute"))
    alice = await deployment.connect("alice")

    outcomes = await asyncio.gather(
        *(alice.send("bob", f"burst {i}") for i in range(20)), return_exceptions=True
    )

    assert sum(1 for o in outcomes if not isinstance(o, BaseException)) == 5
    assert all(isinstance(o, RateLimited) for o in outcomes if isinstance(o, BaseException))
    assert len(deployment.events(EventKind.RATE_LIMITED)) == 15
    assert alice.connected


async def test_a_refused_frame_inside_a_channel_burst_strands_no_other_message(
    make_deployment: MakeDeployment,
) -> None:
    """The coordinator refuses part of a burst already encrypted on a channel. The
    refusal leaves a gap in the channel's counters (and the batch's checkpoint signature
    may be in it), so the frames around it can never be released by the recipient: the
    SDK must give every send a definite answer and never report delivery of a message
    the application did not get."""
    deployment = await make_deployment(policy=policy(ALLOW_ALL, rate="60/second"))
    alice = await deployment.connect("alice", receipt_timeout=3)
    bob = await deployment.connect("bob")
    assert (await alice.send("bob", "warm-up")).via == "channel"
    await bob.receive(timeout=5)

    outcomes = await asyncio.gather(
        *(alice.send("bob", f"burst {i}") for i in range(150)), return_exceptions=True
    )

    assert all(isinstance(o, RateLimited | SendResult) for o in outcomes), {
        type(o).__name__ for o in outcomes
    }
    delivered = {o.message_id for o in outcomes if isinstance(o, SendResult)}
    assert any(isinstance(o, RateLimited) for o in outcomes)
    received = set()
    with contextlib.suppress(TimeoutError):
        while True:
            received.add((await bob.receive(timeout=0.3)).id)
    assert received == delivered
    # Once the window has passed, the pair talks again (over a fresh channel).
    await asyncio.sleep(1.0)
    after = await alice.send("bob", "after the burst")
    assert after.status == "delivered"
    assert (await bob.receive(timeout=5)).text == "after the burst"


async def test_receipts_for_many_offline_messages_fit_a_small_size_limit(
    make_deployment: MakeDeployment,
) -> None:
    """Receipts are routed frames too, and the size limit applies to them: one sealed
    receipt for a hundred messages would be refused, and the sender would never learn
    that any of them arrived."""
    deployment = await make_deployment(
        policy=policy(ALLOW_ALL, extra="    max_message_bytes: 256\n")
    )
    alice = await deployment.connect("alice")
    results = [await alice.send("bob", f"m{i}") for i in range(100)]
    assert {r.status for r in results} == {"queued"}

    bob = await deployment.connect("bob")
    for _ in range(100):
        await bob.receive(timeout=5)

    # The SDK keeps each message until a signed receipt covers it.
    await wait_until(lambda: not alice._outgoing)
    assert not deployment.events(EventKind.MESSAGE_DENIED)
