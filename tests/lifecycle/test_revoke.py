"""Revocation: ``trustwire agent revoke`` against a running ``trustwire serve``, and what
the coordinator does with the revoked agent's queued messages."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _serving import Serving, free_port
from click.testing import CliRunner, Result

from _deployment import MakeDeployment, wait_until
from trustwire.cli.main import cli
from trustwire.client.agent import Agent
from trustwire.errors import AuthenticationFailed, UnknownAgent
from trustwire.events import EventKind
from trustwire.home import Home


def invoke(home: Path, *args: str) -> Result:
    env = {"TRUSTWIRE_PASSPHRASE": "", "TRUSTWIRE_COORDINATOR": ""}
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=env)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A home with alice and bob (made in-process, outside any event loop)."""
    path = tmp_path / "home"
    port = free_port()
    assert invoke(path, "init", "--coordinator", f"127.0.0.1:{port}").exit_code == 0
    for name in ("alice", "bob"):
        created = invoke(path, "agent", "create", name)
        assert created.exit_code == 0, created.stderr
    yield path, port


async def test_agent_revoke_cuts_a_connected_agent_off_within_a_second_for_good(
    home: tuple[Path, int],
) -> None:
    path, port = home
    server = Serving(path)
    address = f"127.0.0.1:{port}"
    operator = Home(path)
    agents: list[Agent] = []
    try:
        await server.wait_for("listening on")
        bob_identity, bob_credentials = operator.load_agent("bob")
        bob = await Agent.connect(bob_identity, bob_credentials, coordinator=address)
        alice = await Agent.connect(*operator.load_agent("alice"), coordinator=address)
        agents += [bob, alice]
        assert (await alice.send("bob", b"before")).status == "delivered"

        revoked = await asyncio.to_thread(
            invoke, path, "agent", "revoke", "bob", "--reason", "key leaked"
        )
        assert revoked.exit_code == 0, revoked.stderr
        started = time.monotonic()
        await wait_until(lambda: not bob.connected, timeout=1.0)
        assert time.monotonic() - started < 1.0

        with pytest.raises(AuthenticationFailed):
            agents.append(await Agent.connect(bob_identity, bob_credentials, coordinator=address))
        with pytest.raises(UnknownAgent):
            await alice.send("bob", b"after")
        with pytest.raises(UnknownAgent):
            await alice.send(bob_identity.did, b"after, by DID")
    finally:
        for agent in agents:
            await agent.close()
        server.stop()

    tail = await asyncio.to_thread(
        invoke, path, "audit", "tail", "--kind", "agent.revoked", "--json"
    )
    assert tail.exit_code == 0, tail.stderr
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["agent"] for e in events] == [bob_identity.did]
    local = [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "agent.revoked" and e["reason"] == "key leaked" for e in local), (
        "the CLI records who was revoked and why in the event log"
    )


def test_revoking_an_unknown_agent_exits_with_unknown_agent(home: tuple[Path, int]) -> None:
    path, _port = home
    result = invoke(path, "agent", "revoke", "nobody")
    assert result.exit_code == 4
    assert "nobody" in result.stderr


def test_revoking_twice_says_so_and_keeps_the_first_time(home: tuple[Path, int]) -> None:
    path, _port = home
    assert invoke(path, "agent", "revoke", "bob").exit_code == 0
    again = invoke(path, "agent", "revoke", "bob")
    assert again.exit_code == 0
    assert "already revoked" in again.stdout
    listed = invoke(path, "agent", "list", "--json")
    status = {
        json.loads(line)["name"]: json.loads(line)["status"] for line in listed.stdout.splitlines()
    }
    assert status == {"alice": "active", "bob": "revoked"}


async def test_messages_queued_for_a_revoked_agent_are_dropped_and_so_are_those_it_sent(
    make_deployment: MakeDeployment,
) -> None:
    deployment = await make_deployment()
    store = deployment.store
    bob = await deployment.connect("bob")
    assert (await bob.send("carol", b"from bob, queued")).status == "queued"
    await bob.close()
    await wait_until(lambda: not deployment.coordinator.online(deployment.did("bob")))
    alice = await deployment.connect("alice")
    assert (await alice.send("bob", b"for bob, queued")).status == "queued"
    assert await store.queue.depth(deployment.did("bob")) == 1
    assert await store.queue.depth(deployment.did("carol")) == 1

    await store.agents.revoke(deployment.did("bob"), at=time.time())
    await deployment.coordinator.refresh_agents()

    event = await deployment.wait_event(EventKind.AGENT_REVOKED)
    assert event.agent == deployment.did("bob")
    assert event.details["dropped_messages"] == 1
    assert await store.queue.depth(deployment.did("bob")) == 0
    carol = await deployment.connect("carol")
    with pytest.raises(TimeoutError):
        await carol.receive(timeout=0.5)
    assert await store.queue.depth(deployment.did("carol")) == 0
    assert not carol.rejected, "the coordinator dropped it: carol's SDK never saw it"
