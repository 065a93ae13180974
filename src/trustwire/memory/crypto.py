"""The client-side cryptography of shared memory: data keys, wrapped keys, sealed segments.

A memory's contents are encrypted under a 32-byte *data key* that only its authorized
agents hold. Each key *epoch* has its own data key; revocation starts a new epoch. The
coordinator stores wrapped keys and sealed segments and can open neither.

Wrapped key (one per agent per epoch), JSON ``{"agent", "epoch", "enc", "ct"}``::

    HPKE base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM,
    to the agent's registry X25519 agreement key, plaintext = the data key,
    info = b"trustwire/memory-key/v1" || memory_id || u64 epoch || agent DID

Segment, JSON ``{"key", "version", "epoch", "writer", "nonce", "ciphertext", "hash",
"signature"}`` (the coordinator adds ``writtenAt`` and ``size``)::

    AD         = b"trustwire/memory-segment/v1" || lp(memory_id) || lp(key) || u64 version
                 || u64 epoch || lp(writer) || nonce                  (lp: u16 length prefix)
    ciphertext = AES-256-GCM(data key of epoch, nonce, value, AD)
    hash       = SHA-256(AD || ciphertext)
    signature  = Ed25519(writer's identity key, b"trustwire/memory-segment-sig/v1" || hash)

Strings are UTF-8, integers big-endian; bytes travel as standard base64.

Invariants:

- :func:`open_segment` checks, in this order and before using any of it: the shape and
  size of every field, the hash (constant-time), the writer's signature (the writer's DID
  *is* its Ed25519 key), and only then decrypts. Every failure raises
  :class:`~trustwire.errors.SegmentRejected` with a short reason; no reason ever quotes the
  value, the key material or the segment's bytes.
- The AD binds memory id, segment key, version, epoch, writer and nonce, so a ciphertext
  cannot be moved to another memory, key, version or epoch, nor claimed by another writer.
- Values are at most :data:`MAX_VALUE_SIZE` bytes so a write fits one 256 KiB frame.
- Randomness (data keys, nonces) comes from :func:`trustwire.crypto.random.random_bytes`.
"""

from __future__ import annotations

import base64
import binascii
import struct
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trustwire.crypto import hpke
from trustwire.crypto.aead import NONCE_SIZE, TAG_SIZE, AesGcm
from trustwire.crypto.dh import KeyPair
from trustwire.crypto.hashes import constant_time_equal, sha256
from trustwire.crypto.random import random_bytes
from trustwire.crypto.signing import SIGNATURE_SIZE
from trustwire.errors import DecryptionFailed, InvalidDid, InvalidSignature, SegmentRejected
from trustwire.identity.did import MAX_DID_LENGTH, Did, is_did
from trustwire.identity.keys import AgentIdentity
from trustwire.protocol.channel import verify_key_of

__all__ = [
    "DATA_KEY_SIZE",
    "HASH_SIZE",
    "KEY_LABEL",
    "MAX_KEY_LENGTH",
    "MAX_VALUE_SIZE",
    "SEGMENT_LABEL",
    "SIGNATURE_LABEL",
    "OpenedSegment",
    "WrappedKey",
    "b64decode",
    "b64encode",
    "check_segment_key",
    "generate_data_key",
    "key_info",
    "open_segment",
    "seal_segment",
    "segment_ad",
    "unwrap_key",
    "wrap_key",
]

