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

Encryption: the unencrypted PKCS#8 DER is sealed with AES-256-GCM under a key derived
from the passphrase with scrypt (N = 2^15, r = 8, p = 1, 16-byte random salt) and stored
as a PEM block ``TRUSTWIRE ENCRYPTED PRIVATE KEY`` whose payload is
``"TWK1" || u8 log2(N) || salt(16) || nonce(12) || ciphertext+tag``. pyca's
``BestAvailableEncryption`` for PKCS#8 uses PBKDF2 with only 2,048 iterations, which makes
offline guessing of weak passphrases cheap; scrypt's memory-hard cost does not. Standard
encrypted PKCS#8 files (``ENCRYPTED PRIVATE KEY``) are still read.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
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
    "openssl_pem_key",
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


_TW_BEGIN = b"-----BEGIN TRUSTWIRE ENCRYPTED PRIVATE KEY-----"
_TW_END = b"-----END TRUSTWIRE ENCRYPTED PRIVATE KEY-----"
_TW_MAGIC = b"TWK1"
_TW_AD = b"trustwire/key-file/v1"
_SCRYPT_LOG2_N = 15


def _scrypt_key(secret: bytes, salt: bytes, log2_n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=8, p=1).derive(secret)


def _seal_der(der: bytes, secret: bytes) -> bytes:
    salt = random_bytes(16)
    nonce = random_bytes(12)
    key = _scrypt_key(secret, salt, _SCRYPT_LOG2_N)
    blob = (
        _TW_MAGIC
        + bytes((_SCRYPT_LOG2_N,))
        + salt
        + nonce
        + AESGCM(key).encrypt(nonce, der, _TW_AD)
    )
    body = base64.encodebytes(blob).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([_TW_BEGIN, *lines, _TW_END]) + b"\n"


def _open_der(data: bytes, secret: bytes, source: str) -> bytes:
    try:
        inner = data.split(_TW_BEGIN, 1)[1].split(_TW_END, 1)[0]
        blob = base64.b64decode(b"".join(inner.split()), validate=True)
    except (IndexError, binascii.Error) as exc:
        raise KeyFileError(f"{source}: corrupt encrypted key file") from exc
    if len(blob) < 4 + 1 + 16 + 12 + 16 or blob[:4] != _TW_MAGIC:
        raise KeyFileError(f"{source}: corrupt encrypted key file")
    log2_n = blob[4]
    if not 10 <= log2_n <= 22:
        raise KeyFileError(f"{source}: unsupported key-file cost parameter")
    salt, nonce, ct = blob[5:21], blob[21:33], blob[33:]
    try:
        return AESGCM(_scrypt_key(secret, salt, log2_n)).decrypt(nonce, ct, _TW_AD)
    except InvalidTag as exc:
        raise KeyFileError(f"{source}: wrong passphrase or corrupt key file") from exc


# --- encoding -------------------------------------------------------------------------


def encode_private_key(key: PrivateKey, passphrase: Passphrase) -> bytes:
    """PKCS#8 PEM of ``key``, encrypted under ``passphrase`` unless it is ``None``."""
    if not isinstance(key, Ed25519PrivateKey | X25519PrivateKey | EllipticCurvePrivateKey):
        raise TypeError("unsupported private key type")
    secret = _passphrase_bytes(passphrase)
    if secret is None:
        return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return _seal_der(key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()), secret)


def decode_private_key(data: bytes, passphrase: Passphrase, *, source: str) -> PrivateKey:
    """Parse a PKCS#8 PEM private key; ``source`` names it in error messages.

    Raises :class:`KeyFileError` for a missing or wrong passphrase, a passphrase given
    for an unencrypted key, a corrupt file or an unsupported key type.
    """
    secret = _passphrase_bytes(passphrase)
    ours = _TW_BEGIN in data
    encrypted = ours or b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    if encrypted and secret is None:
        raise KeyFileError(f"{source}: the key is encrypted and no passphrase was given")
    if not encrypted and secret is not None:
        # Refusing is deliberate: silently accepting a clear key would hide from an
        # operator that a file they believe protected is not.
        raise KeyFileError(f"{source}: a passphrase was given but the key is not encrypted")
    try:
        if ours and secret is not None:
            key = load_der_private_key(_open_der(data, secret, source), password=None)
        else:
            key = load_pem_private_key(data, password=secret)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise KeyFileError(f"{source}: wrong passphrase or corrupt key file") from exc
        raise KeyFileError(f"{source}: not a valid PKCS#8 PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey | X25519PrivateKey | EllipticCurvePrivateKey):
        raise KeyFileError(f"{source}: unsupported private key type")
    return key


def openssl_pem_key(key_pem: bytes, one_time_password: bytes) -> bytes:
    """Standard encrypted PKCS#8 PEM that OpenSSL (Python's ``ssl``) can load.

    Only for handing a key to ``ssl`` through a short-lived temporary file under a random
    one-time password; at-rest key files use the scrypt format above.
    """
    key = decode_private_key(key_pem, None, source="PEM key")
    return key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(one_time_password)
    )


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
