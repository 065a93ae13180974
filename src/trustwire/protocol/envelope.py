"""The envelope: the header every frame carries, and its binary encoding (sans-I/O).

Layout (all integers big-endian; see ``docs/PROTOCOL.md``)::

    0    u8    version            (= 1)
    1    u8    type               (FrameType)
    2    u8    flags              (bit 0 = RESPONSE; other bits reserved, must be 0)
    3    16    message_id
    19   u8    S = len(sender)    (0..128)
    20   S     sender DID         (ASCII)
    .    u8    R = len(recipient) (0..128; 0 = addressed to the coordinator)
    .    R     recipient DID      (ASCII)
    .    16    channel_id         (zero bytes when not a channel frame)
    .    u64   counter            (channel transport nonce; 0 otherwise)
    .    u64   timestamp          (sender's clock, milliseconds since the Unix epoch)
    .    u32   body_len           (must equal the number of body bytes, after the session id)
    .    16    session_id         (only when flags bit 1 = SESSION is set)
    .    body_len body

Flag bit 1 (``SESSION``) binds a message to a session (docs/SESSIONS.md): it is allowed on
``CHANNEL_DATA`` and ``SEALED`` frames that are not responses. Being in the header, the
session id is authenticated end to end like every other header field, and the coordinator
can read it to refuse a message on an expired or ended session.

The *header* is everything before the body. For channel transport frames it is the AEAD
associated data, so the coordinator cannot alter sender, recipient, ids, counter or
timestamp without the recipient noticing; for sealed frames it is mixed into the Noise
prologue for the same reason.

Invariant: :func:`decode` either returns a fully validated :class:`Envelope` or raises
:class:`~trustwire.errors.InvalidEnvelope`; it never reads past the input.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import NewType

from trustwire.errors import InvalidEnvelope

__all__ = [
    "FLAG_RESPONSE",
    "FLAG_SESSION",
    "ID_SIZE",
    "MAX_DID_LENGTH",
    "VERSION",
    "ZERO_CHANNEL",
    "ChannelId",
    "Envelope",
    "FrameType",
    "MessageId",
    "assemble",
    "decode",
]

VERSION = 1
ID_SIZE = 16
MAX_DID_LENGTH = 128

MessageId = NewType("MessageId", bytes)
ChannelId = NewType("ChannelId", bytes)
ZERO_CHANNEL = ChannelId(bytes(ID_SIZE))
#: Flag bit: the frame only answers the recipient (a channel accept or a receipt). The
#: coordinator authorizes it in the reverse direction (may the recipient message the
#: sender?) and the recipient refuses any application message inside it, so a one-way
#: grant lets receipts flow back without letting the responder say anything else.
FLAG_RESPONSE = 0x01
#: Flag bit: a 16-byte session id follows the fixed header fields (see the layout above).
FLAG_SESSION = 0x02
_SESSION_TYPES = frozenset({0x12, 0x13})  # CHANNEL_DATA, SEALED

_FIXED_HEAD = struct.Struct(">BBB16s")
_FIXED_TAIL = struct.Struct(">16sQQI")


class FrameType(enum.IntEnum):
    """Frame types. 0x1_ are end-to-end (routed, opaque to the coordinator); 0x2_ are
    control frames between an agent and the coordinator."""

    CHANNEL_INIT = 0x10
    CHANNEL_ACCEPT = 0x11
    CHANNEL_DATA = 0x12
    SEALED = 0x13
    READY = 0x20
    STATUS = 0x21
    ERROR = 0x22
    ACK = 0x23
    LOOKUP = 0x24
    LOOKUP_RESULT = 0x25
    PRESENCE = 0x26
    PING = 0x27
    PONG = 0x28
    RENEW = 0x29
    RENEWED = 0x2A
    JOIN_REQUEST = 0x2B
    JOIN_RESULT = 0x2C
    API_REQUEST = 0x2D
    API_RESPONSE = 0x2E
    SESSION_EVENT = 0x2F

    @property
    def routed(self) -> bool:
        """True for end-to-end frames the coordinator forwards to ``recipient``."""
        return 0x10 <= self.value <= 0x1F


_TYPES = {t.value: t for t in FrameType}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded frame. ``header`` holds the exact header bytes (AEAD associated data)."""

    type: FrameType
    message_id: MessageId
    sender: str
    recipient: str
    channel_id: ChannelId = ZERO_CHANNEL
    counter: int = 0
    timestamp: int = 0
    body: bytes = b""
    flags: int = 0
    header: bytes = field(default=b"", compare=False, repr=False)
    #: The session the message belongs to (16 bytes), or empty.
    session_id: bytes = b""

    @staticmethod
    def build_header(
        type: FrameType,
        message_id: bytes,
        sender: str,
        recipient: str,
        channel_id: bytes,
        counter: int,
        timestamp: int,
        body_len: int,
        flags: int = 0,
        session_id: bytes = b"",
    ) -> bytes:
        """Encode a header for a body of ``body_len`` bytes (``ValueError`` on bad fields).

        A ``session_id`` (16 bytes) sets :data:`FLAG_SESSION` and is appended to the header.
        """
        if len(message_id) != ID_SIZE or len(channel_id) != ID_SIZE:
            raise ValueError("message_id and channel_id must be 16 bytes")
        if session_id:
            if len(session_id) != ID_SIZE:
                raise ValueError("session_id must be 16 bytes")
            if int(type) not in _SESSION_TYPES or flags & FLAG_RESPONSE:
                raise ValueError("only CHANNEL_DATA and SEALED messages carry a session id")
            flags |= FLAG_SESSION
        elif flags & FLAG_SESSION:
            raise ValueError("FLAG_SESSION needs a session_id")
        s = sender.encode("ascii")
        r = recipient.encode("ascii")
        if len(s) > MAX_DID_LENGTH or len(r) > MAX_DID_LENGTH:
            raise ValueError("DID too long")
        if not (0 <= counter < 2**64 and 0 <= timestamp < 2**64 and 0 <= body_len < 2**32):
            raise ValueError("counter, timestamp or body length out of range")
        return b"".join(
            (
                _FIXED_HEAD.pack(VERSION, int(type), flags, message_id),
                bytes((len(s),)),
                s,
                bytes((len(r),)),
                r,
                _FIXED_TAIL.pack(channel_id, counter, timestamp, body_len),
                session_id,
            )
        )

    @classmethod
    def create(
        cls,
        type: FrameType,
        message_id: bytes,
        sender: str,
        recipient: str,
        *,
        body: bytes = b"",
        channel_id: bytes = ZERO_CHANNEL,
        counter: int = 0,
        timestamp: int = 0,
        flags: int = 0,
        session_id: bytes = b"",
    ) -> Envelope:
        """Build an envelope, computing its header."""
        header = cls.build_header(
            type,
            message_id,
            sender,
            recipient,
            channel_id,
            counter,
            timestamp,
            len(body),
            flags,
            session_id,
        )
        if session_id:
            flags |= FLAG_SESSION
        return cls(
            type=type,
            message_id=MessageId(bytes(message_id)),
            sender=sender,
            recipient=recipient,
            channel_id=ChannelId(bytes(channel_id)),
            counter=counter,
            timestamp=timestamp,
            body=body,
            flags=flags,
            header=header,
            session_id=bytes(session_id),
        )

    def to_bytes(self) -> bytes:
        """The encoded envelope (header || body)."""
        header = self.header or self.build_header(
            self.type,
            self.message_id,
            self.sender,
            self.recipient,
            self.channel_id,
            self.counter,
            self.timestamp,
            len(self.body),
            self.flags,
            self.session_id,
        )
        return header + self.body


