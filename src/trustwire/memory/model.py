"""Shared-memory records as the coordinator stores them, and their JSON wire shapes.

The coordinator never sees a data key or a plaintext value: a :class:`Memory` holds
metadata (owner, type, times, key epoch, quotas, grants, usage), a :class:`WrappedKey`
holds the data key of one epoch encrypted (HPKE) to one agent, and a
:class:`StoredSegment` holds one AES-256-GCM ciphertext with its writer's signed hash.

Invariants:

- Every record validates its fields when built (types, sizes, ranges), so a record read
  back from a damaged store, or parsed from a request, is well formed or an error.
- Every ``parse_*`` function takes *untrusted* JSON (already decoded into Python values)
  and raises ``ValueError`` with a message naming the offending field, never echoing a
  value that could be a key or ciphertext. Sizes are capped *before* decoding: a base64
  string is length-checked before it is decoded, lists are length-checked before their
  items are parsed.
- Times are float epoch seconds inside, epoch milliseconds (ints) on the wire. A memory
  or grant with ``expires_at = t`` is expired from ``now >= t`` on, exactly.
- Access levels are ordered ``read < write < admin``; the owner holds an implicit admin
  grant and never appears among the grants.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, cast

from trustwire.crypto.hashes import constant_time_equal, sha256
from trustwire.errors import InvalidDid, MemoryQuotaExceeded, VersionConflict
from trustwire.identity.did import ed25519_from_did

__all__ = [
    "CIPHERTEXT_OVERHEAD",
    "DEFAULT_TYPE",
    "ENC_SIZE",
    "HASH_SIZE",
    "LEVELS",
    "MAX_CIPHERTEXT_SIZE",
    "MAX_KEY_LENGTH",
    "MAX_TYPE_LENGTH",
    "MAX_VALUE_SIZE",
    "MAX_WRAPPED_KEYS",
    "NONCE_SIZE",
    "SEGMENT_HASH_CONTEXT",
    "SEGMENT_SIGNATURE_CONTEXT",
    "SIGNATURE_SIZE",
    "WRAPPED_KEY_CT_SIZE",
    "AccessLevel",
    "CreateRequest",
    "Grant",
    "GrantRequest",
    "Memory",
    "MemoryLimits",
    "PutRequest",
    "QuotaExceeded",
    "Quotas",
    "RevokeRequest",
    "Segment",
    "SegmentInfo",
    "StaleWrite",
    "StoredSegment",
    "Usage",
    "WrappedKey",
    "check_grant_keys",
    "check_memory_id",
    "check_rewrap",
    "check_segment_key",
    "from_ms",
    "key_fingerprint",
    "level_at_least",
    "parse_create_request",
    "parse_grant_request",
    "parse_put_request",
    "parse_revoke_request",
    "parse_wrapped_key",
    "segment_hash",
    "signature_input",
    "to_ms",
]

AccessLevel: TypeAlias = Literal["read", "write", "admin"]
"""A grant's access level; ``read < write < admin``."""

LEVELS: Final[Mapping[str, int]] = {"read": 1, "write": 2, "admin": 3}
"""The rank of each access level (a higher rank includes every lower one)."""

DEFAULT_TYPE: Final = "kv"
MAX_TYPE_LENGTH: Final = 64
MAX_KEY_LENGTH: Final = 256
ENC_SIZE: Final = 32
"""Length of an HPKE encapsulated key (DHKEM(X25519))."""
WRAPPED_KEY_CT_SIZE: Final = 32 + 64 + 64 + 72 + 72 + 16
"""Length of a wrapped data key's ciphertext: the fixed-size plaintext (32-byte data key,
64-byte wrapper DID field, 64-byte wrapper signature, two 72-byte admin certificates)
sealed with AES-256-GCM (16-byte tag). Only the length is checked here: the coordinator
cannot open it."""
NONCE_SIZE: Final = 12
HASH_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
MAX_VALUE_SIZE: Final = 128 * 1024
"""Largest plaintext value a segment may hold (so a request fits one 256 KiB frame)."""
CIPHERTEXT_OVERHEAD: Final = 16
"""The AES-GCM tag: a ciphertext is its plaintext's length plus this."""
MAX_CIPHERTEXT_SIZE: Final = MAX_VALUE_SIZE + CIPHERTEXT_OVERHEAD
MAX_WRAPPED_KEYS: Final = 4096
"""Most wrapped keys one request may carry (one per epoch, or one per recipient)."""

