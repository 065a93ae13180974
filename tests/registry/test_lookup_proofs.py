"""Registry proofs over a real coordinator: the SDK checks every lookup against the log."""

from __future__ import annotations

import json
import time

import pytest
from _registry_helpers import identity, memory_registry, record_of

from _deployment import Deployment, frame
from trustwire.crypto.random import random_bytes
from trustwire.errors import AuthenticationFailed, StoreError, UnknownAgent
from trustwire.protocol import control
from trustwire.protocol.envelope import Envelope, FrameType
from trustwire.registry import verify_registry_proof


async def test_the_sdk_verifies_a_peers_registry_proof(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    await deployment.connect("bob")
    assert alice.registry is not None

    result = await alice.send("bob", "hello")

    assert result.status == "delivered"
    assert alice.registry.last_head == deployment.registry.head()
    assert not alice.rejected


async def test_a_later_lookup_moves_the_sdk_to_a_consistent_newer_head(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    assert alice.registry is not None
    await alice.lookup("bob")
    seen = alice.registry.last_head
    assert seen is not None
    await deployment.enrol("dave")

    await alice.lookup("dave")

    newer = alice.registry.last_head
    assert newer is not None
    assert newer.size > seen.size
    assert newer == deployment.registry.head()


async def test_a_coordinator_serving_a_forked_registry_makes_send_fail(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    await alice.send("carol", "first, the genuine registry")
    seen = alice.registry.last_head if alice.registry is not None else None
    assert seen is not None
    # A registry under the same (stolen) log key, with bob but a different history,
    # grown past the head alice holds: signatures check out, consistency cannot.
    fork, _, _ = memory_registry(deployment.home.log_signing_key())
    bob = await deployment.store.agents.get_by_did(deployment.did("bob"))
    assert bob is not None
    await fork.enrol(bob)
    while fork.head().size <= seen.size:
        await fork.enrol(record_of(identity(f"ghost{fork.head().size}")))
    deployment.coordinator.registry = fork

    with pytest.raises(AuthenticationFailed):
        await alice.send("bob", "must not go out")

    assert alice.rejected == {"registry": 1}
    assert alice.registry is not None
    assert alice.registry.last_head == seen


async def test_a_coordinator_rolled_back_to_an_older_head_makes_send_fail(
    deployment: Deployment,
) -> None:
    alice = await deployment.connect("alice")
    await alice.lookup("bob")
    # The same log, but the agent has seen a head further along than what is served.
    await deployment.enrol("dave")
    await alice.lookup("dave")
    stale, _, _ = memory_registry(deployment.home.log_signing_key())
    for name in ("alice", "bob"):
        record = await deployment.store.agents.get_by_name(name)
        assert record is not None
        await stale.enrol(record)
    deployment.coordinator.registry = stale

    with pytest.raises(AuthenticationFailed):
        await alice.lookup("bob", fresh=True)


async def test_a_coordinator_that_strips_the_proof_is_refused(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    deployment.coordinator.registry = None

    with pytest.raises(AuthenticationFailed):
        await alice.send("bob", "no proof, no key")

    assert alice.rejected == {"registry": 1}


async def test_a_plain_lookup_body_is_still_answered_with_a_proof(
    deployment: Deployment,
) -> None:
    raw = await deployment.raw("alice")
    mid = random_bytes(16)
    query = Envelope.create(
        FrameType.LOOKUP,
        mid,
        deployment.did("alice"),
        "coordinator",
        body=b"bob",
        timestamp=int(time.time() * 1000),
    )
    raw.send(frame(query))

    answer = control.decode_json((await raw.expect(FrameType.LOOKUP_RESULT)).body)

    assert answer["found"] is True
    snapshot, head = verify_registry_proof(
        deployment.did("bob"),
        answer["registry"],
        public_key=deployment.home.log_verify_key(),
        last_head=None,
    )
    assert snapshot["agreement_key"] == answer["agreement_key"]
    assert "consistency" not in answer["registry"]
    assert head == deployment.registry.head()


async def test_a_json_lookup_with_known_size_gets_a_consistency_proof(
    deployment: Deployment,
) -> None:
    raw = await deployment.raw("alice")
    body = json.dumps({"who": deployment.did("bob"), "known_size": 1}).encode()
    query = Envelope.create(
        FrameType.LOOKUP,
        random_bytes(16),
        deployment.did("alice"),
        "coordinator",
        body=body,
        timestamp=int(time.time() * 1000),
    )
    raw.send(frame(query))

    answer = control.decode_json((await raw.expect(FrameType.LOOKUP_RESULT)).body)

    assert answer["did"] == deployment.did("bob")
    assert isinstance(answer["registry"]["consistency"], list)
    assert answer["registry"]["consistency"]


async def test_a_failing_registry_answers_not_found_and_keeps_the_connection(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await deployment.connect("alice")

    def broken(did: str, *, known_size: int | None = None) -> None:
        raise StoreError("the registry file is gone")

    with monkeypatch.context() as patch:
        patch.setattr(deployment.registry, "answer", broken)
        with pytest.raises(UnknownAgent):
            await alice.lookup("bob")

    peer = await alice.lookup("bob")
    assert peer.did == deployment.did("bob")
