"""X.509 recipes for the trust-domain CA and the TLS certificates it issues.

Key type: every TLS key and the CA key are **Ed25519**. OpenSSL (>= 1.1.1) negotiates
Ed25519 certificate signatures in TLS 1.3 for both server and client authentication, and
Python's ``ssl`` loads such keys; ``tests/transport/test_tls.py`` proves it with a real
loopback mutual-auth handshake on the machine running the tests.

Invariants:

- Time is always passed in (``now``, a timezone-aware datetime); nothing here reads
  the clock. Certificates start :data:`CLOCK_SKEW` before ``now`` so a peer whose clock
  is slightly behind still accepts a fresh certificate, and a leaf never outlives the CA
  that signs it.
- Certificates conform to what OpenSSL's strict X.509 checks require: a critical basic
  constraints extension and a subject key identifier on the CA, key usage on every
  certificate, authority key identifiers on leaves.
- Malformed certificate bytes raise :class:`~trustwire.errors.IdentityError`; a failed
  chain check raises :class:`~trustwire.errors.AuthenticationFailed`. Private keys never
  appear in reprs or messages.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustwire.crypto.keyfile import (
    Passphrase,
    decode_private_key,
    encode_private_key,
    read_private_key,
    write_private_key,
)
from trustwire.crypto.random import random_bytes
from trustwire.errors import AuthenticationFailed, IdentityError, KeyFileError

__all__ = [
    "CLOCK_SKEW",
    "MAX_CERTIFICATE_SIZE",
    "TLS_KEY_TYPE",
    "TlsKey",
    "certificate_common_name",
    "certificate_der",
    "certificate_fingerprint",
    "certificate_not_after",
    "certificate_not_before",
    "certificate_pem",
    "certificate_uris",
    "make_ca_certificate",
    "make_leaf_certificate",
    "needs_renewal",
    "verify_issued_by",
]

TLS_KEY_TYPE = "Ed25519"
CLOCK_SKEW = timedelta(minutes=5)
# Our certificates are ~600 bytes; the cap bounds the parser's input from files and peers.
MAX_CERTIFICATE_SIZE = 64 * 1024
# RFC 5280 ub-common-name.
_MAX_COMMON_NAME = 64
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def _check_now(now: datetime) -> None:
    if not isinstance(now, datetime):
        raise TypeError("now must be a datetime")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(UTC))")


def _check_common_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError("a certificate name must be a string")
    if not 1 <= len(name) <= _MAX_COMMON_NAME:
        raise ValueError(f"a certificate name must have 1 to {_MAX_COMMON_NAME} characters")
    if not name.isprintable():
        raise ValueError("a certificate name must be printable")
    return name


def _serial_number() -> int:
    # 159 random bits: positive, at most 20 octets, unpredictable (RFC 5280 4.1.2.2).
    return (int.from_bytes(random_bytes(20), "big") >> 1) or 1


class TlsKey:
    """A private key for a TLS certificate (Ed25519). ``repr`` never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey):
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError("TlsKey wraps an Ed25519 private key")
        self._key = key

    @classmethod
    def generate(cls) -> TlsKey:
        """A fresh key from :func:`~trustwire.crypto.random.random_bytes`."""
        return cls(Ed25519PrivateKey.from_private_bytes(random_bytes(32)))

    @classmethod
    def from_pem(
        cls, pem: bytes, passphrase: Passphrase = None, *, source: str = "TLS key"
    ) -> TlsKey:
        """Load a PKCS#8 PEM key; :class:`~trustwire.errors.KeyFileError` if unusable."""
        key = decode_private_key(pem, passphrase, source=source)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{source}: not an {TLS_KEY_TYPE} key")
        return cls(key)

    @classmethod
    def read(cls, path: str | os.PathLike[str], passphrase: Passphrase) -> TlsKey:
        """Read a key file written by :meth:`write`."""
        key = read_private_key(path, passphrase)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: not an {TLS_KEY_TYPE} key")
        return cls(key)

    def write(self, path: str | os.PathLike[str], passphrase: Passphrase) -> None:
        """Write the key to ``path`` (0600, encrypted when ``passphrase`` is given)."""
        write_private_key(path, self._key, passphrase)

    def to_pem(self, passphrase: Passphrase = None) -> bytes:
        """PKCS#8 PEM, encrypted when ``passphrase`` is given."""
        return encode_private_key(self._key, passphrase)

    def public_bytes(self) -> bytes:
        """The raw public key."""
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def matches(self, cert: bytes) -> bool:
        """True when ``cert`` (PEM or DER) certifies this key's public half."""
        public = _load(cert).public_key()
        if not isinstance(public, Ed25519PublicKey):
            return False
        return public.public_bytes(Encoding.Raw, PublicFormat.Raw) == self.public_bytes()

    def __repr__(self) -> str:
        return f"TlsKey({TLS_KEY_TYPE}, public={self.public_bytes().hex()})"


# --- building -------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustwire"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca_certificate(
    key: TlsKey, common_name: str, *, now: datetime, lifetime: timedelta
) -> bytes:
    """A self-signed CA certificate (PEM) that may sign leaf certificates only."""
    _check_now(now)
    name = _name(_check_common_name(common_name))
    public = key._key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        # path_length=0: the domain CA signs agent and server certificates, never
        # intermediate CAs, so a leaf key can never mint certificates.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return certificate_pem(builder.sign(key._key, None).public_bytes(Encoding.DER))