KEY_LABEL = b"trustwire/memory-key/v1"
SEGMENT_LABEL = b"trustwire/memory-segment/v1"
SIGNATURE_LABEL = b"trustwire/memory-segment-sig/v1"
DATA_KEY_SIZE = 32
HASH_SIZE = 32
MAX_VALUE_SIZE = 128 * 1024
MAX_KEY_LENGTH = 256
_U64_MAX = 2**64 - 1
_MAX_CIPHERTEXT_SIZE = MAX_VALUE_SIZE + TAG_SIZE
# The wrapped data key: 32-byte key + 16-byte tag.
#: The HPKE plaintext of a wrapped key: the data key, then the wrapper's Ed25519 signature
#: over :func:`key_statement` (inside the encryption, so the coordinator sees neither).
_WRAPPED_CT_SIZE = DATA_KEY_SIZE + SIGNATURE_SIZE + hpke.TAG_SIZE
#: What the wrapper signs: the data key's binding to its memory, epoch and recipient.
KEY_SIGNATURE_LABEL = b"trustwire/memory-key-sig/v1"


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as every bytes field of the memory JSON uses."""
    return base64.b64encode(data).decode("ascii")


def b64decode(value: object, *, max_size: int) -> bytes:
    """Decode standard base64 of at most ``max_size`` bytes; ``ValueError`` otherwise.

    The length is checked on the string before decoding, so a huge string costs nothing.
    """
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    if len(value) > 4 * ((max_size + 2) // 3):
        raise ValueError("base64 value too long")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("invalid base64") from exc


def check_segment_key(key: object) -> str:
    """Return ``key`` if it is a valid segment key (1..256 characters, no control
    characters, encodable as UTF-8), else raise ``ValueError`` (``TypeError`` if not a str)."""
    if not isinstance(key, str):
        raise TypeError("a segment key must be a string")
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"a segment key must have 1 to {MAX_KEY_LENGTH} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in key):
        raise ValueError("a segment key must not contain control characters or surrogates")
    return key


def _lp(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("field too long for a 2-byte length prefix")
    return struct.pack(">H", len(data)) + data


def _u64(value: int, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int")
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"{what} must fit in an unsigned 64-bit integer")
    return struct.pack(">Q", value)


def generate_data_key() -> bytes:
    """A fresh random 32-byte data key."""
    return random_bytes(DATA_KEY_SIZE)


def key_info(memory_id: str, epoch: int, agent: str) -> bytes:
    """The HPKE ``info`` that binds a wrapped key to its memory, epoch and agent."""
    return KEY_LABEL + memory_id.encode("utf-8") + _u64(epoch, "epoch") + agent.encode("utf-8")


def key_statement(memory_id: str, epoch: int, agent: str, data_key: bytes) -> bytes:
    """What the agent wrapping a data key signs: this key is the data key of ``epoch``
    of ``memory_id``, for ``agent``. A recipient accepts a wrapped key only when the
    memory's owner or one of its admins signed it, so a coordinator cannot hand a
    writer a data key of its own making (HPKE base mode does not authenticate the
    sender)."""
    return b"".join(
        (
            KEY_SIGNATURE_LABEL,
            _lp(memory_id.encode("utf-8")),
            _u64(epoch, "epoch"),
            _lp(agent.encode("utf-8")),
            sha256(data_key),
        )
    )


def segment_ad(
    memory_id: str, key: str, version: int, epoch: int, writer: str, nonce: bytes
) -> bytes:
    """The AES-GCM associated data of a segment (the hash input without the ciphertext)."""
    return b"".join(
        (
            SEGMENT_LABEL,
            _lp(memory_id.encode("utf-8")),
            _lp(key.encode("utf-8")),
            _u64(version, "version"),
            _u64(epoch, "epoch"),
            _lp(writer.encode("utf-8")),
            nonce,
        )
    )


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key of one epoch, HPKE-sealed to one agent's X25519 agreement key."""

    agent: str
    epoch: int
    enc: bytes
    ct: bytes

    def to_json(self) -> dict[str, Any]:
        """``{"agent", "epoch", "enc", "ct"}`` with base64 bytes."""
        return {
            "agent": self.agent,
            "epoch": self.epoch,
            "enc": b64encode(self.enc),
            "ct": b64encode(self.ct),
        }

    @classmethod
    def from_json(cls, data: object) -> WrappedKey:
        """Parse the JSON form; ``ValueError`` for anything malformed or over-long."""
        if not isinstance(data, Mapping):
            raise ValueError("a wrapped key must be a JSON object")
        agent, epoch = data.get("agent"), data.get("epoch")
        if not isinstance(agent, str) or not 0 < len(agent) <= MAX_DID_LENGTH:
            raise ValueError("wrapped key: bad agent")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= _U64_MAX:
            raise ValueError("wrapped key: bad epoch")
        enc = b64decode(data.get("enc"), max_size=hpke.ENC_SIZE)
        ct = b64decode(data.get("ct"), max_size=_WRAPPED_CT_SIZE)
        if len(enc) != hpke.ENC_SIZE or len(ct) != _WRAPPED_CT_SIZE:
            raise ValueError("wrapped key: bad sizes")
        return cls(agent=agent, epoch=epoch, enc=enc, ct=ct)


