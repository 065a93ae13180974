"""The agent SDK: connect to a coordinator, send and receive end-to-end encrypted messages.

::

    async with await Agent.connect(identity, credentials, coordinator="127.0.0.1:7443") as agent:
        result = await agent.send("bob", b"hello")  # delivered (with receipt) or queued
        async for message in agent.messages():  # verified Message objects
            ...

What the SDK does for the caller:

* **Channels.** The first message to an online peer opens a Noise IK channel (the peer's
  key comes from the registry, its signed agreement statement verified against its DID so
  the coordinator cannot substitute a key); later messages reuse it.
* **Sealed fallback.** When the peer is offline (or a channel cannot be set up) the
  message goes *sealed* (Noise X) and the coordinator stores it; ``send`` then returns
  ``queued``. When the peer comes back, the next send upgrades to a channel.
* **No loss when the peer goes away.** Every message is kept until a signed receipt
  covers it. If the peer's channel dies (the coordinator sends ``PRESENCE`` offline),
  unreceipted messages are resent sealed under the same application id. If *our own*
  connection drops, pending sends fail with :class:`ConnectionClosed` (there is no
  automatic reconnect yet): the caller reconnects and resends what got no receipt.
* **Exactly once per Agent.** The recipient drops application ids it has already
  delivered, so resends and redeliveries never reach the application twice within one
  :class:`Agent` object. A new :class:`Agent` (after a crash) may see again a message the
  old one received but never acknowledged, with the same :attr:`Message.id`, so the
  application can deduplicate across restarts on that id.
* **Batching.** Sends issued together are encrypted and written together, and a batch
  costs one Ed25519 signature (a checkpoint over the channel's hash chain); receipts
  likewise cover ranges. See ``protocol/channel.py``.

Security failures on received frames (tampering, replay, bad signatures) never reach the
application: the frame is dropped, acknowledged so it is not redelivered, and counted in
:attr:`Agent.rejected` (reason -> count) and the ``on_security_event`` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from trustwire.crypto.random import random_bytes
from trustwire.crypto.signing import VerifyKey
from trustwire.crypto.x509 import (
    TlsKey,
    certificate_not_after,
    needs_renewal,
    verify_issued_by,
)
from trustwire.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    ConnectionFailed,
    DeliveryError,
    PolicyDenied,
    ProtocolError,
    RateLimited,
    ReceiptTimeout,
    ReplayDetected,
    SecurityRejected,
    SessionEnded,
    SessionError,
    SessionExpired,
    TransportError,
    TrustwireError,
    UnknownAgent,
    UnknownSession,
)
from trustwire.identity.ca import certificate_did
from trustwire.identity.did import is_did
from trustwire.identity.keys import AgentIdentity, verify_agreement_statement
from trustwire.protocol import control
from trustwire.protocol.channel import (
    Channel,
    ReceivedMessage,
    ReceivedReceipt,
    open_sealed,
    seal,
    seal_receipt,
)
from trustwire.protocol.content import SIGNATURE_SIZE
from trustwire.protocol.control import ErrorCode, Status, decode_api_frame, encode_api_frame
from trustwire.protocol.envelope import Envelope, FrameType, decode
from trustwire.protocol.frames import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from trustwire.protocol.noise import MAX_MESSAGE_LEN
from trustwire.protocol.replay import check_timestamp
from trustwire.registry.verifier import RegistryVerifier
from trustwire.transport.tls import client_ssl_context

if TYPE_CHECKING:
    import httpx

    from trustwire.client.sessions import AgentSession, SessionEvent, SessionOpener
    from trustwire.memory.client import SharedMemories

__all__ = ["MAX_MESSAGE_SIZE", "Agent", "Credentials", "Message", "Receipt", "SendResult"]

log = logging.getLogger("trustwire.client")

_PEER_TTL = 30.0
_CHANNEL_INIT_WINDOW = 120.0
_KEEPALIVE = 60.0
_MAX_AWAITING_RECEIPT = 100_000

#: App ids per sealed receipt. The coordinator holds every routed frame, receipts
#: included, to the policy's max_message_bytes plus 512 bytes of overhead; 16 ids keep a
#: sealed receipt's body (96 Noise + 76 receipt + 16 per id = 428 bytes) inside that
#: allowance whatever the limit, so receipts are never refused for their size.
_SEALED_RECEIPT_IDS = 16

#: The largest payload one message can carry. A Noise message is at most
#: ``MAX_MESSAGE_LEN`` bytes and any channel message may have to be resent sealed, so the
#: sealed overhead bounds it: ephemeral key (32), encrypted static key (32 + 16), payload
#: tag (16), message header (1 + 16 + 8 + 1 + 4) and signature.
MAX_MESSAGE_SIZE = MAX_MESSAGE_LEN - (32 + 32 + 16 + 16) - 30 - SIGNATURE_SIZE


@dataclass(frozen=True, slots=True)
class Credentials:
    """What an agent presents to the coordinator: its TLS certificate and key, and the
    domain CA it pins; optionally the domain's registry key, with which every lookup
    answer must carry a registry proof that verifies."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    registry_key: VerifyKey | None = None

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"


@dataclass(frozen=True, slots=True)
class Message:
    """A received, authenticated and signature-verified message."""

    id: str
    sender: str
    sender_name: str
    recipient: str
    data: bytes
    sent_at: float
    sealed: bool
    #: The session the message was sent in (its UUID string), or None.
    session_id: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Receipt:
    """A verified, signed delivery receipt from the recipient."""

    message_id: str
    signer: str
    signed_at: float
    signature: bytes
    statement: bytes


@dataclass(frozen=True, slots=True)
class SendResult:
    """``delivered`` with a verified receipt, or ``queued`` for an offline recipient."""

    message_id: str
    recipient: str
    status: Literal["delivered", "queued"]
    receipt: Receipt | None = None
    via: Literal["channel", "sealed"] = "channel"


@dataclass(slots=True)
class _Peer:
    did: str
    name: str
    agreement_key: bytes
    online: bool
    fetched: float


