"""The whole trustwire exception tree.

Every exception trustwire raises on purpose derives from :class:`TrustwireError`::

    TrustwireError
    ├── ConfigurationError          bad config / policy / home directory
    ├── KeyFileError                key file unreadable, wrong passphrase, bad permissions
    ├── IdentityError
    │   ├── InvalidDid              a string that is not a did:key we support
    │   └── UnknownAgent            a name or DID not enrolled in the registry
    ├── CryptoError
    │   ├── InvalidSignature        an Ed25519 signature did not verify
    │   └── DecryptionFailed        AEAD open failed (tampered, wrong key, wrong AD)
    ├── ProtocolError               bytes from the network that break the wire protocol
    │   ├── FrameTooLarge           declared frame length over the limit (never read)
    │   ├── InvalidFrame            truncated / malformed frame
    │   ├── InvalidEnvelope         malformed envelope header or body
    │   ├── HandshakeFailed         Noise handshake could not complete
    │   └── NoiseError              Noise state misuse or failure
    ├── SecurityRejected            a security check refused something (opaque on the wire)
    │   ├── ReplayDetected          counter / message id / timestamp replay
    │   ├── StaleTimestamp          timestamp outside the accepted window
    │   ├── PolicyDenied            default-deny policy said no
    │   ├── RateLimited             rate limit exceeded
    │   ├── AuthenticationFailed    peer identity could not be established
    │   └── Revoked                 the agent has been revoked
    ├── TransportError              connection-level failure
    │   ├── ConnectionFailed        cannot reach / handshake with the coordinator
    │   └── ConnectionClosed        the connection ended (with code and reason)
    ├── DeliveryError               a message could not be delivered
    │   └── ReceiptTimeout          no receipt arrived in time
    ├── SessionError
    │   ├── SessionExpired
    │   └── UnknownSession
    ├── StoreError                  a storage backend failed
    │   └── DuplicateAgent          an agent name or DID is already enrolled
    └── AuditError                  the Merkle log (audit trail, registry) failed a check
        ├── ProofError              an inclusion or consistency proof is malformed or wrong
        └── LogInconsistent         stored log entries contradict a signed tree head

Security failures are opaque to the peer: the coordinator answers every
``SecurityRejected`` with one generic error code; the precise subclass goes to the
security-event stream (and later the audit log).

Rule: these exceptions never carry key material or message content in their
message or attributes.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "AuthenticationFailed",
    "ConfigurationError",
    "ConnectionClosed",
    "ConnectionFailed",
    "CryptoError",
    "DecryptionFailed",
    "DeliveryError",
    "DuplicateAgent",
    "FrameTooLarge",
    "HandshakeFailed",
    "IdentityError",
    "InvalidDid",
    "InvalidEnvelope",
    "InvalidFrame",
    "InvalidSignature",
    "KeyFileError",
    "LogInconsistent",
    "NoiseError",
    "PolicyDenied",
    "ProofError",
    "ProtocolError",
    "RateLimited",
    "ReceiptTimeout",
    "ReplayDetected",
    "Revoked",
    "SecurityRejected",
    "SessionError",
    "SessionExpired",
    "StaleTimestamp",
    "StoreError",
    "TransportError",
    "TrustwireError",
    "UnknownAgent",
    "UnknownSession",
]


class TrustwireError(Exception):
    """Base class of every error trustwire raises on purpose."""


class ConfigurationError(TrustwireError):
    """Invalid configuration, policy file or deployment directory.

    ``path`` and ``line`` locate the problem when it comes from a file.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class KeyFileError(TrustwireError):
    """A key file could not be read or written (never includes key bytes)."""


class IdentityError(TrustwireError):
    """Problems with agent identities."""


class InvalidDid(IdentityError):
    """A string is not a well-formed did:key of a supported key type."""


class UnknownAgent(IdentityError):
    """A name or DID is not enrolled."""


class CryptoError(TrustwireError):
    """A cryptographic operation failed."""


class InvalidSignature(CryptoError):
    """A signature did not verify."""


class DecryptionFailed(CryptoError):
    """Authenticated decryption failed: the ciphertext, key or associated data is wrong."""


class ProtocolError(TrustwireError):
    """Bytes received from the network violate the wire protocol."""


class FrameTooLarge(ProtocolError):
    """A frame declared a length over the limit; its body was not read."""

    def __init__(self, length: int, limit: int):
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class InvalidFrame(ProtocolError):
    """A frame is truncated or malformed."""


class InvalidEnvelope(ProtocolError):
    """An envelope header or body is malformed."""


class HandshakeFailed(ProtocolError):
    """A Noise handshake could not be completed."""


class NoiseError(ProtocolError):
    """Noise protocol misuse or failure (bad message length, nonce exhaustion, ...)."""


class SecurityRejected(TrustwireError):
    """A security check refused an operation.

    On the wire every subclass collapses to one generic error; ``reason`` is a short
    machine-readable string for the security-event stream.
    """

    reason = "rejected"


class ReplayDetected(SecurityRejected):
    """A message id, counter or frame was seen before."""

    reason = "replay"


class StaleTimestamp(SecurityRejected):
    """A timestamp lies outside the accepted window."""

    reason = "stale_timestamp"


class PolicyDenied(SecurityRejected):
    """The policy engine denied the action (default deny)."""

    reason = "policy_denied"


class RateLimited(SecurityRejected):
    """A rate limit was exceeded."""

    reason = "rate_limited"


class AuthenticationFailed(SecurityRejected):
    """A peer's identity could not be established."""

    reason = "authentication_failed"


class Revoked(SecurityRejected):
    """The agent has been revoked."""

    reason = "revoked"


class TransportError(TrustwireError):
    """Connection-level failure."""


class ConnectionFailed(TransportError):
    """The coordinator could not be reached or the TLS handshake failed."""


class ConnectionClosed(TransportError):
    """The connection ended; ``code`` and ``reason`` say why when known."""

    def __init__(self, code: int = 0, reason: str = ""):
        super().__init__(f"connection closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class DeliveryError(TrustwireError):
    """A message could not be delivered."""


class ReceiptTimeout(DeliveryError):
    """No delivery receipt arrived before the deadline."""


class SessionError(TrustwireError):
    """Session lifecycle errors."""


class SessionExpired(SessionError):
    """The session has expired."""


class UnknownSession(SessionError):
    """No session with that id exists."""


class StoreError(TrustwireError):
    """A storage backend failed."""


class DuplicateAgent(StoreError):
    """An agent with this ``field`` (``"name"`` or ``"did"``) and ``value`` already exists."""

    def __init__(self, field: str, value: str):
        super().__init__(f"an agent with {field} {value!r} is already enrolled")
        self.field = field
        self.value = value


class AuditError(TrustwireError):
    """A Merkle log (the audit trail or the registry) failed an integrity check."""


class ProofError(AuditError):
    """An inclusion or consistency proof is malformed or does not verify."""


class LogInconsistent(AuditError):
    """Stored log entries contradict a signed tree head (edited, lost or reordered).

    ``problems`` lists each finding as a short sentence (never entry contents).
    """

    def __init__(self, problems: str | tuple[str, ...]):
        found = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("; ".join(found) or "log inconsistent")
        self.problems = found
