"""Enrolment by one-time token: the join listener against a real deployment."""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from _deployment import Deployment, MakeDeployment
from trustwire.cli.messaging import renew_in_band
from trustwire.client.agent import Agent
from trustwire.client.join import JoinedAgent, join
from trustwire.coordinator.join import JoinListener, token_hash
from trustwire.crypto.random import random_bytes
from trustwire.crypto.x509 import TlsKey
from trustwire.errors import AuthenticationFailed
from trustwire.events import EventKind
from trustwire.home import Home
from trustwire.identity.keys import AgentIdentity
from trustwire.protocol import join as wire
from trustwire.protocol.envelope import ZERO_CHANNEL, Envelope, FrameType
from trustwire.transport.tls import join_server_ssl_context


@dataclass
class Joining:
    deployment: Deployment
    listener: JoinListener
    join_requests: list[str]

    async def invite(self, name: str, *, ttl: float = 3600.0, roles: tuple[str, ...] = ()) -> str:
        token = base64.urlsafe_b64encode(random_bytes(32)).rstrip(b"=").decode("ascii")
        await self.deployment.store.tokens.create(
            token_hash(token), name=name, roles=roles, expires_at=time.time() + ttl
        )
        return token

    async def join(
        self, token: str, name: str, *, fingerprint: str | None = None
    ) -> tuple[AgentIdentity, TlsKey, JoinedAgent]:
        identity = AgentIdentity.generate(name, issued_at=int(time.time()))
        tls_key = TlsKey.generate()
        joined = await join(
            token,
            identity,
            tls_key,
            host="127.0.0.1",
            port=self.listener.port,
            ca_fingerprint=fingerprint or self.deployment.home.ca().fingerprint,
        )
        return identity, tls_key, joined


@pytest.fixture
async def joining(make_deployment: MakeDeployment) -> AsyncIterator[Joining]:
    deployment = await make_deployment(agents=("alice",))
    home = deployment.home
    cert_pem, key_pem, _ca = home.coordinator_tls()
    registry = await home.open_registry(deployment.store)
    listener = JoinListener(
        store=deployment.store,
        enrolment=registry,
        issuer=home.ca(),
        tls=join_server_ssl_context(cert_pem, key_pem),
        coordinator=deployment.address,
        events=deployment.coordinator.events,
        on_enrolled=deployment.coordinator.refresh_agents,
    )
    seen: list[str] = []
    original: Callable[[bytes], wire.JoinRequest | None] = wire.decode_request

    def spy(body: bytes) -> wire.JoinRequest | None:
        request = original(body)
        seen.append("ca" if request is None else "join")
        return request

    patch = pytest.MonkeyPatch()
    patch.setattr(wire, "decode_request", spy)
    await listener.start()
    try:
        yield Joining(deployment, listener, seen)
    finally:
        await listener.close()
        await registry.close()
        patch.undo()


async def test_an_agent_joined_by_token_into_its_own_home_messages_an_existing_agent(
    joining: Joining, tmp_path: Path
) -> None:
    deployment = joining.deployment
    token = await joining.invite("dave", roles=("worker",))
    identity, tls_key, joined = await joining.join(token, "dave")

    home = Home.init_joined(
        tmp_path / "elsewhere",
        domain="trustwire",
        coordinator=deployment.address,
        ca_fingerprint=joined.ca_fingerprint,
    )
    home.save_agent(
        identity, cert_pem=joined.cert_pem, tls_key_pem=tls_key.to_pem(), ca_pem=joined.ca_pem
    )
    loaded, credentials = home.load_agent("dave")
    assert loaded.did == identity.did
    record = await deployment.store.agents.get_by_name("dave")
    assert record is not None and record.did == identity.did and record.roles == ("worker",)

    dave = await Agent.connect(loaded, credentials, coordinator=deployment.address)
    alice = await deployment.connect("alice")
    try:
        result = await dave.send("alice", b"hello from a joined agent")
        message = await alice.receive(timeout=5)
    finally:
        await dave.close()
    assert result.status == "delivered"
    assert message.data == b"hello from a joined agent"
    assert message.sender == identity.did
    assert joining.join_requests == ["ca", "join"]


