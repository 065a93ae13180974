"""The trust-domain CA: creation, persistence, agent and server certificates."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from trustwire.crypto.keyfile import write_file_atomic
from trustwire.crypto.x509 import (
    TlsKey,
    certificate_common_name,
    certificate_der,
    certificate_uris,
    make_leaf_certificate,
)
from trustwire.errors import AuthenticationFailed, IdentityError, InvalidDid, KeyFileError
from trustwire.identity.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    DomainCA,
    certificate_did,
    certificate_fingerprint,
    certificate_not_after,
    needs_renewal,
    verify_issued_by,
)
from trustwire.identity.keys import AgentIdentity

NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
PASSPHRASE = "ca passphrase"


@pytest.fixture(scope="module")
def ca() -> DomainCA:
    return DomainCA.create("example-domain", now=NOW)


@pytest.fixture(scope="module")
def alice() -> AgentIdentity:
    return AgentIdentity.generate("alice")


def test_agent_certificate_binds_did_and_name(ca: DomainCA, alice: AgentIdentity) -> None:
    issued = ca.issue_agent_certificate(alice.did, "alice", now=NOW)
    assert certificate_did(issued.cert_pem) == alice.did
    assert certificate_did(certificate_der(issued.cert_pem)) == alice.did
    assert certificate_common_name(issued.cert_pem) == "alice"
    assert certificate_uris(issued.cert_pem) == [alice.did]
    ca.verify(issued.cert_pem, now=NOW)
    verify_issued_by(issued.cert_pem, ca.cert_pem, now=NOW)


def test_agent_certificate_lasts_24_hours_by_default(ca: DomainCA, alice: AgentIdentity) -> None:
    issued = ca.issue_agent_certificate(alice.did, "alice", now=NOW)
    assert certificate_not_after(issued.cert_pem) == NOW + timedelta(hours=24)
    short = ca.issue_agent_certificate(alice.did, "alice", now=NOW, lifetime=timedelta(hours=1))
    assert certificate_not_after(short.cert_pem) == NOW + timedelta(hours=1)


def test_each_certificate_gets_a_fresh_tls_key_apart_from_the_identity_key(
    ca: DomainCA, alice: AgentIdentity
) -> None:
    first = ca.issue_agent_certificate(alice.did, "alice", now=NOW)
    second = ca.issue_agent_certificate(alice.did, "alice", now=NOW)
    first_key = TlsKey.from_pem(first.key_pem)
    second_key = TlsKey.from_pem(second.key_pem)
    assert first_key.matches(first.cert_pem)
    assert second_key.matches(second.cert_pem)
    assert first_key.public_bytes() != second_key.public_bytes()
    identity_public = alice.signing_key.public_key.to_bytes()
    assert identity_public not in {first_key.public_bytes(), second_key.public_bytes()}
    assert alice.signing_key.to_bytes() not in first.key_pem


@pytest.mark.parametrize(
    "did",
    [
        "",
        "alice",
        "did:web:example.com",
        "did:key:z6LSeu9HkTHSfLLeUs2nnzUSNedgDUevfNQgQjQC23ZCit6F",
    ],
)
def test_agent_certificate_requires_an_ed25519_did(ca: DomainCA, did: str) -> None:
    with pytest.raises(InvalidDid):
        ca.issue_agent_certificate(did, "alice", now=NOW)


def test_server_certificate_names_every_host(ca: DomainCA) -> None:
    issued = ca.issue_server_certificate(now=NOW)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert certificate_did(issued.cert_pem) is None
    assert certificate_not_after(issued.cert_pem) == NOW + timedelta(days=365)
    ca.verify(issued.cert_pem, now=NOW)


def test_server_certificate_needs_a_host_name(ca: DomainCA) -> None:
    with pytest.raises(ValueError, match="host name"):
        ca.issue_server_certificate((), now=NOW)


def test_certificate_with_two_dids_names_nobody(ca: DomainCA) -> None:
    first = AgentIdentity.generate("a").did
    second = AgentIdentity.generate("b").did
    pem = make_leaf_certificate(
        ca_key=ca._key,
        ca_cert=ca.cert_pem,
        subject_key=TlsKey.generate(),
        common_name="ambiguous",
        uris=(first, second),
        client=True,
        server=False,
        now=NOW,
        lifetime=timedelta(hours=1),
    )
    assert certificate_did(pem) is None


def test_certificate_did_rejects_garbage() -> None:
    with pytest.raises(IdentityError):
        certificate_did(b"garbage")


def test_certificate_from_another_ca_fails(ca: DomainCA, alice: AgentIdentity) -> None:
    other = DomainCA.create("example-domain", now=NOW)
    issued = other.issue_agent_certificate(alice.did, "alice", now=NOW)
    with pytest.raises(AuthenticationFailed):
        ca.verify(issued.cert_pem, now=NOW)


def test_expired_agent_certificate_is_detected(ca: DomainCA, alice: AgentIdentity) -> None:
    issued = ca.issue_agent_certificate(alice.did, "alice", now=NOW)
    later = NOW + timedelta(hours=25)
    assert needs_renewal(issued.cert_pem, now=later)
    with pytest.raises(AuthenticationFailed, match="expired"):
        ca.verify(issued.cert_pem, now=later)


def test_save_and_load_round_trip(tmp_path: Path, ca: DomainCA, alice: AgentIdentity) -> None:
    ca.save(tmp_path / "ca", PASSPHRASE)
    assert stat.S_IMODE((tmp_path / "ca" / CA_KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    loaded = DomainCA.load(tmp_path / "ca", PASSPHRASE)
    assert loaded.fingerprint == ca.fingerprint
    assert loaded.cert_pem == ca.cert_pem
    assert loaded.name == "example-domain"
    # The loaded CA signs with the same key: its certificates verify under the old one.
    issued = loaded.issue_agent_certificate(alice.did, "alice", now=NOW)
    ca.verify(issued.cert_pem, now=NOW)


def test_fingerprint_matches_the_saved_certificate(tmp_path: Path, ca: DomainCA) -> None:
    ca.save(tmp_path, None)
    assert certificate_fingerprint((tmp_path / CA_CERT_FILE).read_bytes()) == ca.fingerprint
    assert len(ca.fingerprint) == 64
    assert ca.fingerprint == ca.fingerprint.lower()


def test_load_refuses_a_wrong_or_missing_passphrase(tmp_path: Path, ca: DomainCA) -> None:
    ca.save(tmp_path, PASSPHRASE)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        DomainCA.load(tmp_path, "nope")
    with pytest.raises(KeyFileError, match="no passphrase"):
        DomainCA.load(tmp_path, None)


def test_load_refuses_a_certificate_of_another_ca(tmp_path: Path, ca: DomainCA) -> None:
    ca.save(tmp_path, None)
    other = DomainCA.create("example-domain", now=NOW)
    write_file_atomic(tmp_path / CA_CERT_FILE, other.cert_pem, mode=0o644)
    with pytest.raises(KeyFileError, match="does not match"):
        DomainCA.load(tmp_path, None)


def test_load_refuses_a_corrupt_certificate(tmp_path: Path, ca: DomainCA) -> None:
    ca.save(tmp_path, None)
    write_file_atomic(tmp_path / CA_CERT_FILE, b"-----BEGIN CERTIFICATE-----\nAAAA\n", mode=0o644)
    with pytest.raises(KeyFileError, match=r"not a valid X\.509"):
        DomainCA.load(tmp_path, None)
    (tmp_path / CA_CERT_FILE).unlink()
    with pytest.raises(KeyFileError, match="cannot read"):
        DomainCA.load(tmp_path, None)


def test_reprs_show_no_private_key(ca: DomainCA, alice: AgentIdentity) -> None:
    issued = ca.issue_agent_certificate(alice.did, "alice", now=NOW)
    assert "PRIVATE" not in repr(issued)
    assert issued.key_pem.decode() not in repr(issued)
    assert ca.fingerprint in repr(ca)
    assert "PRIVATE" not in repr(ca)
