"""Real loopback TLS 1.3 handshakes with domain-CA certificates (Ed25519 keys).

OpenSSL checks certificate validity against the system clock, so these certificates are
issued at the real current time.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trustwire.crypto.x509 import TLS_KEY_TYPE, certificate_der
from trustwire.errors import IdentityError
from trustwire.identity.ca import DomainCA, IssuedCertificate
from trustwire.identity.keys import AgentIdentity
from trustwire.transport.tls import client_ssl_context, peer_did, server_ssl_context

TIMEOUT = 5.0
NOW = datetime.now(UTC)


@dataclass
class Outcome:
    """What one side of a handshake saw."""

    error: BaseException | None = None
    version: str | None = None
    peer_did: str | None = None
    received: bytes = b""
    peer_der: bytes | None = field(default=None, repr=False)


@pytest.fixture(scope="module")
def ca() -> DomainCA:
    return DomainCA.create("tls-test-domain", now=NOW)


@pytest.fixture(scope="module")
def alice() -> AgentIdentity:
    return AgentIdentity.generate("alice")


@pytest.fixture(scope="module")
def server_cert(ca: DomainCA) -> IssuedCertificate:
    return ca.issue_server_certificate(now=NOW)


@pytest.fixture(scope="module")
def alice_cert(ca: DomainCA, alice: AgentIdentity) -> IssuedCertificate:
    return ca.issue_agent_certificate(alice.did, "alice", now=NOW)


@pytest.fixture(scope="module")
def server_context(ca: DomainCA, server_cert: IssuedCertificate) -> ssl.SSLContext:
    return server_ssl_context(server_cert.cert_pem, server_cert.key_pem, ca.cert_pem)


def _run(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    *,
    hostname: str = "localhost",
) -> tuple[Outcome, Outcome]:
    """One connection over 127.0.0.1: the client sends b"ping", the server answers b"pong"."""
    server = Outcome()
    client = Outcome()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                raw, _ = listener.accept()
                raw.settimeout(TIMEOUT)
                with server_context.wrap_socket(raw, server_side=True) as tls:
                    server.version = tls.version()
                    server.peer_did = peer_did(tls)
                    server.received = tls.recv(4)
                    tls.sendall(b"pong")
            except (OSError, ssl.SSLError) as exc:
                server.error = exc

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
                client_context.wrap_socket(raw, server_hostname=hostname) as tls,
            ):
                client.version = tls.version()
                client.peer_did = peer_did(tls)
                client.peer_der = tls.getpeercert(binary_form=True)
                tls.sendall(b"ping")
                client.received = tls.recv(4)
        except (OSError, ssl.SSLError) as exc:
            client.error = exc
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    return server, client


def _client(ca_pem: bytes, issued: IssuedCertificate) -> ssl.SSLContext:
    return client_ssl_context(issued.cert_pem, issued.key_pem, ca_pem)


def test_mutual_tls13_handshake_succeeds(
    ca: DomainCA,
    alice: AgentIdentity,
    alice_cert: IssuedCertificate,
    server_cert: IssuedCertificate,
    server_context: ssl.SSLContext,
) -> None:
    assert TLS_KEY_TYPE == "Ed25519"
    server, client = _run(server_context, _client(ca.cert_pem, alice_cert))
    assert server.error is None
    assert client.error is None
    assert server.version == client.version == "TLSv1.3"
    assert server.received == b"ping"
    assert client.received == b"pong"
    assert server.peer_did == alice.did  # the server learns who connected
    assert client.peer_did is None  # the server certificate names hosts, not a DID
    assert client.peer_der == certificate_der(server_cert.cert_pem)


def test_handshake_by_ip_address_checks_the_ip_san(
    ca: DomainCA, alice_cert: IssuedCertificate, server_context: ssl.SSLContext
) -> None:
    server, client = _run(server_context, _client(ca.cert_pem, alice_cert), hostname="127.0.0.1")
    assert client.error is None
    assert server.error is None
    assert client.received == b"pong"


def test_client_certificate_from_another_ca_is_refused(
    alice: AgentIdentity, ca: DomainCA, server_context: ssl.SSLContext
) -> None:
    other = DomainCA.create("tls-test-domain", now=NOW)  # same name, different key
    forged = other.issue_agent_certificate(alice.did, "alice", now=NOW)
    # The client trusts the real CA, so it accepts the server; the server must refuse.
    server, client = _run(server_context, _client(ca.cert_pem, forged))
    assert isinstance(server.error, ssl.SSLError)
    assert "certificate" in str(server.error).lower()
    assert server.received == b""
    assert server.peer_did is None
    assert client.received == b""


def test_client_without_a_certificate_is_refused(
    ca: DomainCA, server_context: ssl.SSLContext
) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.minimum_version = ssl.TLSVersion.TLSv1_3
    anonymous.load_verify_locations(cadata=certificate_der(ca.cert_pem))
    server, client = _run(server_context, anonymous)
    assert isinstance(server.error, ssl.SSLError)
    assert "certificate" in str(server.error).lower()
    assert server.received == b""
    assert client.received == b""


def test_expired_client_certificate_is_refused(
    ca: DomainCA, alice: AgentIdentity, server_context: ssl.SSLContext
) -> None:
    stale = ca.issue_agent_certificate(
        alice.did, "alice", now=NOW - timedelta(days=2), lifetime=timedelta(hours=24)
    )
    server, client = _run(server_context, _client(ca.cert_pem, stale))
    assert isinstance(server.error, ssl.SSLError)
    assert "expired" in str(server.error).lower()
    assert client.received == b""


def test_tls12_only_client_cannot_connect(
    tmp_path: Path, ca: DomainCA, alice_cert: IssuedCertificate, server_context: ssl.SSLContext
) -> None:
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    legacy.minimum_version = ssl.TLSVersion.TLSv1_2
    legacy.maximum_version = ssl.TLSVersion.TLSv1_2
    legacy.load_verify_locations(cadata=certificate_der(ca.cert_pem))
    (tmp_path / "c.pem").write_bytes(alice_cert.cert_pem)
    (tmp_path / "k.pem").write_bytes(alice_cert.key_pem)
    legacy.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    server, client = _run(server_context, legacy)
    assert isinstance(server.error, ssl.SSLError)
    assert isinstance(client.error, ssl.SSLError)
    assert server.version is None
    assert client.version is None


def test_client_refuses_a_server_from_another_ca(
    ca: DomainCA, alice_cert: IssuedCertificate
) -> None:
    impostor_ca = DomainCA.create("tls-test-domain", now=NOW)
    impostor = impostor_ca.issue_server_certificate(now=NOW)
    impostor_context = server_ssl_context(impostor.cert_pem, impostor.key_pem, ca.cert_pem)
    server, client = _run(impostor_context, _client(ca.cert_pem, alice_cert))
    assert isinstance(client.error, ssl.SSLCertVerificationError)
    assert client.version is None
    assert server.received == b""


def test_client_refuses_a_server_certificate_for_another_host(
    ca: DomainCA, alice_cert: IssuedCertificate, server_context: ssl.SSLContext
) -> None:
    server, client = _run(
        server_context, _client(ca.cert_pem, alice_cert), hostname="coordinator.example"
    )
    assert isinstance(client.error, ssl.SSLCertVerificationError)
    assert "hostname" in str(client.error).lower() or "mismatch" in str(client.error).lower()
    assert server.received == b""


def test_contexts_pin_the_domain_ca_and_require_tls13(
    ca: DomainCA, alice_cert: IssuedCertificate, server_context: ssl.SSLContext
) -> None:
    client = _client(ca.cert_pem, alice_cert)
    for context in (server_context, client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.verify_mode == ssl.CERT_REQUIRED
        anchors = context.get_ca_certs(binary_form=True)
        assert anchors == [certificate_der(ca.cert_pem)]
    assert client.check_hostname


def test_key_material_files_are_removed_after_loading(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ca: DomainCA,
    alice_cert: IssuedCertificate,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _client(ca.cert_pem, alice_cert)
    server_ssl_context(alice_cert.cert_pem, alice_cert.key_pem, ca.cert_pem)
    assert list(tmp_path.iterdir()) == []


def test_key_not_matching_the_certificate_is_refused(
    ca: DomainCA, alice_cert: IssuedCertificate, server_cert: IssuedCertificate
) -> None:
    with pytest.raises(ValueError, match="could not be loaded"):
        client_ssl_context(alice_cert.cert_pem, server_cert.key_pem, ca.cert_pem)


def test_garbage_ca_is_refused(alice_cert: IssuedCertificate) -> None:
    with pytest.raises(IdentityError):
        client_ssl_context(alice_cert.cert_pem, alice_cert.key_pem, b"not a certificate")


def test_server_certificate_cannot_authenticate_a_client(
    ca: DomainCA, server_cert: IssuedCertificate, server_context: ssl.SSLContext
) -> None:
    server, client = _run(server_context, _client(ca.cert_pem, server_cert))
    assert isinstance(server.error, ssl.SSLError)
    assert server.received == b""
    assert client.received == b""


def test_agent_certificate_cannot_impersonate_the_server(
    ca: DomainCA, alice: AgentIdentity, alice_cert: IssuedCertificate
) -> None:
    # An agent holds a genuine domain certificate; it must not pass as the coordinator.
    rogue = server_ssl_context(alice_cert.cert_pem, alice_cert.key_pem, ca.cert_pem)
    bob_cert = ca.issue_agent_certificate(alice.did, "bob", now=NOW)
    server, client = _run(rogue, _client(ca.cert_pem, bob_cert))
    assert isinstance(client.error, ssl.SSLCertVerificationError)
    assert server.received == b""
