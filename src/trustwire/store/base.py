"""Storage interfaces: the agent directory and the durable delivery queue.

Every stateful part of the coordinator talks to one of these small abstract classes; a
backend (``memory``, ``sqlite``; later PostgreSQL, NATS, Redis) implements them and
:func:`trustwire.store.open_store` picks one by URL. Nothing here knows about SQL.

Invariants every backend keeps (the conformance suite in ``tests/store`` checks them):

* **Agents.** Names and DIDs are each unique across the directory, revoked agents
  included: a name or DID is never reused. ``revoke`` records the first revocation time
  and later calls keep it. A revoked agent's agreement key is never rotated.
* **Directory generation.** ``AgentDirectory.generation()`` grows strictly with every
  successful change to the directory (``add``, ``set_roles``, ``rotate_agreement``,
  ``revoke``; a call that changes nothing, such as a repeated revoke, may bump it too), is
  kept across reopening, and is visible to every process sharing a durable store: a
  coordinator polls it to notice changes made by the CLI.
* **Join tokens are single-use.** ``JoinTokens.redeem`` marks a token used in the same
  atomic step that reads it, so two concurrent redemptions of one token cannot both
  succeed; an expired or used token is never redeemed. Only token *hashes* are stored.
* **Sequence numbers.** ``QueuedMessage.seq`` grows strictly with every stored message,
  across all recipients, and is never reused, not even after the message is gone or the
  store is reopened. Delivery order is ``seq`` order.
* **Message ids are unique per store.** ``enqueue_many`` refuses (answers ``False`` for)
  an id that is pending, that appears earlier in the same batch, or whose tombstone is
  still live, i.e. the message was acknowledged less than ``dedup_retention`` seconds
  before the new item's ``enqueued_at``. Refusal is not an error: it is how at-least-once
  delivery becomes exactly-once for the application.
* **Batches are atomic.** ``enqueue_many`` and ``ack`` each run as one transaction: after
  a crash either all of a batch is stored or none of it.
* **Ownership.** ``ack`` only touches messages queued for the acknowledging recipient and
  leaves a tombstone only for messages it actually removed; acknowledging someone else's
  message, or an unknown id, changes nothing.
* **Opaque frames.** ``frame`` bytes are stored and returned verbatim, never parsed.

A cancelled call may still complete in the backend (a SQLite transaction already handed
to its worker thread commits anyway); callers retry, and the dedup rule above makes the
retry harmless.
"""

from __future__ import annotations

import builtins
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

__all__ = [
    "AGREEMENT_KEY_SIZE",
    "MESSAGE_ID_SIZE",
    "AgentDirectory",
    "AgentRecord",
    "DeliveryQueue",
    "JoinTokens",
    "NewMessage",
    "QueuedMessage",
    "Store",
]

MESSAGE_ID_SIZE = 16
"""Length in bytes of a message id."""

AGREEMENT_KEY_SIZE = 32
"""Length in bytes of an X25519 public key."""


