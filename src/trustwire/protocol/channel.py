"""End-to-end channels and sealed messages between two agents (sans-I/O).

A **channel** is a ``Noise_IK_25519_AESGCM_SHA256`` session between an initiator and a
responder, relayed by the coordinator, which sees only envelopes:

* prologue = ``"trustwire/1/channel"`` || lp(initiator DID) || lp(responder DID) ||
  lp(channel id) — both DIDs, the channel id and the protocol version are bound;
* the responder's static key is its registered X25519 key-agreement key (``rs`` of IK);
* each handshake payload is the sender's Ed25519 signature over
  :func:`bind_statement` (its DID, the peer's DID, the channel id and its own Noise
  static key), and the receiver checks the static key against the registry too;
* transport frames (``CHANNEL_DATA``) carry an explicit 64-bit counter (the AEAD nonce) in
  the envelope header, and the *whole header* is the associated data.

Receivers check every counter against a :class:`~trustwire.protocol.replay.ReplayWindow`
and, because the hop is reliable and ordered, also require counters to arrive without
gaps (a gap means a frame was dropped or reordered in transit, which is reported).

**Signatures are amortized.** Each direction keeps a hash chain over every plaintext it
carries (``chain_i = SHA-256(chain_{i-1} || lp(header_i) || plaintext_i)``). A sender signs
a *checkpoint* (the chain value at a counter) inside the last message of each batch, at
least every :data:`MAX_UNSIGNED` messages; the receiver releases messages to the
application only once a checkpoint covering them has verified. Receipts acknowledge a
counter range with the receiver's signature over the sender's chain value. So one
Ed25519 signature and one verification per batch per direction, while the per-message AEAD
still authenticates every frame.

A **sealed** message (``SEALED``) is a one-way ``Noise_X_25519_AESGCM_SHA256`` message to
an agent that is offline: a fresh ephemeral per message, the sender's static key
transmitted encrypted, the envelope header bound through the prologue, and the content
signed individually (there is no chain to amortize over).

Invariant: no method returns plaintext that has not been authenticated by AEAD, and no
message reaches the application before its sender's signature (direct or checkpoint)
verified.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from trustwire.crypto.dh import KeyPair
from trustwire.crypto.hashes import constant_time_equal, sha256
from trustwire.crypto.signing import SigningKey, VerifyKey
from trustwire.errors import (
    AuthenticationFailed,
    DecryptionFailed,
    HandshakeFailed,
    InvalidEnvelope,
    InvalidSignature,
    NoiseError,
    ProtocolError,
)
from trustwire.identity.did import ed25519_from_did
from trustwire.protocol.content import (
    SIGNATURE_SIZE,
    MessageContent,
    ReceiptContent,
    channel_checkpoint_statement,
    decode_content,
    receipt_statement,
    sealed_statement,
)
from trustwire.protocol.envelope import (
    FLAG_RESPONSE,
    FLAG_SESSION,
    ZERO_CHANNEL,
    Envelope,
    FrameType,
    assemble,
    decode,
)
from trustwire.protocol.noise import CipherState, HandshakeState
from trustwire.protocol.replay import ReplayWindow

__all__ = [
    "CHANNEL_PROTOCOL",
    "MAX_UNSIGNED",
    "SEALED_PROTOCOL",
    "Channel",
    "LocalIdentity",
    "ReceivedMessage",
    "ReceivedReceipt",
    "bind_statement",
    "open_sealed",
    "seal",
    "seal_receipt",
    "verify_key_of",
]

CHANNEL_PROTOCOL = "Noise_IK_25519_AESGCM_SHA256"
SEALED_PROTOCOL = "Noise_X_25519_AESGCM_SHA256"
#: A sender signs at least once every this many messages; a receiver buffers no more.
MAX_UNSIGNED = 256
_TAG = 16
_SEALED_OVERHEAD = 32 + 32 + _TAG + _TAG  # e, encrypted s, payload tag


class LocalIdentity(Protocol):
    """What the protocol needs of the local agent (``identity.keys.AgentIdentity`` fits)."""

    @property
    def did(self) -> str: ...

    @property
    def signing_key(self) -> SigningKey: ...

    @property
    def agreement(self) -> KeyPair: ...


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """An authenticated, signature-verified application message."""

    app_id: bytes
    sender: str
    recipient: str
    content: bytes
    sent_at: int
    envelope_id: bytes
    channel_id: bytes | None
    sealed: bool
    #: The session the message was sent in (16 bytes, authenticated in the header), or None.
    session_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class ReceivedReceipt:
    """A verified delivery receipt from ``signer`` covering ``app_ids``."""

    signer: str
    app_ids: tuple[bytes, ...]
    signed_at: int
    signature: bytes
    statement: bytes


def _lp(value: str | bytes) -> bytes:
    raw = value.encode("ascii") if isinstance(value, str) else value
    return struct.pack(">H", len(raw)) + raw


_KEY_CACHE: OrderedDict[str, VerifyKey] = OrderedDict()


def verify_key_of(did: str) -> VerifyKey:
    """The Ed25519 verification key a did:key names (cached; ``InvalidDid`` if malformed)."""
    key = _KEY_CACHE.get(did)
    if key is None:
        key = VerifyKey.from_bytes(ed25519_from_did(did))
        _KEY_CACHE[did] = key
        if len(_KEY_CACHE) > 4096:
            _KEY_CACHE.popitem(last=False)
    return key


def channel_prologue(initiator: str, responder: str, channel_id: bytes) -> bytes:
    return b"trustwire/1/channel" + _lp(initiator) + _lp(responder) + _lp(channel_id)


def bind_statement(channel_id: bytes, did: str, peer: str, static_public: bytes) -> bytes:
    """What each side signs in its handshake payload: DID <-> Noise static key."""
    return b"".join(
        (b"trustwire/channel-bind/v1", _lp(channel_id), _lp(did), _lp(peer), _lp(static_public))
    )


def _chain_start(channel_id: bytes, sender: str) -> bytes:
    return sha256(b"trustwire/chain/v1" + _lp(channel_id) + _lp(sender))


_U16 = struct.Struct(">H")


def _chain_next(chain: bytes, header: bytes, plaintext: bytes) -> bytes:
    # = sha256(chain || lp(header) || plaintext), joined once rather than concatenated.
    return sha256(b"".join((chain, _U16.pack(len(header)), header, plaintext)))


class Channel:
    """One end of an established (or establishing) channel with ``peer``."""

    def __init__(
        self,
        local: LocalIdentity,
        peer: str,
        channel_id: bytes,
        *,
        initiator: bool,
        handshake: HandshakeState,
    ) -> None:
        self.local = local
        self.did = local.did  # computed once: deriving a did:key costs a base58 encoding
        self.peer = peer
        self.channel_id = channel_id
        self.initiator = initiator
        self._handshake: HandshakeState | None = handshake
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self._send_counter = 0
        self._send_chain = _chain_start(channel_id, local.did)
        self._recv_chain = _chain_start(channel_id, peer)
        self._window = ReplayWindow()
        self._peer_key = verify_key_of(peer)
        # Counters we sent and the peer has not yet acknowledged: counter -> (app_id, chain).
        self._unacked: OrderedDict[int, tuple[bytes | None, bytes]] = OrderedDict()
        # Received messages waiting for a covering checkpoint signature.
        self._unsigned: list[ReceivedMessage] = []
        self._unsigned_first: int | None = None
        # Received counters not yet acknowledged by a receipt from us.
        self._receipt_first: int | None = None
        self._receipt_last = 0
        self._receipt_chain = b""
        self.messages_sent = 0
        self.messages_received = 0

    # -- handshake ---------------------------------------------------------------------

    @classmethod
    def initiate(
        cls,
        local: LocalIdentity,
        peer: str,
        peer_agreement_key: bytes,
        *,
        channel_id: bytes,
        message_id: bytes,
        now_ms: int,
    ) -> tuple[Channel, Envelope]:
        """Start a channel: returns the channel and its ``CHANNEL_INIT`` frame."""
        hs = HandshakeState.initialize(
            CHANNEL_PROTOCOL,
            initiator=True,
            prologue=channel_prologue(local.did, peer, channel_id),
            s=local.agreement,
            rs=peer_agreement_key,
        )
        channel = cls(local, peer, channel_id, initiator=True, handshake=hs)
        payload = local.signing_key.sign(
            bind_statement(channel_id, local.did, peer, local.agreement.public)
        )
        body = hs.write_message(payload)
        env = Envelope.create(
            FrameType.CHANNEL_INIT,
            message_id,
            local.did,
            peer,
            body=body,
            channel_id=channel_id,
            timestamp=now_ms,
        )
        return channel, env

    @classmethod
    def accept(
        cls,
        local: LocalIdentity,
        init: Envelope,
        *,
        peer_agreement_key: bytes,
        message_id: bytes,
        now_ms: int,
    ) -> tuple[Channel, Envelope]:
        """Answer a ``CHANNEL_INIT``; ``peer_agreement_key`` is the registry's key for its sender.

        Raises :class:`HandshakeFailed` (or :class:`AuthenticationFailed` when the peer's
        key or signature does not match its registered identity).
        """
        if init.type is not FrameType.CHANNEL_INIT or init.recipient != local.did:
            raise HandshakeFailed("not a channel request for this agent")
        peer = init.sender
        hs = HandshakeState.initialize(
            CHANNEL_PROTOCOL,
            initiator=False,
            prologue=channel_prologue(peer, local.did, init.channel_id),
            s=local.agreement,
        )
        try:
            payload = hs.read_message(init.body)
        except (NoiseError, HandshakeFailed, DecryptionFailed) as exc:
            raise HandshakeFailed("channel request did not decrypt") from exc
        channel = cls(local, peer, init.channel_id, initiator=False, handshake=hs)
        channel._check_peer_binding(hs.remote_static, payload, peer_agreement_key)
        reply = local.signing_key.sign(
            bind_statement(init.channel_id, local.did, peer, local.agreement.public)
        )
        body = hs.write_message(reply)
        channel._finish_handshake()
        env = Envelope.create(
            FrameType.CHANNEL_ACCEPT,
            message_id,
            local.did,
            peer,
            body=body,
            channel_id=init.channel_id,
            timestamp=now_ms,
            flags=FLAG_RESPONSE,
        )
        return channel, env

    def complete(self, accept: Envelope) -> None:
        """Process the responder's ``CHANNEL_ACCEPT`` (initiator side)."""
        hs = self._handshake
        if hs is None or not self.initiator:
            raise HandshakeFailed("channel is not waiting for an accept")
        if accept.sender != self.peer or accept.channel_id != self.channel_id:
            raise HandshakeFailed("accept does not belong to this channel")
        try:
            payload = hs.read_message(accept.body)
        except (NoiseError, HandshakeFailed, DecryptionFailed) as exc:
            raise HandshakeFailed("channel accept did not decrypt") from exc
        try:
            self._peer_key.verify(
                payload,
                bind_statement(self.channel_id, self.peer, self.did, hs.remote_static or b""),
            )
        except InvalidSignature as exc:
            raise AuthenticationFailed("responder's binding signature is invalid") from exc
        self._finish_handshake()

    def _check_peer_binding(
        self, remote_static: bytes | None, payload: bytes, registered: bytes
    ) -> None:
        if remote_static is None or not constant_time_equal(remote_static, registered):
            raise AuthenticationFailed("initiator's static key is not its registered key")
        try:
            self._peer_key.verify(
                payload, bind_statement(self.channel_id, self.peer, self.did, remote_static)
            )
        except InvalidSignature as exc:
            raise AuthenticationFailed("initiator's binding signature is invalid") from exc

    def _finish_handshake(self) -> None:
        hs = self._handshake
        if hs is None or not hs.is_complete:
            raise HandshakeFailed("handshake incomplete")
        c1, c2 = hs.split()
        self._send, self._recv = (c1, c2) if self.initiator else (c2, c1)
        self._handshake = None

    @property
    def established(self) -> bool:
        return self._send is not None

    @property
    def send_counter(self) -> int:
        """Counter the next outgoing frame will use."""
        return self._send_counter

    @property
    def unacknowledged(self) -> list[bytes]:
        """App ids sent on this channel that no receipt has covered yet, in order."""
        return [app_id for app_id, _ in self._unacked.values() if app_id is not None]

    # -- transport ---------------------------------------------------------------------

    def _header(
        self,
        message_id: bytes,
        now_ms: int,
        plaintext_len: int,
        flags: int = 0,
        session_id: bytes = b"",
    ) -> bytes:
        """The header of the next ``CHANNEL_DATA`` frame (its AEAD associated data)."""
        return Envelope.build_header(
            FrameType.CHANNEL_DATA,
            message_id,
            self.did,
            self.peer,
            self.channel_id,
            self._send_counter,
            now_ms,
            plaintext_len + _TAG,
            flags,
            session_id,
        )

    def _seal_frame(
        self,
        plaintext: bytes,
        *,
        message_id: bytes,
        now_ms: int,
        header: bytes | None = None,
        flags: int = 0,
        session_id: bytes = b"",
    ) -> Envelope:
        """Encrypt ``plaintext`` as the next frame; ``header`` when the caller built it
        (with the same ``flags`` and ``session_id``)."""
        if self._send is None:
            raise ProtocolError("channel is not established")
        counter = self._send_counter
        if counter >= 2**64 - 1:
            raise NoiseError("channel counter exhausted; open a new channel")
        if header is None:
            header = self._header(message_id, now_ms, len(plaintext), flags, session_id)
        body = self._send.encrypt_at(counter, header, plaintext)
        self._send_counter = counter + 1
        # One of these per message sent: skip the frozen dataclass __init__.
        return assemble(
            FrameType.CHANNEL_DATA,
            message_id,
            self.did,
            self.peer,
            self.channel_id,
            counter,
            now_ms,
            body,
            flags | FLAG_SESSION if session_id else flags,
            header,
            session_id,
        )

    def send(
        self,
        content: bytes,
        *,
        app_id: bytes,
        message_id: bytes,
        now_ms: int,
        sign: bool,
        session_id: bytes = b"",
    ) -> Envelope:
        """Encrypt one application message; ``sign`` adds a checkpoint signature.

        The caller signs the last message of each batch; this method forces a signature
        when :data:`MAX_UNSIGNED` messages would otherwise go unsigned. ``session_id``
        (16 bytes) binds the message to a session, in its authenticated header.
        """
        if not sign and self._unsigned_run() >= MAX_UNSIGNED - 1:
            sign = True
        msg = MessageContent(app_id, now_ms, content)
        unsigned = msg.unsigned_bytes(will_sign=sign)
        sig_len = SIGNATURE_SIZE if sign else 0
        # The header covers the final plaintext length, so it is built once, before the
        # signature exists: the chain hashes it and the frame reuses it.
        header = self._header(message_id, now_ms, len(unsigned) + sig_len, 0, session_id)
        chain = _chain_next(self._send_chain, header, unsigned)
        plaintext = unsigned
        if sign:
            statement = channel_checkpoint_statement(
                self.channel_id, self.did, self.peer, self._send_counter, chain
            )
            plaintext = unsigned + self.local.signing_key.sign(statement)
            self._last_signed = self._send_counter
        counter = self._send_counter
        env = self._seal_frame(
            plaintext, message_id=message_id, now_ms=now_ms, header=header, session_id=session_id
        )
        self._send_chain = chain
        self._unacked[counter] = (app_id, chain)
        self.messages_sent += 1
        return env

    _last_signed = -1

    def _unsigned_run(self) -> int:
        return self._send_counter - self._last_signed - 1

    def pending_receipt(self) -> bool:
        """True when received messages await a receipt from us."""
        return self._receipt_first is not None

    def send_receipt(self, *, message_id: bytes, now_ms: int) -> Envelope | None:
        """A signed receipt for everything received since the last one (None if nothing)."""
        if self._receipt_first is None:
            return None
        receipt_body = ReceiptContent(
            signed_at=now_ms,
            signature=b"",
            first_counter=self._receipt_first,
            last_counter=self._receipt_last,
            chain=self._receipt_chain,
        ).body_bytes()
        signature = self.local.signing_key.sign(
            receipt_statement(self.did, self.peer, self.channel_id, receipt_body)
        )
        plaintext = receipt_body + signature
        header = self._header(message_id, now_ms, len(plaintext), FLAG_RESPONSE)
        counter = self._send_counter
        chain = _chain_next(self._send_chain, header, plaintext)
        env = self._seal_frame(
            plaintext, message_id=message_id, now_ms=now_ms, header=header, flags=FLAG_RESPONSE
        )
        self._send_chain = chain
        # The receipt's signature covers the receipt, not our direction's chain: it is
        # not a checkpoint, so the unsigned run continues across it.
        self._unacked[counter] = (None, chain)
        self._receipt_first = None
        return env

    def receive(self, env: Envelope) -> list[ReceivedMessage | ReceivedReceipt]:
        """Authenticate and process one ``CHANNEL_DATA`` frame.

        Returns the messages whose checkpoint has now verified and any receipt. Raises
        :class:`ReplayDetected`, :class:`DecryptionFailed`, :class:`InvalidEnvelope`,
        :class:`AuthenticationFailed` or :class:`ProtocolError`; a frame that fails leaves
        the channel state unchanged.
        """
        if self._recv is None:
            raise ProtocolError("channel is not established")
        if (
            env.type is not FrameType.CHANNEL_DATA
            or env.channel_id != self.channel_id
            or env.sender != self.peer
            or env.recipient != self.did
        ):
            raise InvalidEnvelope("frame does not belong to this channel")
        counter = env.counter
        self._window.check(counter)
        plaintext = self._recv.decrypt_at(counter, env.header, env.body)
        if counter != self._window.highest + 1:
            # Authentic but out of order: the hop is ordered, so something dropped a frame.
            raise ProtocolError(f"channel frame {counter} arrived out of order")
        content = decode_content(plaintext)
        if env.flags & FLAG_RESPONSE and isinstance(content, MessageContent):
            # A response may only carry receipts: the coordinator let it through on the
            # strength of our permission to message the peer, not the peer's.
            raise InvalidEnvelope("application message inside a response frame")
        out: list[ReceivedMessage | ReceivedReceipt] = []
        if isinstance(content, MessageContent):
            # decode_content checked the layout, so the unsigned encoding is the plaintext
            # without its signature: slice it rather than encode it again.
            unsigned = plaintext if content.signature is None else plaintext[:-SIGNATURE_SIZE]
            chain = _chain_next(self._recv_chain, env.header, unsigned)
            message = ReceivedMessage(
                content.app_id,
                self.peer,
                self.did,
                content.content,
                content.sent_at,
                env.message_id,
                self.channel_id,
                False,  # sealed
                env.session_id or None,
            )
            if content.signature is not None:
                statement = channel_checkpoint_statement(
                    self.channel_id, self.peer, self.did, counter, chain
                )
                try:
                    self._peer_key.verify(content.signature, statement)
                except InvalidSignature as exc:
                    raise AuthenticationFailed("checkpoint signature is invalid") from exc
                out.extend(self._unsigned)
                out.append(message)
                released_from = counter if self._unsigned_first is None else self._unsigned_first
                self._unsigned = []
                self._unsigned_first = None
                # Receipts cover only what a checkpoint has verified and the application
                # has been handed: never messages still waiting for their signature.
                if self._receipt_first is None:
                    self._receipt_first = released_from
                self._receipt_last = counter
                self._receipt_chain = chain
            else:
                if len(self._unsigned) >= MAX_UNSIGNED:
                    raise ProtocolError("too many unsigned messages in a row")
                if self._unsigned_first is None:
                    self._unsigned_first = counter
                self._unsigned.append(message)
        else:
            if not content.is_range:
                raise InvalidEnvelope("channel receipts must acknowledge a counter range")
            chain = _chain_next(self._recv_chain, env.header, plaintext)
            out.append(self._accept_receipt(content))
        self._window.commit(counter)
        self._recv_chain = chain
        if isinstance(content, MessageContent):
            self.messages_received += 1
        return out

    def _accept_receipt(self, receipt: ReceiptContent) -> ReceivedReceipt:
        statement = receipt_statement(self.peer, self.did, self.channel_id, receipt.body_bytes())
        try:
            self._peer_key.verify(receipt.signature, statement)
        except InvalidSignature as exc:
            raise AuthenticationFailed("receipt signature is invalid") from exc
        entry = self._unacked.get(receipt.last_counter)
        if entry is None or not constant_time_equal(entry[1], receipt.chain):
            raise AuthenticationFailed("receipt does not match the messages sent")
        covered: list[bytes] = []
        while self._unacked:
            counter, (app_id, _) = next(iter(self._unacked.items()))
            if counter > receipt.last_counter:
                break
            self._unacked.popitem(last=False)
            if app_id is not None:
                covered.append(app_id)
        return ReceivedReceipt(
            signer=self.peer,
            app_ids=tuple(covered),
            signed_at=receipt.signed_at,
            signature=receipt.signature,
            statement=statement,
        )


