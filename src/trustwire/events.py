"""The security-event stream: what happened, to whom, and why — never what was said.

Every security-relevant step (authentication, connection lifecycle, channel handshake,
message acceptance, queueing, delivery, denial, replay, stale timestamps, rate limiting,
malformed frames, policy reloads, enrollment, revocation, impersonation attempts, alerts
raised by the anomaly detectors) is described by one :class:`SecurityEvent` and handed
to an :class:`EventStream`, which fans it out to sinks (:class:`MemorySink`,
:class:`JsonlSink`, the audit log, ...) and to live subscribers (the anomaly detectors,
``trustwire alerts`` tails).

Invariants:

- An event carries metadata only. ``details`` values are ``str``, ``int``, ``float`` or
  ``bool``; the constructor rejects ``bytes``-like values (and anything else), so message
  content, key material or ciphertext cannot slip into an event by accident. Producers
  still must not put secrets or message text into string fields.
- Events are immutable and serialise to one line of JSON (``to_json`` never emits a
  newline; non-finite floats are rejected so every line is strict JSON).
- ``EventStream.emit`` never blocks and never raises because of a sink: it is called from
  the event loop on the hot path. A failing sink is counted and logged once; subscribers
  are bounded queues that drop their oldest event when the consumer falls behind.
- :class:`JsonlSink` does no disk I/O in ``emit``: a background thread writes the buffer
  at least every 200 ms and on ``close()``; the file is created with mode 0600.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import time as _time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol, TypeAlias, runtime_checkable

from trustwire.jsonl import JsonlWriter

__all__ = [
    "ROUTINE_KINDS",
    "DetailValue",
    "EventKind",
    "EventSink",
    "EventStream",
    "JsonlSink",
    "MemorySink",
    "SecurityEvent",
    "Subscription",
]

_log = logging.getLogger(__name__)

DetailValue: TypeAlias = str | int | float | bool
"""The only value types an event's ``details`` may hold."""


class EventKind(StrEnum):
    """What kind of thing happened. The string values are stable (they appear in logs)."""

    AUTH_SUCCESS = "auth.success"
    AUTH_FAILURE = "auth.failure"
    CONNECTION_OPENED = "connection.opened"
    CONNECTION_CLOSED = "connection.closed"
    CHANNEL_HANDSHAKE = "channel.handshake"
    MESSAGE_ACCEPTED = "message.accepted"
    MESSAGE_QUEUED = "message.queued"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_DENIED = "message.denied"
    REPLAY_DETECTED = "replay.detected"
    TIMESTAMP_STALE = "timestamp.stale"
    RATE_LIMITED = "rate.limited"
    FRAME_INVALID = "frame.invalid"
    POLICY_RELOADED = "policy.reloaded"
    AGENT_ENROLLED = "agent.enrolled"
    AGENT_REVOKED = "agent.revoked"
    IMPERSONATION_ATTEMPT = "impersonation.attempt"
    CERTIFICATE_ISSUED = "certificate.issued"
    ALERT_RAISED = "alert.raised"
    SESSION_CREATED = "session.created"
    SESSION_RENEWED = "session.renewed"
    SESSION_EXPIRING = "session.expiring"
    SESSION_EXPIRED = "session.expired"
    SESSION_ENDED = "session.ended"
    SESSION_DENIED = "session.denied"
    MEMORY_CREATED = "memory.created"
    MEMORY_READ = "memory.read"
    MEMORY_WRITTEN = "memory.written"
    MEMORY_DELETED = "memory.deleted"
    MEMORY_GRANTED = "memory.granted"
    MEMORY_REVOKED = "memory.revoked"
    MEMORY_DESTROYED = "memory.destroyed"
    MEMORY_PURGED = "memory.purged"
    MEMORY_DENIED = "memory.denied"
    BROKER_REQUEST = "broker.request"
    BROKER_DENIED = "broker.denied"
    BROKER_ERROR = "broker.error"


ROUTINE_KINDS: frozenset[EventKind] = frozenset(
    {EventKind.MESSAGE_ACCEPTED, EventKind.MESSAGE_QUEUED, EventKind.MESSAGE_DELIVERED}
)
"""High-volume kinds that describe normal traffic; sinks may be told to skip them."""

_FIELDS = ("kind", "time", "agent", "peer", "reason", "details")


def _check_optional_str(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"SecurityEvent.{name} must be a str or None, not {type(value).__name__}")


