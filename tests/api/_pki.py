"""Real certificates for HTTPS API tests: a domain CA, a server certificate, agent clients.

:class:`Pki` issues everything from a fresh :class:`~trustwire.identity.ca.DomainCA`.
Client certificates and keys are written to files (0600) as ``curl --cert/--key`` would
use them, and :func:`client` builds an ``httpx.AsyncClient`` presenting them.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from trustwire.coordinator.api import Caller
from trustwire.identity.ca import DomainCA
from trustwire.identity.keys import AgentIdentity
from trustwire.transport.tls import server_ssl_context


def fake_did() -> str:
    """A well-formed Ed25519 did:key (of a fresh identity) for a certificate."""
    return str(AgentIdentity.generate("x").did)


@dataclass(frozen=True)
class ClientFiles:
    """A client certificate, its key and the CA certificate, as 0600 files."""

    cert: Path
    key: Path
    ca: Path
    did: str


class Pki:
    """A domain CA with a server certificate for 127.0.0.1."""

    def __init__(self, name: str = "test-domain") -> None:
        self.now = datetime.now(UTC)
        self.ca = DomainCA.create(name, now=self.now)
        server = self.ca.issue_server_certificate(("127.0.0.1", "localhost"), now=self.now)
        self._server = server

    def server_context(self) -> ssl.SSLContext:
        return server_ssl_context(self._server.cert_pem, self._server.key_pem, self.ca.cert_pem)

    def client_files(
        self, directory: Path, name: str, did: str | None = None, *, ca_pem: bytes | None = None
    ) -> ClientFiles:
        """Issue a certificate for ``did`` (fresh if ``None``) and write it with its key.

        ``ca_pem`` is the CA the client trusts for the *server* (this one's by default).
        """
        did = did or fake_did()
        issued = self.ca.issue_agent_certificate(did, name, now=self.now)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = ClientFiles(
            cert=directory / f"{name}.pem",
            key=directory / f"{name}.key",
            ca=directory / "ca.pem",
            did=did,
        )
        for path, data in (
            (files.cert, issued.cert_pem),
            (files.key, issued.key_pem),
            (files.ca, ca_pem or self.ca.cert_pem),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        return files


def client_context(
    files: ClientFiles | None,
    ca: Path,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client TLS context trusting only ``ca``, presenting ``files`` when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    context.load_verify_locations(cafile=ca)
    if files is not None:
        context.load_cert_chain(files.cert, files.key)
    return context


def client(
    base_url: str, files: ClientFiles | None, ca: Path | None = None, **options: object
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for ``base_url`` presenting ``files``' certificate."""
    trust = ca if ca is not None else files.ca if files is not None else None
    if trust is None:
        raise ValueError("a client needs a CA to trust")
    context = client_context(files, trust, **options)  # type: ignore[arg-type]
    return httpx.AsyncClient(base_url=base_url, verify=context, timeout=10.0)


def directory_of(*callers: Caller) -> dict[str, Caller]:
    return {caller.did: caller for caller in callers}


__all__ = [
    "ClientFiles",
    "Pki",
    "client",
    "client_context",
    "directory_of",
    "fake_did",
]
