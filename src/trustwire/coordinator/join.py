"""The join listener: enrolment of a new agent by one-time token.

A separate TLS 1.3 listener (server authentication only: the joiner has no client
certificate yet) that ``trustwire serve`` runs next to the coordinator. The exchange is
defined in :mod:`trustwire.protocol.join`; per connection exactly one request is read
and one answer written, then the connection is closed.

For a ``join`` request, in order (any failure answers the one opaque refusal and
records an ``auth.failure`` event with the precise reason and the client address):

1. the request parses, the name is a valid agent name;
2. the identity key (the DID) signed the request, bound to this domain's CA
   fingerprint, and the agreement statement verifies;
3. the token is redeemed: it exists, is unexpired and unused, and is now used (one
   atomic step in the store; a token is spent even if a later step fails);
4. the name is the one the invitation was made for;
5. a certificate is issued for the joiner's TLS public key (the private key never
   leaves the joiner);
6. the agent is enrolled with the invitation's roles, and the certificate recorded.

Abuse is bounded: at most ``max_connections`` at once, ``attempts_per_minute`` new
connections per client address (tracked for a bounded number of addresses), a TLS
handshake and a request deadline, a small frame limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from trustwire.crypto.hashes import sha256
from trustwire.crypto.x509 import certificate_fingerprint, certificate_not_after
from trustwire.errors import (
    IdentityError,
    InvalidEnvelope,
    InvalidSignature,
    ProtocolError,
    SecurityRejected,
    StoreError,
)
from trustwire.events import EventKind, EventStream, SecurityEvent
from trustwire.identity.ca import DomainCA
from trustwire.identity.keys import check_agent_name, verify_agreement_statement
from trustwire.protocol import join as wire
from trustwire.protocol.channel import verify_key_of
from trustwire.protocol.envelope import ZERO_CHANNEL, Envelope, FrameType, decode
from trustwire.protocol.frames import FrameDecoder, encode_frame
from trustwire.store.base import AgentRecord, Store

__all__ = ["Enrolment", "JoinConfig", "JoinListener", "token_hash"]

log = logging.getLogger("trustwire.coordinator.join")

_MAX_FRAME = 16 * 1024
_ADDRESSES_TRACKED = 10_000


class Enrolment(Protocol):
    """Where a joined agent is recorded: the registry (the caller keeps and closes it)."""

    async def enrol(self, record: AgentRecord) -> object:
        """Enrol a new agent; raises ``StoreError`` if its name or DID is taken."""
        ...

    async def certificate_issued(self, did: str, *, fingerprint: str, not_after: float) -> object:
        """Record that a certificate was issued to ``did``."""
        ...


@dataclass(frozen=True, slots=True)
class JoinConfig:
    """Limits of the join listener (seconds, counts)."""

    host: str = "127.0.0.1"
    port: int = 0
    max_connections: int = 64
    attempts_per_minute: int = 30
    handshake_timeout: float = 10.0
    request_timeout: float = 10.0


def token_hash(token: str) -> bytes:
    """SHA-256 of the token's 32 raw bytes (what the store keeps); ``ValueError`` when
    ``token`` is not 32 bytes of unpadded base64url."""
    try:
        raw = base64.urlsafe_b64decode(token + "=")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("malformed join token") from exc
    if len(raw) != wire.TOKEN_SIZE:
        raise ValueError("malformed join token")
    return sha256(raw)


class _Refused(Exception):
    """A join refused for ``reason`` (recorded, never sent)."""


class JoinListener:
    """The join listener. ``await start()``, then ``port``; ``await close()`` stops it."""

    def __init__(
        self,
        *,
        store: Store,
        enrolment: Enrolment,
        issuer: DomainCA,
        tls: ssl.SSLContext,
        coordinator: str,
        registry_key: str = "",
        log_key: str = "",
        events: EventStream | None = None,
        config: JoinConfig | None = None,
        clock: Callable[[], float] = time.time,
        on_enrolled: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if tls.minimum_version != ssl.TLSVersion.TLSv1_3:
            raise ValueError("the join listener's TLS context must be TLS 1.3 only")
        self.store = store
        self.enrolment = enrolment
        self.issuer = issuer
        self.tls = tls
        self.coordinator = coordinator
        self.registry_key = registry_key
        self.log_key = log_key
        self.events = events or EventStream()
        self.config = config or JoinConfig()
        self.clock = clock
        self.on_enrolled = on_enrolled
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._attempts: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._closing = False

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._on_tcp, self.config.host, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("join listener on %s:%d", self.config.host, self.port)

    async def close(self) -> None:
        """Stop accepting and end the connections in progress."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        if self._server is not None:
            await self._server.wait_closed()

    def _emit(
        self, kind: EventKind, agent: str | None, **details: str | int | float | bool
    ) -> None:
        reason = details.pop("reason", None)
        self.events.emit(
            SecurityEvent(
                kind=kind,
                time=self.clock(),
                agent=agent,
                peer=None,
                reason=None if reason is None else str(reason),
                details=details,
            )
        )

    def _admit(self, address: str) -> bool:
        """Count one attempt from ``address``; False when over the per-minute limit."""
        now = time.monotonic()
        window = self._attempts.get(address)
        if window is None:
            if len(self._attempts) >= _ADDRESSES_TRACKED:
                self._attempts.popitem(last=False)
            window = self._attempts[address] = collections.deque()
        self._attempts.move_to_end(address)
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= self.config.attempts_per_minute:
            return False
        window.append(now)
        return True

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        except asyncio.CancelledError:
            writer.close()
            raise
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        host = str(peername[0]) if peername else "?"
        address = f"{host}:{peername[1]}" if peername else "?"
        if self._closing or len(self._handlers) > self.config.max_connections:
            self._emit(
                EventKind.AUTH_FAILURE, None, reason="join: connection limit", address=address
            )
            writer.close()
            return
        if not self._admit(host):
            self._emit(
                EventKind.RATE_LIMITED, None, reason="join: too many attempts", address=address
            )
            writer.close()
            return
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                await writer.start_tls(self.tls)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            self._emit(
                EventKind.AUTH_FAILURE,
                None,
                reason=f"join: tls: {type(exc).__name__}",
                address=address,
            )
            writer.close()  # see Coordinator._handle: wait_closed would never return
            return
        try:
            async with asyncio.timeout(self.config.request_timeout):
                env = await _read_envelope(reader)
            answer = await self._answer(env, address)
        except (TimeoutError, ConnectionError, OSError, ssl.SSLError):
            writer.close()
            return
        except (ProtocolError, InvalidEnvelope) as exc:
            self._emit(EventKind.FRAME_INVALID, None, reason=f"join: {exc}", address=address)
            answer = wire.encode_refusal()
        reply = Envelope.create(
            FrameType.JOIN_RESULT,
            ZERO_CHANNEL,
            "",
            "",
            body=answer,
            timestamp=int(self.clock() * 1000),
        )
        writer.write(encode_frame(reply.to_bytes(), max_frame=_MAX_FRAME))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()

    async def _answer(self, env: Envelope, address: str) -> bytes:
        if env.type is not FrameType.JOIN_REQUEST:
            raise InvalidEnvelope(f"unexpected {env.type.name} on the join listener")
        request = wire.decode_request(env.body)
        if request is None:
            return wire.encode_ca_result(self.issuer.cert_pem)
        try:
            result = await self._join(request)
        except _Refused as exc:
            self._emit(
                EventKind.AUTH_FAILURE,
                request.did,
                reason=f"join: {exc}",
                name=request.name,
                address=address,
            )
            return wire.encode_refusal()
        self._emit(EventKind.CERTIFICATE_ISSUED, request.did, via="join")
        if self.on_enrolled is not None:
            try:
                await self.on_enrolled()
            except StoreError as exc:
                # The agent is enrolled; the coordinator's next reload will admit it.
                log.warning("directory reload after a join failed: %s", exc)
        return result.to_bytes()

    async def _join(self, request: wire.JoinRequest) -> wire.JoinResult:
        now = self.clock()
        try:
            check_agent_name(request.name)
            hashed = token_hash(request.token)
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        try:
            verify_key_of(request.did).verify(
                request.signature, request.statement(self.issuer.fingerprint)
            )
            verify_agreement_statement(
                request.did,
                request.agreement_key,
                request.agreement_issued_at,
                request.agreement_statement,
            )
        except (InvalidSignature, IdentityError, SecurityRejected, ValueError) as exc:
            raise _Refused(f"request signature or agreement statement invalid ({exc})") from None
        try:
            invited = await self.store.tokens.redeem(hashed, now=now)
        except StoreError as exc:
            raise _Refused(f"token store failed ({exc})") from None
        if invited is None:
            raise _Refused("token unknown, already used or expired")
        name, roles = invited
        if name != request.name:
            raise _Refused(f"the invitation is for {name!r}, not {request.name!r}")
        try:
            cert = self.issuer.renew_agent_certificate(
                request.did, name, request.tls_public_key, now=datetime.fromtimestamp(now, UTC)
            )
        except (ValueError, TypeError, IdentityError) as exc:
            raise _Refused(f"no certificate for the TLS key ({exc})") from None
        record = AgentRecord(
            name=name,
            did=request.did,
            roles=tuple(roles),
            agreement_key=request.agreement_key,
            agreement_statement=request.agreement_statement,
            agreement_issued_at=request.agreement_issued_at,
            created_at=now,
        )
        try:
            await self.enrolment.enrol(record)
        except StoreError as exc:
            raise _Refused(f"enrolment failed ({exc})") from None
        self._emit(
            EventKind.AGENT_ENROLLED, request.did, name=name, roles=",".join(roles), via="join"
        )
        try:
            await self.enrolment.certificate_issued(
                request.did,
                fingerprint=certificate_fingerprint(cert),
                not_after=certificate_not_after(cert).timestamp(),
            )
        except StoreError as exc:
            # Enrolled already; the certificate is valid whether or not it is logged.
            log.warning("certificate for %s issued but not logged: %s", request.did, exc)
        return wire.JoinResult(
            cert_pem=cert,
            ca_pem=self.issuer.cert_pem,
            registry_key=self.registry_key,
            log_key=self.log_key,
            coordinator=self.coordinator,
        )


async def _read_envelope(reader: asyncio.StreamReader) -> Envelope:
    """Read exactly one frame and decode it (``ProtocolError`` / ``InvalidEnvelope``)."""
    decoder = FrameDecoder(_MAX_FRAME)
    while True:
        data = await reader.read(_MAX_FRAME)
        if not data:
            decoder.receive_eof()
            raise ConnectionError("the joiner closed the connection")
        frames = decoder.receive_data(data)
        if frames:
            return decode(frames[0])
