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
    │   ├── SessionExpired          the session timed out (HTTP 410)
    │   ├── SessionEnded            the session was ended explicitly (HTTP 410)
    │   ├── UnknownSession          no such session, or not a participant (HTTP 404)
    │   ├── SessionRenewalFailed    renewal refused past the max duration (HTTP 422)
    │   └── InvalidSessionConfig    a timeout setting out of range (HTTP 400)
    ├── SharedMemoryError
    │   ├── MemoryNotFound          no such memory, or expired and purged (HTTP 404)
    │   ├── MemoryExpired           the memory or the caller's grant has expired (HTTP 410)
    │   ├── MemoryAccessDenied      no grant / insufficient level / policy deny (HTTP 403)
    │   ├── MemoryQuotaExceeded     a byte or segment quota would be exceeded (HTTP 413)
    │   ├── VersionConflict         compare-and-set write on a stale version (HTTP 409)
    │   └── SegmentRejected         a segment failed its hash, signature or decryption
    ├── BrokerError                 the credential broker could not serve a request
    │   └── CredentialUnavailable   a credential provider failed (names the service only)
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
    "BrokerError",
    "ConfigurationError",
    "ConnectionClosed",
    "ConnectionFailed",
    "CredentialUnavailable",
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
    "InvalidSessionConfig",
    "InvalidSignature",
    "KeyFileError",
    "LogInconsistent",
    "MemoryAccessDenied",
    "MemoryExpired",
    "MemoryNotFound",
    "MemoryQuotaExceeded",
    "NoiseError",
    "PolicyDenied",
    "ProofError",
    "ProtocolError",
    "RateLimited",
    "ReceiptTimeout",
    "ReplayDetected",
    "Revoked",
    "SecurityRejected",
    "SegmentRejected",
    "SessionEnded",
    "SessionError",
    "SessionExpired",
    "SessionRenewalFailed",
    "SharedMemoryError",
    "StaleTimestamp",
    "StoreError",
    "TransportError",
    "TrustwireError",
    "UnknownAgent",
    "UnknownSession",
    "VersionConflict",
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


class SessionEnded(SessionError):
    """The session was ended (by a participant or the operator)."""


class SessionRenewalFailed(SessionError):
    """The session cannot be renewed: it has reached its maximum duration."""


class InvalidSessionConfig(SessionError):
    """A session setting is out of range or of the wrong type."""


class SharedMemoryError(TrustwireError):
    """Shared-memory errors."""


class MemoryNotFound(SharedMemoryError):
    """No memory with that id (or it expired and was purged)."""


class MemoryExpired(SharedMemoryError):
    """The memory, or the caller's grant on it, has expired."""


class MemoryAccessDenied(SharedMemoryError):
    """The caller holds no (sufficient) grant on the memory, or policy denies it."""


class MemoryQuotaExceeded(SharedMemoryError):
    """A write would exceed a byte or segment quota."""


class VersionConflict(SharedMemoryError):
    """A compare-and-set write was based on a stale version."""


class SegmentRejected(SharedMemoryError):
    """A segment failed verification (content hash, writer signature or decryption)."""


class BrokerError(TrustwireError):
    """The credential broker could not serve a request."""


class CredentialUnavailable(BrokerError):
    """A credential provider failed; the message names the service, never the secret."""


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
