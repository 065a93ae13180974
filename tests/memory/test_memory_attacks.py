"""Attacks on shared memory: by a compromised coordinator, and by a time-limited admin.

docs/MEMORY.md says a compromised coordinator cannot read a value or a data key. HPKE
base mode does not authenticate who wrapped a key, so a coordinator could announce a
"rotation" and hand the writer a key of its own making. Wrapped keys therefore carry,
inside the seal, the signature of the owner or admin who wrapped them, and an admin's
certificate signed by the owner; the owner is the one the memory id names, so nothing the
coordinator says about owner or admins is trusted. The first tests make that attack
against the real client: plainly, listing a key of the coordinator's own as an admin, and
claiming to be the owner.

Only the owner appoints admins, and an admin grantee whose grant expires must not be able
to outlive it by granting itself, or an agent it controls, a longer grant (tested against
the real service and stores). Keys an admin wrapped while it was one keep opening after
it is revoked (end to end).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _fixtures import BACKENDS, T0, World, open_backend

from _deployment import MakeDeployment
from trustwire.errors import (
    MemoryAccessDenied,
    MemoryNotFound,
    SegmentRejected,
    TrustwireError,
    VersionConflict,
)
from trustwire.identity.keys import AgentIdentity
from trustwire.memory.client import SharedMemories
from trustwire.memory.crypto import certify_admin, open_segment, wrap_key

SECRET = b"memory-attack-canary-7c2e"


class RotatingCoordinator:
    """A compromised coordinator: answers the first write with "the epoch moved on" and
    offers, as the new epoch's key, a data key it made itself."""

    def __init__(self, owner: AgentIdentity, *, claim: str | None = None) -> None:
        self.owner = owner
        self.claim = claim
        self.identity = AgentIdentity.generate("coordinator")
        self.evil_key = os.urandom(32)
        self.memory: dict[str, Any] = {}
        self.keys: list[dict[str, Any]] = []
        self.written: list[dict[str, Any]] = []

    async def call(self, method: str, path: str, *, query: Any = None, body: Any = None) -> Any:
        if method == "POST":
            self.keys.append({**body["wrappedKey"], "agent": self.owner.did})
            self.memory = {
                "id": body["id"],
                "owner": self.owner.did,
                "type": "kv",
                "createdAt": 1,
                "expiresAt": None,
                "epoch": 0,
                "quotas": {"maxBytes": 1 << 20, "maxSegments": 100},
                "grants": [],
                "usage": {"bytes": 0, "segments": 0},
            }
            return self.memory
        if method == "GET" and path.endswith("/keys"):
            return {"keys": self.keys}
        if method == "GET" and "/segments/" in path:
            raise MemoryNotFound("no such segment")
        if method == "GET":
            return self.memory
        if method == "PUT":
            self.written.append(body["segment"])
            if self.memory["epoch"] == 0:
                self.memory = {**self.memory, "epoch": 1}
                certificate = None
                if self.claim == "owner":
                    # It names a key of its own as the owner, and signs as that owner.
                    self.memory = {**self.memory, "owner": self.identity.did}
                if self.claim == "admin":
                    # The memory's metadata comes from the coordinator: it lists a key of
                    # its own as an admin (a did:key needs no enrolment to verify).
                    admin = {
                        "agent": self.identity.did,
                        "level": "admin",
                        "expiresAt": None,
                        "grantedBy": self.owner.did,
                    }
                    self.memory = {**self.memory, "grants": [admin]}
                    # It cannot sign as the owner: the best it has is a certificate it
                    # signed itself.
                    certificate = certify_admin(
                        self.identity, memory_id=self.memory["id"], admin_did=self.identity.did
                    )
                forged = wrap_key(
                    self.evil_key,
                    memory_id=self.memory["id"],
                    epoch=1,
                    agent_did=self.owner.did,
                    agent_public=self.owner.agreement.public,
                    # The coordinator holds no owner or admin key: it signs as itself.
                    wrapper=self.identity,
                    wrapper_certificate=certificate,
                )
                self.keys.append(forged.to_json())
                conflict = VersionConflict("the key epoch moved on")
                conflict.current_epoch = 1  # type: ignore[attr-defined]
                raise conflict
            return {"key": body["segment"]["key"], "version": body["segment"]["version"]}
        raise AssertionError(f"unexpected {method} {path}")


