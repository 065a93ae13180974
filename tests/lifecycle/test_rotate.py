"""Agreement-key rotation: same DID, new X25519 key; the coordinator cuts the rotated
agent's connection and tells its peers; messages keep flowing; the old key is dead."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from _deployment import Deployment, MakeDeployment, wait_until
from trustwire.cli.main import cli
from trustwire.client.agent import Agent, Message, SendResult
from trustwire.crypto.random import random_bytes
from trustwire.home import Home
from trustwire.identity.keys import AgentIdentity
from trustwire.protocol.channel import Channel
from trustwire.protocol.envelope import FrameType
from trustwire.protocol.frames import encode_frame
from trustwire.store.base import Store

N = 40


async def rotate(deployment: Deployment, name: str) -> AgentIdentity:
    """What `trustwire agent rotate` does, then the coordinator's refresh."""
    old = deployment.identities[name]
    new = old.rotate_agreement(issued_at=old.issued_at + 1)
    store: Store = deployment.store
    registry = await deployment.home.open_registry(store)
    try:
        await registry.rotate_agreement(
            new.did,
            agreement_key=new.agreement.public,
            agreement_statement=new.agreement_statement(issued_at=new.issued_at),
            agreement_issued_at=new.issued_at,
        )
    finally:
        await registry.close()
    new.save(deployment.home.agent_dir(name), None)
    deployment.identities[name] = new
    await deployment.coordinator.refresh_agents()
    return new


async def collect(agent: Agent, into: set[bytes], until: set[bytes], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not into >= until:
            message: Message = await agent.receive()
            into.add(message.data)


async def test_messages_keep_flowing_across_a_rotation_of_the_recipient(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(agents=("alice", "bob"))
    alice = await deployment.connect("alice")
    bob = await deployment.connect("bob")
    first = await alice.send("bob", b"m0")
    assert first.status == "delivered" and first.via == "channel"
    received: set[bytes] = set()

    async def keep_sending() -> list[SendResult]:
        # Without waiting for receipts, so that some are unreceipted on the channel
        # when the rotation cuts it.
        sends = []
        for i in range(1, N):
            sends.append(asyncio.create_task(alice.send("bob", f"m{i}".encode())))
            await asyncio.sleep(0.005)
        return list(await asyncio.gather(*sends))

    sending = asyncio.create_task(keep_sending())
    await asyncio.sleep(0.05)  # some messages go over the channel first
    old_key = deployment.identities["bob"].agreement.public
    while not bob._inbox.empty():
        received.add(bob._inbox.get_nowait().data)
    new = await rotate(deployment, "bob")
    assert new.agreement.public != old_key
    await wait_until(lambda: not bob.connected, timeout=1.0)
    while not bob._inbox.empty():
        received.add(bob._inbox.get_nowait().data)

    reborn = await deployment.connect("bob")  # the rotated identity files
    assert reborn.identity.agreement.public == new.agreement.public
    results = await sending
    await collect(reborn, received, until={f"m{i}".encode() for i in range(N)})
    assert all(result.status in ("delivered", "queued") for result in results)
    assert not reborn.rejected, "nothing was sealed to the old key after the notice"


async def test_after_rotation_a_channel_request_made_with_the_old_key_is_refused(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment(agents=("alice", "bob"))
    alice = await deployment.connect("alice")
    old = deployment.identities["bob"]
    new = await rotate(deployment, "bob")
    alice_key = deployment.identities["alice"].agreement.public

    # An attacker holding bob's old agreement key (and a TLS connection as bob).
    raw = await deployment.raw("bob")

    def init(identity: AgentIdentity) -> bytes:
        _channel, env = Channel.initiate(
            identity,
            deployment.did("alice"),
            alice_key,
            channel_id=random_bytes(16),
            message_id=random_bytes(16),
            now_ms=int(deployment.clock() * 1000),
        )
        return encode_frame(env.to_bytes())

    raw.send(init(old))
    await wait_until(lambda: sum(alice.rejected.values()) == 1)
    with pytest.raises(TimeoutError):
        await raw.expect(FrameType.CHANNEL_ACCEPT, timeout=0.5)

    # The same request with the rotated key is accepted: the refusal was the key.
    raw.send(init(new))
    accept = await raw.expect(FrameType.CHANNEL_ACCEPT)
    assert accept.sender == deployment.did("alice")
    assert sum(alice.rejected.values()) == 1


def test_agent_rotate_replaces_the_agreement_key_and_certificate_keeping_the_did(
    tmp_path: Path,
) -> None:
    env = {"TRUSTWIRE_PASSPHRASE": "", "TRUSTWIRE_COORDINATOR": ""}
    home = tmp_path / "home"

    def trustwire(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--home", str(home), *args], env=env)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    trustwire("init")
    trustwire("agent", "create", "bob")
    directory = home / "agents" / "bob"
    before = json.loads((directory / "identity.json").read_text())
    certificate = (directory / "tls.crt").read_bytes()

    out = trustwire("agent", "rotate", "bob")

    after = json.loads((directory / "identity.json").read_text())
    assert after["did"] == before["did"]
    assert after["x25519_public"] != before["x25519_public"]
    assert after["issued_at"] > before["issued_at"]
    assert after["x25519_public"] in out
    assert (directory / "tls.crt").read_bytes() != certificate
    identity, _credentials = Home(home).load_agent("bob")  # files agree with each other
    listed = trustwire("agent", "list", "--json")
    assert json.loads(listed)["status"] == "active"
    assert identity.agreement.public.hex() == after["x25519_public"]
