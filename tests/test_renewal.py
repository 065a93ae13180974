"""In-band certificate renewal: the SDK renews its short-lived certificate before expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from trustwire.client.agent import Agent, Credentials
from trustwire.coordinator.server import Coordinator
from trustwire.crypto.x509 import certificate_not_after
from trustwire.events import EventKind, EventStream, MemorySink
from trustwire.home import Home
from trustwire.identity.ca import certificate_did
from trustwire.policy.engine import PolicyEngine
from trustwire.transport.tls import server_ssl_context


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Home, Coordinator, MemorySink]]:
    home = Home.init(tmp_path / "home")
    store = await home.open_store()
    await home.create_agent("alice", store=store)
    sink = MemorySink()
    coordinator = Coordinator(
        store=store,
        policy=PolicyEngine(home.policy()),
        tls=server_ssl_context(*home.coordinator_tls()),
        events=EventStream([sink]),
        issuer=home.ca(),
    )
    await coordinator.start()
    yield home, coordinator, sink
    await coordinator.close()
    await store.close()


async def test_agent_renews_a_certificate_near_expiry_and_reconnects_with_it(
    setup: tuple[Home, Coordinator, MemorySink],
) -> None:
    home, coordinator, sink = setup
    identity, _ = home.load_agent("alice")
    short = home.issue_certificate(identity, lifetime=timedelta(minutes=30))
    renewed: list[Credentials] = []
    agent = await Agent.connect(identity, short, coordinator=f"127.0.0.1:{coordinator.port}")
    try:
        agent.on_credentials_renewed = renewed.append
        # Within the 2 h margin: the renewal loop started at connect renews at once.
        for _ in range(100):
            if renewed:
                break
            await asyncio.sleep(0.02)
        assert renewed, "the agent did not renew its certificate"
        new = renewed[0]
        assert new.key_pem != short.key_pem
        assert certificate_did(new.cert_pem) == identity.did
        assert certificate_not_after(new.cert_pem) > certificate_not_after(short.cert_pem)
        assert EventKind.CERTIFICATE_ISSUED in sink.kinds()
    finally:
        await agent.close()
    again = await Agent.connect(identity, new, coordinator=f"127.0.0.1:{coordinator.port}")
    await again.close()


async def test_renewal_is_refused_by_a_coordinator_that_is_not_an_issuer(tmp_path: Path) -> None:
    home = Home.init(tmp_path / "home")
    store = await home.open_store()
    await home.create_agent("alice", store=store)
    coordinator = Coordinator(
        store=store,
        policy=PolicyEngine(home.policy()),
        tls=server_ssl_context(*home.coordinator_tls()),
    )
    await coordinator.start()
    identity, credentials = home.load_agent("alice")
    agent = await Agent.connect(identity, credentials, coordinator=f"127.0.0.1:{coordinator.port}")
    try:
        from trustwire.errors import AuthenticationFailed

        with pytest.raises(AuthenticationFailed):
            await agent.renew_certificate()
        assert agent.credentials == credentials
    finally:
        await agent.close()
        await coordinator.close()
        await store.close()
