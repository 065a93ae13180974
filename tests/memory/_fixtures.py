"""Builders shared by the shared-memory server tests.

``World`` wires a :class:`MemoryService` to a store, a fake clock, a directory of test
agents, a real :class:`PolicyEngine` and an event sink. Segments are sealed for real
(AES-256-GCM under a data key, SHA-256 hash, Ed25519 signature, following the wire
layout) so the coordinator's hash and signature checks are exercised; wrapped keys are
random bytes of the right shape, since the coordinator cannot open them anyway.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustwire.crypto.aead import AesGcm
from trustwire.crypto.signing import SigningKey
from trustwire.events import EventStream, MemorySink, SecurityEvent
from trustwire.identity.did import did_from_ed25519
from trustwire.memory.model import (
    WRAPPED_KEY_CT_SIZE,
    Grant,
    Memory,
    MemoryLimits,
    Quotas,
    Segment,
    StoredSegment,
    WrappedKey,
    segment_hash,
    signature_input,
)
from trustwire.memory.service import MemoryService
from trustwire.memory.store import MemoryStore, open_memory_store
from trustwire.policy import PolicyEngine, parse_policy
from trustwire.store.base import AgentRecord

BACKENDS = ("memory", "sqlite")
T0 = 1_800_000_000.0


async def open_backend(backend: str, directory: Path) -> MemoryStore:
    """A store of ``backend``; every SQLite store of one test shares one file."""
    if backend == "memory":
        return await open_memory_store("memory://")
    return await open_memory_store(f"sqlite://{directory / 'memory.db'}")


class FakeClock:
    """An injected clock: ``clock()`` is the time, ``advance`` moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Agent:
    """A test agent: its identity key, DID and directory record."""

    name: str
    signing: SigningKey
    record: AgentRecord

    @property
    def did(self) -> str:
        return self.record.did


def make_agent(name: str, roles: tuple[str, ...] = ("worker",)) -> Agent:
    signing = SigningKey.generate()
    did = did_from_ed25519(signing.public_key.to_bytes())
    record = AgentRecord(
        name=name,
        did=did,
        roles=roles,
        agreement_key=os.urandom(32),
        agreement_statement=os.urandom(64),
        agreement_issued_at=1_700_000_000,
        created_at=1_700_000_000.0,
    )
    return Agent(name, signing, record)


def did() -> str:
    """A fresh valid DID."""
    return did_from_ed25519(SigningKey.generate().public_key.to_bytes())


ALLOW_MEMORY = """      - id: memory-for-all
        effect: allow
        from: "*"
        to: "*"
        actions: [memory.read, memory.write]
"""


def policy(rules: str = ALLOW_MEMORY) -> PolicyEngine:
    """A policy engine whose communication rules are ``rules`` (YAML list items)."""
    return PolicyEngine(
        parse_policy(
            "version: 1\n"
            "policies:\n"
            "  communication:\n"
            "    default: deny\n"
            "    rules:\n"
            f"{rules}"
            "  access_control:\n"
            "    roles:\n"
            "      worker: w\n"
        )
    )


def wrapped(agent: str, epoch: int) -> WrappedKey:
    """A wrapped key of the right shape (the coordinator cannot tell it from a real one)."""
    return WrappedKey(
        agent=agent, epoch=epoch, enc=os.urandom(32), ct=os.urandom(WRAPPED_KEY_CT_SIZE)
    )


def new_memory(
    owner: str,
    *,
    expires_at: float | None = None,
    quotas: Quotas | None = None,
    created_at: float = T0,
) -> Memory:
    return Memory(
        id=str(uuid.uuid4()),
        owner=owner,
        type="kv",
        created_at=created_at,
        expires_at=expires_at,
        epoch=0,
        quotas=quotas or Quotas(16 * 1024 * 1024, 10_000),
    )


def seal(
    memory_id: str,
    writer: Agent,
    key: str,
    *,
    version: int = 1,
    epoch: int = 0,
    value: bytes = b"value",
    data_key: bytes | None = None,
) -> Segment:
    """A segment sealed and signed by ``writer`` as the wire layout prescribes."""
    nonce = os.urandom(12)
    digest_fields = (memory_id, key, version, epoch, writer.did, nonce)
    data_key = data_key or os.urandom(32)
    ad = _ad(*digest_fields)  # the hash input without the ciphertext
    ciphertext = AesGcm(data_key).seal(nonce, value, ad)
    digest = segment_hash(memory_id, key, version, epoch, writer.did, nonce, ciphertext)
    return Segment(
        key=key,
        version=version,
        epoch=epoch,
        writer=writer.did,
        nonce=nonce,
        ciphertext=ciphertext,
        hash=digest,
        signature=writer.signing.sign(signature_input(digest)),
    )