def _require_text(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")


def _require_bytes(what: str, value: object, size: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise ValueError(f"{what} must be bytes")
    if size is not None and len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, not {len(value)}")


def _require_time(what: str, value: object) -> None:
    # bool is an int subclass; a True timestamp is always a bug.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number")


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One enrolled agent as the directory stores it.

    ``agreement_statement`` is the identity key's signature binding ``did`` to
    ``agreement_key`` at ``agreement_issued_at``; the store keeps it verbatim so anyone
    fetching the record can check the binding themselves.
    """

    name: str
    did: str
    roles: tuple[str, ...]
    agreement_key: bytes
    agreement_statement: bytes
    agreement_issued_at: int
    created_at: float
    revoked_at: float | None = None

    def __post_init__(self) -> None:
        _require_text("name", self.name)
        _require_text("did", self.did)
        object.__setattr__(self, "roles", check_roles(self.roles))
        _require_bytes("agreement_key", self.agreement_key, AGREEMENT_KEY_SIZE)
        _require_bytes("agreement_statement", self.agreement_statement)
        if isinstance(self.agreement_issued_at, bool) or not isinstance(
            self.agreement_issued_at, int
        ):
            raise ValueError("agreement_issued_at must be an int (unix seconds)")
        _require_time("created_at", self.created_at)
        if self.revoked_at is not None:
            _require_time("revoked_at", self.revoked_at)

    @property
    def revoked(self) -> bool:
        """Whether the agent has been revoked."""
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message handed to :meth:`DeliveryQueue.enqueue_many`; ``frame`` is opaque."""

    recipient: str
    sender: str
    message_id: bytes
    frame: bytes = field(repr=False)  # opaque and possibly large: keep it out of logs
    enqueued_at: float

    def __post_init__(self) -> None:
        _require_text("recipient", self.recipient)
        _require_text("sender", self.sender)
        _require_bytes("message_id", self.message_id, MESSAGE_ID_SIZE)
        _require_bytes("frame", self.frame)
        _require_time("enqueued_at", self.enqueued_at)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A stored message waiting for its recipient; ``seq`` gives delivery order."""

    seq: int
    recipient: str
    sender: str
    message_id: bytes
    frame: bytes = field(repr=False)  # opaque and possibly large: keep it out of logs
    enqueued_at: float

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 1:
            raise ValueError("seq must be a positive int")
        _require_text("recipient", self.recipient)
        _require_text("sender", self.sender)
        _require_bytes("message_id", self.message_id, MESSAGE_ID_SIZE)
        _require_bytes("frame", self.frame)
        _require_time("enqueued_at", self.enqueued_at)


def check_retention(dedup_retention: float) -> float:
    """Return ``dedup_retention`` as a float; ``ValueError`` unless finite and >= 0."""
    if (
        isinstance(dedup_retention, bool)
        or not isinstance(dedup_retention, int | float)
        or not math.isfinite(dedup_retention)
        or dedup_retention < 0
    ):
        raise ValueError("dedup_retention must be a finite number of seconds >= 0")
    return float(dedup_retention)


def check_roles(roles: Sequence[str]) -> tuple[str, ...]:
    """Return ``roles`` as a tuple; ``ValueError`` unless each is a non-empty string."""
    if isinstance(roles, str | bytes):
        # tuple("admin") would silently become five one-letter roles.
        raise ValueError("roles must be a sequence of strings, not a string")
    checked = tuple(roles)
    for role in checked:
        _require_text("role", role)
    return checked


def check_agreement(agreement_key: bytes, agreement_statement: bytes, issued_at: int) -> None:
    """``ValueError`` unless the three parts of an agreement-key binding are well formed."""
    _require_bytes("agreement_key", agreement_key, AGREEMENT_KEY_SIZE)
    _require_bytes("agreement_statement", agreement_statement)
    if isinstance(issued_at, bool) or not isinstance(issued_at, int):
        raise ValueError("agreement_issued_at must be an int (unix seconds)")


def check_token(token_hash: bytes) -> None:
    """``ValueError`` unless ``token_hash`` is non-empty bytes."""
    _require_bytes("token_hash", token_hash)
    if not token_hash:
        raise ValueError("token_hash must not be empty")


def check_text(what: str, value: str) -> None:
    """``ValueError`` unless ``value`` is a non-empty string."""
    _require_text(what, value)


def check_time(what: str, value: float) -> None:
    """``ValueError`` unless ``value`` is a finite number (a time in unix seconds)."""
    _require_time(what, value)


def check_limit(limit: int) -> None:
    """``ValueError`` unless ``limit`` is an int >= 1 (a page size for ``pending``)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError("limit must be an int >= 1")


class AgentDirectory(ABC):
    """Enrolled agents, looked up by DID or by name."""

    @abstractmethod
    async def add(self, record: AgentRecord) -> None:
        """Store a new agent.

        Raises :class:`~trustwire.errors.DuplicateAgent` (a ``StoreError``) if the name
        or the DID is already taken, by a live or a revoked agent.
        """

    @abstractmethod
    async def get_by_did(self, did: str) -> AgentRecord | None:
        """Return the agent with this DID, or ``None``."""

    @abstractmethod
    async def get_by_name(self, name: str) -> AgentRecord | None:
        """Return the agent with this name, or ``None``."""

    @abstractmethod
    async def set_roles(self, did: str, roles: Sequence[str]) -> None:
        """Replace the agent's roles; :class:`~trustwire.errors.UnknownAgent` if absent."""

    @abstractmethod
    async def revoke(self, did: str, *, at: float) -> None:
        """Mark the agent revoked at ``at`` (unix seconds).

        Revoking twice keeps the first time. :class:`~trustwire.errors.UnknownAgent` if
        no agent has this DID.
        """

    @abstractmethod
    async def rotate_agreement(
        self,
        did: str,
        *,
        agreement_key: bytes,
        agreement_statement: bytes,
        agreement_issued_at: int,
    ) -> None:
        """Replace the agent's key-agreement key and the statement binding it to ``did``.

        The store keeps the bytes verbatim; verifying the statement is the caller's job.
        :class:`~trustwire.errors.UnknownAgent` if no agent has this DID,
        :class:`~trustwire.errors.StoreError` if the agent is revoked, ``ValueError`` for
        malformed arguments.
        """

    @abstractmethod
    async def generation(self) -> int:
        """A counter that grows strictly with every change to the directory.

        Cheap enough to poll several times a second; see the module invariants.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, not abstract on purpose
        """Release resources; see :meth:`Store.close`."""

    # Last, so that the method named ``list`` does not shadow the builtin in the
    # annotations above; ``builtins.list`` keeps the return annotation unambiguous.
    @abstractmethod
    async def list(self) -> builtins.list[AgentRecord]:
        """Return every agent, revoked ones included, in enrollment order."""


class DeliveryQueue(ABC):
    """Durable per-recipient store-and-forward queues with message-id deduplication."""

    @abstractmethod
    async def enqueue_many(self, items: Sequence[NewMessage]) -> list[bool]:
        """Store a batch in one transaction.

        Returns, per item and in order, ``True`` if it was stored and ``False`` if its
        message id is a duplicate (see the module invariants).
        """

    @abstractmethod
    async def pending(
        self, recipient: str, *, after_seq: int = 0, limit: int = 256
    ) -> list[QueuedMessage]:
        """Return up to ``limit`` of the recipient's messages with ``seq > after_seq``.

        Ordered by ``seq``. ``limit`` must be at least 1 (``ValueError`` otherwise).
        """

    @abstractmethod
    async def ack(
        self, recipient: str, message_ids: Sequence[bytes], *, now: float | None = None
    ) -> int:
        """Remove delivered messages of ``recipient`` and remember their ids.

        Only messages queued for ``recipient`` are touched. Each removed id leaves a
        tombstone that refuses a duplicate for ``dedup_retention`` seconds after ``now``
        (default: the current time). Returns how many messages were removed.
        """

    @abstractmethod
    async def remove(self, message_ids: Sequence[bytes]) -> int:
        """Drop pending messages without leaving tombstones (the sender withdrew them).

        Returns how many were removed.
        """

    @abstractmethod
    async def depth(self, recipient: str | None = None) -> int:
        """Count pending messages, for one recipient or in total."""

    @abstractmethod
    async def purge_expired(self, *, now: float) -> int:
        """Forget tombstones whose retention ended at or before ``now``; return the count."""

    @abstractmethod
    async def close(self) -> None:
        """Release resources; see :meth:`Store.close`."""


class JoinTokens(ABC):
    """One-time enrolment tokens, stored by hash (the token itself is never stored)."""

    @abstractmethod
    async def create(
        self, token_hash: bytes, *, name: str, roles: Sequence[str], expires_at: float
    ) -> None:
        """Record a token for an agent to be enrolled as ``name`` with ``roles``.

        :class:`~trustwire.errors.StoreError` if a token with this hash exists (used or
        not); ``ValueError`` for malformed arguments.
        """

    @abstractmethod
    async def redeem(self, token_hash: bytes, *, now: float) -> tuple[str, tuple[str, ...]] | None:
        """Atomically mark the token used and return its ``(name, roles)``.

        ``None`` if no such token exists, it was already used, or it expired
        (``expires_at <= now``); an expired token stays unused.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, not abstract on purpose
        """Release resources; see :meth:`Store.close`."""


class Store:
    """The bundle :func:`~trustwire.store.open_store` returns.

    Components of one store may share a backend connection, so closing any of them may
    close the others; call :meth:`close` on the bundle (or use ``async with``). Closing
    twice is harmless; using a closed store raises :class:`~trustwire.errors.StoreError`.
    """

    def __init__(self, *, agents: AgentDirectory, queue: DeliveryQueue, tokens: JoinTokens) -> None:
        self.agents = agents
        self.queue = queue
        self.tokens = tokens

    async def close(self) -> None:
        """Close every component."""
        try:
            await self.queue.close()
        finally:
            try:
                await self.tokens.close()
            finally:
                await self.agents.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
