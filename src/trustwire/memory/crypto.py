"""The client-side cryptography of shared memory: data keys, wrapped keys, sealed segments.

A memory's contents are encrypted under a 32-byte *data key* that only its authorized
agents hold. Each key *epoch* has its own data key; revocation starts a new epoch. The
coordinator stores wrapped keys and sealed segments and can open neither.

Memory id, made by the owner's client, which binds the owner::

    id  = "m1-" || hex(nonce) || hex(tag)                 (lower-case hex, 67 characters)
    tag = SHA-256(b"trustwire/memory-id/v1" || lp(owner DID) || nonce)[:16]
                                                          (nonce: 16 random bytes)

Wrapped key (one per agent per epoch), JSON ``{"agent", "epoch", "enc", "ct"}``::

    HPKE base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM,
    to the agent's registry X25519 agreement key,
    info      = b"trustwire/memory-key/v1" || memory_id || u64 epoch || agent DID
    plaintext = data key (32) || wrapper DID field (64: u8 length || DID || zeros)
                || wrapper signature (64, over key_statement)
                || wrapper admin certificate (72) || recipient admin certificate (72)
    certificate = Ed25519 by the OWNER over admin_statement(memory_id, admin, expires_ms)
                  || u64 expires_ms (0: no expiry); all zeros when absent

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
- The memory id is the trust anchor: :func:`unwrap_key` accepts a data key only if the
  id names the owner it is told (:func:`owner_matches`), the wrapper signed it, and the
  wrapper is that owner or holds the owner's admin certificate. Nothing the coordinator
  says about admins or grants is trusted for keys, and no check depends on the current
  grant list, so keys wrapped by an admin revoked later keep opening.
- Randomness (data keys, nonces) comes from :func:`trustwire.crypto.random.random_bytes`.
"""

from __future__ import annotations

import base64
import binascii
import struct
import unicodedata
from collections.abc import Callable, Mapping
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
    "ADMIN_LABEL",
    "CERTIFICATE_SIZE",
    "DATA_KEY_SIZE",
    "HASH_SIZE",
    "KEY_LABEL",
    "KEY_SIGNATURE_LABEL",
    "MAX_KEY_LENGTH",
    "MAX_VALUE_SIZE",
    "MEMORY_ID_LABEL",
    "MEMORY_ID_PREFIX",
    "SEGMENT_LABEL",
    "SIGNATURE_LABEL",
    "WRAPPED_PLAINTEXT_SIZE",
    "AdminCertificate",
    "OpenedSegment",
    "UnwrappedKey",
    "WrappedKey",
    "admin_statement",
    "b64decode",
    "b64encode",
    "certify_admin",
    "check_segment_key",
    "generate_data_key",
    "is_memory_id",
    "key_info",
    "key_statement",
    "memory_id_for",
    "open_segment",
    "owner_matches",
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
#: What the wrapper signs: the data key's binding to its memory, epoch and recipient.
KEY_SIGNATURE_LABEL = b"trustwire/memory-key-sig/v1"
#: What the owner signs to make an agent an admin (entitled to wrap the memory's keys).
ADMIN_LABEL = b"trustwire/memory-admin/v1"
#: The memory id's tag binds the owner's DID to the id's random nonce.
MEMORY_ID_LABEL = b"trustwire/memory-id/v1"
MEMORY_ID_PREFIX = "m1-"
_ID_NONCE_SIZE = 16
_ID_TAG_SIZE = 16
_ID_LENGTH = len(MEMORY_ID_PREFIX) + 2 * (_ID_NONCE_SIZE + _ID_TAG_SIZE)
_HEX = frozenset("0123456789abcdef")
#: The wrapper DID field: u8 length, the DID's ASCII bytes, zero padding.
_DID_FIELD_SIZE = 64
#: An admin certificate: the owner's Ed25519 signature, then u64 expires_ms (0: none).
CERTIFICATE_SIZE = SIGNATURE_SIZE + 8
#: The fixed-size HPKE plaintext of a wrapped key (see the module docstring); fixed, so
#: the coordinator only checks a length and learns nothing about who wrapped it.
WRAPPED_PLAINTEXT_SIZE = DATA_KEY_SIZE + _DID_FIELD_SIZE + SIGNATURE_SIZE + 2 * CERTIFICATE_SIZE
_WRAPPED_CT_SIZE = WRAPPED_PLAINTEXT_SIZE + hpke.TAG_SIZE


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


