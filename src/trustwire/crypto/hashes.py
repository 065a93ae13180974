"""Hash, HMAC and HKDF recipes.

Hash names follow the Noise framework: ``SHA256``, ``SHA512``, ``BLAKE2s``, ``BLAKE2b``.
``hashlib`` supplies the hash functions (pyca has no BLAKE2 with the full digest
sizes Noise needs in its HMAC construction); ``hmac`` gives RFC 2104 HMAC over any of
them. :func:`hkdf_sha256` uses pyca's HKDF for protocol key derivation outside Noise.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes as _pyca_hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    # The typeshed protocol every hashlib constructor's result satisfies (BLAKE2 too).
    from _hashlib import _HashObject

__all__ = [
    "HASHES",
    "HashFunction",
    "constant_time_equal",
    "hkdf_sha256",
    "hmac_digest",
    "sha256",
]


@dataclass(frozen=True, slots=True)
class HashFunction:
    """A hash function with its Noise name, output length and block length."""

    name: str
    hashlen: int
    blocklen: int
    _new: Callable[[], _HashObject]

    def digest(self, data: bytes) -> bytes:
        """``HASH(data)``."""
        h = self._new()
        h.update(data)
        return h.digest()

    def hmac(self, key: bytes, data: bytes) -> bytes:
        """RFC 2104 ``HMAC-HASH(key, data)``, the construction Noise uses even for BLAKE2."""
        return _hmac.new(key, data, self._new).digest()


HASHES: dict[str, HashFunction] = {
    "SHA256": HashFunction("SHA256", 32, 64, hashlib.sha256),
    "SHA512": HashFunction("SHA512", 64, 128, hashlib.sha512),
    "BLAKE2s": HashFunction("BLAKE2s", 32, 64, hashlib.blake2s),
    "BLAKE2b": HashFunction("BLAKE2b", 64, 128, hashlib.blake2b),
}


def sha256(data: bytes) -> bytes:
    """SHA-256 digest."""
    return hashlib.sha256(data).digest()


def hmac_digest(hash_name: str, key: bytes, data: bytes) -> bytes:
    """HMAC with one of :data:`HASHES` (``SHA256``, ``SHA512``, ``BLAKE2s``, ``BLAKE2b``)."""
    return HASHES[hash_name].hmac(key, data)


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256."""
    return HKDF(algorithm=_pyca_hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time independent of their contents."""
    return _hmac.compare_digest(a, b)