@dataclass(eq=False, slots=True)
class _Outgoing:
    """One message until its ``send`` has an answer (and, unreceipted, until resent).

    ``result`` is the only future per send: a verified receipt resolves it with the
    :class:`Receipt`, a ``QUEUED`` status (the first answer, or a sealed resend stored
    for a peer that went away) with ``None``, a refusal or the connection's end with the
    error, and the receipt deadline (armed when the coordinator forwards the message)
    with :class:`ReceiptTimeout`.
    """

    app_id: bytes
    peer: str
    data: bytes
    result: asyncio.Future[Receipt | None]
    #: Seconds to wait for the receipt once the coordinator has forwarded the message.
    timeout: float
    via: str = "channel"
    #: The coordinator's latest answer for the message (None until the first one).
    status: Status | None = None
    #: Set once a verified receipt covers it.
    receipt: Receipt | None = None
    #: Refused by the coordinator (or could not be encrypted): never resent.
    failed: bool = False
    deadline: asyncio.TimerHandle | None = None
    #: Envelope id of the latest frame that carried it (the one whose status counts).
    frame_id: bytes | None = None
    #: The session it belongs to (16 bytes; carried in every frame that carries it).
    session_id: bytes = b""

    def resolve(self, receipt: Receipt | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if not self.result.done():
            self.result.set_result(receipt)

    def fail(self, exc: BaseException) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if not self.result.done():
            self.result.set_exception(exc)


class Agent:
    """A connected agent. Create with :meth:`connect`; use as an async context manager."""

    def __init__(
        self,
        identity: AgentIdentity,
        credentials: Credentials,
        *,
        host: str,
        port: int,
        server_hostname: str | None = None,
        receipt_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        registry_key: VerifyKey | None = None,
    ) -> None:
        self.identity = identity
        # Derived once: every ACK and LOOKUP frame names it, and the did:key encoding
        # (base58) is not free.
        self._did = identity.did
        self.credentials = credentials
        # With a registry key, every lookup answer must prove itself against the signed
        # registry log (registry/verifier.py); one lookup at a time, as each proof builds
        # on the last head seen.
        key = registry_key if registry_key is not None else credentials.registry_key
        self.registry = None if key is None else RegistryVerifier(key)
        self._lookup_lock = asyncio.Lock()
        self.host = host
        self.port = port
        # The name checked against the coordinator's certificate: the address dialled
        # unless told otherwise (certificates name localhost, 127.0.0.1, ::1 and the
        # configured coordinator host).
        self.server_hostname = server_hostname or host
        self.receipt_timeout = receipt_timeout
        self.clock = clock
        self.rejected: dict[str, int] = defaultdict(int)
        self.on_security_event: Callable[[str, str], None] | None = None
        #: Diagnostics hook: called with every chunk of bytes written to the coordinator.
        self.tap: Callable[[bytes], None] | None = None
        #: Renew the certificate this long before it expires (checked at connect and then
        #: every ``renew_check_interval`` seconds).
        self.renew_margin = timedelta(hours=2)
        self.renew_check_interval = 300.0
        #: Called with the new credentials after a renewal, e.g. to persist them.
        self.on_credentials_renewed: Callable[[Credentials], None] | None = None
        self._renewals: dict[bytes, asyncio.Future[bytes]] = {}
        self._renew_task: asyncio.Task[None] | None = None
        self.name = identity.name
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._processor_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[dict[str, object]] | None = None
        self._closed = asyncio.Event()
        self._close_reason: TrustwireError | None = None
        self._inbound: asyncio.Queue[list[Envelope]] = asyncio.Queue()
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._message_ready = asyncio.Event()  # set on every delivery and on close
        self._peers: dict[str, _Peer] = {}
        self._names: dict[str, str] = {}
        self._channels: dict[str, Channel] = {}  # peer -> the channel we send on
        # Every established channel, by (peer, channel id): what received frames are
        # matched against. Two agents that open channels to each other at the same
        # moment end up with two channels, each side sending on one and receiving on both.
        self._channel_ids: dict[tuple[str, bytes], Channel] = {}
        self._channel_ready: dict[str, asyncio.Future[Channel]] = {}
        self._pending_channels: dict[bytes, Channel] = {}
        # Envelope id of each CHANNEL_INIT in flight -> the peer it opens a channel to, so
        # that a refusal of the INIT fails the opening at once instead of by timeout.
        self._channel_inits: dict[bytes, str] = {}
        self._lookups: dict[bytes, asyncio.Future[dict[str, object]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Envelope id of each message frame awaiting the coordinator's answer -> the
        # message it carries and the channel it was sent on (None: sealed).
        self._status: dict[bytes, tuple[_Outgoing, Channel | None]] = {}
        self._outgoing: dict[bytes, _Outgoing] = {}
        self._batch: list[_Outgoing] = []
        self._flush_scheduled = False
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._accepted_channel_ids: OrderedDict[bytes, None] = OrderedDict()
        self._last_write = 0.0
        self._seen_max = 1_000_000
        #: A channel older than this (seconds) is replaced by a fresh handshake before the
        #: next send: new ephemeral keys at least this often. Sessions open a fresh channel
        #: when they start and never outlive their maximum duration, so this bounds every
        #: session channel's key lifetime too.
        self.channel_max_age = 12 * 3600.0
        self._channel_opened: dict[str, float] = {}
        self._api_calls: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        # Open session handles by session id (UUID string): their messages and events.
        self._sessions: dict[str, AgentSession] = {}
        self._session_events: asyncio.Queue[SessionEvent] = asyncio.Queue(maxsize=10_000)
        self._memory: SharedMemories | None = None

    # -- connecting --------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        identity: AgentIdentity,
        credentials: Credentials,
        *,
        coordinator: str,
        server_hostname: str | None = None,
        timeout: float = 10.0,
        receipt_timeout: float = 10.0,
        registry_key: VerifyKey | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Agent:
        """Connect over mutual TLS 1.3 and wait for the coordinator's ``READY``.

        ``clock`` (epoch seconds) dates the agent's frames; tests inject one.

        ``registry_key`` (default: ``credentials.registry_key``) is the domain's registry
        public key; with it, lookups verify registry proofs (see :meth:`lookup`).

        Raises :class:`ConnectionFailed` (unreachable, TLS refused) or
        :class:`AuthenticationFailed` (the coordinator closed the connection: not enrolled,
        revoked, or certificate rejected).
        """
        host, port = parse_address(coordinator)
        agent = cls(
            identity,
            credentials,
            host=host,
            port=port,
            server_hostname=server_hostname,
            receipt_timeout=receipt_timeout,
            registry_key=registry_key,
            clock=clock,
        )
        await agent._open(timeout)
        return agent

    async def _open(self, timeout: float) -> None:
        context = client_ssl_context(
            self.credentials.cert_pem, self.credentials.key_pem, self.credentials.ca_pem
        )
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=context,
                    server_hostname=self.server_hostname,
                    limit=1 << 20,
                )
        except TimeoutError as exc:
            raise ConnectionFailed(f"timed out connecting to {self.host}:{self.port}") from exc
        except ssl.SSLError as exc:
            raise ConnectionFailed(
                f"TLS handshake with {self.host}:{self.port} failed: {exc.reason or exc}"
            ) from exc
        except OSError as exc:
            raise ConnectionFailed(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self._reader, self._writer = reader, writer
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._closed.clear()
        self._reader_task = asyncio.create_task(self._read_loop(), name="trustwire-reader")
        self._processor_task = asyncio.create_task(self._process_loop(), name="trustwire-inbound")
        self._renew_task = asyncio.create_task(self._renewal_loop(), name="trustwire-renewal")
        try:
            async with asyncio.timeout(timeout):
                await self._ready
        except TimeoutError as exc:
            await self.close()
            raise ConnectionFailed("coordinator did not answer (no READY)") from exc
        except ConnectionClosed as exc:
            await self.close()
            raise AuthenticationFailed(
                "the coordinator closed the connection: this agent is not enrolled, is "
                "revoked, or its certificate was refused"
            ) from exc

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def did(self) -> str:
        return self._did

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._closed.is_set()

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        self._mark_closed(ConnectionClosed(0, "closed by the agent"))
        for task in (self._reader_task, self._processor_task, self._renew_task, *self._background):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        writer = self._writer
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _mark_closed(self, reason: TrustwireError) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._close_reason = reason
        self._message_ready.set()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(reason)
        futures: list[asyncio.Future[Any]] = [
            *self._lookups.values(),
            *self._channel_ready.values(),
            *self._renewals.values(),
            *self._api_calls.values(),
        ]
        for fut in futures:
            if not fut.done():
                fut.set_exception(reason)
        for out, _channel in self._status.values():
            out.fail(reason)
        for out in self._outgoing.values():
            # Also the ones waiting for a receipt: none can come on a closed connection.
            out.fail(reason)
        self._status.clear()
        self._api_calls.clear()
        for handle in self._sessions.values():
            handle._wake()
        self._lookups.clear()
        self._channel_ready.clear()
        self._channels.clear()
        self._channel_ids.clear()

    # -- writing -----------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _write(self, data: bytes) -> None:
        if self._writer is None or self._closed.is_set():
            raise self._close_reason or ConnectionClosed(0, "not connected")
        if self.tap is not None:
            self.tap(data)
        self._last_write = self.clock()
        self._writer.write(data)

    def send_raw(self, frames: bytes) -> None:
        """Write already-encoded frames unchanged (diagnostics, demos and attack tests)."""
        self._write(frames)

    def _frame(self, env: Envelope) -> bytes:
        return encode_frame(env.to_bytes(), max_frame=DEFAULT_MAX_FRAME)

    def _control(self, ftype: FrameType, body: bytes, message_id: bytes | None = None) -> bytes:
        env = Envelope.create(
            ftype, message_id or random_bytes(16), self.did, "", body=body, timestamp=self._now_ms()
        )
        return self._frame(env)

    # -- certificate renewal ---------------------------------------------------------------

    def certificate_expires(self) -> datetime:
        """When the current TLS certificate stops being valid."""
        return certificate_not_after(self.credentials.cert_pem)

    async def renew_certificate(self) -> Credentials:
        """Get a fresh short-lived certificate over this connection.

        A new TLS key is generated here and never leaves the agent; the coordinator signs a
        certificate for its public half after checking the request's identity signature.
        The new credentials are used for the next connection.
        """
        key = TlsKey.generate()
        public = key.public_bytes()
        now_ms = self._now_ms()
        signature = self.identity.signing_key.sign(
            control.renew_statement(self.did, public, now_ms)
        )
        mid = random_bytes(16)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._renewals[mid] = fut
        env = Envelope.create(
            FrameType.RENEW, mid, self.did, "", body=public + signature, timestamp=now_ms
        )
        try:
            self._write(self._frame(env))
            async with asyncio.timeout(10):
                cert = await fut
        except TimeoutError as exc:
            raise ConnectionFailed("certificate renewal timed out") from exc
        finally:
            self._renewals.pop(mid, None)
        # Trust nothing the coordinator sent without checking it: our pinned CA, our DID,
        # our key.
        now = datetime.fromtimestamp(self.clock(), UTC)
        verify_issued_by(cert, self.credentials.ca_pem, now=now)
        if certificate_did(cert) != self.did or not key.matches(cert):
            raise AuthenticationFailed("renewed certificate is not for this agent's key")
        self.credentials = Credentials(
            cert, key.to_pem(), self.credentials.ca_pem, self.credentials.registry_key
        )
        if self.on_credentials_renewed is not None:
            self.on_credentials_renewed(self.credentials)
        return self.credentials

    async def _renewal_loop(self) -> None:
        """Renew the certificate when due, and keep an idle connection alive."""
        next_check = 0.0
        while not self._closed.is_set():
            if self.clock() >= next_check:
                next_check = self.clock() + self.renew_check_interval
                now = datetime.fromtimestamp(self.clock(), UTC)
                if needs_renewal(self.credentials.cert_pem, now=now, margin=self.renew_margin):
                    try:
                        await self.renew_certificate()
                    except TrustwireError as exc:
                        log.warning("certificate renewal failed: %s", exc)
            elif self.clock() - self._last_write >= _KEEPALIVE:
                # The coordinator closes idle connections; a PING counts as activity.
                with contextlib.suppress(TrustwireError):
                    self._write(self._control(FrameType.PING, b""))
            await asyncio.sleep(min(_KEEPALIVE / 4, self.renew_check_interval))

    # -- registry ------------------------------------------------------------------------

    async def lookup(self, who: str, *, fresh: bool = False) -> _Peer:
        """Resolve a name or DID to a verified registry entry (cached briefly).

        The agreement statement is always checked against the DID. With a registry key
        the answer must also carry a registry proof: signed head, inclusion of the
        agent's snapshot, consistency with the last head seen (a fork or rollback is a
        "split view"), snapshot equal to the answer and not revoked; any failure raises
        :class:`AuthenticationFailed`.
        """
        did = self._names.get(who, who)
        peer = self._peers.get(did)
        if peer is not None and not fresh and self.clock() - peer.fetched < _PEER_TTL:
            return peer
        async with self._lookup_lock:
            return await self._lookup(who)

    async def _lookup(self, who: str) -> _Peer:
        mid = random_bytes(16)
        fut: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._lookups[mid] = fut
        query = who.encode("utf-8") if self.registry is None else self.registry.query(who)
        self._write(self._control(FrameType.LOOKUP, query, mid))
        try:
            async with asyncio.timeout(10):
                result = await fut
        except TimeoutError as exc:
            raise ConnectionFailed("registry lookup timed out") from exc
        finally:
            self._lookups.pop(mid, None)
        if not result.get("found"):
            raise UnknownAgent(f"no enrolled agent named {who!r}")
        try:
            did = str(result["did"])
            if is_did(who) and did != who:
                # Asked for a DID, got another agent: a coordinator redirecting us.
                raise AuthenticationFailed("registry answered with a different DID")
            key = bytes.fromhex(str(result["agreement_key"]))
            statement = bytes.fromhex(str(result["agreement_statement"]))
            issued_at = int(str(result["agreement_issued_at"]))
            verify_agreement_statement(did, key, issued_at, statement)
            if self.registry is not None:
                self.registry.check(did, result)
        except (KeyError, ValueError, TrustwireError) as exc:
            # The coordinator served a key its owner never signed: refuse it.
            self._security("registry", f"invalid registry entry for {who}")
            raise AuthenticationFailed(f"registry entry for {who!r} failed verification") from exc
        name = str(result.get("name", ""))
        peer = _Peer(
            did=did,
            name=name,
            agreement_key=key,
            online=bool(result.get("online")),
            fetched=self.clock(),
        )
        self._peers[did] = peer
        if name:
            self._names[name] = did
        return peer

    # -- sending -------------------------------------------------------------------------

    async def send(
        self,
        to: str,
        data: bytes | str,
        *,
        timeout: float | None = None,
        session_id: str | None = None,
    ) -> SendResult:
        """Send ``data`` to the agent named ``to`` (name or DID).

        ``session_id`` sends it within that session (see :meth:`session`): the coordinator
        refuses it with :class:`SessionExpired`, :class:`SessionEnded` or
        :class:`UnknownSession` when the session is not active.

        Returns ``delivered`` with a verified :class:`Receipt` when the recipient is online,
        ``queued`` when the coordinator stored it for an offline recipient. Raises
        :class:`PolicyDenied` (refused by the coordinator — the reason is deliberately not
        disclosed), :class:`RateLimited`, :class:`ReceiptTimeout`, :class:`UnknownAgent`,
        or a :class:`TransportError`.
        """
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if len(payload) > MAX_MESSAGE_SIZE:
            raise ValueError(
                f"a message holds at most {MAX_MESSAGE_SIZE} bytes, got {len(payload)}"
            )
        session = _session_bytes(session_id) if session_id is not None else b""
        peer = await self.lookup(to)
        channel = self._channels.get(peer.did)
        if channel is not None and self._stale_channel(peer.did):
            # Old enough to be re-keyed: the next frames go on a fresh handshake. The old
            # channel stays known for receiving (and for its receipts) until it ends.
            del self._channels[peer.did]
            channel = None
        if channel is None:
            peer = await self.lookup(to, fresh=True)
            # A channel needs two connections; a message to ourselves goes sealed.
            if peer.online and peer.did != self.did:
                channel = await self._open_channel(peer)
        out = _Outgoing(
            random_bytes(16),
            peer.did,
            payload,
            asyncio.get_running_loop().create_future(),
            self.receipt_timeout if timeout is None else timeout,
        )
        out.session_id = session
        self._outgoing[out.app_id] = out
        try:
            if channel is not None:
                self._batch.append(out)
                self._schedule_flush()
            else:
                self._send_sealed(out, peer)
            receipt = await out.result
        finally:
            if out.deadline is not None:  # cancelled by the caller
                out.deadline.cancel()
                out.deadline = None
            if out.receipt is not None or out.failed:
                self._outgoing.pop(out.app_id, None)
            elif len(self._outgoing) > _MAX_AWAITING_RECEIPT:
                # Queued or timed-out messages stay matchable to a late receipt (and
                # resendable) but not forever: forget the oldest ones first.
                for app_id in list(self._outgoing)[: len(self._outgoing) // 10]:
                    self._outgoing.pop(app_id, None)
        hex_id = out.app_id.hex()
        if receipt is None:
            return SendResult(hex_id, peer.did, "queued", via="sealed")
        return SendResult(
            hex_id,
            peer.did,
            "delivered",
            receipt,
            via="sealed" if out.via == "sealed" else "channel",
        )

    def _send_sealed(self, out: _Outgoing, peer: _Peer) -> None:
        mid = random_bytes(16)
        out.via = "sealed"
        env = seal(
            self.identity,
            peer.did,
            peer.agreement_key,
            out.data,
            app_id=out.app_id,
            message_id=mid,
            now_ms=self._now_ms(),
            session_id=out.session_id,
        )
        self._track_status(mid, out)
        self._write(self._frame(env))

    def _track_status(self, mid: bytes, out: _Outgoing, channel: Channel | None = None) -> None:
        """Settle ``out`` from the coordinator's answer for frame ``mid`` (``channel``: the
        channel the frame was sent on, if any); see :meth:`_settle` and :meth:`_refused`."""
        self._status[mid] = (out, channel)
        out.frame_id = mid

    def _settle(self, out: _Outgoing, status: Status) -> None:
        """The coordinator answered ``status`` for the latest frame carrying ``out``."""
        first = out.status is None
        out.status = status
        if out.result.done():
            return
        if status is Status.QUEUED:
            # Stored for an offline recipient: at once, or a sealed resend after the
            # channel's peer went away.
            out.resolve(None)
        elif first:
            # Forwarded: the receipt deadline runs from now.
            out.deadline = asyncio.get_running_loop().call_later(out.timeout, self._expire, out)

    def _refused(self, out: _Outgoing, channel: Channel | None, exc: TrustwireError) -> None:
        """The coordinator refused the latest frame carrying ``out``."""
        if channel is not None and isinstance(exc, SecurityRejected | SessionError):
            # A session refusal (expired, ended, unknown) drops the frame as well.
            self._abandon_channel(channel, refused=out)
        if out.status is not None:
            return  # a resend's refusal: the message's own answer stands
        out.failed = True
        out.fail(exc)

    def _expire(self, out: _Outgoing) -> None:
        out.deadline = None
        peer = self._peers.get(out.peer)
        who = peer.name if peer is not None and peer.name else out.peer
        out.fail(ReceiptTimeout(f"no receipt from {who} within {out.timeout:.0f} s"))

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Encrypt and write every queued channel message; one signature per channel."""
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        if not batch or self._closed.is_set():
            return
        by_peer: dict[str, list[_Outgoing]] = defaultdict(list)
        for out in batch:
            by_peer[out.peer].append(out)
        chunks: list[bytes] = []
        now = self._now_ms()
        for peer_did, items in by_peer.items():
            channel = self._channels.get(peer_did)
            peer = self._peers.get(peer_did)
            if (channel is None or not channel.established) and peer is None:
                # The peer's key was forgotten (it rotated) after these were queued:
                # they go sealed once the new key has been looked up.
                self._spawn(self._seal_after_lookup(peer_did, items))
                continue
            for i, out in enumerate(items):
                mid = random_bytes(16)
                try:
                    if channel is None or not channel.established:
                        if peer is None:
                            raise DeliveryError("peer vanished")
                        out.via = "sealed"
                        env = seal(
                            self.identity,
                            peer.did,
                            peer.agreement_key,
                            out.data,
                            app_id=out.app_id,
                            message_id=mid,
                            now_ms=now,
                            session_id=out.session_id,
                        )
                    else:
                        env = channel.send(
                            out.data,
                            app_id=out.app_id,
                            message_id=mid,
                            now_ms=now,
                            sign=i == len(items) - 1,
                            session_id=out.session_id,
                        )
                    chunk = self._frame(env)
                except (TrustwireError, ValueError) as exc:
                    # This runs as a loop callback: an exception escaping it would leave
                    # every send() of the batch waiting forever.
                    out.failed = True
                    out.fail(exc)
                    continue
                self._track_status(mid, out, None if out.via == "sealed" else channel)
                chunks.append(chunk)
        try:
            self._write(b"".join(chunks))
        except TrustwireError as exc:
            for out in batch:
                if out.status is None:
                    out.fail(exc)

    async def _open_channel(self, peer: _Peer) -> Channel | None:
        """Open (or join the opening of) a channel to an online peer; None if it fails."""
        pending = self._channel_ready.get(peer.did)
        init_id: bytes | None = None
        if pending is None:
            channel_id = random_bytes(16)
            init_id = random_bytes(16)
            channel, env = Channel.initiate(
                self.identity,
                peer.did,
                peer.agreement_key,
                channel_id=channel_id,
                message_id=init_id,
                now_ms=self._now_ms(),
            )
            pending = asyncio.get_running_loop().create_future()
            self._channel_ready[peer.did] = pending
            self._pending_channels[channel_id] = channel
            self._channel_inits[init_id] = peer.did
            self._write(self._frame(env))
        try:
            async with asyncio.timeout(5):
                return await asyncio.shield(pending)
        except (PolicyDenied, RateLimited):
            # The coordinator refused the INIT itself: a sealed message to the same
            # peer would be refused for the same reason.
            self._forget_channel_opening(peer.did, pending)
            raise
        except (TimeoutError, TrustwireError) as exc:
            log.info("channel to %s not established (%s); sending sealed", peer.name, exc)
            self._forget_channel_opening(peer.did, pending)
            return None
        finally:
            if init_id is not None:
                self._channel_inits.pop(init_id, None)

    def _forget_channel_opening(self, did: str, pending: asyncio.Future[Channel]) -> None:
        if self._channel_ready.get(did) is pending:
            del self._channel_ready[did]

    def _stale_channel(self, did: str) -> bool:
        opened = self._channel_opened.get(did)
        return opened is not None and self.clock() - opened >= self.channel_max_age

    # -- the coordinator's API: sessions, shared memory --------------------------------------

    async def api_call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        timeout: float = 30.0,
    ) -> Any:
        """Call the coordinator's API (docs/SESSIONS.md, docs/MEMORY.md) as this agent,
        over its authenticated connection. Returns the JSON body of a 2xx answer; raises
        the typed error otherwise (:class:`UnknownSession`, :class:`SessionExpired`,
        :class:`MemoryAccessDenied`, :class:`VersionConflict` ...)."""
        from trustwire.coordinator.api import ApiResponse, raise_for

        mid = random_bytes(16)
        frame = self._control(
            FrameType.API_REQUEST,
            encode_api_frame({"method": method, "path": path, "query": query or {}, "body": body}),
            mid,
        )
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._api_calls[mid] = answer
        try:
            self._write(frame)
            async with asyncio.timeout(timeout):
                result = await answer
        except TimeoutError as exc:
            raise ConnectionClosed(
                0, f"no answer to {method} {path} within {timeout:.0f} s"
            ) from exc
        finally:
            self._api_calls.pop(mid, None)
        status = result.get("status")
        if not isinstance(status, int):
            raise ProtocolError("malformed API response")
        response = ApiResponse(status=status, body=result.get("body"))
        raise_for(response)
        return response.body

    def session(
        self,
        peer: str,
        *,
        timeout_minutes: int | None = None,
        auto_renew: bool | None = None,
        max_duration_minutes: int | None = None,
        warning_threshold_minutes: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SessionOpener:
        """Create a session with ``peer`` (name or DID).

        Use it as ``async with agent.session("bob", timeout_minutes=30) as s:`` (the
        session ends when the block exits) or ``s = await agent.session("bob")``.

        Unset settings come from the policy file's per-agent session defaults, then the
        built-in ones (timeout 30 min, autoRenew on, max duration 720 min, warning 5 min).
        Out-of-range values are clamped. The session starts on a fresh channel handshake.
        """
        from trustwire.client.sessions import SessionOpener

        return SessionOpener(
            self._create_session(
                peer,
                timeout_minutes=timeout_minutes,
                auto_renew=auto_renew,
                max_duration_minutes=max_duration_minutes,
                warning_threshold_minutes=warning_threshold_minutes,
                metadata=metadata,
            )
        )

    async def _create_session(
        self,
        peer: str,
        *,
        timeout_minutes: int | None,
        auto_renew: bool | None,
        max_duration_minutes: int | None,
        warning_threshold_minutes: int | None,
        metadata: dict[str, Any] | None,
    ) -> AgentSession:
        from trustwire.client.sessions import AgentSession, session_config

        target = await self.lookup(peer, fresh=True)
        body: dict[str, Any] = {"peerId": target.did}
        config = session_config(
            timeout_minutes=timeout_minutes,
            auto_renew=auto_renew,
            max_duration_minutes=max_duration_minutes,
            warning_threshold_minutes=warning_threshold_minutes,
        )
        if config:
            body["timeoutConfig"] = config
        if metadata is not None:
            body["metadata"] = metadata
        answer = await self.api_call("POST", "/api/messaging/sessions", body=body)
        info = answer.get("session", answer) if isinstance(answer, dict) else answer
        handle = AgentSession(self, info)
        self._sessions[handle.id] = handle
        # New ephemeral keys for the session: the next message opens a fresh channel.
        self._channels.pop(target.did, None)
        return handle

    async def join_session(self, session_id: str) -> AgentSession:
        """A handle on an existing session this agent takes part in (e.g. as its peer):
        its messages and events are filed under it from now on."""
        from trustwire.client.sessions import AgentSession

        answer = await self.api_call("GET", f"/api/messaging/sessions/{session_id}")
        info = answer.get("session", answer) if isinstance(answer, dict) else answer
        handle = self._sessions.get(str(info["id"]))
        if handle is None:
            handle = AgentSession(self, info)
            self._sessions[handle.id] = handle
        return handle

    async def session_events(self) -> AsyncIterator[SessionEvent]:
        """Every session event for this agent (all its sessions), until it disconnects."""
        while True:
            while self._session_events.empty():
                if self._closed.is_set():
                    return
                self._message_ready.clear()
                await self._message_ready.wait()
            yield self._session_events.get_nowait()

    def _on_session_event(self, payload: dict[str, Any]) -> None:
        from trustwire.client.sessions import SessionEvent

        info = payload.get("session")
        kind = payload.get("event")
        if not isinstance(info, dict) or not isinstance(kind, str) or "id" not in info:
            return
        event = SessionEvent(kind=kind, session_id=str(info["id"]), session=info)
        handle = self._sessions.get(event.session_id)
        if handle is not None:
            handle._event(event)
        with contextlib.suppress(asyncio.QueueFull):
            self._session_events.put_nowait(event)
        self._message_ready.set()

    def _forget_session(self, handle: AgentSession) -> None:
        if self._sessions.get(handle.id) is handle:
            del self._sessions[handle.id]

    @property
    def memory(self) -> SharedMemories:
        """End-to-end encrypted shared memories (docs/MEMORY.md)."""
        if self._memory is None:
            from trustwire.memory.client import SharedMemories

            self._memory = SharedMemories(
                _ApiTransport(self), self.identity, self._peer_keys, clock=self.clock
            )
        return self._memory

    async def _peer_keys(self, who: str) -> tuple[str, bytes]:
        peer = await self.lookup(who, fresh=True)
        return peer.did, peer.agreement_key

    def broker_client(self, broker: str, **httpx_kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` that sends its requests through the credential broker
        at ``broker`` (``HOST:PORT``), authenticated with this agent's certificate
        (docs/BROKER.md). Use ``http://`` URLs; the broker upgrades the upstream hop."""
        from trustwire.broker.client import broker_client

        return broker_client(
            broker_url=broker if "://" in broker else f"https://{broker}",
            cert_pem=self.credentials.cert_pem,
            key_pem=self.credentials.key_pem,
            ca_pem=self.credentials.ca_pem,
            **httpx_kwargs,
        )

    # -- receiving -----------------------------------------------------------------------

    async def messages(self) -> AsyncIterator[Message]:
        """Iterate over received messages until the connection closes.

        Cancellation-safe: a message leaves the inbox only as it is handed over, so a
        ``receive(timeout=...)`` that times out loses nothing.
        """
        while True:
            while self._inbox.empty():
                if self._closed.is_set():
                    return
                self._message_ready.clear()
                await self._message_ready.wait()
            yield self._inbox.get_nowait()

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message (``TimeoutError`` after ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):
            async for message in self.messages():
                return message
        raise self._close_reason or ConnectionClosed(0, "connection closed")

    async def _read_loop(self) -> None:
        reader = self._reader
        if reader is None:
            return
        decoder = FrameDecoder(DEFAULT_MAX_FRAME)
        reason: TrustwireError = ConnectionClosed(0, "connection closed by the coordinator")
        try:
            while True:
                data = await reader.read(1 << 18)
                if not data:
                    break
                routed: list[Envelope] = []
                for raw in decoder.receive_data(data):
                    env = decode(raw)
                    if env.type.routed:
                        routed.append(env)
                    else:
                        self._on_control(env)
                if routed:
                    self._inbound.put_nowait(routed)
                if self._closed.is_set():
                    break
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            reason = ConnectionClosed(0, f"connection lost: {exc}")
        except ProtocolError as exc:
            reason = ConnectionClosed(ErrorCode.PROTOCOL, f"coordinator sent invalid data: {exc}")
        finally:
            self._mark_closed(self._close_reason or reason)

    def _on_control(self, env: Envelope) -> None:
        ftype = env.type
        if ftype is FrameType.STATUS:
            for mid, status in control.decode_status(env.body):
                pending = self._status.pop(mid, None)
                if pending is not None:
                    self._settle(pending[0], status)
        elif ftype is FrameType.ERROR:
            code, reason = control.decode_error(env.body)
            renewal = self._renewals.get(env.message_id)
            if renewal is not None and not renewal.done():
                renewal.set_exception(AuthenticationFailed("certificate renewal refused"))
                return
            opening = self._channel_inits.pop(env.message_id, None)
            if opening is not None:
                ready = self._channel_ready.get(opening)
                if ready is not None and not ready.done():
                    ready.set_exception(_error_for(code))
                return
            call = self._api_calls.pop(env.message_id, None)
            if call is not None:
                if not call.done():
                    call.set_exception(_error_for(code))
                return
            pending = self._status.pop(env.message_id, None)
            if pending is not None:
                self._refused(pending[0], pending[1], _error_for(code))
            elif env.message_id == bytes(16):
                self._mark_closed(ConnectionClosed(code, reason))
        elif ftype is FrameType.LOOKUP_RESULT:
            lookup = self._lookups.get(env.message_id)
            if lookup is not None and not lookup.done():
                lookup.set_result(control.decode_json(env.body))
        elif ftype is FrameType.RENEWED:
            renewal = self._renewals.get(env.message_id)
            if renewal is not None and not renewal.done():
                renewal.set_result(env.body)
        elif ftype is FrameType.READY:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(control.decode_json(env.body))
        elif ftype is FrameType.API_RESPONSE:
            call = self._api_calls.pop(env.message_id, None)
            if call is not None and not call.done():
                try:
                    call.set_result(decode_api_frame(env.body))
                except ProtocolError as exc:
                    call.set_exception(exc)
        elif ftype is FrameType.SESSION_EVENT:
            self._on_session_event(decode_api_frame(env.body))
        elif ftype is FrameType.PRESENCE:
            info = control.decode_json(env.body)
            if info.get("online") is False:
                self._peer_went_offline(
                    str(info.get("did", "")), rotated=info.get("rotated") is True
                )

    def _peer_went_offline(self, did: str, *, rotated: bool = False) -> None:
        opening = self._channel_ready.get(did)
        if opening is not None and not opening.done():
            # Nobody will answer the INIT: fall back to sealed now, not after the timeout.
            opening.set_exception(ConnectionClosed(0, "peer went offline"))
        self._channels.pop(did, None)
        gone = [key for key in self._channel_ids if key[0] == did]
        channels = [self._channel_ids.pop(key) for key in gone]
        if rotated:
            # Its agreement key changed: the cached key must never seal anything again.
            # The next use looks it up afresh; unreceipted messages are resent sealed to
            # the new key once it is known.
            self._peers.pop(did, None)
            waiting = [
                out
                for channel in channels
                for app_id in channel.unacknowledged
                if (out := self._outgoing.get(app_id)) is not None
            ]
            if waiting:
                self._spawn(self._seal_after_lookup(did, waiting))
            return
        peer = self._peers.get(did)
        if peer is not None:
            peer.online = False
        if peer is None:
            return
        # Its channel keys are gone: resend everything it has not receipted, sealed.
        for channel in channels:
            self._resend_sealed(channel, peer)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background until it ends or the agent closes."""
        if self._closed.is_set():
            work.close()
            return
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _seal_after_lookup(self, did: str, waiting: list[_Outgoing]) -> None:
        """Look a peer's (new) agreement key up, then send ``waiting`` sealed to it."""
        try:
            peer = await self.lookup(did, fresh=True)
        except TrustwireError as exc:
            for out in waiting:
                if out.status is None:
                    out.fail(exc)
            return
        for out in waiting:
            if out.receipt is not None or out.failed:
                continue  # receipted meanwhile, or refused itself
            if out.frame_id is not None:
                # The sealed copy's fate is the message's fate from now on.
                self._status.pop(out.frame_id, None)
            with contextlib.suppress(TrustwireError):
                self._send_sealed(out, peer)

    def _abandon_channel(self, channel: Channel, *, refused: _Outgoing) -> None:
        """The coordinator refused a frame already sent on ``channel``.

        That leaves a gap in the channel's counters: the recipient accepts nothing after
        it, and cannot release the unsigned messages before it either (the checkpoint
        that would cover them may be the refused frame). So the channel is dropped (the
        next send opens a new one) and its other unreceipted messages go sealed.
        """
        if self._channel_ids.pop((channel.peer, channel.channel_id), None) is None:
            return  # already abandoned, or the peer went offline
        if self._channels.get(channel.peer) is channel:
            del self._channels[channel.peer]
        peer = self._peers.get(channel.peer)
        if peer is not None:
            self._resend_sealed(channel, peer, skip=refused)

    def _resend_sealed(self, channel: Channel, peer: _Peer, skip: _Outgoing | None = None) -> None:
        for app_id in channel.unacknowledged:
            out = self._outgoing.get(app_id)
            if out is None or out is skip or out.receipt is not None:
                continue
            if out.failed:
                continue  # refused itself: its sender already has the error
            if out.frame_id is not None:
                # From now on the sealed copy's fate is the message's fate: an answer
                # still to come for the channel frame must not override it.
                self._status.pop(out.frame_id, None)
            with contextlib.suppress(TrustwireError):
                self._send_sealed(out, peer)

    async def _process_loop(self) -> None:
        while True:
            batch = await self._inbound.get()
            while not self._inbound.empty():
                batch.extend(self._inbound.get_nowait())
            try:
                await self._process(batch)
            except TrustwireError as exc:
                log.info("inbound processing stopped: %s", exc)
                return

    async def _process(self, batch: list[Envelope]) -> None:
        acks: list[bytes] = []
        sealed_receipts: dict[str, list[bytes]] = defaultdict(list)
        touched: set[Channel] = set()
        out_frames: list[bytes] = []
        for env in batch:
            acks.append(env.message_id)
            try:
                if env.type is FrameType.CHANNEL_DATA:
                    channel = self._channel_ids.get((env.sender, env.channel_id))
                    if channel is None:
                        self._security("unknown_channel", env.sender)
                        continue
                    for item in channel.receive(env):
                        self._deliver(item)
                    if channel.pending_receipt():
                        touched.add(channel)
                elif env.type is FrameType.SEALED:
                    peer = await self.lookup(env.sender)
                    item = open_sealed(self.identity, env, sender_agreement_key=peer.agreement_key)
                    if isinstance(item, ReceivedMessage):
                        sealed_receipts[env.sender].append(item.app_id)
                    self._deliver(item)
                elif env.type is FrameType.CHANNEL_INIT:
                    # A channel request is only ever sent to an online peer, so it must be
                    # fresh; and a channel id is used once (a replayed request must not
                    # replace a live channel).
                    check_timestamp(env.timestamp, now=self.clock(), window=_CHANNEL_INIT_WINDOW)
                    if env.channel_id in self._accepted_channel_ids:
                        raise ReplayDetected("channel request replayed")
                    peer = await self.lookup(env.sender, fresh=True)
                    channel, reply = Channel.accept(
                        self.identity,
                        env,
                        peer_agreement_key=peer.agreement_key,
                        message_id=random_bytes(16),
                        now_ms=self._now_ms(),
                    )
                    self._channels[env.sender] = channel
                    self._channel_opened[env.sender] = self.clock()
                    self._channel_ids[env.sender, channel.channel_id] = channel
                    self._accepted_channel_ids[env.channel_id] = None
                    if len(self._accepted_channel_ids) > 100_000:
                        self._accepted_channel_ids.popitem(last=False)
                    out_frames.append(self._frame(reply))
                elif env.type is FrameType.CHANNEL_ACCEPT:
                    pending = self._pending_channels.pop(env.channel_id, None)
                    if pending is None:
                        self._security("unexpected_accept", env.sender)
                        continue
                    pending.complete(env)
                    self._channels[env.sender] = pending
                    self._channel_opened[env.sender] = self.clock()
                    self._channel_ids[env.sender, pending.channel_id] = pending
                    ready = self._channel_ready.pop(env.sender, None)
                    if ready is not None and not ready.done():
                        ready.set_result(pending)
            except TransportError:
                # Not the frame's fault: the connection ended, or the registry lookup it
                # needed went unanswered. Leave it unacknowledged so that the coordinator
                # delivers it again (on the next connection) instead of it being dropped
                # as if it were an attack.
                acks.pop()
            except TrustwireError as exc:
                # Whatever else went wrong with this frame (tampering, replay, an unknown
                # sender), it must not stop the processing of the others.
                self._security(_reason_of(exc), env.sender)
        now = self._now_ms()
        for channel in touched:
            receipt = channel.send_receipt(message_id=random_bytes(16), now_ms=now)
            if receipt is not None:
                out_frames.append(self._frame(receipt))
        for did, app_ids in sealed_receipts.items():
            known = self._peers.get(did)
            if known is None:
                continue
            for i in range(0, len(app_ids), _SEALED_RECEIPT_IDS):
                env = seal_receipt(
                    self.identity,
                    did,
                    known.agreement_key,
                    app_ids[i : i + _SEALED_RECEIPT_IDS],
                    message_id=random_bytes(16),
                    now_ms=now,
                )
                out_frames.append(self._frame(env))
        for i in range(0, len(acks), control.MAX_BATCH):
            out_frames.append(
                self._control(FrameType.ACK, control.encode_ack(acks[i : i + control.MAX_BATCH]))
            )
        if out_frames and not self._closed.is_set():
            self._write(b"".join(out_frames))

    def _deliver(self, item: ReceivedMessage | ReceivedReceipt) -> None:
        if isinstance(item, ReceivedReceipt):
            for app_id in item.app_ids:
                out = self._outgoing.pop(app_id, None)
                if out is not None and out.receipt is None:
                    out.receipt = Receipt(
                        app_id.hex(),
                        item.signer,
                        item.signed_at / 1000,
                        item.signature,
                        item.statement,
                    )
                    out.resolve(out.receipt)
            return
        if item.app_id in self._seen:
            return  # a resend or redelivery: the application already has it
        self._seen[item.app_id] = None
        if len(self._seen) > self._seen_max:
            self._seen.popitem(last=False)
        peer = self._peers.get(item.sender)
        session = None if item.session_id is None else str(uuid.UUID(bytes=item.session_id))
        message = Message(
            id=item.app_id.hex(),
            sender=item.sender,
            sender_name=peer.name if peer else "",
            recipient=item.recipient,
            data=item.content,
            sent_at=item.sent_at / 1000,
            sealed=item.sealed,
            session_id=session,
        )
        handle = None if session is None else self._sessions.get(session)
        if handle is not None and handle.peer == item.sender:
            handle._deliver(message)
            return
        self._inbox.put_nowait(message)
        self._message_ready.set()

    def _security(self, reason: str, peer: str) -> None:
        self.rejected[reason] += 1
        log.warning("dropped a frame from %s: %s", peer, reason)
        if self.on_security_event is not None:
            self.on_security_event(reason, peer)


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) -> (host, port); ``ValueError`` if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


class _ApiTransport:
    """The shared-memory client's transport: API calls over the agent's connection."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        return await self._agent.api_call(
            method, path, query=dict(query) if query else None, body=body
        )


def _session_bytes(session_id: str) -> bytes:
    try:
        return uuid.UUID(session_id).bytes
    except (ValueError, AttributeError, TypeError) as exc:
        raise UnknownSession(f"not a session id: {session_id!r}") from exc


def _error_for(code: int) -> TrustwireError:
    if code == ErrorCode.SESSION_EXPIRED:
        return SessionExpired("the session has expired")
    if code == ErrorCode.SESSION_ENDED:
        return SessionEnded("the session has ended")
    if code == ErrorCode.SESSION_UNKNOWN:
        return UnknownSession("no such session between these agents")
    if code == ErrorCode.RATE_LIMITED:
        return RateLimited("the coordinator is rate limiting this agent")
    if code == ErrorCode.REJECTED:
        return PolicyDenied("the coordinator refused the message")
    return ConnectionClosed(code, "coordinator error")


def _reason_of(exc: Exception) -> str:
    if isinstance(exc, SecurityRejected):
        return exc.reason
    return type(exc).__name__
