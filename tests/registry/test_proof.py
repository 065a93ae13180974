"""verify_registry_proof and RegistryVerifier: what a peer accepts, and what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _registry_helpers import identity, memory_registry, record_of

from trustwire.audit.log import TreeHead
from trustwire.crypto.signing import SigningKey
from trustwire.errors import ProofError
from trustwire.registry import Registry, RegistryVerifier, verify_registry_proof


async def enrolled(*names: str) -> tuple[Registry, SigningKey, list[str]]:
    registry, _, key = memory_registry()
    dids = []
    for name in names:
        agent = identity(name)
        await registry.enrol(record_of(agent))
        dids.append(agent.did)
    return registry, key, dids


def head_of(proof: dict[str, Any]) -> TreeHead:
    return TreeHead.from_json(json.dumps(proof["head"]))


async def test_a_proof_verifies_and_returns_the_snapshot_and_head() -> None:
    registry, key, (_, bob) = await enrolled("alice", "bob")
    snapshot, head = verify_registry_proof(
        bob, registry.proof_for(bob), public_key=key.public_key, last_head=None
    )
    assert (snapshot["did"], snapshot["name"]) == (bob, "bob")
    assert head == registry.head()


async def test_a_proof_survives_a_json_round_trip() -> None:
    registry, key, (alice,) = await enrolled("alice")
    proof = json.loads(json.dumps(registry.proof_for(alice)))
    verify_registry_proof(alice, proof, public_key=key.public_key, last_head=None)


async def test_a_tampered_entry_is_refused() -> None:
    registry, key, (alice,) = await enrolled("alice")
    proof = registry.proof_for(alice)
    proof["entry"] = str(proof["entry"]).replace('"worker"', '"admin"')
    with pytest.raises(ProofError, match="inclusion"):
        verify_registry_proof(alice, proof, public_key=key.public_key, last_head=None)


async def test_a_tampered_audit_path_is_refused() -> None:
    registry, key, (alice, _) = await enrolled("alice", "bob")
    proof = registry.proof_for(alice)
    proof["inclusion"] = ["00" * 32]
    with pytest.raises(ProofError):
        verify_registry_proof(alice, proof, public_key=key.public_key, last_head=None)


async def test_a_head_signed_by_another_key_is_refused() -> None:
    registry, _, (alice,) = await enrolled("alice")
    with pytest.raises(ProofError, match="signature"):
        verify_registry_proof(
            alice,
            registry.proof_for(alice),
            public_key=SigningKey.generate().public_key,
            last_head=None,
        )


async def test_a_forged_head_is_refused() -> None:
    registry, key, (alice,) = await enrolled("alice")
    proof = registry.proof_for(alice)
    forger = SigningKey.generate()
    genuine = head_of(proof)
    forged = TreeHead.sign(
        forger,
        origin=genuine.origin,
        size=genuine.size,
        root=genuine.root,
        timestamp=genuine.timestamp,
    )
    proof["head"] = json.loads(forged.to_json())
    with pytest.raises(ProofError, match="signature"):
        verify_registry_proof(alice, proof, public_key=key.public_key, last_head=None)


async def test_a_head_of_the_audit_log_is_refused_even_under_the_same_key() -> None:
    registry, key, (alice,) = await enrolled("alice")
    proof = registry.proof_for(alice)
    genuine = head_of(proof)
    audit = TreeHead.sign(
        key,
        origin="trustwire/audit",
        size=genuine.size,
        root=genuine.root,
        timestamp=genuine.timestamp,
    )
    proof["head"] = json.loads(audit.to_json())
    with pytest.raises(ProofError, match="trustwire/audit"):
        verify_registry_proof(alice, proof, public_key=key.public_key, last_head=None)


async def test_a_proof_for_another_did_is_refused() -> None:
    registry, key, (alice, bob) = await enrolled("alice", "bob")
    with pytest.raises(ProofError, match="another DID"):
        verify_registry_proof(
            alice, registry.proof_for(bob), public_key=key.public_key, last_head=None
        )


async def test_a_consistent_later_head_is_accepted() -> None:
    registry, key, (alice,) = await enrolled("alice")
    earlier = registry.head()
    for name in ("bob", "carol", "dave"):
        await registry.enrol(record_of(identity(name)))
    proof = registry.proof_for(alice, known_size=earlier.size)
    _, head = verify_registry_proof(alice, proof, public_key=key.public_key, last_head=earlier)
    assert head.size == 4


async def test_a_later_head_without_its_consistency_proof_is_refused() -> None:
    registry, key, (alice,) = await enrolled(
        "alice",
    )
    earlier = registry.head()
    await registry.enrol(record_of(identity("bob")))
    await registry.enrol(record_of(identity("carol")))
    proof = registry.proof_for(alice)  # no known_size: no consistency proof
    with pytest.raises(ProofError, match="split view"):
        verify_registry_proof(alice, proof, public_key=key.public_key, last_head=earlier)


async def forked() -> tuple[Registry, Registry, SigningKey, str]:
    """Two registries under one key that agree on alice, then diverge."""
    key = SigningKey.generate()
    alice = identity("alice")
    left, _, _ = memory_registry(key)
    right, _, _ = memory_registry(key)
    for registry in (left, right):
        await registry.enrol(record_of(alice))
    await left.enrol(record_of(identity("bob")))
    await right.enrol(record_of(identity("mallory")))
    return left, right, key, alice.did


async def test_two_different_heads_of_the_same_size_are_a_split_view() -> None:
    left, right, key, alice = await forked()
    seen = left.head()
    proof = right.proof_for(alice, known_size=seen.size)
    assert head_of(proof).size == seen.size
    with pytest.raises(ProofError, match="split view"):
        verify_registry_proof(alice, proof, public_key=key.public_key, last_head=seen)


async def test_a_fork_that_grew_longer_is_a_split_view() -> None:
    left, right, key, alice = await forked()
    seen = left.head()
    await right.enrol(record_of(identity("eve")))
    proof = right.proof_for(alice, known_size=seen.size)
    with pytest.raises(ProofError, match="split view"):
        verify_registry_proof(alice, proof, public_key=key.public_key, last_head=seen)


async def test_a_shorter_head_than_one_already_seen_is_a_split_view() -> None:
    registry, key, (alice,) = await enrolled("alice")
    old_proof = registry.proof_for(alice)
    await registry.enrol(record_of(identity("bob")))
    seen = registry.head()
    with pytest.raises(ProofError, match="split view"):
        verify_registry_proof(alice, old_proof, public_key=key.public_key, last_head=seen)


async def test_proof_for_gives_no_consistency_from_beyond_the_head() -> None:
    registry, _, (alice,) = await enrolled("alice")
    assert "consistency" not in registry.proof_for(alice, known_size=5)
    assert registry.proof_for(alice, known_size=1)["consistency"] == []


# -- the SDK's verifier ---------------------------------------------------------------


def answer_from(registry: Registry, did: str, **changes: object) -> dict[str, Any]:
    """A LOOKUP_RESULT as the coordinator builds it, with ``changes`` applied."""
    found = registry.answer(did)
    assert found is not None
    snapshot, proof = found
    answer: dict[str, Any] = {key: snapshot[key] for key in snapshot if key != "v"}
    answer |= {"found": True, "online": True, "registry": proof}
    answer.update(changes)
    return answer


async def test_the_verifier_accepts_a_true_answer_and_remembers_the_head() -> None:
    registry, key, (alice,) = await enrolled("alice")
    verifier = RegistryVerifier(key.public_key)
    verifier.check(alice, answer_from(registry, alice))
    assert verifier.last_head == registry.head()
    assert json.loads(verifier.query("bob")) == {"known_size": 1, "who": "bob"}


async def test_the_verifier_refuses_an_answer_without_a_proof() -> None:
    registry, key, (alice,) = await enrolled("alice")
    answer = answer_from(registry, alice)
    del answer["registry"]
    with pytest.raises(ProofError, match="no registry proof"):
        RegistryVerifier(key.public_key).check(alice, answer)


async def test_the_verifier_refuses_a_key_other_than_the_logged_one() -> None:
    registry, key, (alice, bob) = await enrolled("alice", "bob")
    other = registry.snapshot(bob)
    assert other is not None
    answer = answer_from(
        registry,
        alice,
        agreement_key=other["agreement_key"],
        agreement_statement=other["agreement_statement"],
    )
    with pytest.raises(ProofError, match="agreement_key"):
        RegistryVerifier(key.public_key).check(alice, answer)


async def test_the_verifier_refuses_a_revoked_snapshot() -> None:
    registry, key, (alice,) = await enrolled("alice")
    await registry.revoke(alice, at=3.0)
    with pytest.raises(ProofError, match="revoked"):
        RegistryVerifier(key.public_key).check(alice, answer_from(registry, alice))


async def test_the_verifier_refuses_an_agent_state_older_than_one_seen() -> None:
    registry, key, (alice,) = await enrolled("alice")
    verifier = RegistryVerifier(key.public_key)
    stale = answer_from(registry, alice)
    await registry.set_roles(alice, ["admin"])
    verifier.check(alice, answer_from(registry, alice))
    # The old entry is still in the log (a valid inclusion proof), but older.
    index = stale["registry"]["index"]
    head = registry.head()
    stale["registry"] |= {
        "inclusion": [h.hex() for h in registry.log.inclusion_proof(index, head.size)],
        "head": json.loads(head.to_json()),
        "consistency": [],
    }
    with pytest.raises(ProofError, match="older"):
        verifier.check(alice, stale)