def _ad(memory_id: str, key: str, version: int, epoch: int, writer: str, nonce: bytes) -> bytes:
    def lp(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    return b"".join(
        (
            b"trustwire/memory-segment/v1",
            lp(memory_id.encode()),
            lp(key.encode()),
            version.to_bytes(8, "big"),
            epoch.to_bytes(8, "big"),
            lp(writer.encode()),
            nonce,
        )
    )


def stored(
    memory_id: str, writer: Agent, key: str, *, size: int = 16, version: int = 1, epoch: int = 0
) -> StoredSegment:
    """A stored segment whose ciphertext is ``size`` bytes (store tests do not verify)."""
    segment = seal(memory_id, writer, key, version=version, epoch=epoch, value=b"x" * (size - 16))
    return StoredSegment.from_segment(segment, written_at=T0)


def grant(agent: str, level: str = "read", *, by: str, expires_at: float | None = None) -> Grant:
    return Grant(agent=agent, level=level, expires_at=expires_at, granted_by=by)  # type: ignore[arg-type]


@dataclass
class World:
    """A service with its store, clock, directory, policy and recorded events."""

    store: MemoryStore
    clock: FakeClock = field(default_factory=FakeClock)
    directory: dict[str, AgentRecord] = field(default_factory=dict)
    sink: MemorySink = field(default_factory=MemorySink)
    engine: PolicyEngine = field(default_factory=policy)
    limits: MemoryLimits = field(default_factory=MemoryLimits)
    service: MemoryService = field(init=False)
    stream: EventStream = field(init=False)

    def __post_init__(self) -> None:
        self.stream = EventStream([self.sink])
        self.service = MemoryService(
            self.store,
            policy=self.engine,
            agents=self.directory.get,
            events=self.stream,
            clock=self.clock,
            limits=self.limits,
        )

    def add(self, name: str, roles: tuple[str, ...] = ("worker",)) -> Agent:
        agent = make_agent(name, roles)
        self.directory[agent.did] = agent.record
        return agent

    def revoke_agent(self, agent: Agent) -> None:
        record = agent.record
        self.directory[agent.did] = AgentRecord(
            name=record.name,
            did=record.did,
            roles=record.roles,
            agreement_key=record.agreement_key,
            agreement_statement=record.agreement_statement,
            agreement_issued_at=record.agreement_issued_at,
            created_at=record.created_at,
            revoked_at=self.clock(),
        )

    @property
    def events(self) -> list[SecurityEvent]:
        return list(self.sink.events)

    def kinds(self) -> list[str]:
        return [event.kind.value for event in self.sink.events]

    def last(self) -> SecurityEvent:
        return self.events[-1]

    async def create(self, owner: Agent, **options: Any) -> Memory:
        return await self.service.create(owner.did, wrapped_key=wrapped(owner.did, 0), **options)

    async def grant(
        self,
        by: Agent,
        memory: Memory,
        to: Agent,
        level: str,
        *,
        expires_at: float | None = None,
    ) -> Memory:
        current = await self.store.get(memory.id)
        assert current is not None
        keys = [wrapped(to.did, epoch) for epoch in range(current.epoch + 1)]
        return await self.service.grant(
            by.did,
            memory.id,
            to.did,
            level,  # type: ignore[arg-type]
            wrapped_keys=keys,
            expires_at=expires_at,
        )

    async def revoke(self, by: Agent, memory: Memory, agent: Agent) -> Memory:
        current = await self.store.get(memory.id)
        assert current is not None
        recipients = current.recipients(self.clock(), excluding=agent.did)
        epoch = current.epoch + 1
        return await self.service.revoke(
            by.did,
            memory.id,
            agent.did,
            epoch=epoch,
            wrapped_keys=[wrapped(recipient, epoch) for recipient in sorted(recipients)],
        )

    async def write(
        self,
        writer: Agent,
        memory: Memory,
        key: str,
        *,
        expected: int = 0,
        value: bytes = b"value",
        epoch: int | None = None,
    ) -> StoredSegment:
        if epoch is None:
            current = await self.store.get(memory.id)
            epoch = memory.epoch if current is None else current.epoch
        segment = seal(memory.id, writer, key, version=expected + 1, epoch=epoch, value=value)
        return await self.service.put_segment(
            writer.did, memory.id, key, segment, expected_version=expected
        )


def details_text(events: Iterable[SecurityEvent]) -> str:
    """Every event serialised, for scanning for things that must never appear."""
    return "\n".join(event.to_json() for event in events)