SEGMENT_HASH_CONTEXT: Final = b"trustwire/memory-segment/v1"
SEGMENT_SIGNATURE_CONTEXT: Final = b"trustwire/memory-segment-sig/v1"
_KEY_NAME_CONTEXT: Final = b"trustwire/memory-key-name/v1"

_MAX_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_MAX_INT: Final = 2**63 - 1
_U16: Final = struct.Struct(">H")
_U64: Final = struct.Struct(">Q")


# --------------------------------------------------------------------------- errors


class StaleWrite(VersionConflict):
    """A compare-and-set failed: ``current_version`` is the segment's version now (0 when
    absent); ``current_epoch`` the memory's key epoch when the epoch was the problem."""

    def __init__(
        self, message: str, *, current_version: int | None = None, current_epoch: int | None = None
    ) -> None:
        super().__init__(message)
        self.current_version = current_version
        self.current_epoch = current_epoch


class QuotaExceeded(MemoryQuotaExceeded):
    """A write or create would exceed ``quota`` (e.g. ``"memory.maxBytes"``): ``limit`` is
    the quota, ``used`` the amount in use, ``requested`` what the operation would add."""

    def __init__(self, quota: str, *, limit: int, used: int, requested: int) -> None:
        super().__init__(
            f"quota {quota} exceeded: {used} in use + {requested} requested > limit {limit}"
        )
        self.quota = quota
        self.limit = limit
        self.used = used
        self.requested = requested
        self.details: dict[str, str | int] = {
            "quota": quota,
            "limit": limit,
            "used": used,
            "requested": requested,
        }


# --------------------------------------------------------------------------- checks


def _int(what: str, value: object, *, minimum: int = 0, maximum: int = _MAX_INT) -> int:
    # bool is an int subclass; True is never a count or a version.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer")
    if not minimum <= value <= maximum:
        raise ValueError(f"{what} must be between {minimum} and {maximum}")
    return value


