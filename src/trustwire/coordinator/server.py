"""The coordinator: authenticates agents over mutual TLS 1.3 and routes their frames.

Per connection, in order (DESIGN §5):

1. **TLS 1.3 handshake** (``loop.start_tls`` on an accepted TCP socket, so handshake
   failures — no certificate, another CA, expired, TLS 1.2 — become ``auth.failure``
   events instead of vanishing into asyncio's debug log).
2. **Identity**: the client certificate's URI SAN must be the DID of an enrolled,
   unrevoked agent; otherwise the connection is closed.
3. **Frames**: length-prefixed, size-checked before buffering
   (:class:`~trustwire.protocol.frames.FrameDecoder`), decoded and validated envelopes.
4. For every routed (end-to-end) frame: the sender field must be the authenticated DID
   (no impersonation), the timestamp within the window, the envelope id never seen
   before, the recipient enrolled and unrevoked, the policy engine must allow
   ``message`` from sender to recipient, the per-agent/per-role rate limit must admit it,
   and the body must fit the policy's size limit. Each refusal is one opaque ``ERROR
   REJECTED`` on the wire and one precise security event.
5. Accepted *sealed* frames of one read are stored durably in one batch (group commit),
   then the sender gets one ``STATUS`` frame for the batch, and the recipient's delivery
   pump is woken. The pump sends the recipient's queue in order; the recipient ``ACK``\\ s
   what it has taken, which removes it from the queue. At-least-once on the wire; the
   recipient SDK deduplicates by application message id.
6. Accepted *channel* frames (``CHANNEL_INIT``/``ACCEPT``/``DATA``) for an online
   recipient are written to its connection in memory, in order: only that live
   connection holds the channel keys, so storing them bought nothing (replays are
   refused by the envelope-id cache and the timestamp window before this point). They
   get the same delivery window: at most ``delivery_window`` unacknowledged in-memory
   frames per recipient and ``_MAX_WRITE_BUFFER`` bytes in its transport buffer (each
   exceeded by at most one read's worth per sender admitted at the boundary). A sender
   whose frames would exceed that waits, its reads paused (back-pressure), until the
   recipient acknowledges, for at most ``delivery_wait`` seconds, and never when
   waiting would close a cycle of connections waiting on each other (two agents
   flooding each other). In those two cases, and while earlier channel frames for the
   recipient are still in the durable queue (ordering), the frames take the durable
   queue as before. ``ACK``\\ s of in-memory frames only release the window.

The coordinator never holds a key that could open channel or sealed bodies: it stores
and forwards opaque bytes.

Two more kinds of traffic share the connection:

* ``API_REQUEST`` frames call the coordinator's API (:class:`~trustwire.coordinator.api.Api`:
  sessions, shared memory) as the connection's authenticated agent, exactly as the HTTPS
  API would; the answer is an ``API_RESPONSE`` with the same envelope id. They count
  against the agent's rate-limit buckets like messages.
* A routed message whose header carries a **session id** is checked against the session
  (after every check above): it must be an active session between exactly its sender and
  recipient, or the sender gets ``SESSION_EXPIRED`` / ``SESSION_ENDED`` /
  ``SESSION_UNKNOWN`` and a ``session.denied`` event is recorded. Accepted ones count as
  session activity (auto-renew) and their envelope metadata is kept for the session's
  history. ``SESSION_EVENT`` frames carry each session's lifecycle events to both agents.

When an agent disconnects, queued *channel* frames for it are dropped (its channel keys
died with the connection) and the agents it had channels with receive a ``PRESENCE``
offline notice, on which their SDKs resend unacknowledged messages sealed. A channel
frame that arrives for an agent already offline is likewise never stored; its sender gets
the same notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trustwire.coordinator.ratelimit import RateLimiter
from trustwire.crypto.x509 import certificate_fingerprint, certificate_not_after
from trustwire.errors import (
    InvalidEnvelope,
    InvalidSignature,
    PolicyDenied,
    ProtocolError,
    ReplayDetected,
    SecurityRejected,
    SessionEnded,
    SessionError,
    SessionExpired,
    StaleTimestamp,
    TrustwireError,
)
from trustwire.events import EventKind, EventStream, SecurityEvent
from trustwire.identity.ca import DomainCA, certificate_did
from trustwire.policy.engine import PolicyEngine, Principal
from trustwire.protocol import control
from trustwire.protocol.channel import verify_key_of
from trustwire.protocol.control import ErrorCode, PeerInfo, Status
from trustwire.protocol.envelope import FLAG_RESPONSE, ZERO_CHANNEL, Envelope, FrameType, decode
from trustwire.protocol.frames import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from trustwire.protocol.replay import MessageIdCache, check_timestamp
from trustwire.registry.registry import Registry
from trustwire.store.base import AgentRecord, NewMessage, QueuedMessage, Store

if TYPE_CHECKING:
    from trustwire.coordinator.api import Api
    from trustwire.sessions.manager import SessionManager

__all__ = ["Coordinator", "CoordinatorConfig"]

log = logging.getLogger("trustwire.coordinator")

_CHANNEL_TYPES = frozenset(
    {FrameType.CHANNEL_INIT, FrameType.CHANNEL_ACCEPT, FrameType.CHANNEL_DATA}
)
_COORDINATOR_ID = "coordinator"


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Coordinator limits and timings (seconds)."""

    host: str = "127.0.0.1"
    port: int = 0
    max_frame: int = DEFAULT_MAX_FRAME
    max_connections: int = 1024
    idle_timeout: float = 300.0
    tls_handshake_timeout: float = 10.0
    timestamp_window: float = 120.0
    read_chunk: int = 256 * 1024
    delivery_batch: int = 512
    delivery_window: int = 2048
    #: Longest a sender's reads pause for a recipient over its in-memory delivery window
    #: before its channel frames take the durable queue instead.
    delivery_wait: float = 5.0
    shutdown_grace: float = 5.0


