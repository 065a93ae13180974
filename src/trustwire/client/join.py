"""Joining a trust domain with a one-time token (the joiner's side of the join listener).

::

    joined = await join(token, identity, tls_key, join_address="coord.example:7444",
                        ca_fingerprint="3f9a...")

The identity (Ed25519 identity key, X25519 agreement key) and the TLS key are generated
by the caller, locally; only public keys and signatures are sent. Order of operations
(see :mod:`trustwire.protocol.join`):

1. Fetch the domain CA over a TLS connection that verifies nothing yet, and accept it
   only if its SHA-256 DER fingerprint equals ``ca_fingerprint`` (obtained out of band
   from the operator). The coordinator's own certificate on that connection must be
   issued by that CA. On any mismatch :class:`~trustwire.errors.AuthenticationFailed`
   is raised and nothing secret (no token) has been sent.
2. Open a second connection that verifies the coordinator's certificate against the CA
   *and the host name*, and only there send the token with the signed request.
3. Check the answer: the certificate is issued by the CA, names our DID, and certifies
   our TLS key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from trustwire.crypto.x509 import TlsKey, certificate_fingerprint, verify_issued_by
from trustwire.errors import AuthenticationFailed, ConnectionFailed, IdentityError, ProtocolError
from trustwire.identity.ca import certificate_did
from trustwire.identity.keys import AgentIdentity
from trustwire.protocol import join as wire
from trustwire.protocol.envelope import ZERO_CHANNEL, Envelope, FrameType, decode
from trustwire.protocol.frames import FrameDecoder, encode_frame
from trustwire.transport.tls import join_client_ssl_context

__all__ = ["JoinedAgent", "join", "normalize_fingerprint"]

_MAX_FRAME = 16 * 1024


@dataclass(frozen=True, slots=True)
class JoinedAgent:
    """A successful join: the certificate for the caller's TLS key and domain data."""

    cert_pem: bytes
    ca_pem: bytes
    ca_fingerprint: str
    registry_key: str
    log_key: str
    coordinator: str


def normalize_fingerprint(value: str) -> str:
    """A SHA-256 fingerprint as lowercase hex (colons and spaces dropped); ``ValueError``
    unless it is 64 hex digits."""
    text = value.replace(":", "").replace(" ", "").strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("a CA fingerprint is 64 hex digits (SHA-256)")
    return text


async def join(
    token: str,
    identity: AgentIdentity,
    tls_key: TlsKey,
    *,
    host: str,
    port: int,
    ca_fingerprint: str,
    timeout: float = 10.0,
    now: datetime | None = None,
) -> JoinedAgent:
    """Enrol ``identity`` with ``token`` at the join listener ``host:port``.

    Raises :class:`AuthenticationFailed` (wrong CA, a certificate that does not match,
    or the coordinator refused: token unknown, used or expired, or another name) and
    :class:`ConnectionFailed` (unreachable, or the connection broke).
    """
    expected = normalize_fingerprint(ca_fingerprint)
    moment = now or datetime.now(UTC)
    ca_pem, server_cert = await _fetch_ca(host, port, timeout)
    actual = certificate_fingerprint(ca_pem)
    if actual != expected:
        raise AuthenticationFailed(
            f"the coordinator at {host}:{port} serves a CA with fingerprint {actual}, "
            f"not {expected}; nothing was sent"
        )
    if server_cert is None:
        raise AuthenticationFailed("the join listener presented no certificate")
    try:
        verify_issued_by(server_cert, ca_pem, now=moment)
    except AuthenticationFailed as exc:
        raise AuthenticationFailed(
            f"the join listener's certificate is not issued by the pinned CA ({exc})"
        ) from None
    issued_at = identity.issued_at
    request = wire.JoinRequest(
        token=token,
        name=identity.name,
        did=identity.did,
        agreement_key=identity.agreement.public,
        agreement_statement=identity.agreement_statement(issued_at=issued_at),
        agreement_issued_at=issued_at,
        tls_public_key=tls_key.public_bytes(),
        signature=b"",
    )
    signature = identity.signing_key.sign(request.statement(expected))
    signed = wire.JoinRequest(
        token=request.token,
        name=request.name,
        did=request.did,
        agreement_key=request.agreement_key,
        agreement_statement=request.agreement_statement,
        agreement_issued_at=request.agreement_issued_at,
        tls_public_key=request.tls_public_key,
        signature=signature,
    )
    body, _ = await _exchange(host, port, signed.to_bytes(), ca_pem, timeout)
    try:
        result = wire.decode_result(body)
    except ProtocolError as exc:
        raise AuthenticationFailed(f"malformed answer from the join listener ({exc})") from None
    if result is None:
        raise AuthenticationFailed(
            "the coordinator refused the join (the token is unknown, already used or "
            "expired, or was issued for another name)"
        )
    try:
        verify_issued_by(result.cert_pem, ca_pem, now=moment)
        if certificate_did(result.cert_pem) != identity.did or not tls_key.matches(result.cert_pem):
            raise AuthenticationFailed("the certificate is not for this agent's keys")
    except IdentityError as exc:
        raise AuthenticationFailed(f"the issued certificate is unusable ({exc})") from None
    return JoinedAgent(
        cert_pem=result.cert_pem,
        ca_pem=ca_pem,
        ca_fingerprint=actual,
        registry_key=result.registry_key,
        log_key=result.log_key,
        coordinator=result.coordinator,
    )


async def _fetch_ca(host: str, port: int, timeout: float) -> tuple[bytes, bytes | None]:
    body, server_cert = await _exchange(host, port, wire.ca_request(), None, timeout)
    try:
        ca_pem = wire.decode_ca_result(body)
    except ProtocolError as exc:
        raise AuthenticationFailed(f"malformed CA answer from the join listener ({exc})") from None
    if ca_pem is None:
        raise AuthenticationFailed("the join listener refused to send its CA")
    try:
        certificate_fingerprint(ca_pem)
    except IdentityError as exc:
        raise AuthenticationFailed("the join listener sent no valid CA certificate") from exc
    return ca_pem, server_cert


async def _exchange(
    host: str, port: int, body: bytes, ca_pem: bytes | None, timeout: float
) -> tuple[bytes, bytes | None]:
    """One request, one answer; returns the answer body and the server's certificate."""
    context = join_client_ssl_context(ca_pem)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host
            )
    except ssl.SSLCertVerificationError as exc:
        raise AuthenticationFailed(
            f"the join listener's certificate does not verify for {host} ({exc.verify_message})"
        ) from None
    except TimeoutError as exc:
        raise ConnectionFailed(f"timed out connecting to {host}:{port}") from exc
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionFailed(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        server_cert = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        request = Envelope.create(FrameType.JOIN_REQUEST, ZERO_CHANNEL, "", "", body=body)
        writer.write(encode_frame(request.to_bytes(), max_frame=_MAX_FRAME))
        decoder = FrameDecoder(_MAX_FRAME)
        async with asyncio.timeout(timeout):
            while True:
                data = await reader.read(_MAX_FRAME)
                if not data:
                    raise ConnectionFailed("the join listener closed the connection")
                frames = decoder.receive_data(data)
                if frames:
                    break
        answer = decode(frames[0])
    except TimeoutError as exc:
        raise ConnectionFailed("the join listener did not answer") from exc
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionFailed(f"connection to the join listener failed: {exc}") from exc
    except ProtocolError as exc:
        raise AuthenticationFailed(f"malformed answer from the join listener ({exc})") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
    if answer.type is not FrameType.JOIN_RESULT:
        raise AuthenticationFailed("unexpected frame from the join listener")
    return answer.body, server_cert
