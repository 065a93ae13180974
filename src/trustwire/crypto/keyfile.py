"""Private key files: PKCS#8 PEM, passphrase-encrypted when a passphrase is given.

Invariants:

- A private key file is never visible with a wider mode than 0600, not even for an
  instant: it is written to a temporary file created by ``os.open(..., 0o600)`` in the
  destination directory, fsynced, then renamed over the destination (atomic on POSIX),
  so a crash leaves either the old file or the new one, never a torn key.
- Reading refuses a file that is not a regular file, is larger than
  :data:`MAX_KEY_FILE_SIZE`, or whose mode grants any group/other permission.
- Every failure is a :class:`~trustwire.errors.KeyFileError` naming the file and the
  condition, never containing key bytes or the passphrase.

Encryption uses pyca's ``BestAvailableEncryption`` (today PBES2: PBKDF2-HMAC-SHA256 +
AES-256-CBC), so the files open with standard tools (``openssl pkey``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from trustwire.crypto.dh import X25519, KeyPair
from trustwire.crypto.random import random_bytes
from trustwire.crypto.signing import SigningKey
from trustwire.errors import KeyFileError

__all__ = [
    "MAX_KEY_FILE_SIZE",
    "PASSPHRASE_ENV",
    "Passphrase",
    "PrivateKey",
    "decode_private_key",
    "encode_private_key",
    "ensure_private_dir",
    "passphrase_from_env",
    "read_agreement_key",
    "read_pem_key",
    "read_private_key",
    "read_signing_key",
    "reencode_pem_key",
    "write_agreement_key",
    "write_file_atomic",
    "write_pem_key",
    "write_private_key",
    "write_signing_key",
]

PASSPHRASE_ENV = "TRUSTWIRE_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
# An encrypted PKCS#8 PEM of any key type we use is well under 1 KiB; the cap only
# bounds memory when pointed at the wrong file.
MAX_KEY_FILE_SIZE = 64 * 1024

Passphrase = str | bytes | None
PrivateKey = Ed25519PrivateKey | X25519PrivateKey | EllipticCurvePrivateKey


def passphrase_from_env() -> bytes | None:
    """The passphrase from ``$TRUSTWIRE_PASSPHRASE``; ``None`` when unset or empty.

    An empty passphrase cannot encrypt anything, so it is treated as no passphrase.
    """
    value = os.environ.get(PASSPHRASE_ENV)
    if not value:
        return None
    return value.encode("utf-8")


def _passphrase_bytes(passphrase: Passphrase) -> bytes | None:
    if passphrase is None:
        return None
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    if not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be str, bytes or None")
    if not passphrase:
        raise ValueError("passphrase must not be empty (use None for an unencrypted file)")
    return passphrase


def _encryption(passphrase: Passphrase) -> KeySerializationEncryption:
    secret = _passphrase_bytes(passphrase)
    return NoEncryption() if secret is None else BestAvailableEncryption(secret)


# --- encoding -------------------------------------------------------------------------


def encode_private_key(key: PrivateKey, passphrase: Passphrase) -> bytes:
    """PKCS#8 PEM of ``key``, encrypted under ``passphrase`` unless it is ``None``."""
    if not isinstance(key, Ed25519PrivateKey | X25519PrivateKey | EllipticCurvePrivateKey):
        raise TypeError("unsupported private key type")
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, _encryption(passphrase))


