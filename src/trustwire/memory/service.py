"""The coordinator's shared-memory service: every access decided, enforced and recorded.

:class:`MemoryService` sits between the API routes and the :class:`MemoryStore`. Each
method takes the caller's DID (already authenticated by the transport) and either
returns or raises a typed error that the API maps to a status code.

Authorization (checked at every request, against the injected clock):

- The caller must be enrolled and not revoked (a revoked agent is refused at once).
- ``read`` (get, keys, list or get segments) needs policy ``memory.read`` from the caller
  to the memory's owner, and the caller must be the owner or hold a grant of any level.
- ``write`` (put or delete a segment) needs policy ``memory.write`` and a grant of at
  least ``write``; ``admin`` (grant, revoke, destroy) needs policy ``memory.write`` and
  ownership or an ``admin`` grant. An admin grantee whose grant expires cannot grant
  anyone (itself included) access that outlives its own. ``create`` needs policy
  ``memory.write`` from the caller to itself. The owner holds an implicit ``admin`` grant.
- A memory stops working at its ``expires_at`` exactly (``MemoryExpired``, 410), a grant
  at its ``expires_at`` exactly (``MemoryAccessDenied``, 403). Expired memories are
  deleted by :meth:`MemoryService.purge_expired` (run periodically by
  :meth:`MemoryService.run_purger`).

Integrity checks the coordinator can make without keys: a written segment must name the
caller as writer, carry the next version, use the memory's current key epoch, and carry
a hash that matches its fields and an Ed25519 signature by the writer over that hash
(junk is refused before it is stored; readers still verify and decrypt themselves).

Every decision, allowed or denied, becomes one :class:`~trustwire.events.SecurityEvent`
(``memory.*``; ``memory.denied`` with a machine-readable reason). Events carry metadata
only: the memory id, sizes, versions, epochs, levels and a memory-scoped SHA-256
fingerprint of a segment key (:func:`~trustwire.memory.model.key_fingerprint`), never a
key name, a value, a ciphertext or a wrapped key.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from trustwire.errors import (
    InvalidDid,
    InvalidSignature,
    MemoryAccessDenied,
    MemoryExpired,
    MemoryNotFound,
    SegmentRejected,
    StoreError,
)
from trustwire.events import DetailValue, EventKind, EventStream, SecurityEvent
from trustwire.identity.did import is_did
from trustwire.memory.model import (
    DEFAULT_TYPE,
    AccessLevel,
    Grant,
    Memory,
    MemoryLimits,
    QuotaExceeded,
    Quotas,
    Segment,
    SegmentInfo,
    StaleWrite,
    StoredSegment,
    WrappedKey,
    check_grant_keys,
    check_memory_id,
    check_rewrap,
    check_segment_key,
    key_fingerprint,
    level_at_least,
    signature_input,
)
from trustwire.memory.store import MemoryStore
from trustwire.policy.engine import Decision, Principal
from trustwire.protocol.channel import verify_key_of
from trustwire.store.base import AgentRecord

__all__ = ["Authorizer", "MemoryService", "SegmentNotFound"]

_log = logging.getLogger(__name__)


class Authorizer(Protocol):
    """What the service needs of the policy engine (:class:`~trustwire.policy.engine.
    PolicyEngine` is one)."""

    def authorize(
        self, principal: Principal, action: str, resource: Principal, *, now: float
    ) -> Decision: ...


class SegmentNotFound(MemoryNotFound):
    """The memory exists but holds no segment under the requested key (HTTP 404,
    ``details.resource == "segment"``)."""

    def __init__(self) -> None:
        super().__init__("no segment with that key in this memory")
        self.details = {"resource": "segment"}


class _Denied(Exception):
    """Internal: carries the exception to raise and the reason to record."""


class MemoryService:
    """Authorizes, validates and records every shared-memory operation.

    ``policy`` answers ``memory.read``/``memory.write`` (default deny); ``agents`` looks a
    DID up in the directory (``None`` if not enrolled); ``events`` receives one event per
    decision; ``clock`` gives epoch seconds (inject a fake one in tests); ``limits`` holds
    the quotas.
    """

    def __init__(
        self,
        store: MemoryStore,
        *,
        policy: Authorizer,
        agents: Callable[[str], AgentRecord | None],
        events: EventStream,
        clock: Callable[[], float] = time.time,
        limits: MemoryLimits | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.limits = MemoryLimits() if limits is None else limits
        self._agents = agents
        self._events = events
        self._clock = clock

    # -- events ----------------------------------------------------------------------------

    def _emit(
        self,
        kind: EventKind,
        now: float,
        *,
        agent: str | None,
        peer: str | None = None,
        reason: str | None = None,
        **details: DetailValue,
    ) -> None:
        self._events.emit(
            SecurityEvent(
                kind=kind, time=now, agent=agent, peer=peer, reason=reason, details=details
            )
        )

    def _deny(
        self,
        exc: Exception,
        now: float,
        caller: str,
        operation: str,
        reason: str,
        *,
        memory: str | None = None,
        peer: str | None = None,
        **details: DetailValue,
    ) -> Exception:
        """Record a ``memory.denied`` event and return ``exc`` for the caller to raise."""
        if memory is not None:
            details["memory"] = memory
        self._emit(
            EventKind.MEMORY_DENIED,
            now,
            agent=caller,
            peer=peer,
            reason=reason,
            operation=operation,
            **details,
        )
        return exc

    # -- checks ----------------------------------------------------------------------------

    def _caller(self, caller: str, now: float, operation: str) -> AgentRecord:
        record = self._agents(caller)
        if record is None:
            raise self._deny(
                MemoryAccessDenied("not an enrolled agent"), now, caller, operation, "unknown_agent"
            )
        if record.revoked:
            raise self._deny(
                MemoryAccessDenied("the agent is revoked"), now, caller, operation, "agent_revoked"
            )
        return record

    @staticmethod
    def _principal(record: AgentRecord) -> Principal:
        return Principal(did=record.did, name=record.name, roles=record.roles)

    def _policy(
        self,
        record: AgentRecord,
        action: str,
        resource: AgentRecord,
        now: float,
        operation: str,
        memory_id: str | None,
    ) -> None:
        decision = self.policy.authorize(
            self._principal(record), action, self._principal(resource), now=now
        )
        if not decision.allowed:
            raise self._deny(
                MemoryAccessDenied("denied by policy"),
                now,
                record.did,
                operation,
                "policy_denied",
                memory=memory_id,
                peer=resource.did,
                action=action,
                rule=decision.rule or "",
            )

    async def _access(
        self, caller: str, memory_id: str, need: AccessLevel, operation: str
    ) -> tuple[Memory, AgentRecord, float]:
        """The memory, the caller's record and the decision time, once every rule allows
        ``caller`` to act at level ``need``; else raise (and record) the refusal."""
        now = self._clock()
        record = self._caller(caller, now, operation)
        try:
            check_memory_id(memory_id)
        except ValueError as exc:
            raise self._deny(exc, now, caller, operation, "invalid_request") from None
        memory = await self.store.get(memory_id)
        if memory is None:
            raise self._deny(
                MemoryNotFound("no such memory"), now, caller, operation, "not_found",
                memory=memory_id,
            )  # fmt: skip
        denied = MemoryAccessDenied("access denied")
        grant = None
        if caller != memory.owner:
            grant = memory.grant_of(caller)
            if grant is None:
                raise self._deny(
                    denied, now, caller, operation, "no_grant", memory=memory.id, peer=memory.owner
                )
        owner = self._agents(memory.owner)
        if owner is None:
            raise self._deny(
                denied, now, caller, operation, "owner_unknown", memory=memory.id, peer=memory.owner
            )
        action = "memory.read" if need == "read" else "memory.write"
        self._policy(record, action, owner, now, operation, memory.id)
        if memory.expired(now):
            raise self._deny(
                MemoryExpired("the memory has expired"),
                now,
                caller,
                operation,
                "memory_expired",
                memory=memory.id,
                peer=memory.owner,
            )
        if grant is not None:
            if not grant.active(now):
                raise self._deny(
                    denied,
                    now,
                    caller,
                    operation,
                    "grant_expired",
                    memory=memory.id,
                    peer=memory.owner,
                )
            if not level_at_least(grant.level, need):
                raise self._deny(
                    denied,
                    now,
                    caller,
                    operation,
                    "insufficient_level",
                    memory=memory.id,
                    peer=memory.owner,
                    level=grant.level,
                    required=need,
                )
        return memory, record, now

    # -- memories --------------------------------------------------------------------------

    async def create(
        self,
        caller: str,
        *,
        wrapped_key: WrappedKey,
        memory_id: str | None = None,
        type: str = DEFAULT_TYPE,
        expires_at: float | None = None,
        max_bytes: int | None = None,
        max_segments: int | None = None,
    ) -> Memory:
        """Create a memory owned by ``caller``, holding its epoch-0 ``wrapped_key``.

        ``memory_id`` is the id the client chose (its wrapped key binds the id, so a client
        sealing keys picks it); None lets the service choose a random UUID4. An id already
        in use is a ``ValueError``.
        """
        operation = "create"
        now = self._clock()
        record = self._caller(caller, now, operation)
        self._policy(record, "memory.write", record, now, operation, None)
        limits = self.limits
        try:
            if wrapped_key.agent != caller or wrapped_key.epoch != 0:
                raise ValueError("wrappedKey must be the caller's own key for epoch 0")
            if expires_at is not None and expires_at <= now:
                raise ValueError("expiresAt must be in the future")
            for name, value, ceiling in (
                ("quotas.maxBytes", max_bytes, limits.max_bytes),
                ("quotas.maxSegments", max_segments, limits.max_segments),
            ):
                if value is not None and not 1 <= value <= ceiling:
                    raise ValueError(f"{name} must be between 1 and {ceiling}")
            memory = Memory(
                id=str(uuid.uuid4()) if memory_id is None else check_memory_id(memory_id),
                owner=caller,
                type=type,
                created_at=now,
                expires_at=expires_at,
                epoch=0,
                quotas=Quotas(
                    limits.max_bytes if max_bytes is None else max_bytes,
                    limits.max_segments if max_segments is None else max_segments,
                ),
            )
        except ValueError as exc:
            raise self._deny(exc, now, caller, operation, "invalid_request") from None
        try:
            await self.store.create(memory, wrapped_key, max_owned=limits.max_memories_owned)
        except QuotaExceeded as exc:
            raise self._deny(
                exc, now, caller, operation, "quota_exceeded", quota=exc.quota
            ) from None
        except ValueError as exc:  # the id is taken
            raise self._deny(exc, now, caller, operation, "invalid_request") from None
        self._emit(
            EventKind.MEMORY_CREATED,
            now,
            agent=caller,
            memory=memory.id,
            type=memory.type,
            expires=memory.expires_at is not None,
        )
        return memory

    async def list_for(self, caller: str) -> list[Memory]:
        """The unexpired memories ``caller`` owns or holds an active grant on and may read
        under the policy."""
        operation = "list"
        now = self._clock()
        record = self._caller(caller, now, operation)
        visible: list[Memory] = []
        for memory in await self.store.list_for(caller):
            if memory.expired(now):
                continue
            grant = memory.grant_of(caller)
            if caller != memory.owner and (grant is None or not grant.active(now)):
                continue
            owner = self._agents(memory.owner)
            if owner is None:
                continue
            decision = self.policy.authorize(
                self._principal(record), "memory.read", self._principal(owner), now=now
            )
            if decision.allowed:
                visible.append(memory)
        self._emit(
            EventKind.MEMORY_READ, now, agent=caller, operation=operation, count=len(visible)
        )
        return visible

    async def get(self, caller: str, memory_id: str) -> Memory:
        """The memory's metadata (read access)."""
        memory, _, now = await self._access(caller, memory_id, "read", "get")
        self._emit(
            EventKind.MEMORY_READ,
            now,
            agent=caller,
            peer=memory.owner,
            memory=memory.id,
            operation="get",
        )
        return memory

    async def destroy(self, caller: str, memory_id: str) -> None:
        """Delete the memory and everything in it (owner or admin)."""
        memory, _, now = await self._access(caller, memory_id, "admin", "destroy")
        if not await self.store.destroy(memory.id):
            raise self._deny(
                MemoryNotFound("no such memory"), now, caller, "destroy", "not_found",
                memory=memory.id,
            )  # fmt: skip
        self._emit(
            EventKind.MEMORY_DESTROYED,
            now,
            agent=caller,
            peer=memory.owner,
            memory=memory.id,
            segments=memory.usage.segments,
            bytes=memory.usage.bytes,
        )

    async def keys_for(self, caller: str, memory_id: str) -> list[WrappedKey]:
        """The caller's own wrapped keys, every epoch it holds (read access)."""
        memory, _, now = await self._access(caller, memory_id, "read", "keys")
        keys = await self.store.wrapped_keys(memory.id, caller)
        self._emit(
            EventKind.MEMORY_READ,
            now,
            agent=caller,
            peer=memory.owner,
            memory=memory.id,
            operation="keys",
            count=len(keys),
        )
        return keys

    # -- segments --------------------------------------------------------------------------

    def _check_key(self, caller: str, memory_id: str, key: str, operation: str) -> str:
        try:
            return check_segment_key(key)
        except ValueError as exc:
            raise self._deny(
                exc, self._clock(), caller, operation, "invalid_request", memory=memory_id
            ) from None

    async def put_segment(
        self, caller: str, memory_id: str, key: str, segment: Segment, *, expected_version: int
    ) -> StoredSegment:
        """Compare-and-set write of ``segment`` under ``key`` (write access).

        ``expected_version`` is the version being replaced (0: the key must not exist);
        ``segment.version`` must be ``expected_version + 1``.
        """
        operation = "put"
        self._check_key(caller, memory_id, key, operation)
        memory, _, now = await self._access(caller, memory_id, "write", operation)
        facts: dict[str, DetailValue] = {
            "key": key_fingerprint(memory.id, key),
            "version": segment.version,
            "epoch": segment.epoch,
            "size": segment.size,
        }

        def deny(exc: Exception, reason: str, **more: DetailValue) -> Exception:
            return self._deny(
                exc, now, caller, operation, reason, memory=memory.id, peer=memory.owner,
                **facts, **more,
            )  # fmt: skip

        if segment.writer != caller:
            raise deny(
                MemoryAccessDenied("the segment's writer must be the caller"), "writer_mismatch"
            )
        if segment.key != key:
            raise deny(ValueError("segment.key must be the key in the path"), "invalid_request")
        if isinstance(expected_version, bool) or not isinstance(expected_version, int):
            raise deny(ValueError("expectedVersion must be an integer"), "invalid_request")
        if expected_version < 0 or segment.version != expected_version + 1:
            raise deny(ValueError("segment.version must be expectedVersion + 1"), "invalid_request")
        if not segment.hash_matches(memory.id):
            raise deny(SegmentRejected("the segment hash does not match its fields"), "bad_hash")
        try:
            verify_key_of(segment.writer).verify(segment.signature, signature_input(segment.hash))
        except (InvalidSignature, InvalidDid, ValueError):
            raise deny(
                SegmentRejected("the writer's signature on the segment does not verify"),
                "bad_signature",
            ) from None
        stored = StoredSegment.from_segment(segment, written_at=now)
        try:
            await self.store.put_segment(
                memory.id,
                stored,
                expected_version=expected_version,
                agent_max_bytes=self.limits.agent_max_bytes,
                agent_max_segments=self.limits.agent_max_segments,
            )
        except StaleWrite as exc:
            reason = "epoch_conflict" if exc.current_epoch is not None else "version_conflict"
            raise deny(exc, reason) from None
        except QuotaExceeded as exc:
            raise deny(exc, "quota_exceeded", quota=exc.quota) from None
        except MemoryNotFound as exc:  # destroyed or purged meanwhile
            raise deny(exc, "not_found") from None
        self._events.emit(
            SecurityEvent(
                kind=EventKind.MEMORY_WRITTEN,
                time=now,
                agent=caller,
                peer=memory.owner,
                details={"memory": memory.id, "operation": operation, **facts},
            )
        )
        return stored

    async def get_segment(self, caller: str, memory_id: str, key: str) -> StoredSegment:
        """The segment stored under ``key`` (read access); :class:`SegmentNotFound` if none."""
        operation = "get_segment"
        self._check_key(caller, memory_id, key, operation)
        memory, _, now = await self._access(caller, memory_id, "read", operation)
        fingerprint = key_fingerprint(memory.id, key)
        segment = await self.store.get_segment(memory.id, key)
        if segment is None:
            raise self._deny(
                SegmentNotFound(), now, caller, operation, "segment_not_found",
                memory=memory.id, peer=memory.owner, key=fingerprint,
            )  # fmt: skip
        self._emit(
            EventKind.MEMORY_READ,
            now,
            agent=caller,
            peer=memory.owner,
            memory=memory.id,
            operation=operation,
            key=fingerprint,
            version=segment.version,
            epoch=segment.epoch,
            size=segment.size,
        )
        return segment

    async def list_segments(self, caller: str, memory_id: str) -> list[SegmentInfo]:
        """Every segment's metadata (read access)."""
        operation = "list_segments"
        memory, _, now = await self._access(caller, memory_id, "read", operation)
        segments = await self.store.list_segments(memory.id)
        self._emit(
            EventKind.MEMORY_READ,
            now,
            agent=caller,
            peer=memory.owner,
            memory=memory.id,
            operation=operation,
            count=len(segments),
        )
        return segments

    async def delete_segment(
        self, caller: str, memory_id: str, key: str, *, expected_version: int
    ) -> None:
        """Compare-and-set delete of the segment under ``key`` (write access)."""
        operation = "delete_segment"
        self._check_key(caller, memory_id, key, operation)
        memory, _, now = await self._access(caller, memory_id, "write", operation)
        fingerprint = key_fingerprint(memory.id, key)

        def deny(exc: Exception, reason: str) -> Exception:
            return self._deny(
                exc, now, caller, operation, reason, memory=memory.id, peer=memory.owner,
                key=fingerprint, version=expected_version,
            )  # fmt: skip

        try:
            deleted = await self.store.delete_segment(
                memory.id, key, expected_version=expected_version
            )
        except StaleWrite as exc:
            raise deny(exc, "version_conflict") from None
        except MemoryNotFound as exc:
            raise deny(exc, "not_found") from None
        if not deleted:
            raise deny(SegmentNotFound(), "segment_not_found")
        self._emit(
            EventKind.MEMORY_DELETED,
            now,
            agent=caller,
            peer=memory.owner,
            memory=memory.id,
            key=fingerprint,
            version=expected_version,
        )

    # -- grants ----------------------------------------------------------------------------

    async def grant(
        self,
        caller: str,
        memory_id: str,
        agent: str,
        level: AccessLevel,
        *,
        wrapped_keys: Sequence[WrappedKey],
        expires_at: float | None = None,
    ) -> Memory:
        """Give ``agent`` (enrolled, active) ``level`` access until ``expires_at`` (owner
        or admin); ``wrapped_keys`` hold the data key of every epoch ``0..epoch`` for it.
        Granting an agent that already holds a grant replaces it. A grant made by an admin
        grantee whose own grant expires must expire no later (``ValueError``).

        Only the owner may grant ``admin`` (:class:`MemoryAccessDenied` otherwise): an
        admin wraps data keys, and clients accept those only with the owner's signed
        admin certificate, which travels inside the keys the owner wraps for it."""
        operation = "grant"
        memory, _, now = await self._access(caller, memory_id, "admin", operation)
        if level == "admin" and caller != memory.owner:
            raise self._deny(
                MemoryAccessDenied("only the memory's owner can grant admin"),
                now,
                caller,
                operation,
                "not_owner",
                memory=memory.id,
                peer=agent,
            )

        def deny(exc: Exception, reason: str, **more: DetailValue) -> Exception:
            return self._deny(
                exc, now, caller, operation, reason, memory=memory.id, peer=agent, **more
            )

        grantee = self._agents(agent)
        if grantee is None or grantee.revoked:
            raise deny(
                ValueError("the grantee is not an enrolled, active agent"), "grantee_unknown"
            )
        try:
            if agent == memory.owner:
                raise ValueError("the owner holds every right on its memory already")
            if expires_at is not None and expires_at <= now:
                raise ValueError("expiresAt must be in the future")
            own = memory.grant_of(caller)
            if (
                own is not None
                and own.expires_at is not None
                and (expires_at is None or expires_at > own.expires_at)
            ):
                # Else a time-limited admin could renew itself, or an agent it controls,
                # past its own expiry.
                raise ValueError("a grant by an admin must expire no later than its own grant")
            check_grant_keys(memory, agent, wrapped_keys)
            grant = Grant(agent=agent, level=level, expires_at=expires_at, granted_by=caller)
        except ValueError as exc:
            raise deny(exc, "invalid_request") from None
        try:
            updated = await self.store.grant(
                memory.id, grant, wrapped_keys, max_grants=self.limits.max_grants
            )
        except QuotaExceeded as exc:
            raise deny(exc, "quota_exceeded", quota=exc.quota) from None
        except ValueError as exc:  # the epoch moved on meanwhile
            raise deny(exc, "invalid_request") from None
        except MemoryNotFound as exc:
            raise deny(exc, "not_found") from None
        self._emit(
            EventKind.MEMORY_GRANTED,
            now,
            agent=caller,
            peer=agent,
            memory=memory.id,
            level=level,
            expires=expires_at is not None,
            epochs=len(wrapped_keys),
        )
        return updated

    async def revoke(
        self,
        caller: str,
        memory_id: str,
        agent: str,
        *,
        epoch: int,
        wrapped_keys: Sequence[WrappedKey],
    ) -> Memory:
        """Remove ``agent``'s grant and rotate the data key (owner or admin).

        ``epoch`` must be the current epoch + 1 (else :class:`StaleWrite`, 409) and
        ``wrapped_keys`` the new data key for exactly the owner and every remaining
        active grantee at that epoch (else ``ValueError``, 400).
        """
        operation = "revoke"
        memory, _, now = await self._access(caller, memory_id, "admin", operation)

        def deny(exc: Exception, reason: str) -> Exception:
            # The path parameter is untrusted: only a well-formed DID goes into the event.
            peer = agent if is_did(agent) else None
            return self._deny(
                exc, now, caller, operation, reason, memory=memory.id, peer=peer, epoch=epoch
            )

        try:
            if not is_did(agent):
                raise ValueError("the agent must be a did:key")
            if memory.grant_of(agent) is None:
                raise ValueError("that agent holds no grant on this memory")
            check_rewrap(memory, agent, epoch, wrapped_keys, now=now)
            updated = await self.store.revoke(
                memory.id, agent, new_epoch=epoch, wrapped_keys=wrapped_keys, now=now
            )
        except StaleWrite as exc:
            raise deny(exc, "epoch_conflict") from None
        except ValueError as exc:
            raise deny(exc, "invalid_request") from None
        except MemoryNotFound as exc:
            raise deny(exc, "not_found") from None
        self._emit(
            EventKind.MEMORY_REVOKED,
            now,
            agent=caller,
            peer=agent,
            memory=memory.id,
            epoch=updated.epoch,
            recipients=len(wrapped_keys),
        )
        return updated

    # -- expiry ----------------------------------------------------------------------------

    async def purge_expired(self) -> list[str]:
        """Delete every memory that has expired by now; return their ids."""
        now = self._clock()
        purged = await self.store.purge_expired(now)
        for memory_id in purged:
            self._emit(EventKind.MEMORY_PURGED, now, agent=None, memory=memory_id)
        return purged

    async def run_purger(self, interval: float = 60.0) -> None:
        """Purge expired memories every ``interval`` seconds until cancelled.

        A failing purge (a store error, anything unexpected) is logged and retried at the
        next tick; it never ends the loop.
        """
        if not interval > 0:
            raise ValueError("the purge interval must be positive")
        while True:
            try:
                await self.purge_expired()
            except StoreError as exc:
                _log.warning("shared-memory purge failed: %s", exc)
            except Exception:
                _log.exception("shared-memory purge failed unexpectedly")
            await asyncio.sleep(interval)
