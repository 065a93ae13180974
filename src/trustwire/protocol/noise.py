"""The Noise Protocol Framework, revision 34: CipherState, SymmetricState, HandshakeState.

No maintained Python Noise library exists, so this one is hand-written: small, following
the spec's objects and names (§5) one to one, and tested against every vector in the
cacophony and snow vector files (``tests/protocol/test_noise_vectors.py``). Supported:
DH ``25519`` and ``448``; ciphers ``AESGCM`` and ``ChaChaPoly``; hashes ``SHA256``,
``SHA512``, ``BLAKE2s``, ``BLAKE2b``; the one-way, fundamental and deferred patterns with
``pskN`` modifiers (see :mod:`trustwire.protocol.noise_patterns`). The ``fallback``
modifier is not supported.

The core is sans-I/O: bytes in, bytes out. Ephemeral keys come from the DH object's
``generate()``, i.e. from :func:`trustwire.crypto.random.random_bytes`, unless the caller
passes ``e`` (test vectors do).

Invariants:

- A nonce is never used twice under one key: ``n`` only grows, ``2**64 - 1`` is reserved
  (using it raises :class:`~trustwire.errors.NoiseError`), a failed decryption does not
  advance ``n``, and :meth:`HandshakeState.split` hands out the transport keys once.
- No message over 65535 bytes is written or read (spec §3).
- Keys never appear in a ``repr``, an exception message or an attribute of an exception.
- Failure is final for a handshake: once :meth:`HandshakeState.read_message` or
  :meth:`HandshakeState.write_message` has begun processing a message and fails, the
  handshake state is unusable and every later call raises ``NoiseError``, so a
  half-applied message can never be continued or retried. Misuse detected before any
  processing (wrong turn, handshake complete, payload too large) leaves it untouched.
- A :class:`CipherState` survives a failed decryption unchanged (spec §5.1), which the
  transport's replay window relies on.

Errors: bytes that are not a valid message (too short, too long, low-order DH key) raise
:class:`~trustwire.errors.HandshakeFailed`; an AEAD failure raises
:class:`~trustwire.errors.DecryptionFailed`; misuse raises ``NoiseError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Final

from trustwire.crypto.aead import Aead, AesGcm, ChaChaPoly
from trustwire.crypto.dh import X448, X25519, DhFunction, KeyPair
from trustwire.crypto.hashes import HASHES, HashFunction
from trustwire.errors import CryptoError, HandshakeFailed, NoiseError
from trustwire.protocol.noise_patterns import NoiseProtocol, parse_protocol_name

__all__ = [
    "KEY_LEN",
    "MAX_MESSAGE_LEN",
    "MAX_NONCE",
    "PSK_LEN",
    "TAG_LEN",
    "CipherState",
    "HandshakeState",
    "SymmetricState",
]

#: Largest Noise message, handshake or transport (spec §3).
MAX_MESSAGE_LEN: Final = 65535
#: Reserved nonce value: never used to encrypt (spec §5.1), only by REKEY.
MAX_NONCE: Final = 2**64 - 1
KEY_LEN: Final = 32
PSK_LEN: Final = 32
TAG_LEN: Final = 16

_ZEROS: Final = bytes(32)

# Nonce encodings (spec §12.3, §12.4): 32 zero bits then the 64-bit counter, big-endian
# for AES-GCM and little-endian for ChaCha20-Poly1305.
_CIPHERS: Final[dict[str, tuple[type[Aead], Callable[[int], bytes]]]] = {
    "AESGCM": (AesGcm, struct.Struct(">4xQ").pack),
    "ChaChaPoly": (ChaChaPoly, struct.Struct("<4xQ").pack),
}
_DH: Final[dict[str, DhFunction]] = {"25519": X25519, "448": X448}


class CipherState:
    """A key ``k`` (possibly empty) and a nonce counter ``n`` (spec §5.1).

    The AEAD object is built once per key and reused, because constructing it costs more
    than sealing a small message. Without a key, :meth:`encrypt_with_ad` and
    :meth:`decrypt_with_ad` pass data through unchanged, as the spec requires during the
    early handshake; the explicit-nonce methods refuse to work without a key.
    """

    __slots__ = ("_aead", "_cipher_name", "_make", "_n", "_nonce")

    def __init__(self, cipher_name: str, key: bytes | None = None) -> None:
        try:
            self._make, self._nonce = _CIPHERS[cipher_name]
        except KeyError:
            raise NoiseError(f"unsupported cipher {cipher_name!r}") from None
        self._cipher_name = cipher_name
        self._aead: Aead | None = None
        self._n = 0
        if key is not None:
            self.initialize_key(key)

    def __repr__(self) -> str:
        key = "set" if self._aead is not None else "empty"
        return f"CipherState({self._cipher_name}, key={key}, n={self._n})"

    @property
    def cipher_name(self) -> str:
        """``AESGCM`` or ``ChaChaPoly``."""
        return self._cipher_name

    @property
    def n(self) -> int:
        """The nonce the next :meth:`encrypt_with_ad`/:meth:`decrypt_with_ad` will use."""
        return self._n

    def initialize_key(self, key: bytes | None) -> None:
        """Set ``k`` (32 bytes, or ``None`` for empty) and reset ``n`` to zero."""
        if key is None:
            self._aead = None
        elif len(key) != KEY_LEN:
            raise NoiseError(f"cipher key must be {KEY_LEN} bytes")
        else:
            self._aead = self._make(bytes(key))
        self._n = 0

    def has_key(self) -> bool:
        """True once a key is set."""
        return self._aead is not None

    def set_nonce(self, n: int) -> None:
        """Set ``n`` (0 to 2**64 - 1; the maximum makes every later use fail)."""
        if not 0 <= n <= MAX_NONCE:
            raise NoiseError("nonce must be in 0..2**64-1")
        self._n = n

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """Encrypt with nonce ``n`` and advance ``n``; plaintext back if there is no key."""
        aead = self._aead
        if aead is None:
            if len(plaintext) > MAX_MESSAGE_LEN:
                raise NoiseError(f"Noise messages are limited to {MAX_MESSAGE_LEN} bytes")
            return plaintext
        n = self._n
        if n >= MAX_NONCE:
            raise NoiseError("nonce space exhausted; rekey is not enough, start a new session")
        if len(plaintext) > MAX_MESSAGE_LEN - TAG_LEN:
            raise NoiseError(f"Noise messages are limited to {MAX_MESSAGE_LEN} bytes")
        ciphertext = aead.seal(self._nonce(n), plaintext, ad)
        self._n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt with nonce ``n``; ``n`` advances only on success.

        Raises :class:`~trustwire.errors.DecryptionFailed` when authentication fails.
        """
        aead = self._aead
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise NoiseError(f"Noise messages are limited to {MAX_MESSAGE_LEN} bytes")
        if aead is None:
            return ciphertext
        n = self._n
        if n >= MAX_NONCE:
            raise NoiseError("nonce space exhausted; rekey is not enough, start a new session")
        plaintext = aead.open(self._nonce(n), ciphertext, ad)
        self._n = n + 1
        return plaintext

    def encrypt_at(self, n: int, ad: bytes, plaintext: bytes) -> bytes:
        """Encrypt with the explicit nonce ``n``; the state (``n`` included) is unchanged.

        For transports that carry the counter in the clear and check it against a replay
        window. The caller must never reuse ``n`` under this key.
        """
        aead = self._keyed_aead(n)
        if len(plaintext) > MAX_MESSAGE_LEN - TAG_LEN:
            raise NoiseError(f"Noise messages are limited to {MAX_MESSAGE_LEN} bytes")
        return aead.seal(self._nonce(n), plaintext, ad)

    def decrypt_at(self, n: int, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt with the explicit nonce ``n``; the state is unchanged.

        Raises :class:`~trustwire.errors.DecryptionFailed` when authentication fails.
        """
        aead = self._keyed_aead(n)
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise NoiseError(f"Noise messages are limited to {MAX_MESSAGE_LEN} bytes")
        return aead.open(self._nonce(n), ciphertext, ad)

    def _keyed_aead(self, n: int) -> Aead:
        if self._aead is None:
            raise NoiseError("cipher state has no key")
        if not 0 <= n < MAX_NONCE:
            raise NoiseError("nonce must be in 0..2**64-2")
        return self._aead

    def rekey(self) -> None:
        """Replace ``k`` with ``ENCRYPT(k, 2**64 - 1, "", zeros)[:32]``; ``n`` is kept."""
        aead = self._aead
        if aead is None:
            raise NoiseError("cannot rekey a cipher state without a key")
        self._aead = self._make(aead.seal(self._nonce(MAX_NONCE), _ZEROS, b"")[:KEY_LEN])


def _hkdf2(hash_function: HashFunction, chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise's HKDF with two outputs (spec §4.3)."""
    temp_key = hash_function.hmac(chaining_key, ikm)
    output1 = hash_function.hmac(temp_key, b"\x01")
    output2 = hash_function.hmac(temp_key, output1 + b"\x02")
    return output1, output2


def _hkdf3(
    hash_function: HashFunction, chaining_key: bytes, ikm: bytes
) -> tuple[bytes, bytes, bytes]:
    """Noise's HKDF with three outputs (spec §4.3)."""
    temp_key = hash_function.hmac(chaining_key, ikm)
    output1 = hash_function.hmac(temp_key, b"\x01")
    output2 = hash_function.hmac(temp_key, output1 + b"\x02")
    output3 = hash_function.hmac(temp_key, output2 + b"\x03")
    return output1, output2, output3


class SymmetricState:
    """The chaining key ``ck``, handshake hash ``h`` and a CipherState (spec §5.2)."""

    __slots__ = ("_cipher", "_cipher_name", "_ck", "_h", "_hash")

    def __init__(self, protocol: NoiseProtocol | str) -> None:
        if isinstance(protocol, str):
            protocol = parse_protocol_name(protocol)
        self._hash = HASHES[protocol.hash]
        self._cipher_name = protocol.cipher
        name = protocol.name.encode("ascii")
        hashlen = self._hash.hashlen
        if len(name) <= hashlen:
            self._h = name + bytes(hashlen - len(name))
        else:
            self._h = self._hash.digest(name)
        self._ck = self._h
        self._cipher = CipherState(protocol.cipher)

    def __repr__(self) -> str:
        return f"SymmetricState({self._hash.name}, {self._cipher!r})"

    @property
    def handshake_hash(self) -> bytes:
        """``h``: the hash of everything sent and received so far."""
        return self._h

    def has_key(self) -> bool:
        """True once any key material has been mixed in."""
        return self._cipher.has_key()

    def mix_key(self, ikm: bytes) -> None:
        """``ck, temp_k = HKDF(ck, ikm, 2)``; the cipher takes ``temp_k[:32]``."""
        self._ck, temp_k = _hkdf2(self._hash, self._ck, ikm)
        self._cipher.initialize_key(temp_k[:KEY_LEN])

    def mix_hash(self, data: bytes) -> None:
        """``h = HASH(h || data)``."""
        self._h = self._hash.digest(self._h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        """``ck, temp_h, temp_k = HKDF(ck, ikm, 3)``; mix ``temp_h`` into ``h``, key ``temp_k``."""
        self._ck, temp_h, temp_k = _hkdf3(self._hash, self._ck, ikm)
        self.mix_hash(temp_h)
        self._cipher.initialize_key(temp_k[:KEY_LEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """Encrypt with ``h`` as associated data, then mix the ciphertext into ``h``."""
        ciphertext = self._cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """Decrypt with ``h`` as associated data, then mix the ciphertext into ``h``."""
        plaintext = self._cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Derive the two transport cipher states from ``ck``."""
        temp_k1, temp_k2 = _hkdf2(self._hash, self._ck, b"")
        return (
            CipherState(self._cipher_name, temp_k1[:KEY_LEN]),
            CipherState(self._cipher_name, temp_k2[:KEY_LEN]),
        )

    def clear(self) -> None:
        """Drop ``ck`` and the handshake key once they are no longer needed; ``h`` stays."""
        self._ck = b""
        self._cipher.initialize_key(None)


class HandshakeState:
    """One side of a Noise handshake (spec §5.3).

    Build it with :meth:`initialize`, then alternate :meth:`write_message` and
    :meth:`read_message` as the pattern dictates (the initiator writes first). When
    :attr:`is_complete` is true, :meth:`split` returns the transport cipher states.
    """

    __slots__ = (
        "_dh",
        "_e",
        "_failed",
        "_index",
        "_initiator",
        "_protocol",
        "_psks",
        "_re",
        "_rs",
        "_s",
        "_split_done",
        "_symmetric",
    )

    def __init__(
        self,
        protocol: NoiseProtocol,
        *,
        initiator: bool,
        prologue: bytes,
        s: KeyPair | None,
        e: KeyPair | None,
        rs: bytes | None,
        re: bytes | None,
        psks: Sequence[bytes],
    ) -> None:
        """Prefer :meth:`initialize`, which parses the protocol name."""
        dh = _DH[protocol.dh]
        pattern = protocol.pattern
        self._protocol = protocol
        self._initiator = bool(initiator)
        self._dh = dh
        self._s = _checked_pair(s, dh, "static key pair s")
        self._e = _checked_pair(e, dh, "ephemeral key pair e")
        self._rs = _checked_public(rs, dh, "remote static key rs")
        self._re = _checked_public(re, dh, "remote ephemeral key re")
        given = {"s": self._s, "e": self._e, "rs": self._rs, "re": self._re}
        side = "initiator" if self._initiator else "responder"
        for key in sorted(pattern.needs(self._initiator)):
            if given[key] is None:
                raise NoiseError(f"{pattern.name} needs {key} for the {side}")
        if len(psks) != pattern.psk_count:
            raise NoiseError(f"{pattern.name} needs {pattern.psk_count} psks, got {len(psks)}")
        if any(len(psk) != PSK_LEN for psk in psks):
            raise NoiseError(f"each psk must be {PSK_LEN} bytes")
        self._psks = [bytes(psk) for psk in psks]
        self._index = 0
        self._failed = False
        self._split_done = False

        self._symmetric = SymmetricState(protocol)
        self._symmetric.mix_hash(bytes(prologue))
        # Pre-messages: the initiator's first, then the responder's (spec §5.3).
        for pre_is_initiator, tokens in (
            (True, pattern.initiator_pre),
            (False, pattern.responder_pre),
        ):
            local = pre_is_initiator == self._initiator
            for step in tokens:
                if local:
                    pair = self._s if step == "s" else self._e
                    public = pair.public if pair is not None else None
                else:
                    public = self._rs if step == "s" else self._re
                if public is None:  # needs() already guaranteed these keys
                    raise NoiseError(f"pre-message key {step!r} missing")
                self._symmetric.mix_hash(public)
                if step == "e" and protocol.psk:
                    self._symmetric.mix_key(public)

    @classmethod
    def initialize(
        cls,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: KeyPair | None = None,
        e: KeyPair | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
    ) -> HandshakeState:
        """Start a handshake for ``protocol_name`` (e.g. ``Noise_IK_25519_AESGCM_SHA256``).

        ``s``/``e`` are this side's key pairs, ``rs``/``re`` the peer's public keys known
        in advance, ``psks`` the pre-shared keys in the order the pattern uses them.
        Raises :class:`~trustwire.errors.NoiseError` for an unsupported name, a key of the
        wrong size, or a key the pattern needs but was not given.
        """
        return cls(
            parse_protocol_name(protocol_name),
            initiator=initiator,
            prologue=prologue,
            s=s,
            e=e,
            rs=rs,
            re=re,
            psks=psks,
        )

    def __repr__(self) -> str:
        side = "initiator" if self._initiator else "responder"
        total = len(self._protocol.pattern.messages)
        state = "failed" if self._failed else f"message {self._index}/{total}"
        return f"HandshakeState({self._protocol.name}, {side}, {state})"

    @property
    def protocol(self) -> NoiseProtocol:
        """The parsed protocol name."""
        return self._protocol

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def is_complete(self) -> bool:
        """True once every message of the pattern has been written or read."""
        return self._index >= len(self._protocol.pattern.messages)

    @property
    def is_my_turn(self) -> bool:
        """True when the next call should be :meth:`write_message`."""
        return not self.is_complete and (self._index % 2 == 0) == self._initiator

    @property
    def handshake_hash(self) -> bytes:
        """``h``; after completion, a unique identifier of this handshake (channel binding)."""
        return self._symmetric.handshake_hash

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once known."""
        return self._rs

    @property
    def remote_ephemeral(self) -> bytes | None:
        """The peer's ephemeral public key, once known."""
        return self._re

    def write_message(self, payload: bytes = b"") -> bytes:
        """Process the next message pattern as its writer; return the message bytes."""
        tokens = self._next_tokens(writing=True)
        size = self._message_size(tokens) + len(payload)
        if size > MAX_MESSAGE_LEN:
            raise NoiseError(f"handshake message of {size} bytes exceeds {MAX_MESSAGE_LEN}")
        symmetric = self._symmetric
        psk_mode = self._protocol.psk
        parts: list[bytes] = []
        try:
            for step in tokens:
                if step == "e":
                    if self._e is None:
                        self._e = self._dh.generate()
                    parts.append(self._e.public)
                    symmetric.mix_hash(self._e.public)
                    if psk_mode:
                        symmetric.mix_key(self._e.public)
                elif step == "s":
                    if self._s is None:  # needs() already guaranteed s
                        raise NoiseError("static key pair missing")
                    parts.append(symmetric.encrypt_and_hash(self._s.public))
                elif step == "psk":
                    symmetric.mix_key_and_hash(self._psks.pop(0))
                else:
                    self._mix_dh(step)
            parts.append(symmetric.encrypt_and_hash(payload))
        except Exception:
            self._failed = True
            raise
        self._advance()
        return b"".join(parts)

    def read_message(self, message: bytes) -> bytes:
        """Process the next message pattern as its reader; return the decrypted payload.

        Raises :class:`~trustwire.errors.HandshakeFailed` for a malformed message and
        :class:`~trustwire.errors.DecryptionFailed` when authentication fails; either
        way the handshake is dead.
        """
        tokens = self._next_tokens(writing=False)
        try:
            if len(message) > MAX_MESSAGE_LEN:
                raise HandshakeFailed(f"handshake message exceeds {MAX_MESSAGE_LEN} bytes")
            if len(message) < self._message_size(tokens):
                raise HandshakeFailed("handshake message too short")
            payload = self._read_tokens(tokens, bytes(message))
        except Exception:
            self._failed = True
            raise
        self._advance()
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """Return ``(initiator->responder, responder->initiator)`` transport cipher states.

        Callable once, after the handshake is complete: handing the same keys out twice
        would invite nonce reuse. The chaining key is dropped afterwards. In one-way
        patterns (``N``, ``K``, ``X``) only the first is meant to be used (spec §7.4).
        """
        if self._failed:
            raise NoiseError("handshake failed; its state is unusable")
        if not self.is_complete:
            raise NoiseError("handshake is not complete")
        if self._split_done:
            raise NoiseError("split() was already called for this handshake")
        pair = self._symmetric.split()
        self._split_done = True
        self._symmetric.clear()
        return pair

    # -- internals -------------------------------------------------------------------

    def _next_tokens(self, *, writing: bool) -> tuple[str, ...]:
        if self._failed:
            raise NoiseError("handshake failed; its state is unusable")
        if self.is_complete:
            raise NoiseError("handshake is already complete")
        if self.is_my_turn != writing:
            verb = "read" if writing else "write"
            raise NoiseError(f"out of turn: this side must {verb} the next message")
        return self._protocol.pattern.messages[self._index]

    def _message_size(self, tokens: tuple[str, ...]) -> int:
        """Bytes a message carries besides the payload plaintext, before processing it."""
        dhlen = self._dh.dhlen
        has_key = self._symmetric.has_key()
        size = 0
        for step in tokens:
            if step == "e":
                size += dhlen
                has_key = has_key or self._protocol.psk
            elif step == "s":
                size += dhlen + (TAG_LEN if has_key else 0)
            else:  # every DH token and "psk" mixes a key in
                has_key = True
        return size + (TAG_LEN if has_key else 0)

    def _read_tokens(self, tokens: tuple[str, ...], message: bytes) -> bytes:
        symmetric = self._symmetric
        dhlen = self._dh.dhlen
        offset = 0
        for step in tokens:
            if step == "e":
                self._re = message[offset : offset + dhlen]
                offset += dhlen
                symmetric.mix_hash(self._re)
                if self._protocol.psk:
                    symmetric.mix_key(self._re)
            elif step == "s":
                length = dhlen + (TAG_LEN if symmetric.has_key() else 0)
                self._rs = symmetric.decrypt_and_hash(message[offset : offset + length])
                offset += length
            elif step == "psk":
                symmetric.mix_key_and_hash(self._psks.pop(0))
            else:
                self._mix_dh(step)
        return symmetric.decrypt_and_hash(message[offset:])

    def _mix_dh(self, step: str) -> None:
        # "es" is the initiator's ephemeral with the responder's static, "se" the reverse.
        if step == "ee":
            local, remote = self._e, self._re
        elif step == "ss":
            local, remote = self._s, self._rs
        elif (step == "es") == self._initiator:
            local, remote = self._e, self._rs
        else:
            local, remote = self._s, self._re
        if local is None or remote is None:
            raise NoiseError(f"token {step!r} needs a key this side does not have")
        try:
            shared = self._dh.exchange(local, remote)
        except CryptoError as exc:
            raise HandshakeFailed("key agreement failed: invalid peer public key") from exc
        self._symmetric.mix_key(shared)

    def _advance(self) -> None:
        self._index += 1
        if self.is_complete:
            # Forward secrecy hygiene: the ephemeral private key and psks are not
            # needed once the last message is processed.
            self._e = None
            self._psks = []


def _checked_pair(pair: KeyPair | None, dh: DhFunction, what: str) -> KeyPair | None:
    if pair is None:
        return None
    if len(pair.private) != dh.dhlen or len(pair.public) != dh.dhlen:
        raise NoiseError(f"{what} must have {dh.dhlen}-byte keys for {dh.name}")
    return pair


def _checked_public(public: bytes | None, dh: DhFunction, what: str) -> bytes | None:
    if public is None:
        return None
    if len(public) != dh.dhlen:
        raise NoiseError(f"{what} must be {dh.dhlen} bytes for {dh.name}")
    return bytes(public)