# The frozen dataclass __init__ sets each of the ten fields through object.__setattr__,
# which costs more than the rest of decode; every frame on every hop builds one. The
# slot descriptors set the same fields directly. Used only with fields already
# validated (decode) or built (the channel); the result is an ordinary Envelope.
_SLOT_SETTERS = tuple(
    getattr(Envelope, name).__set__
    for name in (
        "type",
        "message_id",
        "sender",
        "recipient",
        "channel_id",
        "counter",
        "timestamp",
        "body",
        "flags",
        "header",
        "session_id",
    )
)


def assemble(
    type: FrameType,
    message_id: bytes,
    sender: str,
    recipient: str,
    channel_id: bytes,
    counter: int,
    timestamp: int,
    body: bytes,
    flags: int,
    header: bytes,
    session_id: bytes = b"",
) -> Envelope:
    """An :class:`Envelope` from fields already validated, without the dataclass
    ``__init__`` (same result, a third of the cost). For decoders and the channel."""
    (s_type, s_id, s_sender, s_recipient, s_channel, s_counter, s_time, s_body, s_flags,
     s_header, s_session) = _SLOT_SETTERS  # fmt: skip
    env: Envelope = object.__new__(Envelope)
    s_type(env, type)
    s_id(env, message_id)
    s_sender(env, sender)
    s_recipient(env, recipient)
    s_channel(env, channel_id)
    s_counter(env, counter)
    s_time(env, timestamp)
    s_body(env, body)
    s_flags(env, flags)
    s_header(env, header)
    s_session(env, session_id)
    return env


