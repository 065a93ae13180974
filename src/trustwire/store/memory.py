"""In-process backend (``memory://``): plain dicts, nothing survives the process.

It implements the invariants of :mod:`trustwire.store.base` exactly, so tests and
single-process demos behave as the durable backends do. Every method body runs without
awaiting, so each call is atomic with respect to other coroutines on the event loop;
no lock is needed.

Layout: ``_by_id`` maps every pending message id to its message; ``_by_recipient``
holds, per recipient, a dict keyed by ``seq``. Messages are inserted in increasing
``seq`` order and dicts keep insertion order, so iterating a recipient's dict yields
delivery order. ``_tombstones`` maps an acknowledged id to the time its retention ends.
The directory's generation is a plain counter bumped by every successful change.
"""

from __future__ import annotations

import builtins
import dataclasses
import time
from collections.abc import Sequence

from trustwire.errors import DuplicateAgent, StoreError, UnknownAgent
from trustwire.store.base import (
    AgentDirectory,
    AgentRecord,
    DeliveryQueue,
    JoinTokens,
    NewMessage,
    QueuedMessage,
    Store,
    check_agreement,
    check_limit,
    check_retention,
    check_roles,
    check_text,
    check_time,
    check_token,
)

__all__ = [
    "MemoryAgentDirectory",
    "MemoryDeliveryQueue",
    "MemoryJoinTokens",
    "open_memory_store",
]


class _Lifetime:
    """The closed flag shared by the components of one memory store."""

    def __init__(self) -> None:
        self.closed = False

    def check(self) -> None:
        if self.closed:
            raise StoreError("the store is closed")


class MemoryAgentDirectory(AgentDirectory):
    """:class:`~trustwire.store.base.AgentDirectory` held in dicts."""

    def __init__(self, *, _lifetime: _Lifetime | None = None) -> None:
        self._lifetime = _lifetime if _lifetime is not None else _Lifetime()
        self._by_did: dict[str, AgentRecord] = {}
        self._did_by_name: dict[str, str] = {}
        self._generation = 0

    async def add(self, record: AgentRecord) -> None:
        self._lifetime.check()
        if record.name in self._did_by_name:
            raise DuplicateAgent("name", record.name)
        if record.did in self._by_did:
            raise DuplicateAgent("did", record.did)
        self._by_did[record.did] = record
        self._did_by_name[record.name] = record.did
        self._generation += 1

    async def get_by_did(self, did: str) -> AgentRecord | None:
        self._lifetime.check()
        return self._by_did.get(did)

    async def get_by_name(self, name: str) -> AgentRecord | None:
        self._lifetime.check()
        did = self._did_by_name.get(name)
        return None if did is None else self._by_did[did]

    async def set_roles(self, did: str, roles: Sequence[str]) -> None:
        self._lifetime.check()
        record = self._by_did.get(did)
        if record is None:
            raise UnknownAgent(f"no agent with DID {did!r}")
        self._by_did[did] = dataclasses.replace(record, roles=check_roles(roles))
        self._generation += 1

    async def revoke(self, did: str, *, at: float) -> None:
        self._lifetime.check()
        record = self._by_did.get(did)
        if record is None:
            raise UnknownAgent(f"no agent with DID {did!r}")
        if record.revoked_at is None:
            self._by_did[did] = dataclasses.replace(record, revoked_at=at)
        self._generation += 1

    async def rotate_agreement(
        self,
        did: str,
        *,
        agreement_key: bytes,
        agreement_statement: bytes,
        agreement_issued_at: int,
    ) -> None:
        self._lifetime.check()
        check_agreement(agreement_key, agreement_statement, agreement_issued_at)
        record = self._by_did.get(did)
        if record is None:
            raise UnknownAgent(f"no agent with DID {did!r}")
        if record.revoked:
            raise StoreError(f"agent {did!r} is revoked; its key cannot be rotated")
        self._by_did[did] = dataclasses.replace(
            record,
            agreement_key=agreement_key,
            agreement_statement=agreement_statement,
            agreement_issued_at=agreement_issued_at,
        )
        self._generation += 1

    async def generation(self) -> int:
        self._lifetime.check()
        return self._generation

    async def close(self) -> None:
        self._lifetime.closed = True

    async def list(self) -> builtins.list[AgentRecord]:
        self._lifetime.check()
        return builtins.list(self._by_did.values())


