"""did:key identifiers for Ed25519 identity keys and X25519 agreement keys.

An agent's id is ``did:key:z<base58btc(0xed 0x01 || ed25519_public)>`` (W3C CCG did:key,
multicodec ``ed25519-pub``); its agreement key is written as the multibase string
``z<base58btc(0xec 0x01 || x25519_public)>`` (multicodec ``x25519-pub``, the ``z6LS...``
form of did:key documents).

Invariants:

- Parsing never trusts its input: the length is capped *before* base58 decoding (base58
  decoding is quadratic and a long string would cost memory and time), and every failure
  is an :class:`~trustwire.errors.InvalidDid` whose message does not echo the input.
- Every key has exactly one accepted string form: a string is accepted only when
  re-encoding the decoded key reproduces it, so two different DID strings never name the
  same key.
"""

from __future__ import annotations

from typing import NewType

import base58

from trustwire.errors import InvalidDid

__all__ = [
    "DID_KEY_PREFIX",
    "ED25519_CODEC",
    "MAX_DID_LENGTH",
    "X25519_CODEC",
    "Did",
    "did_from_ed25519",
    "ed25519_from_did",
    "is_did",
    "x25519_from_multibase",
    "x25519_multibase",
]

Did = NewType("Did", str)

DID_KEY_PREFIX = "did:key:"
# Multicodec codes as unsigned varints: 0xed (ed25519-pub) and 0xec (x25519-pub) both
# need two varint bytes because they are >= 0x80.
ED25519_CODEC = b"\xed\x01"
X25519_CODEC = b"\xec\x01"
_KEY_SIZE = 32
# A 34-byte multicodec key is at most 47 base58 characters; "did:key:" + "z" + 47 = 56.
# The cap leaves room but keeps the quadratic base58 decoder cheap.
MAX_DID_LENGTH = 128
_BASE58_ALPHABET = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


def _encode_multibase(codec: bytes, public: bytes) -> str:
    return "z" + base58.b58encode(codec + public).decode("ascii")


def _decode_multibase(value: str, codec: bytes, what: str) -> bytes:
    """Decode ``z<base58btc(codec || key)>`` into the 32-byte key, or raise InvalidDid."""
    if not value.startswith("z"):
        raise InvalidDid(f"{what} must use multibase base58btc (prefix 'z')")
    body = value[1:]
    if not body or not _BASE58_ALPHABET.issuperset(body):
        raise InvalidDid(f"{what} is not valid base58btc")
    raw = base58.b58decode(body)
    if raw[: len(codec)] != codec:
        raise InvalidDid(f"{what} has the wrong multicodec key type")
    key = raw[len(codec) :]
    if len(key) != _KEY_SIZE:
        raise InvalidDid(f"{what} key must be {_KEY_SIZE} bytes, got {len(key)}")
    if _encode_multibase(codec, key) != value:
        raise InvalidDid(f"{what} is not in canonical form")
    return key


def _check_public(public: bytes, what: str) -> bytes:
    if not isinstance(public, bytes | bytearray | memoryview):
        raise TypeError(f"{what} public key must be bytes")
    raw = bytes(public)
    if len(raw) != _KEY_SIZE:
        raise ValueError(f"{what} public key must be {_KEY_SIZE} bytes")
    return raw


def did_from_ed25519(public: bytes) -> Did:
    """The did:key of a raw 32-byte Ed25519 public key."""
    raw = _check_public(public, "Ed25519")
    return Did(DID_KEY_PREFIX + _encode_multibase(ED25519_CODEC, raw))


def ed25519_from_did(did: str) -> bytes:
    """The raw Ed25519 public key named by ``did``.

    Raises :class:`InvalidDid` for anything that is not a canonical Ed25519 did:key:
    not a string, too long, wrong method, wrong multibase, wrong multicodec (an X25519
    did:key is refused), wrong key length, a DID URL with a fragment or path.
    """
    if not isinstance(did, str):
        raise InvalidDid("a DID must be a string")
    if len(did) > MAX_DID_LENGTH:
        raise InvalidDid(f"DID longer than {MAX_DID_LENGTH} characters")
    if not did.startswith(DID_KEY_PREFIX):
        raise InvalidDid("not a did:key identifier")
    return _decode_multibase(did[len(DID_KEY_PREFIX) :], ED25519_CODEC, "did:key")


def is_did(value: object) -> bool:
    """True when ``value`` is a canonical Ed25519 did:key."""
    if not isinstance(value, str):
        return False
    try:
        ed25519_from_did(value)
    except InvalidDid:
        return False
    return True


def x25519_multibase(public: bytes) -> str:
    """The multibase (``z6LS...``) form of a raw 32-byte X25519 public key."""
    return _encode_multibase(X25519_CODEC, _check_public(public, "X25519"))


def x25519_from_multibase(value: str) -> bytes:
    """The raw X25519 public key of a ``z6LS...`` multibase string.

    Raises :class:`InvalidDid` for anything malformed, over-long or of another key type.
    """
    if not isinstance(value, str):
        raise InvalidDid("an X25519 multibase key must be a string")
    if len(value) > MAX_DID_LENGTH:
        raise InvalidDid(f"X25519 multibase key longer than {MAX_DID_LENGTH} characters")
    return _decode_multibase(value, X25519_CODEC, "X25519 multibase key")