# Validated DID strings by their wire bytes. Every frame names a sender and a recipient
# and a deployment has few agents, so after the first frame each DID costs a dict lookup
# instead of an ASCII decode and a printability check. Only strings that passed the checks
# are stored; the cache is cleared when full, so it stays bounded whatever a peer sends.
_DIDS: dict[bytes, str] = {b"": ""}
_DIDS_MAX = 4096


def _did(raw: bytes) -> str:
    did = _DIDS.get(raw)
    if did is None:
        try:
            did = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InvalidEnvelope("sender and recipient must be ASCII") from exc
        if not did.isprintable():
            raise InvalidEnvelope("sender and recipient must be printable")
        if len(_DIDS) >= _DIDS_MAX:
            _DIDS.clear()
            _DIDS[b""] = ""
        _DIDS[raw] = did
    return did


def decode(data: bytes) -> Envelope:
    """Parse and validate one envelope, or raise :class:`InvalidEnvelope`."""
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < _FIXED_HEAD.size + 2 + _FIXED_TAIL.size:
        raise InvalidEnvelope(f"envelope too short ({n} bytes)")
    version, type_value, flags, message_id = _FIXED_HEAD.unpack_from(data, 0)
    if version != VERSION:
        raise InvalidEnvelope(f"unsupported protocol version {version}")
    frame_type = _TYPES.get(type_value)
    if frame_type is None:
        raise InvalidEnvelope(f"unknown frame type 0x{type_value:02x}")
    if flags & ~(FLAG_RESPONSE | FLAG_SESSION):
        raise InvalidEnvelope("reserved flags must be zero")
    pos = _FIXED_HEAD.size
    s_len = data[pos]
    pos += 1
    if s_len > MAX_DID_LENGTH or pos + s_len + 1 > n:
        raise InvalidEnvelope("bad sender length")
    sender_raw = data[pos : pos + s_len]
    pos += s_len
    r_len = data[pos]
    pos += 1
    if r_len > MAX_DID_LENGTH or pos + r_len + _FIXED_TAIL.size > n:
        raise InvalidEnvelope("bad recipient length")
    recipient_raw = data[pos : pos + r_len]
    pos += r_len
    channel_id, counter, timestamp, body_len = _FIXED_TAIL.unpack_from(data, pos)
    pos += _FIXED_TAIL.size
    session_id = b""
    if flags & FLAG_SESSION:
        if type_value not in _SESSION_TYPES or flags & FLAG_RESPONSE:
            raise InvalidEnvelope("only CHANNEL_DATA and SEALED messages carry a session id")
        if pos + ID_SIZE > n:
            raise InvalidEnvelope("truncated session id")
        session_id = data[pos : pos + ID_SIZE]
        pos += ID_SIZE
    if body_len != n - pos:
        raise InvalidEnvelope(f"body length {body_len} does not match the {n - pos} bytes present")
    sender = _did(sender_raw)
    recipient = _did(recipient_raw)
    return assemble(
        frame_type,
        message_id,
        sender,
        recipient,
        channel_id,
        counter,
        timestamp,
        data[pos:],
        flags,
        data[:pos],
        session_id,
    )
