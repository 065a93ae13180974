"""SQLite-only behaviour: durability, file modes, damaged files, schema versions."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _store_helpers import agent, message

from trustwire.errors import StoreError
from trustwire.store import Store
from trustwire.store.sqlite import SCHEMA_VERSION, open_sqlite_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


# Small synchronous helpers: direct file access from the async tests, kept out of the
# coroutines themselves.


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tamper(path: Path, *statements: str) -> None:
    """Run SQL on the file behind the store's back."""
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute(sql).fetchall()
    connection.close()
    return rows


def write_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def read_file(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


async def test_data_survives_close_and_reopen(db_path: Path) -> None:
    record = agent("alice")
    kept, acked = message("bob"), message("bob")
    store = await open_sqlite_store(db_path, dedup_retention=100.0)
    await store.agents.add(record)
    await store.agents.revoke(record.did, at=7.0)
    await store.queue.enqueue_many([kept, acked])
    await store.queue.ack("bob", [acked.message_id], now=1000.0)
    (old,) = await store.queue.pending("bob")
    await store.close()

    async with await open_sqlite_store(db_path, dedup_retention=100.0) as store:
        fetched = await store.agents.get_by_name("alice")
        assert fetched is not None
        assert fetched.agreement_key == record.agreement_key
        assert fetched.revoked_at == 7.0
        assert await store.queue.pending("bob") == [old]
        # The tombstone survived too, and seq continues past everything seen before.
        assert await store.queue.enqueue_many([message("bob", acked.message_id)]) == [False]
        await store.queue.enqueue_many([message("bob")])
        newest = (await store.queue.pending("bob"))[-1]
        assert newest.seq > old.seq + 1


async def test_committed_data_is_visible_to_a_second_opener_while_the_first_is_open(
    db_path: Path,
) -> None:
    first = await open_sqlite_store(db_path)
    second: Store | None = None
    try:
        sent = message("bob")
        await first.queue.enqueue_many([sent])
        second = await open_sqlite_store(db_path)
        assert [m.message_id for m in await second.queue.pending("bob")] == [sent.message_id]
        # Both openers share one deduplication.
        assert await second.queue.enqueue_many([message("bob", sent.message_id)]) == [False]
    finally:
        await first.close()
        if second is not None:
            await second.close()


async def test_committed_data_survives_a_killed_process(db_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        from trustwire.store import NewMessage
        from trustwire.store.sqlite import open_sqlite_store

        async def main():
            store = await open_sqlite_store(sys.argv[1])
            items = [NewMessage("bob", "alice", bytes([i]) * 16, b"frame", 1.0) for i in range(3)]
            await store.queue.enqueue_many(items)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script, str(db_path)], timeout=60, check=False
    )
    assert done.returncode == -9
    async with await open_sqlite_store(db_path) as store:
        page = await store.queue.pending("bob")
        assert [m.message_id for m in page] == [bytes([i]) * 16 for i in range(3)]


