"""End-to-end encrypted shared memory: the coordinator stores ciphertext, clients hold the keys.

The client side, re-exported here:

* :class:`SharedMemories` / :class:`SharedMemory` (``agent.memory``): create, open, read,
  write, list, delete, grant, revoke, destroy; :class:`MemoryInfo`, :class:`GrantInfo`,
  :class:`SegmentInfo`, :class:`Value`; :class:`MemoryTransport` and :data:`PeerKeys`, the
  two things the SDK plugs in (docs/MEMORY.md);
* the cryptography of :mod:`trustwire.memory.crypto`: :func:`seal_segment`,
  :func:`open_segment`, :func:`wrap_key`, :func:`unwrap_key`, :class:`WrappedKey`,
  :class:`OpenedSegment`.

The coordinator side lives in :mod:`trustwire.memory.model`, :mod:`trustwire.memory.store`,
:mod:`trustwire.memory.service` and :mod:`trustwire.memory.api`, imported from there.
Names load lazily (PEP 562), so importing the server modules does not load the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trustwire.memory.client import (
        GrantInfo,
        MemoryInfo,
        MemoryTransport,
        PeerKeys,
        SegmentInfo,
        SharedMemories,
        SharedMemory,
        Value,
    )
    from trustwire.memory.crypto import (
        AdminCertificate,
        OpenedSegment,
        UnwrappedKey,
        WrappedKey,
        certify_admin,
        memory_id_for,
        open_segment,
        owner_matches,
        seal_segment,
        unwrap_key,
        wrap_key,
    )

_LOCATIONS = {
    "AdminCertificate": "trustwire.memory.crypto",
    "UnwrappedKey": "trustwire.memory.crypto",
    "certify_admin": "trustwire.memory.crypto",
    "memory_id_for": "trustwire.memory.crypto",
    "owner_matches": "trustwire.memory.crypto",
    "GrantInfo": "trustwire.memory.client",
    "MemoryInfo": "trustwire.memory.client",
    "MemoryTransport": "trustwire.memory.client",
    "OpenedSegment": "trustwire.memory.crypto",
    "PeerKeys": "trustwire.memory.client",
    "SegmentInfo": "trustwire.memory.client",
    "SharedMemories": "trustwire.memory.client",
    "SharedMemory": "trustwire.memory.client",
    "Value": "trustwire.memory.client",
    "WrappedKey": "trustwire.memory.crypto",
    "open_segment": "trustwire.memory.crypto",
    "seal_segment": "trustwire.memory.crypto",
    "unwrap_key": "trustwire.memory.crypto",
    "wrap_key": "trustwire.memory.crypto",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'trustwire.memory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AdminCertificate",
    "GrantInfo",
    "MemoryInfo",
    "MemoryTransport",
    "OpenedSegment",
    "PeerKeys",
    "SegmentInfo",
    "SharedMemories",
    "SharedMemory",
    "UnwrappedKey",
    "Value",
    "WrappedKey",
    "certify_admin",
    "memory_id_for",
    "open_segment",
    "owner_matches",
    "seal_segment",
    "unwrap_key",
    "wrap_key",
]
