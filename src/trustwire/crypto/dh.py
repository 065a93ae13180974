"""Diffie-Hellman recipes: X25519 and X448 on raw key bytes.

Keys are raw bytes (32 bytes for X25519, 56 for X448) as the Noise framework and
did:key use them. A DH result that is all zero (a low-order peer key) is rejected
with :class:`~trustwire.errors.CryptoError`, as pyca does; so is a public key of the
wrong length.

A :class:`KeyPair` made by :meth:`DhFunction.keypair` or :meth:`DhFunction.generate`
carries the parsed pyca private key next to the raw bytes, so :meth:`DhFunction.exchange`
skips re-parsing it (parsing costs a scalar multiplication). That handle lives and dies
with the key pair: nothing is cached globally, so an ephemeral private key is gone once
its key pair is dropped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import x448, x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from trustwire.crypto.random import random_bytes
from trustwire.errors import CryptoError

__all__ = ["X448", "X25519", "DhFunction", "KeyPair"]

_PrivateKey = x25519.X25519PrivateKey | x448.X448PrivateKey


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A DH key pair as raw bytes. ``repr`` never shows the private key."""

    private: bytes
    public: bytes
    # Parsed private key for fast exchange; not part of equality or repr.
    _handle: _PrivateKey | None = field(default=None, compare=False, repr=False)

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()})"


class DhFunction(ABC):
    """One DH function (Noise's DH section): ``generate``, ``public_from_private``, ``dh``."""

    name: str
    dhlen: int

    @abstractmethod
    def _load_private(self, private: bytes) -> _PrivateKey:
        """Implemented by each concrete recipe."""

    @abstractmethod
    def _exchange(self, key: _PrivateKey, public: bytes) -> bytes:
        """Implemented by each concrete recipe."""

    def __repr__(self) -> str:
        return f"<DH {self.name}>"

    def generate(self) -> KeyPair:
        """A fresh key pair from :func:`~trustwire.crypto.random.random_bytes`."""
        return self.keypair(random_bytes(self.dhlen))

    def keypair(self, private: bytes) -> KeyPair:
        """Build a key pair from raw private bytes (``ValueError`` if the length is wrong)."""
        key = self._load_private(private)
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return KeyPair(private=bytes(private), public=public, _handle=key)

    def public_from_private(self, private: bytes) -> bytes:
        """The raw public key of a raw private key."""
        return self.keypair(private).public

    def dh(self, private: bytes, public: bytes) -> bytes:
        """The shared secret of raw ``private`` and raw peer ``public``, or ``CryptoError``."""
        try:
            key = self._load_private(private)
        except ValueError as exc:
            raise CryptoError(f"{self.name} private key must be {self.dhlen} bytes") from exc
        return self._exchange(key, public)

    def exchange(self, pair: KeyPair, public: bytes) -> bytes:
        """Like :meth:`dh` with ``pair.private``, reusing the pair's parsed key if it has one."""
        if pair._handle is None:
            return self.dh(pair.private, public)
        return self._exchange(pair._handle, public)


class _X25519(DhFunction):
    name = "25519"
    dhlen = 32

    def _load_private(self, private: bytes) -> x25519.X25519PrivateKey:
        if len(private) != 32:
            raise ValueError("X25519 private key must be 32 bytes")
        return x25519.X25519PrivateKey.from_private_bytes(private)

    def _exchange(self, key: _PrivateKey, public: bytes) -> bytes:
        if not isinstance(key, x25519.X25519PrivateKey):
            raise CryptoError("key pair is not an X25519 key pair")
        if len(public) != 32:
            raise CryptoError("X25519 public key must be 32 bytes")
        try:
            return key.exchange(x25519.X25519PublicKey.from_public_bytes(public))
        except ValueError as exc:
            raise CryptoError("X25519 key agreement failed") from exc

    @staticmethod
    def private_bytes_of(key: x25519.X25519PrivateKey) -> bytes:
        return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


class _X448(DhFunction):
    name = "448"
    dhlen = 56

    def _load_private(self, private: bytes) -> x448.X448PrivateKey:
        if len(private) != 56:
            raise ValueError("X448 private key must be 56 bytes")
        return x448.X448PrivateKey.from_private_bytes(private)

    def _exchange(self, key: _PrivateKey, public: bytes) -> bytes:
        if not isinstance(key, x448.X448PrivateKey):
            raise CryptoError("key pair is not an X448 key pair")
        if len(public) != 56:
            raise CryptoError("X448 public key must be 56 bytes")
        try:
            return key.exchange(x448.X448PublicKey.from_public_bytes(public))
        except ValueError as exc:
            raise CryptoError("X448 key agreement failed") from exc


X25519: DhFunction = _X25519()
X448: DhFunction = _X448()
