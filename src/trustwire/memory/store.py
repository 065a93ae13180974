"""Where the coordinator keeps shared memories: metadata, wrapped keys and ciphertext.

:class:`MemoryStore` is the interface; :class:`InMemoryMemoryStore` keeps everything in
the process and :class:`SqliteMemoryStore` in its own SQLite file (through
:class:`trustwire.store.sqlite.Database`). :func:`open_memory_store` picks one by URL.

Invariants every backend keeps (the conformance tests in ``tests/memory/test_store.py``
check them):

* **Compare-and-set writes.** ``put_segment`` and ``delete_segment`` succeed only when the
  segment's current version (0 when absent) equals ``expected_version`` and, for a put,
  the segment's epoch is the memory's current epoch; otherwise :class:`StaleWrite`.
  The check, the quota check and the usage accounting happen in one atomic step, so of
  two concurrent writers on one version exactly one wins and usage never drifts.
* **Usage is exact.** A memory's usage is the sum of its segments' ciphertext sizes and
  their count; an agent's usage is the same sum over every segment it wrote, across
  memories. Every put, delete, destroy and purge updates both in the same step.
* **Quotas only stop growth.** A write is refused with :class:`QuotaExceeded` when it
  would take a memory or its writer over a limit *and* increase that usage; a write that
  shrinks usage always fits.
* **Rotation is atomic.** ``revoke`` deletes the grant and every wrapped key of the
  revoked agent, sets the new epoch and stores the new wrapped keys in one step, after
  checking (inside that step) that the keys cover exactly the owner and the remaining
  active grantees at exactly the next epoch. ``grant`` likewise checks, in its step,
  that the keys cover every epoch up to the current one.
* **Destroy and purge leave nothing.** Destroying a memory removes its metadata,
  grants, wrapped keys and segments; ``purge_expired(now)`` destroys every memory whose
  ``expires_at <= now`` and returns their ids.
* **SQLite files are checked.** The file carries a ``schema_version``; a newer schema, a
  file that is not SQLite, or a SQLite database that is not a shared-memory store is
  refused with :class:`~trustwire.errors.StoreError`, and rows read back are validated
  (a damaged row is a ``StoreError``, never a raw traceback).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Final

from trustwire.errors import ConfigurationError, MemoryNotFound, StoreError
from trustwire.memory.model import (
    Grant,
    Memory,
    QuotaExceeded,
    Quotas,
    SegmentInfo,
    StaleWrite,
    StoredSegment,
    Usage,
    WrappedKey,
    check_grant_keys,
    check_rewrap,
)
from trustwire.store.sqlite import Database

__all__ = [
    "SCHEMA_VERSION",
    "InMemoryMemoryStore",
    "MemoryStore",
    "SqliteMemoryStore",
    "open_memory_store",
    "plan_write",
]

SCHEMA_VERSION: Final = 1
"""The shared-memory schema version this code reads and writes."""


def plan_write(
    memory: Memory,
    old: SegmentInfo | None,
    new: StoredSegment,
    writer_usage: Usage,
    *,
    agent_max_bytes: int,
    agent_max_segments: int,
) -> None:
    """Raise :class:`QuotaExceeded` if writing ``new`` over ``old`` (None: a new key)
    would take the memory or the writer over a quota while growing that usage."""
    old_size = 0 if old is None else old.size
    used = memory.usage
    total = used.bytes - old_size + new.size
    if total > memory.quotas.max_bytes and total > used.bytes:
        raise QuotaExceeded(
            "memory.maxBytes",
            limit=memory.quotas.max_bytes,
            used=used.bytes,
            requested=new.size - old_size,
        )
    if old is None and used.segments + 1 > memory.quotas.max_segments:
        raise QuotaExceeded(
            "memory.maxSegments", limit=memory.quotas.max_segments, used=used.segments, requested=1
        )
    same_writer = old is not None and old.writer == new.writer
    own_old = old_size if same_writer else 0
    mine = writer_usage.bytes - own_old + new.size
    if mine > agent_max_bytes and mine > writer_usage.bytes:
        raise QuotaExceeded(
            "agent.maxBytes",
            limit=agent_max_bytes,
            used=writer_usage.bytes,
            requested=new.size - own_old,
        )
    if not same_writer and writer_usage.segments + 1 > agent_max_segments:
        raise QuotaExceeded(
            "agent.maxSegments", limit=agent_max_segments, used=writer_usage.segments, requested=1
        )


def _check_cas(
    memory: Memory, current: int, expected_version: int, segment: StoredSegment | None
) -> None:
    if segment is not None:
        if segment.version != expected_version + 1:
            raise ValueError("segment.version must be expectedVersion + 1")
        if segment.epoch != memory.epoch:
            raise StaleWrite(
                f"segment epoch {segment.epoch} is not the memory's current epoch {memory.epoch}",
                current_version=current,
                current_epoch=memory.epoch,
            )
    if current != expected_version:
        raise StaleWrite(
            f"expected version {expected_version} but the segment is at version {current}",
            current_version=current,
        )


def _not_found() -> MemoryNotFound:
    return MemoryNotFound("no such memory")


class MemoryStore(ABC):
    """Durable state of the shared memories (see the module docstring for the rules)."""

    @abstractmethod
    async def create(self, memory: Memory, wrapped_key: WrappedKey, *, max_owned: int) -> None:
        """Store a new memory and its owner's epoch-0 wrapped key. :class:`QuotaExceeded`
        (``agent.maxMemories``) if the owner already owns ``max_owned`` memories."""

    @abstractmethod
    async def get(self, memory_id: str) -> Memory | None:
        """The memory, or None if there is none with that id."""

    @abstractmethod
    async def list_for(self, agent: str) -> list[Memory]:
        """Memories ``agent`` owns or holds a grant on (expired or not), by creation time."""

    @abstractmethod
    async def destroy(self, memory_id: str) -> bool:
        """Remove the memory and everything in it; False if there was none."""

    @abstractmethod
    async def wrapped_keys(self, memory_id: str, agent: str) -> list[WrappedKey]:
        """``agent``'s wrapped keys for the memory, by epoch."""

    @abstractmethod
    async def put_segment(
        self,
        memory_id: str,
        segment: StoredSegment,
        *,
        expected_version: int,
        agent_max_bytes: int,
        agent_max_segments: int,
    ) -> Memory:
        """Compare-and-set write; returns the memory with its updated usage.

        :class:`MemoryNotFound`, :class:`StaleWrite` (version or epoch),
        :class:`QuotaExceeded`, ``ValueError`` if ``segment.version`` is not
        ``expected_version + 1``.
        """

    @abstractmethod
    async def get_segment(self, memory_id: str, key: str) -> StoredSegment | None:
        """The segment stored under ``key``, or None."""

    @abstractmethod
    async def list_segments(self, memory_id: str) -> list[SegmentInfo]:
        """Every segment's metadata, by key."""

    @abstractmethod
    async def delete_segment(self, memory_id: str, key: str, *, expected_version: int) -> bool:
        """Compare-and-set delete; False if no such segment, :class:`StaleWrite` if its
        version is not ``expected_version``."""

    @abstractmethod
    async def grant(
        self, memory_id: str, grant: Grant, wrapped_keys: Sequence[WrappedKey], *, max_grants: int
    ) -> Memory:
        """Add or replace ``grant`` and replace its agent's wrapped keys (one per epoch
        ``0..epoch``); :class:`QuotaExceeded` (``memory.maxGrants``) past ``max_grants``."""

    @abstractmethod
    async def revoke(
        self,
        memory_id: str,
        agent: str,
        *,
        new_epoch: int,
        wrapped_keys: Sequence[WrappedKey],
        now: float,
    ) -> Memory:
        """Remove ``agent``'s grant and keys and rotate to ``new_epoch`` in one step
        (checked with :func:`~trustwire.memory.model.check_rewrap`)."""

    @abstractmethod
    async def agent_usage(self, agent: str) -> Usage:
        """What ``agent`` has written, summed over every memory."""

    @abstractmethod
    async def purge_expired(self, now: float) -> list[str]:
        """Destroy every memory with ``expires_at <= now``; return their ids."""

    @abstractmethod
    async def close(self) -> None:
        """Release the backend (idempotent)."""


