"""Bodies of the join exchange: enrolment by one-time token (sans-I/O).

The join listener of ``trustwire serve`` is a TLS 1.3 listener *without* client
certificates (a joiner has none yet). Its frames are ordinary envelopes (sender and
recipient empty) of two types: ``JOIN_REQUEST`` (joiner -> coordinator) and
``JOIN_RESULT`` (coordinator -> joiner), with JSON bodies defined here.

Two requests, each on its own connection:

1. ``{"kind": "ca"}``: sent over a connection the joiner does not verify yet. The answer
   ``{"ok": true, "ca_pem": ...}`` carries the domain CA certificate, which the joiner
   accepts only if its SHA-256 DER fingerprint equals the one the operator passed along
   with the token. Nothing secret travels on this connection.
2. ``{"kind": "join", ...}`` (:class:`JoinRequest`): sent over a second connection that
   verifies the coordinator's certificate against that CA and the dialled host name. It
   carries the token, the agent's name, DID, agreement key and statement, the TLS public
   key to certify, and the identity key's signature over :func:`join_statement` (which
   binds all of them and the CA fingerprint, under its own domain-separation label). The
   answer (:class:`JoinResult`) carries the agent certificate, the CA certificate, the
   registry and log public keys and the coordinator address.

Every refusal is the same ``{"ok": false}``; the reason goes to the security events.
Private keys never appear in either exchange: the joiner generates them and keeps them.

Decoders bound their input and raise :class:`~trustwire.errors.InvalidEnvelope`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

from trustwire.errors import InvalidEnvelope
from trustwire.protocol import control

__all__ = [
    "JOIN_LABEL",
    "TOKEN_SIZE",
    "JoinRequest",
    "JoinResult",
    "ca_request",
    "decode_ca_result",
    "decode_request",
    "decode_result",
    "encode_ca_result",
    "encode_refusal",
    "join_statement",
]

JOIN_LABEL = b"trustwire/join/v1"
TOKEN_SIZE = 32
_HEX_RE = re.compile(r"[0-9a-f]*")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_PEM = 8 * 1024
_U64_MAX = 2**64 - 1


def _field(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def join_statement(
    *,
    token: str,
    name: str,
    did: str,
    agreement_key: bytes,
    agreement_statement: bytes,
    agreement_issued_at: int,
    tls_public_key: bytes,
    ca_fingerprint: str,
) -> bytes:
    """The exact bytes a joiner's identity key signs: every field of the request, each
    length-prefixed, after the label ``trustwire/join/v1``."""
    if not 0 <= agreement_issued_at <= _U64_MAX:
        raise ValueError("agreement_issued_at out of range")
    return JOIN_LABEL + b"".join(
        (
            _field(token.encode("ascii")),
            _field(name.encode("utf-8")),
            _field(did.encode("ascii")),
            _field(agreement_key),
            _field(agreement_statement),
            struct.pack(">Q", agreement_issued_at),
            _field(tls_public_key),
            _field(ca_fingerprint.encode("ascii")),
        )
    )


@dataclass(frozen=True, slots=True, repr=False)
class JoinRequest:
    """A ``join`` request. ``repr`` leaves the token out (it is a bearer secret)."""

    token: str
    name: str
    did: str
    agreement_key: bytes
    agreement_statement: bytes
    agreement_issued_at: int
    tls_public_key: bytes
    signature: bytes

    def statement(self, ca_fingerprint: str) -> bytes:
        """What :attr:`signature` must sign, for the CA the joiner pinned."""
        return join_statement(
            token=self.token,
            name=self.name,
            did=self.did,
            agreement_key=self.agreement_key,
            agreement_statement=self.agreement_statement,
            agreement_issued_at=self.agreement_issued_at,
            tls_public_key=self.tls_public_key,
            ca_fingerprint=ca_fingerprint,
        )

    def to_bytes(self) -> bytes:
        return control.encode_json(
            {
                "kind": "join",
                "token": self.token,
                "name": self.name,
                "did": self.did,
                "agreement_key": self.agreement_key.hex(),
                "agreement_statement": self.agreement_statement.hex(),
                "agreement_issued_at": self.agreement_issued_at,
                "tls_public_key": self.tls_public_key.hex(),
                "signature": self.signature.hex(),
            }
        )

    def __repr__(self) -> str:
        return f"JoinRequest(name={self.name!r}, did={self.did})"


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What a successful join returns (public data only)."""

    cert_pem: bytes
    ca_pem: bytes
    registry_key: str
    log_key: str
    coordinator: str

    def to_bytes(self) -> bytes:
        return control.encode_json(
            {
                "ok": True,
                "cert_pem": self.cert_pem.decode("ascii"),
                "ca_pem": self.ca_pem.decode("ascii"),
                "registry_key": self.registry_key,
                "log_key": self.log_key,
                "coordinator": self.coordinator,
            }
        )


