"""Who may connect: mutual TLS 1.3 under the domain CA, then the DID in the registry.

Every refused connection attempt is a real TLS connection to a running coordinator, and
each one must leave an ``auth.failure`` security event. Revocation takes effect at once:
the live connection is closed and reconnects are refused.
"""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta

import pytest

from _deployment import Deployment, MakeDeployment, wait_until
from trustwire.client.agent import Agent, Credentials
from trustwire.crypto.x509 import TlsKey, make_leaf_certificate
from trustwire.errors import AuthenticationFailed, ConnectionClosed, ConnectionFailed, UnknownAgent
from trustwire.events import EventKind, SecurityEvent
from trustwire.identity.ca import DomainCA
from trustwire.identity.keys import AgentIdentity
from trustwire.protocol.control import ErrorCode
from trustwire.protocol.envelope import FrameType
from trustwire.transport.tls import client_ssl_context, server_ssl_context

NOW = datetime.now(UTC)


async def connect_with(deployment: Deployment, name: str, credentials: Credentials) -> Agent:
    identity = deployment.identities[name]
    return await Agent.connect(identity, credentials, coordinator=deployment.address, timeout=5)


async def auth_failure(deployment: Deployment, reason: str) -> SecurityEvent:
    return await deployment.wait_event(
        EventKind.AUTH_FAILURE, lambda e: (e.reason or "").startswith(reason)
    )


def assert_never_authenticated(deployment: Deployment) -> None:
    assert not deployment.events(EventKind.AUTH_SUCCESS)
    assert not deployment.coordinator._connections


# -- TLS layer: refused before any frame ------------------------------------------------


async def test_a_client_without_a_certificate_cannot_connect(deployment: Deployment) -> None:
    raw = await deployment.raw(deployment.bare_context(), ready=False)

    # TLS 1.3: the client's side of the handshake completes first; the server then
    # refuses the missing certificate and the connection ends without a single frame.
    assert await raw.read_envelope() is None

    event = await auth_failure(deployment, "tls")
    assert event.agent is None and event.peer is None
    assert "address" in event.details
    assert_never_authenticated(deployment)


async def test_a_certificate_from_another_ca_is_refused(deployment: Deployment) -> None:
    foreign = DomainCA.create("another-domain", now=NOW)
    alice = deployment.identities["alice"]
    issued = foreign.issue_agent_certificate(alice.did, "alice", now=NOW)
    credentials = Credentials(issued.cert_pem, issued.key_pem, deployment.home.ca().cert_pem)

    with pytest.raises(AuthenticationFailed):
        await connect_with(deployment, "alice", credentials)

    await auth_failure(deployment, "tls")
    assert_never_authenticated(deployment)


@pytest.mark.parametrize(
    ("issued_at", "lifetime"),
    [
        pytest.param(NOW - timedelta(days=2), timedelta(hours=1), id="expired"),
        pytest.param(NOW + timedelta(days=1), timedelta(hours=24), id="not-yet-valid"),
    ],
)
async def test_a_certificate_outside_its_validity_period_is_refused(
    deployment: Deployment, issued_at: datetime, lifetime: timedelta
) -> None:
    alice = deployment.identities["alice"]
    ca = deployment.home.ca()
    issued = ca.issue_agent_certificate(alice.did, "alice", now=issued_at, lifetime=lifetime)
    credentials = Credentials(issued.cert_pem, issued.key_pem, ca.cert_pem)

    with pytest.raises(AuthenticationFailed):
        await connect_with(deployment, "alice", credentials)

    await auth_failure(deployment, "tls")
    assert_never_authenticated(deployment)


async def test_a_tls_1_2_only_client_cannot_connect(deployment: Deployment) -> None:
    context = deployment.client_context("alice")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2

    # The server aborts the handshake: a protocol-version alert or a reset, by timing.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await deployment.raw(context, ready=False)

    await auth_failure(deployment, "tls")
    assert_never_authenticated(deployment)


async def test_an_agent_refuses_a_coordinator_certified_by_another_ca(
    make_deployment: MakeDeployment,
) -> None:
    ours = await make_deployment()
    theirs = await make_deployment()
    identity, credentials = ours.home.load_agent("alice")

    with pytest.raises(ConnectionFailed):
        await Agent.connect(identity, credentials, coordinator=theirs.address, timeout=5)

    # The rogue coordinator never saw a client certificate it could accept.
    assert not theirs.events(EventKind.AUTH_SUCCESS)


async def test_the_coordinators_own_certificate_is_no_client_certificate(
    deployment: Deployment,
) -> None:
    cert, key, ca = deployment.home.coordinator_tls()

    raw = await deployment.raw(client_ssl_context(cert, key, ca), ready=False)

    assert await raw.read_envelope() is None
    await auth_failure(deployment, "tls")
    assert_never_authenticated(deployment)