class MemoryDeliveryQueue(DeliveryQueue):
    """:class:`~trustwire.store.base.DeliveryQueue` held in dicts."""

    def __init__(
        self, *, dedup_retention: float = 86400.0, _lifetime: _Lifetime | None = None
    ) -> None:
        self._retention = check_retention(dedup_retention)
        self._lifetime = _lifetime if _lifetime is not None else _Lifetime()
        self._last_seq = 0
        self._by_id: dict[bytes, QueuedMessage] = {}
        self._by_recipient: dict[str, dict[int, QueuedMessage]] = {}
        self._tombstones: dict[bytes, float] = {}

    async def enqueue_many(self, items: Sequence[NewMessage]) -> list[bool]:
        self._lifetime.check()
        results: list[bool] = []
        for item in items:
            expires = self._tombstones.get(item.message_id)
            if item.message_id in self._by_id or (
                expires is not None and expires > item.enqueued_at
            ):
                results.append(False)
                continue
            # An expired tombstone not yet purged gives way to the new message.
            self._tombstones.pop(item.message_id, None)
            self._last_seq += 1
            message = QueuedMessage(
                seq=self._last_seq,
                recipient=item.recipient,
                sender=item.sender,
                message_id=item.message_id,
                frame=item.frame,
                enqueued_at=item.enqueued_at,
            )
            self._by_id[item.message_id] = message
            self._by_recipient.setdefault(item.recipient, {})[message.seq] = message
            results.append(True)
        return results

    async def pending(
        self, recipient: str, *, after_seq: int = 0, limit: int = 256
    ) -> list[QueuedMessage]:
        self._lifetime.check()
        check_limit(limit)
        page: list[QueuedMessage] = []
        for seq, message in self._by_recipient.get(recipient, {}).items():
            if seq <= after_seq:
                continue
            page.append(message)
            if len(page) == limit:
                break
        return page

    async def ack(
        self, recipient: str, message_ids: Sequence[bytes], *, now: float | None = None
    ) -> int:
        self._lifetime.check()
        expires = (time.time() if now is None else now) + self._retention
        removed = 0
        for message_id in message_ids:
            message = self._by_id.get(message_id)
            if message is None or message.recipient != recipient:
                continue
            self._drop(message)
            self._tombstones[message_id] = expires
            removed += 1
        return removed

    async def remove(self, message_ids: Sequence[bytes]) -> int:
        self._lifetime.check()
        removed = 0
        for message_id in message_ids:
            message = self._by_id.get(message_id)
            if message is not None:
                self._drop(message)
                removed += 1
        return removed

    async def depth(self, recipient: str | None = None) -> int:
        self._lifetime.check()
        if recipient is None:
            return len(self._by_id)
        return len(self._by_recipient.get(recipient, ()))

    async def purge_expired(self, *, now: float) -> int:
        self._lifetime.check()
        expired = [mid for mid, expires in self._tombstones.items() if expires <= now]
        for message_id in expired:
            del self._tombstones[message_id]
        return len(expired)

    async def close(self) -> None:
        self._lifetime.closed = True

    def _drop(self, message: QueuedMessage) -> None:
        del self._by_id[message.message_id]
        queue = self._by_recipient[message.recipient]
        del queue[message.seq]
        if not queue:
            # Do not keep one empty dict per recipient ever seen.
            del self._by_recipient[message.recipient]


class MemoryJoinTokens(JoinTokens):
    """:class:`~trustwire.store.base.JoinTokens` held in a dict."""

    def __init__(self, *, _lifetime: _Lifetime | None = None) -> None:
        self._lifetime = _lifetime if _lifetime is not None else _Lifetime()
        # hash -> (name, roles, expires_at, used)
        self._tokens: dict[bytes, tuple[str, tuple[str, ...], float, bool]] = {}

    async def create(
        self, token_hash: bytes, *, name: str, roles: Sequence[str], expires_at: float
    ) -> None:
        self._lifetime.check()
        check_token(token_hash)
        check_text("name", name)
        checked = check_roles(roles)
        check_time("expires_at", expires_at)
        if token_hash in self._tokens:
            raise StoreError("a join token with this hash already exists")
        self._tokens[token_hash] = (name, checked, float(expires_at), False)

    async def redeem(self, token_hash: bytes, *, now: float) -> tuple[str, tuple[str, ...]] | None:
        self._lifetime.check()
        check_token(token_hash)
        check_time("now", now)
        token = self._tokens.get(token_hash)
        if token is None:
            return None
        name, roles, expires_at, used = token
        if used or expires_at <= now:
            return None
        self._tokens[token_hash] = (name, roles, expires_at, True)
        return name, roles

    async def close(self) -> None:
        self._lifetime.closed = True


def open_memory_store(*, dedup_retention: float = 86400.0) -> Store:
    """Return a fresh, empty in-process :class:`~trustwire.store.base.Store`."""
    lifetime = _Lifetime()
    return Store(
        agents=MemoryAgentDirectory(_lifetime=lifetime),
        queue=MemoryDeliveryQueue(dedup_retention=dedup_retention, _lifetime=lifetime),
        tokens=MemoryJoinTokens(_lifetime=lifetime),
    )
