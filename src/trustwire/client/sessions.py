"""Sessions in the agent SDK: a time-bounded conversation with one peer.

::

    async with agent.session("bob", timeout_minutes=30) as s:
        await s.send("hello")                 # bound to the session in the envelope header
        async for message in s.messages():    # only this session's messages from bob
            ...
        await s.renew()                       # explicit renewal (also with autoRenew off)
        await s.heartbeat()                   # activity without a message
        async for event in s.events():        # session.created / renewed / expiring / ...
            ...

The coordinator holds the session (docs/SESSIONS.md): it refuses a message on an expired
or ended session (:class:`~trustwire.errors.SessionExpired`,
:class:`~trustwire.errors.SessionEnded`) and sends both agents every lifecycle event,
``session.expiring`` included, which arrive here as :class:`SessionEvent` objects. Leaving
the ``async with`` block ends the session unless it already ended or expired.

Messages carry the session id in their authenticated envelope header, so the peer's SDK
files them under the same session; a session starts on a fresh channel handshake (new
ephemeral keys), and since a session never outlives its maximum duration its keys never
do either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from trustwire.errors import SessionEnded, SessionExpired, TrustwireError

if TYPE_CHECKING:
    from trustwire.client.agent import Agent, Message, SendResult

__all__ = ["AgentSession", "SessionEvent", "SessionOpener", "session_config"]

_BASE = "/api/messaging/sessions"
_MAX_BUFFERED = 10_000


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A lifecycle event of a session, as the coordinator sent it.

    ``kind`` is ``session.created``, ``session.renewed``, ``session.expiring``,
    ``session.expired`` or ``session.ended``; ``session`` the session's state at that
    moment (the API's JSON shape: ``expiresAt``, ``renewalCount``, ``status`` ...).
    """

    kind: str
    session_id: str
    session: Mapping[str, Any]


def session_config(
    *,
    timeout_minutes: int | None = None,
    auto_renew: bool | None = None,
    max_duration_minutes: int | None = None,
    warning_threshold_minutes: int | None = None,
) -> dict[str, Any]:
    """The ``timeoutConfig`` JSON for the given settings (unset ones left to the defaults)."""
    config: dict[str, Any] = {}
    if timeout_minutes is not None:
        config["timeoutMinutes"] = timeout_minutes
    if auto_renew is not None:
        config["autoRenew"] = auto_renew
    if max_duration_minutes is not None:
        config["maxDurationMinutes"] = max_duration_minutes
    if warning_threshold_minutes is not None:
        config["warningThresholdMinutes"] = warning_threshold_minutes
    return config


