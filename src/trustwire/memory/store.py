"""Where the coordinator keeps shared memories: metadata, wrapped keys and ciphertext.

:class:`MemoryStore` is the interface; :class:`InMemoryMemoryStore` keeps everything in
the process and :class:`~trustwire.memory.sqlite.SqliteMemoryStore` in its own SQLite file
(:mod:`trustwire.memory.sqlite`). :func:`open_memory_store` picks one by URL.

The rules are written once, in the ``plan_*`` functions: a backend loads the memory (and
the segment or usage concerned), asks the plan function, which raises or returns the
memory as it will be, and stores that in one atomic step.

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
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trustwire.errors import ConfigurationError, MemoryNotFound
from trustwire.memory.model import (
    Grant,
    Memory,
    QuotaExceeded,
    SegmentInfo,
    StaleWrite,
    StoredSegment,
    Usage,
    WrappedKey,
    check_grant_keys,
    check_rewrap,
)

if TYPE_CHECKING:
    from trustwire.memory.sqlite import SCHEMA_VERSION, SqliteMemoryStore

__all__ = [
    "SCHEMA_VERSION",
    "InMemoryMemoryStore",
    "MemoryStore",
    "SqliteMemoryStore",
    "open_memory_store",
    "plan_create",
    "plan_delete",
    "plan_grant",
    "plan_put",
    "plan_revoke",
    "plan_write",
    "require_memory",
]


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


def plan_put(
    memory: Memory,
    old: SegmentInfo | None,
    segment: StoredSegment,
    writer_usage: Usage,
    *,
    expected_version: int,
    agent_max_bytes: int,
    agent_max_segments: int,
) -> Memory:
    """Check a compare-and-set write of ``segment`` over ``old`` (None: a new key) and
    return ``memory`` with its usage after the write.

    :class:`StaleWrite` for a version or epoch that is not current, ``ValueError`` if
    ``segment.version`` is not ``expected_version + 1``, :class:`QuotaExceeded` as
    :func:`plan_write` decides.
    """
    _check_version(memory, 0 if old is None else old.version, expected_version, segment)
    plan_write(
        memory,
        old,
        segment,
        writer_usage,
        agent_max_bytes=agent_max_bytes,
        agent_max_segments=agent_max_segments,
    )
    old_size, old_count = (0, 0) if old is None else (old.size, 1)
    usage = Usage(
        memory.usage.bytes - old_size + segment.size, memory.usage.segments - old_count + 1
    )
    return dataclasses.replace(memory, usage=usage)


def plan_delete(memory: Memory, old: SegmentInfo, *, expected_version: int) -> Memory:
    """Check a compare-and-set delete of ``old`` (:class:`StaleWrite` if its version is
    not ``expected_version``) and return ``memory`` with its usage after the delete."""
    _check_version(memory, old.version, expected_version, None)
    usage = Usage(memory.usage.bytes - old.size, memory.usage.segments - 1)
    return dataclasses.replace(memory, usage=usage)


def plan_create(owned: int, *, max_owned: int) -> None:
    """Raise :class:`QuotaExceeded` (``agent.maxMemories``) if an owner of ``owned``
    memories may not create another."""
    if owned >= max_owned:
        raise QuotaExceeded("agent.maxMemories", limit=max_owned, used=owned, requested=1)


def plan_grant(
    memory: Memory, grant: Grant, wrapped_keys: Sequence[WrappedKey], *, max_grants: int
) -> Memory:
    """Check ``grant`` with its ``wrapped_keys`` and return ``memory`` holding it (in place
    of the agent's previous grant, if any).

    ``ValueError`` for a grant to the owner or keys that do not cover every epoch (see
    :func:`~trustwire.memory.model.check_grant_keys`); :class:`QuotaExceeded`
    (``memory.maxGrants``) for a new grantee past ``max_grants``.
    """
    if grant.agent == memory.owner:
        raise ValueError("the owner holds every right on its memory and cannot be granted")
    check_grant_keys(memory, grant.agent, wrapped_keys)
    if memory.grant_of(grant.agent) is None and len(memory.grants) >= max_grants:
        raise QuotaExceeded(
            "memory.maxGrants", limit=max_grants, used=len(memory.grants), requested=1
        )
    others = tuple(g for g in memory.grants if g.agent != grant.agent)
    return dataclasses.replace(memory, grants=(*others, grant))


def plan_revoke(
    memory: Memory, agent: str, *, new_epoch: int, wrapped_keys: Sequence[WrappedKey], now: float
) -> Memory:
    """Check revoking ``agent`` and rotating to ``new_epoch`` with ``wrapped_keys`` (see
    :func:`~trustwire.memory.model.check_rewrap`) and return ``memory`` after it.

    ``ValueError`` if ``agent`` holds no grant.
    """
    if memory.grant_of(agent) is None:
        raise ValueError("that agent holds no grant on this memory")
    check_rewrap(memory, agent, new_epoch, wrapped_keys, now=now)
    return dataclasses.replace(
        memory, epoch=new_epoch, grants=tuple(g for g in memory.grants if g.agent != agent)
    )


def require_memory(memory: Memory | None) -> Memory:
    """``memory``, or :class:`MemoryNotFound` when it is None (every backend says the same)."""
    if memory is None:
        raise MemoryNotFound("no such memory")
    return memory


def _check_version(
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
        return require_memory(self._memories.get(memory_id))

    def _add_usage(self, agent: str, size: int, count: int) -> None:
        old = self._usage.get(agent, Usage())
        new = Usage(old.bytes + size, old.segments + count)
        if new.bytes == 0 and new.segments == 0:
            self._usage.pop(agent, None)
        else:
            self._usage[agent] = new

    def _replace_keys(self, memory_id: str, agent: str, wrapped_keys: Sequence[WrappedKey]) -> None:
        """Drop ``agent``'s wrapped keys for the memory, then store ``wrapped_keys``."""
        keys = self._keys[memory_id]
        for slot in [slot for slot in keys if slot[0] == agent]:
            del keys[slot]
        keys.update({(k.agent, k.epoch): k for k in wrapped_keys})

    async def create(self, memory: Memory, wrapped_key: WrappedKey, *, max_owned: int) -> None:
        if memory.id in self._memories:
            raise ValueError("a memory with this id already exists")
        owned = sum(1 for m in self._memories.values() if m.owner == memory.owner)
        plan_create(owned, max_owned=max_owned)
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
        memory = plan_put(
            memory,
            None if old is None else old.info,
            segment,
            self._usage.get(segment.writer, Usage()),
            expected_version=expected_version,
            agent_max_bytes=agent_max_bytes,
            agent_max_segments=agent_max_segments,
        )
        if old is not None:
            self._add_usage(old.writer, -old.size, -1)
        self._add_usage(segment.writer, segment.size, 1)
        segments[segment.key] = segment
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
        memory = plan_delete(memory, old.info, expected_version=expected_version)
        del segments[key]
        self._add_usage(old.writer, -old.size, -1)
        self._memories[memory_id] = memory
        return True

    async def grant(
        self, memory_id: str, grant: Grant, wrapped_keys: Sequence[WrappedKey], *, max_grants: int
    ) -> Memory:
        memory = plan_grant(self._memory(memory_id), grant, wrapped_keys, max_grants=max_grants)
        self._replace_keys(memory_id, grant.agent, wrapped_keys)
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
        memory = plan_revoke(
            self._memory(memory_id),
            agent,
            new_epoch=new_epoch,
            wrapped_keys=wrapped_keys,
            now=now,
        )
        self._replace_keys(memory_id, agent, wrapped_keys)
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
        # Imported here: the SQLite backend imports this module.
        from trustwire.memory.sqlite import SqliteMemoryStore

        return await SqliteMemoryStore.open(path, synchronous=mode)
    raise ConfigurationError(
        f"unsupported shared-memory store scheme {parsed.scheme!r} (use memory:// or sqlite:)"
    )


def __getattr__(name: str) -> object:
    # The SQLite backend imports this module, so it is re-exported lazily (PEP 562).
    if name in ("SCHEMA_VERSION", "SqliteMemoryStore"):
        from trustwire.memory import sqlite

        return getattr(sqlite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
