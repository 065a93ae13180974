"""Length-prefixed framing (sans-I/O).

A frame on the wire is a 4-byte big-endian unsigned length ``N`` followed by ``N`` bytes of
payload (one envelope). The decoder reads the 4-byte length first and raises
:class:`~trustwire.errors.FrameTooLarge` *before* buffering any of the body when ``N`` exceeds
its limit, so an oversize frame never costs more memory than the bytes already received
(at most one read chunk). A zero-length frame is invalid.

Invariant: the decoder's buffer never holds more than ``max_frame + 4`` bytes plus one
read chunk; after an error the decoder is closed and refuses further input.
"""

from __future__ import annotations

import struct

from trustwire.errors import FrameTooLarge, InvalidFrame

__all__ = ["DEFAULT_MAX_FRAME", "HARD_MAX_FRAME", "FrameDecoder", "encode_frame"]

#: Default largest accepted frame payload (bytes).
DEFAULT_MAX_FRAME = 256 * 1024
#: No configuration may raise the limit past this.
HARD_MAX_FRAME = 16 * 1024 * 1024

_LENGTH = struct.Struct(">I")


def encode_frame(payload: bytes, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Prefix ``payload`` with its length. ``ValueError`` if it is empty or over the limit."""
    n = len(payload)
    if n == 0 or n > max_frame:
        raise ValueError(f"frame payload must be 1..{max_frame} bytes, got {n}")
    return _LENGTH.pack(n) + payload


class FrameDecoder:
    """Incremental decoder: feed bytes with :meth:`receive_data`, get complete payloads back."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not 1 <= max_frame <= HARD_MAX_FRAME:
            raise ValueError(f"max_frame must be 1..{HARD_MAX_FRAME}")
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> list[bytes]:
        """Consume ``data``; return every complete frame payload it finishes, in order.

        Raises :class:`FrameTooLarge` or :class:`InvalidFrame`; the decoder is then closed.
        """
        if self._closed:
            raise InvalidFrame("frame decoder is closed after an earlier error")
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 4:
                (n,) = _LENGTH.unpack_from(buf, pos)
                if n > self.max_frame:
                    raise FrameTooLarge(n, self.max_frame)
                if n == 0:
                    raise InvalidFrame("zero-length frame")
                if end - pos - 4 < n:
                    break
                frames.append(bytes(buf[pos + 4 : pos + 4 + n]))
                pos += 4 + n
        except (FrameTooLarge, InvalidFrame):
            self._closed = True
            self._buffer = bytearray()
            raise
        if pos:
            del buf[:pos]
        return frames

    def receive_eof(self) -> None:
        """Signal end of stream; raises :class:`InvalidFrame` if a frame was cut short."""
        if self._buffer and not self._closed:
            self._closed = True
            n = len(self._buffer)
            self._buffer = bytearray()
            raise InvalidFrame(f"stream ended inside a frame ({n} bytes pending)")
        self._closed = True