#: Bytes a recipient's transport may buffer before in-memory delivery to it waits.
_MAX_WRITE_BUFFER = 4 * 1024 * 1024


@dataclass(eq=False)
class _Connection:
    did: str
    record: AgentRecord
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peers: set[str] = field(default_factory=set)
    channel_frames: set[bytes] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: set[bytes] = field(default_factory=set)
    last_seq: int = 0
    closed: bool = False
    #: The sender's rate-limit buckets and the policy they were derived under (see
    #: Coordinator._buckets_of); reset when the directory reloads.
    buckets: tuple[object, list[tuple[str, str]]] | None = None
    #: Channel frames written to this connection from memory, not yet acknowledged.
    direct: set[bytes] = field(default_factory=set)
    #: Set when ``direct`` shrinks or the connection closes (senders waiting for room).
    room: asyncio.Event = field(default_factory=asyncio.Event)
    #: The recipient this connection's read loop is waiting for room at, if any.
    waiting_on: _Connection | None = None

    def write(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)


class Coordinator:
    """An asyncio coordinator. ``await start()``, then ``port``; ``await close()`` stops it."""

    def __init__(
        self,
        *,
        store: Store,
        policy: PolicyEngine,
        tls: ssl.SSLContext,
        events: EventStream | None = None,
        rate_limiter: RateLimiter | None = None,
        config: CoordinatorConfig | None = None,
        clock: Callable[[], float] = time.time,
        issuer: DomainCA | None = None,
        registry: Registry | None = None,
        api: Api | None = None,
        sessions: SessionManager | None = None,
    ) -> None:
        if tls.minimum_version != ssl.TLSVersion.TLSv1_3 or tls.verify_mode != ssl.CERT_REQUIRED:
            raise ValueError("coordinator TLS context must be TLS 1.3 only with CERT_REQUIRED")
        self.store = store
        self.policy = policy
        self.tls = tls
        self.events = events or EventStream()
        self.rate_limiter = rate_limiter or RateLimiter()
        self.config = config or CoordinatorConfig()
        self.clock = clock
        self.issuer = issuer
        #: With a registry, LOOKUP answers come from its log and carry a proof.
        self.registry = registry
        #: The API served over API_REQUEST frames (and, by cli/serve, over HTTPS).
        self.api = api
        #: Sessions: messages naming one are checked against it.
        self.sessions = sessions
        self._ids = MessageIdCache(ttl=2 * self.config.timestamp_window)
        self._connections: dict[str, _Connection] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._agents: dict[str, AgentRecord] = {}
        # Principal of each agent, valid while its directory record is the same object
        # (refresh_agents loads new ones and clears this).
        self._principals: dict[str, tuple[AgentRecord, Principal]] = {}
        self._closing = False
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the directory and start listening."""
        for record in await self.store.agents.list():
            self._agents[record.did] = record
        self._server = await asyncio.start_server(
            self._on_tcp, self.config.host, self.config.port, limit=self.config.read_chunk
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("coordinator listening on %s:%d", self.config.host, self.port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        server = self._server
        if server is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await server.serve_forever()

    async def close(self) -> None:
        """Graceful shutdown: stop accepting, tell every agent, flush, close."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            self._send_error(conn, ZERO_CHANNEL, ErrorCode.SHUTTING_DOWN, "coordinator stopping")
            conn.closed = True
            with contextlib.suppress(Exception):
                conn.writer.close()
        if self._handlers:
            _done, pending = await asyncio.wait(self._handlers, timeout=self.config.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()

    async def refresh_agents(self) -> None:
        """Reload the agent directory (after enrolment, revocation or rotation elsewhere).

        Compared with the directory as last loaded:

        * An agent now **revoked** (or gone) loses its live connection at once, and every
          message still queued *for* it is dropped: nobody can ever collect it. Messages
          queued *from* it are dropped when their turn for delivery comes (see
          :meth:`_pump`); recipients could not verify them against the registry anyway.
          One ``agent.revoked`` event per revocation.
        * An agent whose **agreement key changed** (rotated) loses its live connection
          (it reconnects with its new keys), and every connected agent is sent ``PRESENCE
          {"did", "online": false, "rotated": true}`` so that SDKs drop their channels
          with it and their cached copy of its key, and re-look it up.
        """
        fresh = {r.did: r for r in await self.store.agents.list()}
        previous = self._agents
        self._agents = fresh
        self._principals.clear()
        for did, old in previous.items():
            record = fresh.get(did)
            if old.revoked or (record is not None and not record.revoked):
                continue
            dropped = await self._drop_queued_for(did)
            self._emit(
                EventKind.AGENT_REVOKED,
                did,
                reason="revoked in the registry",
                name=old.name,
                connected=did in self._connections,
                dropped_messages=dropped,
            )
        for did, conn in list(self._connections.items()):
            record = fresh.get(did)
            if record is None or record.revoked:
                self._disconnect(conn, ErrorCode.REJECTED, "rejected")
            else:
                # Role changes apply to a connected sender's next frame, not its next
                # connection.
                conn.record = record
                conn.buckets = None
        for did, current in fresh.items():
            before = previous.get(did)
            if (
                before is None
                or current.revoked
                or (
                    before.agreement_key == current.agreement_key
                    and before.agreement_issued_at == current.agreement_issued_at
                )
            ):
                continue
            self._rotated(did)

    def _rotated(self, did: str) -> None:
        """Tell everyone online that ``did`` has a new agreement key; cut its connection."""
        notice = control.encode_json({"did": did, "online": False, "rotated": True})
        conn = self._connections.get(did)
        if conn is not None:
            # The offline notice _on_disconnect would send is superseded by this one.
            conn.peers.clear()
            self._disconnect(conn, ErrorCode.SHUTTING_DOWN, "agreement key rotated; reconnect")
        for other in list(self._connections.values()):
            if other.did != did:
                other.peers.discard(did)
                self._send_control(other, FrameType.PRESENCE, notice)

    def _disconnect(self, conn: _Connection, code: ErrorCode, reason: str) -> None:
        self._send_error(conn, ZERO_CHANNEL, code, reason)
        conn.closed = True
        conn.writer.close()

    async def _drop_queued_for(self, did: str) -> int:
        """Remove every message queued for ``did``; return how many were removed."""
        dropped = 0
        while True:
            batch = await self.store.queue.pending(did, limit=self.config.delivery_batch)
            if not batch:
                return dropped
            dropped += await self.store.queue.remove([m.message_id for m in batch])

    def online(self, did: str) -> bool:
        return did in self._connections

    def agent(self, did: str) -> AgentRecord | None:
        """The directory record of ``did`` as last loaded (revoked ones included)."""
        return self._agents.get(did)

    def agent_named(self, name: str) -> AgentRecord | None:
        """The directory record named ``name`` as last loaded (revoked ones included)."""
        return next((r for r in self._agents.values() if r.name == name), None)

    # -- events ----------------------------------------------------------------------

    def _emit(
        self,
        kind: EventKind,
        agent: str | None,
        *,
        peer: str | None = None,
        reason: str | None = None,
        **details: str | int | float | bool,
    ) -> None:
        self.events.emit(
            SecurityEvent(
                kind=kind, time=self.clock(), agent=agent, peer=peer, reason=reason, details=details
            )
        )

    # -- connection handling ---------------------------------------------------------

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        address = f"{peername[0]}:{peername[1]}" if peername else "?"
        if self._closing or len(self._handlers) > self.config.max_connections:
            self._emit(EventKind.AUTH_FAILURE, None, reason="connection limit", address=address)
            writer.close()
            return
        try:
            async with asyncio.timeout(self.config.tls_handshake_timeout):
                await writer.start_tls(self.tls)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            self._emit(
                EventKind.AUTH_FAILURE, None, reason=f"tls: {type(exc).__name__}", address=address
            )
            # Not ``wait_closed``: after a failed or timed-out ``start_tls`` the stream's
            # protocol no longer hears about the socket closing, so it would never return
            # and the handler (holding a slot under ``max_connections``) would stay until
            # shutdown.
            writer.close()
            return
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        did = certificate_did(der) if der else None
        record = self._agents.get(did) if did is not None else None
        if did is None or record is None or record.revoked:
            if did is None:
                why = "no DID in certificate"
            else:
                why = "agent revoked" if record is not None else "DID not enrolled"
            self._emit(EventKind.AUTH_FAILURE, did, reason=why, address=address)
            await _close(writer)
            return
        previous = self._connections.get(did)
        if previous is not None:
            previous.closed = True
            previous.writer.close()
        conn = _Connection(did=did, record=record, reader=reader, writer=writer)
        self._connections[did] = conn
        self._emit(EventKind.AUTH_SUCCESS, did, address=address)
        ready = {
            "did": did,
            "name": record.name,
            "time_ms": int(self.clock() * 1000),
            "max_frame": self.config.max_frame,
        }
        self._send_control(conn, FrameType.READY, control.encode_json(ready))
        pump = asyncio.create_task(self._pump(conn))
        conn.wake.set()
        try:
            await self._read_loop(conn)
        finally:
            conn.closed = True
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            await self._on_disconnect(conn)

    async def _read_loop(self, conn: _Connection) -> None:
        decoder = FrameDecoder(self.config.max_frame)
        reader = conn.reader
        while not conn.closed:
            try:
                async with asyncio.timeout(self.config.idle_timeout):
                    data = await reader.read(self.config.read_chunk)
            except TimeoutError:
                self._send_error(conn, ZERO_CHANNEL, ErrorCode.IDLE, "idle timeout")
                return
            except (ConnectionError, ssl.SSLError, OSError):
                return
            if not data:
                return
            try:
                frames = decoder.receive_data(data)
            except ProtocolError as exc:
                self._emit(EventKind.FRAME_INVALID, conn.did, reason=str(exc))
                self._send_error(conn, ZERO_CHANNEL, ErrorCode.PROTOCOL, "invalid frame")
                return
            if frames and not await self._process(conn, frames):
                return
            if conn.closed or conn.writer.is_closing():
                # Closed while the frames were processed (shutdown, revocation, a newer
                # connection): a closed SSL transport has no write buffer left to ask about.
                return
            if conn.writer.transport.get_write_buffer_size() > 4 * 1024 * 1024:
                await conn.writer.drain()

    async def _process(self, conn: _Connection, frames: list[bytes]) -> bool:
        """Handle one read's worth of frames; False closes the connection."""
        now = self.clock()
        accepted: list[tuple[Envelope, bytes]] = []
        accepted_ids: set[bytes] = set()
        acks: list[bytes] = []
        for raw in frames:
            if conn.closed:
                # Closed while an earlier frame of this read was handled (revocation, a
                # newer connection, shutdown): the agent is refused at once, so nothing
                # it sent after that point is served.
                break
            try:
                env = decode(raw)
            except InvalidEnvelope as exc:
                self._emit(EventKind.FRAME_INVALID, conn.did, reason=str(exc))
                self._send_error(conn, ZERO_CHANNEL, ErrorCode.PROTOCOL, "invalid envelope")
                return False
            ftype = env.type
            if ftype.routed:
                try:
                    self._check_routed(conn, env, now, accepted_ids)
                except SessionError as exc:
                    self._emit(
                        EventKind.SESSION_DENIED,
                        conn.did,
                        peer=env.recipient,
                        reason=str(exc),
                        session=str(uuid.UUID(bytes=env.session_id)),
                    )
                    self._send_error(conn, env.message_id, _session_code(exc), "session")
                    continue
                except SecurityRejected as exc:
                    self._emit(
                        _event_for(exc),
                        conn.did,
                        peer=env.recipient,
                        reason=str(exc),
                        type=ftype.name,
                        size=len(env.body),
                    )
                    self._send_error(conn, env.message_id, ErrorCode.REJECTED, "rejected")
                    continue
                accepted.append((env, raw))
                accepted_ids.add(env.message_id)
            elif ftype is FrameType.ACK:
                try:
                    acks.extend(control.decode_ack(env.body))
                except InvalidEnvelope as exc:
                    self._emit(EventKind.FRAME_INVALID, conn.did, reason=str(exc))
                    return False
            elif ftype is FrameType.LOOKUP:
                await self._lookup(conn, env)
            elif ftype is FrameType.RENEW:
                await self._renew(conn, env, now)
            elif ftype is FrameType.API_REQUEST:
                await self._api_request(conn, env)
            elif ftype is FrameType.PING:
                self._send_control(conn, FrameType.PONG, b"", message_id=env.message_id)
            else:
                self._emit(EventKind.FRAME_INVALID, conn.did, reason=f"unexpected {ftype.name}")
                self._send_error(conn, env.message_id, ErrorCode.PROTOCOL, "unexpected frame")
                return False
        if acks:
            # In-memory frames first: that only releases the window (and whoever waits
            # for it), before this read's own frames may wait for room elsewhere.
            direct = conn.direct
            if direct:
                before = len(direct)
                stored_acks = [mid for mid in acks if mid not in direct]
                direct.difference_update(acks)
                if len(direct) < before:
                    conn.room.set()
                acks = stored_acks
        if accepted:
            accepted = self._rate_limit(conn, accepted)
            for env, _raw in accepted:
                self._ids.add(env.message_id, now=now)
        if accepted:
            await self._route(conn, accepted, now)
        if acks:
            for mid in acks:
                conn.channel_frames.discard(mid)
                conn.inflight.discard(mid)
            await self.store.queue.ack(conn.did, acks)
            conn.wake.set()
        return True

    def _check_routed(
        self, conn: _Connection, env: Envelope, now: float, batch_ids: set[bytes]
    ) -> None:
        """Every check on a routed frame but the rate limit (see :meth:`_rate_limit`);
        ``batch_ids``: envelope ids already accepted from the same read."""
        if env.sender != conn.did:
            self._emit(EventKind.IMPERSONATION_ATTEMPT, conn.did, peer=env.sender)
            raise SecurityRejected(f"sender field {env.sender!r} is not the authenticated agent")
        check_timestamp(env.timestamp, now=now, window=self.config.timestamp_window)
        if env.message_id in self._ids or env.message_id in batch_ids:
            raise ReplayDetected("envelope id already seen")
        recipient = self._agents.get(env.recipient)
        if recipient is None or recipient.revoked:
            raise PolicyDenied("recipient is not an enrolled, active agent")
        if env.flags & FLAG_RESPONSE:
            # A response (channel accept, receipt) answers the recipient: it is allowed
            # when the recipient may message this sender. The recipient's SDK refuses any
            # application message inside a response, so this grants nothing more.
            decision = self.policy.authorize(
                self._principal(recipient), "message", self._principal(conn.record), now=now
            )
        else:
            decision = self.policy.authorize(
                self._principal(conn.record), "message", self._principal(recipient), now=now
            )
        if not decision.allowed:
            raise PolicyDenied(decision.reason)
        limit = self.policy.config.max_message_bytes
        if limit is not None and len(env.body) > limit + 512:
            raise PolicyDenied(f"frame body of {len(env.body)} bytes exceeds the policy limit")
        if env.session_id:
            sessions = self.sessions
            if sessions is None:
                raise SessionError("this coordinator keeps no sessions")
            sessions.check_message(
                str(uuid.UUID(bytes=env.session_id)), conn.did, env.recipient, now=now
            )

    def _principal(self, record: AgentRecord) -> Principal:
        cached = self._principals.get(record.did)
        if cached is not None and cached[0] is record:
            return cached[1]
        principal = Principal(did=record.did, name=record.name, roles=record.roles)
        self._principals[record.did] = (record, principal)
        return principal

    def _buckets_of(self, conn: _Connection) -> list[tuple[str, str]]:
        """``conn``'s rate-limit buckets, derived again after a policy replacement (a new
        ``PolicyConfig`` object) or a directory reload (which resets ``conn.buckets``)."""
        config = self.policy.config
        cached = conn.buckets
        if cached is not None and cached[0] is config:
            return cached[1]
        buckets = self.policy.rate_limits_for(self._principal(conn.record))
        conn.buckets = (config, buckets)
        return buckets

    def _rate_limit(
        self, conn: _Connection, accepted: list[tuple[Envelope, bytes]]
    ) -> list[tuple[Envelope, bytes]]:
        """The frames of ``accepted`` the sender's rate-limit buckets admit, in order.

        One hit of cost ``len(accepted)`` when they all fit; otherwise one at a time, so
        that exactly as many are admitted as frame-by-frame hits would admit. Each one
        refused gets its own ``rate.limited`` event and error.
        """
        buckets = self._buckets_of(conn)
        if self.rate_limiter.hit(buckets, cost=len(accepted)):
            return accepted
        admitted: list[tuple[Envelope, bytes]] = []
        for env, raw in accepted:
            if self.rate_limiter.hit(buckets):
                admitted.append((env, raw))
                continue
            self._emit(
                EventKind.RATE_LIMITED, conn.did, peer=env.recipient, reason="rate limit exceeded"
            )
            self._send_error(conn, env.message_id, ErrorCode.RATE_LIMITED, "rate limited")
        return admitted

    async def _route(
        self, conn: _Connection, accepted: list[tuple[Envelope, bytes]], now: float
    ) -> None:
        # A channel frame can only be opened by the live connection holding the channel
        # keys, so one whose recipient is offline is not stored: queued, it would reach
        # the recipient's next connection as an undecryptable frame. Its sender is told
        # the peer is offline (PRESENCE, before the STATUS), on which the SDK resends
        # sealed every message the channel has not receipted; the STATUS says QUEUED
        # because that sealed resend is what gets queued.
        stale = {
            i
            for i, (env, _raw) in enumerate(accepted)
            if env.type in _CHANNEL_TYPES and env.recipient not in self._connections
        }
        # Channel frames for online recipients go in memory (module docstring, 6.):
        # recipient did -> the connection they are for, decided before anything is
        # stored so that a recipient whose frames take the queue keeps their order.
        direct_to: dict[str, _Connection] = {}
        queued_to: set[str] = set()
        for i, (env, _raw) in enumerate(accepted):
            did = env.recipient
            if i in stale or env.type not in _CHANNEL_TYPES or did in direct_to or did in queued_to:
                continue
            target = self._connections.get(did)
            if target is not None and await self._wait_for_room(conn, target):
                direct_to[did] = target
            else:
                queued_to.add(did)
        direct = {
            i
            for i, (env, _raw) in enumerate(accepted)
            if i not in stale and env.type in _CHANNEL_TYPES and env.recipient in direct_to
        }
        keep = [i for i in range(len(accepted)) if i not in stale and i not in direct]
        items = [
            NewMessage(
                recipient=accepted[i][0].recipient,
                sender=conn.did,
                message_id=accepted[i][0].message_id,
                frame=accepted[i][1],
                enqueued_at=now,
            )
            for i in keep
        ]
        results = await self.store.queue.enqueue_many(items) if items else []
        stored = dict(zip(keep, results, strict=True))
        out: dict[str, list[bytes]] = {}
        statuses: list[tuple[bytes, Status]] = []
        woken: set[str] = set()
        offline: set[str] = set()
        orphans: list[bytes] = []
        # One routine event per (outcome, recipient, frame type) and read, carrying how
        # many frames and body bytes: per frame, the events cost a third of the loop.
        tally: dict[tuple[EventKind, str, str], list[int]] = {}
        for i, (env, raw) in enumerate(accepted):
            target = self._connections.get(env.recipient)
            ok = stored.get(i)
            if ok is False:
                statuses.append((env.message_id, Status.DUPLICATE))
                continue
            if env.type in _CHANNEL_TYPES:
                if i in direct and target is not direct_to[env.recipient]:
                    target = None  # that connection ended while the batch was stored
                if target is None:
                    if ok:  # the recipient left while the batch was being stored
                        orphans.append(env.message_id)
                    offline.add(env.recipient)
                    statuses.append((env.message_id, Status.QUEUED))
                    continue
                conn.peers.add(env.recipient)
                target.peers.add(conn.did)
                if i in direct:
                    target.direct.add(env.message_id)
                    out.setdefault(env.recipient, []).append(raw)
                else:
                    target.channel_frames.add(env.message_id)
            if target is not None:
                statuses.append((env.message_id, Status.FORWARDED))
                if i not in direct:
                    woken.add(env.recipient)
                kind = EventKind.MESSAGE_ACCEPTED
            else:
                statuses.append((env.message_id, Status.QUEUED))
                kind = EventKind.MESSAGE_QUEUED
            counts = tally.get((kind, env.recipient, env.type.name))
            if counts is None:
                tally[kind, env.recipient, env.type.name] = [1, len(env.body)]
            else:
                counts[0] += 1
                counts[1] += len(env.body)
        if self.sessions is not None:
            self._record_session_messages(accepted)
        for (kind, recipient, type_name), (count, size) in tally.items():
            self._emit(kind, conn.did, peer=recipient, type=type_name, count=count, bytes=size)
        max_frame = self.config.max_frame
        for did, raws in out.items():
            # No await since the check above: the connection is still open.
            direct_to[did].write(b"".join(encode_frame(raw, max_frame=max_frame) for raw in raws))
        if orphans:
            await self.store.queue.remove(orphans)
        for did in woken:
            target = self._connections.get(did)
            if target is not None:
                target.wake.set()
        for did in offline:
            notice = control.encode_json({"did": did, "online": False})
            self._send_control(conn, FrameType.PRESENCE, notice)
        for i in range(0, len(statuses), control.MAX_BATCH):
            self._send_control(
                conn, FrameType.STATUS, control.encode_status(statuses[i : i + control.MAX_BATCH])
            )

    def _record_session_messages(self, accepted: list[tuple[Envelope, bytes]]) -> None:
        """Keep the envelope metadata (never content) of accepted session messages."""
        sessions = self.sessions
        if sessions is None:
            return
        from trustwire.sessions.model import SessionMessage

        for env, _raw in accepted:
            if env.session_id:
                sessions.record_message(
                    SessionMessage(
                        session_id=str(uuid.UUID(bytes=env.session_id)),
                        message_id=env.message_id.hex(),
                        sender=env.sender,
                        recipient=env.recipient,
                        type=env.type.name,
                        size=len(env.body),
                        timestamp_ms=env.timestamp,
                    )
                )

    def notify_session(self, did: str, payload: dict[str, Any]) -> None:
        """Send a session event to ``did`` if it is connected (the SessionManager's
        ``notify`` hook). Dropped, like one for an offline agent, while the agent's
        connection has :data:`_MAX_WRITE_BUFFER` bytes unsent: an agent that does not read
        must not make the coordinator buffer events (up to 10 KiB each) without bound."""
        conn = self._connections.get(did)
        if conn is None or conn.closed or conn.writer.is_closing():
            return
        if conn.writer.transport.get_write_buffer_size() >= _MAX_WRITE_BUFFER:
            log.debug("session event for %s dropped: its connection is not reading", did)
            return
        try:
            body = control.encode_api_frame(payload)
        except ValueError:
            log.warning("session event for %s too large to send", did)
            return
        self._send_control(conn, FrameType.SESSION_EVENT, body)

    async def _api_request(self, conn: _Connection, env: Envelope) -> None:
        """Answer one API_REQUEST as the connection's agent (never closes the connection)."""
        from trustwire.coordinator.api import ApiRequest, ApiResponse, Caller, error_body

        if not self.rate_limiter.hit(self._buckets_of(conn)):
            self._emit(EventKind.RATE_LIMITED, conn.did, reason="API rate limit exceeded")
            self._send_error(conn, env.message_id, ErrorCode.RATE_LIMITED, "rate limited")
            return
        response: ApiResponse
        try:
            call = control.decode_api_frame(env.body)
            method, path = call.get("method"), call.get("path")
            query, body = call.get("query") or {}, call.get("body")
            if (
                not isinstance(method, str)
                or not isinstance(path, str)
                or not isinstance(query, dict)
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in query.items())
            ):
                raise InvalidEnvelope("API request needs string method, path and query")
        except (InvalidEnvelope, ValueError) as exc:
            # json refuses an integer of over 4300 digits with a plain ValueError.
            reason = (
                str(exc) if isinstance(exc, InvalidEnvelope) else "API frame body is not valid JSON"
            )
            self._emit(EventKind.FRAME_INVALID, conn.did, reason=reason)
            response = ApiResponse(400, error_body("VALIDATION_ERROR", reason))
        else:
            if self.api is None:
                response = ApiResponse(
                    404, error_body("NOT_FOUND", "this coordinator serves no API")
                )
            else:
                record = conn.record
                caller = Caller(did=record.did, name=record.name, roles=tuple(record.roles))
                response = await self.api.handle(
                    ApiRequest(
                        caller=caller,
                        method=method.upper(),
                        path=path.split("?", 1)[0],
                        query=query,
                        body=body,
                    )
                )
        try:
            answer = control.encode_api_frame({"status": response.status, "body": response.body})
        except (ValueError, TypeError):
            answer = control.encode_api_frame(
                {"status": 500, "body": error_body("INTERNAL_ERROR", "answer too large")}
            )
        if not conn.closed:
            self._send_control(conn, FrameType.API_RESPONSE, answer, message_id=env.message_id)

    def _has_room(self, target: _Connection) -> bool:
        return (
            len(target.direct) < self.config.delivery_window
            and target.writer.transport.get_write_buffer_size() < _MAX_WRITE_BUFFER
        )

    async def _wait_for_room(self, conn: _Connection, target: _Connection) -> bool:
        """Whether channel frames from ``conn`` may go to ``target`` in memory, waiting
        (so pausing ``conn``'s reads) while ``target`` is over its window.

        False: earlier channel frames for ``target`` are in the durable queue (they go
        first), ``target`` is closing, waiting would close a cycle of connections waiting
        on each other, or ``delivery_wait`` ran out; the caller uses the durable queue.
        """
        if target.channel_frames or target.closed or target.writer.is_closing():
            # A closing SSL transport has no write buffer left to ask about; its frames
            # take the queue, which the connection's cleanup empties.
            return False
        if self._has_room(target):
            return True
        waiting: _Connection | None = target
        while waiting is not None:
            if waiting is conn:
                return False
            waiting = waiting.waiting_on
        conn.waiting_on = target
        try:
            async with asyncio.timeout(self.config.delivery_wait):
                while not (
                    conn.closed
                    or target.closed
                    or target.writer.is_closing()
                    or self._has_room(target)
                ):
                    if len(target.direct) >= self.config.delivery_window:
                        target.room.clear()
                        await target.room.wait()
                    else:
                        await target.writer.drain()
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            pass  # the recipient's connection is going away: the caller sees it gone
        finally:
            conn.waiting_on = None
        return not (target.closed or target.writer.is_closing() or target.channel_frames)

    async def _pump(self, conn: _Connection) -> None:
        """Send the recipient's queue in order, whenever woken.

        At most ``delivery_window`` frames are in flight (sent, not yet acknowledged): the
        window is the flow control that bounds the recipient's buffering.
        """
        queue = self.store.queue
        window = self.config.delivery_window
        while not conn.closed:
            await conn.wake.wait()
            conn.wake.clear()
            while not conn.closed:
                room = min(window - len(conn.inflight), self.config.delivery_batch)
                if room <= 0:
                    break
                batch = await queue.pending(conn.did, after_seq=conn.last_seq, limit=room)
                if not batch:
                    break
                conn.last_seq = batch[-1].seq
                batch = await self._without_revoked_senders(batch)
                if not batch:
                    continue
                conn.inflight.update(m.message_id for m in batch)
                conn.write(
                    b"".join(encode_frame(m.frame, max_frame=self.config.max_frame) for m in batch)
                )
                try:
                    await conn.writer.drain()
                except (ConnectionError, OSError):
                    conn.closed = True
                    return

    async def _without_revoked_senders(self, batch: list[QueuedMessage]) -> list[QueuedMessage]:
        """Drop (from the queue too) messages whose sender has since been revoked."""
        agents = self._agents
        keep: list[QueuedMessage] = []
        drop: list[bytes] = []
        for message in batch:
            sender = agents.get(message.sender)
            if sender is not None and sender.revoked:
                drop.append(message.message_id)
            else:
                keep.append(message)
        if drop:
            await self.store.queue.remove(drop)
        return keep

    async def _on_disconnect(self, conn: _Connection) -> None:
        if self._connections.get(conn.did) is conn:
            del self._connections[conn.did]
        with contextlib.suppress(Exception):
            conn.writer.close()
        # In-memory channel frames die with the connection like queued ones; senders
        # waiting for room here stop waiting.
        conn.direct.clear()
        conn.room.set()
        if conn.channel_frames:
            await self.store.queue.remove(list(conn.channel_frames))
            conn.channel_frames.clear()
        self._emit(EventKind.CONNECTION_CLOSED, conn.did)
        notice = control.encode_json({"did": conn.did, "online": False})
        for peer in conn.peers:
            other = self._connections.get(peer)
            if other is not None:
                other.peers.discard(conn.did)
                self._send_control(other, FrameType.PRESENCE, notice)

    async def _lookup(self, conn: _Connection, env: Envelope) -> None:
        query, known_size = _lookup_query(env.body)
        record = self._agents.get(query)
        if record is None:
            record = next((r for r in self._agents.values() if r.name == query), None)
        allowed = record is not None and not record.revoked
        if record is not None and allowed and self.registry is not None:
            # The answer is the registry's snapshot, so it always matches its proof.
            try:
                found = await asyncio.to_thread(
                    self.registry.answer, record.did, known_size=known_size
                )
            except TrustwireError as exc:
                # A registry that cannot answer must not end the asking agent's connection;
                # without a proof its SDK would refuse the entry anyway.
                log.error("registry lookup of %s failed: %s", record.did, exc)
                found = None
            if found is None or found[0]["revoked_at"] is not None:
                body = control.encode_json({"found": False})
            else:
                snapshot, proof = found
                fields = {key: snapshot[key] for key in _SNAPSHOT_ANSWER}
                body = control.encode_json(
                    {
                        "found": True,
                        **fields,
                        "online": record.did in self._connections,
                        "registry": proof,
                    }
                )
        elif record is not None and allowed:
            info = PeerInfo(
                did=record.did,
                name=record.name,
                roles=list(record.roles),
                agreement_key=record.agreement_key.hex(),
                agreement_statement=record.agreement_statement.hex(),
                agreement_issued_at=record.agreement_issued_at,
                online=record.did in self._connections,
            )
            body = control.encode_json({"found": True, **info.to_dict()})
        else:
            body = control.encode_json({"found": False})
        self._send_control(conn, FrameType.LOOKUP_RESULT, body, message_id=env.message_id)

    async def _renew(self, conn: _Connection, env: Envelope, now: float) -> None:
        """Issue a fresh short-lived certificate for a TLS key the agent generated.

        With a registry, the certificate is logged before it is handed out; one that
        cannot be logged is not handed out (the SDK retries its renewal later).
        """
        try:
            if self.issuer is None:
                raise SecurityRejected("this coordinator does not issue certificates")
            if len(env.body) != 32 + 64:
                raise SecurityRejected("malformed renewal request")
            check_timestamp(env.timestamp, now=now, window=self.config.timestamp_window)
            public, signature = env.body[:32], env.body[32:]
            statement = control.renew_statement(conn.did, public, env.timestamp)
            try:
                verify_key_of(conn.did).verify(signature, statement)
            except InvalidSignature as exc:
                raise SecurityRejected("renewal request signature is invalid") from exc
            cert = self.issuer.renew_agent_certificate(
                conn.did, conn.record.name, public, now=datetime.fromtimestamp(now, UTC)
            )
        except SecurityRejected as exc:
            self._emit(EventKind.AUTH_FAILURE, conn.did, reason=f"renewal: {exc}")
            self._send_error(conn, env.message_id, ErrorCode.REJECTED, "rejected")
            return
        if self.registry is not None:
            try:
                await self.registry.certificate_issued(
                    conn.did,
                    fingerprint=certificate_fingerprint(cert),
                    not_after=certificate_not_after(cert).timestamp(),
                )
            except TrustwireError as exc:
                log.warning("renewal for %s not logged in the registry: %s", conn.did, exc)
                self._send_error(conn, env.message_id, ErrorCode.REJECTED, "rejected")
                return
        self._emit(EventKind.CERTIFICATE_ISSUED, conn.did)
        self._send_control(conn, FrameType.RENEWED, cert, message_id=env.message_id)

    # -- output helpers --------------------------------------------------------------

    def _send_control(
        self, conn: _Connection, ftype: FrameType, body: bytes, *, message_id: bytes = ZERO_CHANNEL
    ) -> None:
        env = Envelope.create(
            ftype,
            message_id,
            _COORDINATOR_ID,
            conn.did,
            body=body,
            timestamp=int(self.clock() * 1000),
        )
        conn.write(encode_frame(env.to_bytes(), max_frame=self.config.max_frame))

    def _send_error(
        self, conn: _Connection, message_id: bytes, code: ErrorCode, reason: str
    ) -> None:
        self._send_control(
            conn, FrameType.ERROR, control.encode_error(code, reason), message_id=message_id
        )


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a refused connection, waiting (briefly) for the TLS close to finish."""
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


_SNAPSHOT_ANSWER = (
    "did",
    "name",
    "roles",
    "agreement_key",
    "agreement_statement",
    "agreement_issued_at",
)


def _lookup_query(body: bytes) -> tuple[str, int | None]:
    """``(who, known_size)`` from a LOOKUP body: a name or DID, or JSON with ``who`` and
    optionally ``known_size`` (the registry head size the agent holds)."""
    text = body.decode("utf-8", errors="replace")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("who"), str):
            size = data.get("known_size")
            valid = isinstance(size, int) and not isinstance(size, bool) and size >= 0
            return data["who"][:256], size if valid else None
    return text[:256], None


def _session_code(exc: SessionError) -> ErrorCode:
    if isinstance(exc, SessionExpired):
        return ErrorCode.SESSION_EXPIRED
    if isinstance(exc, SessionEnded):
        return ErrorCode.SESSION_ENDED
    return ErrorCode.SESSION_UNKNOWN


def _event_for(exc: SecurityRejected) -> EventKind:
    if isinstance(exc, ReplayDetected):
        return EventKind.REPLAY_DETECTED
    if isinstance(exc, StaleTimestamp):
        return EventKind.TIMESTAMP_STALE
    return EventKind.MESSAGE_DENIED
