"""trustwire: secure agent-to-agent communication.

The public API, by role:

* agents: :class:`Agent`, :class:`Credentials`, :class:`Message`, :class:`Receipt`,
  :class:`SendResult`, :class:`AgentIdentity`;
* operators: :class:`Home` (a deployment directory), :class:`Coordinator`,
  :class:`CoordinatorConfig`, :class:`PolicyEngine`, :class:`EventStream`;
* errors: everything in :mod:`trustwire.errors`, rooted at :class:`TrustwireError`.
"""

from __future__ import annotations

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
    "ReplayDetected",
    "SecurityEvent",
    "SecurityRejected",
    "SendResult",
    "TrustwireError",
    "UnknownAgent",
    "__version__",
]