def _revoke_checks(memory: Memory, agent: str) -> None:
    if memory.grant_of(agent) is None:
        raise ValueError("that agent holds no grant on this memory")


def _grant_checks(
    memory: Memory, grant: Grant, wrapped_keys: Sequence[WrappedKey], max_grants: int
) -> None:
    if grant.agent == memory.owner:
        raise ValueError("the owner holds every right on its memory and cannot be granted")
    check_grant_keys(memory, grant.agent, wrapped_keys)
    if memory.grant_of(grant.agent) is None and len(memory.grants) >= max_grants:
        raise QuotaExceeded(
            "memory.maxGrants", limit=max_grants, used=len(memory.grants), requested=1
        )


def _with_grant(memory: Memory, grant: Grant) -> Memory:
    others = tuple(g for g in memory.grants if g.agent != grant.agent)
    return dataclasses.replace(memory, grants=(*others, grant))


class InMemoryMemoryStore(MemoryStore):
    """Everything in process memory; nothing survives the process.

    Each operation runs without awaiting, so under one event loop it is atomic.
    """

    def __init__(self) -> None:
        self._memories: dict[str, Memory] = {}
        self._segments: dict[str, dict[str, StoredSegment]] = {}
        self._keys: dict[str, dict[tuple[str, int], WrappedKey]] = {}
        self._usage: dict[str, Usage] = {}

    def _memory(self, memory_id: str) -> Memory:
        memory = self._memories.get(memory_id)
        if memory is None:
            raise _not_found()
        return memory

    def _add_usage(self, agent: str, size: int, count: int) -> None:
        old = self._usage.get(agent, Usage())
        new = Usage(old.bytes + size, old.segments + count)
        if new.bytes == 0 and new.segments == 0:
            self._usage.pop(agent, None)
        else:
            self._usage[agent] = new

    async def create(self, memory: Memory, wrapped_key: WrappedKey, *, max_owned: int) -> None:
        if memory.id in self._memories:
            raise ValueError("a memory with this id already exists")
        owned = sum(1 for m in self._memories.values() if m.owner == memory.owner)
        if owned >= max_owned:
            raise QuotaExceeded("agent.maxMemories", limit=max_owned, used=owned, requested=1)
        self._memories[memory.id] = memory
        self._segments[memory.id] = {}
        self._keys[memory.id] = {(wrapped_key.agent, wrapped_key.epoch): wrapped_key}

    async def get(self, memory_id: str) -> Memory | None:
        return self._memories.get(memory_id)

    async def list_for(self, agent: str) -> list[Memory]:
        found = [
            m for m in self._memories.values() if m.owner == agent or m.grant_of(agent) is not None
        ]
        return sorted(found, key=lambda m: (m.created_at, m.id))

    def _destroy(self, memory_id: str) -> bool:
        if self._memories.pop(memory_id, None) is None:
            return False
        for segment in self._segments.pop(memory_id, {}).values():
            self._add_usage(segment.writer, -segment.size, -1)
        self._keys.pop(memory_id, None)
        return True

    async def destroy(self, memory_id: str) -> bool:
        return self._destroy(memory_id)

    async def wrapped_keys(self, memory_id: str, agent: str) -> list[WrappedKey]:
        keys = self._keys.get(memory_id, {})
        return sorted((k for k in keys.values() if k.agent == agent), key=lambda k: k.epoch)

    async def put_segment(
        self,
        memory_id: str,
        segment: StoredSegment,
        *,
        expected_version: int,
        agent_max_bytes: int,
        agent_max_segments: int,
    ) -> Memory:
        memory = self._memory(memory_id)
        segments = self._segments[memory_id]
        old = segments.get(segment.key)
        _check_cas(memory, 0 if old is None else old.version, expected_version, segment)
        writer_usage = self._usage.get(segment.writer, Usage())
        plan_write(
            memory,
            None if old is None else old.info,
            segment,
            writer_usage,
            agent_max_bytes=agent_max_bytes,
            agent_max_segments=agent_max_segments,
        )
        if old is not None:
            self._add_usage(old.writer, -old.size, -1)
        self._add_usage(segment.writer, segment.size, 1)
        segments[segment.key] = segment
        old_size, old_count = (0, 0) if old is None else (old.size, 1)
        usage = Usage(
            memory.usage.bytes - old_size + segment.size, memory.usage.segments - old_count + 1
        )
        memory = dataclasses.replace(memory, usage=usage)
        self._memories[memory_id] = memory
        return memory

    async def get_segment(self, memory_id: str, key: str) -> StoredSegment | None:
        return self._segments.get(memory_id, {}).get(key)

    async def list_segments(self, memory_id: str) -> list[SegmentInfo]:
        segments = self._segments.get(memory_id, {})
        return [segments[key].info for key in sorted(segments)]

    async def delete_segment(self, memory_id: str, key: str, *, expected_version: int) -> bool:
        memory = self._memory(memory_id)
        segments = self._segments[memory_id]
        old = segments.get(key)
        if old is None:
            return False
        _check_cas(memory, old.version, expected_version, None)
        del segments[key]
        self._add_usage(old.writer, -old.size, -1)
        usage = Usage(memory.usage.bytes - old.size, memory.usage.segments - 1)
        self._memories[memory_id] = dataclasses.replace(memory, usage=usage)
        return True

    async def grant(
        self, memory_id: str, grant: Grant, wrapped_keys: Sequence[WrappedKey], *, max_grants: int
    ) -> Memory:
        memory = self._memory(memory_id)
        _grant_checks(memory, grant, wrapped_keys, max_grants)
        keys = self._keys[memory_id]
        for slot in [slot for slot in keys if slot[0] == grant.agent]:
            del keys[slot]
        keys.update({(k.agent, k.epoch): k for k in wrapped_keys})
        memory = _with_grant(memory, grant)
        self._memories[memory_id] = memory
        return memory

    async def revoke(
        self,
        memory_id: str,
        agent: str,
        *,
        new_epoch: int,
        wrapped_keys: Sequence[WrappedKey],
        now: float,
    ) -> Memory:
        memory = self._memory(memory_id)
        _revoke_checks(memory, agent)
        check_rewrap(memory, agent, new_epoch, wrapped_keys, now=now)
        keys = self._keys[memory_id]
        for slot in [slot for slot in keys if slot[0] == agent]:
            del keys[slot]
        keys.update({(k.agent, k.epoch): k for k in wrapped_keys})
        memory = dataclasses.replace(
            memory, epoch=new_epoch, grants=tuple(g for g in memory.grants if g.agent != agent)
        )
        self._memories[memory_id] = memory
        return memory

    async def agent_usage(self, agent: str) -> Usage:
        return self._usage.get(agent, Usage())

    async def purge_expired(self, now: float) -> list[str]:
        expired = [
            m.id
            for m in self._memories.values()
            if m.expires_at is not None and m.expires_at <= now
        ]
        for memory_id in expired:
            self._destroy(memory_id)
        return expired

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------- SQLite

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


