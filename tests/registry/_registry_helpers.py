"""Builders shared by the registry tests: real identities, in-memory registries."""

from __future__ import annotations

from trustwire.audit.log import MerkleLog
from trustwire.crypto.signing import SigningKey
from trustwire.identity.keys import AgentIdentity
from trustwire.registry import REGISTRY_ORIGIN, Registry
from trustwire.store.base import AgentRecord, Store
from trustwire.store.memory import open_memory_store

ISSUED_AT = 1_700_000_000


class Clock:
    """A clock that moves one second per reading, so every entry has its own time."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def identity(name: str, *, issued_at: int = ISSUED_AT) -> AgentIdentity:
    return AgentIdentity.generate(name, issued_at=issued_at)


def record_of(agent: AgentIdentity, roles: tuple[str, ...] = ("worker",)) -> AgentRecord:
    """The directory record enrolling ``agent`` with a statement it really signed."""
    return AgentRecord(
        name=agent.name,
        did=agent.did,
        roles=roles,
        agreement_key=agent.agreement.public,
        agreement_statement=agent.agreement_statement(issued_at=agent.issued_at),
        agreement_issued_at=agent.issued_at,
        created_at=float(agent.issued_at),
    )


def memory_registry(
    key: SigningKey | None = None, store: Store | None = None
) -> tuple[Registry, Store, SigningKey]:
    """A registry on an in-memory log over an in-memory store."""
    key = key or SigningKey.generate()
    store = store or open_memory_store()
    registry = Registry(MerkleLog.memory(origin=REGISTRY_ORIGIN), key, store.agents, clock=Clock())
    return registry, store, key
