"""AEAD recipes: AES-256-GCM and ChaCha20-Poly1305.

``seal``/``open`` take a 32-byte key, a 12-byte nonce, plaintext/ciphertext and
associated data. ``open`` raises :class:`~trustwire.errors.DecryptionFailed` for every
cause (wrong key, tampered ciphertext or tag, wrong associated data, a nonce that is not
12 bytes), never anything more specific: the caller learns only that the box did not
open. ``seal`` raises ``ValueError`` for a nonce that is not 12 bytes: AES-GCM would
accept other lengths, but the recipes promise one nonce size for both ciphers.

Only 256-bit keys are accepted (AES-256-GCM, never AES-128 or AES-192).

Cipher objects are cached per key by :class:`Aead` because constructing pyca's
``AESGCM`` costs more than sealing a small message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from trustwire.errors import DecryptionFailed

__all__ = ["KEY_SIZE", "NONCE_SIZE", "TAG_SIZE", "Aead", "AesGcm", "ChaChaPoly"]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16


class Aead(ABC):
    """An AEAD bound to one key."""

    name = ""

    def __init__(self, key: bytes):
        if len(key) != KEY_SIZE:
            raise ValueError(f"{self.name} key must be {KEY_SIZE} bytes")
        self._cipher = self._make(bytes(key))

    @abstractmethod
    def _make(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        """Implemented by each concrete recipe."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<key hidden>)"

    def seal(self, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
        """Encrypt and authenticate; returns ciphertext || 16-byte tag."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"{self.name} nonce must be {NONCE_SIZE} bytes")
        return self._cipher.encrypt(nonce, plaintext, ad)

    def open(self, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
        """Authenticate and decrypt, or raise :class:`DecryptionFailed`."""
        if len(nonce) != NONCE_SIZE:
            raise DecryptionFailed("authenticated decryption failed")
        try:
            return self._cipher.decrypt(nonce, ciphertext, ad)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionFailed("authenticated decryption failed") from exc


class AesGcm(Aead):
    """AES-256-GCM."""

    name = "AESGCM"

    def _make(self, key: bytes) -> AESGCM:
        return AESGCM(key)


class ChaChaPoly(Aead):
    """ChaCha20-Poly1305 (RFC 8439)."""

    name = "ChaChaPoly"

    def _make(self, key: bytes) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(key)