# -- sealed one-shot messages ---------------------------------------------------------


def _sealed_prologue(header: bytes) -> bytes:
    return b"trustwire/1/sealed" + _lp(header)


def seal(
    local: LocalIdentity,
    recipient: str,
    recipient_agreement_key: bytes,
    content: bytes,
    *,
    app_id: bytes,
    message_id: bytes,
    now_ms: int,
    session_id: bytes = b"",
) -> Envelope:
    """Encrypt a signed one-shot ``SEALED`` message to ``recipient``'s agreement key
    (``session_id``: the session it belongs to, in its authenticated header)."""
    unsigned = MessageContent(app_id, now_ms, content).unsigned_bytes(will_sign=True)
    body_len = _SEALED_OVERHEAD + len(unsigned) + SIGNATURE_SIZE
    header = Envelope.build_header(
        FrameType.SEALED,
        message_id,
        local.did,
        recipient,
        ZERO_CHANNEL,
        0,
        now_ms,
        body_len,
        0,
        session_id,
    )
    signature = local.signing_key.sign(sealed_statement(header, unsigned))
    return _noise_x(local, recipient_agreement_key, header, unsigned + signature)


def seal_receipt(
    local: LocalIdentity,
    recipient: str,
    recipient_agreement_key: bytes,
    app_ids: list[bytes],
    *,
    message_id: bytes,
    now_ms: int,
) -> Envelope:
    """A signed receipt for sealed messages, itself sent sealed."""
    body = ReceiptContent(signed_at=now_ms, signature=b"", app_ids=tuple(app_ids)).body_bytes()
    signature = local.signing_key.sign(receipt_statement(local.did, recipient, ZERO_CHANNEL, body))
    plaintext = body + signature
    header = Envelope.build_header(
        FrameType.SEALED,
        message_id,
        local.did,
        recipient,
        ZERO_CHANNEL,
        0,
        now_ms,
        _SEALED_OVERHEAD + len(plaintext),
        FLAG_RESPONSE,
    )
    return _noise_x(local, recipient_agreement_key, header, plaintext)