class AgentSession:
    """A session seen from one of its two agents. Made by :meth:`Agent.session` (which
    creates it) or :meth:`Agent.join_session` (an existing one, e.g. as the peer)."""

    def __init__(self, agent: Agent, info: Mapping[str, Any]) -> None:
        self._agent = agent
        self.info: Mapping[str, Any] = info
        self.id: str = str(info["id"])
        me = agent.did
        self.peer: str = str(info["peer"] if info["initiator"] == me else info["initiator"])
        #: Called with every :class:`SessionEvent` of this session (optional).
        self.on_event: Callable[[SessionEvent], None] | None = None
        # Unbounded, as the agent's own inbox: a message here has been receipted to its
        # sender already, so it must not be dropped.
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._events: asyncio.Queue[SessionEvent] = asyncio.Queue(maxsize=_MAX_BUFFERED)
        self._ready = asyncio.Event()

    # -- state ---------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``active``, ``expired`` or ``ended``, as of the latest answer or event."""
        return str(self.info.get("status", "active"))

    @property
    def expires_at(self) -> float:
        """When the session expires (epoch seconds), as of the latest answer or event."""
        return float(self.info["expiresAt"]) / 1000

    @property
    def renewal_count(self) -> int:
        return int(self.info.get("renewalCount", 0))

    async def refresh(self) -> Mapping[str, Any]:
        """Fetch the session's current state from the coordinator."""
        return self._update(await self._agent.api_call("GET", f"{_BASE}/{self.id}"))

    async def renew(self) -> Mapping[str, Any]:
        """Renew now (works with autoRenew off); :class:`SessionRenewalFailed` once the
        maximum duration is reached."""
        return self._update(await self._agent.api_call("POST", f"{_BASE}/{self.id}/renew"))

    async def heartbeat(self) -> Mapping[str, Any]:
        """Record activity without a message (renews only when autoRenew is on)."""
        return self._update(await self._agent.api_call("POST", f"{_BASE}/{self.id}/heartbeat"))

    async def set_timeout(self, timeout_minutes: int, **more: Any) -> Mapping[str, Any]:
        """Change the inactivity timeout; :class:`InvalidSessionConfig` outside 5..1440."""
        body = {"timeoutMinutes": timeout_minutes, **more}
        return self._update(
            await self._agent.api_call("PATCH", f"{_BASE}/{self.id}/timeout", body=body)
        )

    async def end(self) -> None:
        """End the session for both agents (idempotent for an ended or expired session)."""
        with contextlib.suppress(SessionEnded, SessionExpired):
            await self._agent.api_call("DELETE", f"{_BASE}/{self.id}")
        self.info = {**self.info, "status": "ended"}

    async def history(
        self, *, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> Mapping[str, Any]:
        """Envelope metadata of the session's messages (never their content)."""
        query = {"limit": str(limit)}
        if before is not None:
            query["before"] = str(before)
        if after is not None:
            query["after"] = str(after)
        answer: Mapping[str, Any] = await self._agent.api_call(
            "GET", f"{_BASE}/{self.id}/messages", query=query
        )
        return answer

    def _update(self, answer: Any) -> Mapping[str, Any]:
        if isinstance(answer, Mapping):
            info = answer.get("session", answer)
            if isinstance(info, Mapping) and "id" in info:
                self.info = info
        return self.info

    # -- messages ------------------------------------------------------------------------

    async def send(self, data: bytes | str, *, timeout: float | None = None) -> SendResult:
        """Send ``data`` to the peer within this session."""
        return await self._agent.send(self.peer, data, timeout=timeout, session_id=self.id)

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message of this session."""
        async with asyncio.timeout(timeout):
            async for message in self.messages():
                return message
        raise self._agent._close_reason or SessionEnded("the connection closed")

    async def messages(self) -> AsyncIterator[Message]:
        """This session's messages from the peer, until the connection closes."""
        while True:
            while self._inbox.empty():
                if not self._agent.connected:
                    return
                self._ready.clear()
                await self._ready.wait()
            yield self._inbox.get_nowait()

    async def events(self) -> AsyncIterator[SessionEvent]:
        """This session's lifecycle events, until the session ends or expires."""
        while True:
            while self._events.empty():
                if not self._agent.connected:
                    return
                self._ready.clear()
                await self._ready.wait()
            event = self._events.get_nowait()
            yield event
            if event.kind in ("session.expired", "session.ended"):
                return

    def _deliver(self, message: Message) -> None:
        self._inbox.put_nowait(message)
        self._ready.set()

    def _event(self, event: SessionEvent) -> None:
        self.info = event.session
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(event)
        self._ready.set()
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a callback's failure must not stop the agent's reader
                import logging

                logging.getLogger("trustwire.client").exception("session event callback failed")

    def _wake(self) -> None:
        self._ready.set()

    # -- context manager -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._agent.connected and self.status == "active":
                with contextlib.suppress(TrustwireError):
                    await self.end()
        finally:
            self._agent._forget_session(self)

    def __repr__(self) -> str:
        return f"AgentSession(id={self.id!r}, peer={self.peer!r}, status={self.status!r})"


class SessionOpener:
    """What :meth:`Agent.session` returns: await it for the :class:`AgentSession`, or use
    it directly as ``async with agent.session(...) as s:`` (ending the session on exit)."""

    def __init__(self, creating: Coroutine[Any, Any, AgentSession]) -> None:
        self._creating: Coroutine[Any, Any, AgentSession] | None = creating
        self._session: AgentSession | None = None

    async def _open(self) -> AgentSession:
        if self._session is None:
            creating, self._creating = self._creating, None
            if creating is None:
                raise RuntimeError("this session opener was already used")
            self._session = await creating
        return self._session

    def __await__(self) -> Generator[Any, None, AgentSession]:
        return self._open().__await__()

    async def __aenter__(self) -> AgentSession:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.__aexit__(exc_type, exc, tb)

    def __del__(self) -> None:
        # Never awaited: close the coroutine so no "never awaited" warning appears.
        if self._creating is not None:
            self._creating.close()