def _damaged(path: str, what: str, exc: Exception) -> StoreError:
    return StoreError(f"{path}: damaged {what} ({exc})")


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
        try:
            return Memory(
                id=row[0],
                owner=row[1],
                type=row[2],
                created_at=row[3],
                expires_at=row[4],
                epoch=row[5],
                quotas=Quotas(row[6], row[7]),
                grants=tuple(Grant(g[0], g[1], g[2], g[3]) for g in grants),
                usage=Usage(row[8], row[9]),
            )
        except (ValueError, TypeError) as exc:
            raise _damaged(self._db.path, "memory record", exc) from exc

    def _require(self, connection: sqlite3.Connection, memory_id: str) -> Memory:
        memory = self._load(connection, memory_id)
        if memory is None:
            raise _not_found()
        return memory

    def _segment_from(self, row: tuple[Any, ...]) -> StoredSegment:
        try:
            return StoredSegment(*row)
        except (ValueError, TypeError) as exc:
            raise _damaged(self._db.path, "segment", exc) from exc

    def _usage_of(self, connection: sqlite3.Connection, agent: str) -> Usage:
        row = connection.execute(
            "SELECT bytes, segments FROM agent_usage WHERE agent = ?", (agent,)
        ).fetchone()
        if row is None:
            return Usage()
        try:
            return Usage(row[0], row[1])
        except (ValueError, TypeError) as exc:
            raise _damaged(self._db.path, "agent usage", exc) from exc

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
            if owned >= max_owned:
                raise QuotaExceeded("agent.maxMemories", limit=max_owned, used=owned, requested=1)
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
            try:
                return [WrappedKey(*row) for row in rows]
            except (ValueError, TypeError) as exc:
                raise _damaged(self._db.path, "wrapped key", exc) from exc

        return await self._db.run(job)

    def _old_segment(
        self, connection: sqlite3.Connection, memory_id: str, key: str
    ) -> StoredSegment | None:
        row = connection.execute(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE memory_id = ? AND key = ?",  # noqa: S608
            (memory_id, key),
        ).fetchone()
        return None if row is None else self._segment_from(row)

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
            _check_cas(memory, 0 if old is None else old.version, expected_version, segment)
            plan_write(
                memory,
                None if old is None else old.info,
                segment,
                self._usage_of(connection, segment.writer),
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
            old_size, old_count = (0, 0) if old is None else (old.size, 1)
            usage = Usage(
                memory.usage.bytes - old_size + segment.size,
                memory.usage.segments - old_count + 1,
            )
            self._set_usage(connection, memory_id, usage)
            return dataclasses.replace(memory, usage=usage)

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
            try:
                return [SegmentInfo(*row) for row in rows]
            except (ValueError, TypeError) as exc:
                raise _damaged(self._db.path, "segment", exc) from exc

        return await self._db.run(job)

    async def delete_segment(self, memory_id: str, key: str, *, expected_version: int) -> bool:
        def job(connection: sqlite3.Connection) -> bool:
            memory = self._require(connection, memory_id)
            old = self._old_segment(connection, memory_id, key)
            if old is None:
                return False
            _check_cas(memory, old.version, expected_version, None)
            connection.execute(
                "DELETE FROM segments WHERE memory_id = ? AND key = ?", (memory_id, key)
            )
            self._add_usage(connection, old.writer, -old.size, -1)
            self._set_usage(
                connection,
                memory_id,
                Usage(memory.usage.bytes - old.size, memory.usage.segments - 1),
            )
            return True

        return await self._db.write(job)

    async def grant(
        self, memory_id: str, grant: Grant, wrapped_keys: Sequence[WrappedKey], *, max_grants: int
    ) -> Memory:
        def job(connection: sqlite3.Connection) -> Memory:
            memory = self._require(connection, memory_id)
            _grant_checks(memory, grant, wrapped_keys, max_grants)
            connection.execute(
                "DELETE FROM wrapped_keys WHERE memory_id = ? AND agent = ?",
                (memory_id, grant.agent),
            )
            connection.execute(
                "DELETE FROM grants WHERE memory_id = ? AND agent = ?", (memory_id, grant.agent)
            )
            connection.execute(
                f"INSERT INTO grants (memory_id, {_GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",  # noqa: S608
                (memory_id, grant.agent, grant.level, grant.expires_at, grant.granted_by),
            )
            self._insert_keys(connection, memory_id, wrapped_keys)
            return _with_grant(memory, grant)

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
            memory = self._require(connection, memory_id)
            _revoke_checks(memory, agent)
            check_rewrap(memory, agent, new_epoch, wrapped_keys, now=now)
            connection.execute(
                "DELETE FROM grants WHERE memory_id = ? AND agent = ?", (memory_id, agent)
            )
            connection.execute(
                "DELETE FROM wrapped_keys WHERE memory_id = ? AND agent = ?", (memory_id, agent)
            )
            connection.execute("UPDATE memories SET epoch = ? WHERE id = ?", (new_epoch, memory_id))
            self._insert_keys(connection, memory_id, wrapped_keys)
            return dataclasses.replace(
                memory,
                epoch=new_epoch,
                grants=tuple(g for g in memory.grants if g.agent != agent),
            )

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


async def open_memory_store(url: str, *, synchronous: str = "NORMAL") -> MemoryStore:
    """Open the shared-memory store ``url`` names: ``memory://`` (in process) or
    ``sqlite:///absolute/path.db`` / ``sqlite:relative/path.db`` (its own file).

    :class:`~trustwire.errors.ConfigurationError` for an unsupported or malformed URL
    (the message names the scheme, never the whole URL);
    :class:`~trustwire.errors.StoreError` if the file cannot be opened or is not a
    shared-memory store.
    """
    if not isinstance(url, str):
        raise ConfigurationError("a shared-memory store URL must be a string")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "memory":
        if parsed.netloc or parsed.path or parsed.query or parsed.fragment:
            raise ConfigurationError("memory:// store URLs take no host, path or query")
        return InMemoryMemoryStore()
    if parsed.scheme == "sqlite":
        path = urllib.parse.unquote(parsed.path)
        if parsed.netloc or parsed.query or parsed.fragment:
            raise ConfigurationError(
                "sqlite store URLs are sqlite:///absolute/path.db or sqlite:relative/path.db"
            )
        if not path or path.endswith("/") or "\x00" in path:
            raise ConfigurationError("sqlite store URL needs a database file path")
        mode = synchronous.upper()
        if mode not in ("FULL", "NORMAL"):
            raise ConfigurationError("sqlite option synchronous must be one of FULL, NORMAL")
        return await SqliteMemoryStore.open(path, synchronous=mode)
    raise ConfigurationError(
        f"unsupported shared-memory store scheme {parsed.scheme!r} (use memory:// or sqlite:)"
    )
