"""Conformance of the shared-memory stores, run once per backend (memory, SQLite).

Compare-and-set, atomic quota and usage accounting, atomic key rotation, destroy and
purge, and for SQLite: reopening keeps everything, foreign or damaged files are refused.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from _fixtures import (
    BACKENDS,
    T0,
    Agent,
    grant,
    make_agent,
    new_memory,
    open_backend,
    stored,
    wrapped,
)

from trustwire.errors import ConfigurationError, MemoryNotFound, StoreError
from trustwire.memory.model import QuotaExceeded, Quotas, StaleWrite, Usage
from trustwire.memory.store import MemoryStore, SqliteMemoryStore, open_memory_store
from trustwire.store.sqlite import open_sqlite_store

AGENT_LIMITS = {"agent_max_bytes": 64 * 1024 * 1024, "agent_max_segments": 50_000}

Opener = Callable[[], Awaitable[MemoryStore]]


@pytest.fixture(params=BACKENDS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[MemoryStore] = []

    async def open_() -> MemoryStore:
        store = await open_backend(request.param, tmp_path)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: Opener) -> MemoryStore:
    return await open_store()


@pytest.fixture
def alice() -> Agent:
    return make_agent("alice")


@pytest.fixture
def bob() -> Agent:
    return make_agent("bob")


@pytest.fixture
def carol() -> Agent:
    return make_agent("carol")


async def put(store: MemoryStore, memory_id: str, segment, expected: int = 0, **limits: int):  # type: ignore[no-untyped-def]
    return await store.put_segment(
        memory_id, segment, expected_version=expected, **{**AGENT_LIMITS, **limits}
    )


# -- memories ------------------------------------------------------------------------------


async def test_create_then_get_returns_the_same_memory(store: MemoryStore, alice: Agent) -> None:
    memory = new_memory(alice.did, expires_at=T0 + 60)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    assert await store.get(memory.id) == memory
    assert await store.get(new_memory(alice.did).id) is None
    keys = await store.wrapped_keys(memory.id, alice.did)
    assert [(k.agent, k.epoch) for k in keys] == [(alice.did, 0)]


async def test_create_refuses_past_the_owned_limit(store: MemoryStore, alice: Agent) -> None:
    for _ in range(2):
        await store.create(new_memory(alice.did), wrapped(alice.did, 0), max_owned=2)
    with pytest.raises(QuotaExceeded) as caught:
        await store.create(new_memory(alice.did), wrapped(alice.did, 0), max_owned=2)
    assert (caught.value.quota, caught.value.limit, caught.value.used) == (
        "agent.maxMemories",
        2,
        2,
    )
    assert len(await store.list_for(alice.did)) == 2


async def test_list_for_holds_owned_and_granted_memories(
    store: MemoryStore, alice: Agent, bob: Agent, carol: Agent
) -> None:
    mine = new_memory(alice.did, created_at=T0)
    shared = new_memory(bob.did, created_at=T0 + 1)
    other = new_memory(carol.did)
    for memory, owner in ((mine, alice), (shared, bob), (other, carol)):
        await store.create(memory, wrapped(owner.did, 0), max_owned=10)
    await store.grant(
        shared.id, grant(alice.did, by=bob.did), [wrapped(alice.did, 0)], max_grants=10
    )
    assert [m.id for m in await store.list_for(alice.did)] == [mine.id, shared.id]
    assert [m.id for m in await store.list_for(carol.did)] == [other.id]


# -- compare-and-set -----------------------------------------------------------------------


async def test_put_segment_is_compare_and_set_on_the_version(
    store: MemoryStore, alice: Agent
) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await put(store, memory.id, stored(memory.id, alice, "k", version=1), expected=0)
    with pytest.raises(StaleWrite) as caught:
        await put(store, memory.id, stored(memory.id, alice, "k", version=1), expected=0)
    assert caught.value.current_version == 1
    await put(store, memory.id, stored(memory.id, alice, "k", version=2), expected=1)
    with pytest.raises(StaleWrite) as caught:
        await put(store, memory.id, stored(memory.id, alice, "k", version=2), expected=1)
    assert caught.value.current_version == 2
    segment = await store.get_segment(memory.id, "k")
    assert segment is not None and segment.version == 2


async def test_put_segment_refuses_a_version_that_does_not_follow(
    store: MemoryStore, alice: Agent
) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    with pytest.raises(ValueError, match="expectedVersion"):
        await put(store, memory.id, stored(memory.id, alice, "k", version=3), expected=0)
    assert await store.get_segment(memory.id, "k") is None


async def test_put_segment_refuses_a_stale_epoch(
    store: MemoryStore, alice: Agent, bob: Agent
) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await store.grant(memory.id, grant(bob.did, by=alice.did), [wrapped(bob.did, 0)], max_grants=9)
    await store.revoke(
        memory.id, bob.did, new_epoch=1, wrapped_keys=[wrapped(alice.did, 1)], now=T0
    )
    with pytest.raises(StaleWrite) as caught:
        await put(store, memory.id, stored(memory.id, alice, "k", epoch=0))
    assert caught.value.current_epoch == 1
    await put(store, memory.id, stored(memory.id, alice, "k", epoch=1))


async def test_two_concurrent_writers_on_one_version_exactly_one_wins(
    store: MemoryStore, alice: Agent, bob: Agent
) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await store.grant(
        memory.id, grant(bob.did, "write", by=alice.did), [wrapped(bob.did, 0)], max_grants=9
    )
    results = await asyncio.gather(
        put(store, memory.id, stored(memory.id, alice, "k", size=20)),
        put(store, memory.id, stored(memory.id, bob, "k", size=30)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, StaleWrite) for r in results) == 1
    winner = await store.get_segment(memory.id, "k")
    assert winner is not None
    current = await store.get(memory.id)
    assert current is not None and current.usage == Usage(winner.size, 1)
    loser = bob if winner.writer == alice.did else alice
    assert await store.agent_usage(loser.did) == Usage()


async def test_two_sqlite_connections_racing_on_one_version_exactly_one_wins(
    tmp_path: Path, alice: Agent
) -> None:
    first = await SqliteMemoryStore.open(tmp_path / "m.db")
    second = await SqliteMemoryStore.open(tmp_path / "m.db")
    try:
        memory = new_memory(alice.did)
        await first.create(memory, wrapped(alice.did, 0), max_owned=10)
        for round_ in range(5):
            results = await asyncio.gather(
                put(first, memory.id, stored(memory.id, alice, f"k{round_}")),
                put(second, memory.id, stored(memory.id, alice, f"k{round_}")),
                return_exceptions=True,
            )
            assert sorted(type(r).__name__ for r in results) == ["Memory", "StaleWrite"]
        current = await second.get(memory.id)
        assert current is not None and current.usage == Usage(5 * 16, 5)
    finally:
        await first.close()
        await second.close()


async def test_delete_segment_is_compare_and_set(store: MemoryStore, alice: Agent) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await put(store, memory.id, stored(memory.id, alice, "k", size=40))
    with pytest.raises(StaleWrite) as caught:
        await store.delete_segment(memory.id, "k", expected_version=2)
    assert caught.value.current_version == 1
    assert await store.delete_segment(memory.id, "k", expected_version=1) is True
    assert await store.delete_segment(memory.id, "k", expected_version=1) is False
    current = await store.get(memory.id)
    assert current is not None and current.usage == Usage()
    assert await store.agent_usage(alice.did) == Usage()
    assert await store.list_segments(memory.id) == []


# -- quotas and usage ----------------------------------------------------------------------


async def test_usage_follows_every_write_overwrite_and_delete(
    store: MemoryStore, alice: Agent, bob: Agent
) -> None:
    first, second = new_memory(alice.did), new_memory(alice.did)
    for memory in (first, second):
        await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await store.grant(
        first.id, grant(bob.did, "write", by=alice.did), [wrapped(bob.did, 0)], max_grants=9
    )
    await put(store, first.id, stored(first.id, alice, "a", size=100))
    await put(store, second.id, stored(second.id, alice, "a", size=50))
    assert await store.agent_usage(alice.did) == Usage(150, 2)
    # Bob overwrites Alice's segment: the bytes move from her account to his.
    updated = await put(store, first.id, stored(first.id, bob, "a", size=70, version=2), expected=1)
    assert updated.usage == Usage(70, 1)
    assert await store.agent_usage(alice.did) == Usage(50, 1)
    assert await store.agent_usage(bob.did) == Usage(70, 1)
    info = await store.list_segments(first.id)
    assert [(i.key, i.version, i.writer, i.size) for i in info] == [("a", 2, bob.did, 70)]


async def test_memory_byte_quota_refuses_growth_and_changes_nothing(
    store: MemoryStore, alice: Agent
) -> None:
    memory = new_memory(alice.did, quotas=Quotas(max_bytes=100, max_segments=10))
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await put(store, memory.id, stored(memory.id, alice, "a", size=60))
    with pytest.raises(QuotaExceeded) as caught:
        await put(store, memory.id, stored(memory.id, alice, "b", size=41))
    assert (caught.value.quota, caught.value.limit, caught.value.used, caught.value.requested) == (
        "memory.maxBytes",
        100,
        60,
        41,
    )
    await put(store, memory.id, stored(memory.id, alice, "b", size=40))  # exactly at the quota
    current = await store.get(memory.id)
    assert current is not None and current.usage == Usage(100, 2)
    assert await store.agent_usage(alice.did) == Usage(100, 2)
    # Shrinking a segment fits even at the limit.
    await put(store, memory.id, stored(memory.id, alice, "b", size=16, version=2), expected=1)


async def test_memory_segment_quota(store: MemoryStore, alice: Agent) -> None:
    memory = new_memory(alice.did, quotas=Quotas(max_bytes=10_000, max_segments=2))
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await put(store, memory.id, stored(memory.id, alice, "a"))
    await put(store, memory.id, stored(memory.id, alice, "b"))
    with pytest.raises(QuotaExceeded, match=r"memory\.maxSegments"):
        await put(store, memory.id, stored(memory.id, alice, "c"))
    # Overwriting an existing key adds no segment.
    await put(store, memory.id, stored(memory.id, alice, "a", version=2), expected=1)


async def test_agent_quotas_sum_over_memories(store: MemoryStore, alice: Agent) -> None:
    first, second = new_memory(alice.did), new_memory(alice.did)
    for memory in (first, second):
        await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await put(store, first.id, stored(first.id, alice, "a", size=80), agent_max_bytes=120)
    with pytest.raises(QuotaExceeded) as caught:
        await put(store, second.id, stored(second.id, alice, "a", size=41), agent_max_bytes=120)
    assert caught.value.quota == "agent.maxBytes"
    assert (caught.value.used, caught.value.requested) == (80, 41)
    await put(store, second.id, stored(second.id, alice, "a"), agent_max_segments=2)
    with pytest.raises(QuotaExceeded, match=r"agent\.maxSegments"):
        await put(store, second.id, stored(second.id, alice, "b"), agent_max_segments=2)
    assert await store.agent_usage(alice.did) == Usage(96, 2)


# -- grants and rotation -------------------------------------------------------------------


async def test_grant_needs_a_key_for_every_epoch_and_replaces_old_keys(
    store: MemoryStore, alice: Agent, bob: Agent, carol: Agent
) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await store.grant(
        memory.id, grant(carol.did, by=alice.did), [wrapped(carol.did, 0)], max_grants=9
    )
    await store.revoke(
        memory.id, carol.did, new_epoch=1, wrapped_keys=[wrapped(alice.did, 1)], now=T0
    )
    with pytest.raises(ValueError, match="each epoch"):
        await store.grant(
            memory.id, grant(bob.did, by=alice.did), [wrapped(bob.did, 1)], max_grants=9
        )
    keys = [wrapped(bob.did, 0), wrapped(bob.did, 1)]
    await store.grant(memory.id, grant(bob.did, by=alice.did), keys, max_grants=9)
    renewed = [wrapped(bob.did, 0), wrapped(bob.did, 1)]
    updated = await store.grant(
        memory.id, grant(bob.did, "admin", by=alice.did), renewed, max_grants=9
    )
    assert [(g.agent, g.level) for g in updated.grants] == [(bob.did, "admin")]
    assert await store.wrapped_keys(memory.id, bob.did) == renewed


async def test_grant_count_is_limited(store: MemoryStore, alice: Agent) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    first = make_agent("first").did
    await store.grant(memory.id, grant(first, by=alice.did), [wrapped(first, 0)], max_grants=1)
    second = make_agent("second").did
    with pytest.raises(QuotaExceeded, match=r"memory\.maxGrants"):
        await store.grant(
            memory.id, grant(second, by=alice.did), [wrapped(second, 0)], max_grants=1
        )
    # Replacing an existing grant is not a new one.
    await store.grant(
        memory.id, grant(first, "write", by=alice.did), [wrapped(first, 0)], max_grants=1
    )


async def test_revoke_rotates_atomically(
    store: MemoryStore, alice: Agent, bob: Agent, carol: Agent
) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    for agent in (bob, carol):
        await store.grant(
            memory.id, grant(agent.did, by=alice.did), [wrapped(agent.did, 0)], max_grants=9
        )
    updated = await store.revoke(
        memory.id,
        bob.did,
        new_epoch=1,
        wrapped_keys=[wrapped(alice.did, 1), wrapped(carol.did, 1)],
        now=T0,
    )
    assert updated.epoch == 1
    assert [g.agent for g in updated.grants] == [carol.did]
    assert updated == await store.get(memory.id)
    assert await store.wrapped_keys(memory.id, bob.did) == []
    assert [k.epoch for k in await store.wrapped_keys(memory.id, carol.did)] == [0, 1]
    assert [k.epoch for k in await store.wrapped_keys(memory.id, alice.did)] == [0, 1]


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(lambda a, b, c: [wrapped(a, 1)], id="remaining-grantee-missing"),
        pytest.param(lambda a, b, c: [wrapped(c, 1)], id="owner-missing"),
        pytest.param(
            lambda a, b, c: [wrapped(a, 1), wrapped(b, 1), wrapped(c, 1)], id="revoked-included"
        ),
        pytest.param(lambda a, b, c: [wrapped(a, 1), wrapped(c, 2)], id="wrong-epoch"),
        pytest.param(lambda a, b, c: [wrapped(a, 1), wrapped(c, 1), wrapped(c, 1)], id="duplicate"),
    ],
)
async def test_a_wrong_rewrap_changes_nothing(
    store: MemoryStore,
    alice: Agent,
    bob: Agent,
    carol: Agent,
    keys: Callable[[str, str, str], list],  # type: ignore[type-arg]
) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    for agent in (bob, carol):
        await store.grant(
            memory.id, grant(agent.did, by=alice.did), [wrapped(agent.did, 0)], max_grants=9
        )
    before = await store.get(memory.id)
    bob_keys = await store.wrapped_keys(memory.id, bob.did)
    with pytest.raises(ValueError):
        await store.revoke(
            memory.id,
            bob.did,
            new_epoch=1,
            wrapped_keys=keys(alice.did, bob.did, carol.did),
            now=T0,
        )
    assert await store.get(memory.id) == before
    assert await store.wrapped_keys(memory.id, bob.did) == bob_keys
    assert len(bob_keys) == 1


async def test_revoke_at_a_stale_epoch_is_a_conflict(
    store: MemoryStore, alice: Agent, bob: Agent
) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await store.grant(memory.id, grant(bob.did, by=alice.did), [wrapped(bob.did, 0)], max_grants=9)
    with pytest.raises(StaleWrite) as caught:
        await store.revoke(
            memory.id, bob.did, new_epoch=2, wrapped_keys=[wrapped(alice.did, 2)], now=T0
        )
    assert caught.value.current_epoch == 0


async def test_revoke_skips_grantees_expired_by_now(
    store: MemoryStore, alice: Agent, bob: Agent, carol: Agent
) -> None:
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await store.grant(memory.id, grant(bob.did, by=alice.did), [wrapped(bob.did, 0)], max_grants=9)
    await store.grant(
        memory.id,
        grant(carol.did, by=alice.did, expires_at=T0),
        [wrapped(carol.did, 0)],
        max_grants=9,
    )
    # Carol's grant ends exactly at T0, so at T0 she gets no key for the new epoch.
    updated = await store.revoke(
        memory.id, bob.did, new_epoch=1, wrapped_keys=[wrapped(alice.did, 1)], now=T0
    )
    assert updated.epoch == 1


# -- destroy and purge ---------------------------------------------------------------------


async def test_destroy_removes_everything_and_releases_usage(
    store: MemoryStore, alice: Agent, bob: Agent
) -> None:
    memory, kept = new_memory(alice.did), new_memory(alice.did)
    for m in (memory, kept):
        await store.create(m, wrapped(alice.did, 0), max_owned=10)
    await store.grant(
        memory.id, grant(bob.did, "write", by=alice.did), [wrapped(bob.did, 0)], max_grants=9
    )
    await put(store, memory.id, stored(memory.id, bob, "a", size=30))
    await put(store, kept.id, stored(kept.id, alice, "a", size=20))
    assert await store.destroy(memory.id) is True
    assert await store.destroy(memory.id) is False
    assert await store.get(memory.id) is None
    assert await store.get_segment(memory.id, "a") is None
    assert await store.list_segments(memory.id) == []
    assert await store.wrapped_keys(memory.id, bob.did) == []
    assert await store.list_for(bob.did) == []
    assert await store.agent_usage(bob.did) == Usage()
    assert await store.agent_usage(alice.did) == Usage(20, 1)
    with pytest.raises(MemoryNotFound):
        await put(store, memory.id, stored(memory.id, bob, "a"))


async def test_purge_expired_deletes_exactly_the_expired(store: MemoryStore, alice: Agent) -> None:
    early = new_memory(alice.did, expires_at=T0 + 10)
    exact = new_memory(alice.did, expires_at=T0 + 20)
    late = new_memory(alice.did, expires_at=T0 + 21)
    forever = new_memory(alice.did)
    for memory in (early, exact, late, forever):
        await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await put(store, early.id, stored(early.id, alice, "a", size=100))
    assert sorted(await store.purge_expired(T0 + 20)) == sorted([early.id, exact.id])
    assert await store.get(early.id) is None and await store.get(exact.id) is None
    assert await store.get(late.id) is not None and await store.get(forever.id) is not None
    assert await store.agent_usage(alice.did) == Usage()
    assert await store.purge_expired(T0 + 20) == []


# -- SQLite files --------------------------------------------------------------------------


async def test_reopening_keeps_everything(tmp_path: Path, alice: Agent, bob: Agent) -> None:
    first = await SqliteMemoryStore.open(tmp_path / "m.db")
    memory = new_memory(alice.did, expires_at=T0 + 99.5)
    await first.create(memory, wrapped(alice.did, 0), max_owned=10)
    await first.grant(
        memory.id, grant(bob.did, "write", by=alice.did), [wrapped(bob.did, 0)], max_grants=9
    )
    segment = stored(memory.id, bob, "k", size=33)
    await put(first, memory.id, segment)
    before = await first.get(memory.id)
    keys = await first.wrapped_keys(memory.id, bob.did)
    await first.close()
    again = await SqliteMemoryStore.open(tmp_path / "m.db")
    try:
        assert await again.get(memory.id) == before
        assert await again.get_segment(memory.id, "k") == segment
        assert await again.wrapped_keys(memory.id, bob.did) == keys
        assert await again.agent_usage(bob.did) == Usage(33, 1)
    finally:
        await again.close()


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError):
        await SqliteMemoryStore.open(path)


async def test_the_main_store_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    main = await open_sqlite_store(path)
    await main.close()
    with pytest.raises(StoreError, match="not a trustwire shared-memory store"):
        await SqliteMemoryStore.open(path)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    await (await SqliteMemoryStore.open(path)).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    connection.close()
    with pytest.raises(StoreError, match="newer"):
        await SqliteMemoryStore.open(path)


async def test_a_damaged_row_is_a_store_error(tmp_path: Path, alice: Agent) -> None:
    path = tmp_path / "m.db"
    store = await SqliteMemoryStore.open(path)
    memory = new_memory(alice.did)
    await store.create(memory, wrapped(alice.did, 0), max_owned=10)
    await put(store, memory.id, stored(memory.id, alice, "k"))
    await store.close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE memories SET epoch = 'lots'")
        connection.execute("UPDATE segments SET nonce = x'00'")
    connection.close()
    store = await SqliteMemoryStore.open(path)
    try:
        with pytest.raises(StoreError, match="damaged memory record"):
            await store.get(memory.id)
        with pytest.raises(StoreError, match="damaged segment"):
            await store.get_segment(memory.id, "k")
    finally:
        await store.close()


async def test_the_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    await (await open_memory_store(f"sqlite://{path}")).close()
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:secret@host/db",
        "memory://host",
        "sqlite://host/x.db",
        "sqlite:///dir/",
        "",
    ],
)
async def test_unsupported_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await open_memory_store(url)
    assert "secret" not in str(caught.value)