def _id_tag(owner_did: str, nonce: bytes) -> bytes:
    return sha256(MEMORY_ID_LABEL + _lp(owner_did.encode("utf-8")) + nonce)[:_ID_TAG_SIZE]


def memory_id_for(owner_did: str) -> str:
    """A fresh memory id that names ``owner_did`` as the memory's owner.

    ``"m1-" || hex(nonce) || hex(tag)``, with a random 16-byte nonce and
    ``tag = SHA-256("trustwire/memory-id/v1" || lp(owner DID) || nonce)[:16]``. The owner
    shares the id out of band; whoever holds it can tell the memory's true owner from any
    owner the coordinator claims (:func:`owner_matches`).
    """
    if not isinstance(owner_did, str) or not is_did(owner_did):
        raise ValueError("the owner must be a did:key")
    nonce = random_bytes(_ID_NONCE_SIZE)
    return MEMORY_ID_PREFIX + nonce.hex() + _id_tag(owner_did, nonce).hex()


def is_memory_id(value: object) -> bool:
    """Whether ``value`` has the shape of an owner-binding memory id (``m1-`` + 64
    lower-case hex digits); says nothing about which owner it names."""
    return (
        isinstance(value, str)
        and len(value) == _ID_LENGTH
        and value.startswith(MEMORY_ID_PREFIX)
        and _HEX.issuperset(value[len(MEMORY_ID_PREFIX) :])
    )


def owner_matches(memory_id: str, owner_did: str) -> bool:
    """Whether ``memory_id`` names ``owner_did`` as its owner (tag compared in constant
    time). False for anything else, including a UUID id, which names no owner."""
    if not is_memory_id(memory_id) or not isinstance(owner_did, str):
        return False
    raw = bytes.fromhex(memory_id[len(MEMORY_ID_PREFIX) :])
    nonce, tag = raw[:_ID_NONCE_SIZE], raw[_ID_NONCE_SIZE:]
    try:
        expected = _id_tag(owner_did, nonce)
    except (ValueError, UnicodeEncodeError):
        return False
    return constant_time_equal(expected, tag)


def admin_statement(memory_id: str, admin_did: str, expires_ms: int) -> bytes:
    """What the owner signs to make ``admin_did`` an admin of ``memory_id`` until
    ``expires_ms`` (epoch milliseconds; 0: no expiry)."""
    return b"".join(
        (
            ADMIN_LABEL,
            _lp(memory_id.encode("utf-8")),
            _lp(admin_did.encode("utf-8")),
            _u64(expires_ms, "expires_ms"),
        )
    )