def _ip_or_none(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def make_leaf_certificate(
    *,
    ca_key: TlsKey,
    ca_cert: bytes,
    subject_key: TlsKey | bytes,
    common_name: str,
    uris: Iterable[str] = (),
    hosts: Iterable[str] = (),
    client: bool,
    server: bool,
    now: datetime,
    lifetime: timedelta,
) -> bytes:
    """A leaf certificate (PEM) for ``subject_key`` signed by the CA.

    ``subject_key`` is the subject's private key, or its raw Ed25519 public key when the
    subject keeps the private key to itself (certificate renewal).

    ``uris`` become URI SANs (an agent's DID); ``hosts`` become IP-address SANs when they
    parse as IP addresses and DNS-name SANs otherwise. ``client``/``server`` select the
    extended key usages. The validity ends at ``now + lifetime`` or at the CA's own end,
    whichever comes first.
    """
    _check_now(now)
    if lifetime <= timedelta(0):
        raise ValueError("lifetime must be positive")
    if not (client or server):
        raise ValueError("a leaf certificate must allow client or server use")
    ca = _load(ca_cert)
    if not ca_key.matches(ca_cert):
        raise ValueError("the CA key does not match the CA certificate")
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uris]
    for host in hosts:
        ip = _ip_or_none(host)
        sans.append(x509.IPAddress(ip) if ip is not None else x509.DNSName(host))
    if not sans:
        raise ValueError("a leaf certificate needs at least one subject alternative name")
    usages = []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    not_after = min(now + lifetime, ca.not_valid_after_utc)
    if isinstance(subject_key, bytes):
        # A raw Ed25519 public key: the subject generated its key pair itself (renewal).
        if len(subject_key) != 32:
            raise ValueError("subject public key must be a raw 32-byte Ed25519 key")
        public = Ed25519PublicKey.from_public_bytes(subject_key)
    else:
        public = subject_key._key.public_key()
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(_check_common_name(common_name)))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    return certificate_pem(builder.sign(ca_key._key, None).public_bytes(Encoding.DER))


# --- reading --------------------------------------------------------------------------


def _load(data: bytes) -> x509.Certificate:
    """Parse one certificate from PEM or DER, or raise IdentityError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("a certificate must be bytes (PEM or DER)")
    raw = bytes(data)
    if len(raw) > MAX_CERTIFICATE_SIZE:
        raise IdentityError(f"certificate larger than {MAX_CERTIFICATE_SIZE} bytes")
    try:
        if _PEM_BEGIN in raw:
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise IdentityError("malformed X.509 certificate") from exc


def certificate_der(cert: bytes) -> bytes:
    """The DER encoding of a PEM or DER certificate."""
    return _load(cert).public_bytes(Encoding.DER)


def certificate_pem(cert: bytes) -> bytes:
    """The PEM encoding of a PEM or DER certificate."""
    return _load(cert).public_bytes(Encoding.PEM)


def certificate_fingerprint(cert: bytes) -> str:
    """SHA-256 of the DER certificate, lowercase hex."""
    return _load(cert).fingerprint(hashes.SHA256()).hex()


def certificate_uris(cert: bytes) -> list[str]:
    """The URI subject alternative names, in order (empty when there is no SAN)."""
    try:
        san = _load(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:  # duplicate or malformed extensions
        raise IdentityError("malformed X.509 certificate extensions") from exc
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def certificate_common_name(cert: bytes) -> str | None:
    """The subject common name, or ``None``."""
    attributes = _load(cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def certificate_not_before(cert: bytes) -> datetime:
    """Start of validity (timezone-aware UTC)."""
    return _load(cert).not_valid_before_utc


def certificate_not_after(cert: bytes) -> datetime:
    """End of validity (timezone-aware UTC)."""
    return _load(cert).not_valid_after_utc


def needs_renewal(cert: bytes, *, now: datetime, margin: timedelta = timedelta(hours=2)) -> bool:
    """True when ``cert`` expires within ``margin`` of ``now`` (or already has)."""
    _check_now(now)
    return now >= certificate_not_after(cert) - margin


def verify_issued_by(cert: bytes, ca_cert: bytes, *, now: datetime) -> None:
    """Check that ``cert`` was signed by ``ca_cert`` and both are valid at ``now``.

    Raises :class:`AuthenticationFailed` for every failure: malformed input, a CA
    certificate that is not a CA, another issuer, a bad signature, or a time outside
    either validity period.
    """
    _check_now(now)
    try:
        leaf = _load(cert)
        ca = _load(ca_cert)
    except IdentityError as exc:
        raise AuthenticationFailed("certificate could not be parsed") from exc
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise AuthenticationFailed("issuer certificate is not a CA") from exc
    if not constraints.ca:
        raise AuthenticationFailed("issuer certificate is not a CA")
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, _PycaInvalidSignature) as exc:
        raise AuthenticationFailed("certificate was not issued by this CA") from exc
    for which, checked in (("certificate", leaf), ("CA certificate", ca)):
        if now < checked.not_valid_before_utc:
            raise AuthenticationFailed(f"{which} is not yet valid")
        if now > checked.not_valid_after_utc:
            raise AuthenticationFailed(f"{which} has expired")
