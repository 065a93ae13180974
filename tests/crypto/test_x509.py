"""X.509 recipes: CA and leaf construction, parsing helpers, chain verification."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given
from hypothesis import strategies as st

from trustwire.crypto.x509 import (
    CLOCK_SKEW,
    MAX_CERTIFICATE_SIZE,
    TlsKey,
    certificate_common_name,
    certificate_der,
    certificate_fingerprint,
    certificate_not_after,
    certificate_not_before,
    certificate_pem,
    certificate_uris,
    make_ca_certificate,
    make_leaf_certificate,
    needs_renewal,
    verify_issued_by,
)
from trustwire.errors import AuthenticationFailed, IdentityError

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"


def _ca(name: str = "domain", lifetime: timedelta = timedelta(days=30)) -> tuple[TlsKey, bytes]:
    key = TlsKey.generate()
    return key, make_ca_certificate(key, name, now=NOW, lifetime=lifetime)


def _leaf(
    ca_key: TlsKey,
    ca_cert: bytes,
    *,
    lifetime: timedelta = timedelta(hours=24),
    uris: tuple[str, ...] = (DID,),
    hosts: tuple[str, ...] = (),
    client: bool = True,
    server: bool = False,
) -> bytes:
    return make_leaf_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        subject_key=TlsKey.generate(),
        common_name="alice",
        uris=uris,
        hosts=hosts,
        client=client,
        server=server,
        now=NOW,
        lifetime=lifetime,
    )


def test_ca_certificate_may_sign_leaves_only() -> None:
    _, pem = _ca()
    cert = x509.load_pem_x509_certificate(pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert not usage.digital_signature
    assert cert.issuer == cert.subject
    assert certificate_not_before(pem) == NOW - CLOCK_SKEW
    assert certificate_not_after(pem) == NOW + timedelta(days=30)


def test_leaf_certificate_carries_the_requested_names_and_usages() -> None:
    ca_key, ca_pem = _ca()
    pem = _leaf(ca_key, ca_pem, hosts=("localhost", "127.0.0.1", "::1"), server=True)
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [DID]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate_uris(pem) == [DID]
    assert certificate_common_name(pem) == "alice"


def test_leaf_never_outlives_its_ca() -> None:
    ca_key, ca_pem = _ca(lifetime=timedelta(hours=1))
    pem = _leaf(ca_key, ca_pem, lifetime=timedelta(days=7))
    assert certificate_not_after(pem) == certificate_not_after(ca_pem)


def test_fingerprint_is_sha256_of_der_in_lowercase_hex() -> None:
    _, pem = _ca()
    der = certificate_der(pem)
    assert certificate_fingerprint(pem) == hashlib.sha256(der).hexdigest()
    assert certificate_fingerprint(der) == certificate_fingerprint(pem)
    assert certificate_pem(der) == pem


def test_issued_certificate_verifies_against_its_ca() -> None:
    ca_key, ca_pem = _ca()
    verify_issued_by(_leaf(ca_key, ca_pem), ca_pem, now=NOW)


def test_certificate_from_another_ca_with_the_same_name_fails() -> None:
    _, ca_pem = _ca("domain")
    other_key, other_pem = _ca("domain")  # identical subject name, different key
    forged = _leaf(other_key, other_pem)
    with pytest.raises(AuthenticationFailed, match="not issued by this CA"):
        verify_issued_by(forged, ca_pem, now=NOW)


def test_expired_and_not_yet_valid_certificates_fail() -> None:
    ca_key, ca_pem = _ca()
    pem = _leaf(ca_key, ca_pem, lifetime=timedelta(hours=24))
    verify_issued_by(pem, ca_pem, now=NOW + timedelta(hours=24))
    with pytest.raises(AuthenticationFailed, match="expired"):
        verify_issued_by(pem, ca_pem, now=NOW + timedelta(hours=24, seconds=1))
    with pytest.raises(AuthenticationFailed, match="not yet valid"):
        verify_issued_by(pem, ca_pem, now=NOW - CLOCK_SKEW - timedelta(seconds=1))


def test_expired_ca_fails_even_for_a_valid_leaf() -> None:
    ca_key, ca_pem = _ca(lifetime=timedelta(days=2))
    pem = _leaf(ca_key, ca_pem, lifetime=timedelta(hours=1))
    with pytest.raises(AuthenticationFailed, match="expired"):
        verify_issued_by(pem, ca_pem, now=NOW + timedelta(days=3))


def test_a_leaf_cannot_act_as_a_ca() -> None:
    ca_key, ca_pem = _ca()
    leaf_key = TlsKey.generate()
    leaf_pem = make_leaf_certificate(
        ca_key=ca_key,
        ca_cert=ca_pem,
        subject_key=leaf_key,
        common_name="mallory",
        uris=(DID,),
        client=True,
        server=False,
        now=NOW,
        lifetime=timedelta(hours=24),
    )
    minted = _leaf(leaf_key, leaf_pem)  # signed by the leaf's key
    with pytest.raises(AuthenticationFailed, match="not a CA"):
        verify_issued_by(minted, leaf_pem, now=NOW)
    with pytest.raises(AuthenticationFailed):
        verify_issued_by(minted, ca_pem, now=NOW)


def test_tampered_certificate_fails() -> None:
    ca_key, ca_pem = _ca()
    der = bytearray(certificate_der(_leaf(ca_key, ca_pem)))
    der[-1] ^= 0x01  # inside the signature
    with pytest.raises(AuthenticationFailed):
        verify_issued_by(bytes(der), ca_pem, now=NOW)


@pytest.mark.parametrize("garbage", [b"", b"not a certificate", b"\x30\x82\xff\xff" + bytes(20)])
def test_garbage_is_rejected_cleanly(garbage: bytes) -> None:
    _, ca_pem = _ca()
    with pytest.raises(AuthenticationFailed):
        verify_issued_by(garbage, ca_pem, now=NOW)
    with pytest.raises(AuthenticationFailed):
        verify_issued_by(ca_pem, garbage, now=NOW)
    with pytest.raises(IdentityError):
        certificate_uris(garbage)
    with pytest.raises(IdentityError):
        certificate_not_after(garbage)


def test_oversized_certificate_input_is_refused() -> None:
    with pytest.raises(IdentityError, match="larger than"):
        certificate_der(b"\x30" * (MAX_CERTIFICATE_SIZE + 1))


def test_needs_renewal_within_the_margin() -> None:
    ca_key, ca_pem = _ca()
    pem = _leaf(ca_key, ca_pem, lifetime=timedelta(hours=24))
    end = NOW + timedelta(hours=24)
    assert not needs_renewal(pem, now=NOW)
    assert not needs_renewal(pem, now=end - timedelta(hours=2, seconds=1))
    assert needs_renewal(pem, now=end - timedelta(hours=2))
    assert needs_renewal(pem, now=end + timedelta(days=1))
    assert needs_renewal(pem, now=end - timedelta(hours=5), margin=timedelta(hours=6))


def test_naive_datetimes_are_refused() -> None:
    key = TlsKey.generate()
    with pytest.raises(ValueError, match="timezone-aware"):
        make_ca_certificate(key, "domain", now=datetime(2030, 1, 1), lifetime=timedelta(days=1))


def test_leaf_building_misuse_is_a_value_error() -> None:
    ca_key, ca_pem = _ca()
    with pytest.raises(ValueError, match="subject alternative name"):
        _leaf(ca_key, ca_pem, uris=())
    with pytest.raises(ValueError, match="client or server"):
        _leaf(ca_key, ca_pem, client=False)
    with pytest.raises(ValueError, match="does not match"):
        _leaf(TlsKey.generate(), ca_pem)
    with pytest.raises(ValueError, match="1 to 64"):
        make_ca_certificate(ca_key, "x" * 65, now=NOW, lifetime=timedelta(days=1))


def test_tls_key_repr_and_pem_hide_the_private_key() -> None:
    key = TlsKey.generate()
    clear = key.to_pem()
    assert b"BEGIN PRIVATE KEY" in clear
    assert "PRIVATE" not in repr(key)
    assert key.public_bytes().hex() in repr(key)
    sealed = key.to_pem("passphrase")
    assert b"ENCRYPTED PRIVATE KEY" in sealed
    assert TlsKey.from_pem(sealed, "passphrase").public_bytes() == key.public_bytes()


@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_identity_error(data: bytes) -> None:
    try:
        certificate_uris(data)
    except IdentityError:
        pass
    with pytest.raises(AuthenticationFailed):
        verify_issued_by(data, data, now=NOW)