def ca_request() -> bytes:
    """The body of a ``ca`` request."""
    return control.encode_json({"kind": "ca"})


def encode_ca_result(ca_pem: bytes) -> bytes:
    return control.encode_json({"ok": True, "ca_pem": ca_pem.decode("ascii")})


def encode_refusal() -> bytes:
    """The one opaque refusal."""
    return control.encode_json({"ok": False})


def decode_request(body: bytes) -> JoinRequest | None:
    """A ``join`` request, or ``None`` for a ``ca`` request; ``InvalidEnvelope`` otherwise."""
    data = control.decode_json(body)
    kind = data.get("kind")
    if kind == "ca":
        return None
    if kind != "join":
        raise InvalidEnvelope("unknown join request kind")
    token = _text(data, "token", 64)
    if not _TOKEN_RE.fullmatch(token):
        raise InvalidEnvelope("malformed join token")
    issued_at = data.get("agreement_issued_at")
    if isinstance(issued_at, bool) or not isinstance(issued_at, int):
        raise InvalidEnvelope("agreement_issued_at must be an integer")
    if not 0 <= issued_at <= _U64_MAX:
        raise InvalidEnvelope("agreement_issued_at out of range")
    return JoinRequest(
        token=token,
        name=_text(data, "name", 64),
        did=_text(data, "did", 128),
        agreement_key=_hex(data, "agreement_key", 32),
        agreement_statement=_hex(data, "agreement_statement", 64),
        agreement_issued_at=issued_at,
        tls_public_key=_hex(data, "tls_public_key", 32),
        signature=_hex(data, "signature", 64),
    )


def decode_ca_result(body: bytes) -> bytes | None:
    """The CA certificate (PEM) of a ``ca`` answer, or ``None`` for a refusal."""
    data = control.decode_json(body)
    if data.get("ok") is not True:
        return None
    return _pem(data, "ca_pem")


def decode_result(body: bytes) -> JoinResult | None:
    """A :class:`JoinResult`, or ``None`` for a refusal."""
    data = control.decode_json(body)
    if data.get("ok") is not True:
        return None
    registry_key = _text(data, "registry_key", 64, allow_empty=True)
    log_key = _text(data, "log_key", 64, allow_empty=True)
    if not (_HEX_RE.fullmatch(registry_key) and _HEX_RE.fullmatch(log_key)):
        raise InvalidEnvelope("public keys must be lowercase hex")
    return JoinResult(
        cert_pem=_pem(data, "cert_pem"),
        ca_pem=_pem(data, "ca_pem"),
        registry_key=registry_key,
        log_key=log_key,
        coordinator=_text(data, "coordinator", 300),
    )


def _text(data: dict[str, Any], key: str, limit: int, *, allow_empty: bool = False) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > limit or not (value or allow_empty):
        raise InvalidEnvelope(f"{key} must be a string of at most {limit} characters")
    if not value.isascii() or not value.isprintable():
        raise InvalidEnvelope(f"{key} must be printable ASCII")
    return value


def _hex(data: dict[str, Any], key: str, size: int) -> bytes:
    value = _text(data, key, 2 * size)
    if len(value) != 2 * size or not _HEX_RE.fullmatch(value):
        raise InvalidEnvelope(f"{key} must be {size} bytes of lowercase hex")
    return bytes.fromhex(value)


def _pem(data: dict[str, Any], key: str) -> bytes:
    value = data.get(key)
    if not isinstance(value, str) or not value.isascii() or len(value) > _MAX_PEM:
        raise InvalidEnvelope(f"{key} must be an ASCII PEM of at most {_MAX_PEM} characters")
    return value.encode("ascii")
