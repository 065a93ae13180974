"""The shared-memory service: who may do what, when, within which limits, and what is
recorded. Every test runs against both store backends with an injected clock."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _fixtures import (
    ALLOW_MEMORY,
    BACKENDS,
    T0,
    World,
    details_text,
    make_agent,
    open_backend,
    policy,
    seal,
    wrapped,
)

from trustwire.errors import (
    MemoryAccessDenied,
    MemoryExpired,
    MemoryNotFound,
    MemoryQuotaExceeded,
    SegmentRejected,
    StoreError,
    VersionConflict,
)
from trustwire.events import EventKind
from trustwire.memory.model import MemoryLimits, QuotaExceeded, StaleWrite, Usage, key_fingerprint
from trustwire.memory.service import SegmentNotFound
from trustwire.memory.store import InMemoryMemoryStore, MemoryStore

MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture(params=BACKENDS)
async def make_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeWorld]:
    stores: list[MemoryStore] = []

    async def make(**options: Any) -> World:
        store = await open_backend(request.param, tmp_path / str(len(stores)))
        stores.append(store)
        return World(store, **options)

    for index in range(4):
        (tmp_path / str(index)).mkdir()
    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def world(make_world: MakeWorld) -> World:
    return await make_world()


def denial(world: World) -> tuple[str | None, dict[str, Any]]:
    event = world.last()
    assert event.kind is EventKind.MEMORY_DENIED
    return event.reason, dict(event.details)


# -- the authorization matrix --------------------------------------------------------------


ROLES = ("owner", "read", "write", "admin", "stranger")
# operation -> the roles allowed to perform it
ALLOWED = {
    "get": {"owner", "read", "write", "admin"},
    "keys": {"owner", "read", "write", "admin"},
    "list_segments": {"owner", "read", "write", "admin"},
    "get_segment": {"owner", "read", "write", "admin"},
    "put_segment": {"owner", "write", "admin"},
    "delete_segment": {"owner", "write", "admin"},
    "grant": {"owner", "admin"},
    "revoke": {"owner", "admin"},
    "destroy": {"owner", "admin"},
}
SUCCESS_KIND = {
    "get": EventKind.MEMORY_READ,
    "keys": EventKind.MEMORY_READ,
    "list_segments": EventKind.MEMORY_READ,
    "get_segment": EventKind.MEMORY_READ,
    "put_segment": EventKind.MEMORY_WRITTEN,
    "delete_segment": EventKind.MEMORY_DELETED,
    "grant": EventKind.MEMORY_GRANTED,
    "revoke": EventKind.MEMORY_REVOKED,
    "destroy": EventKind.MEMORY_DESTROYED,
}


@pytest.mark.parametrize("operation", sorted(ALLOWED))
@pytest.mark.parametrize("role", ROLES)
async def test_authorization_matrix(role: str, operation: str) -> None:
    # The rules live in the service, so one backend suffices here; the stores'
    # own atomicity is covered by their conformance tests on every backend.
    world = World(InMemoryMemoryStore())
    owner = world.add("owner")
    memory = await world.create(owner)
    agents = {"owner": owner}
    for level in ("read", "write", "admin"):
        agents[level] = world.add(f"{level}-grantee")
        memory = await world.grant(owner, memory, agents[level], level)
    agents["stranger"] = world.add("stranger")
    bystander = world.add("bystander")
    newcomer = world.add("newcomer")
    memory = await world.grant(owner, memory, bystander, "read")
    await world.write(owner, memory, "existing")
    caller = agents[role]
    service = world.service

    async def perform() -> None:
        if operation == "get":
            await service.get(caller.did, memory.id)
        elif operation == "keys":
            await service.keys_for(caller.did, memory.id)
        elif operation == "list_segments":
            await service.list_segments(caller.did, memory.id)
        elif operation == "get_segment":
            await service.get_segment(caller.did, memory.id, "existing")
        elif operation == "put_segment":
            await world.write(caller, memory, "new")
        elif operation == "delete_segment":
            await service.delete_segment(caller.did, memory.id, "existing", expected_version=1)
        elif operation == "grant":
            await world.grant(caller, memory, newcomer, "read")
        elif operation == "revoke":
            await world.revoke(caller, memory, bystander)
        else:
            await service.destroy(caller.did, memory.id)

    if role in ALLOWED[operation]:
        await perform()
        assert world.last().kind is SUCCESS_KIND[operation]
        assert world.last().agent == caller.did
    else:
        before = await world.store.get(memory.id)
        with pytest.raises(MemoryAccessDenied):
            await perform()
        reason, details = denial(world)
        assert reason == ("no_grant" if role == "stranger" else "insufficient_level")
        assert details["memory"] == memory.id
        assert await world.store.get(memory.id) == before


async def test_a_grant_stops_working_exactly_at_its_expiry(world: World) -> None:
    owner, bob = world.add("owner"), world.add("bob")
    memory = await world.create(owner)
    await world.grant(owner, memory, bob, "write", expires_at=T0 + 100)
    world.clock.advance(99.999)
    await world.service.get(bob.did, memory.id)
    await world.write(bob, memory, "k")
    world.clock.advance(0.001)  # now == expires_at
    with pytest.raises(MemoryAccessDenied):
        await world.service.get(bob.did, memory.id)
    assert denial(world)[0] == "grant_expired"
    with pytest.raises(MemoryAccessDenied):
        await world.service.keys_for(bob.did, memory.id)
    with pytest.raises(MemoryAccessDenied):
        await world.write(bob, memory, "k", expected=1)
    assert await world.service.list_for(bob.did) == []


async def test_a_revoked_grant_gets_nothing(world: World) -> None:
    owner, bob = world.add("owner"), world.add("bob")
    memory = await world.create(owner)
    await world.grant(owner, memory, bob, "write")
    await world.write(bob, memory, "k")
    await world.revoke(owner, memory, bob)
    for attempt in (
        world.service.get(bob.did, memory.id),
        world.service.keys_for(bob.did, memory.id),
        world.service.get_segment(bob.did, memory.id, "k"),
        world.service.list_segments(bob.did, memory.id),
        world.write(bob, memory, "k", expected=1),
    ):
        with pytest.raises(MemoryAccessDenied):
            await attempt
        assert denial(world)[0] == "no_grant"
    assert await world.store.wrapped_keys(memory.id, bob.did) == []


async def test_a_revoked_agent_is_refused_at_once_even_with_a_grant(world: World) -> None:
    owner, bob = world.add("owner"), world.add("bob")
    memory = await world.create(owner)
    await world.grant(owner, memory, bob, "admin")
    world.revoke_agent(bob)
    with pytest.raises(MemoryAccessDenied):
        await world.service.get(bob.did, memory.id)
    assert denial(world)[0] == "agent_revoked"
    with pytest.raises(MemoryAccessDenied):
        await world.service.list_for(bob.did)
    world.revoke_agent(owner)
    with pytest.raises(MemoryAccessDenied):
        await world.service.destroy(owner.did, memory.id)
    assert denial(world)[0] == "agent_revoked"


async def test_an_unknown_agent_is_refused(world: World) -> None:
    owner = world.add("owner")
    memory = await world.create(owner)
    outsider = make_agent("outsider")
    with pytest.raises(MemoryAccessDenied):
        await world.service.get(outsider.did, memory.id)
    assert denial(world)[0] == "unknown_agent"
    with pytest.raises(MemoryAccessDenied):
        await world.service.create(outsider.did, wrapped_key=wrapped(outsider.did, 0))


async def test_policy_deny_wins_over_a_grant(make_world: MakeWorld) -> None:
    rules = ALLOW_MEMORY + (
        "      - id: no-reading-for-bob\n"
        "        effect: deny\n"
        "        from: {agents: [bob]}\n"
        '        to: "*"\n'
        "        actions: [memory.read]\n"
    )
    world = await make_world(engine=policy(rules))
    owner, bob = world.add("owner"), world.add("bob")
    memory = await world.create(owner)
    await world.grant(owner, memory, bob, "admin")
    with pytest.raises(MemoryAccessDenied):
        await world.service.get(bob.did, memory.id)
    reason, details = denial(world)
    assert reason == "policy_denied"
    assert details["rule"] == "no-reading-for-bob"
    assert details["action"] == "memory.read"
    assert await world.service.list_for(bob.did) == []
    # memory.write is still allowed to him.
    await world.write(bob, memory, "k")


async def test_default_deny_refuses_even_the_owner(make_world: MakeWorld) -> None:
    permissive = await make_world()
    owner = permissive.add("owner")
    memory = await permissive.create(owner)
    strict = World(permissive.store, directory=permissive.directory, engine=policy(""))
    with pytest.raises(MemoryAccessDenied):
        await strict.service.get(owner.did, memory.id)
    with pytest.raises(MemoryAccessDenied):
        await strict.create(owner)
    assert denial(strict)[0] == "policy_denied"


async def test_unknown_memory_is_not_found(world: World) -> None:
    owner = world.add("owner")
    with pytest.raises(MemoryNotFound):
        await world.service.get(owner.did, "7b0c8a70-64d6-4f7c-9d43-4a0e4a1cbd2f")
    assert denial(world)[0] == "not_found"
    with pytest.raises(ValueError, match="UUID"):
        await world.service.get(owner.did, "../../etc/passwd")


# -- expiry and purge ----------------------------------------------------------------------


async def test_an_expired_memory_is_refused_then_purged(world: World) -> None:
    owner, bob = world.add("owner"), world.add("bob")
    memory = await world.create(owner, expires_at=T0 + 60)
    await world.grant(owner, memory, bob, "read")
    await world.write(owner, memory, "k", value=b"x" * 100)
    world.clock.advance(59.999)
    await world.service.get(bob.did, memory.id)
    world.clock.advance(0.001)
    for caller in (owner, bob):
        with pytest.raises(MemoryExpired):
            await world.service.get(caller.did, memory.id)
        assert denial(world)[0] == "memory_expired"
    with pytest.raises(MemoryExpired):
        await world.write(owner, memory, "k", expected=1)
    assert await world.service.list_for(owner.did) == []
    assert await world.service.purge_expired() == [memory.id]
    assert world.last().kind is EventKind.MEMORY_PURGED
    assert world.last().details["memory"] == memory.id
    with pytest.raises(MemoryNotFound):
        await world.service.get(owner.did, memory.id)
    assert await world.store.agent_usage(owner.did) == Usage()


async def test_create_refuses_an_expiry_in_the_past(world: World) -> None:
    owner = world.add("owner")
    with pytest.raises(ValueError, match="future"):
        await world.create(owner, expires_at=T0)
    assert denial(world)[0] == "invalid_request"


class FlakyStore:
    """Delegates to a real store, but the first ``failures`` purges raise StoreError."""

    def __init__(self, store: MemoryStore, failures: int) -> None:
        self._store = store
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def purge_expired(self, now: float) -> list[str]:
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreError("disk on fire")
        return await self._store.purge_expired(now)


async def test_the_purger_survives_store_errors(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    owner = world.add("owner")
    memory = await world.create(owner, expires_at=T0 + 1)
    world.clock.advance(2)
    flaky = FlakyStore(world.store, failures=2)
    world.service.store = flaky  # type: ignore[assignment]
    caplog.set_level(logging.WARNING, logger="trustwire.memory.service")
    purged = world.stream.subscribe(kinds=[EventKind.MEMORY_PURGED])
    task = asyncio.create_task(world.service.run_purger(0.001))
    try:
        async with asyncio.timeout(10):
            event = await anext(aiter(purged))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        purged.close()
    assert event.details["memory"] == memory.id
    assert flaky.calls >= 3
    assert "disk on fire" in caplog.text
    assert await world.store.get(memory.id) is None


async def test_the_purger_refuses_a_non_positive_interval(world: World) -> None:
    with pytest.raises(ValueError):
        await world.service.run_purger(0)


# -- quotas --------------------------------------------------------------------------------


async def test_memory_quotas_are_enforced_with_a_clear_error(world: World) -> None:
    owner = world.add("owner")
    memory = await world.create(owner, max_bytes=1000, max_segments=2)
    await world.write(owner, memory, "a", value=b"x" * 584)  # 600 bytes of ciphertext
    with pytest.raises(MemoryQuotaExceeded) as caught:
        await world.write(owner, memory, "b", value=b"x" * 401)  # 417 more
    assert str(caught.value) == (
        "quota memory.maxBytes exceeded: 600 in use + 417 requested > limit 1000"
    )
    reason, details = denial(world)
    assert (reason, details["quota"]) == ("quota_exceeded", "memory.maxBytes")
    await world.write(owner, memory, "b", value=b"x")
    with pytest.raises(QuotaExceeded) as segments:
        await world.write(owner, memory, "c", value=b"x")
    assert (segments.value.quota, segments.value.limit) == ("memory.maxSegments", 2)


async def test_agent_quotas_count_what_it_wrote_across_memories(make_world: MakeWorld) -> None:
    world = await make_world(limits=MemoryLimits(agent_max_bytes=1000, agent_max_segments=3))
    owner, bob = world.add("owner"), world.add("bob")
    first, second = await world.create(owner), await world.create(owner)
    for memory in (first, second):
        await world.grant(owner, memory, bob, "write")
    await world.write(bob, first, "a", value=b"x" * 584)
    with pytest.raises(QuotaExceeded) as caught:
        await world.write(bob, second, "a", value=b"x" * 400)
    assert (caught.value.quota, caught.value.used, caught.value.limit) == (
        "agent.maxBytes",
        600,
        1000,
    )
    await world.write(owner, second, "a", value=b"x" * 584)  # the owner has its own account
    await world.write(bob, second, "b")
    await world.write(bob, second, "c")
    with pytest.raises(QuotaExceeded, match=r"agent\.maxSegments"):
        await world.write(bob, first, "d")


async def test_memories_owned_are_limited(make_world: MakeWorld) -> None:
    world = await make_world(limits=MemoryLimits(max_memories_owned=2))
    owner = world.add("owner")
    await world.create(owner)
    await world.create(owner)
    with pytest.raises(QuotaExceeded, match=r"agent\.maxMemories"):
        await world.create(owner)
    assert denial(world)[0] == "quota_exceeded"


async def test_requested_quotas_cannot_exceed_the_limits(world: World) -> None:
    owner = world.add("owner")
    with pytest.raises(ValueError, match=r"quotas\.maxBytes"):
        await world.create(owner, max_bytes=world.limits.max_bytes + 1)
    with pytest.raises(ValueError, match=r"quotas\.maxSegments"):
        await world.create(owner, max_segments=world.limits.max_segments + 1)
    memory = await world.create(owner, max_bytes=10, max_segments=1)
    assert (memory.quotas.max_bytes, memory.quotas.max_segments) == (10, 1)


# -- compare-and-set -----------------------------------------------------------------------


async def test_a_stale_version_is_refused(world: World) -> None:
    owner = world.add("owner")
    memory = await world.create(owner)
    await world.write(owner, memory, "k")
    await world.write(owner, memory, "k", expected=1)
    with pytest.raises(VersionConflict) as caught:
        await world.write(owner, memory, "k", expected=1)
    assert caught.value.current_version == 2  # type: ignore[attr-defined]
    assert denial(world)[0] == "version_conflict"
    with pytest.raises(VersionConflict):
        await world.service.delete_segment(owner.did, memory.id, "k", expected_version=1)
    await world.service.delete_segment(owner.did, memory.id, "k", expected_version=2)
    with pytest.raises(SegmentNotFound):
        await world.service.delete_segment(owner.did, memory.id, "k", expected_version=2)
    with pytest.raises(SegmentNotFound):
        await world.service.get_segment(owner.did, memory.id, "k")


async def test_two_concurrent_writers_on_one_version_one_conflicts(world: World) -> None:
    owner, bob = world.add("owner"), world.add("bob")
    memory = await world.create(owner)
    await world.grant(owner, memory, bob, "write")
    results = await asyncio.gather(
        world.write(owner, memory, "k", value=b"mine"),
        world.write(bob, memory, "k", value=b"his"),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, VersionConflict)]
    assert len(conflicts) == 1 and len(results) == 2
    segment = await world.service.get_segment(owner.did, memory.id, "k")
    assert segment.version == 1


async def test_the_version_must_follow_the_expected_one(world: World) -> None:
    owner = world.add("owner")
    memory = await world.create(owner)
    segment = seal(memory.id, owner, "k", version=5)
    with pytest.raises(ValueError, match="expectedVersion"):
        await world.service.put_segment(owner.did, memory.id, "k", segment, expected_version=0)


# -- segment checks ------------------------------------------------------------------------


async def test_a_segment_written_in_someone_elses_name_is_refused(world: World) -> None:
    owner, mallory = world.add("owner"), world.add("mallory")
    memory = await world.create(owner)
    await world.grant(owner, memory, mallory, "write")
    forged = seal(memory.id, owner, "k")  # validly signed by the owner, replayed by mallory
    with pytest.raises(MemoryAccessDenied):
        await world.service.put_segment(mallory.did, memory.id, "k", forged, expected_version=0)
    assert denial(world)[0] == "writer_mismatch"
    assert await world.store.get_segment(memory.id, "k") is None


@pytest.mark.parametrize("tamper", ["ciphertext", "hash", "signature", "foreign-signature"])
async def test_a_tampered_segment_is_refused_before_it_is_stored(world: World, tamper: str) -> None:
    owner = world.add("owner")
    memory = await world.create(owner)
    segment = seal(memory.id, owner, "k")
    if tamper == "ciphertext":
        flipped = bytes([segment.ciphertext[0] ^ 1]) + segment.ciphertext[1:]
        segment = dataclasses.replace(segment, ciphertext=flipped)
        reason = "bad_hash"
    elif tamper == "hash":
        segment = dataclasses.replace(segment, hash=bytes(32))
        reason = "bad_hash"
    elif tamper == "signature":
        segment = dataclasses.replace(
            segment, signature=bytes([segment.signature[0] ^ 1]) + segment.signature[1:]
        )
        reason = "bad_signature"
    else:
        other = make_agent("other")
        signed_by_other = seal(memory.id, other, "k")
        segment = dataclasses.replace(segment, signature=signed_by_other.signature)
        reason = "bad_signature"
    with pytest.raises(SegmentRejected):
        await world.service.put_segment(owner.did, memory.id, "k", segment, expected_version=0)
    assert denial(world)[0] == reason
    assert await world.store.get_segment(memory.id, "k") is None


async def test_a_segment_moved_to_another_key_or_memory_is_refused(world: World) -> None:
    owner = world.add("owner")
    memory, other = await world.create(owner), await world.create(owner)
    segment = seal(memory.id, owner, "k")
    with pytest.raises(ValueError, match="path"):
        await world.service.put_segment(
            owner.did, memory.id, "other-key", segment, expected_version=0
        )
    with pytest.raises(SegmentRejected):
        await world.service.put_segment(owner.did, other.id, "k", segment, expected_version=0)


# -- grants, revocation and epochs ---------------------------------------------------------


async def test_grants_go_only_to_enrolled_active_agents(world: World) -> None:
    owner, bob = world.add("owner"), world.add("bob")
    memory = await world.create(owner)
    stranger = make_agent("stranger")
    with pytest.raises(ValueError, match="enrolled"):
        await world.grant(owner, memory, stranger, "read")
    assert denial(world)[0] == "grantee_unknown"
    world.revoke_agent(bob)
    with pytest.raises(ValueError, match="enrolled"):
        await world.grant(owner, memory, bob, "read")
    with pytest.raises(ValueError, match="owner"):
        await world.grant(owner, memory, owner, "read")


async def test_a_grant_must_carry_a_key_for_every_epoch(world: World) -> None:
    owner, bob, carol = world.add("owner"), world.add("bob"), world.add("carol")
    memory = await world.create(owner)
    await world.grant(owner, memory, bob, "read")
    await world.revoke(owner, memory, bob)
    with pytest.raises(ValueError, match="each epoch"):
        await world.service.grant(
            owner.did, memory.id, carol.did, "read", wrapped_keys=[wrapped(carol.did, 1)]
        )
    with pytest.raises(ValueError, match="agent being granted"):
        await world.service.grant(
            owner.did,
            memory.id,
            carol.did,
            "read",
            wrapped_keys=[wrapped(carol.did, 0), wrapped(bob.did, 1)],
        )
    with pytest.raises(ValueError, match="future"):
        await world.grant(owner, memory, carol, "read", expires_at=T0)
    updated = await world.grant(owner, memory, carol, "read")
    assert [(g.agent, g.granted_by) for g in updated.grants] == [(carol.did, owner.did)]


async def test_revoke_needs_the_next_epoch_and_keys_for_exactly_the_rest(world: World) -> None:
    owner, bob, carol = world.add("owner"), world.add("bob"), world.add("carol")
    memory = await world.create(owner)
    await world.grant(owner, memory, bob, "read")
    await world.grant(owner, memory, carol, "read")
    service = world.service
    with pytest.raises(VersionConflict) as caught:
        await service.revoke(
            owner.did, memory.id, bob.did, epoch=0, wrapped_keys=[wrapped(owner.did, 0)]
        )
    assert caught.value.current_epoch == 0  # type: ignore[attr-defined]
    assert denial(world)[0] == "epoch_conflict"
    for keys in (
        [wrapped(owner.did, 1)],  # carol left out
        [wrapped(owner.did, 1), wrapped(carol.did, 1), wrapped(bob.did, 1)],  # bob kept in
        [wrapped(carol.did, 1)],  # the owner left out
    ):
        with pytest.raises(ValueError):
            await service.revoke(owner.did, memory.id, bob.did, epoch=1, wrapped_keys=keys)
        assert denial(world)[0] == "invalid_request"
    unchanged = await world.store.get(memory.id)
    assert unchanged is not None and unchanged.epoch == 0 and len(unchanged.grants) == 2
    stranger = world.add("stranger")
    with pytest.raises(ValueError, match="no grant"):
        await world.revoke(owner, memory, stranger)
    updated = await world.revoke(owner, memory, bob)
    assert updated.epoch == 1
    # Writes at the old epoch are refused from now on; the new epoch works.
    with pytest.raises(StaleWrite) as stale:
        await world.write(owner, memory, "k", epoch=0)
    assert stale.value.current_epoch == 1
    assert denial(world)[0] == "epoch_conflict"
    stored = await world.write(owner, memory, "k", epoch=1)
    assert stored.epoch == 1
    assert [k.epoch for k in await service.keys_for(carol.did, memory.id)] == [0, 1]


async def test_an_admin_grantee_may_grant_revoke_and_destroy(world: World) -> None:
    owner, admin, bob = world.add("owner"), world.add("admin"), world.add("bob")
    memory = await world.create(owner)
    await world.grant(owner, memory, admin, "admin")
    updated = await world.grant(admin, memory, bob, "write")
    assert updated.grant_of(bob.did) is not None
    assert updated.grant_of(bob.did).granted_by == admin.did  # type: ignore[union-attr]
    await world.revoke(admin, memory, bob)
    await world.service.destroy(admin.did, memory.id)
    with pytest.raises(MemoryNotFound):
        await world.service.get(owner.did, memory.id)


async def test_keys_for_returns_only_the_callers_keys(world: World) -> None:
    owner, bob = world.add("owner"), world.add("bob")
    memory = await world.create(owner)
    await world.grant(owner, memory, bob, "read")
    keys = await world.service.keys_for(bob.did, memory.id)
    assert [(k.agent, k.epoch) for k in keys] == [(bob.did, 0)]


async def test_list_shows_owned_and_actively_granted_memories(world: World) -> None:
    owner, bob = world.add("owner"), world.add("bob")
    mine = await world.create(bob)
    shared = await world.create(owner)
    lapsing = await world.create(owner)
    await world.create(owner)  # not shared with bob
    await world.grant(owner, shared, bob, "read")
    await world.grant(owner, lapsing, bob, "read", expires_at=T0 + 5)
    world.clock.advance(5)
    assert {m.id for m in await world.service.list_for(bob.did)} == {mine.id, shared.id}
    assert world.last().kind is EventKind.MEMORY_READ
    assert world.last().details["count"] == 2


# -- events --------------------------------------------------------------------------------


async def test_every_decision_is_recorded_and_no_event_holds_keys_or_values(world: World) -> None:
    owner, bob, eve = world.add("owner"), world.add("bob"), world.add("eve")
    canary_key = "payroll/SECRET-KEY-NAME-4711"
    canary_value = b"PLAINTEXT-CANARY-0815"
    memory = await world.create(owner, type="notes")
    granted = await world.grant(owner, memory, bob, "write")
    written = await world.write(owner, memory, canary_key, value=canary_value)
    await world.service.get_segment(bob.did, memory.id, canary_key)
    await world.service.list_segments(bob.did, memory.id)
    await world.service.keys_for(bob.did, memory.id)
    with pytest.raises(MemoryAccessDenied):
        await world.service.get_segment(eve.did, memory.id, canary_key)
    with pytest.raises(VersionConflict):
        await world.write(bob, memory, canary_key, value=canary_value)
    await world.service.delete_segment(bob.did, memory.id, canary_key, expected_version=1)
    await world.revoke(owner, granted, bob)
    await world.service.destroy(owner.did, memory.id)
    kinds = world.kinds()
    assert kinds == [
        "memory.created",
        "memory.granted",
        "memory.written",
        "memory.read",
        "memory.read",
        "memory.read",
        "memory.denied",
        "memory.denied",
        "memory.deleted",
        "memory.revoked",
        "memory.destroyed",
    ]
    text = details_text(world.events)
    keys = await world.store.wrapped_keys(memory.id, owner.did)  # gone with the memory
    assert keys == []
    for secret in (
        canary_key,
        "SECRET-KEY-NAME",
        canary_value.decode(),
        base64.b64encode(canary_value).decode(),
        base64.b64encode(written.ciphertext).decode(),
        base64.b64encode(written.signature).decode(),
        base64.b64encode(written.hash).decode(),
        written.ciphertext.hex(),
    ):
        assert secret not in text
    fingerprint = key_fingerprint(memory.id, canary_key)
    assert fingerprint in text
    segment_events = [e for e in world.events if e.details.get("key") is not None]
    assert {e.details["key"] for e in segment_events} == {fingerprint}
    assert all(event.details.get("memory") == memory.id for event in world.events)