def wrap_key(
    data_key: bytes,
    *,
    memory_id: str,
    epoch: int,
    agent_did: str,
    agent_public: bytes,
    wrapper: AgentIdentity,
) -> WrappedKey:
    """Seal ``data_key`` for ``agent_did``, whose verified X25519 key is ``agent_public``,
    signed inside the seal by ``wrapper`` (the owner or an admin of the memory)."""
    if len(data_key) != DATA_KEY_SIZE:
        raise ValueError(f"a data key must be {DATA_KEY_SIZE} bytes")
    signature = wrapper.signing_key.sign(key_statement(memory_id, epoch, agent_did, data_key))
    enc, ct = hpke.seal(
        agent_public, data_key + signature, info=key_info(memory_id, epoch, agent_did)
    )
    return WrappedKey(agent=agent_did, epoch=epoch, enc=enc, ct=ct)


def unwrap_key(
    wrapped: WrappedKey | Mapping[str, Any],
    *,
    memory_id: str,
    agent_did: str,
    private: bytes | KeyPair,
    wrappers: Iterable[str],
) -> bytes:
    """Open a wrapped key addressed to ``agent_did`` with its X25519 ``private`` key.

    ``wrappers`` are the DIDs entitled to hand out the memory's keys (its owner and its
    admins): one of them must have signed the key. Raises :class:`SegmentRejected` if it
    is malformed, addressed to another agent, bound to another memory or epoch, does not
    open, or was not signed by one of ``wrappers``.
    """
    try:
        parsed = wrapped if isinstance(wrapped, WrappedKey) else WrappedKey.from_json(wrapped)
    except ValueError as exc:
        raise SegmentRejected(f"malformed wrapped key ({exc})") from exc
    if parsed.agent != agent_did:
        raise SegmentRejected("the wrapped key is addressed to another agent")
    try:
        data_key = hpke.open(
            private, parsed.enc, parsed.ct, info=key_info(memory_id, parsed.epoch, agent_did)
        )
    except DecryptionFailed as exc:
        raise SegmentRejected(f"the wrapped key for epoch {parsed.epoch} did not open") from exc
    if len(data_key) != DATA_KEY_SIZE + SIGNATURE_SIZE:
        raise SegmentRejected("the wrapped key does not hold a signed 32-byte data key")
    data_key, signature = data_key[:DATA_KEY_SIZE], data_key[DATA_KEY_SIZE:]
    statement = key_statement(memory_id, parsed.epoch, agent_did, data_key)
    for wrapper in dict.fromkeys(wrappers):
        try:
            verify_key_of(wrapper).verify(signature, statement)
        except (InvalidSignature, InvalidDid):
            continue
        return data_key
    raise SegmentRejected(
        f"the wrapped key for epoch {parsed.epoch} was not signed by the memory's owner or an admin"
    )


@dataclass(frozen=True, slots=True)
class OpenedSegment:
    """A verified, decrypted segment. ``repr`` leaves the value out."""

    key: str
    version: int
    epoch: int
    writer: Did
    value: bytes = field(repr=False)


def seal_segment(
    identity: AgentIdentity,
    *,
    memory_id: str,
    key: str,
    version: int,
    epoch: int,
    data_key: bytes,
    value: bytes,
) -> dict[str, Any]:
    """Encrypt, hash and sign ``value`` as ``identity``; returns the Segment JSON.

    The result holds the client-made fields only; the coordinator adds ``writtenAt`` and
    ``size``. ``ValueError`` for an invalid key, version, epoch, data key or oversized value.
    """
    check_segment_key(key)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError("version must be an int >= 1")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("value must be bytes")
    if len(value) > MAX_VALUE_SIZE:
        raise ValueError(f"a value is limited to {MAX_VALUE_SIZE} bytes")
    if len(data_key) != DATA_KEY_SIZE:
        raise ValueError(f"a data key must be {DATA_KEY_SIZE} bytes")
    writer = identity.did
    nonce = random_bytes(NONCE_SIZE)
    ad = segment_ad(memory_id, key, version, epoch, writer, nonce)
    ciphertext = AesGcm(data_key).seal(nonce, bytes(value), ad)
    digest = sha256(ad + ciphertext)
    signature = identity.signing_key.sign(SIGNATURE_LABEL + digest)
    return {
        "key": key,
        "version": version,
        "epoch": epoch,
        "writer": writer,
        "nonce": b64encode(nonce),
        "ciphertext": b64encode(ciphertext),
        "hash": b64encode(digest),
        "signature": b64encode(signature),
    }