@dataclass(frozen=True, slots=True)
class AdminCertificate:
    """The owner's signed word that an agent is an admin of a memory (entitled to wrap its
    data keys), until ``expires_ms`` (epoch milliseconds; 0: no expiry).

    It travels only inside wrapped keys (so the coordinator never sees it): in the keys an
    admin wraps, to show it was entitled, and in the keys the owner wraps for a new admin,
    who keeps it to wrap keys itself later.
    """

    signature: bytes
    expires_ms: int = 0

    def to_bytes(self) -> bytes:
        """The 72-byte field: signature || u64 expires_ms."""
        if len(self.signature) != SIGNATURE_SIZE:
            raise ValueError(f"a certificate signature is {SIGNATURE_SIZE} bytes")
        return self.signature + _u64(self.expires_ms, "expires_ms")

    @classmethod
    def from_bytes(cls, data: bytes) -> AdminCertificate | None:
        """Parse the 72-byte field; None when it is all zeros (no certificate)."""
        if len(data) != CERTIFICATE_SIZE:
            raise ValueError(f"a certificate field is {CERTIFICATE_SIZE} bytes")
        if not any(data):
            return None
        (expires_ms,) = struct.unpack(">Q", data[SIGNATURE_SIZE:])
        return cls(signature=bytes(data[:SIGNATURE_SIZE]), expires_ms=expires_ms)

    def valid_for(self, *, memory_id: str, admin_did: str, owner_did: str) -> bool:
        """Whether ``owner_did`` signed this certificate for ``admin_did`` on ``memory_id``."""
        try:
            statement = admin_statement(memory_id, admin_did, self.expires_ms)
            verify_key_of(owner_did).verify(self.signature, statement)
        except (InvalidSignature, InvalidDid, ValueError, TypeError):
            return False
        return True

    def expired(self, now: float) -> bool:
        """Whether the certificate has expired at ``now`` (epoch seconds)."""
        return self.expires_ms != 0 and now * 1000 >= self.expires_ms


def certify_admin(
    owner: AgentIdentity, *, memory_id: str, admin_did: str, expires_ms: int | None = None
) -> AdminCertificate:
    """The owner's certificate that ``admin_did`` is an admin of ``memory_id`` until
    ``expires_ms`` (None or 0: no expiry). Only the owner's signature is accepted."""
    expires = 0 if expires_ms is None else expires_ms
    signature = owner.signing_key.sign(admin_statement(memory_id, admin_did, expires))
    return AdminCertificate(signature=signature, expires_ms=expires)


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


def _did_field(did: str) -> bytes:
    raw = did.encode("ascii")
    if not 0 < len(raw) < _DID_FIELD_SIZE:
        raise ValueError(f"a wrapper DID must have 1 to {_DID_FIELD_SIZE - 1} ASCII characters")
    return bytes([len(raw)]) + raw + bytes(_DID_FIELD_SIZE - 1 - len(raw))


def _read_did_field(data: bytes) -> str | None:
    length = data[0]
    if not 0 < length < _DID_FIELD_SIZE or any(data[1 + length :]):
        return None
    try:
        did = data[1 : 1 + length].decode("ascii")
    except UnicodeDecodeError:
        return None
    return did if is_did(did) else None


def _certificate_field(certificate: AdminCertificate | None) -> bytes:
    return bytes(CERTIFICATE_SIZE) if certificate is None else certificate.to_bytes()


def wrap_key(
    data_key: bytes,
    *,
    memory_id: str,
    epoch: int,
    agent_did: str,
    agent_public: bytes,
    wrapper: AgentIdentity,
    wrapper_certificate: AdminCertificate | None = None,
    recipient_certificate: AdminCertificate | None = None,
) -> WrappedKey:
    """Seal ``data_key`` for ``agent_did``, whose verified X25519 key is ``agent_public``,
    signed inside the seal by ``wrapper``.

    ``wrapper`` is the memory's owner (no ``wrapper_certificate``) or an admin, which
    passes the owner's certificate naming it. ``recipient_certificate`` is the owner's
    certificate making ``agent_did`` an admin, handed over inside the seal. Recipients
    check all of it (:func:`unwrap_key`); this function only encodes.
    """
    if len(data_key) != DATA_KEY_SIZE:
        raise ValueError(f"a data key must be {DATA_KEY_SIZE} bytes")
    signature = wrapper.signing_key.sign(key_statement(memory_id, epoch, agent_did, data_key))
    plaintext = b"".join(
        (
            data_key,
            _did_field(wrapper.did),
            signature,
            _certificate_field(wrapper_certificate),
            _certificate_field(recipient_certificate),
        )
    )
    enc, ct = hpke.seal(agent_public, plaintext, info=key_info(memory_id, epoch, agent_did))
    return WrappedKey(agent=agent_did, epoch=epoch, enc=enc, ct=ct)


