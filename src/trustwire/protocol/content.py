"""Inner plaintexts: what travels *inside* channel and sealed ciphertexts (sans-I/O).

The coordinator never sees these bytes. Two kinds exist::

    MESSAGE  u8 kind=1 | 16 app_id | u64 sent_at_ms | u8 flags | u32 n | n content
             | [64 signature, when flags & SIGNED]
    RECEIPT  u8 kind=2 | u8 mode | u64 signed_at_ms | mode-specific | 64 signature
        mode 1 (channel range):  u64 first_counter | u64 last_counter | 32 chain
        mode 2 (message ids):    u16 k | k * 16 app_id

``app_id`` is the application-level message id: it stays the same when the SDK resends a
message by another route (channel, then sealed), so the recipient can deduplicate and the
application sees each message exactly once. Every signature is Ed25519 by the signer's
identity key over a *statement* that starts with a domain-separation label; the statement
functions below are the single definition used by signers and verifiers alike.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from trustwire.errors import InvalidEnvelope

__all__ = [
    "MAX_RECEIPT_IDS",
    "SIGNATURE_SIZE",
    "ContentKind",
    "MessageContent",
    "ReceiptContent",
    "channel_checkpoint_statement",
    "decode_content",
    "receipt_statement",
    "sealed_statement",
]

SIGNATURE_SIZE = 64
MAX_RECEIPT_IDS = 4096
FLAG_SIGNED = 0x01

_MSG = struct.Struct(">B16sQBI")
_RCPT = struct.Struct(">BBQ")
_RANGE = struct.Struct(">QQ32s")


class ContentKind(enum.IntEnum):
    MESSAGE = 1
    RECEIPT = 2


@dataclass(frozen=True, slots=True)
class MessageContent:
    """An application message. ``signature`` is None when a later checkpoint covers it."""

    app_id: bytes
    sent_at: int
    content: bytes
    signature: bytes | None = None

    def unsigned_bytes(self, *, will_sign: bool | None = None) -> bytes:
        """The encoding without the signature (what hash chains and statements cover)."""
        signed = (self.signature is not None) if will_sign is None else will_sign
        return (
            _MSG.pack(
                ContentKind.MESSAGE,
                self.app_id,
                self.sent_at,
                FLAG_SIGNED if signed else 0,
                len(self.content),
            )
            + self.content
        )

    def to_bytes(self) -> bytes:
        return self.unsigned_bytes() + (self.signature or b"")


@dataclass(frozen=True, slots=True)
class ReceiptContent:
    """A signed delivery receipt: either a channel counter range or a list of app ids."""

    signed_at: int
    signature: bytes
    first_counter: int = 0
    last_counter: int = 0
    chain: bytes = b""
    app_ids: tuple[bytes, ...] = ()

    @property
    def is_range(self) -> bool:
        return not self.app_ids

    def body_bytes(self) -> bytes:
        """Mode byte onward, without the signature."""
        if self.is_range:
            mode = 1
            rest = _RANGE.pack(self.first_counter, self.last_counter, self.chain)
        else:
            mode = 2
            rest = struct.pack(">H", len(self.app_ids)) + b"".join(self.app_ids)
        return _RCPT.pack(ContentKind.RECEIPT, mode, self.signed_at) + rest

    def to_bytes(self) -> bytes:
        return self.body_bytes() + self.signature


def decode_content(data: bytes) -> MessageContent | ReceiptContent:
    """Parse an inner plaintext or raise :class:`InvalidEnvelope`."""
    if not data:
        raise InvalidEnvelope("empty content")
    kind = data[0]
    if kind == ContentKind.MESSAGE:
        if len(data) < _MSG.size:
            raise InvalidEnvelope("message content too short")
        _, app_id, sent_at, flags, n = _MSG.unpack_from(data)
        if flags & ~FLAG_SIGNED:
            raise InvalidEnvelope("unknown message flags")
        sig_len = SIGNATURE_SIZE if flags & FLAG_SIGNED else 0
        if len(data) != _MSG.size + n + sig_len:
            raise InvalidEnvelope("message content length mismatch")
        content = data[_MSG.size : _MSG.size + n]
        signature = data[_MSG.size + n :] if sig_len else None
        return MessageContent(app_id, sent_at, content, signature)
    if kind == ContentKind.RECEIPT:
        if len(data) < _RCPT.size + SIGNATURE_SIZE:
            raise InvalidEnvelope("receipt too short")
        _, mode, signed_at = _RCPT.unpack_from(data)
        body = data[_RCPT.size : -SIGNATURE_SIZE]
        signature = data[-SIGNATURE_SIZE:]
        if mode == 1:
            if len(body) != _RANGE.size:
                raise InvalidEnvelope("range receipt length mismatch")
            first, last, chain = _RANGE.unpack(body)
            if first > last:
                raise InvalidEnvelope("receipt range is reversed")
            return ReceiptContent(signed_at, signature, first, last, chain)
        if mode == 2:
            if len(body) < 2:
                raise InvalidEnvelope("id receipt too short")
            (k,) = struct.unpack_from(">H", body)
            if k == 0 or k > MAX_RECEIPT_IDS or len(body) != 2 + 16 * k:
                raise InvalidEnvelope("id receipt length mismatch")
            ids = tuple(body[2 + 16 * i : 18 + 16 * i] for i in range(k))
            return ReceiptContent(signed_at, signature, app_ids=ids)
        raise InvalidEnvelope(f"unknown receipt mode {mode}")
    raise InvalidEnvelope(f"unknown content kind {kind}")


def _lp(value: str | bytes) -> bytes:
    raw = value.encode("ascii") if isinstance(value, str) else value
    return struct.pack(">H", len(raw)) + raw


def channel_checkpoint_statement(
    channel_id: bytes, sender: str, recipient: str, counter: int, chain: bytes
) -> bytes:
    """What a channel sender signs: every message in its direction up to ``counter``."""
    return b"".join(
        (
            b"trustwire/checkpoint/v1",
            _lp(channel_id),
            _lp(sender),
            _lp(recipient),
            struct.pack(">Q", counter),
            _lp(chain),
        )
    )


def sealed_statement(header: bytes, unsigned_content: bytes) -> bytes:
    """What a sealed-message sender signs: the envelope header and the content."""
    return b"".join((b"trustwire/sealed/v1", _lp(header), _lp(unsigned_content)))


def receipt_statement(signer: str, peer: str, channel_id: bytes, body: bytes) -> bytes:
    """What a recipient signs in a receipt (``body`` = :meth:`ReceiptContent.body_bytes`)."""
    return b"".join((b"trustwire/receipt/v1", _lp(signer), _lp(peer), _lp(channel_id), _lp(body)))
