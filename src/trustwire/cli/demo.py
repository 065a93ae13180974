"""``trustwire demo``: the security properties, shown and checked, in a few seconds.

Everything runs in one process and one event loop, in a temporary home that is deleted
afterwards: a real coordinator on a loopback port with mutual TLS 1.3, real agents, the
SQLite store. Each step prints what happened and one ✔/✘ line per :class:`Check`; the
command exits 0 only when every check passed, and ``--json`` prints a summary instead.

The demo only uses what any embedding program can use: :class:`~trustwire.home.Home`,
the :class:`~trustwire.coordinator.server.Coordinator` with a
:class:`~trustwire.events.MemorySink`, the agent SDK (with its ``tap`` and ``send_raw``
diagnostics hooks), the store interface, and the sans-I/O protocol functions to decode
the frames it captured.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Group
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table

from trustwire.cli.failure import CommandFailed, ExitCode
from trustwire.cli.messaging import receive_within
from trustwire.cli.output import Output, format_time, safe
from trustwire.client.agent import Agent, Credentials, SendResult
from trustwire.coordinator.server import Coordinator
from trustwire.coordinator.services import CoordinatorServices
from trustwire.crypto.random import random_bytes
from trustwire.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    PolicyDenied,
    SessionEnded,
    SharedMemoryError,
    TrustwireError,
)
from trustwire.events import EventKind, EventStream, MemorySink, SecurityEvent
from trustwire.home import Home
from trustwire.identity.ca import DomainCA
from trustwire.identity.keys import AgentIdentity
from trustwire.policy import PolicyEngine, parse_policy
from trustwire.protocol.channel import (
    CHANNEL_PROTOCOL,
    SEALED_PROTOCOL,
    ReceivedReceipt,
    open_sealed,
    verify_key_of,
)
from trustwire.protocol.envelope import Envelope, FrameType, decode
from trustwire.protocol.frames import FrameDecoder, encode_frame
from trustwire.registry.registry import Registry
from trustwire.store.base import Store
from trustwire.transport.tls import server_ssl_context

__all__ = ["DEMO_POLICY", "Check", "DemoReport", "demo", "run_demo"]

DEMO_POLICY = """\
version: 1
policies:
  communication:
    default: deny
    rules:
      - id: team-may-message-team
        effect: allow
        from: {roles: [team]}
        to: {roles: [team]}
        actions: [message, memory.read, memory.write]
  access_control:
    roles:
      team: members of the demo team
      guest: enrolled, but trusted with nothing