@dataclass(frozen=True, slots=True)
class UnwrappedKey:
    """An opened and verified wrapped key. ``repr`` leaves the key out.

    ``admin_certificate`` is the owner's certificate that the recipient is an admin, when
    the owner handed one over with this key (and it verified); the recipient keeps it to
    wrap keys itself.
    """

    data_key: bytes = field(repr=False)
    epoch: int
    wrapper: Did
    admin_certificate: AdminCertificate | None = None


def unwrap_key(
    wrapped: WrappedKey | Mapping[str, Any],
    *,
    memory_id: str,
    agent_did: str,
    private: bytes | KeyPair,
    owner: str,
) -> UnwrappedKey:
    """Open a wrapped key addressed to ``agent_did`` with its X25519 ``private`` key.

    ``owner`` is the memory's owner as claimed; it must be the owner ``memory_id`` names
    (:func:`owner_matches`), so a coordinator cannot substitute one. The key must be signed
    by the wrapper named inside the seal, and that wrapper must be the owner or hold the
    owner's admin certificate. Nothing depends on the current grants: a key an admin
    wrapped while it was one keeps opening after it is revoked or its grant expires.

    Raises :class:`SegmentRejected` if the id does not name ``owner``, or the key is
    malformed, addressed to another agent, bound to another memory or epoch, does not
    open, or is not signed by the owner or an admin the owner certified.
    """
    if not owner_matches(memory_id, owner):
        raise SegmentRejected("the memory id does not name this owner")
    try:
        parsed = wrapped if isinstance(wrapped, WrappedKey) else WrappedKey.from_json(wrapped)
    except ValueError as exc:
        raise SegmentRejected(f"malformed wrapped key ({exc})") from exc
    if parsed.agent != agent_did:
        raise SegmentRejected("the wrapped key is addressed to another agent")
    epoch = parsed.epoch
    try:
        plaintext = hpke.open(
            private, parsed.enc, parsed.ct, info=key_info(memory_id, epoch, agent_did)
        )
    except DecryptionFailed as exc:
        raise SegmentRejected(f"the wrapped key for epoch {epoch} did not open") from exc
    if len(plaintext) != WRAPPED_PLAINTEXT_SIZE:
        raise SegmentRejected(f"the wrapped key for epoch {epoch} has the wrong layout")
    fields, offset = [], 0
    for size in (DATA_KEY_SIZE, _DID_FIELD_SIZE, SIGNATURE_SIZE, CERTIFICATE_SIZE):
        fields.append(plaintext[offset : offset + size])
        offset += size
    data_key, did_field, signature, wrapper_cert_field = fields
    recipient_cert_field = plaintext[offset:]
    wrapper = _read_did_field(did_field)
    if wrapper is None:
        raise SegmentRejected(f"the wrapped key for epoch {epoch} names no valid wrapper")
    statement = key_statement(memory_id, epoch, agent_did, data_key)
    try:
        verify_key_of(wrapper).verify(signature, statement)
    except (InvalidSignature, InvalidDid) as exc:
        raise SegmentRejected(
            f"the wrapped key for epoch {epoch} does not carry its wrapper's signature"
        ) from exc
    if wrapper != owner:
        certificate = AdminCertificate.from_bytes(wrapper_cert_field)
        if certificate is None or not certificate.valid_for(
            memory_id=memory_id, admin_did=wrapper, owner_did=owner
        ):
            raise SegmentRejected(
                f"the wrapped key for epoch {epoch} was wrapped by an agent the owner did "
                "not make an admin"
            )
    own = AdminCertificate.from_bytes(recipient_cert_field)
    if own is not None and not own.valid_for(
        memory_id=memory_id, admin_did=agent_did, owner_did=owner
    ):
        own = None
    return UnwrappedKey(
        data_key=bytes(data_key), epoch=epoch, wrapper=Did(wrapper), admin_certificate=own
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
