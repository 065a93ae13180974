"""Session store conformance, run against every backend, and the SQLite file's defences."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from trustwire.errors import ConfigurationError, StoreError
from trustwire.sessions import store as store_module
from trustwire.sessions.model import Session, SessionConfig, SessionMessage, new_session_id
from trustwire.sessions.store import (
    MAX_MESSAGES_PER_SESSION,
    MemorySessionStore,
    SessionStore,
    SqliteSessionStore,
    open_session_store,
)
from trustwire.store import open_store

ALICE = "did:key:z6MkhaXgBZDvotDkL5257faiztiKC2RSkwWjTLW1Mm4qVbcG"
BOB = "did:key:z6MkfrQREUK7mDSoV9Bn3RhD7GZbYjXXkcVm5Vd3n4hmuW2e"
CAROL = "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH"
T0 = 1_750_000_000.0

OpenStore = Callable[[], Awaitable[SessionStore]]


def make_session(initiator: str = ALICE, peer: str = BOB, *, at: float = T0) -> Session:
    return Session(
        id=new_session_id(),
        initiator=initiator,
        peer=peer,
        created_at=at,
        last_activity=at,
        config=SessionConfig(),
        metadata={"topic": "tests"},
    )


def message(session: Session, number: int, *, at_ms: int | None = None) -> SessionMessage:
    return SessionMessage(
        session_id=session.id,
        message_id=f"{number:032x}",
        sender=session.initiator,
        recipient=session.peer,
        type="CHANNEL_DATA",
        size=100 + number,
        timestamp_ms=at_ms if at_ms is not None else 1_000 + number,
    )


@pytest.fixture(params=["memory", "sqlite"])
async def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores of one backend; SQLite stores of one test share one file."""
    opened: list[SessionStore] = []
    memory = MemorySessionStore()

    async def open_() -> SessionStore:
        if request.param == "memory":
            return memory
        store = await open_session_store(f"sqlite:///{tmp_path / 'sessions.db'}")
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_backend: OpenStore) -> SessionStore:
    return await open_backend()


# -- conformance -------------------------------------------------------------------------


async def test_create_then_get_returns_an_equal_session(store: SessionStore) -> None:
    session = make_session()
    await store.create(session)
    assert await store.get(session.id) == session
    assert await store.get(new_session_id()) is None


async def test_creating_an_existing_id_is_refused(store: SessionStore) -> None:
    session = make_session()
    await store.create(session)
    with pytest.raises(StoreError, match="already exists"):
        await store.create(session)


async def test_update_is_compare_and_set_on_version(store: SessionStore) -> None:
    session = make_session()
    await store.create(session)
    renewed = session.renewed(T0 + 60)
    written = await store.update(renewed)
    assert written is not None and written.version == 1
    assert await store.get(session.id) == written
    # A writer still holding version 0 loses and changes nothing.
    stale = session.ended(T0 + 61, reason="late", by=BOB)
    assert await store.update(stale) is None
    assert await store.get(session.id) == written
    # Unknown sessions are not created by update.
    assert await store.update(make_session()) is None


async def test_generation_grows_with_every_change(store: SessionStore) -> None:
    first = await store.generation()
    session = make_session()
    await store.create(session)
    second = await store.generation()
    written = await store.update(session.renewed(T0 + 1))
    assert written is not None
    third = await store.generation()
    assert first < second < third
    assert await store.update(session) is None  # a refused write changes nothing
    assert await store.generation() == third


async def test_changes_lists_what_changed_after_a_generation(store: SessionStore) -> None:
    a, b = make_session(), make_session(BOB, CAROL)
    await store.create(a)
    mark = await store.generation()
    await store.create(b)
    written = await store.update(a.renewed(T0 + 5))
    generation, changed = await store.changes(mark)
    assert generation == await store.generation()
    assert {s.id: s for s in changed} == {b.id: b, a.id: written}
    _, none = await store.changes(generation)
    assert none == []


