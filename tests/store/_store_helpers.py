"""Builders shared by the store tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from trustwire.store import AgentRecord, NewMessage, Store

BACKENDS = ("memory", "sqlite")

OpenBackend = Callable[..., Awaitable[Store]]


def store_url(backend: str, directory: Path) -> str:
    """The URL of a store of ``backend`` kept under ``directory``."""
    if backend == "memory":
        return "memory://"
    return f"sqlite://{directory / 'store.db'}"


def agent(
    name: str, did: str | None = None, *, roles: tuple[str, ...] = ("worker",)
) -> AgentRecord:
    """A well-formed agent record; the key bytes are random, so every call differs."""
    return AgentRecord(
        name=name,
        did=did if did is not None else f"did:key:z{name}",
        roles=roles,
        agreement_key=os.urandom(32),
        agreement_statement=os.urandom(64),
        agreement_issued_at=1_700_000_000,
        created_at=1_700_000_000.5,
    )


def message(
    recipient: str,
    message_id: bytes | None = None,
    *,
    frame: bytes | None = None,
    at: float = 1000.0,
    sender: str = "did:key:zsender",
) -> NewMessage:
    """A new message; id and frame are random unless given."""
    return NewMessage(
        recipient=recipient,
        sender=sender,
        message_id=message_id if message_id is not None else os.urandom(16),
        frame=frame if frame is not None else os.urandom(40),
        enqueued_at=at,
    )