def _time(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds")
    return float(value)


def _optional_time(what: str, value: object) -> float | None:
    return None if value is None else _time(what, value)


def _bytes(what: str, value: object, *, size: int | None = None, maximum: int = 0) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(f"{what} must be bytes")
    if size is not None and len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, not {len(value)}")
    if maximum and len(value) > maximum:
        raise ValueError(f"{what} must be at most {maximum} bytes, not {len(value)}")
    return value


def _did(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a DID string")
    try:
        ed25519_from_did(value)
    except InvalidDid as exc:
        raise ValueError(f"{what} is not a valid did:key ({exc})") from None
    return value


def _text(what: str, value: object, maximum: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    if not 1 <= len(value) <= maximum:
        raise ValueError(f"{what} must be 1 to {maximum} characters long")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in value):
        raise ValueError(f"{what} must not contain control characters")
    if any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        raise ValueError(f"{what} must be valid Unicode (no lone surrogates)")
    return value


def check_segment_key(value: object) -> str:
    """Return ``value`` if it is a valid segment key (1..256 characters, no control
    characters), else ``ValueError`` (the message never echoes the key)."""
    return _text("segment key", value, MAX_KEY_LENGTH)


_MEMORY_ID_V1 = re.compile(r"m1-[0-9a-f]{64}")


def check_memory_id(value: object) -> str:
    """Return ``value`` if it is a memory id: ``m1-`` and 64 lower-case hex digits (the
    owner-binding form clients make), or a canonical (lower-case, hyphenated) UUID.

    The coordinator checks only the shape; whether the id names the memory's owner is
    for clients to check (they cannot trust the coordinator to)."""
    if isinstance(value, str) and _MEMORY_ID_V1.fullmatch(value):
        return value
    if not isinstance(value, str) or len(value) != 36:
        raise ValueError("memory id must be m1- and 64 hex digits, or a UUID")
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise ValueError("memory id must be a UUID") from None
    if str(parsed) != value:
        raise ValueError("memory id must be a UUID in canonical lower-case form")
    return value


def _level(what: str, value: object) -> AccessLevel:
    if not isinstance(value, str) or value not in LEVELS:
        raise ValueError(f"{what} must be one of read, write, admin")
    return cast(AccessLevel, value)


def level_at_least(level: AccessLevel, required: AccessLevel) -> bool:
    """Whether ``level`` includes ``required`` (``read < write < admin``)."""
    return LEVELS[level] >= LEVELS[required]


def to_ms(seconds: float) -> int:
    """Epoch seconds as the wire's epoch milliseconds."""
    return round(seconds * 1000)


def from_ms(what: str, value: object) -> float:
    """Wire epoch milliseconds (a positive int) as epoch seconds; ``ValueError`` otherwise."""
    return _int(what, value, minimum=1, maximum=_MAX_MS) / 1000


def key_fingerprint(memory_id: str, key: str) -> str:
    """A short, memory-scoped SHA-256 fingerprint of a segment key for events and logs:
    the same key in the same memory always gives the same fingerprint, the name itself
    never appears."""
    digest = sha256(_KEY_NAME_CONTEXT + _lp(memory_id.encode()) + key.encode("utf-8"))
    return digest[:8].hex()


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per-memory limits: total ciphertext bytes and number of segments."""

    max_bytes: int
    max_segments: int

    def __post_init__(self) -> None:
        _int("quotas.maxBytes", self.max_bytes, minimum=1)
        _int("quotas.maxSegments", self.max_segments, minimum=1)

    def to_json(self) -> dict[str, int]:
        return {"maxBytes": self.max_bytes, "maxSegments": self.max_segments}


@dataclass(frozen=True, slots=True)
class Usage:
    """What a memory (or an agent) currently uses: ciphertext bytes and segments."""

    bytes: int = 0
    segments: int = 0

    def __post_init__(self) -> None:
        _int("usage.bytes", self.bytes)
        _int("usage.segments", self.segments)

    def to_json(self) -> dict[str, int]:
        return {"bytes": self.bytes, "segments": self.segments}


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """The coordinator's shared-memory limits.

    ``max_bytes``/``max_segments`` are the default (and largest allowed) per-memory
    quotas; ``agent_max_bytes``/``agent_max_segments`` cap what one agent has written,
    summed over every memory; ``max_memories_owned`` caps memories per owner;
    ``max_grants`` caps grants per memory.
    """

    max_bytes: int = 16 * 1024 * 1024
    max_segments: int = 10_000
    agent_max_bytes: int = 64 * 1024 * 1024
    agent_max_segments: int = 50_000
    max_memories_owned: int = 100
    max_grants: int = 256

    def __post_init__(self) -> None:
        for name in (
            "max_bytes",
            "max_segments",
            "agent_max_bytes",
            "agent_max_segments",
            "max_memories_owned",
            "max_grants",
        ):
            _int(f"MemoryLimits.{name}", getattr(self, name), minimum=1)

    @property
    def default_quotas(self) -> Quotas:
        """The quotas of a memory created without explicit ones."""
        return Quotas(self.max_bytes, self.max_segments)


@dataclass(frozen=True, slots=True)
class Grant:
    """``agent`` may access a memory at ``level`` until ``expires_at`` (None: no expiry)."""

    agent: str
    level: AccessLevel
    expires_at: float | None
    granted_by: str

    def __post_init__(self) -> None:
        _did("grant agent", self.agent)
        _level("grant level", self.level)
        _optional_time("grant expiresAt", self.expires_at)
        _did("grant grantedBy", self.granted_by)

    def active(self, now: float) -> bool:
        """Whether the grant still works at ``now`` (it stops at ``expires_at`` exactly)."""
        return self.expires_at is None or now < self.expires_at

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "level": self.level,
            "expiresAt": None if self.expires_at is None else to_ms(self.expires_at),
            "grantedBy": self.granted_by,
        }


@dataclass(frozen=True, slots=True)
class Memory:
    """One shared memory's metadata (never its keys or contents)."""

    id: str
    owner: str
    type: str
    created_at: float
    expires_at: float | None
    epoch: int
    quotas: Quotas
    grants: tuple[Grant, ...] = ()
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        check_memory_id(self.id)
        _did("memory owner", self.owner)
        _text("memory type", self.type, MAX_TYPE_LENGTH)
        _time("memory createdAt", self.created_at)
        _optional_time("memory expiresAt", self.expires_at)
        _int("memory epoch", self.epoch)
        if not isinstance(self.quotas, Quotas):
            raise ValueError("memory quotas must be Quotas")
        if not isinstance(self.usage, Usage):
            raise ValueError("memory usage must be Usage")
        grants = tuple(self.grants)
        agents = [grant.agent for grant in grants if isinstance(grant, Grant)]
        if len(agents) != len(grants):
            raise ValueError("memory grants must be Grant records")
        if len(set(agents)) != len(agents):
            raise ValueError("memory grants name an agent twice")
        if self.owner in agents:
            raise ValueError("the owner of a memory cannot also hold a grant on it")
        object.__setattr__(self, "grants", grants)

    def expired(self, now: float) -> bool:
        """Whether the memory has expired at ``now`` (from ``expires_at`` on, exactly)."""
        return self.expires_at is not None and now >= self.expires_at

    def grant_of(self, agent: str) -> Grant | None:
        """``agent``'s grant (active or not), or None."""
        for grant in self.grants:
            if grant.agent == agent:
                return grant
        return None

    def recipients(self, now: float, *, excluding: str | None = None) -> frozenset[str]:
        """Who must hold the data key: the owner and every grantee still active at
        ``now`` (except ``excluding``)."""
        return frozenset(
            [self.owner] + [g.agent for g in self.grants if g.active(now) and g.agent != excluding]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "type": self.type,
            "createdAt": to_ms(self.created_at),
            "expiresAt": None if self.expires_at is None else to_ms(self.expires_at),
            "epoch": self.epoch,
            "quotas": self.quotas.to_json(),
            "grants": [grant.to_json() for grant in self.grants],
            "usage": self.usage.to_json(),
        }


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """The data key of ``epoch`` HPKE-sealed to ``agent``'s X25519 agreement key."""

    agent: str
    epoch: int
    enc: bytes = field(repr=False)
    ct: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _did("wrapped key agent", self.agent)
        _int("wrapped key epoch", self.epoch)
        _bytes("wrapped key enc", self.enc, size=ENC_SIZE)
        _bytes("wrapped key ct", self.ct, size=WRAPPED_KEY_CT_SIZE)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "epoch": self.epoch,
            "enc": _b64(self.enc),
            "ct": _b64(self.ct),
        }


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment as its writer sealed and signed it (see :func:`segment_hash`)."""

    key: str
    version: int
    epoch: int
    writer: str
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    hash: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_segment_key(self.key)
        _int("segment version", self.version, minimum=1)
        _int("segment epoch", self.epoch)
        _did("segment writer", self.writer)
        _bytes("segment nonce", self.nonce, size=NONCE_SIZE)
        _bytes("segment ciphertext", self.ciphertext, maximum=MAX_CIPHERTEXT_SIZE)
        if len(self.ciphertext) < CIPHERTEXT_OVERHEAD:
            raise ValueError(f"segment ciphertext must be at least {CIPHERTEXT_OVERHEAD} bytes")
        _bytes("segment hash", self.hash, size=HASH_SIZE)
        _bytes("segment signature", self.signature, size=SIGNATURE_SIZE)

    @property
    def size(self) -> int:
        """The ciphertext length: what the segment counts against byte quotas."""
        return len(self.ciphertext)

    def hash_matches(self, memory_id: str) -> bool:
        """Whether :attr:`hash` is the hash of this segment's fields in ``memory_id``."""
        expected = segment_hash(
            memory_id, self.key, self.version, self.epoch, self.writer, self.nonce, self.ciphertext
        )
        return constant_time_equal(expected, self.hash)


@dataclass(frozen=True, slots=True)
class StoredSegment(Segment):
    """A segment as stored: the signed fields plus the server's ``written_at``."""

    written_at: float = 0.0

    def __post_init__(self) -> None:
        Segment.__post_init__(self)
        _time("segment writtenAt", self.written_at)

    @classmethod
    def from_segment(cls, segment: Segment, *, written_at: float) -> StoredSegment:
        """``segment`` stamped with the time the coordinator accepted it."""
        return cls(
            key=segment.key,
            version=segment.version,
            epoch=segment.epoch,
            writer=segment.writer,
            nonce=segment.nonce,
            ciphertext=segment.ciphertext,
            hash=segment.hash,
            signature=segment.signature,
            written_at=written_at,
        )

    @property
    def info(self) -> SegmentInfo:
        """The segment's metadata, without its ciphertext."""
        return SegmentInfo(
            self.key, self.version, self.epoch, self.writer, self.size, self.written_at
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version": self.version,
            "epoch": self.epoch,
            "writer": self.writer,
            "nonce": _b64(self.nonce),
            "ciphertext": _b64(self.ciphertext),
            "hash": _b64(self.hash),
            "signature": _b64(self.signature),
            "writtenAt": to_ms(self.written_at),
            "size": self.size,
        }


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment's metadata as listings show it."""

    key: str
    version: int
    epoch: int
    writer: str
    size: int
    written_at: float

    def __post_init__(self) -> None:
        check_segment_key(self.key)
        _int("segment version", self.version, minimum=1)
        _int("segment epoch", self.epoch)
        _did("segment writer", self.writer)
        _int("segment size", self.size, minimum=CIPHERTEXT_OVERHEAD, maximum=MAX_CIPHERTEXT_SIZE)
        _time("segment writtenAt", self.written_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version": self.version,
            "epoch": self.epoch,
            "writer": self.writer,
            "size": self.size,
            "writtenAt": to_ms(self.written_at),
        }


# --------------------------------------------------------------------------- hashing


def _lp(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("length-prefixed field longer than 65535 bytes")
    return _U16.pack(len(data)) + data


def segment_hash(
    memory_id: str,
    key: str,
    version: int,
    epoch: int,
    writer: str,
    nonce: bytes,
    ciphertext: bytes,
) -> bytes:
    """SHA-256 over a segment's fields, as its writer signs it::

    b"trustwire/memory-segment/v1" || lp(memory_id) || lp(key utf-8) || u64 version ||
    u64 epoch || lp(writer) || nonce || ciphertext      (lp: u16 big-endian length)
    """
    return sha256(
        b"".join(
            (
                SEGMENT_HASH_CONTEXT,
                _lp(memory_id.encode()),
                _lp(key.encode("utf-8")),
                _U64.pack(version),
                _U64.pack(epoch),
                _lp(writer.encode()),
                nonce,
                ciphertext,
            )
        )
    )


def signature_input(hash_: bytes) -> bytes:
    """What a segment's writer signs with its Ed25519 identity key."""
    return SEGMENT_SIGNATURE_CONTEXT + hash_


# --------------------------------------------------------------------------- key sets


def check_grant_keys(memory: Memory, agent: str, keys: Sequence[WrappedKey]) -> None:
    """``ValueError`` unless ``keys`` are exactly one wrapped key for ``agent`` per epoch
    ``0..memory.epoch``."""
    epochs: set[int] = set()
    for key in keys:
        if key.agent != agent:
            raise ValueError("wrappedKeys must all be for the agent being granted")
        if key.epoch in epochs:
            raise ValueError(f"wrappedKeys holds epoch {key.epoch} twice")
        epochs.add(key.epoch)
    expected = set(range(memory.epoch + 1))
    if epochs != expected:
        raise ValueError(
            f"wrappedKeys must hold exactly one key for each epoch 0..{memory.epoch} "
            f"(missing {len(expected - epochs)}, unexpected {len(epochs - expected)})"
        )


def check_rewrap(
    memory: Memory, revoked: str, new_epoch: int, keys: Sequence[WrappedKey], *, now: float
) -> None:
    """``ValueError`` (or :class:`StaleWrite` for a wrong epoch) unless ``keys`` rotate
    ``memory`` correctly after revoking ``revoked``: ``new_epoch`` is the current epoch
    + 1 and there is exactly one key at that epoch for the owner and for every grantee
    still active at ``now``, and none for anyone else."""
    if new_epoch != memory.epoch + 1:
        raise StaleWrite(
            f"the new epoch must be {memory.epoch + 1} (the current epoch + 1)",
            current_epoch=memory.epoch,
        )
    agents: set[str] = set()
    for key in keys:
        if key.epoch != new_epoch:
            raise ValueError(f"every wrapped key must be for the new epoch {new_epoch}")
        if key.agent in agents:
            raise ValueError("wrappedKeys holds two keys for one agent")
        agents.add(key.agent)
    if revoked in agents:
        raise ValueError("wrappedKeys must not hold a key for the revoked agent")
    expected = memory.recipients(now, excluding=revoked)
    if agents != expected:
        raise ValueError(
            "wrappedKeys must hold one key for the owner and for every remaining active "
            f"grantee ({len(expected)} agents; missing {len(expected - agents)}, "
            f"unexpected {len(agents - expected)})"
        )


# --------------------------------------------------------------------------- parsing


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(what: str, value: object, *, size: int | None = None, maximum: int = 0) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a base64 string")
    limit = size if size is not None else maximum
    if len(value) > 4 * ((limit + 2) // 3):
        raise ValueError(f"{what} is longer than {limit} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
    return _bytes(what, raw, size=size, maximum=maximum)


def _object(what: str, value: object, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object")
    unknown = [name for name in value if name not in allowed]
    if unknown:
        shown = ", ".join(sorted(str(name)[:40] for name in unknown)[:5])
        raise ValueError(f"{what} has unknown field(s): {shown}")
    return cast(Mapping[str, Any], value)


def _required(what: str, data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise ValueError(f"{what}.{name} is required")
    return data[name]


def _list(what: str, value: object, maximum: int) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a JSON array")
    if len(value) > maximum:
        raise ValueError(f"{what} holds more than {maximum} items")
    return value


_WRAPPED_KEY_FIELDS = frozenset({"agent", "epoch", "enc", "ct"})


def parse_wrapped_key(
    value: object, *, where: str = "wrappedKey", agent: str | None = None
) -> WrappedKey:
    """Parse a WrappedKey JSON object. ``agent`` supplies the agent when the object may
    omit it (the creator's own key on create); if both are present they must agree."""
    data = _object(where, value, _WRAPPED_KEY_FIELDS)
    named = data.get("agent", agent)
    if named is None:
        raise ValueError(f"{where}.agent is required")
    did = _did(f"{where}.agent", named)
    if agent is not None and did != agent:
        raise ValueError(f"{where}.agent must be the caller")
    return WrappedKey(
        agent=did,
        epoch=_int(f"{where}.epoch", _required(where, data, "epoch")),
        enc=_unb64(f"{where}.enc", _required(where, data, "enc"), size=ENC_SIZE),
        ct=_unb64(f"{where}.ct", _required(where, data, "ct"), size=WRAPPED_KEY_CT_SIZE),
    )


def _wrapped_keys(where: str, value: object) -> tuple[WrappedKey, ...]:
    items = _list(where, value, MAX_WRAPPED_KEYS)
    return tuple(parse_wrapped_key(item, where=f"{where}[{i}]") for i, item in enumerate(items))


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A parsed ``POST /api/memory`` body. ``quotas`` fields are None when not given;
    ``id`` is the client-chosen memory id (the creator's wrapped key binds it), or None
    for the coordinator to choose one."""

    id: str | None
    type: str
    expires_at: float | None
    max_bytes: int | None
    max_segments: int | None
    wrapped_key: WrappedKey


_CREATE_FIELDS = frozenset({"id", "type", "expiresAt", "quotas", "wrappedKey"})
_QUOTA_FIELDS = frozenset({"maxBytes", "maxSegments"})


def parse_create_request(body: object, *, caller: str) -> CreateRequest:
    """Parse a create body; the wrapped key must be the caller's, at epoch 0."""
    data = _object("request body", body, _CREATE_FIELDS)
    memory_id = None if data.get("id") is None else check_memory_id(data["id"])
    type_ = _text("type", data.get("type", DEFAULT_TYPE), MAX_TYPE_LENGTH)
    expires = data.get("expiresAt")
    expires_at = None if expires is None else from_ms("expiresAt", expires)
    max_bytes = max_segments = None
    if data.get("quotas") is not None:
        quotas = _object("quotas", data["quotas"], _QUOTA_FIELDS)
        if quotas.get("maxBytes") is not None:
            max_bytes = _int("quotas.maxBytes", quotas["maxBytes"], minimum=1)
        if quotas.get("maxSegments") is not None:
            max_segments = _int("quotas.maxSegments", quotas["maxSegments"], minimum=1)
    key = parse_wrapped_key(
        _required("request body", data, "wrappedKey"), where="wrappedKey", agent=caller
    )
    if key.epoch != 0:
        raise ValueError("wrappedKey.epoch must be 0 for a new memory")
    return CreateRequest(memory_id, type_, expires_at, max_bytes, max_segments, key)


_SEGMENT_FIELDS = frozenset(
    {
        "key",
        "version",
        "epoch",
        "writer",
        "nonce",
        "ciphertext",
        "hash",
        "signature",
        # Set by the server; a client echoing a segment it read may send them back.
        "writtenAt",
        "size",
    }
)


def _segment(value: object) -> Segment:
    data = _object("segment", value, _SEGMENT_FIELDS)
    return Segment(
        key=check_segment_key(_required("segment", data, "key")),
        version=_int("segment.version", _required("segment", data, "version"), minimum=1),
        epoch=_int("segment.epoch", _required("segment", data, "epoch")),
        writer=_did("segment.writer", _required("segment", data, "writer")),
        nonce=_unb64("segment.nonce", _required("segment", data, "nonce"), size=NONCE_SIZE),
        ciphertext=_unb64(
            "segment.ciphertext",
            _required("segment", data, "ciphertext"),
            maximum=MAX_CIPHERTEXT_SIZE,
        ),
        hash=_unb64("segment.hash", _required("segment", data, "hash"), size=HASH_SIZE),
        signature=_unb64(
            "segment.signature", _required("segment", data, "signature"), size=SIGNATURE_SIZE
        ),
    )


@dataclass(frozen=True, slots=True)
class PutRequest:
    """A parsed ``PUT .../segments/{key}`` body."""

    expected_version: int
    segment: Segment


def parse_put_request(body: object) -> PutRequest:
    """Parse a segment write: ``{"expectedVersion": int >= 0, "segment": Segment}``."""
    data = _object("request body", body, frozenset({"expectedVersion", "segment"}))
    expected = _int("expectedVersion", _required("request body", data, "expectedVersion"))
    return PutRequest(expected, _segment(_required("request body", data, "segment")))


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """A parsed ``POST .../grants`` body."""

    agent: str
    level: AccessLevel
    expires_at: float | None
    wrapped_keys: tuple[WrappedKey, ...]


def parse_grant_request(body: object) -> GrantRequest:
    """Parse ``{"agent", "level", "expiresAt"?, "wrappedKeys": [...]}``."""
    data = _object("request body", body, frozenset({"agent", "level", "expiresAt", "wrappedKeys"}))
    expires = data.get("expiresAt")
    return GrantRequest(
        agent=_did("agent", _required("request body", data, "agent")),
        level=_level("level", _required("request body", data, "level")),
        expires_at=None if expires is None else from_ms("expiresAt", expires),
        wrapped_keys=_wrapped_keys("wrappedKeys", _required("request body", data, "wrappedKeys")),
    )


@dataclass(frozen=True, slots=True)
class RevokeRequest:
    """A parsed ``DELETE .../grants/{agent}`` body."""

    epoch: int
    wrapped_keys: tuple[WrappedKey, ...]


def parse_revoke_request(body: object) -> RevokeRequest:
    """Parse ``{"epoch": current + 1, "wrappedKeys": [...]}``."""
    data = _object("request body", body, frozenset({"epoch", "wrappedKeys"}))
    return RevokeRequest(
        epoch=_int("epoch", _required("request body", data, "epoch"), minimum=1),
        wrapped_keys=_wrapped_keys("wrappedKeys", _required("request body", data, "wrappedKeys")),
    )