async def test_list_filters_by_participant_and_activity(store: SessionStore) -> None:
    a = make_session(ALICE, BOB, at=T0)
    b = make_session(BOB, CAROL, at=T0 + 1)
    c = make_session(CAROL, ALICE, at=T0 + 2)
    for session in (a, b, c):
        await store.create(session)
    ended = await store.update(b.ended(T0 + 3, reason="done", by=BOB))
    assert ended is not None
    assert [s.id for s in await store.list(include_inactive=True)] == [a.id, b.id, c.id]
    assert [s.id for s in await store.list(now=T0 + 10)] == [a.id, c.id]
    assert [s.id for s in await store.list(ALICE, now=T0 + 10)] == [a.id, c.id]
    assert [s.id for s in await store.list(BOB, include_inactive=True)] == [a.id, b.id]
    # Expired by its stored expiry (30 minutes after creation).
    assert [s.id for s in await store.list(now=T0 + 1800.5)] == [c.id]
    with pytest.raises(ValueError, match="now="):
        await store.list()


async def test_messages_page_back_newest_first(store: SessionStore) -> None:
    session = make_session()
    await store.create(session)
    assert await store.record_messages([message(session, n) for n in range(10)]) == 10
    page, more = await store.messages(session.id, limit=4)
    assert [m.timestamp_ms for m in page] == [1009, 1008, 1007, 1006]
    assert more
    page, more = await store.messages(session.id, limit=4, before_ms=1006)
    assert [m.timestamp_ms for m in page] == [1005, 1004, 1003, 1002]
    page, more = await store.messages(session.id, limit=4, before_ms=1002)
    assert [m.timestamp_ms for m in page] == [1001, 1000]
    assert not more


async def test_messages_page_forward_after_a_cursor(store: SessionStore) -> None:
    session = make_session()
    await store.create(session)
    await store.record_messages([message(session, n) for n in range(10)])
    page, more = await store.messages(session.id, limit=3, after_ms=1002)
    assert [m.timestamp_ms for m in page] == [1005, 1004, 1003]
    assert more
    page, more = await store.messages(session.id, limit=3, after_ms=1006)
    assert [m.timestamp_ms for m in page] == [1009, 1008, 1007]
    assert not more
    page, more = await store.messages(session.id, limit=10, after_ms=1002, before_ms=1006)
    assert [m.timestamp_ms for m in page] == [1005, 1004, 1003]
    assert not more


async def test_messages_are_stored_once_per_id_and_per_session(store: SessionStore) -> None:
    a, b = make_session(), make_session(BOB, CAROL)
    await store.create(a)
    await store.create(b)
    assert await store.record_messages([message(a, 1), message(a, 1), message(b, 1)]) == 2
    assert await store.record_messages([message(a, 1)]) == 0
    assert len((await store.messages(a.id, limit=100))[0]) == 1
    assert len((await store.messages(b.id, limit=100))[0]) == 1