def _check_detail(key: object, value: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"SecurityEvent.details keys must be str, not {type(key).__name__}")
    if isinstance(value, bytes | bytearray | memoryview):
        # The reason this check exists: payloads and keys are bytes. Refusing bytes
        # outright keeps content out of the audit trail even by mistake.
        raise TypeError(f"SecurityEvent.details[{key!r}] is bytes; events carry metadata only")
    if not isinstance(value, str | int | float):  # bool is an int
        raise TypeError(
            f"SecurityEvent.details[{key!r}] must be str, int, float or bool, "
            f"not {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"SecurityEvent.details[{key!r}] must be a finite number")


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One security-relevant occurrence.

    ``agent`` is the DID the event is about (the actor), ``peer`` the other party (a DID,
    or a network address for unauthenticated connections), ``reason`` a short
    machine-readable cause (``"policy_denied"``, ``"replay"``, ...). ``details`` holds
    extra metadata such as sizes, ids and counters.
    """

    kind: EventKind
    time: float
    agent: str | None = None
    peer: str | None = None
    reason: str | None = None
    details: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A plain str naming a known kind is accepted and normalised; anything else is
        # misuse by the producer.
        object.__setattr__(self, "kind", EventKind(self.kind))
        if isinstance(self.time, bool) or not isinstance(self.time, int | float):
            raise TypeError(f"SecurityEvent.time must be a number, not {type(self.time).__name__}")
        if not math.isfinite(self.time):
            raise ValueError("SecurityEvent.time must be a finite number")
        _check_optional_str("agent", self.agent)
        _check_optional_str("peer", self.peer)
        _check_optional_str("reason", self.reason)
        if not isinstance(self.details, Mapping):
            raise TypeError("SecurityEvent.details must be a mapping")
        copied: dict[str, DetailValue] = {}
        for key, value in self.details.items():
            _check_detail(key, value)
            copied[key] = value
        # Copy then freeze, so a caller mutating its dict later cannot change the event.
        object.__setattr__(self, "details", MappingProxyType(copied))

    @property
    def is_routine(self) -> bool:
        """True for high-volume normal-traffic kinds (see :data:`ROUTINE_KINDS`)."""
        return self.kind in ROUTINE_KINDS

    def to_json(self) -> str:
        """Serialise to one line of strict JSON."""
        return json.dumps(
            {
                "kind": self.kind.value,
                "time": self.time,
                "agent": self.agent,
                "peer": self.peer,
                "reason": self.reason,
                "details": dict(self.details),
            },
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SecurityEvent:
        """Parse what :meth:`to_json` produced.

        Raises :class:`ValueError` (never anything else) when ``text`` is not a valid
        serialised event.
        """
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not a JSON security event: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("a serialised security event must be a JSON object")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown security event field(s): {', '.join(unknown)}")
        if "kind" not in data or "time" not in data:
            raise ValueError("a serialised security event needs 'kind' and 'time'")
        details = data.get("details", {})
        if details is None:
            details = {}
        try:
            return cls(
                kind=EventKind(data["kind"]),
                time=data["time"],
                agent=data.get("agent"),
                peer=data.get("peer"),
                reason=data.get("reason"),
                details=details,
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid security event: {exc}") from None


@runtime_checkable
class EventSink(Protocol):
    """Receives events. ``emit`` must not block: it runs on the event loop."""

    def emit(self, event: SecurityEvent) -> None:
        """Accept one event."""


class Subscription:
    """A bounded live feed of events; iterate it with ``async for``.

    When the consumer falls behind by more than ``maxlen`` events the oldest pending
    event is dropped and :attr:`dropped` counts it, so a stuck consumer costs bounded
    memory and never slows the producer. Iteration ends after :meth:`close` once the
    pending events are consumed.

    Events must be pushed from the thread running the consumer's event loop (the stream
    is driven from the coordinator's loop).
    """

    def __init__(
        self,
        maxlen: int,
        kinds: frozenset[EventKind] | None,
        on_close: Callable[[Subscription], None],
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._pending: collections.deque[SecurityEvent] = collections.deque()
        self._maxlen = maxlen
        self._kinds = kinds
        self._ready = asyncio.Event()
        self._closed = False
        self._on_close = on_close
        self.dropped = 0
        """How many events were discarded because the consumer was too slow."""

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def push(self, event: SecurityEvent) -> None:
        """Queue ``event`` for the consumer (called by the stream)."""
        if self._closed or (self._kinds is not None and event.kind not in self._kinds):
            return
        if len(self._pending) >= self._maxlen:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(event)
        self._ready.set()

    def close(self) -> None:
        """Stop receiving events; a waiting consumer finishes after the pending ones."""
        if not self._closed:
            self._closed = True
            self._on_close(self)
            self._ready.set()

    def __aiter__(self) -> AsyncIterator[SecurityEvent]:
        return self

    async def __anext__(self) -> SecurityEvent:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._pending.popleft()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class EventStream:
    """Fans events out to sinks and live subscribers.

    ``include_routine=False`` keeps the high-volume :data:`ROUTINE_KINDS` out of the
    sinks (subscribers still choose for themselves with ``kinds=``). ``clock`` supplies
    the time for :meth:`record`.
    """

    def __init__(
        self,
        sinks: Iterable[EventSink] = (),
        *,
        include_routine: bool = True,
        clock: Callable[[], float] = _time.time,
    ) -> None:
        self._sinks: list[EventSink] = list(sinks)
        self._subscriptions: list[Subscription] = []
        self._include_routine = include_routine
        self._clock = clock
        self._failed_sinks: set[int] = set()
        self.sink_errors = 0
        """How many times a sink raised from ``emit`` (the event was still delivered
        to the other sinks)."""

    @property
    def include_routine(self) -> bool:
        """Whether routine kinds reach the sinks."""
        return self._include_routine

    @property
    def sinks(self) -> tuple[EventSink, ...]:
        """The sinks currently attached."""
        return tuple(self._sinks)

    def add_sink(self, sink: EventSink) -> None:
        """Attach another sink; it receives events emitted from now on."""
        self._sinks.append(sink)

    def remove_sink(self, sink: EventSink) -> None:
        """Detach ``sink`` (no error if it was not attached)."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    def emit(self, event: SecurityEvent) -> None:
        """Deliver ``event`` to every sink and subscriber. Never raises for a sink."""
        if self._include_routine or event.kind not in ROUTINE_KINDS:
            for sink in self._sinks:
                try:
                    sink.emit(event)
                except Exception:
                    self.sink_errors += 1
                    # Log a failing sink once, not once per event: a broken disk must
                    # not turn into a log flood on the hot path.
                    if id(sink) not in self._failed_sinks:
                        self._failed_sinks.add(id(sink))
                        _log.exception("security event sink %r failed", sink)
        for subscription in self._subscriptions:
            subscription.push(event)

    def record(
        self,
        kind: EventKind,
        *,
        agent: str | None = None,
        peer: str | None = None,
        reason: str | None = None,
        **details: DetailValue,
    ) -> SecurityEvent:
        """Build an event stamped with the stream's clock, emit it and return it."""
        event = SecurityEvent(
            kind=kind, time=self._clock(), agent=agent, peer=peer, reason=reason, details=details
        )
        self.emit(event)
        return event

    def subscribe(
        self, maxlen: int = 1000, *, kinds: Iterable[EventKind] | None = None
    ) -> Subscription:
        """Return a bounded live feed of events emitted from now on.

        ``kinds`` restricts the feed to those kinds. Close the subscription (or use it
        as ``async with``) when done.
        """
        subscription = Subscription(
            maxlen, None if kinds is None else frozenset(kinds), self._unsubscribe
        )
        self._subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def close(self) -> None:
        """End every subscription and close sinks that have a ``close()`` method."""
        for subscription in list(self._subscriptions):
            subscription.close()
        for sink in self._sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    _log.exception("closing security event sink %r failed", sink)


class MemorySink:
    """Keeps the last ``maxlen`` events in memory (tests, ``trustwire demo``)."""

    def __init__(self, maxlen: int | None = 10_000) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError("maxlen must be at least 1 or None")
        self._events: collections.deque[SecurityEvent] = collections.deque(maxlen=maxlen)

    def emit(self, event: SecurityEvent) -> None:
        """Remember ``event`` (dropping the oldest when full)."""
        self._events.append(event)

    @property
    def events(self) -> list[SecurityEvent]:
        """A snapshot of the retained events, oldest first."""
        return list(self._events)

    def kinds(self) -> list[EventKind]:
        """The kinds of the retained events, oldest first."""
        return [event.kind for event in self._events]

    def of_kind(self, kind: EventKind) -> list[SecurityEvent]:
        """The retained events of one kind, oldest first."""
        return [event for event in self._events if event.kind == kind]

    def clear(self) -> None:
        """Forget every retained event."""
        self._events.clear()

    def __len__(self) -> int:
        return len(self._events)


class JsonlSink:
    """Appends one JSON object per line to ``path``.

    ``emit`` only queues the serialised line; a daemon thread writes and flushes the
    queue every ``flush_interval`` seconds (at most 0.2 s by default) and ``close()``
    writes what is left. If the writer cannot keep up, more than ``max_pending`` queued
    lines are dropped (counted in :attr:`dropped`) rather than growing without bound.
    The file is created with mode 0600 (security events are sensitive metadata).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 0.2,
        max_pending: int = 100_000,
    ) -> None:
        if not 0 < flush_interval <= 0.2:
            raise ValueError("flush_interval must be in (0, 0.2] seconds")
        self._writer = JsonlWriter(
            path, flush_interval=flush_interval, max_pending=max_pending, what="security events"
        )

    @property
    def path(self) -> str:
        """The file being appended to."""
        return self._writer.path

    @property
    def dropped(self) -> int:
        """Lines discarded because more than ``max_pending`` were waiting."""
        return self._writer.dropped

    @property
    def write_errors(self) -> int:
        """Failed writes (the lines of a failed write are lost)."""
        return self._writer.write_errors

    def emit(self, event: SecurityEvent) -> None:
        """Queue ``event`` for writing; raises :class:`ValueError` after :meth:`close`."""
        self._writer.write(event.to_json() + "\n")

    def flush(self) -> None:
        """Write and flush every queued line now (blocking; not for the event loop)."""
        self._writer.flush()

    def close(self) -> None:
        """Write what is queued, stop the writer thread and close the file."""
        self._writer.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