async def test_a_token_is_refused_the_second_time(joining: Joining) -> None:
    token = await joining.invite("erin")
    await joining.join(token, "erin")
    with pytest.raises(AuthenticationFailed, match="refused the join"):
        await joining.join(token, "erin")
    failure = await joining.deployment.wait_event(
        EventKind.AUTH_FAILURE, lambda e: "already used" in (e.reason or "")
    )
    assert failure.reason is not None and failure.reason.startswith("join:")


async def test_an_expired_token_is_refused(joining: Joining) -> None:
    token = await joining.invite("frank", ttl=-1.0)
    with pytest.raises(AuthenticationFailed, match="refused the join"):
        await joining.join(token, "frank")
    assert await joining.deployment.store.agents.get_by_name("frank") is None


async def test_a_token_for_another_name_enrols_nobody(joining: Joining) -> None:
    token = await joining.invite("grace")
    with pytest.raises(AuthenticationFailed, match="refused the join"):
        await joining.join(token, "mallory")
    await joining.deployment.wait_event(
        EventKind.AUTH_FAILURE, lambda e: "not 'mallory'" in (e.reason or "")
    )
    assert await joining.deployment.store.agents.get_by_name("mallory") is None


async def test_a_wrong_ca_fingerprint_aborts_before_the_token_is_sent(joining: Joining) -> None:
    token = await joining.invite("heidi")
    with pytest.raises(AuthenticationFailed, match="nothing was sent"):
        await joining.join(token, "heidi", fingerprint="ab" * 32)
    assert joining.join_requests == ["ca"]
    # The token is still unused: it never reached the coordinator.
    assert await joining.deployment.store.tokens.redeem(token_hash(token), now=time.time()) == (
        "heidi",
        (),
    )


async def test_a_request_signed_by_another_key_is_refused_and_keeps_the_token_unspent(
    joining: Joining,
) -> None:
    token = await joining.invite("ivan")
    identity = AgentIdentity.generate("ivan", issued_at=int(time.time()))
    forged = wire.JoinRequest(
        token=token,
        name="ivan",
        did=identity.did,
        agreement_key=identity.agreement.public,
        agreement_statement=identity.agreement_statement(issued_at=identity.issued_at),
        agreement_issued_at=identity.issued_at,
        tls_public_key=TlsKey.generate().public_bytes(),
        signature=AgentIdentity.generate("other").signing_key.sign(b"anything"),
    )
    fingerprint = joining.deployment.home.ca().fingerprint
    assert forged.statement(fingerprint) != forged.statement("00" * 32)
    listener = joining.listener
    refusal = await listener._answer(_envelope(forged.to_bytes()), "test")
    assert wire.decode_result(refusal) is None
    assert await joining.deployment.store.tokens.redeem(token_hash(token), now=time.time())


def _envelope(body: bytes) -> Envelope:
    return Envelope.create(FrameType.JOIN_REQUEST, ZERO_CHANNEL, "", "", body=body)


async def test_a_joined_home_saves_the_certificates_its_agent_renews_in_band(
    joining: Joining, tmp_path: Path
) -> None:
    deployment = joining.deployment
    deployment.coordinator.issuer = deployment.home.ca()  # serve's coordinator renews
    identity, tls_key, joined = await joining.join(await joining.invite("judy"), "judy")
    home = Home.init_joined(
        tmp_path / "judy-home",
        domain="trustwire",
        coordinator=deployment.address,
        ca_fingerprint=joined.ca_fingerprint,
    )
    home.save_agent(
        identity, cert_pem=joined.cert_pem, tls_key_pem=tls_key.to_pem(), ca_pem=joined.ca_pem
    )
    assert not home.has_ca_key
    _identity, credentials = home.load_agent("judy")
    judy = await Agent.connect(identity, credentials, coordinator=deployment.address)
    try:
        save = functools.partial(home.save_credentials, "judy")
        await renew_in_band(judy, save)  # 24 h left: nothing to do yet
        assert home.load_agent("judy")[1].cert_pem == joined.cert_pem
        await renew_in_band(judy, save, margin=timedelta(hours=25))
    finally:
        await judy.close()
    renewed = home.load_agent("judy")[1]
    assert renewed.cert_pem == judy.credentials.cert_pem != joined.cert_pem
    again = await Agent.connect(identity, renewed, coordinator=deployment.address)
    await again.close()
