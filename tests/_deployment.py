"""A real deployment on loopback for integration tests (fixtures in ``conftest.py``).

:class:`Deployment` is a :class:`~trustwire.home.Home` in a temporary directory (domain
CA, coordinator certificate, SQLite store), enrolled agents, and a real
:class:`~trustwire.coordinator.server.Coordinator` on 127.0.0.1, port 0, speaking mutual
TLS 1.3 with the home's certificates; security events go to a
:class:`~trustwire.events.MemorySink` (``deployment.sink``). Agents are connected with
:meth:`Deployment.connect`; raw TLS clients (for attacks the SDK would never make) with
:meth:`Deployment.raw`. :class:`FakeClock` is the injectable coordinator clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, cast

from trustwire.client.agent import Agent, Credentials
from trustwire.coordinator.server import Coordinator, CoordinatorConfig
from trustwire.coordinator.services import CoordinatorServices
from trustwire.crypto.x509 import certificate_der
from trustwire.events import EventKind, EventStream, JsonlSink, MemorySink, SecurityEvent
from trustwire.home import Home
from trustwire.identity.keys import AgentIdentity
from trustwire.policy.engine import PolicyEngine
from trustwire.policy.model import PolicyConfig
from trustwire.protocol.envelope import Envelope, FrameType, decode
from trustwire.protocol.frames import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from trustwire.registry.registry import Registry
from trustwire.store.base import Store
from trustwire.transport.tls import client_ssl_context, server_ssl_context

DEFAULT_AGENTS = ("alice", "bob", "carol")
WAIT = 5.0


class FakeClock:
    """A settable clock (seconds since the epoch), starting at the real time."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``predicate`` until true; ``TimeoutError`` after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls plain state, no event to wait on
            await asyncio.sleep(0.005)


def transport_of(agent: Agent) -> asyncio.Transport:
    """The agent's TLS transport, e.g. to ``pause_reading()`` as a hung process would."""
    writer = agent._writer
    if writer is None:
        raise RuntimeError(f"{agent.name} is not connected")
    return cast(asyncio.Transport, writer.transport)


def split_frames(data: bytes) -> list[Envelope]:
    """Decode every complete frame in ``data`` (as written by an agent)."""
    return [decode(raw) for raw in FrameDecoder(DEFAULT_MAX_FRAME).receive_data(data)]


def frame(env: Envelope) -> bytes:
    return encode_frame(env.to_bytes())


