"""The session manager: the coordinator's live view of every session, and its announcer.

:class:`SessionManager` keeps every retained session in memory (loaded by :meth:`start`),
answers the coordinator's per-message question synchronously (:meth:`check_message`: a
few dict lookups and float comparisons, no I/O), writes every other change through to the
:class:`~trustwire.sessions.store.SessionStore`, and announces each state change to both
participants (``notify``) and to the security-event stream.

Invariants and why:

* **Participants only.** Anyone but the two participants (or the operator, ``caller=None``)
  asking about a session gets :class:`~trustwire.errors.UnknownSession`, exactly what a
  made-up id gets, so a session's existence does not leak.
* **Expired is not unknown.** Expired and ended sessions stay known (and are reported as
  :class:`~trustwire.errors.SessionExpired` / :class:`~trustwire.errors.SessionEnded`) for
  ``retention`` seconds after they stopped; only then are they purged with their message
  metadata.
* **Announcements happen once.** ``session.expiring`` once per approach of an expiry
  (re-armed by a renewal, or when the expiry moved by more than the warning threshold),
  ``session.expired`` and ``session.ended`` once per session. The flag is stored
  *before* the announcement goes out, so a restart (a new manager over the same store)
  neither repeats nor, unless the process dies between the two steps, loses one.
* **Activity is batched.** :meth:`check_message` records activity in memory; :meth:`sweep`
  (and :meth:`close`) write it. A crash loses at most one sweep interval of activity (the
  session may then expire that much earlier), never a state change made through an
  ``async`` method, which are written before they return. Message metadata from
  :meth:`record_message` is buffered the same way (bounded: the oldest are dropped when
  more than :data:`MAX_BUFFERED_MESSAGES` wait).
* **Writes are compare-and-set.** Another process (the operator CLI) may change a session
  at any time; a conflicting write re-reads the stored session, merges the local activity
  and renewals into it, announces what the other process changed, and retries.
  :meth:`reload` does the same for changes noticed through the store's generation.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from trustwire.errors import (
    PolicyDenied,
    RateLimited,
    SessionEnded,
    StoreError,
    UnknownSession,
)
from trustwire.events import EventKind, EventStream, SecurityEvent
from trustwire.sessions.model import (
    ACTIVITY_RENEWAL_INTERVAL,
    Session,
    SessionConfig,
    SessionMessage,
    check_end_reason,
    check_metadata,
    check_session_id,
    expired_error,
    new_session_id,
    warning_rearmed,
)
from trustwire.sessions.store import SessionStore

__all__ = [
    "DEFAULT_RETENTION",
    "MAX_BUFFERED_MESSAGES",
    "MAX_PAGE",
    "SessionManager",
]

_log = logging.getLogger(__name__)

DEFAULT_RETENTION: Final = 7 * 86400.0
"""Seconds an ended or expired session stays known before it is purged."""

DEFAULT_MAX_ACTIVE: Final = 256
"""Active sessions one agent may have initiated at a time."""

MAX_BUFFERED_MESSAGES: Final = 100_000
"""Message metadata rows waiting for a flush, at most."""

MAX_PAGE: Final = 100
"""The largest ``limit`` of :meth:`SessionManager.messages` (elizaOS: 1-100)."""

_PURGE_INTERVAL: Final = 300.0
_MAX_WRITE_ATTEMPTS: Final = 5
_MINUTE: Final = 60.0


class _Entry:
    """One cached session. ``session`` is the last stored state plus whatever changed
    locally since (``dirty``), except message activity, which is only folded in when
    needed: ``activity`` and ``expires_at`` are its hot-path copies."""

    __slots__ = ("activity", "base", "cap", "dirty", "expires_at", "session", "timeout")

    def __init__(self, session: Session) -> None:
        self.base = session
        self.dirty = False
        self.set(session)

    def set(self, session: Session) -> None:
        self.session = session
        self.activity = session.last_activity
        self.expires_at = session.expires_at
        self.cap = session.cap
        self.timeout = session.config.timeout_minutes * _MINUTE

    def folded(self) -> Session:
        """The session with the pending message activity folded in."""
        if self.activity > self.session.last_activity:
            self.session = dataclasses.replace(self.session, last_activity=self.activity)
            self.dirty = True
        return self.session


def _merge(stored: Session, base: Session, local: Session) -> Session:
    """``stored`` (changed by someone else since ``base``) with what this process changed
    since ``base`` (``local``) applied on top: activity, counted renewals, announcements."""
    renewed_at = max(
        (value for value in (stored.renewed_at, local.renewed_at) if value is not None),
        default=None,
    )
    return dataclasses.replace(
        stored,
        last_activity=max(stored.last_activity, local.last_activity),
        renewed_at=renewed_at,
        renewal_count=stored.renewal_count + max(0, local.renewal_count - base.renewal_count),
        warned_for=local.warned_for if local.warned_for != base.warned_for else stored.warned_for,
        expired_announced=stored.expired_announced or local.expired_announced,
        ended_announced=stored.ended_announced or local.ended_announced,
    )


class SessionManager:
    """Creates, checks, renews and ends sessions; announces their changes.

    ``may_talk(initiator, peer, now)`` is the policy check (``message`` either way),
    ``known_agent(did)`` whether an agent is enrolled and not revoked,
    ``agent_defaults(did)`` the initiator's per-agent session defaults (elizaOS JSON
    keys), ``notify(did, payload)`` delivers ``{"event": "session.created", "session":
    {...}}`` to a participant, ``clock`` gives epoch seconds. ``retention`` is how long an
    ended or expired session stays known before it is purged.

    The manager does not own the store: :meth:`close` flushes, the caller closes the
    store afterwards.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        events: EventStream,
        may_talk: Callable[[str, str, float], bool],
        known_agent: Callable[[str], bool],
        agent_defaults: Callable[[str], Mapping[str, Any] | None] = lambda did: None,
        notify: Callable[[str, dict[str, Any]], None] = lambda did, payload: None,
        clock: Callable[[], float] = time.time,
        retention: float = DEFAULT_RETENTION,
        max_active_per_agent: int = DEFAULT_MAX_ACTIVE,
    ) -> None:
        if not (isinstance(retention, int | float) and math.isfinite(retention) and retention >= 0):
            raise ValueError("retention must be a non-negative number of seconds")
        self._store = store
        self._events = events
        self._may_talk = may_talk
        self._known_agent = known_agent
        self._agent_defaults = agent_defaults
        self._notify = notify
        self._clock = clock
        self._retention = float(retention)
        self._entries: dict[str, _Entry] = {}
        #: An agent may have at most this many active sessions it initiated: each one is
        #: held in memory, swept every second and announced to its peer.
        self.max_active_per_agent = max_active_per_agent
        self._dirty: set[str] = set()
        self._renewals: list[tuple[str, float]] = []
        self._buffer: collections.deque[SessionMessage] = collections.deque(
            maxlen=MAX_BUFFERED_MESSAGES
        )
        self._generation = 0
        self._started_at: float | None = None
        self._last_purge: float | None = None
        self.dropped_messages = 0
        """Message metadata rows dropped because the buffer was full."""

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Load every retained session from the store."""
        generation, sessions = await self._store.changes(0)
        self._entries = {session.id: _Entry(session) for session in sessions}
        self._generation = generation
        self._started_at = self._clock()

    async def close(self) -> None:
        """Write pending activity and message metadata (the store stays open)."""
        await self._flush()

    async def run(self, interval: float = 1.0) -> None:
        """Every ``interval`` seconds: :meth:`reload` if the store's generation moved,
        then :meth:`sweep`; until cancelled. Store errors are logged, not raised."""
        failing = False
        while True:
            try:
                if await self._store.generation() != self._generation:
                    await self.reload()
                await self.sweep()
                if failing:
                    _log.warning("session store usable again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    _log.warning("session sweep failed (will retry): %s", exc)
                failing = True
            await asyncio.sleep(interval)

    # -- the API ----------------------------------------------------------------------

    async def create(
        self,
        initiator: str,
        peer: str,
        *,
        config: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        """Open a session from ``initiator`` to ``peer``.

        ``config`` (elizaOS ``timeoutConfig`` keys) overrides the initiator's per-agent
        defaults, which override the built-ins; values are clamped. Raises
        :class:`~trustwire.errors.InvalidSessionConfig` for a malformed config,
        :class:`ValueError` for bad metadata or a session with oneself, and
        :class:`~trustwire.errors.PolicyDenied` (with a ``session.denied`` event) when
        either agent is unknown or revoked or the policy does not let them talk.
        """
        now = self._clock()
        for what, did in (("initiator", initiator), ("peer", peer)):
            if not isinstance(did, str) or not did.startswith("did:") or len(did) > 256:
                raise ValueError(f"the {what} must be a DID")
        if initiator == peer:
            self._denied(initiator, peer, "self", now)
            raise ValueError("a session needs two different agents")
        resolved = SessionConfig.resolve(config, self._agent_defaults(initiator))
        checked = check_metadata(metadata)
        if not (self._known_agent(initiator) and self._known_agent(peer)):
            self._denied(initiator, peer, "unknown_agent", now)
            raise PolicyDenied("session refused")
        if not self._may_talk(initiator, peer, now):
            self._denied(initiator, peer, "policy_denied", now)
            raise PolicyDenied("session refused")
        active = sum(
            1
            for entry in self._entries.values()
            if entry.session.initiator == initiator and entry.folded().status(now) == "active"
        )
        if active >= self.max_active_per_agent:
            self._denied(initiator, peer, "too_many_sessions", now)
            raise RateLimited(
                f"at most {self.max_active_per_agent} active sessions per initiating agent"
            )
        session = Session(
            id=new_session_id(),
            initiator=initiator,
            peer=peer,
            created_at=now,
            last_activity=now,
            config=resolved,
            metadata=checked,
        )
        await self._store.create(session)
        self._entries[session.id] = _Entry(session)
        self._announce(EventKind.SESSION_CREATED, session, now)
        return session

    async def get(self, session_id: str, *, caller: str | None) -> Session:
        """The session, for a participant (or the operator, ``caller=None``).

        A participant gets :class:`SessionExpired`/:class:`SessionEnded` for an inactive
        session; the operator gets it in any state. Anyone else gets
        :class:`UnknownSession`.
        """
        entry = await self._entry(session_id, caller)
        session = entry.folded()
        now = self._clock()
        if caller is not None:
            session.require_active(now)
        return session

    async def renew(self, session_id: str, *, caller: str | None) -> Session:
        """Renew explicitly (works with autoRenew off): the expiry moves to
        ``min(now + timeout, cap)``. :class:`~trustwire.errors.SessionRenewalFailed` once
        the expiry has reached the cap."""
        entry = await self._entry(session_id, caller)
        session = await self._change(entry, lambda current, now: current.renewed(now))
        self._announce(EventKind.SESSION_RENEWED, session, self._clock())
        return session

    async def set_timeout(
        self, session_id: str, timeout_minutes: Any, *, caller: str | None
    ) -> Session:
        """Change the inactivity timeout (strictly validated: out of [5, 1440] is an
        :class:`~trustwire.errors.InvalidSessionConfig`, not clamped). The expiry is
        recomputed; this is not a renewal (``renewalCount`` does not move). Participants
        are told with a ``session.renewed`` notice whose event reason is
        ``timeout_changed``."""
        entry = await self._entry(session_id, caller)
        session = await self._change(
            entry, lambda current, now: current.with_timeout(timeout_minutes, now)
        )
        self._announce(EventKind.SESSION_RENEWED, session, self._clock(), reason="timeout_changed")
        return session

    async def heartbeat(self, session_id: str, *, caller: str | None) -> Session:
        """Record activity; with autoRenew this is a renewal (counted and announced) while
        the expiry is short of the cap. Never fails because of the cap."""
        entry = await self._entry(session_id, caller)
        renewed = False

        def beat(current: Session, now: float) -> Session:
            nonlocal renewed
            session, renewed = current.heartbeat(now)
            return session

        session = await self._change(entry, beat)
        if renewed:
            self._announce(EventKind.SESSION_RENEWED, session, self._clock())
        return session

    async def end(self, session_id: str, *, caller: str | None, reason: str = "ended") -> Session:
        """End the session (a participant, or the operator with ``caller=None``).
        :class:`SessionEnded`/:class:`SessionExpired` when it is no longer active."""
        check_end_reason(reason)
        entry = await self._entry(session_id, caller)
        session = await self._change(
            entry,
            lambda current, now: dataclasses.replace(
                current.ended(now, reason=reason, by=caller), ended_announced=True
            ),
        )
        self._announce(EventKind.SESSION_ENDED, session, self._clock(), reason=reason)
        return session

    def check_message(self, session_id: str, sender: str, recipient: str, *, now: float) -> Session:
        """May ``sender`` send to ``recipient`` in this session at ``now``? (hot path)

        Synchronous and in memory. The two agents must be the session's participants
        (else :class:`UnknownSession`, as for an unknown id); an inactive session raises
        :class:`SessionEnded` or :class:`SessionExpired`. Records the activity (which
        renews with autoRenew); it is written, and counted renewals announced, by the next
        :meth:`sweep`. The returned session's ``last_activity`` may lag until then.
        """
        entry = self._entries.get(session_id)
        if entry is None:
            raise UnknownSession("unknown session")
        session = entry.session
        if not (
            (sender == session.initiator and recipient == session.peer)
            or (sender == session.peer and recipient == session.initiator)
        ):
            raise UnknownSession("unknown session")
        if session.ended_at is not None:
            raise SessionEnded(f"session {session_id} has ended")
        if now >= entry.expires_at:
            raise expired_error(entry.folded())
        if now > entry.activity:
            entry.activity = now
            self._dirty.add(session_id)
            if session.config.auto_renew:
                moved = min(now + entry.timeout, entry.cap)
                if moved > entry.expires_at:
                    entry.expires_at = moved
                    last = (
                        session.renewed_at
                        if session.renewed_at is not None
                        else (session.created_at)
                    )
                    if now - last >= ACTIVITY_RENEWAL_INTERVAL:
                        counted, _ = session.touched(now)
                        entry.session = counted
                        entry.dirty = True
                        self._renewals.append((session_id, now))
        return entry.session

    def record_message(self, message: SessionMessage) -> None:
        """Buffer one message's metadata; written by the next :meth:`sweep`. Rows for a
        session this manager does not know are dropped (they could never be purged)."""
        if message.session_id not in self._entries:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped_messages += 1
        self._buffer.append(message)

    async def messages(
        self,
        session_id: str,
        *,
        caller: str | None,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
    ) -> dict[str, Any]:
        """Message metadata of a session, newest first, elizaOS style: ``{"messages":
        [...], "hasMore": bool, "cursors": {"before": ms, "after": ms}}``.

        ``limit`` is clamped to 1-100; ``before``/``after`` are epoch-ms cursors
        (exclusive). Participants only (and the operator); a participant gets
        :class:`SessionExpired`/:class:`SessionEnded` for an inactive session.
        """
        for name, value in (("limit", limit), ("before", before), ("after", after)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an integer")
        page_size = max(1, min(MAX_PAGE, limit))
        await self.get(session_id, caller=caller)
        await self._flush_messages()
        found, has_more = await self._store.messages(
            session_id, limit=page_size, before_ms=before, after_ms=after
        )
        return {
            "sessionId": session_id,
            "messages": [message.to_api() for message in found],
            "hasMore": has_more,
            "cursors": {
                "before": found[-1].timestamp_ms if found else None,
                "after": found[0].timestamp_ms if found else None,
            },
        }

    async def list(
        self, *, did: str | None = None, include_inactive: bool = False
    ) -> builtins.list[Session]:
        """Sessions (of participant ``did`` if given), oldest first; only active ones
        unless ``include_inactive``."""
        now = self._clock()
        found = [
            entry.folded()
            for entry in self._entries.values()
            if (did is None or entry.session.involves(did))
            and (include_inactive or self._active(entry, now))
        ]
        return sorted(found, key=lambda session: (session.created_at, session.id))

    async def health(self) -> dict[str, Any]:
        """``{"status", "activeSessions", "expiringSoon", "uptime" (s), "timestamp" (ms)}``."""
        now = self._clock()
        active = expiring = 0
        for entry in self._entries.values():
            if self._active(entry, now):
                active += 1
                threshold = entry.session.config.warning_threshold_minutes * _MINUTE
                if entry.expires_at - now <= threshold:
                    expiring += 1
        started = self._started_at if self._started_at is not None else now
        return {
            "status": "healthy",
            "activeSessions": active,
            "expiringSoon": expiring,
            "uptime": max(0.0, now - started),
            "timestamp": math.floor(now * 1000),
        }

    # -- background work ----------------------------------------------------------------

    async def sweep(self) -> None:
        """Write pending activity and messages; announce counted activity renewals,
        ``session.expiring`` (once per expiry), ``session.expired`` and
        ``session.ended`` (once each); purge sessions inactive for longer than the
        retention (every few minutes)."""
        await self._flush()
        now = self._clock()
        for entry in builtins.list(self._entries.values()):
            session = entry.session
            if session.ended_at is not None:
                if not session.ended_announced:
                    await self._announce_once(
                        entry, EventKind.SESSION_ENDED, {"ended_announced": True}, now
                    )
                continue
            if now >= entry.expires_at:
                if not session.expired_announced:
                    await self._announce_once(
                        entry, EventKind.SESSION_EXPIRED, {"expired_announced": True}, now
                    )
                continue
            threshold = session.config.warning_threshold_minutes * _MINUTE
            if entry.expires_at - now <= threshold and warning_rearmed(
                session.warned_for, entry.expires_at, threshold
            ):
                await self._announce_once(
                    entry, EventKind.SESSION_EXPIRING, {"warned_for": entry.expires_at}, now
                )
        if self._last_purge is None or now - self._last_purge >= _PURGE_INTERVAL:
            self._last_purge = now
            await self._purge(now)

    async def reload(self) -> None:
        """Take in what another process (the operator CLI) changed in the store: update
        the cache and announce it (an operator end is announced as ``session.ended``, an
        operator renewal as ``session.renewed``)."""
        generation, changed = await self._store.changes(self._generation)
        now = self._clock()
        for stored in changed:
            entry = self._entries.get(stored.id)
            if entry is None:
                self._entries[stored.id] = _Entry(stored)
                continue
            if stored.version <= entry.base.version:
                continue  # our own write (or older)
            self._take_in(entry, stored, now)
        self._generation = max(self._generation, generation)
        await self._flush_sessions()

    # -- internals ----------------------------------------------------------------------

    def _active(self, entry: _Entry, now: float) -> bool:
        return entry.session.ended_at is None and now < entry.expires_at

    async def _entry(self, session_id: str, caller: str | None) -> _Entry:
        try:
            check_session_id(session_id)
        except ValueError:
            raise UnknownSession("unknown session") from None
        entry = self._entries.get(session_id)
        if entry is None:
            stored = await self._store.get(session_id)
            if stored is None:
                raise UnknownSession("unknown session")
            entry = self._entries.setdefault(session_id, _Entry(stored))
        if caller is not None and not entry.session.involves(caller):
            self._events.emit(
                SecurityEvent(
                    kind=EventKind.SESSION_DENIED,
                    time=self._clock(),
                    agent=caller,
                    reason="not_a_participant",
                    details={"session": session_id},
                )
            )
            raise UnknownSession("unknown session")
        return entry

    async def _change(
        self, entry: _Entry, transition: Callable[[Session, float], Session]
    ) -> Session:
        """Apply ``transition`` to the current state and write it (compare-and-set,
        re-reading and retrying on a conflict). The transition may raise."""
        for _ in range(_MAX_WRITE_ATTEMPTS):
            current = entry.folded()
            changed = transition(current, self._clock())
            written = await self._store.update(changed)
            if written is not None:
                self._stored(entry, written, local_before=current)
                return written
            await self._resync(entry)
        raise StoreError("session changed concurrently too often; try again")

    def _stored(self, entry: _Entry, written: Session, *, local_before: Session) -> None:
        """``written`` is in the store; keep local changes made while it was written."""
        local = entry.folded()
        entry.base = written
        if local is local_before:
            entry.set(written)
            entry.dirty = False
            self._dirty.discard(written.id)
            return
        # check_message changed the entry meanwhile: carry its changes over.
        merged = _merge(written, local_before, local)
        entry.set(merged)
        entry.dirty = merged != written
        if entry.dirty:
            self._dirty.add(written.id)

    async def _resync(self, entry: _Entry) -> None:
        stored = await self._store.get(entry.session.id)
        if stored is None:
            # Purged by another process: forget it.
            self._entries.pop(entry.session.id, None)
            raise UnknownSession("unknown session")
        self._take_in(entry, stored, self._clock())

    def _take_in(self, entry: _Entry, stored: Session, now: float) -> None:
        """Adopt ``stored`` (changed by another process) and keep our local changes."""
        base = entry.base
        local = entry.folded()
        merged = _merge(stored, base, local)
        entry.base = stored
        entry.set(merged)
        entry.dirty = merged != stored
        if entry.dirty:
            self._dirty.add(stored.id)
        if (
            stored.ended_at is None
            and stored.renewal_count > base.renewal_count
            and stored.renewed_at != base.renewed_at
        ):
            self._announce(EventKind.SESSION_RENEWED, merged, now, reason="renewed_by_operator")
        # An end by another process is announced by the next sweep (ended_announced is
        # stored with it), so a coordinator that was down when it happened still tells.

    async def _flush(self) -> None:
        await self._flush_messages()
        await self._flush_sessions()

    async def _flush_messages(self) -> None:
        if not self._buffer:
            return
        batch = builtins.list(self._buffer)
        await self._store.record_messages(batch)
        for _ in range(len(batch)):
            self._buffer.popleft()

    async def _flush_sessions(self) -> None:
        dirty, self._dirty = self._dirty, set()
        try:
            for session_id in builtins.list(dirty):
                entry = self._entries.get(session_id)
                if entry is None:
                    continue
                entry.folded()
                if not entry.dirty and entry.session == entry.base:
                    continue
                try:
                    await self._change(entry, lambda current, now: current)
                except UnknownSession:
                    continue
                finally:
                    dirty.discard(session_id)
        finally:
            self._dirty |= dirty
        renewals, self._renewals = self._renewals, []
        for session_id, at in renewals:
            entry = self._entries.get(session_id)
            if entry is not None:
                self._announce(EventKind.SESSION_RENEWED, entry.session, at, reason="activity")

    async def _announce_once(
        self, entry: _Entry, kind: EventKind, flag: dict[str, Any], now: float
    ) -> None:
        """Store the announcement's flag, then announce (at most once)."""
        try:
            session = await self._change(
                entry, lambda current, _now: dataclasses.replace(current, **flag)
            )
        except UnknownSession:
            return
        self._announce(kind, session, now)

    async def _purge(self, now: float) -> None:
        cutoff = now - self._retention
        gone = [
            session_id
            for session_id, entry in self._entries.items()
            if (entry.session.ended_at if entry.session.ended_at is not None else entry.expires_at)
            < cutoff
        ]
        if not gone:
            return
        await self._store.purge(cutoff)
        for session_id in gone:
            self._entries.pop(session_id, None)
            self._dirty.discard(session_id)

    def _announce(
        self, kind: EventKind, session: Session, now: float, *, reason: str | None = None
    ) -> None:
        details: dict[str, str | int | float | bool] = {
            "session": session.id,
            "renewalCount": session.renewal_count,
            "expiresAt": math.floor(session.expires_at * 1000),
        }
        if kind is EventKind.SESSION_ENDED:
            details["endedBy"] = session.ended_by or "operator"
        if reason is None and kind is EventKind.SESSION_ENDED:
            reason = session.end_reason
        self._events.emit(
            SecurityEvent(
                kind=kind,
                time=now,
                agent=session.initiator,
                peer=session.peer,
                reason=reason,
                details=details,
            )
        )
        payload = {"event": kind.value, "session": session.to_api(now)}
        for did in (session.initiator, session.peer):
            try:
                self._notify(did, payload)
            except Exception:
                # A participant that cannot be told (offline, closing) must not stop the
                # other from being told, nor the change itself.
                _log.warning("could not deliver %s for a session to a participant", kind.value)

    def _denied(self, initiator: str, peer: str, reason: str, now: float) -> None:
        self._events.emit(
            SecurityEvent(
                kind=EventKind.SESSION_DENIED,
                time=now,
                agent=initiator,
                peer=peer,
                reason=reason,
            )
        )
