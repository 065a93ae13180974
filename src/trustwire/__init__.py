"""trustwire: secure agent-to-agent communication.

The public API, by role:

* agents: :class:`Agent`, :class:`Credentials`, :class:`Message`, :class:`Receipt`,
  :class:`SendResult`, :class:`AgentIdentity`;
* operators: :class:`Home` (a deployment directory), :class:`Coordinator`,
  :class:`CoordinatorConfig`, :class:`PolicyEngine`, :class:`EventStream`,
  :class:`Registry` (the signed identity log);
* errors: everything in :mod:`trustwire.errors`, rooted at :class:`TrustwireError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trustwire.client.agent import Agent, Credentials, Message, Receipt, SendResult
    from trustwire.coordinator.server import Coordinator, CoordinatorConfig
    from trustwire.errors import (
        AuthenticationFailed,
        ConfigurationError,
        ConnectionClosed,
        ConnectionFailed,
        PolicyDenied,
        RateLimited,
        ReceiptTimeout,
        ReplayDetected,
        SecurityRejected,
        TrustwireError,
        UnknownAgent,
    )
    from trustwire.events import EventKind, EventStream, SecurityEvent
    from trustwire.home import Home
    from trustwire.identity.keys import AgentIdentity
    from trustwire.policy.engine import PolicyEngine
    from trustwire.registry.registry import Registry

# Imported lazily (PEP 562) so that importing a low layer — the sans-I/O protocol core,
# say — does not drag in asyncio, ssl and the coordinator.
_LOCATIONS = {
    "Agent": "trustwire.client.agent",
    "AgentIdentity": "trustwire.identity.keys",
    "AuthenticationFailed": "trustwire.errors",
    "ConfigurationError": "trustwire.errors",
    "ConnectionClosed": "trustwire.errors",
    "ConnectionFailed": "trustwire.errors",
    "Coordinator": "trustwire.coordinator.server",
    "CoordinatorConfig": "trustwire.coordinator.server",
    "Credentials": "trustwire.client.agent",
    "EventKind": "trustwire.events",
    "EventStream": "trustwire.events",
    "Home": "trustwire.home",
    "Message": "trustwire.client.agent",
    "PolicyDenied": "trustwire.errors",
    "PolicyEngine": "trustwire.policy.engine",
    "RateLimited": "trustwire.errors",
    "Receipt": "trustwire.client.agent",
    "ReceiptTimeout": "trustwire.errors",
    "Registry": "trustwire.registry.registry",
    "ReplayDetected": "trustwire.errors",
    "SecurityEvent": "trustwire.events",
    "SecurityRejected": "trustwire.errors",
    "SendResult": "trustwire.client.agent",
    "TrustwireError": "trustwire.errors",
    "UnknownAgent": "trustwire.errors",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'trustwire' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentIdentity",
    "AuthenticationFailed",
    "ConfigurationError",
    "ConnectionClosed",
    "ConnectionFailed",
    "Coordinator",
    "CoordinatorConfig",
    "Credentials",
    "EventKind",
    "EventStream",
    "Home",
    "Message",
    "PolicyDenied",
    "PolicyEngine",
    "RateLimited",
    "Receipt",
    "ReceiptTimeout",
    "Registry",
    "ReplayDetected",
    "SecurityEvent",
    "SecurityRejected",
    "SendResult",
    "TrustwireError",
    "UnknownAgent",
    "__version__",
]
