"""Agent identities: an Ed25519 identity key (the DID) and a separate X25519 agreement key.

The agreement key is bound to the identity by an *agreement statement*: the identity
key's Ed25519 signature over exactly these bytes (:func:`agreement_statement_bytes`)::

    b"trustwire/agreement-key/v1"          26 bytes, the domain-separation label
    len(did) as 2-byte big-endian           then the DID in ASCII
    x25519_public                           32 bytes
    issued_at as 8-byte big-endian          unsigned Unix seconds

Rotating the agreement key issues a new statement without changing the DID.

Invariants:

- The identity key and the agreement key are independent random keys; neither is
  derived from the other.
- On disk an identity is ``identity.key`` and ``agreement.key`` (PKCS#8, 0600,
  encrypted when a passphrase is given) plus a public ``identity.json``; loading checks
  that the three agree and that the statement verifies, so a tampered or mixed-up
  directory is refused with :class:`~trustwire.errors.KeyFileError`.
- ``repr`` shows the name and DID only.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustwire.crypto.dh import X25519, KeyPair
from trustwire.crypto.keyfile import (
    Passphrase,
    ensure_private_dir,
    read_agreement_key,
    read_signing_key,
    write_agreement_key,
    write_file_atomic,
    write_signing_key,
)
from trustwire.crypto.signing import SigningKey, VerifyKey
from trustwire.errors import InvalidDid, InvalidSignature, KeyFileError
from trustwire.identity.did import MAX_DID_LENGTH, Did, did_from_ed25519, ed25519_from_did

__all__ = [
    "AGREEMENT_KEY_FILE",
    "AGREEMENT_LABEL",
    "IDENTITY_FILE",
    "IDENTITY_KEY_FILE",
    "MAX_NAME_LENGTH",
    "AgentIdentity",
    "agreement_statement_bytes",
    "check_agent_name",
    "verify_agreement_statement",
]

AGREEMENT_LABEL = b"trustwire/agreement-key/v1"
IDENTITY_KEY_FILE = "identity.key"
AGREEMENT_KEY_FILE = "agreement.key"
IDENTITY_FILE = "identity.json"
# The name becomes a certificate common name, which RFC 5280 caps at 64 characters.
MAX_NAME_LENGTH = 64
_MAX_IDENTITY_FILE_SIZE = 16 * 1024
_U64_MAX = 2**64 - 1
_FORMAT_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def check_agent_name(name: str) -> str:
    """Return ``name`` if it is a usable agent name, else raise ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError("an agent name must be a string")
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ValueError(f"an agent name must have 1 to {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):
        # Names become directory names and certificate common names: a conservative
        # alphabet rules out path traversal ("../x", "a/b") and look-alike characters.
        raise ValueError(
            "an agent name must start with a letter or digit and contain only letters, "
            "digits, '.', '_', '@' or '-'"
        )
    return name


def agreement_statement_bytes(did: str, x25519_public: bytes, issued_at: int) -> bytes:
    """The exact bytes an identity key signs to bind ``x25519_public`` to ``did``."""
    encoded = did.encode("ascii")
    if len(encoded) > MAX_DID_LENGTH:
        raise ValueError("DID too long")
    if len(x25519_public) != 32:
        raise ValueError("X25519 public key must be 32 bytes")
    if isinstance(issued_at, bool) or not isinstance(issued_at, int):
        raise TypeError("issued_at must be an int (Unix seconds)")
    if not 0 <= issued_at <= _U64_MAX:
        raise ValueError("issued_at must fit in an unsigned 64-bit integer")
    return b"".join(
        (
            AGREEMENT_LABEL,
            struct.pack(">H", len(encoded)),
            encoded,
            bytes(x25519_public),
            struct.pack(">Q", issued_at),
        )
    )


def verify_agreement_statement(
    did: str, x25519_public: bytes, issued_at: int, signature: bytes
) -> None:
    """Check that ``did``'s identity key signed the binding to ``x25519_public``.

    Raises :class:`~trustwire.errors.InvalidSignature` for every failure, including a
    malformed DID or key, so callers handle one exception.
    """
    try:
        verify_key = VerifyKey.from_bytes(ed25519_from_did(did))
        message = agreement_statement_bytes(did, x25519_public, issued_at)
    except (InvalidDid, ValueError, TypeError, UnicodeEncodeError) as exc:
        raise InvalidSignature("agreement statement is malformed") from exc
    verify_key.verify(signature, message)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class AgentIdentity:
    """An agent's name, Ed25519 identity key and X25519 agreement key.

    ``issued_at`` (Unix seconds) is when the agreement key was issued; it is part of the
    signed agreement statement. Time is passed in, never read here.
    """

    name: str
    signing_key: SigningKey
    agreement: KeyPair
    issued_at: int = 0

    def __post_init__(self) -> None:
        check_agent_name(self.name)
        if not isinstance(self.signing_key, SigningKey):
            raise TypeError("signing_key must be a SigningKey")
        if X25519.public_from_private(self.agreement.private) != self.agreement.public:
            raise ValueError("agreement public key does not match its private key")
        agreement_statement_bytes(self.did, self.agreement.public, self.issued_at)

    @classmethod
    def generate(cls, name: str, *, issued_at: int = 0) -> AgentIdentity:
        """A new identity with fresh, independent identity and agreement keys."""
        return cls(name, SigningKey.generate(), X25519.generate(), issued_at)

    @property
    def did(self) -> Did:
        """The agent's did:key."""
        return did_from_ed25519(self.signing_key.public_key.to_bytes())

    def agreement_statement(self, *, issued_at: int) -> bytes:
        """The identity key's signature binding the agreement key at ``issued_at``."""
        return self.signing_key.sign(
            agreement_statement_bytes(self.did, self.agreement.public, issued_at)
        )

    @staticmethod
    def verify_agreement_statement(
        did: str, x25519_public: bytes, issued_at: int, signature: bytes
    ) -> None:
        """See the module-level :func:`verify_agreement_statement`."""
        verify_agreement_statement(did, x25519_public, issued_at, signature)

    def rotate_agreement(self, *, issued_at: int) -> AgentIdentity:
        """The same identity (same DID) with a fresh agreement key issued at ``issued_at``."""
        return AgentIdentity(self.name, self.signing_key, X25519.generate(), issued_at)

    def save(self, directory: str | os.PathLike[str], passphrase: Passphrase) -> None:
        """Write the keys (0600) and ``identity.json`` into ``directory`` (created 0700)."""
        path = ensure_private_dir(directory)
        write_signing_key(path / IDENTITY_KEY_FILE, self.signing_key, passphrase)
        write_agreement_key(path / AGREEMENT_KEY_FILE, self.agreement, passphrase)
        document = {
            "version": _FORMAT_VERSION,
            "name": self.name,
            "did": self.did,
            "x25519_public": self.agreement.public.hex(),
            "issued_at": self.issued_at,
            "statement": self.agreement_statement(issued_at=self.issued_at).hex(),
        }
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
        write_file_atomic(path / IDENTITY_FILE, data, mode=0o644)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], passphrase: Passphrase) -> AgentIdentity:
        """Read an identity written by :meth:`save`, checking that all parts agree."""
        path = Path(directory)
        info_path = path / IDENTITY_FILE
        document = _read_identity_document(info_path)
        signing_key = read_signing_key(path / IDENTITY_KEY_FILE, passphrase)
        agreement = read_agreement_key(path / AGREEMENT_KEY_FILE, passphrase)
        name, did, x25519_hex, issued_at, statement_hex = (
            document["name"],
            document["did"],
            document["x25519_public"],
            document["issued_at"],
            document["statement"],
        )
        try:
            statement = bytes.fromhex(statement_hex)
            x25519_public = bytes.fromhex(x25519_hex)
            identity = cls(check_agent_name(name), signing_key, agreement, issued_at)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{info_path}: invalid field value") from exc
        if did != identity.did:
            raise KeyFileError(f"{info_path}: the DID does not match {IDENTITY_KEY_FILE}")
        if x25519_public != agreement.public:
            raise KeyFileError(f"{info_path}: the X25519 key does not match {AGREEMENT_KEY_FILE}")
        try:
            verify_agreement_statement(did, x25519_public, issued_at, statement)
        except InvalidSignature as exc:
            raise KeyFileError(f"{info_path}: the agreement statement does not verify") from exc
        return identity

    def __repr__(self) -> str:
        return f"AgentIdentity(name={self.name!r}, did={self.did})"


_FIELDS: dict[str, type] = {
    "name": str,
    "did": str,
    "x25519_public": str,
    "issued_at": int,
    "statement": str,
}


def _read_identity_document(path: Path) -> dict[str, Any]:
    """Read ``identity.json`` with a size cap and type checks; KeyFileError names it."""
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise KeyFileError(f"{path}: not a regular file")
            data = handle.read(_MAX_IDENTITY_FILE_SIZE + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read identity file ({exc.strerror})") from exc
    if len(data) > _MAX_IDENTITY_FILE_SIZE:
        raise KeyFileError(f"{path}: larger than {_MAX_IDENTITY_FILE_SIZE} bytes")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise KeyFileError(f"{path}: not valid JSON") from exc
    if not isinstance(document, dict):
        raise KeyFileError(f"{path}: expected a JSON object")
    if document.get("version") != _FORMAT_VERSION:
        raise KeyFileError(f"{path}: unsupported identity file version")
    for field, kind in _FIELDS.items():
        value = document.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise KeyFileError(f"{path}: field {field!r} is missing or not a {kind.__name__}")
    return document