async def test_at_most_the_bound_of_messages_is_kept_per_session(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_MESSAGES_PER_SESSION", 5)
    a, b = make_session(), make_session(BOB, CAROL)
    await store.create(a)
    await store.create(b)
    await store.record_messages([message(a, n) for n in range(4)])
    await store.record_messages([message(a, n) for n in range(4, 9)] + [message(b, 0)])
    page, more = await store.messages(a.id, limit=100)
    assert [m.message_id for m in page] == [f"{n:032x}" for n in (8, 7, 6, 5, 4)]
    assert not more
    assert len((await store.messages(b.id, limit=100))[0]) == 1


async def test_the_real_bound_is_ten_thousand(store: SessionStore) -> None:
    assert MAX_MESSAGES_PER_SESSION == 10_000
    session = make_session()
    await store.create(session)
    await store.record_messages([message(session, n) for n in range(10_050)])
    page, _ = await store.messages(session.id, limit=1, after_ms=0)
    assert page[0].message_id == f"{50:032x}"  # the 50 oldest were dropped


async def test_purge_drops_sessions_inactive_before_the_cutoff(store: SessionStore) -> None:
    old = make_session(at=T0)
    live = make_session(BOB, CAROL, at=T0 + 3600)
    ended = make_session(CAROL, ALICE, at=T0 + 3600)
    for session in (old, live, ended):
        await store.create(session)
    await store.record_messages([message(old, 1)])
    assert await store.update(ended.ended(T0 + 3601, reason="done", by=None)) is not None
    before = await store.generation()
    # old expired at T0 + 1800; ended at T0 + 3601; live expires at T0 + 5400.
    assert await store.purge(T0 + 3602) == 2
    assert await store.generation() > before
    assert await store.get(old.id) is None and await store.get(ended.id) is None
    assert await store.get(live.id) == live
    assert (await store.messages(old.id, limit=10))[0] == []
    assert await store.purge(T0 + 3602) == 0


async def test_page_limits_are_checked(store: SessionStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.messages(new_session_id(), limit=0)


async def test_reopening_keeps_everything(open_backend: OpenStore) -> None:
    first = await open_backend()
    session = make_session()
    await first.create(session)
    written = await first.update(session.renewed(T0 + 1))
    await first.record_messages([message(session, 1)])
    generation = await first.generation()
    second = await open_backend()
    assert await second.get(session.id) == written
    assert await second.generation() == generation
    assert len((await second.messages(session.id, limit=10))[0]) == 1


# -- SQLite specifics --------------------------------------------------------------------


async def test_generation_is_visible_to_another_process_sharing_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    coordinator = await SqliteSessionStore.open(path)
    cli = await SqliteSessionStore.open(path)
    try:
        session = make_session()
        await coordinator.create(session)
        seen = await coordinator.generation()
        assert await cli.generation() == seen
        written = await cli.update(session.ended(T0 + 5, reason="operator", by=None))
        assert written is not None
        assert await coordinator.generation() > seen
        _, changed = await coordinator.changes(seen)
        assert changed == [written]
    finally:
        await cli.close()
        await coordinator.close()


async def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    store = await SqliteSessionStore.open(path)
    await store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        await SqliteSessionStore.open(path)


async def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE things (x)")
    connection.close()
    with pytest.raises(StoreError, match="not a trustwire sessions store"):
        await SqliteSessionStore.open(path)


async def test_the_coordinator_store_is_not_mistaken_for_a_sessions_store(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"
    coordinator = await open_store(f"sqlite:///{path}")
    await coordinator.close()
    with pytest.raises(StoreError, match="not a sessions store"):
        await SqliteSessionStore.open(path)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    await (await SqliteSessionStore.open(path)).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    connection.close()
    with pytest.raises(StoreError, match="newer than"):
        await SqliteSessionStore.open(path)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("config", "{not json"),
        ("config", '{"timeoutMinutes": "soon"}'),
        ("metadata", "[1, 2]"),
        ("created_at", "yesterday"),
        ("renewal_count", -4),
        ("expired_announced", 7),
        ("initiator", "bob"),
        ("id", "not-a-uuid"),
    ],
)
async def test_a_damaged_row_is_a_store_error_not_a_traceback(
    tmp_path: Path, column: str, value: object
) -> None:
    path = tmp_path / "sessions.db"
    store = await SqliteSessionStore.open(path)
    try:
        session = make_session()
        await store.create(session)
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute(f"UPDATE sessions SET {column} = ?", (value,))  # noqa: S608
        raw.close()
        with pytest.raises(StoreError, match="damaged session record"):
            await store.list(include_inactive=True)
    finally:
        await store.close()


async def test_a_damaged_message_row_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    store = await SqliteSessionStore.open(path)
    try:
        session = make_session()
        await store.create(session)
        await store.record_messages([message(session, 1)])
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("UPDATE session_messages SET size = 'big'")
        raw.close()
        with pytest.raises(StoreError, match="damaged session message"):
            await store.messages(session.id)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "memory://host",
        "sqlite://host/x.db",
        "sqlite:///tmp/",
        "",
        "sqlite:///x.db?a=b",
    ],
)
async def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        await open_session_store(url)


async def test_the_url_error_never_echoes_the_url() -> None:
    with pytest.raises(ConfigurationError) as raised:
        await open_session_store("postgresql://user:hunter2@db/sessions")
    assert "hunter2" not in str(raised.value)


async def test_memory_url_opens_a_memory_store() -> None:
    assert isinstance(await open_session_store("memory://"), MemorySessionStore)


async def test_every_field_survives_a_write_and_a_read(open_backend: OpenStore) -> None:
    store = await open_backend()
    session = make_session()
    await store.create(session)
    full = dataclasses.replace(
        session.renewed(T0 + 60).ended(T0 + 70, reason="all done", by=BOB),
        warned_for=T0 + 1800.25,
        expired_announced=True,
        ended_announced=True,
        config=SessionConfig(15, False, 60, 3),
    )
    written = await store.update(full)
    assert written == dataclasses.replace(full, version=1)
    reopened = await open_backend()
    assert await reopened.get(session.id) == written
