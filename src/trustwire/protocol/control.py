"""Bodies of control frames between an agent and the coordinator (sans-I/O).

These frames are protected by the TLS hop, not end to end; they carry no message content.

* ``STATUS`` (coordinator -> agent): ``k * (16-byte envelope id || u8 status)``, the fate of
  frames the agent submitted (:class:`Status`).
* ``ERROR`` (coordinator -> agent): ``u16 code || utf-8 reason``; the envelope's
  ``message_id`` names the offending frame (zeros when none). Every security refusal is
  the one opaque code :data:`ErrorCode.REJECTED`; the precise reason goes to the
  security-event stream only.
* ``ACK`` (agent -> coordinator): ``k * 16-byte envelope id`` — frames the agent has taken
  responsibility for; the coordinator removes them from its durable queue.
* ``LOOKUP`` (agent -> coordinator): utf-8 agent name or DID. ``LOOKUP_RESULT``: JSON
  :class:`PeerInfo` (or ``{"found": false}``).
* ``READY`` (coordinator -> agent, first frame): JSON ``{"did", "name", "time_ms",
  "max_frame"}``. ``PRESENCE`` (coordinator -> agent): JSON ``{"did", "online"}``, plus
  ``"rotated": true`` when the agent's agreement key changed (drop its cached key).
* ``PING``/``PONG``: empty bodies.
* ``API_REQUEST`` (agent -> coordinator): JSON ``{"method", "path", "query", "body"}``, one
  call of the coordinator's API (docs/SESSIONS.md, docs/MEMORY.md) on behalf of the
  connection's authenticated agent. ``API_RESPONSE`` (coordinator -> agent, same envelope
  id): JSON ``{"status", "body"}`` exactly as the HTTPS API would answer.
* ``SESSION_EVENT`` (coordinator -> agent): JSON ``{"event": "session.created" | ...,
  "session": {...}}`` for each lifecycle change of a session the agent takes part in.
* ``RENEW`` (agent -> coordinator): ``32-byte new TLS public key (Ed25519) || 64-byte
  signature`` by the agent's identity key over :func:`renew_statement`. ``RENEWED``
  (coordinator -> agent): the new certificate, PEM. The TLS private key never leaves the
  agent.

Every decoder bounds its input and raises :class:`~trustwire.errors.InvalidEnvelope`.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import asdict, dataclass
from typing import Any

from trustwire.errors import InvalidEnvelope

__all__ = [
    "MAX_API_BODY",
    "MAX_BATCH",
    "ErrorCode",
    "PeerInfo",
    "Status",
    "decode_ack",
    "decode_api_frame",
    "decode_error",
    "decode_json",
    "decode_status",
    "encode_ack",
    "encode_api_frame",
    "encode_error",
    "encode_json",
    "encode_status",
    "renew_statement",
]

MAX_BATCH = 8192
_MAX_JSON = 16 * 1024
#: Largest API_REQUEST / API_RESPONSE / SESSION_EVENT body (a frame is at most 256 KiB).
MAX_API_BODY = 255 * 1024


class Status(enum.IntEnum):
    """What happened to a submitted frame."""

    FORWARDED = 1  # written to the recipient's live connection (and durably queued)
    QUEUED = 2  # recipient offline: stored durably for later delivery
    DUPLICATE = 3  # already accepted earlier (same envelope id); nothing new happened


class ErrorCode(enum.IntEnum):
    """Wire error codes."""

    REJECTED = 1  # opaque security refusal (policy, replay, identity, revoked, unknown peer)
    PROTOCOL = 2  # malformed input; the connection is closed
    RATE_LIMITED = 3  # slow down
    SHUTTING_DOWN = 4  # coordinator is stopping; reconnect later
    IDLE = 5  # idle timeout
    SESSION_EXPIRED = 6  # the message names a session that has expired
    SESSION_ENDED = 7  # the message names a session that was ended
    SESSION_UNKNOWN = 8  # the message names no session between these two agents


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A registry entry as served to agents (public data only)."""

    did: str
    name: str
    roles: list[str]
    agreement_key: str  # hex
    agreement_statement: str  # hex
    agreement_issued_at: int
    online: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_status(items: list[tuple[bytes, Status]]) -> bytes:
    return b"".join(mid + bytes((int(st),)) for mid, st in items)


def decode_status(body: bytes) -> list[tuple[bytes, Status]]:
    if len(body) % 17 or len(body) // 17 > MAX_BATCH:
        raise InvalidEnvelope("bad STATUS body length")
    out = []
    for i in range(0, len(body), 17):
        try:
            status = Status(body[i + 16])
        except ValueError as exc:
            raise InvalidEnvelope("unknown status code") from exc
        out.append((body[i : i + 16], status))
    return out


def encode_ack(ids: list[bytes]) -> bytes:
    return b"".join(ids)


def decode_ack(body: bytes) -> list[bytes]:
    if not body or len(body) % 16 or len(body) // 16 > MAX_BATCH:
        raise InvalidEnvelope("bad ACK body length")
    return [body[i : i + 16] for i in range(0, len(body), 16)]


def encode_error(code: ErrorCode, reason: str) -> bytes:
    return struct.pack(">H", int(code)) + reason.encode("utf-8")[:512]


def decode_error(body: bytes) -> tuple[int, str]:
    if len(body) < 2 or len(body) > 2 + 512:
        raise InvalidEnvelope("bad ERROR body length")
    (code,) = struct.unpack_from(">H", body)
    return code, body[2:].decode("utf-8", errors="replace")


def renew_statement(did: str, tls_public_key: bytes, timestamp_ms: int) -> bytes:
    """What an agent signs to ask for a certificate on a new TLS key."""
    raw = did.encode("ascii")
    return (
        b"trustwire/cert-renew/v1"
        + struct.pack(">H", len(raw))
        + raw
        + tls_public_key
        + struct.pack(">Q", timestamp_ms)
    )


def encode_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode_json(body: bytes) -> dict[str, Any]:
    if len(body) > _MAX_JSON:
        raise InvalidEnvelope("control body too large")
    try:
        value = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge integers
        raise InvalidEnvelope("control body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidEnvelope("control body must be a JSON object")
    return value


def encode_api_frame(value: dict[str, Any]) -> bytes:
    """JSON for an API or session-event frame (``ValueError`` if it would not fit)."""
    body = json.dumps(value, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_API_BODY:
        raise ValueError(f"API frame body of {len(body)} bytes exceeds {MAX_API_BODY}")
    return body


def decode_api_frame(body: bytes) -> dict[str, Any]:
    """Parse an API or session-event frame body: a JSON object of bounded size."""
    if len(body) > MAX_API_BODY:
        raise InvalidEnvelope("API frame body too large")
    try:
        value = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge integers
        raise InvalidEnvelope("API frame body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidEnvelope("API frame body must be a JSON object")
    return value
