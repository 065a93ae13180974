"""Sessions: time-bounded conversations between two agents, with the elizaOS Sessions API
semantics (timeouts, auto-renewal, a maximum duration, expiry warnings).

:mod:`~trustwire.sessions.model` holds the values and every state transition (pure),
:mod:`~trustwire.sessions.store` where they persist (``memory://``, SQLite), and
:mod:`~trustwire.sessions.manager` the coordinator's live view that checks each message
and announces every change to both participants. See ``docs/POLICY.md`` for per-agent
session defaults.
"""

from trustwire.sessions.manager import SessionManager
from trustwire.sessions.model import (
    DEFAULT_MAX_DURATION_MINUTES,
    DEFAULT_TIMEOUT_MINUTES,
    DEFAULT_WARNING_MINUTES,
    MAX_MAX_DURATION_MINUTES,
    MAX_TIMEOUT_MINUTES,
    MIN_TIMEOUT_MINUTES,
    MIN_WARNING_MINUTES,
    Session,
    SessionConfig,
    SessionMessage,
    validate_timeout,
)
from trustwire.sessions.store import (
    MemorySessionStore,
    SessionStore,
    SqliteSessionStore,
    open_session_store,
)

__all__ = [
    "DEFAULT_MAX_DURATION_MINUTES",
    "DEFAULT_TIMEOUT_MINUTES",
    "DEFAULT_WARNING_MINUTES",
    "MAX_MAX_DURATION_MINUTES",
    "MAX_TIMEOUT_MINUTES",
    "MIN_TIMEOUT_MINUTES",
    "MIN_WARNING_MINUTES",
    "MemorySessionStore",
    "Session",
    "SessionConfig",
    "SessionManager",
    "SessionMessage",
    "SessionStore",
    "SqliteSessionStore",
    "open_session_store",
    "validate_timeout",
]