def _noise_x(
    local: LocalIdentity, recipient_agreement_key: bytes, header: bytes, plaintext: bytes
) -> Envelope:
    hs = HandshakeState.initialize(
        SEALED_PROTOCOL,
        initiator=True,
        prologue=_sealed_prologue(header),
        s=local.agreement,
        rs=recipient_agreement_key,
    )
    body = hs.write_message(plaintext)
    return decode(header + body)


def open_sealed(
    local: LocalIdentity, env: Envelope, *, sender_agreement_key: bytes
) -> ReceivedMessage | ReceivedReceipt:
    """Decrypt and verify a ``SEALED`` frame addressed to ``local``.

    ``sender_agreement_key`` is the registry's key for ``env.sender``; a message whose
    Noise static key differs is refused (:class:`AuthenticationFailed`).
    """
    if env.type is not FrameType.SEALED or env.recipient != local.did:
        raise InvalidEnvelope("not a sealed message for this agent")
    hs = HandshakeState.initialize(
        SEALED_PROTOCOL,
        initiator=False,
        prologue=_sealed_prologue(env.header),
        s=local.agreement,
    )
    try:
        plaintext = hs.read_message(env.body)
    except (NoiseError, HandshakeFailed) as exc:
        raise DecryptionFailed("sealed message did not decrypt") from exc
    remote = hs.remote_static
    if remote is None or not constant_time_equal(remote, sender_agreement_key):
        raise AuthenticationFailed("sealed message was not sent with the sender's registered key")
    content = decode_content(plaintext)
    if env.flags & FLAG_RESPONSE and isinstance(content, MessageContent):
        raise InvalidEnvelope("application message inside a response frame")
    key = verify_key_of(env.sender)
    if isinstance(content, MessageContent):
        if content.signature is None:
            raise AuthenticationFailed("sealed message is unsigned")
        try:
            key.verify(content.signature, sealed_statement(env.header, content.unsigned_bytes()))
        except InvalidSignature as exc:
            raise AuthenticationFailed("sealed message signature is invalid") from exc
        return ReceivedMessage(
            app_id=content.app_id,
            sender=env.sender,
            recipient=local.did,
            content=content.content,
            sent_at=content.sent_at,
            envelope_id=env.message_id,
            channel_id=None,
            sealed=True,
            session_id=env.session_id or None,
        )
    if content.is_range:
        raise InvalidEnvelope("sealed receipts must list message ids")
    statement = receipt_statement(env.sender, local.did, ZERO_CHANNEL, content.body_bytes())
    try:
        key.verify(content.signature, statement)
    except InvalidSignature as exc:
        raise AuthenticationFailed("receipt signature is invalid") from exc
    return ReceivedReceipt(
        signer=env.sender,
        app_ids=content.app_ids,
        signed_at=content.signed_at,
        signature=content.signature,
        statement=statement,
    )
