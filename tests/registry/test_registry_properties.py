"""Property: whatever the sequence of identity events, every proof the registry serves
verifies, and every head extends every earlier one (hypothesis)."""

from __future__ import annotations

import asyncio

from _registry_helpers import identity, memory_registry, record_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustwire.audit.log import TreeHead
from trustwire.identity.keys import AgentIdentity
from trustwire.registry import RegistryVerifier, verify_registry_proof

# Each step: (operation, which agent). Operations on unknown or revoked agents are skipped.
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["enrol", "roles", "rotate", "certificate", "revoke"]), st.integers(0, 3)
    ),
    min_size=1,
    max_size=12,
)

# A few identities made once: key generation is the slow part.
_PEOPLE = [identity(f"agent{i}") for i in range(4)]


async def _run(steps: list[tuple[str, int]]) -> None:
    registry, _, key = memory_registry()
    enrolled: dict[int, AgentIdentity] = {}
    revoked: set[int] = set()
    heads: list[TreeHead] = [registry.head()]
    verifier = RegistryVerifier(key.public_key)
    for operation, who in steps:
        person = enrolled.get(who)
        if operation == "enrol":
            if person is not None:
                continue
            enrolled[who] = _PEOPLE[who]
            await registry.enrol(record_of(_PEOPLE[who]))
        elif person is None or who in revoked:
            continue
        elif operation == "roles":
            await registry.set_roles(person.did, [f"role{len(heads)}"])
        elif operation == "rotate":
            newer = person.rotate_agreement(issued_at=person.issued_at + len(heads))
            enrolled[who] = newer
            await registry.rotate_agreement(
                person.did,
                agreement_key=newer.agreement.public,
                agreement_statement=newer.agreement_statement(issued_at=newer.issued_at),
                agreement_issued_at=newer.issued_at,
            )
        elif operation == "certificate":
            await registry.certificate_issued(person.did, fingerprint="ab" * 32, not_after=1.0)
        else:
            revoked.add(who)
            await registry.revoke(person.did, at=float(len(heads)))
        heads.append(registry.head())
        for agent in enrolled.values():
            for earlier in heads:
                proof = registry.proof_for(agent.did, known_size=earlier.size)
                snapshot, head = verify_registry_proof(
                    agent.did, proof, public_key=key.public_key, last_head=earlier
                )
                assert head == heads[-1]
                assert snapshot["agreement_key"] == agent.agreement.public.hex()
        for index, agent in enrolled.items():
            if index not in revoked:
                found = registry.answer(
                    agent.did,
                    known_size=None if verifier.last_head is None else verifier.last_head.size,
                )
                assert found is not None
                snapshot, proof = found
                answer = {k: snapshot[k] for k in snapshot} | {"registry": proof}
                verifier.check(agent.did, answer)
    await registry.verify_against_directory()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_STEPS)
def test_every_served_proof_verifies_against_every_earlier_head(
    steps: list[tuple[str, int]],
) -> None:
    asyncio.run(_run(steps))
