"""TLS 1.3 contexts for the coordinator hop: mutual authentication under the domain CA.

Invariants:

- TLS 1.3 only (``minimum_version``); a TLS 1.2 peer cannot complete a handshake.
- The domain CA is the *only* trust anchor: system CAs are never loaded, so a
  certificate from any public or foreign CA is refused (certificate pinning).
- The server requires a client certificate (``CERT_REQUIRED``); the client checks the
  server's host name against its certificate.
- ``ssl`` loads certificates and keys only from files. The private key is written there
  re-encrypted under a random one-time password (handed to ``load_cert_chain`` in
  memory), in a fresh 0700 directory with 0600 files, and the directory is removed
  right after loading; the clear key never touches the disk.
- :func:`peer_did` reads the DID from a peer certificate that ``ssl`` has already
  verified; the caller still checks it against the registry.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import tempfile
from pathlib import Path

from trustwire.crypto.keyfile import openssl_pem_key, write_file_atomic
from trustwire.crypto.random import random_bytes
from trustwire.crypto.x509 import certificate_der, certificate_pem
from trustwire.errors import IdentityError
from trustwire.identity.ca import certificate_did
from trustwire.identity.did import Did

__all__ = [
    "client_ssl_context",
    "join_client_ssl_context",
    "join_server_ssl_context",
    "peer_did",
    "server_ssl_context",
]


def _load_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate and its key into ``context`` through short-lived private files."""
    password = random_bytes(32).hex()
    encrypted_key = openssl_pem_key(key_pem, password.encode("ascii"))
    directory = Path(tempfile.mkdtemp(prefix="trustwire-tls-"))  # created 0700
    try:
        cert_path = directory / "cert.pem"
        key_path = directory / "key.pem"
        write_file_atomic(cert_path, certificate_pem(cert_pem), mode=0o600)
        write_file_atomic(key_path, encrypted_key, mode=0o600)
        try:
            context.load_cert_chain(cert_path, key_path, password=password)
        except ssl.SSLError as exc:
            # The usual cause: the key does not belong to the certificate.
            raise ValueError("the TLS certificate and key could not be loaded together") from exc
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)


def _trust_only(context: ssl.SSLContext, ca_pem: bytes) -> None:
    # cadata takes DER bytes; normalizing through the parser also rejects garbage early.
    context.load_verify_locations(cadata=certificate_der(ca_pem))
    # Strict RFC 5280 checks, as Python 3.13's default contexts enable, on every version.
    context.verify_flags |= ssl.VERIFY_X509_STRICT


def server_ssl_context(cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.3 server context that requires client certificates issued by ``ca_pem``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    _trust_only(context, ca_pem)
    _load_chain(context, cert_pem, key_pem)
    return context


def client_ssl_context(cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.3 client context presenting ``cert_pem``, trusting only ``ca_pem``.

    Host names are checked: connect with ``server_hostname`` set to a name or IP address
    the server certificate lists.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    _trust_only(context, ca_pem)
    _load_chain(context, cert_pem, key_pem)
    return context


def join_server_ssl_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.3 server context that asks for no client certificate: the join listener,
    whose clients have no certificate yet (they authenticate with a one-time token)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_NONE
    _load_chain(context, cert_pem, key_pem)
    return context


def join_client_ssl_context(ca_pem: bytes | None) -> ssl.SSLContext:
    """A TLS 1.3 client context for joining, presenting no certificate.

    With ``ca_pem`` it trusts only that CA and checks the host name. With ``None`` it
    verifies *nothing*: only for fetching the CA certificate, which the caller then
    checks against a fingerprint obtained out of band, sending nothing secret.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if ca_pem is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = True
        _trust_only(context, ca_pem)
    return context


def peer_did(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> Did | None:
    """The DID in the peer certificate's URI SAN, or ``None`` (no certificate, no DID)."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return certificate_did(der)
    except IdentityError:
        return None