async def test_an_agent_certificate_cannot_impersonate_the_coordinator(
    deployment: Deployment,
) -> None:
    """A compromised agent holds a certificate from the domain CA; serving it as a
    coordinator must not fool another agent (wrong purpose, no host name)."""
    bob = deployment.credentials("bob")
    rogue = await asyncio.start_server(
        lambda _r, w: w.close(),
        "127.0.0.1",
        0,
        ssl=server_ssl_context(bob.cert_pem, bob.key_pem, bob.ca_pem),
    )
    try:
        port = rogue.sockets[0].getsockname()[1]
        identity, credentials = deployment.home.load_agent("alice")
        with pytest.raises(ConnectionFailed):
            await Agent.connect(identity, credentials, coordinator=f"127.0.0.1:{port}", timeout=5)
    finally:
        rogue.close()
        await rogue.wait_closed()


# -- identity layer: valid certificate, wrong DID ---------------------------------------


async def test_a_certificate_for_a_did_that_is_not_enrolled_is_refused(
    deployment: Deployment,
) -> None:
    mallory = AgentIdentity.generate("mallory")
    ca = deployment.home.ca()
    issued = ca.issue_agent_certificate(mallory.did, "mallory", now=NOW)

    with pytest.raises(AuthenticationFailed):
        await Agent.connect(
            mallory,
            Credentials(issued.cert_pem, issued.key_pem, ca.cert_pem),
            coordinator=deployment.address,
            timeout=5,
        )

    event = await auth_failure(deployment, "DID not enrolled")
    assert event.agent == mallory.did
    assert_never_authenticated(deployment)


@pytest.mark.parametrize("kind", ["uri-not-a-did", "two-dids"])
async def test_a_certificate_naming_no_single_did_is_refused(
    deployment: Deployment, kind: str
) -> None:
    uris = (
        ("spiffe://trustwire/alice",)
        if kind == "uri-not-a-did"
        else (deployment.did("alice"), deployment.did("bob"))  # ambiguous: names nobody
    )
    ca = deployment.home.ca()
    key = TlsKey.generate()
    cert = make_leaf_certificate(
        ca_key=TlsKey.read(deployment.home.path / "ca" / "ca.key", None),
        ca_cert=ca.cert_pem,
        subject_key=key,
        common_name="alice",
        uris=uris,
        client=True,
        server=False,
        now=NOW,
        lifetime=timedelta(hours=1),
    )
    raw = await deployment.raw(client_ssl_context(cert, key.to_pem(), ca.cert_pem), ready=False)

    assert await raw.read_envelope() is None  # closed without a READY

    event = await auth_failure(deployment, "no DID in certificate")
    assert event.agent is None
    assert_never_authenticated(deployment)


async def test_an_enrolled_agent_connects_and_is_told_who_it_is(deployment: Deployment) -> None:
    raw = await deployment.raw("alice", ready=False)

    ready = await raw.expect(FrameType.READY)

    assert ready.recipient == deployment.did("alice")
    event = await deployment.wait_event(EventKind.AUTH_SUCCESS)
    assert event.agent == deployment.did("alice")


# -- revocation -----------------------------------------------------------------------


async def revoke(deployment: Deployment, name: str) -> None:
    await deployment.store.agents.revoke(deployment.did(name), at=deployment.clock())
    await deployment.coordinator.refresh_agents()


async def test_revoking_an_agent_closes_its_live_connection(deployment: Deployment) -> None:
    bob = await deployment.connect("bob")

    await revoke(deployment, "bob")

    await wait_until(lambda: not bob.connected)
    assert isinstance(bob._close_reason, ConnectionClosed)
    assert bob._close_reason.code == ErrorCode.REJECTED
    event = await deployment.wait_event(EventKind.AGENT_REVOKED)
    assert event.agent == bob.did
    await wait_until(lambda: not deployment.coordinator.online(bob.did))


async def test_a_revoked_agent_cannot_reconnect(deployment: Deployment) -> None:
    await revoke(deployment, "bob")

    with pytest.raises(AuthenticationFailed):
        await deployment.connect("bob")

    event = await auth_failure(deployment, "agent revoked")
    assert event.agent == deployment.did("bob")


async def test_nobody_can_message_a_revoked_agent(deployment: Deployment) -> None:
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    await alice.send("bob", "before")
    await bob.receive(timeout=5)

    await revoke(deployment, "bob")
    await wait_until(lambda: not bob.connected)

    with pytest.raises(UnknownAgent):
        await alice.send(bob.did, "after")
    assert await deployment.store.queue.depth(bob.did) == 0


async def test_a_revoked_agent_cannot_send_over_a_connection_it_already_had(
    deployment: Deployment,
) -> None:
    raw = await deployment.raw("alice")

    await revoke(deployment, "alice")

    # The coordinator tells it (opaquely) and hangs up.
    frames = await raw.until_closed()
    assert [env.type for env in frames] == [FrameType.ERROR]
    assert frames[0].message_id == bytes(16)
