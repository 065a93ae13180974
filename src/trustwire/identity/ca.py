"""The trust-domain CA: issues short-lived agent certificates and the server certificate.

``trustwire init`` creates one :class:`DomainCA`; agents pin its certificate as their only
TLS trust anchor and the coordinator requires client certificates it issued.

Invariants:

- Every issued certificate certifies a *fresh* TLS key generated for it, never an
  agent's identity key: a leaked TLS key expires with its certificate and never lets
  anyone sign as the agent.
- An agent certificate carries exactly one URI SAN, the agent's DID, and its name as the
  common name; the DID binding is re-checked against the registry after the handshake.
- The CA key is saved with :mod:`trustwire.crypto.keyfile` (0600, encrypted when a
  passphrase is given); the CA certificate is public and saved 0644.
- Time is passed in (``now``); nothing here reads the clock.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from trustwire.crypto.keyfile import (
    Passphrase,
    ensure_private_dir,
    write_file_atomic,
)
from trustwire.crypto.x509 import (
    MAX_CERTIFICATE_SIZE,
    TlsKey,
    certificate_common_name,
    certificate_fingerprint,
    certificate_not_after,
    certificate_pem,
    certificate_uris,
    make_ca_certificate,
    make_leaf_certificate,
    needs_renewal,
    verify_issued_by,
)
from trustwire.errors import IdentityError, KeyFileError
from trustwire.identity.did import Did, ed25519_from_did, is_did

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "DomainCA",
    "IssuedCertificate",
    "certificate_did",
    "certificate_fingerprint",
    "certificate_not_after",
    "needs_renewal",
    "verify_issued_by",
]

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
DEFAULT_CA_LIFETIME = timedelta(days=3650)
DEFAULT_AGENT_LIFETIME = timedelta(hours=24)
DEFAULT_SERVER_LIFETIME = timedelta(days=365)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate (PEM) and its fresh, unencrypted PKCS#8 PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"IssuedCertificate(fingerprint={certificate_fingerprint(self.cert_pem)})"


def certificate_did(cert: bytes) -> Did | None:
    """The DID in a certificate's URI SAN (PEM or DER), or ``None``.

    ``None`` when no URI SAN is a did:key, and also when several different DIDs are
    present: an ambiguous certificate names nobody. Malformed bytes raise
    :class:`~trustwire.errors.IdentityError`.
    """
    dids = {uri for uri in certificate_uris(cert) if is_did(uri)}
    if len(dids) != 1:
        return None
    return Did(dids.pop())


class DomainCA:
    """A trust-domain certificate authority (Ed25519 key, self-signed certificate)."""

    __slots__ = ("_cert_pem", "_fingerprint", "_key", "_name")

    def __init__(self, key: TlsKey, cert_pem: bytes):
        if not key.matches(cert_pem):
            raise ValueError("the CA key does not match the CA certificate")
        self._key = key
        self._cert_pem = certificate_pem(cert_pem)
        self._fingerprint = certificate_fingerprint(cert_pem)
        self._name = certificate_common_name(cert_pem) or ""

    @classmethod
    def create(
        cls, name: str, *, now: datetime, lifetime: timedelta = DEFAULT_CA_LIFETIME
    ) -> DomainCA:
        """A new CA named ``name`` (the certificate's common name), valid from ``now``."""
        key = TlsKey.generate()
        return cls(key, make_ca_certificate(key, name, now=now, lifetime=lifetime))

    @property
    def name(self) -> str:
        return self._name

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate (PEM): the trust anchor agents pin."""
        return self._cert_pem

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER CA certificate, lowercase hex."""
        return self._fingerprint

    def save(self, directory: str | os.PathLike[str], passphrase: Passphrase) -> None:
        """Write ``ca.key`` (0600, encrypted with ``passphrase`` if given) and ``ca.pem``."""
        path = ensure_private_dir(directory)
        self._key.write(path / CA_KEY_FILE, passphrase)
        write_file_atomic(path / CA_CERT_FILE, self._cert_pem, mode=0o644)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], passphrase: Passphrase) -> DomainCA:
        """Read a CA written by :meth:`save`; :class:`KeyFileError` when unusable."""
        path = Path(directory)
        cert_path = path / CA_CERT_FILE
        cert = _read_certificate_file(cert_path)
        key_path = path / CA_KEY_FILE
        key = TlsKey.read(key_path, passphrase)
        if not key.matches(cert):
            raise KeyFileError(f"{key_path}: the key does not match {cert_path}")
        return cls(key, cert)

    def issue_agent_certificate(
        self,
        did: str,
        name: str,
        *,
        now: datetime,
        lifetime: timedelta = DEFAULT_AGENT_LIFETIME,
    ) -> IssuedCertificate:
        """A client certificate for the agent ``did`` (URI SAN) named ``name`` (CN).

        A fresh TLS key is generated for this certificate alone. Raises
        :class:`~trustwire.errors.InvalidDid` when ``did`` is not an Ed25519 did:key.
        """
        ed25519_from_did(did)  # validates, raising InvalidDid
        return self._issue(
            common_name=name,
            uris=(did,),
            hosts=(),
            client=True,
            server=False,
            now=now,
            lifetime=lifetime,
        )

    def renew_agent_certificate(
        self,
        did: str,
        name: str,
        tls_public_key: bytes,
        *,
        now: datetime,
        lifetime: timedelta = DEFAULT_AGENT_LIFETIME,
    ) -> bytes:
        """A client certificate (PEM) for a TLS key the agent generated itself.

        Used for in-band renewal: the private key never leaves the agent.
        """
        ed25519_from_did(did)
        return make_leaf_certificate(
            ca_key=self._key,
            ca_cert=self._cert_pem,
            subject_key=bytes(tls_public_key),
            common_name=name,
            uris=(did,),
            hosts=(),
            client=True,
            server=False,
            now=now,
            lifetime=lifetime,
        )

    def issue_server_certificate(
        self,
        names: Iterable[str] = ("localhost", "127.0.0.1", "::1"),
        *,
        now: datetime,
        lifetime: timedelta = DEFAULT_SERVER_LIFETIME,
    ) -> IssuedCertificate:
        """A server certificate for the host names / IP addresses ``names``.

        The first name is the common name; every name is a SAN (IP addresses as
        IP-address SANs), which is what hostname checking compares.
        """
        hosts = tuple(names)
        if not hosts or not all(isinstance(host, str) and host for host in hosts):
            raise ValueError("a server certificate needs at least one non-empty host name")
        return self._issue(
            common_name=hosts[0],
            uris=(),
            hosts=hosts,
            client=False,
            server=True,
            now=now,
            lifetime=lifetime,
        )

    def verify(self, cert_pem: bytes, *, now: datetime) -> None:
        """:func:`verify_issued_by` against this CA."""
        verify_issued_by(cert_pem, self._cert_pem, now=now)

    def _issue(
        self,
        *,
        common_name: str,
        uris: tuple[str, ...],
        hosts: tuple[str, ...],
        client: bool,
        server: bool,
        now: datetime,
        lifetime: timedelta,
    ) -> IssuedCertificate:
        subject_key = TlsKey.generate()
        cert = make_leaf_certificate(
            ca_key=self._key,
            ca_cert=self._cert_pem,
            subject_key=subject_key,
            common_name=common_name,
            uris=uris,
            hosts=hosts,
            client=client,
            server=server,
            now=now,
            lifetime=lifetime,
        )
        return IssuedCertificate(cert_pem=cert, key_pem=subject_key.to_pem())

    def __repr__(self) -> str:
        return f"DomainCA(name={self._name!r}, fingerprint={self._fingerprint})"


def _read_certificate_file(path: Path) -> bytes:
    """Read and parse a certificate file, bounded in size; KeyFileError names the file."""
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise KeyFileError(f"{path}: not a regular file")
            data = handle.read(MAX_CERTIFICATE_SIZE + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read certificate ({exc.strerror})") from exc
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise KeyFileError(f"{path}: larger than {MAX_CERTIFICATE_SIZE} bytes")
    try:
        return certificate_pem(data)
    except IdentityError as exc:
        raise KeyFileError(f"{path}: not a valid X.509 certificate") from exc