async def test_database_and_its_wal_and_shm_files_are_private(db_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        async with await open_sqlite_store(db_path) as store:
            await store.queue.enqueue_many([message("bob")])
            files = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
            assert {path.name: mode_of(path) for path in files} == {
                path.name: 0o600 for path in files
            }
    finally:
        os.umask(old_umask)


async def test_a_garbage_file_is_refused_with_a_store_error_and_left_alone(
    db_path: Path,
) -> None:
    garbage = b"this is not a database, " * 200
    write_file(db_path, garbage)
    with pytest.raises(StoreError, match="not a usable SQLite database") as caught:
        await open_sqlite_store(db_path)
    assert str(db_path) in str(caught.value)
    assert read_file(db_path) == garbage


async def test_a_foreign_sqlite_database_is_refused(db_path: Path) -> None:
    tamper(db_path, "CREATE TABLE users (name TEXT)")
    with pytest.raises(StoreError, match="not a trustwire store"):
        await open_sqlite_store(db_path)


async def test_a_newer_schema_version_is_refused(db_path: Path) -> None:
    await (await open_sqlite_store(db_path)).close()
    newer = SCHEMA_VERSION + 1
    tamper(db_path, f"UPDATE schema_version SET version = {newer}")  # noqa: S608 - an int
    with pytest.raises(StoreError, match=rf"schema version {newer}.*upgrade trustwire"):
        await open_sqlite_store(db_path)


async def test_the_current_schema_version_is_recorded(db_path: Path) -> None:
    await (await open_sqlite_store(db_path)).close()
    assert query(db_path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


@pytest.mark.parametrize(
    "damage",
    [
        "INSERT INTO schema_version VALUES (1)",
        "UPDATE schema_version SET version = 'one'",
        "DELETE FROM schema_version",
    ],
)
async def test_a_damaged_schema_version_is_refused(db_path: Path, damage: str) -> None:
    await (await open_sqlite_store(db_path)).close()
    tamper(db_path, damage)
    with pytest.raises(StoreError, match="schema_version table is damaged"):
        await open_sqlite_store(db_path)


async def test_damaged_rows_give_store_errors(db_path: Path) -> None:
    async with await open_sqlite_store(db_path) as store:
        await store.agents.add(agent("alice"))
        await store.queue.enqueue_many([message("bob")])
    tamper(db_path, "UPDATE agents SET roles = 'not json'", "UPDATE queue SET message_id = 'short'")
    async with await open_sqlite_store(db_path) as store:
        with pytest.raises(StoreError, match="damaged agent record"):
            await store.agents.list()
        with pytest.raises(StoreError, match="damaged queued message"):
            await store.queue.pending("bob")


async def test_a_missing_directory_gives_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot create SQLite store"):
        await open_sqlite_store(tmp_path / "absent" / "store.db")


@pytest.mark.parametrize(("option", "expected"), [("NORMAL", 1), ("FULL", 2), ("full", 2)])
async def test_the_synchronous_option_is_applied(db_path: Path, option: str, expected: int) -> None:
    async with await open_sqlite_store(db_path, synchronous=option) as store:
        database = store.queue._db  # type: ignore[attr-defined]
        row = await database.run(lambda c: c.execute("PRAGMA synchronous").fetchone())
        mode = await database.run(lambda c: c.execute("PRAGMA journal_mode").fetchone())
    assert row == (expected,)
    assert mode == ("wal",)


async def test_an_unknown_synchronous_option_is_rejected(db_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        await open_sqlite_store(db_path, synchronous="OFF")
    assert read_file(db_path) is None


async def test_closing_lets_work_already_submitted_finish(db_path: Path) -> None:
    store = await open_sqlite_store(db_path)
    batch = [message("bob") for _ in range(50)]
    results, _ = await asyncio.gather(store.queue.enqueue_many(batch), store.close())
    assert results == [True] * 50
    async with await open_sqlite_store(db_path) as store:
        assert await store.queue.depth("bob") == 50


async def test_acked_frames_are_not_kept(db_path: Path) -> None:
    sent = message("bob", frame=b"secret-looking ciphertext")
    async with await open_sqlite_store(db_path) as store:
        await store.queue.enqueue_many([sent])
        await store.queue.ack("bob", [sent.message_id], now=1000.0)
    assert query(db_path, "SELECT frame FROM queue") == [(b"",)]


async def test_a_version_1_store_is_upgraded_and_keeps_its_agents(db_path: Path) -> None:
    record = agent("alice")
    store = await open_sqlite_store(db_path)
    await store.agents.add(record)
    await store.close()
    # What a version 1 file looks like: no join tokens, no directory generation.
    tamper(
        db_path,
        "DROP TABLE join_tokens",
        "DROP TABLE directory_generation",
        "UPDATE schema_version SET version = 1",
    )
    store = await open_sqlite_store(db_path)
    try:
        assert await store.agents.get_by_did(record.did) == record
        before = await store.agents.generation()
        await store.agents.set_roles(record.did, ["admin"])
        assert await store.agents.generation() > before
        await store.tokens.create(b"h" * 32, name="bob", roles=(), expires_at=10.0)
        assert await store.tokens.redeem(b"h" * 32, now=1.0) == ("bob", ())
    finally:
        await store.close()
    assert query(db_path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_another_process_changes_are_seen_by_generation(db_path: Path) -> None:
    first = await open_sqlite_store(db_path)
    second = await open_sqlite_store(db_path)
    try:
        before = await first.agents.generation()
        await second.agents.add(agent("alice"))
        assert await first.agents.generation() > before
    finally:
        await first.close()
        await second.close()


async def test_join_tokens_store_only_the_hash_given(db_path: Path) -> None:
    store = await open_sqlite_store(db_path)
    await store.tokens.create(b"\x01" * 32, name="bob", roles=("w",), expires_at=10.0)
    await store.close()
    assert query(db_path, "SELECT token_hash, name FROM join_tokens") == [(b"\x01" * 32, "bob")]
