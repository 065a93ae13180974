"""Sessions, shared memory and the API around a running :class:`Coordinator`.

:class:`CoordinatorServices` assembles what the coordinator serves beyond routing:

* a :class:`~trustwire.sessions.manager.SessionManager` over a session store (messages
  naming a session are checked against it; its lifecycle events reach both agents as
  ``SESSION_EVENT`` frames);
* a :class:`~trustwire.memory.service.MemoryService` over a shared-memory store (only
  ciphertext, wrapped keys and metadata);
* one :class:`~trustwire.coordinator.api.Api` with the sessions and memory routes,
  reachable in band (``API_REQUEST`` frames, what the SDK uses) and, optionally, over
  HTTPS with client certificates (:func:`~trustwire.coordinator.https.start_https`).
  Both ways every request is charged to the caller's rate-limit buckets (the policy's
  ``rate_limits``, shared with its messages), so HTTPS is no way around them;
* the background work: the session sweeper (expiry warnings, expiry, flushing activity,
  noticing changes made by ``trustwire session ...``) and the purge of expired memories.

Both the coordinator's directory and its policy engine are the single source of truth:
the services read them through the coordinator, so a revocation or a policy reload
applies to sessions and memories at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from trustwire.coordinator.api import Api, Caller
from trustwire.coordinator.https import HttpsServer, directory_resolver, start_https
from trustwire.coordinator.server import Coordinator
from trustwire.events import EventKind, SecurityEvent
from trustwire.memory.api import register_memory_routes
from trustwire.memory.model import MemoryLimits
from trustwire.memory.service import MemoryService
from trustwire.memory.store import MemoryStore, open_memory_store
from trustwire.policy.engine import Principal
from trustwire.sessions.api import register_session_routes
from trustwire.sessions.manager import SessionManager
from trustwire.sessions.store import SessionStore, open_session_store
from trustwire.store.base import AgentRecord

__all__ = ["CoordinatorServices"]

log = logging.getLogger("trustwire.coordinator")

SESSION_SWEEP = 1.0
"""Seconds between session sweeps (expiry warnings and expiry are announced this late at most)."""

MEMORY_PURGE = 60.0
"""Seconds between purges of expired shared memories."""


class CoordinatorServices:
    """Sessions, shared memory and the API of one coordinator; see the module docstring.

    Build with :meth:`open` (before or after ``coordinator.start()``), then
    :meth:`start`; :meth:`close` stops the background work and the HTTPS server, flushes
    the sessions and closes both stores.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        session_store: SessionStore,
        memory_store: MemoryStore,
        clock: Callable[[], float] = time.time,
        memory_limits: MemoryLimits | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.session_store = session_store
        self.memory_store = memory_store
        self.clock = clock
        self.api = Api(rate_limited=True)
        self.sessions = SessionManager(
            session_store,
            events=coordinator.events,
            may_talk=self._may_talk,
            known_agent=self._known,
            agent_defaults=self._session_defaults,
            notify=coordinator.notify_session,
            clock=clock,
        )
        self.memory = MemoryService(
            memory_store,
            policy=coordinator.policy,
            agents=coordinator.agent,
            events=coordinator.events,
            clock=clock,
            limits=memory_limits,
        )
        register_session_routes(self.api, self.sessions, clock=clock, resolve_agent=self._resolve)
        register_memory_routes(self.api, self.memory)
        coordinator.api = self.api
        coordinator.sessions = self.sessions
        self.https: HttpsServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls,
        coordinator: Coordinator,
        *,
        sessions_url: str = "memory://",
        memory_url: str = "memory://",
        clock: Callable[[], float] = time.time,
        memory_limits: MemoryLimits | None = None,
    ) -> CoordinatorServices:
        """Open both stores by URL (``memory://`` or ``sqlite:///path``) and assemble."""
        session_store = await open_session_store(sessions_url)
        try:
            memory_store = await open_memory_store(memory_url)
        except BaseException:
            await session_store.close()
            raise
        return cls(
            coordinator,
            session_store=session_store,
            memory_store=memory_store,
            clock=clock,
            memory_limits=memory_limits,
        )

    async def start(
        self,
        *,
        https: tuple[str, int, ssl.SSLContext] | None = None,
        sweep_interval: float = SESSION_SWEEP,
        purge_interval: float = MEMORY_PURGE,
    ) -> None:
        """Load the sessions, start the background work and, with ``https`` (host, port,
        TLS 1.3 server context requiring client certificates), the HTTPS API."""
        await self.sessions.start()
        self._tasks.append(asyncio.create_task(self.sessions.run(sweep_interval)))
        self._tasks.append(asyncio.create_task(self.memory.run_purger(purge_interval)))
        if https is not None:
            await self.serve_https(*https)

    async def serve_https(self, host: str, port: int, tls: ssl.SSLContext) -> HttpsServer:
        """Serve the API over HTTPS on ``host``:``port`` (0 picks a free port) with ``tls``
        (TLS 1.3, client certificates required); closed by :meth:`close`."""
        if self.https is not None:
            raise RuntimeError("the HTTPS API is already served")
        self.https = await start_https(
            self.api,
            host=host,
            port=port,
            tls=tls,
            resolve_caller=directory_resolver(self._caller),
            admit=self._admit,
        )
        return self.https

    async def close(self) -> None:
        """Stop everything started; flush the sessions; close both stores."""
        if self.https is not None:
            await self.https.close()
            self.https = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        try:
            await self.sessions.close()
        finally:
            try:
                await self.session_store.close()
            finally:
                await self.memory_store.close()
        if self.coordinator.sessions is self.sessions:
            self.coordinator.sessions = None
        if self.coordinator.api is self.api:
            self.coordinator.api = None

    # -- what the services ask of the coordinator ---------------------------------------------

    def _record(self, did: str) -> AgentRecord | None:
        record = self.coordinator.agent(did)
        return None if record is None or record.revoked else record

    def _known(self, did: str) -> bool:
        return self._record(did) is not None

    def _caller(self, did: str) -> Caller | None:
        record = self._record(did)
        if record is None:
            return None
        return Caller(did=record.did, name=record.name, roles=tuple(record.roles))

    def _admit(self, caller: Caller) -> bool:
        """Charge one HTTPS request to the caller's rate-limit buckets (as an
        ``API_REQUEST`` frame is charged); ``False`` (and a ``rate.limited`` event) when
        they are exhausted."""
        coordinator = self.coordinator
        principal = Principal(did=caller.did, name=caller.name, roles=caller.roles)
        if coordinator.rate_limiter.hit(coordinator.policy.rate_limits_for(principal)):
            return True
        coordinator.events.emit(
            SecurityEvent(
                kind=EventKind.RATE_LIMITED,
                time=self.clock(),
                agent=caller.did,
                reason="API rate limit exceeded",
            )
        )
        return False

    def _resolve(self, who: str) -> str | None:
        record = self.coordinator.agent(who) or self.coordinator.agent_named(who)
        return None if record is None or record.revoked else record.did

    def _principal(self, record: AgentRecord) -> Principal:
        return Principal(did=record.did, name=record.name, roles=tuple(record.roles))

    def _may_talk(self, initiator: str, peer: str, now: float) -> bool:
        """A session needs ``message`` allowed from the initiator to the peer: opening one
        delivers the initiator's metadata (up to 10 KiB) to the peer, so an agent the
        policy keeps from messaging the peer must not be able to open one either."""
        a, b = self._record(initiator), self._record(peer)
        if a is None or b is None:
            return False
        policy = self.coordinator.policy
        return policy.authorize(self._principal(a), "message", self._principal(b), now=now).allowed

    def _session_defaults(self, did: str) -> dict[str, Any] | None:
        record = self._record(did)
        if record is None:
            return None
        return self.coordinator.policy.session_defaults_for(self._principal(record))