@dataclass(frozen=True, slots=True)
class _Fields:
    key: str
    version: int
    epoch: int
    writer: str
    nonce: bytes
    ciphertext: bytes
    digest: bytes
    signature: bytes


def _int_field(segment: Mapping[str, Any], name: str, minimum: int) -> int:
    value = segment.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _U64_MAX:
        raise SegmentRejected(f"malformed segment: bad {name}")
    return value


def _bytes_field(segment: Mapping[str, Any], name: str, lo: int, hi: int) -> bytes:
    try:
        data = b64decode(segment.get(name), max_size=hi)
    except ValueError as exc:
        raise SegmentRejected(f"malformed segment: bad {name}") from exc
    if not lo <= len(data) <= hi:
        raise SegmentRejected(f"malformed segment: {name} has the wrong size")
    return data


def _parse(segment: object) -> _Fields:
    if not isinstance(segment, Mapping):
        raise SegmentRejected("malformed segment: not a JSON object")
    try:
        key = check_segment_key(segment.get("key"))
    except (TypeError, ValueError) as exc:
        raise SegmentRejected("malformed segment: bad key") from exc
    version = _int_field(segment, "version", 1)
    epoch = _int_field(segment, "epoch", 0)
    writer = segment.get("writer")
    if not isinstance(writer, str) or not is_did(writer):
        raise SegmentRejected("malformed segment: the writer is not a did:key")
    return _Fields(
        key=key,
        version=version,
        epoch=epoch,
        writer=writer,
        nonce=_bytes_field(segment, "nonce", NONCE_SIZE, NONCE_SIZE),
        ciphertext=_bytes_field(segment, "ciphertext", TAG_SIZE, _MAX_CIPHERTEXT_SIZE),
        digest=_bytes_field(segment, "hash", HASH_SIZE, HASH_SIZE),
        signature=_bytes_field(segment, "signature", SIGNATURE_SIZE, SIGNATURE_SIZE),
    )


def open_segment(
    segment: Mapping[str, Any], *, memory_id: str, data_key_for: Callable[[int], bytes]
) -> OpenedSegment:
    """Verify and decrypt a Segment JSON object of memory ``memory_id``.

    ``data_key_for(epoch)`` returns the data key of an epoch; a ``LookupError`` from it
    means the caller holds no key for that epoch. Raises :class:`SegmentRejected` (with a
    reason, never the value) for a malformed segment, a hash mismatch, a bad signature, a
    missing data key or failed decryption.
    """
    fields = _parse(segment)
    try:
        ad = segment_ad(
            memory_id, fields.key, fields.version, fields.epoch, fields.writer, fields.nonce
        )
    except ValueError as exc:  # a memory id too long for its length prefix
        raise SegmentRejected("malformed segment: bad memory id") from exc
    if not constant_time_equal(sha256(ad + fields.ciphertext), fields.digest):
        raise SegmentRejected("content hash mismatch")
    try:
        verify_key_of(fields.writer).verify(fields.signature, SIGNATURE_LABEL + fields.digest)
    except (InvalidSignature, InvalidDid) as exc:
        raise SegmentRejected("the writer's signature did not verify") from exc
    try:
        data_key = data_key_for(fields.epoch)
    except LookupError as exc:
        raise SegmentRejected(f"no data key held for epoch {fields.epoch}") from exc
    try:
        value = AesGcm(data_key).open(fields.nonce, fields.ciphertext, ad)
    except (DecryptionFailed, ValueError) as exc:
        raise SegmentRejected(f"decryption failed under the epoch {fields.epoch} key") from exc
    return OpenedSegment(
        key=fields.key,
        version=fields.version,
        epoch=fields.epoch,
        writer=Did(fields.writer),
        value=value,
    )
