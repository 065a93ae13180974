"""Diffie-Hellman recipes: X25519 and X448 on raw key bytes.

Keys are raw bytes (32 bytes for X25519, 56 for X448) as the Noise framework and
did:key use them. A DH result that is all zero (a low-order peer key) is rejected
with :class:`~trustwire.errors.CryptoError`, as pyca does.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import x448, x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from trustwire.errors import CryptoError

__all__ = ["X448", "X25519", "DhFunction", "KeyPair"]


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A DH key pair as raw bytes. ``repr`` never shows the private key."""

    private: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()})"


class DhFunction:
    """One DH function (Noise's DH section): ``generate``, ``public_from_private``, ``dh``."""

    name: str
    dhlen: int

    def generate(self) -> KeyPair:
        raise NotImplementedError

    def public_from_private(self, private: bytes) -> bytes:
        raise NotImplementedError

    def keypair(self, private: bytes) -> KeyPair:
        """Build a key pair from raw private bytes."""
        return KeyPair(private=bytes(private), public=self.public_from_private(private))

    def dh(self, private: bytes, public: bytes) -> bytes:
        raise NotImplementedError


class _X25519(DhFunction):
    name = "25519"
    dhlen = 32

    def generate(self) -> KeyPair:
        from trustwire.crypto.random import random_bytes

        return self.keypair(random_bytes(32))

    def public_from_private(self, private: bytes) -> bytes:
        if len(private) != 32:
            raise ValueError("X25519 private key must be 32 bytes")
        key = x25519.X25519PrivateKey.from_private_bytes(private)
        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def dh(self, private: bytes, public: bytes) -> bytes:
        if len(public) != 32:
            raise CryptoError("X25519 public key must be 32 bytes")
        try:
            key = x25519.X25519PrivateKey.from_private_bytes(private)
            return key.exchange(x25519.X25519PublicKey.from_public_bytes(public))
        except ValueError as exc:
            raise CryptoError("X25519 key agreement failed") from exc

    @staticmethod
    def private_bytes_of(key: x25519.X25519PrivateKey) -> bytes:
        return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


class _X448(DhFunction):
    name = "448"
    dhlen = 56

    def generate(self) -> KeyPair:
        from trustwire.crypto.random import random_bytes

        return self.keypair(random_bytes(56))

    def public_from_private(self, private: bytes) -> bytes:
        if len(private) != 56:
            raise ValueError("X448 private key must be 56 bytes")
        key = x448.X448PrivateKey.from_private_bytes(private)
        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def dh(self, private: bytes, public: bytes) -> bytes:
        if len(public) != 56:
            raise CryptoError("X448 public key must be 56 bytes")
        try:
            key = x448.X448PrivateKey.from_private_bytes(private)
            return key.exchange(x448.X448PublicKey.from_public_bytes(public))
        except ValueError as exc:
            raise CryptoError("X448 key agreement failed") from exc


X25519: DhFunction = _X25519()
X448: DhFunction = _X448()
