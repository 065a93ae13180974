"""In-band certificate renewals are logged in the registry before they are handed out."""

from __future__ import annotations

from pathlib import Path

from trustwire.client.agent import Agent
from trustwire.coordinator.server import Coordinator
from trustwire.crypto.x509 import certificate_fingerprint
from trustwire.home import Home
from trustwire.policy.engine import PolicyEngine
from trustwire.transport.tls import server_ssl_context


async def test_a_renewed_certificate_is_the_latest_one_in_the_registry(tmp_path: Path) -> None:
    home = Home.init(tmp_path / "home")
    store = await home.open_store()
    identity = await home.create_agent("alice", store=store)
    registry = await home.open_registry(store)
    coordinator = Coordinator(
        store=store,
        policy=PolicyEngine(home.policy()),
        tls=server_ssl_context(*home.coordinator_tls()),
        issuer=home.ca(),
        registry=registry,
    )
    await coordinator.start()
    try:
        _, credentials = home.load_agent("alice")
        before = registry.snapshot(identity.did)
        assert before is not None
        assert before["certificate"]["fingerprint"] == certificate_fingerprint(credentials.cert_pem)
        async with await Agent.connect(
            identity, credentials, coordinator=f"127.0.0.1:{coordinator.port}"
        ) as agent:
            renewed = await agent.renew_certificate()
        after = registry.snapshot(identity.did)
        assert after is not None
        assert (after["event"], after["seq"]) == ("certificate", before["seq"] + 1)
        assert after["certificate"]["fingerprint"] == certificate_fingerprint(renewed.cert_pem)
        await registry.verify_against_directory()
    finally:
        await coordinator.close()
        await registry.close()
        await store.close()