"""

_AGENTS = (("alice", "team"), ("bob", "team"), ("carol", "team"), ("mallory", "guest"))
_QUIET = 0.5  # seconds to wait for something that must NOT arrive
_DEADLINE = 60.0  # the whole demo; it normally takes a few seconds


@dataclass(frozen=True, slots=True)
class Check:
    """One verified claim of the demo."""

    id: str
    title: str
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "title": self.title, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo found: every check, the identities it created, how long it took."""

    checks: list[Check]
    identities: list[dict[str, object]]
    ca_fingerprint: str
    seconds: float

    @property
    def passed(self) -> bool:
        """True when there were checks and all of them passed."""
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` summary."""
        return {
            "passed": self.passed,
            "checks": [check.to_dict() for check in self.checks],
            "identities": self.identities,
            "ca_fingerprint": self.ca_fingerprint,
            "duration_seconds": round(self.seconds, 3),
        }


class _Wire:
    """What agents write to the coordinator, decoded, in the order it was written.

    :meth:`tap` gives the callable to install as an agent's ``tap`` hook.
    """

    def __init__(self) -> None:
        self.frames: list[tuple[str, Envelope, bytes]] = []

    def tap(self, name: str) -> Callable[[bytes], None]:
        decoder = FrameDecoder()

        def capture(data: bytes) -> None:
            for payload in decoder.receive_data(data):
                self.frames.append((name, decode(payload), payload))

        return capture

    def routed(self, *types: FrameType, by: str | None = None) -> list[tuple[Envelope, bytes]]:
        """Captured end-to-end frames, optionally only of ``types`` or written by ``by``."""
        return [
            (env, payload)
            for name, env, payload in self.frames
            if env.type.routed and (not types or env.type in types) and (by is None or name == by)
        ]

    def written_by(self, name: str) -> bytes:
        """Every byte ``name`` wrote (frame payloads, concatenated)."""
        return b"".join(payload for who, _env, payload in self.frames if who == name)


@dataclass
class _State:
    home: Home
    store: Store
    sink: MemorySink
    coordinator: Coordinator
    address: str
    identities: dict[str, tuple[AgentIdentity, Credentials]]
    agents: dict[str, Agent] = field(default_factory=dict)
    wire: _Wire = field(default_factory=_Wire)
    strangers: dict[str, str] = field(default_factory=dict)  # DID -> name, not enrolled
    services: CoordinatorServices | None = None

    def did(self, name: str) -> str:
        return self.identities[name][0].did

    async def connect(self, name: str) -> Agent:
        identity, credentials = self.identities[name]
        agent = await Agent.connect(identity, credentials, coordinator=self.address, timeout=5)
        agent.tap = self.wire.tap(name)
        self.agents[name] = agent
        return agent

    async def quiet(self, name: str) -> bool:
        """Whether nothing more reaches ``name`` within a short quiet period; the agent
        is disconnected afterwards (see :func:`receive_within`)."""
        agent = self.agents.pop(name)
        try:
            return await receive_within(agent, _QUIET) is None
        finally:
            await agent.close()

    async def disconnect(self, name: str) -> None:
        agent = self.agents.pop(name, None)
        if agent is not None:
            await agent.close()

    def store_files_contain(self, needle: bytes) -> bool:
        """Whether the coordinator's SQLite files (database, WAL, shared memory) hold
        ``needle`` anywhere, in live rows, free pages or the log."""
        database = self.home.path / "coordinator.db"
        for suffix in ("", "-wal", "-shm"):
            path = database.with_name(database.name + suffix)
            if path.exists() and needle in path.read_bytes():
                return True
        return False

    def memory_files_contain(self, needle: bytes) -> bool:
        """Whether the shared-memory database files hold ``needle`` anywhere."""
        database = Path(self.home.memory_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            path = database.with_name(database.name + suffix)
            if path.exists() and needle in path.read_bytes():
                return True
        return False

    async def wait_for_event(
        self, kind: EventKind, agent: str, *, peer: str | None = None, timeout: float = 3.0
    ) -> SecurityEvent | None:
        """The latest event of ``kind`` about ``agent`` (and ``peer``), waiting briefly."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [
                event
                for event in self.sink.of_kind(kind)
                if event.agent == agent and (peer is None or event.peer == peer)
            ]
            if found or loop.time() >= deadline:
                return found[-1] if found else None
            await asyncio.sleep(0.02)


class _Demo:
    def __init__(self, out: Output) -> None:
        self.out = out
        self.checks: list[Check] = []
        self.identities: list[dict[str, object]] = []
        self.ca_fingerprint = ""

    # -- reporting ----------------------------------------------------------------------

    def check(self, id: str, title: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(id, title, passed, detail))
        mark = "[green]✔[/green]" if passed else "[red]✘[/red]"
        suffix = f" [dim]({safe(detail)})[/dim]" if detail else ""
        self.out.line(f"{mark} {title}{suffix}")
        return passed

    def heading(self, number: int, title: str) -> None:
        self.out.line()
        if self.out.rich:
            self.out.show(Rule(f"[bold]{number}. {title}[/bold]", align="left"))
        else:
            self.out.line(f"== {number}. {title}")

    def event(self, state: _State, event: SecurityEvent | None) -> None:
        """Show a coordinator security event, with DIDs replaced by agent names."""
        if event is None:
            return
        parts = [f"[bold]{event.kind.value}[/bold]"]
        if event.agent is not None:
            parts.append(f"agent {safe(_who(state, event.agent))}")
        if event.peer is not None:
            parts.append(f"peer {safe(_who(state, event.peer))}")
        if event.reason is not None:
            parts.append(f'reason "{safe(event.reason)}"')
        parts.extend(f"{safe(key)}={safe(str(value))}" for key, value in event.details.items())
        self.out.line(f"  [dim]security event[/dim] {', '.join(parts)}")

    async def step(
        self,
        number: int,
        title: str,
        body: Callable[[_State], Awaitable[None]],
        state: _State,
    ) -> bool:
        """Run one step; an unexpected exception fails it instead of ending the demo."""
        self.heading(number, title)
        try:
            await body(state)
        except Exception as exc:
            # A step that breaks is a failed check, reported with its cause, and the
            # remaining steps still run: the demo's job is to say what holds and what not.
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            self.check(f"step{number}.completed", f"step {number} completed", False, reason)
            return False
        return True

    # -- the scenario -------------------------------------------------------------------

    async def run(self, directory: Path) -> None:
        self.out.line(
            "[bold]trustwire demo[/bold]: a coordinator and four agents in one process, "
            "in a temporary directory deleted at the end"
        )
        try:
            state = await self.setup(directory)
        except (TrustwireError, OSError, ValueError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            self.check("demo.setup", "set up a domain, agents and a coordinator", False, reason)
            return
        steps: list[tuple[str, Callable[[_State], Awaitable[None]]]] = [
            ("Identities", self.identities_step),
            ("Mutual TLS 1.3 to the coordinator", self.connect_step),
            ("A Noise channel from alice to bob", self.channel_step),
            ("Encrypted messages and signed receipts", self.messages_step),
            ("Delivery to an agent that was offline", self.offline_step),
            ("A replayed frame", self.replay_step),
            ("Unauthorized agents", self.unauthorized_step),
            ("A session between alice and bob", self.session_step),
            ("End-to-end encrypted shared memory", self.memory_step),
        ]
        try:
            for number, (title, body) in enumerate(steps, start=1):
                await self.step(number, title, body, state)
        finally:
            for name in list(state.agents):
                await state.disconnect(name)
            if state.services is not None:
                await state.services.close()
            await state.coordinator.close()
            if state.coordinator.registry is not None:
                await state.coordinator.registry.close()
            await state.store.close()

    async def setup(self, directory: Path) -> _State:
        home = Home.init(
            directory / "home", domain="trustwire-demo", policy=parse_policy(DEMO_POLICY)
        )
        store = await home.open_store()
        identities: dict[str, tuple[AgentIdentity, Credentials]] = {}
        sink = MemorySink()
        registry: Registry | None = None
        services: CoordinatorServices | None = None
        try:
            for name, role in _AGENTS:
                await home.create_agent(name, roles=(role,), store=store)
                identities[name] = home.load_agent(name)
            registry = await home.open_registry(store)
            coordinator = Coordinator(
                store=store,
                policy=PolicyEngine(home.policy()),
                tls=server_ssl_context(*home.coordinator_tls()),
                events=EventStream([sink]),
                registry=registry,
            )
            services = await CoordinatorServices.open(
                coordinator, sessions_url=home.sessions_url, memory_url=home.memory_url
            )
            await coordinator.start()
            await services.start()
        except BaseException:
            if services is not None:
                await services.close()
            if registry is not None:
                await registry.close()
            await store.close()
            raise
        return _State(
            home=home,
            store=store,
            sink=sink,
            coordinator=coordinator,
            address=f"127.0.0.1:{coordinator.port}",
            identities=identities,
            services=services,
        )

    async def identities_step(self, state: _State) -> None:
        ca = state.home.ca()
        self.ca_fingerprint = ca.fingerprint
        now = datetime.now(UTC)
        rows: list[list[str]] = []
        issued_by_ca = True
        for name, role in _AGENTS:
            identity, credentials = state.identities[name]
            expiry = state.home.certificate_expiry(name)
            rows.append([name, identity.did, role, format_time(expiry.timestamp())])
            self.identities.append({"name": name, "did": identity.did, "roles": [role]})
            try:
                ca.verify(credentials.cert_pem, now=now)
            except TrustwireError:
                issued_by_ca = False
        self.out.line(f"trust domain [bold]trustwire-demo[/bold], CA fingerprint {ca.fingerprint}")
        self.out.table(["agent", "DID (Ed25519 did:key)", "role", "certificate expires"], rows)
        self.out.line(
            "[dim]policy: default deny; role team may message role team; guest is allowed "
            "nothing[/dim]"
        )
        dids = [state.did(name) for name, _ in _AGENTS]
        self.check(
            "identities.did_key",
            "every agent is named by its own Ed25519 did:key",
            len(set(dids)) == len(dids) and all(d.startswith("did:key:z6Mk") for d in dids),
        )
        self.check(
            "identities.certificates",
            "every agent certificate is issued by the domain CA",
            issued_by_ca,
            "24 h lifetime, DID in the URI SAN",
        )

    async def connect_step(self, state: _State) -> None:
        await state.connect("alice")
        await state.connect("bob")
        authenticated = [
            name
            for name in ("alice", "bob")
            if await state.wait_for_event(EventKind.AUTH_SUCCESS, state.did(name)) is not None
        ]
        self.out.line(
            f"coordinator on {state.address}: TLS 1.3 only, client certificate required, "
            "pinned to the domain CA"
        )
        self.check(
            "tls.authenticated",
            "alice and bob connected; the coordinator authenticated each by certificate DID",
            authenticated == ["alice", "bob"],
            f"auth.success for {', '.join(authenticated) or 'nobody'}",
        )

    async def channel_step(self, state: _State) -> None:
        alice, bob = state.agents["alice"], state.agents["bob"]
        start = len(state.wire.frames)
        result = await alice.send("bob", "hello bob, this opens our channel")
        received = await bob.receive(timeout=5)
        wire = [
            (env, payload) for _name, env, payload in state.wire.frames[start:] if env.type.routed
        ]
        rows = [
            [
                _who(state, env.sender),
                _who(state, env.recipient),
                env.type.name,
                f"{len(env.body)} bytes",
            ]
            for env, _payload in wire
        ]
        self.out.table(["from", "to", "frame", "encrypted body"], rows)
        types = [env.type for env, _payload in wire]
        established = (
            result.via == "channel"
            and FrameType.CHANNEL_INIT in types
            and FrameType.CHANNEL_ACCEPT in types
            and types.index(FrameType.CHANNEL_INIT) < types.index(FrameType.CHANNEL_ACCEPT)
        )
        self.check(
            "channel.established",
            f"{CHANNEL_PROTOCOL} channel established alice -> bob",
            established,
            "IK handshake: CHANNEL_INIT, CHANNEL_ACCEPT; both DIDs bound in the prologue",
        )
        self.check(
            "channel.first_message",
            "bob received alice's first message over the channel",
            received.text == "hello bob, this opens our channel" and not received.sealed,
        )

    async def messages_step(self, state: _State) -> None:
        alice, bob = state.agents["alice"], state.agents["bob"]
        token = random_bytes(6).hex()
        texts = [
            f"the vault code is {token}",
            f"meet at pier {token[:4]} at noon",
            f"do not forward: {token[::-1]}",
        ]
        before = len(state.wire.routed(FrameType.CHANNEL_DATA, by="alice"))
        results = [await alice.send("bob", text) for text in texts]
        got = [(await bob.receive(timeout=5)).text for _ in texts]
        frames = state.wire.routed(FrameType.CHANNEL_DATA, by="alice")[before:]
        rows = []
        for text, (env, _payload) in zip(texts, frames, strict=False):
            rows.append(
                [safe(text), f"{env.body[:20].hex()}… ({len(env.body)} bytes)", str(env.counter)]
            )
        self.out.table(
            ["plaintext (alice and bob)", "ciphertext (what the coordinator sees)", "counter"], rows
        )
        self.check(
            "messages.delivered",
            "bob received exactly the three plaintexts, in order",
            got == texts,
        )
        plaintexts = [text.encode() for text in texts] + [token.encode()]
        on_wire = state.wire.written_by("alice")
        self.check(
            "messages.encrypted_on_wire",
            "no plaintext appears in any byte alice sent to the coordinator",
            len(frames) == len(texts) and not any(p in on_wire for p in plaintexts),
        )
        receipt_rows: list[list[str]] = []
        receipts_ok = True
        for result in results:
            ok = _receipt_verifies(result, state.did("bob"))
            receipts_ok = receipts_ok and ok
            receipt = result.receipt
            if receipt is not None:
                receipt_rows.append(
                    [
                        result.message_id[:16] + "…",
                        _who(state, receipt.signer),
                        format_time(receipt.signed_at),
                        f"{receipt.signature.hex()[:24]}… {'✔' if ok else '✘'}",
                    ]
                )
        self.out.table(
            ["message id", "receipt signed by", "signed at", "Ed25519 signature"], receipt_rows
        )
        self.check(
            "receipts.signed",
            "every message came back with a receipt signed by bob's DID key",
            receipts_ok and len(receipt_rows) == len(texts),
            "signature checked against the key inside bob's did:key",
        )
        self.check(
            "store.no_plaintext",
            "the coordinator's SQLite files do not contain the plaintext",
            not any(state.store_files_contain(p) for p in plaintexts),
            "coordinator.db, -wal and -shm searched byte for byte",
        )

    async def offline_step(self, state: _State) -> None:
        alice = state.agents["alice"]
        text = f"carol, the offsite backup key is in locker {random_bytes(3).hex()}"
        result = await alice.send("carol", text)
        self.check(
            "offline.queued",
            "carol is offline: alice's message is queued, sealed",
            result.status == "queued" and result.via == "sealed",
            f"{SEALED_PROTOCOL}, status {result.status}",
        )
        queued = await state.store.queue.pending(state.did("carol"))
        stored = decode(queued[0].frame) if queued else None
        if stored is not None:
            self.out.line(
                f"  stored for carol: {stored.type.name} frame, body "
                f"{stored.body[:20].hex()}… ({len(stored.body)} bytes)"
            )
        self.check(
            "offline.stored_ciphertext",
            "the coordinator's database holds the sealed ciphertext, not the plaintext",
            stored is not None
            and state.store_files_contain(stored.body[-32:])
            and not state.store_files_contain(text.encode()),
        )
        await state.disconnect("alice")
        self.out.line("  alice disconnects too: carol's receipt will have to wait for her")
        carol = await state.connect("carol")
        message = await carol.receive(timeout=5)
        self.check(
            "offline.delivered",
            "carol connects and receives the message from alice",
            message.text == text and message.sender == state.did("alice") and message.sealed,
        )
        once = await state.quiet("carol")
        self.check("offline.exactly_once", "carol receives it exactly once", once)
        receipt = await self._queued_receipt(state)
        self.check(
            "offline.receipt",
            "carol's signed receipt for it waits in the coordinator for alice",
            receipt is not None
            and receipt.signer == state.did("carol")
            and bytes.fromhex(result.message_id) in receipt.app_ids,
            "sealed to alice; opened with alice's key and carol's signature verified",
        )

    async def _queued_receipt(self, state: _State) -> ReceivedReceipt | None:
        alice_identity = state.identities["alice"][0]
        carol_key = state.identities["carol"][0].agreement.public
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while loop.time() < deadline:
            for queued in await state.store.queue.pending(state.did("alice")):
                env = decode(queued.frame)
                if env.type is FrameType.SEALED and env.sender == state.did("carol"):
                    item = open_sealed(alice_identity, env, sender_agreement_key=carol_key)
                    if isinstance(item, ReceivedReceipt):
                        return item
            await asyncio.sleep(0.02)
        return None

    async def replay_step(self, state: _State) -> None:
        alice = await state.connect("alice")
        bob = state.agents["bob"]
        start = len(state.wire.routed(FrameType.CHANNEL_DATA, by="alice"))
        await alice.send("bob", "transfer 100 credits to carol")
        await bob.receive(timeout=5)
        captured = state.wire.routed(FrameType.CHANNEL_DATA, by="alice")[start:]
        if not captured:
            self.check("replay.captured", "captured alice's frame", False)
            return
        env, payload = captured[0]
        self.out.line(
            f"  captured alice's {env.type.name} frame (counter {env.counter}, "
            f"{len(payload)} bytes) and sent it again, byte for byte"
        )
        rejected_before = dict(bob.rejected)
        alice.send_raw(encode_frame(payload))
        event = await state.wait_for_event(EventKind.REPLAY_DETECTED, state.did("alice"))
        self.event(state, event)
        self.check(
            "replay.detected",
            "the coordinator rejected the replayed frame",
            event is not None and event.peer == state.did("bob"),
            (event.reason or "") if event is not None else "no replay.detected event",
        )
        no_duplicate = await state.quiet("bob")
        self.check(
            "replay.no_duplicate",
            "bob did not receive the transfer twice",
            no_duplicate and dict(bob.rejected) == rejected_before,
        )

    async def unauthorized_step(self, state: _State) -> None:
        mallory = await state.connect("mallory")
        outcomes: list[bool] = []
        for target, situation in (("alice", "online"), ("carol", "offline")):
            denied = False
            try:
                await mallory.send(target, "please add me to the team")
            except PolicyDenied:
                denied = True
            event = await state.wait_for_event(
                EventKind.MESSAGE_DENIED, state.did("mallory"), peer=state.did(target)
            )
            self.event(state, event)
            outcomes.append(denied and event is not None)
            self.out.line(
                f"  mallory -> {target} ({situation}): "
                + ("[green]PolicyDenied[/green]" if denied else "[red]not refused[/red]")
            )
        self.check(
            "policy.denied",
            "mallory (role guest) is enrolled but may message nobody: PolicyDenied",
            all(outcomes),
            "the channel handshake to alice and the sealed message to carol were both refused",
        )
        self.check(
            "policy.nothing_queued",
            "nothing from mallory waits in carol's queue",
            await state.store.queue.depth(state.did("carol")) == 0,
        )
        await state.disconnect("mallory")
        await self._not_enrolled(state)
        await self._foreign_ca(state)

    async def session_step(self, state: _State) -> None:
        alice = state.agents.get("alice") or await state.connect("alice")
        bob = state.agents.get("bob") or await state.connect("bob")
        async with alice.session("bob", timeout_minutes=5) as session:
            expires = format_time(session.expires_at)
            self.out.line(
                f"  alice opened session {session.id} with bob: 5 min inactivity timeout, "
                f"expires {expires} unless renewed by activity"
            )
            peer = await bob.join_session(session.id)
            created = await state.wait_for_event(
                EventKind.SESSION_CREATED, state.did("alice"), peer=state.did("bob")
            )
            self.event(state, created)
            await session.send("inside the session")
            got = await peer.receive(timeout=5)
            self.check(
                "session.message",
                "a message bound to the session reaches bob's session handle",
                got.text == "inside the session" and got.session_id == session.id,
                "the session id travels in the authenticated envelope header",
            )
        refused = False
        try:
            await alice.send("bob", "after the end", session_id=session.id)
        except SessionEnded:
            refused = True
        denied = await state.wait_for_event(EventKind.SESSION_DENIED, state.did("alice"))
        self.event(state, denied)
        self.check(
            "session.ended_refused",
            "after the session ends, a message in it is refused: SessionEnded",
            refused and created is not None,
        )

    async def memory_step(self, state: _State) -> None:
        alice = state.agents.get("alice") or await state.connect("alice")
        bob = state.agents.get("bob") or await state.connect("bob")
        canary = b"demo-memory-canary-" + random_bytes(8).hex().encode()
        memory = await alice.memory.create(type="kv")
        await memory.write("plan", canary)
        await memory.grant("bob", "read")
        self.out.line(
            f"  alice created memory {memory.id}, wrote 'plan' (AES-256-GCM, signed) and "
            "granted bob read (the data key wrapped for bob with HPKE)"
        )
        shared = await bob.memory.open(memory.id)
        value = await shared.read("plan")
        mallory = await state.connect("mallory")
        outsider_refused = False
        try:
            await (await mallory.memory.open(memory.id)).read("plan")
        except (SharedMemoryError, PolicyDenied):
            outsider_refused = True
        await state.disconnect("mallory")
        self.check(
            "memory.shared",
            "bob reads what alice wrote; mallory (no grant) is refused",
            value.data == canary and value.writer == state.did("alice") and outsider_refused,
            "bob verified alice's signature over the segment's content hash",
        )
        info = await memory.revoke("bob")
        revoked_refused = False
        try:
            await shared.read("plan")
        except SharedMemoryError:
            revoked_refused = True
        self.check(
            "memory.revoked",
            f"after revocation bob is refused, and the data key moved to epoch {info.epoch}",
            revoked_refused and info.epoch == 1,
        )
        self.check(
            "memory.ciphertext_only",
            "the coordinator's memory.db holds only ciphertext (no plaintext canary)",
            not state.memory_files_contain(canary),
        )

    async def _not_enrolled(self, state: _State) -> None:
        eve = AgentIdentity.generate("eve", issued_at=int(time.time()))
        state.strangers[eve.did] = "eve (not enrolled)"
        eve.save(state.home.agent_dir("eve"), None)
        credentials = state.home.issue_certificate(eve)
        refused = False
        try:
            agent = await Agent.connect(eve, credentials, coordinator=state.address, timeout=5)
            await agent.close()
        except AuthenticationFailed:
            refused = True
        event = await state.wait_for_event(EventKind.AUTH_FAILURE, eve.did)
        self.event(state, event)
        self.check(
            "auth.not_enrolled",
            "eve, with a valid certificate from the domain CA but never enrolled, cannot connect",
            refused and event is not None,
        )

    async def _foreign_ca(self, state: _State) -> None:
        now = datetime.now(UTC)
        eve = AgentIdentity.generate("eve", issued_at=int(now.timestamp()))
        rogue = DomainCA.create("rogue-ca", now=now)
        issued = rogue.issue_agent_certificate(eve.did, "eve", now=now)
        credentials = Credentials(issued.cert_pem, issued.key_pem, state.home.ca().cert_pem)
        failures_before = len(state.sink.of_kind(EventKind.AUTH_FAILURE))
        refused = False
        try:
            agent = await Agent.connect(eve, credentials, coordinator=state.address, timeout=5)
            await agent.close()
        except (AuthenticationFailed, ConnectionFailed):
            refused = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while len(state.sink.of_kind(EventKind.AUTH_FAILURE)) == failures_before:
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        failures = state.sink.of_kind(EventKind.AUTH_FAILURE)[failures_before:]
        self.event(state, failures[-1] if failures else None)
        self.check(
            "auth.foreign_ca",
            "a certificate from another CA is refused in the TLS handshake",
            refused and any((event.reason or "").startswith("tls") for event in failures),
        )

    # -- summary ------------------------------------------------------------------------

    def report(self, seconds: float) -> DemoReport:
        return DemoReport(
            checks=list(self.checks),
            identities=list(self.identities),
            ca_fingerprint=self.ca_fingerprint,
            seconds=seconds,
        )

    def render_summary(self, seconds: float) -> None:
        passed = sum(check.passed for check in self.checks)
        total = len(self.checks)
        ok = passed == total and total > 0
        verdict = (
            f"[green]all {total} checks passed[/green]"
            if ok
            else f"[red]{total - passed} of {total} checks failed[/red]"
        )
        self.out.line()
        if self.out.rich:
            table = Table(show_header=False, box=None)
            for check in self.checks:
                table.add_row("[green]✔[/green]" if check.passed else "[red]✘[/red]", check.title)
            self.out.show(
                Panel(Group(table, f"\n{verdict} in {seconds:.1f} s"), title="trustwire demo")
            )
        else:
            self.out.line(f"trustwire demo: {verdict} in {seconds:.1f} s")


def _who(state: _State, did: str) -> str:
    """An agent's name for its DID; other DIDs shortened, other strings as they are."""
    for name, (identity, _credentials) in state.identities.items():
        if identity.did == did:
            return name
    if did in state.strangers:
        return state.strangers[did]
    if not did:
        return "coordinator"
    return did[:20] + "…" if did.startswith("did:") else did


def _receipt_verifies(result: SendResult, signer: str) -> bool:
    """Check a receipt independently of the SDK: status, signer, Ed25519 signature."""
    receipt = result.receipt
    if result.status != "delivered" or receipt is None or receipt.signer != signer:
        return False
    try:
        verify_key_of(signer).verify(receipt.signature, receipt.statement)
    except TrustwireError:
        return False
    return True


async def run_demo(out: Output) -> DemoReport:
    """Run the whole demo in a temporary directory and report what it found."""
    started = time.monotonic()
    runner = _Demo(out)
    with tempfile.TemporaryDirectory(prefix="trustwire-demo-") as directory:
        try:
            async with asyncio.timeout(_DEADLINE):
                await runner.run(Path(directory))
        except TimeoutError:
            runner.check("demo.deadline", f"finished within {_DEADLINE:g} s", False)
    seconds = time.monotonic() - started
    if not out.json_mode:
        runner.render_summary(seconds)
    return runner.report(seconds)


@click.command()
@click.option("--json", "json_mode", is_flag=True, help="Print a machine-readable summary only.")
def demo(json_mode: bool) -> None:
    """Show the security properties end to end, checking each one.

    Starts a coordinator and agents in a temporary directory (one process), then shows
    identities, a Noise channel, encrypted messages with signed receipts, delivery to an
    offline agent, a rejected replay and denied agents. Exits 0 only if every check
    passed.
    """
    out = Output(json_mode=json_mode)
    report = asyncio.run(run_demo(out))
    if json_mode:
        out.json(report.to_dict())
    if not report.passed:
        failed = ", ".join(check.id for check in report.failed) or "no checks ran"
        raise CommandFailed(
            f"{len(report.failed)} of {len(report.checks)} demo checks failed: {failed}",
            ExitCode.FAILED,
        )