class RawConnection:
    """A TLS connection to the coordinator driven by hand, frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = FrameDecoder(DEFAULT_MAX_FRAME)
        self._frames: list[bytes] = []
        self.eof = False

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_envelope(self, timeout: float = WAIT) -> Envelope | None:
        """The next frame from the coordinator, or ``None`` once the connection ended."""
        async with asyncio.timeout(timeout):
            while not self._frames:
                if self.eof:
                    return None
                try:
                    data = await self.reader.read(1 << 16)
                except (ConnectionError, ssl.SSLError, OSError):
                    data = b""
                if not data:
                    self.eof = True
                    continue
                self._frames.extend(self._decoder.receive_data(data))
        return decode(self._frames.pop(0))

    async def expect(self, ftype: FrameType, timeout: float = WAIT) -> Envelope:
        """Skip frames until one of ``ftype``; ``AssertionError`` if the stream ends first."""
        while True:
            env = await self.read_envelope(timeout)
            if env is None:
                raise AssertionError(f"connection ended before a {ftype.name} frame")
            if env.type is ftype:
                return env

    async def until_closed(self, timeout: float = WAIT) -> list[Envelope]:
        """Every frame until the coordinator closes the connection (``TimeoutError`` if
        it does not within ``timeout``)."""
        seen: list[Envelope] = []
        async with asyncio.timeout(timeout):
            while (env := await self.read_envelope(timeout)) is not None:
                seen.append(env)
        return seen

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class Deployment:
    """A running home + coordinator; see the module docstring."""

    def __init__(
        self,
        home: Home,
        *,
        policy: PolicyConfig,
        config: CoordinatorConfig,
        clock: Callable[[], float],
        jsonl: bool,
    ) -> None:
        self.home = home
        self.policy = policy
        self.config = config
        self.clock = clock
        self.sink = MemorySink(maxlen=None)
        self.jsonl = JsonlSink(home.events_path) if jsonl else None
        self.identities: dict[str, AgentIdentity] = {}
        self._agents: list[Agent] = []
        self._raw: list[RawConnection] = []
        self._store: Store | None = None
        self._registry: Registry | None = None
        self._coordinator: Coordinator | None = None
        self._services: CoordinatorServices | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the store is closed")
        return self._store

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise RuntimeError("the registry is closed")
        return self._registry

    @property
    def coordinator(self) -> Coordinator:
        if self._coordinator is None:
            raise RuntimeError("the coordinator is stopped")
        return self._coordinator

    @property
    def services(self) -> CoordinatorServices:
        """Sessions, shared memory and the API (SQLite files in the home)."""
        if self._services is None:
            raise RuntimeError("the coordinator is stopped")
        return self._services

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.coordinator.port}"

    async def start(self) -> None:
        """Open the store and the registry and start a coordinator on a fresh port."""
        self._store = await self.home.open_store()
        self._registry = await self.home.open_registry(self._store)
        sinks: list[Any] = [self.sink] if self.jsonl is None else [self.sink, self.jsonl]
        self._coordinator = Coordinator(
            store=self._store,
            policy=PolicyEngine(self.policy),
            tls=server_ssl_context(*self.home.coordinator_tls()),
            events=EventStream(sinks),
            config=self.config,
            clock=self.clock,
            registry=self._registry,
        )
        self._services = await CoordinatorServices.open(
            self._coordinator,
            sessions_url=self.home.sessions_url,
            memory_url=self.home.memory_url,
            clock=self.clock,
        )
        await self._coordinator.start()
        await self._services.start()

    async def stop(self) -> None:
        """Stop the coordinator and close the store (agents see the connection end)."""
        if self._services is not None:
            await self._services.close()
            self._services = None
        if self._coordinator is not None:
            await self._coordinator.close()
            self._coordinator = None
        if self._registry is not None:
            await self._registry.close()
            self._registry = None
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def restart(self) -> None:
        """Stop, then start a new coordinator on the same store file."""
        await self.stop()
        await self.start()

    async def close(self) -> None:
        for agent in self._agents:
            await agent.close()
        for raw in self._raw:
            await raw.close()
        await self.stop()
        if self.jsonl is not None:
            self.jsonl.close()

    # -- agents ------------------------------------------------------------------------

    async def enrol(self, name: str, roles: Iterable[str] = ()) -> AgentIdentity:
        identity = await self.home.create_agent(name, roles=tuple(roles), store=self.store)
        self.identities[name] = identity
        if self._coordinator is not None:
            await self._coordinator.refresh_agents()
        return identity

    def did(self, name: str) -> str:
        return self.identities[name].did

    def credentials(self, name: str) -> Credentials:
        return self.home.load_agent(name)[1]

    async def connect(self, name: str, **options: Any) -> Agent:
        identity, credentials = self.home.load_agent(name)
        agent = await Agent.connect(identity, credentials, coordinator=self.address, **options)
        self._agents.append(agent)
        return agent

    def client_context(self, name: str) -> ssl.SSLContext:
        creds = self.credentials(name)
        return client_ssl_context(creds.cert_pem, creds.key_pem, creds.ca_pem)

    def bare_context(self) -> ssl.SSLContext:
        """A TLS 1.3 client context that trusts the domain CA but presents no certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_verify_locations(cadata=certificate_der(self.home.ca().cert_pem))
        return context

    async def raw(self, who: str | ssl.SSLContext, *, ready: bool = True) -> RawConnection:
        """A raw TLS connection (as agent ``who``, or with a given context).

        With ``ready`` the coordinator's ``READY`` frame is read first.
        """
        context = self.client_context(who) if isinstance(who, str) else who
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.coordinator.port, ssl=context, server_hostname="localhost"
        )
        raw = RawConnection(reader, writer)
        self._raw.append(raw)
        if ready:
            await raw.expect(FrameType.READY)
        return raw

    # -- events ------------------------------------------------------------------------

    def events(self, kind: EventKind) -> list[SecurityEvent]:
        return self.sink.of_kind(kind)

    async def wait_event(
        self,
        kind: EventKind,
        predicate: Callable[[SecurityEvent], bool] = lambda _: True,
        timeout: float = WAIT,
    ) -> SecurityEvent:
        found: list[SecurityEvent] = []

        def match() -> bool:
            found[:] = [e for e in self.sink.of_kind(kind) if predicate(e)]
            return bool(found)

        await wait_until(match, timeout)
        return found[0]


class MakeDeployment(Protocol):
    def __call__(
        self,
        *,
        agents: Iterable[str | tuple[str, tuple[str, ...]]] = ...,
        policy: PolicyConfig | None = ...,
        config: CoordinatorConfig | None = ...,
        clock: Callable[[], float] | None = ...,
        jsonl: bool = ...,
    ) -> Awaitable[Deployment]: ...