async def _no_peers(name: str) -> tuple[str, bytes]:
    raise AssertionError("no peer lookups expected")


async def test_a_coordinator_cannot_make_a_writer_use_a_data_key_of_its_own() -> None:
    await _attack(claim=None)


async def test_a_coordinator_cannot_make_a_writer_use_its_key_by_claiming_an_admin() -> None:
    await _attack(claim="admin")


async def test_a_coordinator_cannot_make_a_writer_use_its_key_by_claiming_the_owner() -> None:
    await _attack(claim="owner")


async def _attack(*, claim: str | None) -> None:
    owner = AgentIdentity.generate("owner")
    coordinator = RotatingCoordinator(owner, claim=claim)
    memory = await SharedMemories(coordinator, owner, _no_peers).create()

    try:
        await memory.write("plan", SECRET)
    except TrustwireError:
        # Refused to adopt the forged key: the attack failed. Only the first write, under
        # the owner's own epoch-0 key, reached the coordinator.
        assert [s["epoch"] for s in coordinator.written] == [0]
        return

    leaked = []
    for segment in coordinator.written:
        try:
            opened = open_segment(
                segment, memory_id=memory.id, data_key_for=lambda _e: coordinator.evil_key
            )
        except SegmentRejected:
            continue
        leaked.append(opened.value)
    assert SECRET not in leaked, "the coordinator decrypted a value with its own key"


# -- grants: a time-limited admin must not outlive its time ----------------------------


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    store = await open_backend(request.param, tmp_path)
    try:
        yield World(store)
    finally:
        await store.close()


async def test_only_the_owner_can_appoint_an_admin(world: World) -> None:
    owner, admin, friend = world.add("owner"), world.add("admin"), world.add("friend")
    memory = await world.create(owner)
    await world.grant(owner, memory, admin, "admin")
    for grantee in (friend, admin):
        with pytest.raises(MemoryAccessDenied, match="owner"):
            await world.grant(admin, memory, grantee, "admin")
        assert (world.last().kind, world.last().reason) == ("memory.denied", "not_owner")
    assert (await world.store.get(memory.id)).grant_of(friend.did) is None  # type: ignore[union-attr]
    await world.grant(admin, memory, friend, "write")  # lesser grants an admin may make


async def test_a_time_limited_admin_cannot_make_itself_or_others_permanent(world: World) -> None:
    owner, admin, friend = world.add("owner"), world.add("admin"), world.add("friend")
    memory = await world.create(owner)
    await world.grant(owner, memory, admin, "admin", expires_at=T0 + 100)

    # Renewing its own grant (as a writer: only the owner makes admins) without, or past,
    # its expiry.
    for expires_at in (None, T0 + 101):
        with pytest.raises(ValueError, match="expir"):
            await world.grant(admin, memory, admin, "write", expires_at=expires_at)
    # Handing an agent it controls a grant that outlives its own.
    for expires_at in (None, T0 + 1000):
        with pytest.raises(ValueError, match="expir"):
            await world.grant(admin, memory, friend, "write", expires_at=expires_at)
    assert (await world.store.get(memory.id)).grant_of(friend.did) is None  # type: ignore[union-attr]

    # Within its own time it may still grant, and the owner may grant anything.
    await world.grant(admin, memory, friend, "write", expires_at=T0 + 100)
    await world.grant(owner, memory, friend, "admin")
    world.clock.advance(100)
    with pytest.raises(MemoryAccessDenied):
        await world.service.get(admin.did, memory.id)


# -- keys wrapped by an admin that is no longer one -----------------------------------


async def test_keys_an_admin_wrapped_still_open_after_the_admin_is_revoked(
    make_deployment: MakeDeployment,
) -> None:
    # Carol (an admin) grants bob; alice (the owner) later revokes carol. Bob's keys for
    # the epochs before were wrapped and signed by carol: a fresh client of bob's must
    # still open them, or bob loses every value written before carol's revocation.
    deployment = await make_deployment()
    alice = await deployment.connect("alice")
    carol = await deployment.connect("carol")
    memory = await alice.memory.create()
    await memory.write("plan", b"written at epoch 0")
    await memory.grant("carol", "admin")
    await (await carol.memory.open(memory.id)).grant("bob", "read")
    await memory.revoke("carol")

    bob = await deployment.connect("bob")
    value = await (await bob.memory.open(memory.id)).read("plan")

    assert value.data == b"written at epoch 0"
