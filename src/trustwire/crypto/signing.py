"""Ed25519 signing recipes.

:class:`SigningKey` holds a private identity key; :class:`VerifyKey` its public half.
``verify`` raises :class:`~trustwire.errors.InvalidSignature` on any failure.
``repr`` never reveals private bytes.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from trustwire.crypto.random import random_bytes
from trustwire.errors import InvalidSignature

__all__ = ["SIGNATURE_SIZE", "SigningKey", "VerifyKey"]

SIGNATURE_SIZE = 64


class VerifyKey:
    """An Ed25519 public key."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: Ed25519PublicKey):
        self._key = key
        self._raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        """Load a 32-byte raw public key (``ValueError`` if malformed)."""
        if len(raw) != 32:
            raise ValueError("Ed25519 public key must be 32 bytes")
        return cls(Ed25519PublicKey.from_public_bytes(bytes(raw)))

    def to_bytes(self) -> bytes:
        return self._raw

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` is valid for ``data``."""
        if len(signature) != SIGNATURE_SIZE:
            raise InvalidSignature("signature has the wrong length")
        try:
            self._key.verify(signature, data)
        except _PycaInvalidSignature as exc:
            raise InvalidSignature("signature did not verify") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self._raw.hex()})"


class SigningKey:
    """An Ed25519 private key."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519PrivateKey):
        self._key = key
        self._public = VerifyKey(key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_bytes(random_bytes(32))

    @classmethod
    def from_bytes(cls, seed: bytes) -> SigningKey:
        """Load from a 32-byte seed."""
        if len(seed) != 32:
            raise ValueError("Ed25519 seed must be 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    def to_bytes(self) -> bytes:
        """The 32-byte seed. Handle with care: this is the secret."""
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public_key(self) -> VerifyKey:
        return self._public

    @property
    def pyca_key(self) -> Ed25519PrivateKey:
        """The underlying pyca key, for X.509 building inside ``crypto/`` and ``identity/``."""
        return self._key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(public={self._public.to_bytes().hex()})"
