"""The SQLite shared-memory store (``sqlite:///path.db``): one file per coordinator.

:class:`SqliteMemoryStore` keeps the shared memories in their own SQLite file through
:class:`trustwire.store.sqlite.Database` (one worker thread, WAL, a 0600 file, every
``sqlite3`` error translated to :class:`~trustwire.errors.StoreError`).
:func:`trustwire.memory.store.open_memory_store` opens it for ``sqlite:`` URLs.

Invariants, besides those of :mod:`trustwire.memory.store` that every backend keeps:

* **One transaction per operation.** Every change runs in one ``BEGIN IMMEDIATE``
  transaction (:meth:`Database.write <trustwire.store.sqlite.Database.write>`), so the
  compare-and-set check, the quota check and the usage accounting cannot race another
  writer, in this process or another one on the same file.
* **The file is checked.** It carries a ``schema_version``; a newer schema, a file that
  is not SQLite, or a SQLite database that is not a shared-memory store is refused with
  :class:`~trustwire.errors.StoreError`, and rows read back are validated (a damaged row
  is a ``StoreError``, never a raw traceback).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from trustwire.errors import StoreError
from trustwire.memory.model import (
    Grant,
    Memory,
    Quotas,
    SegmentInfo,
    StoredSegment,
    Usage,
    WrappedKey,
)
from trustwire.memory.store import (
    MemoryStore,
    plan_create,
    plan_delete,
    plan_grant,
    plan_put,
    plan_revoke,
    require_memory,
)
from trustwire.store.sqlite import Database

__all__ = ["SCHEMA_VERSION", "SqliteMemoryStore"]

SCHEMA_VERSION: Final = 1
"""The shared-memory schema version this code reads and writes."""

_SCHEMA: Final[tuple[str, ...]] = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "INSERT INTO schema_version (version) VALUES (0)",
    """CREATE TABLE memories (
        id TEXT NOT NULL PRIMARY KEY,
        owner TEXT NOT NULL,
        type TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL,
        epoch INTEGER NOT NULL,
        max_bytes INTEGER NOT NULL,
        max_segments INTEGER NOT NULL,
        usage_bytes INTEGER NOT NULL,
        usage_segments INTEGER NOT NULL
    )""",
    "CREATE INDEX memories_owner ON memories (owner)",
    "CREATE INDEX memories_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL",
    """CREATE TABLE grants (
        memory_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        level TEXT NOT NULL,
        expires_at REAL,
        granted_by TEXT NOT NULL,
        PRIMARY KEY (memory_id, agent)
    )""",
    "CREATE INDEX grants_agent ON grants (agent)",
    """CREATE TABLE wrapped_keys (
        memory_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        enc BLOB NOT NULL,
        ct BLOB NOT NULL,
        PRIMARY KEY (memory_id, agent, epoch)
    )""",
    """CREATE TABLE segments (
        memory_id TEXT NOT NULL,
        key TEXT NOT NULL,
        version INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        writer TEXT NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        hash BLOB NOT NULL,
        signature BLOB NOT NULL,
        written_at REAL NOT NULL,
        PRIMARY KEY (memory_id, key)
    )""",
    """CREATE TABLE agent_usage (
        agent TEXT NOT NULL PRIMARY KEY,
        bytes INTEGER NOT NULL,
        segments INTEGER NOT NULL
    )""",
)

_TABLES: Final = frozenset(
    {"schema_version", "memories", "grants", "wrapped_keys", "segments", "agent_usage"}
)


def _migrate(connection: sqlite3.Connection, path: str) -> None:
    tables = {
        name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    if not tables:
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        return
    if not _TABLES <= tables:
        raise StoreError(f"{path} is a SQLite database but not a trustwire shared-memory store")
    rows = connection.execute("SELECT version FROM schema_version").fetchall()
    if len(rows) != 1 or type(rows[0][0]) is not int or rows[0][0] < 1:
        raise StoreError(f"{path}: the schema_version table is damaged")
    version: int = rows[0][0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has shared-memory schema version {version}, newer than the "
            f"{SCHEMA_VERSION} this trustwire supports; upgrade trustwire to open it"
        )


_MEMORY_COLUMNS: Final = (
    "id, owner, type, created_at, expires_at, epoch, max_bytes, max_segments, "
    "usage_bytes, usage_segments"
)
_GRANT_COLUMNS: Final = "agent, level, expires_at, granted_by"
_SEGMENT_COLUMNS: Final = (
    "key, version, epoch, writer, nonce, ciphertext, hash, signature, written_at"
)


_T = TypeVar("_T")


class SqliteMemoryStore(MemoryStore):
    """:class:`MemoryStore` in its own SQLite file (see :func:`open_memory_store`)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, synchronous: str = "NORMAL"
    ) -> SqliteMemoryStore:
        """Open (creating if absent) the shared-memory database at ``path``."""
        database = Database(os.fspath(path), synchronous, migrate=_migrate)
        await database.open()
        return cls(database)

    # -- row helpers (run on the worker thread)

    def _decode(self, what: str, build: Callable[[], _T]) -> _T:
        """``build()``, which makes value objects of rows read back; a row they refuse
        is a :class:`StoreError` naming ``what``."""
        try:
            return build()
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{self._db.path}: damaged {what} ({exc})") from exc

    def _load(self, connection: sqlite3.Connection, memory_id: str) -> Memory | None:
        row = connection.execute(
            f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = ?",  # noqa: S608
            (memory_id,),
        ).fetchone()
        if row is None:
            return None
        grants = connection.execute(
            f"SELECT {_GRANT_COLUMNS} FROM grants WHERE memory_id = ? ORDER BY rowid",  # noqa: S608
            (memory_id,),
        ).fetchall()
        return self._memory_from(row, grants)

    def _memory_from(self, row: tuple[Any, ...], grants: list[tuple[Any, ...]]) -> Memory:
        return self._decode(
            "memory record",
            lambda: Memory(
                id=row[0],
                owner=row[1],
                type=row[2],
                created_at=row[3],
                expires_at=row[4],
                epoch=row[5],
                quotas=Quotas(row[6], row[7]),
                grants=tuple(Grant(g[0], g[1], g[2], g[3]) for g in grants),
                usage=Usage(row[8], row[9]),
            ),
        )

    def _require(self, connection: sqlite3.Connection, memory_id: str) -> Memory:
        return require_memory(self._load(connection, memory_id))

    def _usage_of(self, connection: sqlite3.Connection, agent: str) -> Usage:
        row = connection.execute(
            "SELECT bytes, segments FROM agent_usage WHERE agent = ?", (agent,)
        ).fetchone()
        if row is None:
            return Usage()
        return self._decode("agent usage", lambda: Usage(row[0], row[1]))

    @staticmethod
    def _add_usage(connection: sqlite3.Connection, agent: str, size: int, count: int) -> None:
        connection.execute(
            "INSERT INTO agent_usage (agent, bytes, segments) VALUES (?, ?, ?) "
            "ON CONFLICT (agent) DO UPDATE SET bytes = bytes + excluded.bytes, "
            "segments = segments + excluded.segments",
            (agent, size, count),
        )
        connection.execute(
            "DELETE FROM agent_usage WHERE agent = ? AND bytes = 0 AND segments = 0", (agent,)
        )

    @staticmethod
    def _set_usage(connection: sqlite3.Connection, memory_id: str, usage: Usage) -> None:
        connection.execute(
            "UPDATE memories SET usage_bytes = ?, usage_segments = ? WHERE id = ?",
            (usage.bytes, usage.segments, memory_id),
        )

    @staticmethod
    def _insert_keys(
        connection: sqlite3.Connection, memory_id: str, keys: Sequence[WrappedKey]
    ) -> None:
        connection.executemany(
            "INSERT INTO wrapped_keys (memory_id, agent, epoch, enc, ct) VALUES (?, ?, ?, ?, ?)",
            [(memory_id, k.agent, k.epoch, k.enc, k.ct) for k in keys],
        )

    @staticmethod
    def _forget(connection: sqlite3.Connection, memory_id: str, agent: str) -> None:
        """Delete ``agent``'s grant and wrapped keys on the memory."""
        for table in ("grants", "wrapped_keys"):
            connection.execute(
                f"DELETE FROM {table} WHERE memory_id = ? AND agent = ?",  # noqa: S608
                (memory_id, agent),
            )

    def _destroy(self, connection: sqlite3.Connection, memory_id: str) -> bool:
        writers = connection.execute(
            "SELECT writer, SUM(length(ciphertext)), COUNT(*) FROM segments "
            "WHERE memory_id = ? GROUP BY writer",
            (memory_id,),
        ).fetchall()
        for writer, size, count in writers:
            self._add_usage(connection, writer, -int(size), -int(count))
        for table in ("segments", "wrapped_keys", "grants"):
            connection.execute(f"DELETE FROM {table} WHERE memory_id = ?", (memory_id,))  # noqa: S608
        return connection.execute("DELETE FROM memories WHERE id = ?", (memory_id,)).rowcount > 0

    # -- the interface

    async def create(self, memory: Memory, wrapped_key: WrappedKey, *, max_owned: int) -> None:
        def job(connection: sqlite3.Connection) -> None:
            if connection.execute("SELECT 1 FROM memories WHERE id = ?", (memory.id,)).fetchone():
                raise ValueError("a memory with this id already exists")
            (owned,) = connection.execute(
                "SELECT count(*) FROM memories WHERE owner = ?", (memory.owner,)
            ).fetchone()
            plan_create(owned, max_owned=max_owned)
            connection.execute(
                f"INSERT INTO memories ({_MEMORY_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    memory.id,
                    memory.owner,
                    memory.type,
                    memory.created_at,
                    memory.expires_at,
                    memory.epoch,
                    memory.quotas.max_bytes,
                    memory.quotas.max_segments,
                    memory.usage.bytes,
                    memory.usage.segments,
                ),
            )
            connection.executemany(
                f"INSERT INTO grants (memory_id, {_GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",  # noqa: S608
                [(memory.id, g.agent, g.level, g.expires_at, g.granted_by) for g in memory.grants],
            )
            self._insert_keys(connection, memory.id, [wrapped_key])

        await self._db.write(job)

    async def get(self, memory_id: str) -> Memory | None:
        return await self._db.run(lambda connection: self._load(connection, memory_id))

    async def list_for(self, agent: str) -> list[Memory]:
        def job(connection: sqlite3.Connection) -> list[Memory]:
            ids = connection.execute(
                "SELECT id FROM memories WHERE owner = ? "
                "UNION SELECT memory_id FROM grants WHERE agent = ?",
                (agent, agent),
            ).fetchall()
            found = [self._load(connection, memory_id) for (memory_id,) in ids]
            return sorted((m for m in found if m is not None), key=lambda m: (m.created_at, m.id))

        return await self._db.run(job)

    async def destroy(self, memory_id: str) -> bool:
        return await self._db.write(lambda connection: self._destroy(connection, memory_id))

    async def wrapped_keys(self, memory_id: str, agent: str) -> list[WrappedKey]:
        def job(connection: sqlite3.Connection) -> list[WrappedKey]:
            rows = connection.execute(
                "SELECT agent, epoch, enc, ct FROM wrapped_keys "
                "WHERE memory_id = ? AND agent = ? ORDER BY epoch",
                (memory_id, agent),
            ).fetchall()
            return self._decode("wrapped key", lambda: [WrappedKey(*row) for row in rows])

        return await self._db.run(job)

    def _old_segment(
        self, connection: sqlite3.Connection, memory_id: str, key: str
    ) -> StoredSegment | None:
        row = connection.execute(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE memory_id = ? AND key = ?",  # noqa: S608
            (memory_id, key),
        ).fetchone()
        return None if row is None else self._decode("segment", lambda: StoredSegment(*row))

    async def put_segment(
        self,
        memory_id: str,
        segment: StoredSegment,
        *,
        expected_version: int,
        agent_max_bytes: int,
        agent_max_segments: int,
    ) -> Memory:
        def job(connection: sqlite3.Connection) -> Memory:
            memory = self._require(connection, memory_id)
            old = self._old_segment(connection, memory_id, segment.key)
            memory = plan_put(
                memory,
                None if old is None else old.info,
                segment,
                self._usage_of(connection, segment.writer),
                expected_version=expected_version,
                agent_max_bytes=agent_max_bytes,
                agent_max_segments=agent_max_segments,
            )
            if old is not None:
                self._add_usage(connection, old.writer, -old.size, -1)
            self._add_usage(connection, segment.writer, segment.size, 1)
            connection.execute(
                f"INSERT OR REPLACE INTO segments (memory_id, {_SEGMENT_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    memory_id,
                    segment.key,
                    segment.version,
                    segment.epoch,
                    segment.writer,
                    segment.nonce,
                    segment.ciphertext,
                    segment.hash,
                    segment.signature,
                    segment.written_at,
                ),
            )
            self._set_usage(connection, memory_id, memory.usage)
            return memory

        return await self._db.write(job)

    async def get_segment(self, memory_id: str, key: str) -> StoredSegment | None:
        return await self._db.run(lambda connection: self._old_segment(connection, memory_id, key))

    async def list_segments(self, memory_id: str) -> list[SegmentInfo]:
        def job(connection: sqlite3.Connection) -> list[SegmentInfo]:
            rows = connection.execute(
                "SELECT key, version, epoch, writer, length(ciphertext), written_at "
                "FROM segments WHERE memory_id = ? ORDER BY key",
                (memory_id,),
            ).fetchall()
            return self._decode("segment", lambda: [SegmentInfo(*row) for row in rows])

        return await self._db.run(job)

    async def delete_segment(self, memory_id: str, key: str, *, expected_version: int) -> bool:
        def job(connection: sqlite3.Connection) -> bool:
            memory = self._require(connection, memory_id)
            old = self._old_segment(connection, memory_id, key)
            if old is None:
                return False
            memory = plan_delete(memory, old.info, expected_version=expected_version)
            connection.execute(
                "DELETE FROM segments WHERE memory_id = ? AND key = ?", (memory_id, key)
            )
            self._add_usage(connection, old.writer, -old.size, -1)
            self._set_usage(connection, memory_id, memory.usage)
            return True

        return await self._db.write(job)

    async def grant(
        self, memory_id: str, grant: Grant, wrapped_keys: Sequence[WrappedKey], *, max_grants: int
    ) -> Memory:
        def job(connection: sqlite3.Connection) -> Memory:
            memory = self._require(connection, memory_id)
            memory = plan_grant(memory, grant, wrapped_keys, max_grants=max_grants)
            self._forget(connection, memory_id, grant.agent)
            connection.execute(
                f"INSERT INTO grants (memory_id, {_GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",  # noqa: S608
                (memory_id, grant.agent, grant.level, grant.expires_at, grant.granted_by),
            )
            self._insert_keys(connection, memory_id, wrapped_keys)
            return memory

        return await self._db.write(job)

    async def revoke(
        self,
        memory_id: str,
        agent: str,
        *,
        new_epoch: int,
        wrapped_keys: Sequence[WrappedKey],
        now: float,
    ) -> Memory:
        def job(connection: sqlite3.Connection) -> Memory:
            memory = plan_revoke(
                self._require(connection, memory_id),
                agent,
                new_epoch=new_epoch,
                wrapped_keys=wrapped_keys,
                now=now,
            )
            self._forget(connection, memory_id, agent)
            connection.execute("UPDATE memories SET epoch = ? WHERE id = ?", (new_epoch, memory_id))
            self._insert_keys(connection, memory_id, wrapped_keys)
            return memory

        return await self._db.write(job)

    async def agent_usage(self, agent: str) -> Usage:
        return await self._db.run(lambda connection: self._usage_of(connection, agent))

    async def purge_expired(self, now: float) -> list[str]:
        def job(connection: sqlite3.Connection) -> list[str]:
            rows = connection.execute(
                "SELECT id FROM memories WHERE expires_at IS NOT NULL AND expires_at <= ? "
                "ORDER BY expires_at",
                (now,),
            ).fetchall()
            ids = [str(memory_id) for (memory_id,) in rows]
            for memory_id in ids:
                self._destroy(connection, memory_id)
            return ids

        return await self._db.write(job)

    async def close(self) -> None:
        await self._db.close()
