"""HPKE (RFC 9180) base mode, single-shot: ``seal`` to a public key, ``open`` with its private key.

trustwire uses one suite, :data:`SUITE`:

    mode_base, DHKEM(X25519, HKDF-SHA256) (0x0020), HKDF-SHA256 (0x0001), AES-256-GCM (0x0002)

Why this suite:

- **X25519** is the curve of every agent's registry agreement key (``AgentIdentity.agreement``),
  so a data key can be wrapped for an agent with nothing but what the registry already vouches
  for; no second key type to enroll, rotate or revoke.
- **HKDF-SHA256** matches the KEM's own KDF and the rest of trustwire's key derivation.
- **AES-256-GCM** is the AEAD of the shared-memory segments themselves, so one 256-bit
  primitive protects both the wrapped key and the data it unlocks.
- **Base mode** (no PSK, no sender key): the sender of a wrapped key is authenticated at
  another layer (the coordinator's mTLS caller identity and the signed segments), and base mode
  lets any holder of a data key wrap it for a newly granted agent without extra key material.

The wrapper is a thin layer over pyca ``cryptography``'s HPKE. pyca returns ``enc || ct`` as
one byte string; here ``seal`` returns ``(enc, ciphertext)`` separately and ``open`` takes them
separately, because the wire formats store them as two fields.

Invariants:

- ``open`` raises :class:`~trustwire.errors.DecryptionFailed` for every failure caused by its
  untrusted inputs (``enc``, ``ciphertext``, ``info``, ``aad``): wrong key, tampering, wrong
  context, wrong sizes. It never says which. A malformed *private* key is the caller's own
  bug and raises ``ValueError``.
- ``seal`` raises ``ValueError`` for a recipient key that is not 32 bytes and
  :class:`~trustwire.errors.CryptoError` for a low-order one (the shared secret would be zero).
- Every input has a size limit checked before any cryptography runs.
- Associated data: pyca's public single-shot API binds context through ``info`` only (RFC 9180
  §8.1 recommends that for single-shot use) and the shared memory uses only ``info``. A
  non-empty ``aad`` goes through the AAD-taking variants pyca's Rust bindings expose
  (``_encrypt_with_aad``/``_decrypt_with_aad``, private to pyca); if a future pyca drops them,
  only a non-empty ``aad`` stops working, with a ``NotImplementedError`` saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.bindings._rust import openssl as _rust_openssl
from cryptography.hazmat.primitives import hpke as _pyca_hpke
from cryptography.hazmat.primitives.asymmetric import x25519

from trustwire.crypto.dh import KeyPair
from trustwire.errors import CryptoError, DecryptionFailed

__all__ = [
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
    "AEAD_CHACHA20_POLY1305",
    "ENC_SIZE",
    "KDF_HKDF_SHA256",
    "KDF_HKDF_SHA384",
    "KDF_HKDF_SHA512",
    "KEM_X25519_HKDF_SHA256",
    "MAX_AAD_SIZE",
    "MAX_INFO_SIZE",
    "MAX_PLAINTEXT_SIZE",
    "SUITE",
    "TAG_SIZE",
    "HpkeSuite",
    "open",
    "seal",
]

# RFC 9180 §7 identifiers.
KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
KDF_HKDF_SHA384 = 0x0002
KDF_HKDF_SHA512 = 0x0003
AEAD_AES_128_GCM = 0x0001
AEAD_AES_256_GCM = 0x0002
AEAD_CHACHA20_POLY1305 = 0x0003

ENC_SIZE = 32  # Nenc of DHKEM(X25519, HKDF-SHA256): the ephemeral public key
KEY_SIZE = 32  # X25519 public and private keys
TAG_SIZE = 16  # every AEAD above
# Limits on untrusted inputs; generous for wrapped keys (32-byte plaintexts, ~200-byte info).
MAX_PLAINTEXT_SIZE = 1024 * 1024
MAX_INFO_SIZE = 4096
MAX_AAD_SIZE = 64 * 1024

_KDFS = {
    KDF_HKDF_SHA256: _pyca_hpke.KDF.HKDF_SHA256,
    KDF_HKDF_SHA384: _pyca_hpke.KDF.HKDF_SHA384,
    KDF_HKDF_SHA512: _pyca_hpke.KDF.HKDF_SHA512,
}
_AEADS = {
    AEAD_AES_128_GCM: _pyca_hpke.AEAD.AES_128_GCM,
    AEAD_AES_256_GCM: _pyca_hpke.AEAD.AES_256_GCM,
    AEAD_CHACHA20_POLY1305: _pyca_hpke.AEAD.CHACHA20_POLY1305,
}

# pyca keeps the AAD-taking single-shot functions private; see the module docstring.
_encrypt_with_aad: Callable[..., bytes] | None = getattr(
    _rust_openssl.hpke, "_encrypt_with_aad", None
)
_decrypt_with_aad: Callable[..., bytes] | None = getattr(
    _rust_openssl.hpke, "_decrypt_with_aad", None
)


def _check_context(info: bytes, aad: bytes) -> None:
    if not isinstance(info, bytes | bytearray | memoryview) or not isinstance(
        aad, bytes | bytearray | memoryview
    ):
        raise TypeError("info and aad must be bytes")
    if len(info) > MAX_INFO_SIZE:
        raise ValueError(f"HPKE info longer than {MAX_INFO_SIZE} bytes")
    if len(aad) > MAX_AAD_SIZE:
        raise ValueError(f"HPKE aad longer than {MAX_AAD_SIZE} bytes")


def _no_aad_support() -> NotImplementedError:
    return NotImplementedError(
        "this version of cryptography offers no single-shot HPKE with associated data"
    )


@dataclass(frozen=True, slots=True)
class HpkeSuite:
    """An HPKE base-mode suite with the X25519 KEM, named by its RFC 9180 identifiers.

    trustwire itself uses :data:`SUITE` only; the other KDF/AEAD combinations exist so the
    RFC 9180 test vectors of every X25519 suite can run through the same code.
    """

    kem_id: int
    kdf_id: int
    aead_id: int
    _suite: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kem_id != KEM_X25519_HKDF_SHA256:
            raise ValueError("only DHKEM(X25519, HKDF-SHA256) (0x0020) is supported")
        if self.kdf_id not in _KDFS:
            raise ValueError(f"unsupported HPKE KDF id {self.kdf_id:#06x}")
        if self.aead_id not in _AEADS:
            raise ValueError(f"unsupported HPKE AEAD id {self.aead_id:#06x}")
        suite = _pyca_hpke.Suite(_pyca_hpke.KEM.X25519, _KDFS[self.kdf_id], _AEADS[self.aead_id])
        object.__setattr__(self, "_suite", suite)

    def seal(
        self, recipient_public: bytes, plaintext: bytes, *, info: bytes, aad: bytes = b""
    ) -> tuple[bytes, bytes]:
        """Encrypt ``plaintext`` to ``recipient_public``; returns ``(enc, ciphertext)``.

        ``enc`` is the 32-byte encapsulated (ephemeral public) key; ``ciphertext`` includes the
        16-byte tag. Each call uses a fresh ephemeral key, so sealing twice gives different
        results.
        """
        _check_context(info, aad)
        if len(recipient_public) != KEY_SIZE:
            raise ValueError(f"X25519 public key must be {KEY_SIZE} bytes")
        if len(plaintext) > MAX_PLAINTEXT_SIZE:
            raise ValueError(f"HPKE plaintext longer than {MAX_PLAINTEXT_SIZE} bytes")
        public = x25519.X25519PublicKey.from_public_bytes(bytes(recipient_public))
        try:
            if aad:
                if _encrypt_with_aad is None:
                    raise _no_aad_support()
                sealed = _encrypt_with_aad(
                    self._suite, bytes(plaintext), public, info=bytes(info), aad=bytes(aad)
                )
            else:
                sealed = self._suite.encrypt(bytes(plaintext), public, info=bytes(info))
        except ValueError as exc:  # the DH result is all zero: a low-order recipient key
            raise CryptoError("HPKE encapsulation failed") from exc
        return sealed[:ENC_SIZE], sealed[ENC_SIZE:]

    def open(
        self,
        private: bytes | KeyPair,
        enc: bytes,
        ciphertext: bytes,
        *,
        info: bytes,
        aad: bytes = b"",
    ) -> bytes:
        """Decrypt what :meth:`seal` produced, or raise :class:`DecryptionFailed`."""
        key = _private_key(private)
        try:
            _check_context(info, aad)
        except ValueError as exc:
            raise DecryptionFailed("HPKE open failed") from exc
        if len(enc) != ENC_SIZE or not TAG_SIZE <= len(ciphertext) <= MAX_PLAINTEXT_SIZE + TAG_SIZE:
            raise DecryptionFailed("HPKE open failed")
        sealed = bytes(enc) + bytes(ciphertext)
        try:
            if aad:
                if _decrypt_with_aad is None:
                    raise _no_aad_support()
                return _decrypt_with_aad(self._suite, sealed, key, info=bytes(info), aad=bytes(aad))
            return bytes(self._suite.decrypt(sealed, key, info=bytes(info)))
        except (InvalidTag, ValueError) as exc:
            raise DecryptionFailed("HPKE open failed") from exc


def _private_key(private: bytes | KeyPair) -> x25519.X25519PrivateKey:
    if isinstance(private, KeyPair):
        if isinstance(private._handle, x25519.X25519PrivateKey):
            return private._handle
        private = private.private
    if len(private) != KEY_SIZE:
        raise ValueError(f"X25519 private key must be {KEY_SIZE} bytes")
    return x25519.X25519PrivateKey.from_private_bytes(bytes(private))


SUITE = HpkeSuite(KEM_X25519_HKDF_SHA256, KDF_HKDF_SHA256, AEAD_AES_256_GCM)
"""The suite trustwire uses: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM."""


def seal(
    recipient_public: bytes, plaintext: bytes, *, info: bytes, aad: bytes = b""
) -> tuple[bytes, bytes]:
    """:meth:`HpkeSuite.seal` with :data:`SUITE`: returns ``(enc, ciphertext)``."""
    return SUITE.seal(recipient_public, plaintext, info=info, aad=aad)


def open(
    private: bytes | KeyPair, enc: bytes, ciphertext: bytes, *, info: bytes, aad: bytes = b""
) -> bytes:
    """:meth:`HpkeSuite.open` with :data:`SUITE`; :class:`DecryptionFailed` on any failure."""
    return SUITE.open(private, enc, ciphertext, info=info, aad=aad)
