"""Storage interfaces and backends, chosen by URL through :func:`open_store`.

``memory://`` and ``sqlite:///path`` are built in; see :mod:`trustwire.store.base` for
the invariants every backend keeps.
"""

from __future__ import annotations

from trustwire.store.base import (
    AgentDirectory,
    AgentRecord,
    DeliveryQueue,
    NewMessage,
    QueuedMessage,
    Store,
)
from trustwire.store.factory import open_store, supported_schemes

__all__ = [
    "AgentDirectory",
    "AgentRecord",
    "DeliveryQueue",
    "NewMessage",
    "QueuedMessage",
    "Store",
    "open_store",
    "supported_schemes",
]