def decode_private_key(data: bytes, passphrase: Passphrase, *, source: str) -> PrivateKey:
    """Parse a PKCS#8 PEM private key; ``source`` names it in error messages.

    Raises :class:`KeyFileError` for a missing or wrong passphrase, a passphrase given
    for an unencrypted key, a corrupt file or an unsupported key type.
    """
    secret = _passphrase_bytes(passphrase)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    if encrypted and secret is None:
        raise KeyFileError(f"{source}: the key is encrypted and no passphrase was given")
    if not encrypted and secret is not None:
        # Refusing is deliberate: silently accepting a clear key would hide from an
        # operator that a file they believe protected is not.
        raise KeyFileError(f"{source}: a passphrase was given but the key is not encrypted")
    try:
        key = load_pem_private_key(data, password=secret)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise KeyFileError(f"{source}: wrong passphrase or corrupt key file") from exc
        raise KeyFileError(f"{source}: not a valid PKCS#8 PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey | X25519PrivateKey | EllipticCurvePrivateKey):
        raise KeyFileError(f"{source}: unsupported private key type")
    return key


def reencode_pem_key(key_pem: bytes, passphrase: Passphrase) -> bytes:
    """Re-encode an unencrypted PKCS#8 PEM key under ``passphrase`` (or in clear if None)."""
    return encode_private_key(decode_private_key(key_pem, None, source="PEM key"), passphrase)


# --- files ----------------------------------------------------------------------------


def ensure_private_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` (and parents) with mode 0700 if missing; return it as a Path."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.is_dir():
        raise KeyFileError(f"{path}: not a directory")
    return path


def write_file_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Atomically replace ``path`` with ``data``; the file never exists with another mode.

    The temporary file is created in the same directory (so the rename is atomic) with
    ``os.open(..., mode)``; ``fchmod`` then pins the exact mode against the umask before
    any byte is written.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{random_bytes(8).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, mode)
    except OSError as exc:
        raise KeyFileError(f"{target}: cannot create file ({exc.strerror})") from exc
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeyFileError(f"{target}: cannot write file ({exc.strerror})") from exc
    # Persist the rename itself; best effort where directories cannot be opened.
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read_private_file(path: str | os.PathLike[str]) -> bytes:
    target = Path(path)
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise KeyFileError(f"{target}: cannot open key file ({exc.strerror})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{target}: not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"{target}: key file mode {stat.S_IMODE(info.st_mode):04o} allows group or "
                "other access; it must be 0600"
            )
        if info.st_size > MAX_KEY_FILE_SIZE:
            raise KeyFileError(f"{target}: larger than {MAX_KEY_FILE_SIZE} bytes")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, 8192)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_KEY_FILE_SIZE:
                raise KeyFileError(f"{target}: larger than {MAX_KEY_FILE_SIZE} bytes")
            chunks.append(chunk)
    except OSError as exc:
        raise KeyFileError(f"{target}: cannot read key file ({exc.strerror})") from exc
    finally:
        os.close(fd)
    return b"".join(chunks)


def write_private_key(
    path: str | os.PathLike[str], key: PrivateKey, passphrase: Passphrase
) -> None:
    """Write ``key`` as PKCS#8 PEM (encrypted when ``passphrase`` is given), mode 0600."""
    write_file_atomic(path, encode_private_key(key, passphrase), mode=0o600)


def read_private_key(path: str | os.PathLike[str], passphrase: Passphrase) -> PrivateKey:
    """Read a key written by :func:`write_private_key` (see :func:`decode_private_key`)."""
    return decode_private_key(_read_private_file(path), passphrase, source=str(path))


def write_signing_key(
    path: str | os.PathLike[str], key: SigningKey, passphrase: Passphrase
) -> None:
    """Write an Ed25519 identity key."""
    write_private_key(path, key.pyca_key, passphrase)


def read_signing_key(path: str | os.PathLike[str], passphrase: Passphrase) -> SigningKey:
    """Read an Ed25519 identity key; :class:`KeyFileError` if the file holds another type."""
    key = read_private_key(path, passphrase)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return SigningKey(key)


def write_agreement_key(
    path: str | os.PathLike[str], keypair: KeyPair, passphrase: Passphrase
) -> None:
    """Write an X25519 agreement key."""
    try:
        key = X25519PrivateKey.from_private_bytes(keypair.private)
    except ValueError as exc:
        raise ValueError("X25519 private key must be 32 bytes") from exc
    write_private_key(path, key, passphrase)


def read_agreement_key(path: str | os.PathLike[str], passphrase: Passphrase) -> KeyPair:
    """Read an X25519 agreement key as a raw :class:`KeyPair`."""
    key = read_private_key(path, passphrase)
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError(f"{path}: not an X25519 private key")
    return X25519.keypair(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))


def write_pem_key(path: str | os.PathLike[str], key_pem: bytes, passphrase: Passphrase) -> None:
    """Write an unencrypted PKCS#8 PEM key (e.g. a TLS key) to ``path``, re-encrypted."""
    write_file_atomic(path, reencode_pem_key(key_pem, passphrase), mode=0o600)


def read_pem_key(path: str | os.PathLike[str], passphrase: Passphrase) -> bytes:
    """Read a key file and return it as unencrypted PKCS#8 PEM (for ``ssl`` contexts)."""
    return encode_private_key(read_private_key(path, passphrase), None)
